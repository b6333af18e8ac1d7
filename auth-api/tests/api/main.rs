//! The API tests: the real router on real SQLite, PostgreSQL and MySQL (MariaDB) databases, one
//! per test.

#![allow(
    unreachable_pub,
    reason = "helpers are `pub` for the test modules of this one binary"
)]

mod admin;
mod algorithms;
mod at_rest;
mod audit;
mod cli;
mod connections;
mod contention;
mod cors;
mod devices;
mod discovery;
mod email_links;
mod email_outbox;
mod fake_provider;
mod grpc;
mod helpers;
mod internal_listener;
mod keys;
mod login;
mod login_races;
mod logout;
mod metrics_catalog;
mod pages;
mod password;
mod refresh;
mod refresh_storage;
mod rehash;
mod request_id;
mod revocation;
mod rotation_keys;
mod service;
mod shedding;
mod sign_in_store;
mod signup;
mod smtp_sink;
mod social_login;
mod startup;
mod throttle;
mod totp;
mod totp_store;
mod unavailable;
mod validate;
mod validate_batch;
mod validate_memo;
