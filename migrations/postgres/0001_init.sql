-- Aerugo metadata schema (PostgreSQL). Mirrors migrations/sqlite table for table, so both
-- stores answer the same conformance suite. Sizes are bytes. Timestamps come from the
-- database's clock (now()), never a node's, so the nodes of a cluster agree on GC ages.
-- Names, tags, digests and upload ids use the "C" collation: the API promises byte order for
-- pagination, whatever locale the database was created with.

CREATE TABLE repositories (
    id         BIGINT      GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    name       TEXT        COLLATE "C" NOT NULL UNIQUE,
    created_at TIMESTAMPTZ NOT NULL DEFAULT now()
);

-- One row per blob the registry holds bytes for, whichever repositories link it.
CREATE TABLE blobs (
    digest     TEXT        COLLATE "C" PRIMARY KEY,
    size       BIGINT      NOT NULL CHECK (size >= 0),
    created_at TIMESTAMPTZ NOT NULL DEFAULT now()
);

-- A repository may serve a blob only while it links it; linked_at starts the GC grace period.
CREATE TABLE repo_blobs (
    repo_id   BIGINT      NOT NULL REFERENCES repositories (id),
    digest    TEXT        COLLATE "C" NOT NULL REFERENCES blobs (digest),
    linked_at TIMESTAMPTZ NOT NULL DEFAULT now(),
    PRIMARY KEY (repo_id, digest)
);

-- blob_known and GC look links up by digest alone.
CREATE INDEX repo_blobs_by_digest ON repo_blobs (digest);

CREATE TABLE manifests (
    repo_id       BIGINT      NOT NULL REFERENCES repositories (id),
    digest        TEXT        COLLATE "C" NOT NULL,
    media_type    TEXT        NOT NULL,
    artifact_type TEXT,
    subject       TEXT        COLLATE "C",
    annotations   JSONB,      -- copied into referrer descriptors
    size          BIGINT      NOT NULL CHECK (size >= 0),
    body          BYTEA       NOT NULL,
    created_at    TIMESTAMPTZ NOT NULL DEFAULT now(),
    PRIMARY KEY (repo_id, digest)
);

-- The referrers query; digest last so the index also yields the answer in order.
CREATE INDEX manifests_by_subject ON manifests (repo_id, subject, digest) WHERE subject IS NOT NULL;

-- What each manifest points at: its config and layers ('blob') or an index's children
-- ('manifest'). Keeps referenced blobs out of GC and lets put_manifest validate.
CREATE TABLE manifest_refs (
    repo_id         BIGINT NOT NULL,
    manifest_digest TEXT   COLLATE "C" NOT NULL,
    target_digest   TEXT   COLLATE "C" NOT NULL,
    kind            TEXT   NOT NULL CHECK (kind IN ('blob', 'manifest')),
    PRIMARY KEY (repo_id, manifest_digest, kind, target_digest),
    FOREIGN KEY (repo_id, manifest_digest) REFERENCES manifests (repo_id, digest) ON DELETE CASCADE
);

-- GC asks "does any manifest (of this repository) reference this blob?".
CREATE INDEX manifest_refs_by_target ON manifest_refs (target_digest, kind, repo_id);

CREATE TABLE tags (
    repo_id    BIGINT      NOT NULL REFERENCES repositories (id),
    name       TEXT        COLLATE "C" NOT NULL,
    digest     TEXT        COLLATE "C" NOT NULL,
    updated_at TIMESTAMPTZ NOT NULL DEFAULT now(),
    PRIMARY KEY (repo_id, name),
    FOREIGN KEY (repo_id, digest) REFERENCES manifests (repo_id, digest) ON DELETE CASCADE
);

-- delete_manifest finds the tags pointing at a digest.
CREATE INDEX tags_by_digest ON tags (repo_id, digest);

-- Sessions name their repository rather than reference it, so starting an upload does not
-- create a repository.
CREATE TABLE uploads (
    id          TEXT        COLLATE "C" PRIMARY KEY,
    repo        TEXT        COLLATE "C" NOT NULL,
    byte_offset BIGINT      NOT NULL CHECK (byte_offset >= 0),
    hash_state  BYTEA       NOT NULL,
    created_at  TIMESTAMPTZ NOT NULL DEFAULT now(),
    updated_at  TIMESTAMPTZ NOT NULL DEFAULT now()
);

-- One row rewritten by every readiness check, so `/readyz` goes through the write path and
-- fails while writes fail (a read-only standby after a failover, a full disk).
CREATE TABLE readiness (
    id         INTEGER     PRIMARY KEY CHECK (id = 1),
    checked_at TIMESTAMPTZ NOT NULL
);
