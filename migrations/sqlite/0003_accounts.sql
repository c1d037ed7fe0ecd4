-- Accounts: the `AccountStore` seam's tables (users, organisations, teams, grants, robots,
-- refresh-token sessions, signing keys, audit log), beside the registry's in one database.
-- Times are seconds since the Unix epoch; booleans are 0 or 1. What belongs to a user, an
-- organisation or a team goes with it (ON DELETE CASCADE), so a deletion is one statement.

-- Users and organisations share one name space: a repository's first path component names
-- exactly one of them. The row is created with its user or organisation and deleted with it.
CREATE TABLE namespaces (
    name        TEXT    PRIMARY KEY,
    kind        TEXT    NOT NULL CHECK (kind IN ('user', 'organization')),
    quota_bytes INTEGER CHECK (quota_bytes >= 0)
) STRICT, WITHOUT ROWID;

CREATE TABLE users (
    name          TEXT    PRIMARY KEY REFERENCES namespaces (name) ON DELETE CASCADE,
    password_hash TEXT,
    admin         INTEGER NOT NULL CHECK (admin IN (0, 1)),
    disabled      INTEGER NOT NULL CHECK (disabled IN (0, 1)),
    created_at    INTEGER NOT NULL
) STRICT, WITHOUT ROWID;

CREATE TABLE organizations (
    name       TEXT    PRIMARY KEY REFERENCES namespaces (name) ON DELETE CASCADE,
    created_at INTEGER NOT NULL
) STRICT, WITHOUT ROWID;

CREATE TABLE org_members (
    org       TEXT NOT NULL REFERENCES organizations (name) ON DELETE CASCADE,
    user_name TEXT NOT NULL REFERENCES users (name) ON DELETE CASCADE,
    role      TEXT NOT NULL CHECK (role IN ('member', 'admin', 'owner')),
    PRIMARY KEY (org, user_name)
) STRICT, WITHOUT ROWID;

-- memberships(user), and the cascade when a user is deleted.
CREATE INDEX org_members_by_user ON org_members (user_name);

CREATE TABLE teams (
    org         TEXT NOT NULL REFERENCES organizations (name) ON DELETE CASCADE,
    name        TEXT NOT NULL,
    description TEXT NOT NULL,
    PRIMARY KEY (org, name)
) STRICT, WITHOUT ROWID;

-- A team member is a member of the team's organisation: the foreign key to org_members keeps
-- it so, and leaving the organisation leaves its teams.
CREATE TABLE team_members (
    org       TEXT NOT NULL,
    team      TEXT NOT NULL,
    user_name TEXT NOT NULL,
    PRIMARY KEY (org, team, user_name),
    FOREIGN KEY (org, team) REFERENCES teams (org, name) ON DELETE CASCADE,
    FOREIGN KEY (org, user_name) REFERENCES org_members (org, user_name) ON DELETE CASCADE
) STRICT, WITHOUT ROWID;

-- teams_of(user), and the cascade when a member leaves.
CREATE INDEX team_members_by_user ON team_members (user_name, org);

-- A repository's access settings; a repository without a row has the defaults (private, no
-- grants). Grants hang off this row, so forgetting the settings forgets them.
CREATE TABLE repository_settings (
    repo       TEXT PRIMARY KEY,
    visibility TEXT NOT NULL CHECK (visibility IN ('public', 'private'))
) STRICT, WITHOUT ROWID;

CREATE TABLE repository_user_grants (
    repo       TEXT NOT NULL REFERENCES repository_settings (repo) ON DELETE CASCADE,
    user_name  TEXT NOT NULL REFERENCES users (name) ON DELETE CASCADE,
    permission TEXT NOT NULL CHECK (permission IN ('read', 'write', 'admin')),
    PRIMARY KEY (repo, user_name)
) STRICT, WITHOUT ROWID;

CREATE INDEX repository_user_grants_by_user ON repository_user_grants (user_name);

-- A grant to a team names a team of the repository's organisation (its first path
-- component, kept in `org` for the foreign key).
CREATE TABLE repository_team_grants (
    repo       TEXT NOT NULL REFERENCES repository_settings (repo) ON DELETE CASCADE,
    org        TEXT NOT NULL,
    team       TEXT NOT NULL,
    permission TEXT NOT NULL CHECK (permission IN ('read', 'write', 'admin')),
    PRIMARY KEY (repo, team),
    FOREIGN KEY (org, team) REFERENCES teams (org, name) ON DELETE CASCADE
) STRICT, WITHOUT ROWID;

CREATE INDEX repository_team_grants_by_team ON repository_team_grants (org, team);

CREATE TABLE robots (
    namespace   TEXT    NOT NULL REFERENCES namespaces (name) ON DELETE CASCADE,
    name        TEXT    NOT NULL,
    secret_hash TEXT    NOT NULL,
    scopes      TEXT    NOT NULL,  -- JSON array of {"repository", "actions"}
    created_at  INTEGER NOT NULL,
    expires_at  INTEGER,
    revoked_at  INTEGER,
    PRIMARY KEY (namespace, name)
) STRICT, WITHOUT ROWID;

CREATE TABLE sessions (
    id          TEXT    PRIMARY KEY,
    user_name   TEXT    NOT NULL REFERENCES users (name) ON DELETE CASCADE,
    secret_hash TEXT    NOT NULL,
    service     TEXT    NOT NULL,
    created_at  INTEGER NOT NULL,
    expires_at  INTEGER NOT NULL,
    revoked_at  INTEGER
) STRICT, WITHOUT ROWID;

-- revoke_sessions_of(user), and the cascade when a user is deleted.
CREATE INDEX sessions_by_user ON sessions (user_name);

CREATE TABLE signing_keys (
    kid         TEXT    PRIMARY KEY,
    algorithm   TEXT    NOT NULL,
    private_pem TEXT    NOT NULL,
    created_at  INTEGER NOT NULL,
    retired_at  INTEGER
) STRICT, WITHOUT ROWID;

-- AUTOINCREMENT: an id is never reused, so it stays a valid page cursor.
CREATE TABLE audit_log (
    id      INTEGER PRIMARY KEY AUTOINCREMENT,
    at      INTEGER NOT NULL,
    actor   TEXT,
    client  TEXT,
    action  TEXT    NOT NULL,
    target  TEXT    NOT NULL,
    outcome TEXT    NOT NULL CHECK (outcome IN ('allowed', 'denied')),
    detail  TEXT
) STRICT;

-- The audit query's filters, each yielding rows newest first (id descending).
CREATE INDEX audit_log_by_actor ON audit_log (actor, id);
CREATE INDEX audit_log_by_action ON audit_log (action, id);
CREATE INDEX audit_log_by_target ON audit_log (target, id);
CREATE INDEX audit_log_by_time ON audit_log (at, id);
