//! [`Sender`]: the background task that drains the outbox of one replica.

use std::time::Duration;

use tokio::sync::watch;

use super::{
    seal::{self, OpenError, Part},
    smtp::{Outgoing, SendError},
    Mailer,
};
use crate::{
    clock::secs,
    state::AppState,
    store::{AfterFailure, ClaimedEmail},
};

/// Messages claimed at once by one sender.
const BATCH: i64 = 10;
/// The wait before the second attempt; each later one doubles it, up to [`MAX_BACKOFF_SECS`].
const FIRST_BACKOFF_SECS: i64 = 30;
/// The longest wait between attempts.
const MAX_BACKOFF_SECS: i64 = 3600;
/// Added to a claim's lease beyond the time its batch may take to send: clocks of replicas
/// differ a little, and a lease that ends while its holder still sends means a duplicate.
const LEASE_MARGIN_SECS: i64 = 60;
/// How often the outbox gauge is refreshed (a count over the outbox's index).
const GAUGE_INTERVAL: Duration = Duration::from_secs(60);

/// The wait after the failed attempt number `attempts` (1 for the first): 30 s, doubling, at
/// most an hour.
pub fn backoff_secs(attempts: i64) -> i64 {
    let doublings = u32::try_from(attempts.saturating_sub(1).max(0)).unwrap_or(u32::MAX);
    FIRST_BACKOFF_SECS
        .checked_mul(2_i64.saturating_pow(doublings.min(32)))
        .map_or(MAX_BACKOFF_SECS, |wait| wait.min(MAX_BACKOFF_SECS))
}

/// The outbox sender of one replica.
#[derive(Debug)]
pub struct Sender {
    state: AppState,
    mailer: Mailer,
}

impl Sender {
    /// Starts the sender of `state` until `stop` turns true (or its sender drops): it drains
    /// what is due, then waits for [`crate::config::Config::outbox_poll_interval`] or a wake.
    pub fn spawn(
        state: AppState,
        mailer: Mailer,
        mut stop: watch::Receiver<bool>,
    ) -> tokio::task::JoinHandle<()> {
        let sender = Self { state, mailer };
        tokio::spawn(async move {
            let wake = sender.state.outbox_wake.notify();
            let mut gauge_due = tokio::time::Instant::now();
            loop {
                sender.drain().await;
                if tokio::time::Instant::now() >= gauge_due {
                    sender.refresh_gauge().await;
                    gauge_due = tokio::time::Instant::now() + GAUGE_INTERVAL;
                }
                tokio::select! {
                    () = tokio::time::sleep(sender.state.config.outbox_poll_interval) => {}
                    () = wake.notified() => {}
                    changed = stop.changed() => {
                        if changed.is_err() || *stop.borrow() {
                            break;
                        }
                    }
                }
            }
        })
    }

    /// Claims and delivers batches until nothing is due.
    async fn drain(&self) {
        loop {
            let claim_id = uuid::Uuid::new_v4().to_string();
            let now = self.state.clock.now();
            // Long enough for the whole batch to time out message by message.
            // Saturating: the configuration bounds the timeout, but a lease is never worth a panic.
            let lease_until = now
                .saturating_add(BATCH.saturating_mul(secs(self.mailer.timeout()).max(1)))
                .saturating_add(LEASE_MARGIN_SECS);
            let batch = match self
                .state
                .store
                .claim_emails(&claim_id, now, lease_until, BATCH)
                .await
            {
                Ok(batch) => batch,
                Err(e) => {
                    tracing::warn!(error = %e, "cannot claim outbox messages; retrying at the next poll");
                    return;
                }
            };
            let full = i64::try_from(batch.len()).unwrap_or(i64::MAX) >= BATCH;
            for email in &batch {
                self.deliver(email, &claim_id).await;
            }
            if !full {
                return;
            }
        }
    }

    /// Opens the bodies of a claimed message and sends it.
    async fn send(&self, email: &ClaimedEmail) -> Result<(), SendError> {
        let keks = self.state.ring.keks();
        let open = |part, stored: &[u8]| {
            seal::open(keks, &email.body_kek, &email.id, part, stored).map_err(|e| match e {
                OpenError::UnknownKek(_) => SendError::KeyMissing(e.to_string()),
                // Present but not authentic: an altered or moved row, which no replica opens.
                OpenError::WrongKey(_) => SendError::Invalid(e.to_string()),
            })
        };
        let text = open(Part::Text, &email.text_body)?;
        let html = open(Part::Html, &email.html_body)?;
        self.mailer
            .send(&Outgoing {
                id: &email.id,
                recipient: &email.recipient,
                subject: &email.subject,
                text: &text,
                html: &html,
            })
            .await
    }

