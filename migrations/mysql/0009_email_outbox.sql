-- Issue 15: the durable outbox of email. The table and its comments are those of
-- migrations/postgres/0009_email_outbox.sql, in the types of 0006_initial.sql: text in
-- VARBINARY, bytes read back (the sealed bodies) in MEDIUMBLOB, times in BIGINT. A recipient
-- is one mailbox (at most 320 bytes), a subject one header line (at most 998 bytes, RFC 5322
-- §2.1.1), a last error is cut to 1000 bytes by auth-api, and a sealed body is at most 1 MiB
-- and 40 bytes (auth-api refuses larger bodies).

CREATE TABLE email_outbox (
    id              VARBINARY(36)   NOT NULL PRIMARY KEY,
    kind            VARBINARY(64)   NOT NULL,
    recipient       VARBINARY(320)  NOT NULL,
    subject         VARBINARY(998)  NOT NULL,
    text_body       MEDIUMBLOB,
    html_body       MEDIUMBLOB,
    body_kek        VARBINARY(64),
    status          VARBINARY(16)   NOT NULL CHECK (status IN ('pending', 'sent', 'dead')),
    created_at      BIGINT NOT NULL,
    attempts        BIGINT NOT NULL DEFAULT 0,
    next_attempt_at BIGINT NOT NULL,
    claim_id        VARBINARY(36),
    claimed_until   BIGINT,
    last_error      VARBINARY(1000),
    sent_at         BIGINT,
    dead_at         BIGINT,
    -- `created_at` too, so the index serves the claim's whole ORDER BY: otherwise MariaDB
    -- sorts every due row and FOR UPDATE SKIP LOCKED locks them all, leaving nothing to a
    -- concurrent replica.
    INDEX email_outbox_due_idx (status, next_attempt_at, created_at),
    INDEX email_outbox_recipient_idx (recipient, created_at)
) ENGINE = InnoDB;
