//! The email outbox and its sender against a real SMTP server (`SmtpSink`), on every store:
//! delivery as multipart text and HTML, retries with backoff while the relay is down, one
//! delivery per message with two replicas, at-least-once after a sender dies holding a claim,
//! messages given up shown to operators, a body under a key-encryption key this replica lacks
//! left for one that holds it, and relay answers logged by their codes only.

use std::{future::Future, process::Command, time::Duration};

use auth_api::{
    kek::KeyEncryptionKeys,
    mail::{Email, Sender},
    store::{AfterFailure, OutboxEntry},
    Config,
};
use tokio::sync::watch;

use crate::{
    helpers::{Backend, TestApp, TestDb},
    smtp_sink::{free_port, SmtpSink},
};

/// How long a test waits for the sender (it polls every 100 ms here).
const PATIENCE: Duration = Duration::from_secs(15);

/// Email on, sent to `port` on loopback, polled every 100 ms.
fn with_smtp(config: &mut Config, port: u16) {
    config.smtp_url = Some(format!("smtp://127.0.0.1:{port}").into());
    config.email_from = Some("Accounts <accounts@example.com>".parse().unwrap());
    config.smtp_timeout = Duration::from_secs(5);
    config.outbox_poll_interval = Duration::from_millis(100);
}

fn email(n: usize) -> Email {
    Email {
        kind: "test".to_owned(),
        recipient: format!("user{n}@example.org"),
        subject: format!("Message {n} — ünïcode"),
        text: format!("Hello {n},\nfollow https://example.com/t/{n}\n"),
        html: format!("<p>Hello {n}, <a href=\"https://example.com/t/{n}\">follow</a></p>"),
    }
}

/// Queues message `n` as of `now`, sealed as the app seals; its id.
async fn queue(app: &TestApp, n: usize, now: i64) -> String {
    let queued = email(n).seal(app.state.ring.keks()).unwrap();
    app.state.store.enqueue_email(&queued, now).await.unwrap();
    queued.id
}

/// Starts `app`'s sender, as `auth-api serve` does; it stops when the returned sender drops.
fn start_sender(app: &TestApp) -> watch::Sender<bool> {
    let (stop, stop_rx) = watch::channel(false);
    let mailer = app.state.mailer.clone().expect("email is configured");
    Sender::spawn(app.state.clone(), mailer, stop_rx);
    stop
}

async fn entry(app: &TestApp, id: &str) -> OutboxEntry {
    app.state
        .store
        .list_outbox(false, 0, 1000)
        .await
        .unwrap()
        .into_iter()
        .find(|e| e.id == id)
        .unwrap_or_else(|| panic!("no outbox row {id}"))
}

