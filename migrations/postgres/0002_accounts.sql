-- Accounts: the `AccountStore` seam's tables (users, organisations, teams, grants, robots,
-- refresh-token sessions, signing keys, audit log), beside the registry's in one database.
-- Mirrors migrations/sqlite/0003_accounts.sql table for table. Times come from the database's
-- clock; names use the "C" collation, so listings page in byte order. What belongs to a user,
-- an organisation or a team goes with it (ON DELETE CASCADE), so a deletion is one statement.

-- Users and organisations share one name space: a repository's first path component names
-- exactly one of them. The row is created with its user or organisation and deleted with it.
CREATE TABLE namespaces (
    name        TEXT   COLLATE "C" PRIMARY KEY,
    kind        TEXT   NOT NULL CHECK (kind IN ('user', 'organization')),
    quota_bytes BIGINT CHECK (quota_bytes >= 0)
);

CREATE TABLE users (
    name          TEXT        COLLATE "C" PRIMARY KEY REFERENCES namespaces (name) ON DELETE CASCADE,
    password_hash TEXT,
    admin         BOOLEAN     NOT NULL,
    disabled      BOOLEAN     NOT NULL,
    created_at    TIMESTAMPTZ NOT NULL DEFAULT now()
);

CREATE TABLE organizations (
    name       TEXT        COLLATE "C" PRIMARY KEY REFERENCES namespaces (name) ON DELETE CASCADE,
    created_at TIMESTAMPTZ NOT NULL DEFAULT now()
);

CREATE TABLE org_members (
    org       TEXT COLLATE "C" NOT NULL REFERENCES organizations (name) ON DELETE CASCADE,
    user_name TEXT COLLATE "C" NOT NULL REFERENCES users (name) ON DELETE CASCADE,
    role      TEXT NOT NULL CHECK (role IN ('member', 'admin', 'owner')),
    PRIMARY KEY (org, user_name)
);

-- memberships(user), and the cascade when a user is deleted.
CREATE INDEX org_members_by_user ON org_members (user_name);

CREATE TABLE teams (
    org         TEXT COLLATE "C" NOT NULL REFERENCES organizations (name) ON DELETE CASCADE,
    name        TEXT COLLATE "C" NOT NULL,
    description TEXT NOT NULL,
    PRIMARY KEY (org, name)
);

-- A team member is a member of the team's organisation: the foreign key to org_members keeps
-- it so, and leaving the organisation leaves its teams.
CREATE TABLE team_members (
    org       TEXT COLLATE "C" NOT NULL,
    team      TEXT COLLATE "C" NOT NULL,
    user_name TEXT COLLATE "C" NOT NULL,
    PRIMARY KEY (org, team, user_name),
    FOREIGN KEY (org, team) REFERENCES teams (org, name) ON DELETE CASCADE,
    FOREIGN KEY (org, user_name) REFERENCES org_members (org, user_name) ON DELETE CASCADE
);

-- teams_of(user), and the cascade when a member leaves.
CREATE INDEX team_members_by_user ON team_members (user_name, org);

-- A repository's access settings; a repository without a row has the defaults (private, no
-- grants). Grants hang off this row, so forgetting the settings forgets them.
CREATE TABLE repository_settings (
    repo       TEXT COLLATE "C" PRIMARY KEY,
    visibility TEXT NOT NULL CHECK (visibility IN ('public', 'private'))
);

CREATE TABLE repository_user_grants (
    repo       TEXT COLLATE "C" NOT NULL REFERENCES repository_settings (repo) ON DELETE CASCADE,
    user_name  TEXT COLLATE "C" NOT NULL REFERENCES users (name) ON DELETE CASCADE,
    permission TEXT NOT NULL CHECK (permission IN ('read', 'write', 'admin')),
    PRIMARY KEY (repo, user_name)
);

CREATE INDEX repository_user_grants_by_user ON repository_user_grants (user_name);

-- A grant to a team names a team of the repository's organisation (its first path
-- component, kept in `org` for the foreign key).
CREATE TABLE repository_team_grants (
    repo       TEXT COLLATE "C" NOT NULL REFERENCES repository_settings (repo) ON DELETE CASCADE,
    org        TEXT COLLATE "C" NOT NULL,
    team       TEXT COLLATE "C" NOT NULL,
    permission TEXT NOT NULL CHECK (permission IN ('read', 'write', 'admin')),
    PRIMARY KEY (repo, team),
    FOREIGN KEY (org, team) REFERENCES teams (org, name) ON DELETE CASCADE
);

CREATE INDEX repository_team_grants_by_team ON repository_team_grants (org, team);

CREATE TABLE robots (
    namespace   TEXT        COLLATE "C" NOT NULL REFERENCES namespaces (name) ON DELETE CASCADE,
    name        TEXT        COLLATE "C" NOT NULL,
    secret_hash TEXT        NOT NULL,
    scopes      JSONB       NOT NULL,  -- array of {"repository", "actions"}
    created_at  TIMESTAMPTZ NOT NULL DEFAULT now(),
    expires_at  TIMESTAMPTZ,
    revoked_at  TIMESTAMPTZ,
    PRIMARY KEY (namespace, name)
);

CREATE TABLE sessions (
    id          TEXT        COLLATE "C" PRIMARY KEY,
    user_name   TEXT        COLLATE "C" NOT NULL REFERENCES users (name) ON DELETE CASCADE,
    secret_hash TEXT        NOT NULL,
    service     TEXT        NOT NULL,
    created_at  TIMESTAMPTZ NOT NULL DEFAULT now(),
    expires_at  TIMESTAMPTZ NOT NULL,
    revoked_at  TIMESTAMPTZ
);

-- revoke_sessions_of(user), and the cascade when a user is deleted.
CREATE INDEX sessions_by_user ON sessions (user_name);

CREATE TABLE signing_keys (
    kid         TEXT        COLLATE "C" PRIMARY KEY,
    algorithm   TEXT        NOT NULL,
    private_pem TEXT        NOT NULL,
    created_at  TIMESTAMPTZ NOT NULL,
    retired_at  TIMESTAMPTZ
);

-- An identity: ids only grow, so an id stays a valid page cursor.
CREATE TABLE audit_log (
    id      BIGINT      GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    at      TIMESTAMPTZ NOT NULL DEFAULT now(),
    actor   TEXT        COLLATE "C",
    client  TEXT,
    action  TEXT        COLLATE "C" NOT NULL,
    target  TEXT        COLLATE "C" NOT NULL,
    outcome TEXT        NOT NULL CHECK (outcome IN ('allowed', 'denied')),
    detail  TEXT
);

-- The audit query's filters, each yielding rows newest first (id descending).
CREATE INDEX audit_log_by_actor ON audit_log (actor, id);
CREATE INDEX audit_log_by_action ON audit_log (action, id);
CREATE INDEX audit_log_by_target ON audit_log (target, id);
CREATE INDEX audit_log_by_time ON audit_log (at, id);
