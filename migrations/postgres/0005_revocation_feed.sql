-- Issue 10: the revocation feed v2, a cursor the gateway follows instead of re-reading every
-- live entry on each change (see auth-api/src/store/revocations.rs).
--
-- `revocation_feed` is one row: `epoch` names this database's numbering (random, so that a
-- gateway notices a replaced database and starts over) and `seq` is the head, the last number
-- handed out. Recording a revocation bumps it with `UPDATE ... RETURNING seq` as the last
-- statement of its transaction; the row lock is held until commit, so seq order is commit
-- order and, once a head H is visible, every entry numbered up to H is committed.
CREATE TABLE revocation_feed (
    id    INTEGER PRIMARY KEY CHECK (id = 1),
    epoch TEXT NOT NULL,
    seq   BIGINT NOT NULL
);
INSERT INTO revocation_feed (id, epoch, seq)
SELECT 1, md5(random()::text || clock_timestamp()::text || pg_backend_pid()::text),
       COALESCE(MAX(id), 0)
FROM revocations;

-- Existing entries keep their order: seq = id, and the head is the largest id.
ALTER TABLE revocations ADD COLUMN seq BIGINT;
UPDATE revocations SET seq = id;
ALTER TABLE revocations ALTER COLUMN seq SET NOT NULL;
CREATE UNIQUE INDEX revocations_seq_idx ON revocations (seq);
