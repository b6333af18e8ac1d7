//! The revocation feed on the internal listener (`GET /internal/revocations`, feed v2 of
//! issue 10): a cursor (`after`, `epoch`, `tag`) into entries numbered in commit order, in
//! pages of `REVOCATION_FEED_PAGE`, each entry kept `MAX_CLOCK_SKEW_SECS` past its `until`
//! (SECURITY.md 74, I 102); a cursor from another history of the database (a restored backup)
//! gets a full sync.

use std::{borrow::Cow, collections::HashSet, time::Duration};

use auth_api::{
    routes::REVOCATION_FEED_PAGE as PAGE,
    store::{FeedCursor, RevokeAt, Store},
};
use axum::http::StatusCode;
use sqlx::{migrate::Migrator, Executor};

use crate::helpers::{
    claims_of, sids, Backend, RawDb, TestApp, TestDb, TestResponse, Tokens, INTERNAL_TOKEN,
};

async fn feed(app: &TestApp) -> TestResponse {
    app.revocation_feed().await
}

async fn feed_needs_the_internal_token(app: TestApp) {
    assert_eq!(
        app.get_internal("/internal/revocations", None).await.status,
        StatusCode::UNAUTHORIZED
    );
    let wrong = app
        .get_internal(
            "/internal/revocations",
            Some("Bearer not-the-internal-token-at-all"),
        )
        .await;
    assert_eq!(wrong.status, StatusCode::UNAUTHORIZED);
}

async fn logout_publishes_the_session_until_its_tokens_expire_plus_the_largest_skew(app: TestApp) {
    let (_, tokens) = app.logged_in_user().await;
    let sid = claims_of(&tokens.access)["sid"]
        .as_str()
        .unwrap()
        .to_owned();
    assert!(sids(&feed(&app).await).is_empty(), "nothing revoked yet");
    assert_eq!(
        app.logout_bearer(&tokens.access, false).await.status,
        StatusCode::NO_CONTENT
    );
    let published = feed(&app).await;
    assert_eq!(sids(&published), std::slice::from_ref(&sid));
    let until = published.body["sessions"][0]["until"].as_i64().unwrap();
    assert_eq!(until, app.clock.now() + 900 + 60, "access TTL + clock skew");
    app.advance(Duration::from_secs(900 + 60 + 599));
    assert_eq!(
        sids(&feed(&app).await),
        std::slice::from_ref(&sid),
        "kept for MAX_CLOCK_SKEW_SECS past until"
    );
    app.advance(Duration::from_secs(1));
    assert!(
        sids(&feed(&app).await).is_empty(),
        "expired entries leave the feed"
    );
}

async fn logout_everywhere_publishes_one_user_entry(app: TestApp) {
    let (user, first) = app.logged_in_user().await;
    user.login(&app).await;
    assert_eq!(
        app.logout_bearer(&first.access, true).await.status,
        StatusCode::NO_CONTENT
    );
    let published = feed(&app).await;
    assert!(
        sids(&published).is_empty(),
        "one entry for the user, not one per session"
    );
    let users = published.body["users"].as_array().unwrap();
    assert_eq!(users.len(), 1);
    assert_eq!(users[0]["sub"], claims_of(&first.access)["sub"]);
    let not_before = users[0]["not_before"].as_i64().unwrap();
    assert!(
        claims_of(&first.access)["iat"].as_i64().unwrap() < not_before,
        "the old token is covered"
    );

    // A login in the same second gets a token the entry does not cover.
    let fresh = user.login(&app).await;
    assert!(claims_of(&fresh.access)["iat"].as_i64().unwrap() >= not_before);
    assert_eq!(app.validate(&fresh.access).await.status, StatusCode::OK);
    assert_eq!(
        app.validate(&first.access).await.status,
        StatusCode::UNAUTHORIZED
    );
}

async fn refresh_reuse_publishes_the_session(app: TestApp) {
    let (_, first) = app.logged_in_user().await;
    Tokens::from_response(&app.refresh(&first.refresh).await);
    app.advance(Duration::from_secs(11));
    assert_eq!(
        app.refresh(&first.refresh).await.status,
        StatusCode::UNAUTHORIZED
    );
    assert_eq!(
        sids(&feed(&app).await),
        [claims_of(&first.access)["sid"].as_str().unwrap().to_owned()]
    );
}

