//! End-to-end tests: the real auth-api, a real Envoy (2 workers) loading the real `.wasm`, and
//! the echo upstream. Each test starts its own stack on free ports.
//!
//! Which store each test runs on: the scenarios whose outcome the store decides (sessions,
//! refresh and reuse, logout, disabling, key revocation, the revocation feed, the two-replica
//! cluster) run on both server stores, PostgreSQL and MySQL/MariaDB, through [`on_stores!`]
//! (`<scenario>::postgres`, `<scenario>::mysql`), and the whole signup-to-logout flow on SQLite
//! too. The two rotations under load (14 s each) are split, one per server store: both stores
//! carry a rotation with refreshes under load, without running each twice. Everything else (the
//! gateway's rules, edge behaviour, forgeries, algorithms, key polling and staleness, the
//! configuration, interoperability) does not depend on the store and runs once, on the
//! default SQLite file, which costs no server round trips; the API tests prove every store's
//! side of it on all three stores. So the suite covers PostgreSQL and MariaDB wherever the store
//! matters, and doubles only those tests.

/// One `#[tokio::test]` per listed store for each scenario (an `async fn(e2e::Backend)`), named
/// `<scenario>::<store>`: `on_stores!([postgres, mysql]: scenario_a, scenario_b);`.
macro_rules! on_stores {
    ($stores:tt: $($scenario:ident),+ $(,)?) => {
        $( on_stores!(@scenario $scenario $stores); )+
    };
    (@scenario $scenario:ident [$($store:ident),+ $(,)?]) => {
        mod $scenario {
            $( on_stores!(@test $scenario $store); )+
        }
    };
    (@test $scenario:ident sqlite) => {
        #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
        async fn sqlite() {
            super::$scenario(e2e::Backend::Sqlite).await;
        }
    };
    (@test $scenario:ident postgres) => {
        #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
        async fn postgres() {
            super::$scenario(e2e::Backend::Postgres).await;
        }
    };
    (@test $scenario:ident mysql) => {
        #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
        async fn mysql() {
            super::$scenario(e2e::Backend::Mysql).await;
        }
    };
}

mod account_pages;
mod algorithms;
mod attack;
mod config;
mod correlation;
mod edge;
mod ext_authz;
mod filter_metrics;
mod flow;
mod forged;
mod grpc_reflection;
mod interop;
mod keys;
mod replicas;
mod revocation;
mod rotation;
mod social_login;
mod step_up;
