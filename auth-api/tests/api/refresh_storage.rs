//! What refresh tokens cost the store: the hashes of sessions that can never refresh again are
//! pruned while a live session keeps every generation (SECURITY.md I 101), a malformed token
//! never reaches the database (F 64), and each token is 32 bytes from the CSPRNG (F 55).

use std::{collections::HashSet, time::Duration};

use auth_api::tokens::RefreshToken;
use axum::http::StatusCode;
use base64::{engine::general_purpose::URL_SAFE_NO_PAD, Engine as _};

use crate::helpers::{TestApp, TestUser, Tokens};

const DAY: u64 = 24 * 3600;

/// The refresh-token rows the database holds for each session, in order.
async fn rows_per_session(app: &TestApp, sids: &[&str]) -> Vec<i64> {
    let raw = app.raw().await;
    let mut counts = Vec::new();
    for sid in sids {
        let count: i64 = sqlx::query_scalar(raw.sql(
            "SELECT COUNT(*) FROM refresh_tokens WHERE session_id = $1",
            "SELECT COUNT(*) FROM refresh_tokens WHERE session_id = ?",
        ))
        .bind(*sid)
        .fetch_one(&raw.pool)
        .await
        .unwrap();
        counts.push(count);
    }
    raw.close().await;
    counts
}

/// The hourly prune as the service runs it, at the app's clock.
async fn prune(app: &TestApp) -> u64 {
    let lifetimes = &app.state.lifetimes;
    app.state
        .store
        .prune_refresh_tokens(app.clock.now(), lifetimes.session_idle_secs)
        .await
        .unwrap()
}

/// Refreshes `tokens` `times` times in a row; the last pair.
async fn rotate(app: &TestApp, mut tokens: Tokens, times: usize) -> Tokens {
    for _ in 0..times {
        tokens = Tokens::from_response(&app.refresh(&tokens.refresh).await);
    }
    tokens
}

async fn the_prune_forgets_only_sessions_that_can_never_refresh_again(app: TestApp) {
    // Arrange, with the defaults: 30 days absolute, 7 days idle.
    let user = TestUser::random();
    user.register(&app).await;
    // Day 0: `revoked` logs out, `idle` is never used again, `ending` is refreshed every 6
    // days until its absolute end.
    let revoked = rotate(&app, user.login(&app).await, 2).await;
    assert_eq!(
        app.logout_refresh(&revoked.refresh, false).await.status,
        StatusCode::NO_CONTENT
    );
    let idle = user.login(&app).await;
    let mut ending = rotate(&app, user.login(&app).await, 2).await;
    let mut live = None;
    for day in [6, 12, 18, 24] {
        app.advance(Duration::from_secs(6 * DAY));
        ending = rotate(&app, ending, 1).await;
        if day == 24 {
            // Day 24: `live` logs in and rotates three times.
            let first = user.login(&app).await;
            live = Some((first.clone(), rotate(&app, first, 3).await));
        }
    }
    let (live_first, live_now) = live.unwrap();
    let sids = [revoked.sid(), idle.sid(), ending.sid(), live_now.sid()];
    let sids: Vec<&str> = sids.iter().map(String::as_str).collect();
    assert_eq!(rows_per_session(&app, &sids).await, [3, 1, 7, 4]);
    // Act 1: day 30 and a second; `ending` has just reached its end, within the day's margin.
    // `live` is used that day too.
    app.advance(Duration::from_secs(6 * DAY + 1));
    let live_now = rotate(&app, live_now, 1).await;
    let pruned = prune(&app).await;
    // Assert 1: the revoked and the idle sessions lose every row, the others keep all.
    assert_eq!(rows_per_session(&app, &sids).await, [0, 0, 7, 5]);
    assert_eq!(pruned, 4);
    // Act 2: a day later, `ending` goes too.
    app.advance(Duration::from_secs(DAY + 1));
    assert_eq!(prune(&app).await, 7);
    // Assert 2: the live session kept every generation.
    assert_eq!(rows_per_session(&app, &sids).await, [0, 0, 0, 5]);
    for ended in [&revoked, &idle, &ending] {
        let answer = app.refresh(&ended.refresh).await;
        assert_eq!(answer.status, StatusCode::UNAUTHORIZED, "{}", answer.body);
        assert_eq!(answer.error(), "invalid_grant");
    }
    // The live token still refreshes, and a replay of its oldest generation is still reuse:
    // the whole session is revoked (F 56, F 58).
    let next = rotate(&app, live_now, 1).await;
    assert_eq!(app.validate(&next.access).await.status, StatusCode::OK);
    let replay = app.refresh(&live_first.refresh).await;
    assert_eq!(replay.status, StatusCode::UNAUTHORIZED);
    assert_eq!(
        app.validate(&next.access).await.status,
        StatusCode::UNAUTHORIZED
    );
    assert_eq!(
        app.refresh(&next.refresh).await.status,
        StatusCode::UNAUTHORIZED,
        "reuse ended the session"
    );
    // Assert 3: a day after that revocation its rows go as well; nothing else is left.
    app.advance(Duration::from_secs(DAY + 1));
    assert_eq!(prune(&app).await, 6);
    assert_eq!(rows_per_session(&app, &sids).await, [0, 0, 0, 0]);
}