async fn disabling_a_user_publishes_a_user_entry(app: TestApp) {
    let (user, tokens) = app.logged_in_user().await;
    let id = app.user(&user.email).await.id;
    app.state
        .store
        .disable_user(&id, app.state.revoke_at())
        .await
        .unwrap();
    let users = feed(&app).await.body["users"].as_array().unwrap().clone();
    assert_eq!(users.len(), 1);
    assert_eq!(users[0]["sub"], claims_of(&tokens.access)["sub"]);
}

/// `GET /internal/revocations` with this query string.
async fn feed_at(app: &TestApp, query: &str) -> TestResponse {
    app.get_internal(
        &format!("/internal/revocations?{query}"),
        Some(&format!("Bearer {INTERNAL_TOKEN}")),
    )
    .await
}

/// The answer's cursor as the next query: `after=<seq>&epoch=<epoch>&tag=<tag>`.
fn next_query(answer: &TestResponse) -> String {
    format!(
        "after={}&epoch={}&tag={}",
        answer.body["seq"].as_u64().unwrap(),
        answer.str("epoch"),
        answer.str("tag")
    )
}

/// The tag of the entry numbered `seq`, as on the wire.
async fn tag_of(raw: &RawDb, seq: u64) -> String {
    let tag: i64 = sqlx::query_scalar(raw.sql(
        "SELECT tag FROM revocations WHERE seq = $1",
        "SELECT tag FROM revocations WHERE seq = ?",
    ))
    .bind(i64::try_from(seq).unwrap())
    .fetch_one(&raw.pool)
    .await
    .unwrap();
    format!("{:016x}", u64::from_be_bytes(tag.to_be_bytes()))
}

/// Every entry of an answer as `s:<sid>` or `u:<sub>:<not_before>`, in answer order.
fn entries(answer: &TestResponse) -> Vec<String> {
    assert_eq!(answer.status, StatusCode::OK, "{}", answer.body);
    let sessions = answer.body["sessions"].as_array().unwrap().iter();
    let users = answer.body["users"].as_array().unwrap().iter();
    sessions
        .map(|s| format!("s:{}", s["sid"].as_str().unwrap()))
        .chain(users.map(|u| format!("u:{}:{}", u["sub"].as_str().unwrap(), u["not_before"])))
        .collect()
}

/// A pool of its own on the app's database, for what the API cannot do (seeding).
async fn raw_pool(url: &str) -> RawDb {
    RawDb::connect(url).await
}

/// Appends `n` (at most 100,000) session entries `seeded-<i>` with this `until` to the feed,
/// numbered and tagged as the store does (head + 1 …, then the head moves and takes the last
/// entry's tag), in one statement. On MySQL the numbers come from a cross join of digits: a
/// recursive CTE stops at 1,000 rows there (`cte_max_recursion_depth` on MySQL,
/// `max_recursive_iterations` on MariaDB).
async fn seed(raw: &RawDb, n: i64, until: i64) {
    assert!(n <= 100_000);
    let salt = rand::random::<i64>() >> 2; // Distinct tags: salt + i never overflows.
    let mut tx = raw.pool.begin().await.unwrap();
    sqlx::query(raw.sql(
        "WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < $1) \
         INSERT INTO revocations (kind, subject, not_before, until, created_at, seq, tag) \
         SELECT 'session', 'seeded-' || i, NULL, $2, 0, \
                (SELECT seq FROM revocation_feed WHERE id = 1) + i, $3 + i FROM n",
        "INSERT INTO revocations (kind, subject, not_before, `until`, created_at, seq, tag) \
         WITH d(d) AS (SELECT 0 UNION ALL SELECT 1 UNION ALL SELECT 2 UNION ALL SELECT 3 \
                       UNION ALL SELECT 4 UNION ALL SELECT 5 UNION ALL SELECT 6 \
                       UNION ALL SELECT 7 UNION ALL SELECT 8 UNION ALL SELECT 9), \
              n(i) AS (SELECT a.d + 10 * b.d + 100 * c.d + 1000 * e.d + 10000 * f.d + 1 \
                       FROM d a, d b, d c, d e, d f \
                       WHERE a.d + 10 * b.d + 100 * c.d + 1000 * e.d + 10000 * f.d < ?) \
         SELECT 'session', CONCAT('seeded-', i), NULL, ?, 0, \
                (SELECT seq FROM revocation_feed WHERE id = 1) + i, ? + i FROM n",
    ))
    .bind(n)
    .bind(until)
    .bind(salt)
    .execute(&mut *tx)
    .await
    .unwrap();
    sqlx::query(raw.sql(
        "UPDATE revocation_feed SET seq = seq + $1, tag = $2 WHERE id = 1",
        "UPDATE revocation_feed SET seq = seq + ?, tag = ? WHERE id = 1",
    ))
    .bind(n)
    .bind(salt + n)
    .execute(&mut *tx)
    .await
    .unwrap();
    tx.commit().await.unwrap();
}

