//! `App`: the bound listeners and background tasks of `auth-api serve`.
//!
//! Tests use the same [`App::build`] with port 0 and read the real ports back.

use std::{future::Future, net::SocketAddr};

use anyhow::Context as _;
use tokio::{net::TcpListener, sync::watch};

use crate::{
    clock::Clock,
    config::Config,
    grpc, routes,
    server::{serve, Limits},
    state::AppState,
};

/// How often expired sessions are purged.
const CLEANUP_INTERVAL_SECS: u64 = 3600;
/// Sessions are kept this long past their end, for investigation.
const EXPIRED_SESSION_RETENTION_SECS: i64 = 24 * 3600;
/// Sent email is listed (without its bodies) this long, for investigation.
const SENT_EMAIL_RETENTION_SECS: i64 = 7 * 24 * 3600;
/// Email given up is listed this long, for operators to notice and act.
const DEAD_EMAIL_RETENTION_SECS: i64 = 30 * 24 * 3600;

/// A built, bound, not yet running service.
#[derive(Debug)]
pub struct App {
    state: AppState,
    public: TcpListener,
    internal: Option<TcpListener>,
    grpc: Option<TcpListener>,
}

impl App {
    /// Connects, migrates, opens the key ring and binds both listeners.
    pub async fn build(config: Config) -> anyhow::Result<Self> {
        Self::build_with_clock(config, Clock::default()).await
    }

    /// [`App::build`] with a given clock (tests move it forward).
    pub async fn build_with_clock(config: Config, clock: Clock) -> anyhow::Result<Self> {
        let public = TcpListener::bind(config.listen)
            .await
            .with_context(|| format!("cannot listen on AUTH_LISTEN={}", config.listen))?;
        let internal = match &config.internal_token {
            Some(_) => Some(
                TcpListener::bind(config.internal_listen)
                    .await
                    .with_context(|| {
                        format!(
                            "cannot listen on AUTH_INTERNAL_LISTEN={}",
                            config.internal_listen
                        )
                    })?,
            ),
            None => None,
        };
        let grpc = match config.grpc_listen {
            Some(addr) => Some(
                TcpListener::bind(addr)
                    .await
                    .with_context(|| format!("cannot listen on AUTH_GRPC_LISTEN={addr}"))?,
            ),
            None => None,
        };
        let state = AppState::new(config, clock).await?;
        Ok(Self {
            state,
            public,
            internal,
            grpc,
        })
    }

    /// The public listener's address.
    pub fn public_addr(&self) -> anyhow::Result<SocketAddr> {
        Ok(self.public.local_addr()?)
    }

    /// The internal listener's address, when it runs.
    pub fn internal_addr(&self) -> anyhow::Result<Option<SocketAddr>> {
        self.internal
            .as_ref()
            .map(TcpListener::local_addr)
            .transpose()
            .map_err(Into::into)
    }

    /// The gRPC listener's address, when it runs.
    pub fn grpc_addr(&self) -> anyhow::Result<Option<SocketAddr>> {
        self.grpc
            .as_ref()
            .map(TcpListener::local_addr)
            .transpose()
            .map_err(Into::into)
    }

    /// The shared state (tests use it to reach the store and the clock).
    pub fn state(&self) -> &AppState {
        &self.state
    }

