//! What auth-api parses from a client before any database work: emails, passwords, refresh
//! tokens and Authorization headers. Never a panic.
#![no_main]

use auth_api::{
    domain::{Email, Password},
    extract::bearer_token,
    tokens::RefreshToken,
};
use axum::http::{header, HeaderMap, HeaderValue};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    let (first, second) = text.split_once('\n').unwrap_or((&text, ""));
    if let Ok(email) = Email::parse(first) {
        let _ = Password::for_signup(second, &email, 8);
    }
    let _ = Password::for_login(second);
    let _ = RefreshToken::parse(first);
    if let Ok(value) = HeaderValue::from_bytes(data) {
        let mut headers = HeaderMap::new();
        headers.insert(header::AUTHORIZATION, value);
        let _ = bearer_token(&headers);
    }
});