/// A "logout everywhere" of a user id no one holds: the whole transaction of a real
/// revocation (users, sessions, then the feed), with no set-up.
async fn revoke_user(store: &Store, user_id: &str, at: RevokeAt) {
    store.revoke_all_sessions(user_id, at).await.unwrap();
}

async fn a_reader_at_the_head_gets_an_empty_page(app: TestApp) {
    let (_, tokens) = app.logged_in_user().await;
    app.logout_bearer(&tokens.access, false).await;
    let first = feed(&app).await;
    assert_eq!(entries(&first).len(), 1);
    assert!(first.header("etag").is_none(), "v2 has no ETag");

    let again = feed_at(&app, &next_query(&first)).await;

    assert!(entries(&again).is_empty());
    assert_eq!(again.body["seq"], first.body["seq"]);
    assert_eq!(again.body["epoch"], first.body["epoch"]);
    assert_eq!(again.body["full"], false);
    assert_eq!(again.body["more"], false);
}

async fn a_cursor_resumes_with_nothing_lost_or_repeated(app: TestApp) {
    let empty = feed(&app).await;
    assert_eq!(empty.body["seq"], 0, "an empty feed starts at 0");
    let still_empty = feed_at(&app, &next_query(&empty)).await;
    assert_eq!(
        still_empty.body["full"], false,
        "polling an empty feed is no rebuild"
    );
    let flipped = u64::from_str_radix(&empty.str("tag"), 16).unwrap() ^ 1;
    let other_history = feed_at(
        &app,
        &format!("after=0&epoch={}&tag={flipped:016x}", empty.str("epoch")),
    )
    .await;
    assert_eq!(
        other_history.body["full"], true,
        "at a head of 0, only with the head's tag"
    );
    let (_, before) = app.logged_in_user().await;
    app.logout_bearer(&before.access, false).await;
    let start = feed(&app).await;
    assert_eq!(start.body["full"], true);
    let mut cursor = next_query(&start);
    let mut seen = entries(&start);
    let mut expected = Vec::new();
    for round in 0..4 {
        let (_, tokens) = app.logged_in_user().await;
        let (_, other) = app.logged_in_user().await;
        app.logout_bearer(&tokens.access, false).await;
        app.logout_bearer(&other.access, round % 2 == 0).await;
        expected.push(format!("s:{}", tokens.sid()));
        let answer = feed_at(&app, &cursor).await;
        assert_eq!(answer.body["full"], false, "round {round}");
        seen.extend(entries(&answer));
        cursor = next_query(&answer);
    }
    let seen_set: HashSet<_> = seen.iter().cloned().collect();
    assert_eq!(seen_set.len(), seen.len(), "nothing repeated: {seen:?}");
    assert_eq!(seen.len(), 1 + 8, "nothing lost: {seen:?}");
    assert!(expected.iter().all(|e| seen_set.contains(e)), "{seen:?}");
    let everything = feed(&app).await;
    assert_eq!(
        entries(&everything).into_iter().collect::<HashSet<_>>(),
        seen_set,
        "a full sync holds exactly what the cursor collected"
    );
}

