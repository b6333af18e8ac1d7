-- Issue 10: the revocation feed v2, a cursor the gateway follows instead of re-reading every
-- live entry on each change (see auth-api/src/store/revocations.rs).
--
-- `revocation_feed` is one row: `epoch` names this database's numbering (random, so that a
-- gateway notices a replaced database and starts over), `seq` is the head, the last number
-- handed out, and `tag` the head entry's tag. Recording a revocation bumps seq (and sets tag)
-- with `UPDATE ... RETURNING seq` as the last statement of its transaction; the row lock is
-- held until commit, so seq order is commit order and, once a head H is visible, every entry
-- numbered up to H is committed.
--
-- Every entry has a random 64-bit `tag`, and a cursor is (seq, tag): a database restored from
-- a backup, a promoted asynchronous standby or a dump keeps its epoch but numbers new entries
-- again from an older head with new tags, so a cursor from the lost history no longer matches
-- and the reader gets a full sync instead of silently skipping entries.

-- 64 random bits (from gen_random_uuid(), a strong random source) as a BIGINT.
CREATE FUNCTION revocation_random_tag() RETURNS BIGINT LANGUAGE sql VOLATILE AS $$
    SELECT ('x' || left(md5(gen_random_uuid()::text), 16))::bit(64)::bigint
$$;

-- Existing entries keep their order: seq = id, and the head is the largest id.
ALTER TABLE revocations ADD COLUMN seq BIGINT;
ALTER TABLE revocations ADD COLUMN tag BIGINT;
UPDATE revocations SET seq = id, tag = revocation_random_tag();
ALTER TABLE revocations ALTER COLUMN seq SET NOT NULL;
ALTER TABLE revocations ALTER COLUMN tag SET NOT NULL;
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
SELECT 1, md5(random()::text || clock_timestamp()::text || pg_backend_pid()::text),
       COALESCE(MAX(id), 0), revocation_random_tag()
FROM revocations;
UPDATE revocation_feed SET tag = r.tag FROM revocations r WHERE r.seq = revocation_feed.seq;

-- Rolling upgrade: a replica still on the code from before this migration inserts entries
-- without seq and tag. Number them as the new code does (bump the head, locked until commit)
-- instead of failing its logout or reuse detection. SQLite has a single replica, and no
-- such trigger.
CREATE FUNCTION revocations_number_unnumbered() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF NEW.seq IS NULL THEN
        NEW.tag := revocation_random_tag();
        UPDATE revocation_feed SET seq = seq + 1, tag = NEW.tag WHERE id = 1
        RETURNING seq INTO NEW.seq;
    END IF;
    RETURN NEW;
END;
$$;
CREATE TRIGGER revocations_number_unnumbered BEFORE INSERT ON revocations
    FOR EACH ROW EXECUTE FUNCTION revocations_number_unnumbered();
