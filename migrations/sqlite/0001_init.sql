-- Aerugo metadata schema (SQLite). Timestamps are seconds since the Unix epoch; sizes are bytes.
-- Text comparisons use the default BINARY collation, which is the byte order the API promises.

CREATE TABLE repositories (
    id         INTEGER PRIMARY KEY,
    name       TEXT    NOT NULL UNIQUE,
    created_at INTEGER NOT NULL
) STRICT;

-- One row per blob the registry holds bytes for, whichever repositories link it.
CREATE TABLE blobs (
    digest     TEXT    PRIMARY KEY,
    size       INTEGER NOT NULL CHECK (size >= 0),
    created_at INTEGER NOT NULL
) STRICT, WITHOUT ROWID;

-- A repository may serve a blob only while it links it; linked_at starts the GC grace period.
CREATE TABLE repo_blobs (
    repo_id   INTEGER NOT NULL REFERENCES repositories (id),
    digest    TEXT    NOT NULL REFERENCES blobs (digest),
    linked_at INTEGER NOT NULL,
    PRIMARY KEY (repo_id, digest)
) STRICT, WITHOUT ROWID;

-- blob_known and GC look links up by digest alone.
CREATE INDEX repo_blobs_by_digest ON repo_blobs (digest);

-- Kept as a rowid table: bodies can be large, which WITHOUT ROWID handles badly.
CREATE TABLE manifests (
    repo_id       INTEGER NOT NULL REFERENCES repositories (id),
    digest        TEXT    NOT NULL,
    media_type    TEXT    NOT NULL,
    artifact_type TEXT,
    subject       TEXT,
    annotations   TEXT,            -- JSON object, copied into referrer descriptors
    size          INTEGER NOT NULL CHECK (size >= 0),
    body          BLOB    NOT NULL,
    created_at    INTEGER NOT NULL,
    PRIMARY KEY (repo_id, digest)
) STRICT;

-- The referrers query; digest last so the index also yields the answer in order.
CREATE INDEX manifests_by_subject ON manifests (repo_id, subject, digest) WHERE subject IS NOT NULL;

-- What each manifest points at: its config and layers ('blob') or an index's children
-- ('manifest'). Keeps referenced blobs out of GC and lets put_manifest validate.
CREATE TABLE manifest_refs (
    repo_id         INTEGER NOT NULL,
    manifest_digest TEXT    NOT NULL,
    target_digest   TEXT    NOT NULL,
    kind            TEXT    NOT NULL CHECK (kind IN ('blob', 'manifest')),
    PRIMARY KEY (repo_id, manifest_digest, kind, target_digest),
    FOREIGN KEY (repo_id, manifest_digest) REFERENCES manifests (repo_id, digest) ON DELETE CASCADE
) STRICT, WITHOUT ROWID;

-- GC asks "does any manifest (of this repository) reference this blob?".
CREATE INDEX manifest_refs_by_target ON manifest_refs (target_digest, kind, repo_id);

CREATE TABLE tags (
    repo_id    INTEGER NOT NULL REFERENCES repositories (id),
    name       TEXT    NOT NULL,
    digest     TEXT    NOT NULL,
    updated_at INTEGER NOT NULL,
    PRIMARY KEY (repo_id, name),
    FOREIGN KEY (repo_id, digest) REFERENCES manifests (repo_id, digest) ON DELETE CASCADE
) STRICT, WITHOUT ROWID;

-- delete_manifest finds the tags pointing at a digest.
CREATE INDEX tags_by_digest ON tags (repo_id, digest);

-- Sessions name their repository rather than reference it, so starting an upload does not
-- create a repository.
CREATE TABLE uploads (
    id          TEXT    PRIMARY KEY,
    repo        TEXT    NOT NULL,
    byte_offset INTEGER NOT NULL CHECK (byte_offset >= 0),
    hash_state  BLOB    NOT NULL,
    created_at  INTEGER NOT NULL,
    updated_at  INTEGER NOT NULL
) STRICT, WITHOUT ROWID;