async fn a_full_sync_starts_without_a_cursor_with_another_epoch_or_past_the_head(app: TestApp) {
    let pool = raw_pool(&app.database_url).await;
    for _ in 0..2 {
        let (_, tokens) = app.logged_in_user().await;
        app.logout_bearer(&tokens.access, false).await;
    }
    let head = feed(&app).await;
    let (seq, epoch, tag) = (
        head.body["seq"].as_u64().unwrap(),
        head.str("epoch"),
        head.str("tag"),
    );
    assert_eq!(epoch.len(), 32, "128 random bits in hex: {epoch}");
    assert!(epoch.bytes().all(|b| b.is_ascii_hexdigit()));
    assert_eq!(
        tag,
        tag_of(&pool, seq).await,
        "the head's tag is its entry's"
    );
    let first_tag = tag_of(&pool, seq - 1).await;
    for (query, reason) in [
        (String::new(), "no cursor"),
        (String::from("after=0"), "after=0 without an epoch"),
        (format!("after={seq}"), "no epoch"),
        (format!("after={seq}&tag={tag}"), "no epoch, with the tag"),
        (format!("after={seq}&epoch={epoch}"), "no tag"),
        (
            format!("after={seq}&epoch=0123456789abcdef0123456789abcdef&tag={tag}"),
            "another epoch",
        ),
        (
            format!("after={}&epoch={epoch}&tag={tag}", seq + 1),
            "past the head",
        ),
        (
            format!("after={}&epoch={epoch}&tag={tag}", u64::MAX),
            "past any seq",
        ),
        (
            format!("after={}&epoch={epoch}&tag={tag}", seq - 1),
            "the head's tag for an entry behind it",
        ),
        (
            format!("after={seq}&epoch={epoch}&tag={first_tag}"),
            "an entry's tag for the head",
        ),
    ] {
        let answer = feed_at(&app, &query).await;
        assert_eq!(answer.body["full"], true, "{reason}");
        assert_eq!(
            entries(&answer),
            entries(&head),
            "{reason}: every live entry"
        );
        assert_eq!(answer.body["seq"], seq, "{reason}");
    }
    let from_zero = feed_at(&app, &format!("after=0&epoch={epoch}&tag={tag}")).await;
    assert_eq!(
        from_zero.body["full"], false,
        "after=0 with the epoch: a reader of an empty feed holds nothing to lose"
    );
    assert_eq!(entries(&from_zero), entries(&head));
    let resumed = feed_at(
        &app,
        &format!("after={}&epoch={epoch}&tag={first_tag}", seq - 1),
    )
    .await;
    assert_eq!(resumed.body["full"], false);
    assert_eq!(entries(&resumed), entries(&head)[1..]);
    assert_eq!(resumed.str("tag"), tag);
}

async fn pages_stop_at_page_entries_and_the_next_one_resumes_after_them(app: TestApp) {
    let pool = raw_pool(&app.database_url).await;
    let (_, tokens) = app.logged_in_user().await;
    app.logout_bearer(&tokens.access, false).await;
    seed(&pool, i64::try_from(PAGE).unwrap(), app.clock.now() + 60).await;

    let first = feed(&app).await;
    let first_entries = entries(&first);
    assert_eq!(first_entries.len(), PAGE);
    assert_eq!(first.body["more"], true);
    assert_eq!(first.body["full"], true);
    assert_eq!(first.body["seq"], PAGE, "the last entry served");
    assert_eq!(
        first_entries[0],
        format!("s:{}", tokens.sid()),
        "oldest first"
    );
    let second = feed_at(&app, &next_query(&first)).await;
    assert_eq!(entries(&second), ["s:seeded-10000"]);
    assert_eq!(second.body["more"], false);
    assert_eq!(second.body["full"], false);
    assert_eq!(second.body["seq"], PAGE + 1, "the head");
    let bytes = serde_json::to_vec(&first.body).unwrap().len();
    assert!(
        bytes < 4 << 20,
        "a full page ({bytes} bytes) fits the filter's cap"
    );
}

async fn small_pages_resume_with_nothing_lost_or_repeated(app: TestApp) {
    let pool = raw_pool(&app.database_url).await;
    let now = app.clock.now();
    seed(&pool, 5, now + 60).await;
    seed(&pool, 4, now - 1000).await; // Expired: skipped, yet the cursor moves past them.
    seed(&pool, 3, now + 60).await;
    let store = &app.state.store;
    let mut cursor = (None, None::<String>, None);
    let mut seqs = Vec::new();
    let mut pages = 0;
    loop {
        let page = store
            .revocation_page(
                FeedCursor {
                    after: cursor.0,
                    epoch: cursor.1.as_deref(),
                    tag: cursor.2,
                },
                now,
                3,
            )
            .await
            .unwrap();
        assert_eq!(page.full, pages == 0);
        assert!(page.entries.len() <= 3);
        seqs.extend(page.entries.iter().map(|row| row.seq));
        pages += 1;
        if let Some(last) = page.entries.last().filter(|_| page.more) {
            assert_eq!(
                page.tag,
                u64::from_be_bytes(last.tag.to_be_bytes()),
                "the tag of the last entry served"
            );
        }
        cursor = (Some(page.seq), Some(page.epoch), Some(page.tag));
        if !page.more {
            break;
        }
    }
    assert_eq!(seqs, [1, 2, 3, 4, 5, 10, 11, 12]);
    assert_eq!(cursor.0, Some(12));
    assert_eq!(pages, 3);
}

