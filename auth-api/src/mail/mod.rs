//! Email (issue 15): messages queued in the database's outbox, delivered over SMTP by a
//! background [`Sender`] on every replica where `AUTH_SMTP_URL` is set.
//!
//! What sends mail builds an [`Email`], seals it ([`Email::seal`]) and queues it with
//! [`crate::store::enqueue_email`] inside its own transaction (or [`crate::store::Store::enqueue_email`]),
//! then calls [`OutboxWake::wake`] after the commit. The sender claims due messages with a lease,
//! delivers each, and records the outcome ([`crate::store`]'s outbox module). Delivery is
//! at-least-once: a message is never lost, and one whose sender died between claiming and
//! recording it is sent again once the lease ends (with the same `Message-ID`, so that a mail
//! client can show the two as one). A failed attempt is retried after 30 s, doubling to at
//! most 1 h, until `AUTH_OUTBOX_MAX_ATTEMPTS`; then the message is kept as `dead` for operators
//! (`auth-api outbox list --stuck`).
//!
//! Bodies are sealed at rest ([`seal`]) and nothing here logs a body or a recipient; errors
//! recorded are the SMTP server's answer, the connection's error, or why a body did not open.

mod seal;
mod sender;
mod smtp;
pub mod templates;

use std::sync::Arc;

use tokio::sync::Notify;

use crate::{kek::KeyEncryptionKeys, store::QueuedEmail};

pub use seal::OpenError;
pub use sender::{backoff_secs, Sender};
pub use smtp::{Mailer, SendError};

/// The largest body queued, in bytes, per part: mail of ours is a few kilobytes, and the outbox
/// columns (MySQL's MEDIUMBLOB) and relays must take it.
pub const MAX_BODY_BYTES: usize = 1 << 20;

/// A message to queue.
#[derive(Clone, PartialEq, Eq)]
pub struct Email {
    /// What it is for (`verify_email`, `password_reset`, …): the `kind` label of
    /// `auth_email_sent_total`, and what limits count.
    pub kind: String,
    /// One mailbox (`ada@example.com`).
    pub recipient: String,
    /// One line.
    pub subject: String,
    /// The `text/plain` part.
    pub text: String,
    /// The `text/html` part.
    pub html: String,
}

impl std::fmt::Debug for Email {
    /// Bodies will hold single-use tokens, recipients are personal data: neither shows.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Email")
            .field("kind", &self.kind)
            .finish_non_exhaustive()
    }
}

impl Email {
    /// This message with a new id, its bodies sealed under the current KEK, ready for the
    /// outbox. Fails on a body over [`MAX_BODY_BYTES`] or a subject of more than one line.
    pub fn seal(&self, keks: &KeyEncryptionKeys) -> anyhow::Result<QueuedEmail> {
        anyhow::ensure!(
            self.text.len() <= MAX_BODY_BYTES && self.html.len() <= MAX_BODY_BYTES,
            "an email body is larger than {MAX_BODY_BYTES} bytes"
        );
        anyhow::ensure!(
            !self.subject.contains(['\r', '\n']),
            "an email subject is one line"
        );
        let id = uuid::Uuid::new_v4().to_string();
        let (body_kek, text_body) = seal::seal(keks, &id, seal::Part::Text, &self.text)?;
        let (_, html_body) = seal::seal(keks, &id, seal::Part::Html, &self.html)?;
        Ok(QueuedEmail {
            id,
            kind: self.kind.clone(),
            recipient: self.recipient.clone(),
            subject: self.subject.clone(),
            body_kek,
            text_body,
            html_body,
        })
    }
}

/// Wakes the replica's sender at once (after a commit that queued mail) instead of at its
/// next poll; cheap to clone. Without a sender it does nothing.
#[derive(Debug, Clone, Default)]
pub struct OutboxWake(Arc<Notify>);

impl OutboxWake {
    /// Asks the sender to look for due messages now.
    pub fn wake(&self) {
        self.0.notify_one();
    }

    fn notify(&self) -> Arc<Notify> {
        self.0.clone()
    }
}
