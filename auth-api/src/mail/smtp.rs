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
    /// The message cannot be built or opened (a recipient that is not a mailbox, a body sealed
    /// under a KEK no longer configured): retrying cannot help.
    #[error("{0}")]
    Invalid(String),
    /// The relay refused it or could not be reached, or took longer than allowed.
    #[error("{0}")]
    Smtp(String),
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
            Ok(Err(e)) => Err(SendError::Smtp(e.to_string())),
            Err(_) => Err(SendError::Smtp(format!(
                "no answer within {} s",
                self.timeout.as_secs()
            ))),
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