    /// Serves until `shutdown` resolves, then drains in-flight requests and closes the pool.
    /// Each listener has its own header-read timeout and connection cap ([`crate::server`]).
    pub async fn run_until_stopped(
        self,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> anyhow::Result<()> {
        let (stop_tx, stop_rx) = watch::channel(false);
        tokio::spawn(async move {
            shutdown.await;
            let _ = stop_tx.send(true);
        });
        let background = spawn_background_tasks(self.state.clone(), stop_rx.clone());
        let sender = match self.state.mailer.clone() {
            Some(mailer) => {
                tracing::info!("email outbox sender started");
                Some(crate::mail::Sender::spawn(
                    self.state.clone(),
                    mailer,
                    stop_rx.clone(),
                ))
            }
            None => {
                tracing::info!("email disabled: AUTH_SMTP_URL is not set (queued mail waits)");
                None
            }
        };
        tracing::info!(addr = %self.public.local_addr()?, "public API listening");
        let limits = Limits::of(&self.state.config);
        let public = serve(
            self.public,
            routes::router(self.state.clone()),
            limits,
            stop_rx.clone(),
        );
        let internal = async {
            match self.internal {
                Some(listener) => {
                    tracing::info!(addr = %listener.local_addr()?, "internal API listening");
                    serve(
                        listener,
                        routes::internal_router(self.state.clone()),
                        limits,
                        stop_rx.clone(),
                    )
                    .await
                }
                None => {
                    tracing::info!("internal API disabled: AUTH_INTERNAL_TOKEN is not set");
                    Ok(())
                }
            }
        };
        let grpc = async {
            match self.grpc {
                Some(listener) => {
                    tracing::info!(addr = %listener.local_addr()?, "gRPC API listening");
                    grpc::serve(listener, self.state.clone(), limits, stop_rx.clone()).await
                }
                None => {
                    tracing::info!("gRPC API disabled: AUTH_GRPC_LISTEN=off");
                    Ok(())
                }
            }
        };
        let result = tokio::try_join!(public, internal, grpc).map(drop);
        background.abort();
        // A message being sent now stays claimed and is sent again when its lease ends.
        if let Some(sender) = sender {
            sender.abort();
        }
        self.state.store.close().await;
        result
    }
}

/// Re-reads the key ring (rotating it first when the schedule says so) and purges expired
/// sessions, revocations and sign-in flows, and email sent or given up long ago.
fn spawn_background_tasks(
    state: AppState,
    mut stop: watch::Receiver<bool>,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let mut ring_tick = tokio::time::interval(state.config.key_refresh_interval);
        let mut cleanup_tick =
            tokio::time::interval(std::time::Duration::from_secs(CLEANUP_INTERVAL_SECS));
        loop {
            tokio::select! {
                _ = ring_tick.tick() => {
                    if let Some(period) = state.config.key_rotation_interval {
                        if let Err(e) = state.ring.rotate_if_due(state.clock.now(), period).await {
                            tracing::warn!(error = %e, "scheduled key rotation failed; retrying later");
                        }
                    }
                    if let Err(e) = state.ring.reload().await {
                        tracing::warn!(error = %e, "cannot reload the key ring; keeping the last one");
                    }
                }
                _ = cleanup_tick.tick() => {
                    let before = state.clock.now() - EXPIRED_SESSION_RETENTION_SECS;
                    match state.store.delete_sessions_expired_before(before).await {
                        Ok(0) => {}
                        Ok(n) => tracing::info!(sessions = n, "purged expired sessions"),
                        Err(e) => tracing::warn!(error = %e, "cannot purge expired sessions"),
                    }
                    // A session unused past the idle timeout can never refresh again; past the
                    // grace window too, or its predecessor token could still answer.
                    let lifetimes = &state.lifetimes;
                    let idle = lifetimes.session_idle_secs.max(lifetimes.refresh_reuse_grace_secs);
                    match state.store.prune_refresh_tokens(state.clock.now(), idle).await {
                        Ok(0) => {}
                        Ok(n) => tracing::info!(refresh_tokens = n, "pruned the refresh tokens of ended sessions"),
                        Err(e) => tracing::warn!(error = %e, "cannot prune refresh tokens"),
                    }
                    if let Err(e) = state.store.prune_revocations(state.clock.now()).await {
                        tracing::warn!(error = %e, "cannot prune the revocation feed");
                    }
                    // Social-login flows and one-time codes refuse themselves once expired; the
                    // rows of flows never finished (a user who closed the tab) are removed here.
                    match state.store.prune_sign_in(state.clock.now()).await {
                        Ok(0) => {}
                        Ok(n) => tracing::info!(sign_in_rows = n, "purged expired sign-in flows and codes"),
                        Err(e) => tracing::warn!(error = %e, "cannot purge expired sign-in flows and codes"),
                    }
                    // Second-factor challenges of logins never finished.
                    match state.store.prune_mfa_challenges(state.clock.now()).await {
                        Ok(0) => {}
                        Ok(n) => tracing::info!(mfa_challenges = n, "purged expired second-factor challenges"),
                        Err(e) => tracing::warn!(error = %e, "cannot purge expired second-factor challenges"),
                    }
                    // Links never followed.
                    match state.store.prune_email_tokens(state.clock.now()).await {
                        Ok(0) => {}
                        Ok(n) => tracing::info!(email_tokens = n, "purged expired email links"),
                        Err(e) => tracing::warn!(error = %e, "cannot purge expired email links"),
                    }
                    let now = state.clock.now();
                    match state.store.prune_outbox(now - SENT_EMAIL_RETENTION_SECS, now - DEAD_EMAIL_RETENTION_SECS).await {
                        Ok(0) => {}
                        Ok(n) => tracing::info!(emails = n, "purged old sent and dead email"),
                        Err(e) => tracing::warn!(error = %e, "cannot purge old email"),
                    }
                    let quiet_since = state.clock.now() - EXPIRED_SESSION_RETENTION_SECS;
                    if let Err(e) = state.store.prune_login_attempts(quiet_since, state.clock.now(), state.login_throttle.free_attempts).await {
                        tracing::warn!(error = %e, "cannot prune old login failures");
                    }
                    state.ip_limiter.prune();
                }
                changed = stop.changed() => {
                    if changed.is_err() || *stop.borrow() {
                        break;
                    }
                }
            }
        }
    })
}

/// Resolves on Ctrl-C or SIGTERM.
pub async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => {},
        () = terminate => {},
    }
    tracing::info!("shutting down");
}
