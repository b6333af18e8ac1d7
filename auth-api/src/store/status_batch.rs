//! [`StatusBatch`]: `/validate`'s per-request store read ([`Store::token_status`]) for every
//! request waiting at one moment, in one statement ([`Store::token_statuses`]).
//!
//! One round trip to the database per request is what caps `/validate` (README, "Where
//! `/validate`'s time goes"). Requests are queued on a channel; one consumer task takes the
//! first, with whatever else is queued by then (up to [`MAX_BATCH`]), and hands them to one
//! query, with up to a few such queries at once so that one slow query does not hold up the
//! rest. Nothing waits for a batch to fill: a request alone is read at once, for the single
//! query's cost plus two task wake-ups; batches form only while every query slot is busy.
//!
//! Each request is answered only by a query that started after it was queued: it was taken off
//! the queue before that query began. So a revocation committed before the request arrived
//! counts, as with one query per request (SECURITY.md B). This module owns the queueing, not
//! the SQL, nor what a status means (`service::access::check_session`).

use std::{fmt, future::Future, sync::Arc, time::Duration};

use tokio::sync::{
    mpsc::{self, error::TrySendError},
    oneshot, Semaphore,
};

use super::{Backend, Store, TokenStatus};

/// The most requests one query answers: 256 ids and a few kids stay far below every engine's
/// limit on placeholders, and the padded lists give at most 9 distinct texts per kid count.
pub(crate) const MAX_BATCH: usize = 256;

/// Requests that may wait for a query slot before new ones get 503: 64 full batches, a few
/// hundred milliseconds of the store's work. See [`BatchError::QueueFull`].
const QUEUE_CAPACITY: usize = 16 * 1024;

/// How long a request waits for its answer before it is 503: the pool's own wait for a
/// connection (`Store::connect`), which a query per request used to hit first. Without it, a
/// query held by a lock (a migration's DDL, a network black hole) would hold every queued
/// request until the 30 s request timeout.
const ANSWER_DEADLINE: Duration = Duration::from_secs(5);

/// A session id and the kid of the token presenting it.
type Key = (String, String);

/// What a request is answered.
type Answer = Result<Option<TokenStatus>, BatchError>;

/// Why a batched read has no answer. Every variant means the store could not be read now:
/// `service::access` maps [`BatchError::Store`] as it maps the query's own error (503 when
/// [`crate::service::is_unavailable`], else 500) and the others to 503.
#[derive(Debug, Clone)]
pub(crate) enum BatchError {
    /// The batch's query failed; every request of the batch gets this same error, whose source
    /// is the query's `sqlx::Error`.
    Store(Arc<sqlx::Error>),
    /// [`QUEUE_CAPACITY`] requests are already waiting. Answered at once (503) rather than by a
    /// query of its own: the queue fills only when the store answers far slower than requests
    /// come, and single queries would then hand the overload back to the pool, whose other
    /// connections logins and refreshes need (the batches use at most a few).
    QueueFull,
    /// The request was dropped unanswered: the task running its query panicked, or the
    /// consumer is gone (the runtime is shutting down).
    Lost,
    /// No answer within [`ANSWER_DEADLINE`]: the store is stalled.
    TimedOut,
}

impl fmt::Display for BatchError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Store(_) => "the batched token-status query failed",
            Self::QueueFull => "too many token-status reads are waiting",
            Self::Lost => "the token-status read ended without an answer",
            Self::TimedOut => "the token-status read got no answer in time",
        })
    }
}

impl std::error::Error for BatchError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            // The `sqlx::Error` itself, not its `Arc`: so that `anyhow`'s chain finds it.
            Self::Store(err) => Some(&**err),
            Self::QueueFull | Self::Lost | Self::TimedOut => None,
        }
    }
}

/// A queued request.
#[derive(Debug)]
struct Pending {
    key: Key,
    reply: oneshot::Sender<Answer>,
}

/// The queue of token-status reads (see the module docs); cheap to clone. Its consumer task
/// ends when the last clone is dropped.
#[derive(Debug, Clone)]
pub(crate) struct StatusBatch {
    queue: mpsc::Sender<Pending>,
    deadline: Duration,
}

impl StatusBatch {
    /// Starts the consumer task on the current runtime, reading `store`: up to 4 queries at
    /// once on a server, 2 on SQLite (half its pool of 4, leaving the rest to writers).
    pub(crate) fn start(store: Store) -> Self {
        let in_flight = match store.backend() {
            Backend::Postgres | Backend::Mysql => 4,
            Backend::Sqlite => 2,
        };
        Self::with_lookup(in_flight, QUEUE_CAPACITY, move |keys| {
            let store = store.clone();
            async move { store.token_statuses(&keys).await }
        })
    }