/// The commit-order guarantee: a reader that polls with its cursor while many transactions
/// record revocations at once ends up with every entry, because a head is visible only once
/// every entry numbered up to it has committed. Rounds of writers go on until the reader has
/// polled at least twice while writers ran (fast writers may all finish within one poll).
async fn a_reader_polling_during_concurrent_revocations_misses_none(app: TestApp) {
    const WRITERS: usize = 200;
    let mut ids: Vec<String> = Vec::new();
    let mut seen = Vec::new();
    let mut cursor = String::new();
    let mut polls = 0;
    let mut polls_while_writing = 0;
    for _round in 0..10 {
        let round: Vec<String> = (0..WRITERS)
            .map(|_| uuid::Uuid::new_v4().to_string())
            .collect();
        ids.extend(round.iter().cloned());
        let mut writers = tokio::task::JoinSet::new();
        for id in round {
            let (store, at) = (app.state.store.clone(), app.state.revoke_at());
            writers.spawn(async move { revoke_user(&store, &id, at).await });
        }
        let mut done = false;
        loop {
            let answer = feed_at(&app, &cursor).await;
            assert!(
                polls == 0 || answer.body["full"] == false,
                "{}",
                answer.body
            );
            seen.extend(entries(&answer));
            cursor = next_query(&answer);
            polls += 1;
            if done && answer.body["more"] == false {
                break;
            }
            while let Some(joined) = writers.try_join_next() {
                joined.unwrap();
            }
            done = writers.is_empty();
            if !done {
                polls_while_writing += 1;
            }
            tokio::task::yield_now().await;
        }
        if polls_while_writing >= 2 {
            break;
        }
    }
    let subs: Vec<&str> = seen.iter().map(|e| e.split(':').nth(1).unwrap()).collect();
    let unique: HashSet<&str> = subs.iter().copied().collect();
    assert_eq!(unique.len(), subs.len(), "nothing repeated");
    let missed: Vec<_> = ids
        .iter()
        .filter(|id| !unique.contains(id.as_str()))
        .collect();
    assert!(missed.is_empty(), "missed {missed:?} in {polls} polls");
    assert!(
        polls_while_writing >= 2,
        "the reader polled while the writers ran ({polls_while_writing} of {polls} polls)"
    );
}

async fn entries_are_served_for_the_largest_skew_past_until_then_pruned(app: TestApp) {
    let now = app.clock.now();
    let store = &app.state.store;
    let kept = RevokeAt {
        now,
        until: now - 599,
    };
    let gone = RevokeAt {
        now,
        until: now - 601,
    };
    revoke_user(store, "kept-user", kept).await;
    revoke_user(store, "gone-user", gone).await;

    let served: Vec<_> = entries(&feed(&app).await)
        .into_iter()
        .map(|e| e.split(':').nth(1).unwrap().to_owned())
        .collect();
    assert_eq!(served, ["kept-user"]);
    assert_eq!(
        store.prune_revocations(now).await.unwrap(),
        1,
        "only gone-user"
    );
    let pool = raw_pool(&app.database_url).await;
    let left: Vec<String> = sqlx::query_scalar("SELECT subject FROM revocations")
        .fetch_all(&pool.pool)
        .await
        .unwrap();
    assert_eq!(left, ["kept-user"]);
}

async fn an_after_that_is_not_a_u64_or_a_tag_that_is_not_16_hex_digits_is_400_json(app: TestApp) {
    for query in [
        "after=abc",
        "after=-1",
        "after=",
        "after=1e3",
        "after=1&after=2",
        "after=0&tag=",
        "after=0&tag=abc",
        "after=0&tag=0123456789ABCDEF",
        "after=0&tag=0123456789abcdefa",
        "after=0&tag=0x23456789abcdef",
        "after=0&tag=0123456789abcdef&tag=0123456789abcdef",
    ] {
        let answer = feed_at(&app, query).await;
        assert_eq!(answer.status, StatusCode::BAD_REQUEST, "{query}");
        assert_eq!(
            answer.error(),
            "invalid_request",
            "{query}: {}",
            answer.body
        );
    }
    let ignored = feed_at(&app, "unknown=1&after=0").await;
    assert_eq!(
        ignored.status,
        StatusCode::OK,
        "unknown parameters are ignored"
    );
}

