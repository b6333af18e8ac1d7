-- Issue 15: the durable outbox of email. A message is inserted (in the transaction of whatever
-- causes it, when there is one) and a background sender delivers it over SMTP later, so a
-- crash between the commit and the send loses nothing: the row is still there. Delivery is
-- at-least-once: a sender claims due messages with a lease (`claim_id`, `claimed_until`) and
-- marks each sent or failed; a sender that dies in between leaves the lease to expire, and the
-- message is claimed again (and may arrive twice). Several replicas share the table: a claim
-- skips rows another replica holds (`FOR UPDATE SKIP LOCKED`), so under normal operation each
-- message is sent once.
CREATE TABLE email_outbox (
    -- UUID text.
    id              TEXT PRIMARY KEY,
    -- What the message is for (`verify_email`, `password_reset`, …): metrics and limits.
    kind            TEXT NOT NULL,
    -- One mailbox, as the message's `To`.
    recipient       TEXT NOT NULL,
    subject         TEXT NOT NULL,
    -- The bodies (UTF-8) sealed: they will hold links with single-use tokens, and a dump of
    -- the database must not hand those out. XChaCha20-Poly1305 under a subkey of the
    -- key-encryption key `body_kek`, bound to the message's id and part, stored as nonce then
    -- ciphertext like sessions.rotation_key (auth-api/src/mail/seal.rs). Emptied (NULL) once
    -- the message is sent or dead: nobody needs them kept.
    text_body       BLOB,
    html_body       BLOB,
    body_kek        TEXT,
    -- `pending` (to send, or being sent), `sent`, or `dead` (given up after the last attempt;
    -- kept for operators, `auth-api outbox list --stuck`).
    status          TEXT NOT NULL CHECK (status IN ('pending', 'sent', 'dead')),
    created_at      BIGINT NOT NULL,
    -- Delivery attempts begun (counted when claimed, so a message that crashes its sender
    -- also runs out of attempts).
    attempts        BIGINT NOT NULL DEFAULT 0,
    -- When a pending message is due: after a backoff, or when the lease of its claim ends.
    next_attempt_at BIGINT NOT NULL,
    -- The lease of the sender that claimed it: only that claim marks it sent or failed.
    claim_id        TEXT,
    claimed_until   BIGINT,
    -- Why the last attempt failed (the SMTP server's answer or the connection error; never
    -- a body or a credential).
    last_error      TEXT,
    sent_at         BIGINT,
    dead_at         BIGINT
);
-- The sender's claim: due pending messages, oldest due first. `created_at` too, so the index
-- serves the claim's whole ORDER BY: MariaDB otherwise sorts every due row, and its
-- FOR UPDATE SKIP LOCKED then locks them all, leaving nothing to a concurrent replica.
CREATE INDEX email_outbox_due_idx ON email_outbox (status, next_attempt_at, created_at);
-- Per-recipient limits count what was queued for an address lately.
CREATE INDEX email_outbox_recipient_idx ON email_outbox (recipient, created_at);
