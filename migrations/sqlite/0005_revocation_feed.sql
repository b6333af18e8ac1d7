-- Issue 10: the revocation feed v2, a cursor the gateway follows instead of re-reading every
-- live entry on each change (see auth-api/src/store/revocations.rs).
--
-- `revocation_feed` is one row: `epoch` names this database's numbering (random, so that a
-- gateway notices a replaced database and starts over) and `seq` is the head, the last number
-- handed out. Recording a revocation bumps it with `UPDATE ... RETURNING seq` as the last
-- statement of its transaction (SQLite has one writer at a time anyway), so seq order is
-- commit order and, once a head H is visible, every entry numbered up to H is committed.
CREATE TABLE revocation_feed (
    id    INTEGER PRIMARY KEY CHECK (id = 1),
    epoch TEXT NOT NULL,
    seq   BIGINT NOT NULL
);
INSERT INTO revocation_feed (id, epoch, seq)
SELECT 1, lower(hex(randomblob(16))), COALESCE(MAX(id), 0) FROM revocations;

-- SQLite adds a NOT NULL column only with a default, and a default would let an insert that
-- forgot its seq through: the table is rebuilt instead. Existing entries keep their order
-- (seq = id, and the head is the largest id).
CREATE TABLE revocations_v2 (
    id         INTEGER PRIMARY KEY AUTOINCREMENT,
    kind       TEXT NOT NULL CHECK (kind IN ('session', 'user')),
    -- The session id, or the user id.
    subject    TEXT NOT NULL,
    -- For users: tokens issued before this time are refused.
    not_before BIGINT,
    until      BIGINT NOT NULL,
    created_at BIGINT NOT NULL,
    -- The entry's place in the feed (see revocation_feed).
    seq        BIGINT NOT NULL
);
INSERT INTO revocations_v2 (id, kind, subject, not_before, until, created_at, seq)
SELECT id, kind, subject, not_before, until, created_at, id FROM revocations;
DROP TABLE revocations;
ALTER TABLE revocations_v2 RENAME TO revocations;
CREATE INDEX revocations_until_idx ON revocations (until);
CREATE UNIQUE INDEX revocations_seq_idx ON revocations (seq);
