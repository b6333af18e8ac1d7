//! [`Mailer`]: one message at a time over SMTP, through `lettre` (tokio, rustls with ring).

use std::time::Duration;

use anyhow::Context as _;
use lettre::{
    message::{header::ContentType, Mailbox, MultiPart, SinglePart},
    AsyncSmtpTransport, AsyncTransport as _, Message, Tokio1Executor,
};
use secrecy::ExposeSecret as _;

use crate::config::Config;

/// A message ready to go: what the outbox held, its bodies opened.
pub(super) struct Outgoing<'a> {
    /// The outbox row's id (the `Message-ID`'s local part).
    pub(super) id: &'a str,
    pub(super) recipient: &'a str,
    pub(super) subject: &'a str,
    pub(super) text: &'a str,
    pub(super) html: &'a str,
}

/// SMTP delivery to the relay of `AUTH_SMTP_URL`, from `AUTH_EMAIL_FROM`.
#[derive(Clone)]
pub struct Mailer {
    transport: AsyncSmtpTransport<Tokio1Executor>,
    from: Mailbox,
    timeout: Duration,
}

impl std::fmt::Debug for Mailer {
    /// The transport holds the relay's credentials: only the sender shows.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Mailer")
            .field("from", &self.from.to_string())
            .field("timeout", &self.timeout)
            .finish_non_exhaustive()
    }
}

/// Why one delivery failed.
#[derive(Debug, thiserror::Error)]
pub enum SendError {
    /// The message cannot be built or opened (a recipient that is not a mailbox, a body that
    /// does not authenticate): retrying cannot help.
    #[error("{0}")]
    Invalid(String),
    /// A body is sealed under a key-encryption key this replica does not hold: another replica,
    /// or this one once its `AUTH_KEY_ENCRYPTION_KEYS` is fixed, can still send it.
    #[error("{0}")]
    KeyMissing(String),
    /// The relay refused it or could not be reached, or took longer than allowed. `detail` is
    /// the relay's whole answer, which may quote the recipient or a line of the message;
    /// `reply` only its SMTP code and enhanced status (or the kind of failure), for logs.
    #[error("{detail}")]
    Smtp {
        /// `550 5.1.1`, `421`, `timeout`, `Connection error`, …
        reply: String,
        /// The error in full.
        detail: String,
    },
}

impl SendError {
    /// What a log may show of the failure: never the relay's text (SECURITY.md I 100: it can
    /// carry the recipient, or a line with a single-use link). The other variants are our own
    /// words, naming at most a key-encryption key's id.
    pub fn summary(&self) -> &str {
        match self {
            Self::Invalid(text) | Self::KeyMissing(text) => text,
            Self::Smtp { reply, .. } => reply,
        }
    }

    fn smtp(error: &lettre::transport::smtp::Error) -> Self {
        let reply = match error.status() {
            Some(code) => {
                let text = std::error::Error::source(error)
                    .map(ToString::to_string)
                    .unwrap_or_default();
                match enhanced_status(&text) {
                    Some(enhanced) => format!("{code} {enhanced}"),
                    None => code.to_string(),
                }
            }
            None if error.is_timeout() => "timeout".to_owned(),
            // Without a code, lettre's own words for the kind come before the first colon.
            None => error
                .to_string()
                .split(':')
                .next()
                .unwrap_or_default()
                .to_owned(),
        };
        Self::Smtp {
            reply,
            detail: error.to_string(),
        }
    }
}

/// The enhanced status code (RFC 3463, `class.subject.detail`) that starts an SMTP reply's
/// text, if it does.
fn enhanced_status(text: &str) -> Option<&str> {
    let word = text.split_whitespace().next()?;
    let mut parts = word.split('.');
    let class = parts.next()?;
    let subject = parts.next()?;
    let detail = parts.next()?;
    let digits = |part: &str, max: usize| {
        (1..=max).contains(&part.len()) && part.bytes().all(|b| b.is_ascii_digit())
    };
    (parts.next().is_none()
        && matches!(class, "2" | "4" | "5")
        && digits(subject, 3)
        && digits(detail, 3))
    .then_some(word)
}

impl Mailer {
    /// The mailer `config` asks for; `None` when `AUTH_SMTP_URL` is unset.
    pub fn from_config(config: &Config) -> anyhow::Result<Option<Self>> {
        let Some(url) = &config.smtp_url else {
            return Ok(None);
        };
        let from = config
            .email_from
            .clone()
            .context("AUTH_EMAIL_FROM is required when AUTH_SMTP_URL is set")?;
        // lettre's timeout bounds each connection attempt and command; `send` bounds the whole.
        let transport = AsyncSmtpTransport::<Tokio1Executor>::from_url(url.expose_secret())
            .map_err(|e| anyhow::anyhow!("AUTH_SMTP_URL: not usable as an SMTP relay: {e}"))?
            .timeout(Some(config.smtp_timeout))
            .build();
        Ok(Some(Self {
            transport,
            from,
            timeout: config.smtp_timeout,
        }))
    }

    /// The longest one delivery takes (`AUTH_SMTP_TIMEOUT_SECS`).
    pub fn timeout(&self) -> Duration {
        self.timeout
    }

    /// Builds `email` as `multipart/alternative` (text, then HTML) and delivers it, within
    /// [`Mailer::timeout`].
    pub(super) async fn send(&self, email: &Outgoing<'_>) -> Result<(), SendError> {
        let message = self.message(email)?;
        match tokio::time::timeout(self.timeout, self.transport.send(message)).await {
            Ok(Ok(_)) => Ok(()),
            Ok(Err(e)) => Err(SendError::smtp(&e)),
            Err(_) => Err(SendError::Smtp {
                reply: "timeout".to_owned(),
                detail: format!("no answer within {} s", self.timeout.as_secs()),
            }),
        }
    }

    fn message(&self, email: &Outgoing<'_>) -> Result<Message, SendError> {
        let to: Mailbox = email
            .recipient
            .parse()
            .map_err(|_| SendError::Invalid("the recipient is not a mailbox".to_owned()))?;
        // One Message-ID per outbox row: a message sent again after a crash is recognisably the
        // same message.
        let message_id = format!("<{}@{}>", email.id, self.from.email.domain());
        Message::builder()
            .from(self.from.clone())
            .to(to)
            .subject(email.subject)
            .message_id(Some(message_id))
            .multipart(
                MultiPart::alternative()
                    .singlepart(
                        SinglePart::builder()
                            .header(ContentType::TEXT_PLAIN)
                            .body(email.text.to_owned()),
                    )
                    .singlepart(
                        SinglePart::builder()
                            .header(ContentType::TEXT_HTML)
                            .body(email.html.to_owned()),
                    ),
            )
            .map_err(|e| SendError::Invalid(format!("cannot build the message: {e}")))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_enhanced_status_is_read_from_the_start_of_a_reply_only() {
        assert_eq!(
            enhanced_status("5.1.1 <user@example.org>: Recipient address rejected"),
            Some("5.1.1")
        );
        assert_eq!(enhanced_status("4.7.0 try later"), Some("4.7.0"));
        assert_eq!(enhanced_status("Recipient 5.1.1 rejected"), None);
        assert_eq!(enhanced_status("5.1 short"), None);
        assert_eq!(enhanced_status("5.1.1.1 long"), None);
        assert_eq!(enhanced_status("1.2.3 no such class"), None);
        assert_eq!(enhanced_status(""), None);
    }
}