    /// Starts a consumer that answers each batch with `lookup` (one answer per key, in order),
    /// `in_flight` lookups at most at once, `capacity` requests at most waiting.
    fn with_lookup<F, Fut>(in_flight: usize, capacity: usize, lookup: F) -> Self
    where
        F: Fn(Vec<Key>) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<Vec<Option<TokenStatus>>, sqlx::Error>> + Send + 'static,
    {
        let (queue, requests) = mpsc::channel(capacity);
        tokio::spawn(consume(
            requests,
            Arc::new(Semaphore::new(in_flight.max(1))),
            Arc::new(lookup),
        ));
        Self {
            queue,
            deadline: ANSWER_DEADLINE,
        }
    }

    /// The status of the session `session_id` and the key `kid`, as [`Store::token_status`]
    /// reads it, by a query that starts after this call.
    pub(crate) async fn token_status(&self, session_id: &str, kid: &str) -> Answer {
        let (reply, answer) = oneshot::channel();
        let pending = Pending {
            key: (session_id.to_owned(), kid.to_owned()),
            reply,
        };
        self.queue.try_send(pending).map_err(|err| match err {
            TrySendError::Full(_) => BatchError::QueueFull,
            TrySendError::Closed(_) => BatchError::Lost,
        })?;
        match tokio::time::timeout(self.deadline, answer).await {
            Ok(answer) => answer.unwrap_or(Err(BatchError::Lost)),
            Err(_) => Err(BatchError::TimedOut),
        }
    }
}

/// The consumer: a free query slot, then every request queued by then (waiting for the first),
/// then a task that runs their query and answers them.
async fn consume<F, Fut>(
    mut requests: mpsc::Receiver<Pending>,
    slots: Arc<Semaphore>,
    lookup: Arc<F>,
) where
    F: Fn(Vec<Key>) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Result<Vec<Option<TokenStatus>>, sqlx::Error>> + Send + 'static,
{
    let mut batch = Vec::with_capacity(MAX_BATCH);
    loop {
        // The slot before the requests: while every slot is busy, requests gather in the queue
        // and the next query takes them all.
        let Ok(slot) = Arc::clone(&slots).acquire_owned().await else {
            return;
        };
        if requests.recv_many(&mut batch, MAX_BATCH).await == 0 {
            return;
        }
        // A client that went away needs no answer.
        batch.retain(|pending: &Pending| !pending.reply.is_closed());
        if batch.is_empty() {
            continue;
        }
        let (keys, replies): (Vec<Key>, Vec<_>) = batch
            .drain(..)
            .map(|pending| (pending.key, pending.reply))
            .unzip();
        let lookup = Arc::clone(&lookup);
        // A task of its own: a panic there drops the replies (each waiter gets `Lost`) and the
        // slot, and the consumer carries on.
        tokio::spawn(async move {
            let _slot = slot;
            match lookup(keys).await {
                // A lookup that answered fewer keys leaves the rest `Lost`, never another's.
                Ok(statuses) => {
                    for (reply, status) in replies.into_iter().zip(statuses) {
                        let _gone = reply.send(Ok(status));
                    }
                }
                Err(err) => {
                    let err = Arc::new(err);
                    for reply in replies {
                        let _gone = reply.send(Err(BatchError::Store(Arc::clone(&err))));
                    }
                }
            }
        });
    }
}

#[cfg(test)]
mod tests {
    use std::{
        sync::{
            atomic::{AtomicI64, Ordering},
            Mutex,
        },
        time::Duration,
    };

    use tokio::task::JoinSet;

    use super::*;

    /// A status whose `expires_at` carries `tag`, for telling answers apart.
    fn status(user_id: &str, tag: i64) -> TokenStatus {
        TokenStatus {
            user_id: user_id.to_owned(),
            revoked_at: None,
            expires_at: tag,
            disabled_at: None,
            tokens_valid_after: 0,
            key_revoked_at: None,
        }
    }

    /// Echoes each key's session id as its user, and records the size of every batch.
    fn echo(sizes: Arc<Mutex<Vec<usize>>>) -> StatusBatch {
        StatusBatch::with_lookup(4, 1024, move |keys: Vec<Key>| {
            sizes.lock().unwrap().push(keys.len());
            async move {
                Ok(keys
                    .iter()
                    .map(|(sid, kid)| {
                        (sid != "unknown").then(|| status(&format!("{sid}/{kid}"), 0))
                    })
                    .collect())
            }
        })
    }