/// The feed's head as stored: `(seq, tag)`.
async fn stored_head(raw: &RawDb) -> (i64, i64) {
    sqlx::query_as("SELECT seq, tag FROM revocation_feed WHERE id = 1")
        .fetch_one(&raw.pool)
        .await
        .unwrap()
}

/// A database restored to an earlier state (a backup, a promoted asynchronous standby, a
/// dump): the entries numbered after `head` are gone and the head is back, epoch unchanged.
async fn restore_to(raw: &RawDb, (head, tag): (i64, i64)) {
    let mut tx = raw.pool.begin().await.unwrap();
    sqlx::query(raw.sql(
        "DELETE FROM revocations WHERE seq > $1",
        "DELETE FROM revocations WHERE seq > ?",
    ))
    .bind(head)
    .execute(&mut *tx)
    .await
    .unwrap();
    sqlx::query(raw.sql(
        "UPDATE revocation_feed SET seq = $1, tag = $2 WHERE id = 1",
        "UPDATE revocation_feed SET seq = ?, tag = ? WHERE id = 1",
    ))
    .bind(head)
    .bind(tag)
    .execute(&mut *tx)
    .await
    .unwrap();
    tx.commit().await.unwrap();
}

/// Revokes each of these user ids, one transaction each.
async fn revoke_users(app: &TestApp, ids: &[&str]) {
    for id in ids {
        revoke_user(&app.state.store, id, app.state.revoke_at()).await;
    }
}

/// The subjects of an answer, in answer order.
fn subjects(answer: &TestResponse) -> Vec<String> {
    entries(answer)
        .into_iter()
        .map(|e| e.split(':').nth(1).unwrap().to_owned())
        .collect()
}

/// F2: a restored database keeps its epoch but numbers new entries again from the restored
/// head. A gateway whose cursor is from the lost history must not resume (it would skip the
/// new entries numbered up to its cursor): whether the new history ends before, at or past
/// its cursor, it gets a full sync with every new entry (SECURITY.md I 102).
async fn a_cursor_from_before_a_restore_gets_a_full_sync(app: TestApp) {
    let pool = raw_pool(&app.database_url).await;
    revoke_users(&app, &["kept-1", "kept-2"]).await;
    let snapshot = stored_head(&pool).await;
    revoke_users(&app, &["lost-3", "lost-4", "lost-5"]).await;
    let before = feed(&app).await;
    assert_eq!(before.body["seq"], 5);
    let cursor = next_query(&before);
    let kept = ["kept-1", "kept-2"];

    for (new, reason) in [
        (&["new-3"][..], "the new history ends before the cursor"),
        (&["new-3", "new-4", "new-5"][..], "it ends at the cursor"),
        (
            &["new-3", "new-4", "new-5", "new-6"][..],
            "it ends past the cursor",
        ),
    ] {
        restore_to(&pool, snapshot).await;
        revoke_users(&app, new).await;

        let answer = feed_at(&app, &cursor).await;

        assert_eq!(answer.body["full"], true, "{reason}: {}", answer.body);
        assert_eq!(answer.body["epoch"], before.body["epoch"], "{reason}");
        let expected: Vec<_> = kept.iter().chain(new).map(|s| (*s).to_owned()).collect();
        assert_eq!(subjects(&answer), expected, "{reason}");
        let again = feed_at(&app, &next_query(&answer)).await;
        assert_eq!(
            again.body["full"], false,
            "{reason}: the new cursor resumes"
        );
    }
}

/// A reader whose cursor was taken at the restored head itself shares the history up to it,
/// and resumes.
async fn a_cursor_at_the_restored_head_resumes(app: TestApp) {
    let pool = raw_pool(&app.database_url).await;
    revoke_users(&app, &["kept-1", "kept-2"]).await;
    let snapshot = stored_head(&pool).await;
    let at_snapshot = next_query(&feed(&app).await);
    revoke_users(&app, &["lost-3"]).await;
    restore_to(&pool, snapshot).await;
    revoke_users(&app, &["new-3", "new-4"]).await;

    let answer = feed_at(&app, &at_snapshot).await;

    assert_eq!(answer.body["full"], false, "{}", answer.body);
    assert_eq!(subjects(&answer), ["new-3", "new-4"]);
}

