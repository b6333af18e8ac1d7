-- The Admin API lists users oldest first, a page at a time after the last one seen
-- (`ORDER BY created_at, id`, keyset): without this index every page read and sorted the whole
-- users table.
CREATE INDEX users_created_at_id ON users (created_at, id);
