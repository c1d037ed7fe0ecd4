-- One row rewritten by every readiness check, so `/readyz` goes through the write path
-- (BEGIN IMMEDIATE, a page write, COMMIT) and fails while writes fail.
CREATE TABLE readiness (
    id         INTEGER PRIMARY KEY CHECK (id = 1),
    checked_at INTEGER NOT NULL
) STRICT;