/// Waits until the app's metrics show `line` (the sender counts just after it records).
async fn counted(app: &TestApp, line: &str) {
    let deadline = tokio::time::Instant::now() + PATIENCE;
    while !app.state.metrics.render().contains(line) {
        assert!(
            tokio::time::Instant::now() < deadline,
            "no {line} in {}",
            app.state.metrics.render()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Waits until `check` of the row `id` holds.
async fn until<F, Fut>(app: &TestApp, id: &str, what: &str, check: F) -> OutboxEntry
where
    F: Fn(OutboxEntry) -> Fut,
    Fut: Future<Output = Option<OutboxEntry>>,
{
    let deadline = tokio::time::Instant::now() + PATIENCE;
    loop {
        if let Some(row) = check(entry(app, id).await).await {
            return row;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "{what}: {:?}",
            entry(app, id).await
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn a_queued_message_arrives_as_text_and_html_from_the_configured_sender(backend: Backend) {
    let sink = SmtpSink::start();
    let app = TestApp::spawn_with(backend, |c| with_smtp(c, sink.port)).await;
    let id = queue(&app, 1, app.clock.now()).await;
    // At rest the bodies (which will carry single-use links) are sealed.
    let raw = app.raw().await;
    for column in ["text_body", "html_body"] {
        let stored = raw.bytes("email_outbox", column).await;
        assert_eq!(stored.len(), 1);
        let link = b"example.com/t/1";
        assert!(
            !stored[0].windows(link.len()).any(|w| w == link),
            "{column} is stored in the clear"
        );
    }

    let _sender = start_sender(&app);
    app.state.outbox_wake.wake();

    let messages = sink.wait_for(1, PATIENCE).await;
    let message = &messages[0];
    assert_eq!(message["mail_from"], "accounts@example.com");
    assert_eq!(
        message["rcpt_tos"],
        serde_json::json!(["user1@example.org"])
    );
    let headers = &message["headers"];
    assert_eq!(headers["From"], "Accounts <accounts@example.com>");
    assert_eq!(headers["To"], "user1@example.org");
    assert_eq!(headers["Subject"], "Message 1 — ünïcode");
    assert_eq!(headers["Message-ID"], format!("<{id}@example.com>"));
    assert_eq!(message["content_type"], "multipart/alternative");
    let parts = message["parts"].as_array().unwrap();
    assert_eq!(parts.len(), 2, "{parts:?}");
    assert_eq!(parts[0]["content_type"], "text/plain");
    assert_eq!(
        parts[0]["body"].as_str().unwrap().replace("\r\n", "\n"),
        "Hello 1,\nfollow https://example.com/t/1\n"
    );
    assert_eq!(parts[1]["content_type"], "text/html");
    assert!(parts[1]["body"]
        .as_str()
        .unwrap()
        .contains("<a href=\"https://example.com/t/1\">follow</a>"));

    let row = until(&app, &id, "marked sent", |row| async move {
        (row.status == "sent").then_some(row)
    })
    .await;
    assert_eq!(row.attempts, 1);
    assert_eq!(row.sent_at, Some(app.clock.now()));
    assert!(row.last_error.is_none());
    // Nor are they kept once sent.
    let bodies_left: i64 = sqlx::query_scalar(
        "SELECT COUNT(*) FROM email_outbox WHERE text_body IS NOT NULL OR html_body IS NOT NULL",
    )
    .fetch_one(&raw.pool)
    .await
    .unwrap();
    assert_eq!(bodies_left, 0);
    counted(
        &app,
        "auth_email_sent_total{kind=\"test\",result=\"sent\"} 1",
    )
    .await;
    assert_eq!(sink.messages().len(), 1, "sent once");
}

async fn a_relay_that_is_down_gets_retries_with_backoff_and_delivery_when_it_is_back(
    backend: Backend,
) {
    let port = free_port();
    let app = TestApp::spawn_with(backend, |c| with_smtp(c, port)).await;
    let _sender = start_sender(&app);
    let queued_at = app.clock.now();
    let id = queue(&app, 1, queued_at).await;
    app.state.outbox_wake.wake();

    let row = until(&app, &id, "a failed first attempt", |row| async move {
        row.last_error.is_some().then_some(row)
    })
    .await;
    assert_eq!(row.status, "pending");
    assert_eq!(row.attempts, 1);
    assert_eq!(
        row.next_attempt_at,
        queued_at + 30,
        "30 s after the first failure"
    );
    assert!(row.claimed_until.is_none());
    // Not due: polls in the meantime leave it alone.
    tokio::time::sleep(Duration::from_millis(400)).await;
    assert_eq!(entry(&app, &id).await.attempts, 1);

    app.advance(Duration::from_secs(30));
    let row = until(&app, &id, "a failed second attempt", |row| async move {
        (row.attempts == 2 && row.claimed_until.is_none()).then_some(row)
    })
    .await;
    assert_eq!(row.next_attempt_at, queued_at + 30 + 60, "then 60 s");
    counted(
        &app,
        "auth_email_sent_total{kind=\"test\",result=\"retry\"} 2",
    )
    .await;

    let sink = SmtpSink::start_on(port);
    app.advance(Duration::from_secs(60));
    app.state.outbox_wake.wake();
    let messages = sink.wait_for(1, PATIENCE).await;
    assert_eq!(messages[0]["headers"]["To"], "user1@example.org");
    let row = until(&app, &id, "marked sent", |row| async move {
        (row.status == "sent").then_some(row)
    })
    .await;
    assert_eq!(row.attempts, 3);
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(sink.messages().len(), 1, "delivered once");
}

async fn two_replicas_on_one_database_deliver_each_message_once(backend: Backend) {
    let sink = SmtpSink::start();
    let (db, url) = TestDb::create(backend).await;
    let first = TestApp::on_database(db, url.clone(), |c| with_smtp(c, sink.port)).await;
    let (placeholder, _) = TestDb::create(Backend::Sqlite).await;
    let second = TestApp::on_database(placeholder, url, |c| with_smtp(c, sink.port)).await;
    let now = first.clock.now();
    const MESSAGES: usize = 40;
    for n in 0..MESSAGES {
        queue(&first, n, now).await;
    }

    let _one = start_sender(&first);
    let _two = start_sender(&second);
    first.state.outbox_wake.wake();
    second.state.outbox_wake.wake();

    let messages = sink.wait_for(MESSAGES, PATIENCE).await;
    // Both senders may still be finishing a batch: give a duplicate the time to show.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let messages = if sink.messages().len() > messages.len() {
        sink.messages()
    } else {
        messages
    };
    let mut recipients: Vec<String> = messages
        .iter()
        .map(|m| m["headers"]["To"].as_str().unwrap().to_owned())
        .collect();
    recipients.sort();
    let mut expected: Vec<String> = (0..MESSAGES)
        .map(|n| format!("user{n}@example.org"))
        .collect();
    expected.sort();
    assert_eq!(recipients, expected, "each message exactly once");
    let rows = first.state.store.list_outbox(false, 0, 1000).await.unwrap();
    assert!(
        rows.iter().all(|r| r.status == "sent" && r.attempts == 1),
        "{rows:?}"
    );
}

async fn a_message_claimed_by_a_sender_that_died_is_sent_when_the_lease_ends(backend: Backend) {
    let sink = SmtpSink::start();
    let app = TestApp::spawn_with(backend, |c| with_smtp(c, sink.port)).await;
    let now = app.clock.now();
    let id = queue(&app, 1, now).await;
    // A replica claims it and dies before sending or recording anything.
    let claimed = app
        .state
        .store
        .claim_emails("replica-that-died", now, now + 120, 10)
        .await
        .unwrap();
    assert_eq!(claimed.len(), 1);
    assert_eq!(claimed[0].id, id);

    let _sender = start_sender(&app);
    app.state.outbox_wake.wake();
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(sink.messages().is_empty(), "held by the lease");
    assert_eq!(entry(&app, &id).await.claimed_until, Some(now + 120));

    app.advance(Duration::from_secs(120));
    app.state.outbox_wake.wake();
    sink.wait_for(1, PATIENCE).await;
    let row = until(&app, &id, "marked sent", |row| async move {
        (row.status == "sent").then_some(row)
    })
    .await;
    assert_eq!(row.attempts, 2, "the lost attempt counts");
    // The dead replica's claim can no longer record anything.
    assert!(!app
        .state
        .store
        .mark_email_sent(&id, "replica-that-died", app.clock.now())
        .await
        .unwrap());
    assert_eq!(sink.messages().len(), 1);
}

async fn a_message_given_up_after_its_last_attempt_is_listed_as_stuck(backend: Backend) {
    let port = free_port();
    let app = TestApp::spawn_with(backend, |c| {
        with_smtp(c, port);
        c.outbox_max_attempts = 2;
    })
    .await;
    let sent_id = queue(&app, 1, app.clock.now()).await;
    let store = &app.state.store;
    let claim = store
        .claim_emails("c", app.clock.now(), app.clock.now() + 60, 10)
        .await
        .unwrap();
    assert_eq!(claim.len(), 1);
    assert!(store
        .mark_email_sent(&sent_id, "c", app.clock.now())
        .await
        .unwrap());
    let id = queue(&app, 2, app.clock.now()).await;
    let _sender = start_sender(&app);
    app.state.outbox_wake.wake();
    until(&app, &id, "a failed first attempt", |row| async move {
        row.last_error.is_some().then_some(row)
    })
    .await;
    app.advance(Duration::from_secs(30));
    let row = until(&app, &id, "dead", |row| async move {
        (row.status == "dead").then_some(row)
    })
    .await;
    assert_eq!(row.attempts, 2);
    let error = row.last_error.clone().unwrap();
    assert!(!error.is_empty());

    let output = Command::new(env!("CARGO_BIN_EXE_auth-api"))
        .args(["outbox", "list", "--stuck"])
        .env("AUTH_DATABASE_URL", &app.database_url)
        .env("AUTH_KEY_ENCRYPTION_KEYS", test_support::TEST_KEK)
        .env("RUST_LOG", "warn")
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let stdout = String::from_utf8_lossy(&output.stdout);
    let lines: Vec<&str> = stdout.lines().collect();
    assert_eq!(
        lines.len(),
        2,
        "a header and the dead message only: {stdout}"
    );
    assert!(
        lines[0].contains("ATTEMPTS") && lines[0].contains("LAST ERROR"),
        "{stdout}"
    );
    let line = lines[1];
    assert!(line.starts_with(&id), "{stdout}");
    for field in ["test", "user2@example.org", "dead", " 2 "] {
        assert!(line.contains(field), "{field:?} in {stdout}");
    }
    assert!(line.contains(&error[..error.len().min(20)]), "{stdout}");
    assert!(!stdout.contains("Hello"), "never a body: {stdout}");

    let output = Command::new(env!("CARGO_BIN_EXE_auth-api"))
        .args(["outbox", "list"])
        .env("AUTH_DATABASE_URL", &app.database_url)
        .env("AUTH_KEY_ENCRYPTION_KEYS", test_support::TEST_KEK)
        .env("RUST_LOG", "warn")
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        stdout.contains(&sent_id) && stdout.contains(&id),
        "{stdout}"
    );
}

/// How many outbox rows still hold both sealed bodies and their KEK's id.
async fn rows_with_bodies(app: &TestApp) -> i64 {
    sqlx::query_scalar(
        "SELECT COUNT(*) FROM email_outbox WHERE text_body IS NOT NULL \
         AND html_body IS NOT NULL AND body_kek IS NOT NULL",
    )
    .fetch_one(&app.raw().await.pool)
    .await
    .unwrap()
}

/// A body sealed under a key-encryption key this replica does not hold (a newer key not yet
/// rolled out to it, or one missing from its configuration) is not its to give up: the message
/// stays pending with its bodies, the attempt not counted, and a replica that holds the key
/// delivers it.
async fn a_message_under_a_kek_this_replica_lacks_is_left_for_one_that_holds_it(backend: Backend) {
    let sink = SmtpSink::start();
    let (db, url) = TestDb::create(backend).await;
    let lacking = TestApp::on_database(db, url.clone(), |c| with_smtp(c, sink.port)).await;
    let (other_kek, _) = KeyEncryptionKeys::generate("kek-other").unwrap();
    let queued = email(1).seal(&other_kek).unwrap();
    let queued_at = lacking.clock.now();
    lacking
        .state
        .store
        .enqueue_email(&queued, queued_at)
        .await
        .unwrap();
    let _lacking_sender = start_sender(&lacking);
    lacking.state.outbox_wake.wake();

    let row = until(&lacking, &queued.id, "put back", |row| async move {
        row.last_error.is_some().then_some(row)
    })
    .await;
    assert_eq!(row.status, "pending");
    assert_eq!(row.attempts, 0, "no attempt was made");
    assert_eq!(row.next_attempt_at, queued_at + 30);
    assert!(row.claimed_until.is_none());
    let error = row.last_error.unwrap();
    assert!(error.contains("\"kek-other\""), "{error}");
    assert!(error.contains("AUTH_KEY_ENCRYPTION_KEYS"), "{error}");
    assert_eq!(rows_with_bodies(&lacking).await, 1, "the bodies are kept");
    counted(
        &lacking,
        "auth_email_sent_total{kind=\"test\",result=\"deferred\"} 1",
    )
    .await;
    assert!(sink.messages().is_empty());

    // A replica that holds the key (beside the test's, which opens the rest of the database).
    let (placeholder, _) = TestDb::create(Backend::Sqlite).await;
    let holding = TestApp::on_database(placeholder, url, |c| {
        with_smtp(c, sink.port);
        let own: KeyEncryptionKeys = test_support::TEST_KEK.parse().unwrap();
        c.key_encryption_keys = Some(own.with_fallback(&other_kek));
    })
    .await;
    holding.advance(Duration::from_secs(30));
    let _holding_sender = start_sender(&holding);
    holding.state.outbox_wake.wake();
    let messages = sink.wait_for(1, PATIENCE).await;
    assert_eq!(messages[0]["headers"]["To"], "user1@example.org");
    let row = until(&holding, &queued.id, "marked sent", |row| async move {
        (row.status == "sent").then_some(row)
    })
    .await;
    assert_eq!(row.attempts, 1);
    assert_eq!(rows_with_bodies(&holding).await, 0);
}

/// A body that is there but does not authenticate (altered, or moved from another row) can
/// never be sent, by any replica: given up at once, and nothing reaches the relay.
async fn a_message_whose_body_does_not_authenticate_is_dead_at_once(backend: Backend) {
    let sink = SmtpSink::start();
    let app = TestApp::spawn_with(backend, |c| with_smtp(c, sink.port)).await;
    let mut queued = email(1).seal(app.state.ring.keks()).unwrap();
    // Another message's body: sealed under the same key, but bound to that message.
    queued.text_body = email(2).seal(app.state.ring.keks()).unwrap().text_body;
    app.state
        .store
        .enqueue_email(&queued, app.clock.now())
        .await
        .unwrap();
    let _sender = start_sender(&app);
    app.state.outbox_wake.wake();

    let row = until(&app, &queued.id, "dead", |row| async move {
        (row.status == "dead").then_some(row)
    })
    .await;
    assert_eq!(row.attempts, 1);
    let error = row.last_error.unwrap();
    assert!(error.contains("does not open"), "{error}");
    assert!(sink.messages().is_empty());
}

/// A message whose claims never recorded an outcome (senders that died, or a store that
/// refused the record) shows among the stuck ones, and once past the maximum of attempts is
/// given up without being sent again, rather than claimed forever.
async fn a_message_whose_attempts_were_never_recorded_is_given_up_past_the_maximum(
    backend: Backend,
) {
    let sink = SmtpSink::start();
    let app = TestApp::spawn_with(backend, |c| {
        with_smtp(c, sink.port);
        c.outbox_max_attempts = 2;
    })
    .await;
    let store = &app.state.store;
    let now = app.clock.now();
    let id = queue(&app, 1, now).await;
    for (claim, at) in [("died-1", now), ("died-2", now + 60)] {
        assert_eq!(
            store
                .claim_emails(claim, at, at + 60, 10)
                .await
                .unwrap()
                .len(),
            1
        );
    }
    // No error, and due again only when the second lease ends: stuck all the same.
    let stuck = store.list_outbox(true, now + 60, 100).await.unwrap();
    assert_eq!(stuck.len(), 1, "{stuck:?}");
    assert_eq!((stuck[0].id.as_str(), stuck[0].attempts), (id.as_str(), 2));
    assert!(stuck[0].last_error.is_none());

    app.advance(Duration::from_secs(120));
    let _sender = start_sender(&app);
    app.state.outbox_wake.wake();
    let row = until(&app, &id, "dead", |row| async move {
        (row.status == "dead").then_some(row)
    })
    .await;
    assert_eq!(row.attempts, 3);
    assert_eq!(
        row.last_error.as_deref(),
        Some("gave up after 2 attempts whose outcome was never recorded")
    );
    counted(
        &app,
        "auth_email_sent_total{kind=\"test\",result=\"dead\"} 1",
    )
    .await;
    assert!(sink.messages().is_empty(), "not sent a third time");
    assert_eq!(rows_with_bodies(&app).await, 0);
}

/// A relay's answer may hold anything: PostgreSQL refuses a NUL in text, which would make every
/// record of the failure fail (and the message be claimed again and again). Stored without
/// control characters, on every store.
async fn a_failure_is_recorded_without_control_characters(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let store = &app.state.store;
    let now = app.clock.now();
    let id = queue(&app, 1, now).await;
    store.claim_emails("c", now, now + 60, 10).await.unwrap();
    let after = store
        .mark_email_failed(
            &id,
            "c",
            "550 5.1.1\0 no\r\nsuch\u{7} user",
            now,
            Some(now + 30),
        )
        .await
        .unwrap();
    assert_eq!(after, AfterFailure::RetryAt(now + 30));
    assert_eq!(
        entry(&app, &id).await.last_error.as_deref(),
        Some("550 5.1.1 no  such user")
    );
}

/// A relay on loopback that refuses every recipient with `reply`; its port.
async fn refusing_relay(reply: &'static str) -> u16 {
    use tokio::io::{AsyncBufReadExt as _, AsyncWriteExt as _, BufReader};

    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            tokio::spawn(async move {
                let (read, mut write) = stream.into_split();
                let mut lines = BufReader::new(read).lines();
                write.write_all(b"220 relay.test ESMTP\r\n").await?;
                while let Some(line) = lines.next_line().await? {
                    let verb = line.get(..4).unwrap_or_default().to_ascii_uppercase();
                    let answer = match verb.as_str() {
                        "RCPT" => reply,
                        "QUIT" => "221 bye\r\n",
                        _ => "250 relay.test\r\n",
                    };
                    write.write_all(answer.as_bytes()).await?;
                    if verb == "QUIT" {
                        break;
                    }
                }
                std::io::Result::Ok(())
            });
        }
    });
    port
}

/// The relay's answer can quote the recipient, or a line of the message with a single-use
/// link: the log shows only its SMTP code and enhanced status, while the row keeps the text for
/// operators (without its control characters: PostgreSQL would refuse the NUL).
async fn a_refusal_is_logged_by_its_codes_and_kept_in_full_for_operators(backend: Backend) {
    let (logs, _guard) = crate::audit::json_logs();
    let port = refusing_relay(
        "550 5.1.1 <user1@example.org>: no such user\0, see https://example.com/t/1\r\n",
    )
    .await;
    let app = TestApp::spawn_with(backend, |c| with_smtp(c, port)).await;
    let id = queue(&app, 1, app.clock.now()).await;
    let _sender = start_sender(&app);
    app.state.outbox_wake.wake();

    let row = until(&app, &id, "a refused attempt", |row| async move {
        row.last_error.is_some().then_some(row)
    })
    .await;
    assert_eq!(row.status, "pending");
    let error = row.last_error.unwrap();
    assert!(
        error.contains("<user1@example.org>: no such user, see https://example.com/t/1"),
        "{error}"
    );
    counted(
        &app,
        "auth_email_sent_total{kind=\"test\",result=\"retry\"} 1",
    )
    .await;
    let text = logs.text();
    let event = text
        .lines()
        .map(|line| serde_json::from_str::<serde_json::Value>(line).unwrap())
        .find(|event| event["message"] == "email not delivered")
        .unwrap_or_else(|| panic!("no warning:\n{text}"));
    assert_eq!(event["reason"], "550 5.1.1", "{event}");
    assert_eq!(event["email_id"], id.as_str());
    for secret in ["user1@example.org", "example.com/t/1", "no such user"] {
        assert!(!text.contains(secret), "the logs show {secret:?}:\n{text}");
    }
}

mod refusal {
    #[tokio::test]
    async fn sqlite() {
        super::a_refusal_is_logged_by_its_codes_and_kept_in_full_for_operators(
            crate::helpers::Backend::Sqlite,
        )
        .await;
    }

    #[tokio::test]
    async fn postgres() {
        super::a_refusal_is_logged_by_its_codes_and_kept_in_full_for_operators(
            crate::helpers::Backend::Postgres,
        )
        .await;
    }

    #[tokio::test]
    async fn mysql() {
        super::a_refusal_is_logged_by_its_codes_and_kept_in_full_for_operators(
            crate::helpers::Backend::Mysql,
        )
        .await;
    }
}

/// What per-recipient limits will count: messages of a kind queued for an address since a time,
/// sent or not.
async fn mail_queued_for_a_recipient_is_counted_by_kind_and_time(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let now = app.clock.now();
    let store = &app.state.store;
    queue(&app, 1, now - 7200).await;
    let sent = queue(&app, 1, now - 60).await;
    store.claim_emails("c", now, now + 60, 10).await.unwrap();
    assert!(store.mark_email_sent(&sent, "c", now).await.unwrap());
    queue(&app, 1, now).await;
    queue(&app, 2, now).await;
    let mut other_kind = email(1);
    other_kind.kind = "other".to_owned();
    store
        .enqueue_email(&other_kind.seal(app.state.ring.keks()).unwrap(), now)
        .await
        .unwrap();

    let count = |recipient: &'static str, kind: &'static str, since: i64| async move {
        store
            .emails_queued_since(recipient, kind, since)
            .await
            .unwrap()
    };
    assert_eq!(count("user1@example.org", "test", now - 3600).await, 2);
    assert_eq!(count("user1@example.org", "test", now - 7200).await, 3);
    assert_eq!(count("user1@example.org", "other", now - 3600).await, 1);
    assert_eq!(
        count("USER1@example.org", "test", now - 3600).await,
        0,
        "exact"
    );
    assert_eq!(count("user2@example.org", "test", now).await, 1);
}

/// Of many claims at once on one database, each message goes to exactly one: the atomic claim
/// (one `UPDATE … RETURNING`, `FOR UPDATE SKIP LOCKED` on PostgreSQL and MySQL) that keeps two
/// replicas from sending the same message.
async fn concurrent_claims_never_share_a_message(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let now = app.clock.now();
    const MESSAGES: usize = 60;
    let mut queued = Vec::new();
    for n in 0..MESSAGES {
        queued.push(queue(&app, n, now).await);
    }
    let claimers: Vec<_> = (0..8)
        .map(|i| {
            let store = app.state.store.clone();
            tokio::spawn(async move {
                let mut mine = Vec::new();
                loop {
                    let batch = store
                        .claim_emails(&format!("claimer-{i}"), now, now + 600, 3)
                        .await
                        .unwrap();
                    if batch.is_empty() {
                        return mine;
                    }
                    mine.extend(batch.into_iter().map(|e| e.id));
                }
            })
        })
        .collect();
    let mut claimed = Vec::new();
    for claimer in claimers {
        claimed.extend(claimer.await.unwrap());
    }
    claimed.sort();
    queued.sort();
    assert_eq!(claimed, queued, "every message claimed once");
    // Leased: not due again before the lease ends, due when it has.
    let store = &app.state.store;
    assert!(store
        .claim_emails("late", now + 599, now + 700, 100)
        .await
        .unwrap()
        .is_empty());
    assert_eq!(
        store
            .claim_emails("late", now + 600, now + 700, 100)
            .await
            .unwrap()
            .len(),
        MESSAGES
    );
}

/// `App::run_until_stopped` (what `auth-api serve` runs) starts the sender when SMTP is set,
/// and its hourly cleanup removes mail sent more than 7 days ago.
async fn the_running_service_sends_queued_mail_and_purges_old_sent_mail(backend: Backend) {
    let sink = SmtpSink::start();
    let (db, url) = TestDb::create(backend).await;
    let app = TestApp::on_database(db, url.clone(), |_| {}).await;
    let store = &app.state.store;
    let long_ago = app.clock.now() - 8 * 24 * 3600;
    let old = queue(&app, 0, long_ago).await;
    store
        .claim_emails("c", long_ago, long_ago + 60, 10)
        .await
        .unwrap();
    assert!(store.mark_email_sent(&old, "c", long_ago).await.unwrap());
    let id = queue(&app, 1, app.clock.now()).await;

    let mut config = crate::helpers::test_config(url);
    with_smtp(&mut config, sink.port);
    let service = auth_api::App::build(config).await.unwrap();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(service.run_until_stopped(async {
        let _ = stopped.await;
    }));
    let messages = sink.wait_for(1, PATIENCE).await;
    until(&app, &id, "marked sent", |row| async move {
        (row.status == "sent").then_some(row)
    })
    .await;
    let _ = stop.send(());
    tokio::time::timeout(Duration::from_secs(10), server)
        .await
        .unwrap()
        .unwrap()
        .unwrap();

    assert_eq!(messages.len(), 1);
    assert_eq!(messages[0]["headers"]["To"], "user1@example.org");
    let left: Vec<String> = store
        .list_outbox(false, 0, 100)
        .await
        .unwrap()
        .into_iter()
        .map(|e| e.id)
        .collect();
    assert_eq!(left, [id], "the old sent message was purged");
}

crate::on_every_backend!(
    mail_queued_for_a_recipient_is_counted_by_kind_and_time,
    a_message_under_a_kek_this_replica_lacks_is_left_for_one_that_holds_it,
    a_message_whose_body_does_not_authenticate_is_dead_at_once,
    a_message_whose_attempts_were_never_recorded_is_given_up_past_the_maximum,
    a_failure_is_recorded_without_control_characters,
    concurrent_claims_never_share_a_message,
    the_running_service_sends_queued_mail_and_purges_old_sent_mail,
    a_queued_message_arrives_as_text_and_html_from_the_configured_sender,
    a_relay_that_is_down_gets_retries_with_backoff_and_delivery_when_it_is_back,
    two_replicas_on_one_database_deliver_each_message_once,
    a_message_claimed_by_a_sender_that_died_is_sent_when_the_lease_ends,
    a_message_given_up_after_its_last_attempt_is_listed_as_stuck,
);