    async fn within_5s<T>(what: &str, future: impl Future<Output = T>) -> T {
        tokio::time::timeout(Duration::from_secs(5), future)
            .await
            .unwrap_or_else(|_| panic!("{what} hangs"))
    }

    #[tokio::test]
    async fn a_lone_request_is_read_at_once_by_a_query_of_its_own() {
        let sizes = Arc::new(Mutex::new(Vec::new()));
        let batch = echo(Arc::clone(&sizes));
        let answer = within_5s("the read", batch.token_status("s1", "k1")).await;
        assert_eq!(answer.unwrap().unwrap().user_id, "s1/k1");
        let answer = within_5s("the read", batch.token_status("unknown", "k1")).await;
        assert!(answer.unwrap().is_none());
        assert_eq!(*sizes.lock().unwrap(), [1, 1]);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn requests_waiting_while_every_slot_is_busy_share_one_query() {
        // Arrange: the first two queries block until released, holding both slots.
        let sizes = Arc::new(Mutex::new(Vec::new()));
        let release = Arc::new(Semaphore::new(0));
        let batch = {
            let (sizes, release) = (Arc::clone(&sizes), Arc::clone(&release));
            StatusBatch::with_lookup(2, 1024, move |keys: Vec<Key>| {
                let first_two = {
                    let mut sizes = sizes.lock().unwrap();
                    sizes.push(keys.len());
                    sizes.len() <= 2
                };
                let release = Arc::clone(&release);
                async move {
                    if first_two {
                        let _released = release.acquire().await;
                    }
                    Ok(keys.iter().map(|(sid, _)| Some(status(sid, 0))).collect())
                }
            })
        };
        let mut reads = JoinSet::new();
        for i in 0..2 {
            let batch = batch.clone();
            reads.spawn(async move { batch.token_status(&format!("busy{i}"), "k").await });
            while sizes.lock().unwrap().len() <= i {
                tokio::time::sleep(Duration::from_millis(1)).await;
            }
        }
        // Act: 100 requests queue behind the two, then the two are released.
        for i in 0..100 {
            let batch = batch.clone();
            reads.spawn(async move { batch.token_status(&format!("s{i}"), "k").await });
        }
        while batch.queue.capacity() > 1024 - 100 {
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        release.add_permits(2);
        // Assert
        let mut users = Vec::new();
        while let Some(read) = within_5s("a read", reads.join_next()).await {
            users.push(read.unwrap().unwrap().unwrap().user_id);
        }
        users.sort();
        assert_eq!(users.len(), 102);
        assert_eq!(*sizes.lock().unwrap(), [1, 1, 100]);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn every_request_is_answered_by_a_query_that_started_after_it_was_queued() {
        // Each query's answers carry its start number; a request notes the number of queries
        // started before it queued, so its answer's number must be higher.
        let started = Arc::new(AtomicI64::new(0));
        let batch = {
            let started = Arc::clone(&started);
            StatusBatch::with_lookup(4, 1024, move |keys: Vec<Key>| {
                let number = started.fetch_add(1, Ordering::SeqCst) + 1;
                async move {
                    tokio::time::sleep(Duration::from_micros(200)).await;
                    Ok(keys
                        .iter()
                        .map(|(sid, _)| Some(status(sid, number)))
                        .collect())
                }
            })
        };
        let mut reads = JoinSet::new();
        for task in 0..16 {
            let (batch, started) = (batch.clone(), Arc::clone(&started));
            reads.spawn(async move {
                for i in 0..100 {
                    let before = started.load(Ordering::SeqCst);
                    let answer = batch.token_status(&format!("t{task}-{i}"), "k").await;
                    let answer = answer.unwrap().unwrap();
                    assert_eq!(answer.user_id, format!("t{task}-{i}"));
                    assert!(
                        answer.expires_at > before,
                        "read by query {} of {before} started before it",
                        answer.expires_at
                    );
                }
            });
        }
        while let Some(read) = within_5s("the reads", reads.join_next()).await {
            read.unwrap();
        }
        // Batches did form (1,600 reads, fewer queries).
        assert!(started.load(Ordering::SeqCst) < 1600);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_failed_query_answers_its_error_to_every_request_of_its_batch() {
        let batch = StatusBatch::with_lookup(4, 1024, |_keys: Vec<Key>| async {
            Err::<Vec<Option<TokenStatus>>, _>(sqlx::Error::PoolClosed)
        });
        let mut reads = JoinSet::new();
        for i in 0..50 {
            let batch = batch.clone();
            reads.spawn(async move { batch.token_status(&format!("s{i}"), "k").await });
        }
        while let Some(read) = within_5s("a read", reads.join_next()).await {
            let err = read.unwrap().unwrap_err();
            let BatchError::Store(source) = &err else {
                panic!("{err:?}")
            };
            assert!(matches!(**source, sqlx::Error::PoolClosed));
            // What `service::access` relies on to answer 503.
            let chained = anyhow::Error::new(err);
            assert!(chained
                .chain()
                .any(|cause| cause.downcast_ref::<sqlx::Error>().is_some()));
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_panicking_query_answers_lost_and_later_requests_are_still_read() {
        let calls = Arc::new(AtomicI64::new(0));
        let batch = {
            let calls = Arc::clone(&calls);
            StatusBatch::with_lookup(1, 1024, move |keys: Vec<Key>| {
                let first = calls.fetch_add(1, Ordering::SeqCst) == 0;
                async move {
                    assert!(!first, "the first query panics");
                    Ok(keys.iter().map(|(sid, _)| Some(status(sid, 0))).collect())
                }
            })
        };
        let lost = within_5s("the read", batch.token_status("s1", "k")).await;
        assert!(matches!(lost, Err(BatchError::Lost)), "{lost:?}");
        let read = within_5s("the next read", batch.token_status("s2", "k")).await;
        assert_eq!(read.unwrap().unwrap().user_id, "s2");
    }

    #[test]
    fn a_request_after_the_consumer_is_gone_answers_lost() {
        let runtime = || {
            tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap()
        };
        let first = runtime();
        let batch = first.block_on(async { echo(Arc::default()) });
        drop(first);
        let answer = runtime().block_on(batch.token_status("s1", "k"));
        assert!(matches!(answer, Err(BatchError::Lost)), "{answer:?}");
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_stalled_query_answers_in_time_and_the_next_slot_serves_on() {
        // Arrange: two slots; the first query never ends, the second answers.
        let calls = Arc::new(AtomicI64::new(0));
        let mut batch = {
            let calls = Arc::clone(&calls);
            StatusBatch::with_lookup(2, 1024, move |keys: Vec<Key>| {
                let first = calls.fetch_add(1, Ordering::SeqCst) == 0;
                async move {
                    if first {
                        std::future::pending::<()>().await;
                    }
                    Ok(keys.iter().map(|(sid, _)| Some(status(sid, 1))).collect())
                }
            })
        };
        batch.deadline = Duration::from_millis(100);
        // Act
        let stalled = within_5s("the stalled read", batch.token_status("stalled", "k")).await;
        let next = within_5s("the next read", batch.token_status("next", "k")).await;
        // Assert
        assert!(matches!(stalled, Err(BatchError::TimedOut)), "{stalled:?}");
        assert_eq!(
            next.ok().flatten().map(|s| s.user_id),
            Some("next".to_owned())
        );
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_full_queue_answers_at_once() {
        // Arrange: one slot, held by a query that never ends; a queue of one, filled.
        let calls = Arc::new(AtomicI64::new(0));
        let batch = {
            let calls = Arc::clone(&calls);
            StatusBatch::with_lookup(1, 1, move |_keys: Vec<Key>| {
                calls.fetch_add(1, Ordering::SeqCst);
                std::future::pending::<Result<Vec<Option<TokenStatus>>, sqlx::Error>>()
            })
        };
        let held = tokio::spawn({
            let batch = batch.clone();
            async move { batch.token_status("held", "k").await }
        });
        while calls.load(Ordering::SeqCst) == 0 {
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        let queued = tokio::spawn({
            let batch = batch.clone();
            async move { batch.token_status("queued", "k").await }
        });
        while batch.queue.capacity() > 0 {
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        // Act
        let answer = within_5s("the read", batch.token_status("one too many", "k")).await;
        // Assert
        assert!(matches!(answer, Err(BatchError::QueueFull)), "{answer:?}");
        held.abort();
        queued.abort();
    }

    #[test]
    fn the_batch_statement_takes_its_binds_in_order_on_every_engine() {
        for (kids, sids) in [(1, 1), (1, 256), (2, 64), (4, 8)] {
            let dollar = super::super::sessions::token_statuses_sql(Backend::Postgres, kids, sids);
            let mysql = super::super::sessions::token_statuses_sql(Backend::Mysql, kids, sids);
            assert_eq!(super::super::checked_binds(&dollar, &mysql), kids + sids);
        }
    }
}
