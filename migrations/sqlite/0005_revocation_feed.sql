-- Issue 10: the revocation feed v2, a cursor the gateway follows instead of re-reading every
-- live entry on each change (see auth-api/src/store/revocations.rs).
--
-- `revocation_feed` is one row: `epoch` names this database's numbering (random, so that a
-- gateway notices a replaced database and starts over), `seq` is the head, the last number
-- handed out, and `tag` the head entry's tag. Recording a revocation bumps seq (and sets tag)
-- with `UPDATE ... RETURNING seq` as the last statement of its transaction (SQLite has one
-- writer at a time anyway), so seq order is commit order and, once a head H is visible, every
-- entry numbered up to H is committed.
--
-- Every entry has a random 64-bit `tag`, and a cursor is (seq, tag): a database restored from
-- a backup or a copy keeps its epoch but numbers new entries again from an older head with new
-- tags, so a cursor from the lost history no longer matches and the reader gets a full sync.
--
-- SQLite adds a NOT NULL column only with a default, and a default would let an insert that
-- forgot its seq through: the table is rebuilt instead. Existing entries keep their order
-- (seq = id, and the head is the largest id). An SQLite database has a single replica, so
-- there is no rolling upgrade with old code inserting unnumbered entries (PostgreSQL numbers
-- those with a trigger).
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
    seq        BIGINT NOT NULL,
    -- 64 random bits that tell this entry from one numbered alike in another history.
    tag        BIGINT NOT NULL
);
INSERT INTO revocations_v2 (id, kind, subject, not_before, until, created_at, seq, tag)
SELECT id, kind, subject, not_before, until, created_at, id, random() FROM revocations;
DROP TABLE revocations;
ALTER TABLE revocations_v2 RENAME TO revocations;
CREATE INDEX revocations_until_idx ON revocations (until);
CREATE UNIQUE INDEX revocations_seq_idx ON revocations (seq);

CREATE TABLE revocation_feed (
    id    INTEGER PRIMARY KEY CHECK (id = 1),
    epoch TEXT NOT NULL,
    seq   BIGINT NOT NULL,
    tag   BIGINT NOT NULL
);
-- The head's tag is its entry's tag (a reader at the head resumes with it once the head has
-- moved on); an empty feed gets a random one.
INSERT INTO revocation_feed (id, epoch, seq, tag)
SELECT 1, lower(hex(randomblob(16))), COALESCE(MAX(id), 0),
       COALESCE((SELECT tag FROM revocations WHERE seq = (SELECT MAX(id) FROM revocations)),
                random())
FROM revocations;