/// At the head, a cursor resumes only with the head's tag.
async fn a_cursor_at_the_head_with_another_tag_gets_a_full_sync(app: TestApp) {
    revoke_users(&app, &["u-1", "u-2"]).await;
    let head = feed(&app).await;
    let (seq, epoch, tag) = (head.body["seq"].clone(), head.str("epoch"), head.str("tag"));
    let other = format!("{:016x}", u64::from_str_radix(&tag, 16).unwrap() ^ 1);

    let matching = feed_at(&app, &format!("after={seq}&epoch={epoch}&tag={tag}")).await;
    let mismatched = feed_at(&app, &format!("after={seq}&epoch={epoch}&tag={other}")).await;

    assert_eq!(matching.body["full"], false);
    assert!(entries(&matching).is_empty());
    assert_eq!(mismatched.body["full"], true);
    assert_eq!(subjects(&mismatched), ["u-1", "u-2"]);
}

/// A cursor behind the head whose entry is gone (pruned, or never in this history) cannot be
/// checked: a full sync.
async fn a_cursor_whose_entry_is_gone_gets_a_full_sync(app: TestApp) {
    let pool = raw_pool(&app.database_url).await;
    revoke_users(&app, &["u-1", "u-2"]).await;
    let cursor = next_query(&feed(&app).await);
    revoke_users(&app, &["u-3"]).await;
    let with_the_entry = feed_at(&app, &cursor).await;
    assert_eq!(with_the_entry.body["full"], false);
    assert_eq!(subjects(&with_the_entry), ["u-3"]);

    sqlx::query("DELETE FROM revocations WHERE seq = 2")
        .execute(&pool.pool)
        .await
        .unwrap();
    let answer = feed_at(&app, &cursor).await;

    assert_eq!(answer.body["full"], true, "{}", answer.body);
    assert_eq!(subjects(&answer), ["u-1", "u-3"]);
}

/// F4, rolling upgrade: a replica still on the code from before migration 0005 inserts entries
/// without `seq` and `tag`. On PostgreSQL a trigger numbers them like the new code (the next
/// seq, a new tag, the head moved) and a reader at its cursor gets them. SQLite has a single
/// replica, and MySQL's history starts after 0005: neither has old code writing, and both refuse
/// such an insert.
async fn an_entry_inserted_by_the_code_before_the_feed_is_numbered_on_postgres(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let pool = raw_pool(&app.database_url).await;
    revoke_users(&app, &["new-code-1"]).await;
    let cursor = feed(&app).await;
    let old_code_insert = sqlx::query(pool.sql(
        "INSERT INTO revocations (kind, subject, not_before, until, created_at) \
         VALUES ('user', 'old-code-2', $1, $2, $3)",
        "INSERT INTO revocations (kind, subject, not_before, `until`, created_at) \
         VALUES ('user', 'old-code-2', ?, ?, ?)",
    ))
    .bind(app.clock.now())
    .bind(app.clock.now() + 960)
    .bind(app.clock.now());

    let inserted = old_code_insert.execute(&pool.pool).await;

    match backend {
        Backend::Sqlite | Backend::Mysql => {
            assert!(inserted.is_err(), "seq is NOT NULL");
            return;
        }
        Backend::Postgres => {
            inserted.unwrap();
        }
    }
    let (head, head_tag) = stored_head(&pool).await;
    assert_eq!(head, 2, "the next seq");
    let answer = feed_at(&app, &next_query(&cursor)).await;
    assert_eq!(answer.body["full"], false, "{}", answer.body);
    assert_eq!(subjects(&answer), ["old-code-2"]);
    assert_eq!(answer.body["seq"], 2);
    assert_eq!(
        answer.str("tag"),
        tag_of(&pool, 2).await,
        "the head took the entry's tag"
    );
    assert_ne!(
        answer.str("tag"),
        cursor.str("tag"),
        "a new tag, {head_tag}"
    );
    revoke_users(&app, &["new-code-3"]).await;
    let next = feed_at(&app, &next_query(&answer)).await;
    assert_eq!(
        next.body["full"], false,
        "the trigger's entry is a valid cursor"
    );
    assert_eq!(subjects(&next), ["new-code-3"]);
    assert_eq!(next.body["seq"], 3);
}