async fn a_malformed_refresh_token_never_reaches_the_store(app: TestApp) {
    // Arrange: a store that cannot answer anything.
    let (_, tokens) = app.logged_in_user().await;
    app.state.store.close().await;
    // Act and assert: malformed tokens are refused without it...
    for malformed in [
        "",
        "short",
        &tokens.refresh[..42],
        &format!("{}A", tokens.refresh),
        &format!("{}=", &tokens.refresh[..42]),
        "' OR 1=1; DROP TABLE sessions; --xxxxxxxxxx",
    ] {
        let answer = app.refresh(malformed).await;
        assert_eq!(
            answer.status,
            StatusCode::UNAUTHORIZED,
            "{malformed:?}: {}",
            answer.body
        );
        assert_eq!(answer.error(), "invalid_grant", "{malformed:?}");
    }
    // ...while a well-formed token needs it, known or not: the control that shows the store is
    // really gone.
    for well_formed in [tokens.refresh.clone(), URL_SAFE_NO_PAD.encode([7_u8; 32])] {
        let answer = app.refresh(&well_formed).await;
        assert_eq!(
            answer.status,
            StatusCode::SERVICE_UNAVAILABLE,
            "{}",
            answer.body
        );
        assert_eq!(answer.error(), "unavailable");
    }
}

/// F 55: 10,000 refresh tokens are 43 base64url characters of 32 bytes each, pairwise distinct
/// even in their first 8 bytes, and every one of their 256 bit positions is set in about half of
/// them. A counter, a timestamp, fewer random bytes padded out or a small seed fails.
#[test]
fn refresh_tokens_are_32_bytes_from_the_csprng() {
    const COUNT: usize = 10_000;
    let mut prefixes = HashSet::with_capacity(COUNT);
    let mut ones_per_bit = [0_u32; 256];
    let mut ones = 0_u64;
    for _ in 0..COUNT {
        let token = RefreshToken::generate();
        let text = token.expose();
        assert_eq!(text.len(), 43, "{text}");
        assert!(
            text.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_'),
            "not base64url without padding: {text}"
        );
        let bytes = URL_SAFE_NO_PAD.decode(text).unwrap();
        assert_eq!(bytes.len(), 32);
        let prefix: [u8; 8] = bytes[..8].try_into().unwrap();
        assert!(prefixes.insert(prefix), "an 8-byte prefix came twice");
        for (i, byte) in bytes.iter().enumerate() {
            ones += u64::from(byte.count_ones());
            for bit in 0..8 {
                ones_per_bit[i * 8 + bit] += u32::from((byte >> bit) & 1);
            }
        }
    }
    // 2,560,000 bits: half are ones within 1% (σ = 800, so 32σ). Each position: 5,000 of
    // 10,000 within 500 (σ = 50, so 10σ): loose enough never to fail by chance.
    let total = (COUNT * 256) as u64;
    assert!(
        ones.abs_diff(total / 2) < total / 100,
        "{ones} ones of {total}"
    );
    for (position, &count) in ones_per_bit.iter().enumerate() {
        assert!(
            count.abs_diff(5_000) < 500,
            "bit {position} set in {count} of {COUNT} tokens"
        );
    }
}

/// The token a login hands out is one such token: 32 bytes, new for each login.
async fn login_refresh_tokens_are_32_fresh_bytes(app: TestApp) {
    let (user, first) = app.logged_in_user().await;
    let second = user.login(&app).await;
    for tokens in [&first, &second] {
        assert_eq!(URL_SAFE_NO_PAD.decode(&tokens.refresh).unwrap().len(), 32);
    }
    assert_ne!(first.refresh, second.refresh);
}

crate::on_every_store!(
    the_prune_forgets_only_sessions_that_can_never_refresh_again,
    a_malformed_refresh_token_never_reaches_the_store,
    login_refresh_tokens_are_32_fresh_bytes,
);