    /// Sends one claimed message and records the outcome under `claim_id`. Logs name the
    /// message by id and kind: never a body, which will hold single-use tokens, nor the relay's
    /// answer, which may quote the recipient or a line of the message (only its codes).
    async fn deliver(&self, email: &ClaimedEmail, claim_id: &str) {
        let store = &self.state.store;
        let metrics = &self.state.metrics;
        let max_attempts = self.state.config.outbox_max_attempts;
        let now = self.state.clock.now();
        // The claim counted this attempt: more than the maximum means earlier claims never
        // recorded their outcome (a sender that died, or a store that refused the record), and
        // the message would otherwise be claimed forever.
        if email.attempts > max_attempts {
            let message = format!(
                "gave up after {} attempts whose outcome was never recorded",
                email.attempts.saturating_sub(1)
            );
            self.record_failure(email, claim_id, &message, &message, now, None)
                .await;
            return;
        }
        let outcome = self.send(email).await;
        let now = self.state.clock.now();
        let recorded = match outcome {
            Ok(()) => store
                .mark_email_sent(&email.id, claim_id, now)
                .await
                .map(|ours| {
                    if ours {
                        metrics.email_sent(&email.kind, "sent");
                        tracing::info!(email_id = %email.id, kind = %email.kind, attempts = email.attempts, "email sent");
                    } else {
                        // Our lease ended and another sender claimed it: it may arrive twice.
                        metrics.email_sent(&email.kind, "sent_after_lease");
                        tracing::warn!(email_id = %email.id, kind = %email.kind, "email sent after its claim's lease ended");
                    }
                }),
            Err(error @ SendError::KeyMissing(_)) => {
                // Not this replica's to send, nor a reason to give up: another replica may hold
                // the key, or this one once its configuration is fixed. The bodies stay, and the
                // attempt is not counted, so the wait stays the first backoff's: a replica that
                // holds the key takes it within 30 s.
                let retry_at = now.saturating_add(backoff_secs(email.attempts));
                store
                    .defer_email(&email.id, claim_id, &error.to_string(), retry_at)
                    .await
                    .map(|ours| {
                        let result = if ours { "deferred" } else { "failed_after_lease" };
                        metrics.email_sent(&email.kind, result);
                        tracing::warn!(email_id = %email.id, kind = %email.kind, result,
                            reason = error.summary(), "email not opened: its key-encryption key is not configured here");
                    })
            }
            Err(error) => {
                // Every relay failure is retried, permanent SMTP answers (5xx) included: a
                // misconfigured relay (a wrong password is 535) must not kill every message at
                // once; an operator who fixes it sees the mail go out.
                let retry_at = match &error {
                    SendError::Invalid(_) | SendError::KeyMissing(_) => None,
                    SendError::Smtp { .. } if email.attempts >= max_attempts => None,
                    SendError::Smtp { .. } => Some(now.saturating_add(backoff_secs(email.attempts))),
                };
                self.record_failure(email, claim_id, &error.to_string(), error.summary(), now, retry_at)
                    .await;
                return;
            }
        };
        if let Err(e) = recorded {
            // The lease ends and the message is claimed again: at-least-once.
            tracing::warn!(email_id = %email.id, error = %e, "cannot record an email's delivery; it will be sent again");
        }
    }

    /// Records a failed attempt: `message` (stored for operators) and `summary` (what the log
    /// shows), due again at `retry_at` or dead.
    async fn record_failure(
        &self,
        email: &ClaimedEmail,
        claim_id: &str,
        message: &str,
        summary: &str,
        now: i64,
        retry_at: Option<i64>,
    ) {
        match self
            .state
            .store
            .mark_email_failed(&email.id, claim_id, message, now, retry_at)
            .await
        {
            Ok(after) => {
                let result = match after {
                    AfterFailure::RetryAt(_) => "retry",
                    AfterFailure::Dead => "dead",
                    AfterFailure::NotOurs => "failed_after_lease",
                };
                self.state.metrics.email_sent(&email.kind, result);
                tracing::warn!(email_id = %email.id, kind = %email.kind, attempts = email.attempts,
                    result, reason = summary, "email not delivered");
            }
            Err(e) => {
                // The lease ends and the message is claimed again: at-least-once.
                tracing::warn!(email_id = %email.id, error = %e, "cannot record an email's delivery; it will be sent again");
            }
        }
    }

    async fn refresh_gauge(&self) {
        match self.state.store.count_outbox().await {
            Ok(counts) => self.state.metrics.outbox(counts.pending, counts.dead),
            Err(e) => tracing::warn!(error = %e, "cannot count the outbox"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_from_thirty_seconds_to_an_hour() {
        let waits: Vec<i64> = (1..=9).map(backoff_secs).collect();
        assert_eq!(waits, [30, 60, 120, 240, 480, 960, 1920, 3600, 3600]);
        assert_eq!(backoff_secs(i64::MAX), 3600);
        assert_eq!(backoff_secs(0), 30);
    }
}