/// A database migrated before the feed had numbers: existing entries are numbered by id,
/// the head is the largest id, and new entries follow it.
async fn migration_numbers_existing_entries_by_id(backend: Backend) {
    // Arrange: the schema before 0005, with three entries of which the second was pruned.
    let (db, url) = TestDb::create(backend).await;
    let pool = raw_pool(&url).await;
    let dir = match backend {
        Backend::Sqlite => "sqlite",
        Backend::Postgres => "postgres",
        Backend::Mysql => unreachable!("MySQL's history starts at 0006, with the feed numbered"),
    };
    let mut before = Migrator::new(std::path::Path::new(&format!(
        "{}/../migrations/{dir}",
        env!("CARGO_MANIFEST_DIR")
    )))
    .await
    .unwrap();
    before.migrations = Cow::Owned(
        before
            .migrations
            .iter()
            .filter(|m| m.version < 5)
            .cloned()
            .collect(),
    );
    before.run(&pool.pool).await.unwrap();
    let far = 4_000_000_000_i64;
    for subject in ["old-1", "old-2", "old-3"] {
        sqlx::query(
            "INSERT INTO revocations (kind, subject, not_before, until, created_at) \
             VALUES ('session', $1, NULL, $2, 0)",
        )
        .bind(subject)
        .bind(far)
        .execute(&pool.pool)
        .await
        .unwrap();
    }
    pool.pool
        .execute("DELETE FROM revocations WHERE subject = 'old-2'")
        .await
        .unwrap();

    // Act: what every start does.
    let store = Store::open(&url).await.unwrap();

    // Assert
    let page = store
        .revocation_page(FeedCursor::default(), 0, 10)
        .await
        .unwrap();
    let numbered: Vec<_> = page
        .entries
        .iter()
        .map(|r| (r.seq, r.subject.as_str()))
        .collect();
    assert_eq!(numbered, [(1, "old-1"), (3, "old-3")]);
    assert_eq!(page.seq, 3, "the head is the largest id");
    revoke_user(&store, "new-user", RevokeAt::new(0, far)).await;
    let next = store
        .revocation_page(
            FeedCursor {
                after: Some(3),
                epoch: Some(&page.epoch),
                tag: Some(page.tag),
            },
            0,
            10,
        )
        .await
        .unwrap();
    assert_eq!(next.entries.len(), 1);
    assert_eq!((next.entries[0].seq, next.full), (4, false));
    let tags: HashSet<i64> = sqlx::query_scalar("SELECT tag FROM revocations")
        .fetch_all(&pool.pool)
        .await
        .unwrap()
        .into_iter()
        .collect();
    assert_eq!(tags.len(), 3, "old entries got tags of their own");
    pool.close().await;
    store.close().await;
    drop(db);
}

/// Two databases never share an epoch, so a cursor from one is never resumed on the other.
async fn each_database_gets_its_own_epoch(backend: Backend) {
    let a = TestApp::spawn(backend).await;
    let b = TestApp::spawn(backend).await;
    assert_ne!(feed(&a).await.str("epoch"), feed(&b).await.str("epoch"));
}

crate::on_every_store!(
    feed_needs_the_internal_token,
    logout_publishes_the_session_until_its_tokens_expire_plus_the_largest_skew,
    logout_everywhere_publishes_one_user_entry,
    refresh_reuse_publishes_the_session,
    disabling_a_user_publishes_a_user_entry,
    a_reader_at_the_head_gets_an_empty_page,
    a_cursor_resumes_with_nothing_lost_or_repeated,
    a_full_sync_starts_without_a_cursor_with_another_epoch_or_past_the_head,
    pages_stop_at_page_entries_and_the_next_one_resumes_after_them,
    small_pages_resume_with_nothing_lost_or_repeated,
    a_reader_polling_during_concurrent_revocations_misses_none,
    entries_are_served_for_the_largest_skew_past_until_then_pruned,
    an_after_that_is_not_a_u64_or_a_tag_that_is_not_16_hex_digits_is_400_json,
    a_cursor_from_before_a_restore_gets_a_full_sync,
    a_cursor_at_the_restored_head_resumes,
    a_cursor_at_the_head_with_another_tag_gets_a_full_sync,
    a_cursor_whose_entry_is_gone_gets_a_full_sync,
);

mod backends {
    use super::*;

    crate::on_every_backend!(
        each_database_gets_its_own_epoch,
        an_entry_inserted_by_the_code_before_the_feed_is_numbered_on_postgres,
    );
}

/// Migrations from before the feed had numbers: MySQL's history starts after them.
mod history {
    use super::*;

    crate::store_tests!(backend on [sqlite, postgres]: (migration_numbers_existing_entries_by_id));
}
