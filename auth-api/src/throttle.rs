//! Brute-force defences: the per-email login throttle and the per-client-IP rate limit.
//!
//! The login throttle counts consecutive failures per normalised email in the database, so
//! every replica sees the same count, and it treats an unknown email exactly like a known one
//! (the same counting, the same 429), so it says nothing about which accounts exist. A few
//! attempts are free; after that each failure locks the email for a delay that doubles up to a
//! cap, and a correct password during the lock is refused like a wrong one. After
//! [`HARD_LIMIT`] consecutive failures (NIST SP 800-63B §5.2.2) the email stays locked until an
//! operator runs `auth-api users unlock`.
//!
//! The per-IP limit is a token bucket per client address, in memory: each replica limits on
//! its own (state it in capacity planning: N replicas allow N times the rate). The address is
//! the trusted gateway's `x-envoy-external-address`, never a client-supplied
//! `X-Forwarded-For`.

use std::{
    net::{IpAddr, SocketAddr},
    num::NonZeroU32,
    time::Duration,
};

use axum::{extract::ConnectInfo, http::HeaderMap};
use governor::{clock::Clock as _, DefaultKeyedRateLimiter, Quota, RateLimiter};

use crate::config::Config;

/// Consecutive failures after which an email stays locked until an operator unlocks it.
pub const HARD_LIMIT: i64 = 100;

/// The login throttle's policy.
#[derive(Debug, Clone, Copy)]
pub struct LoginThrottle {
    /// Failures allowed before the first delay.
    pub free_attempts: i64,
    /// The longest delay between two attempts, in seconds.
    pub max_delay_secs: i64,
}

impl LoginThrottle {
    /// How long to lock the email after its `failures`-th consecutive failure, in seconds:
    /// none while attempts are free, then 1, 2, 4 … up to the cap, and for ever at the hard
    /// limit.
    pub fn delay_after(&self, failures: i64) -> Option<i64> {
        if failures >= HARD_LIMIT {
            return Some(i64::MAX);
        }
        let over = failures.checked_sub(self.free_attempts)?;
        if over < 0 {
            return None;
        }
        let delay = 1_i64
            .checked_shl(u32::try_from(over).unwrap_or(u32::MAX))
            .unwrap_or(i64::MAX);
        Some(delay.clamp(1, self.max_delay_secs.max(1)))
    }
}

/// Per-client-IP token buckets for the credential endpoints.
#[derive(Debug)]
pub struct IpLimiter {
    limiter: DefaultKeyedRateLimiter<IpAddr>,
    header: Option<String>,
    trusted_proxies: Vec<IpAddr>,
}

impl IpLimiter {
    /// A bucket of `per_minute` requests, refilled evenly over a minute, per address.
    pub fn new(config: &Config) -> Self {
        let per_minute = NonZeroU32::new(config.ip_limit_per_minute).unwrap_or(NonZeroU32::MIN);
        Self {
            limiter: RateLimiter::keyed(Quota::per_minute(per_minute)),
            header: config.client_ip_header.clone(),
            trusted_proxies: config.trusted_proxies.clone(),
        }
    }

    /// The client address: the gateway's header when the connection comes from a trusted
    /// proxy, else the connection's own address. `None` when neither is known (in-process
    /// tests).
    pub fn client_ip(
        &self,
        peer: Option<&ConnectInfo<SocketAddr>>,
        headers: &HeaderMap,
    ) -> Option<IpAddr> {
        let peer = peer.map(|ConnectInfo(addr)| addr.ip());
        let trusted = peer.is_some_and(|ip| self.trusted_proxies.contains(&ip));
        let from_header = || {
            let name = self.header.as_deref()?;
            headers
                .get(name)?
                .to_str()
                .ok()?
                .trim()
                .parse::<IpAddr>()
                .ok()
        };
        if trusted {
            from_header().or(peer)
        } else {
            peer
        }
    }

    /// `Err(retry after)` when `ip` has used up its bucket.
    pub fn check(&self, ip: Option<IpAddr>) -> Result<(), Duration> {
        let Some(ip) = ip else {
            return Ok(());
        };
        self.limiter.check_key(&ip).map_err(|not_until| {
            not_until.wait_time_from(governor::clock::DefaultClock::default().now())
        })
    }

    /// Forgets addresses whose buckets are full again (bounded memory).
    pub fn prune(&self) {
        self.limiter.retain_recent();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn delays_start_after_the_free_attempts_and_double_to_the_cap() {
        let throttle = LoginThrottle {
            free_attempts: 5,
            max_delay_secs: 900,
        };
        let cases = [
            (1, None, "first failure"),
            (4, None, "still free"),
            (5, Some(1), "first delay"),
            (6, Some(2), "doubles"),
            (10, Some(32), "keeps doubling"),
            (20, Some(900), "capped"),
            (99, Some(900), "still capped"),
            (100, Some(i64::MAX), "hard limit: until an operator unlocks"),
        ];
        for (failures, delay, reason) in cases {
            assert_eq!(throttle.delay_after(failures), delay, "{reason}");
        }
    }

    #[test]
    fn forwarded_address_counts_only_from_a_trusted_proxy() {
        let config = Config {
            trusted_proxies: vec![[127, 0, 0, 1].into()],
            ..Config::default()
        };
        let limiter = IpLimiter::new(&config);
        let mut headers = HeaderMap::new();
        headers.insert("x-envoy-external-address", "203.0.113.7".parse().unwrap());
        headers.insert("x-forwarded-for", "198.51.100.1".parse().unwrap());
        let gateway = ConnectInfo(SocketAddr::from(([127, 0, 0, 1], 40000)));
        let stranger = ConnectInfo(SocketAddr::from(([192, 0, 2, 9], 40000)));
        assert_eq!(
            limiter.client_ip(Some(&gateway), &headers),
            Some([203, 0, 113, 7].into())
        );
        assert_eq!(
            limiter.client_ip(Some(&stranger), &headers),
            Some([192, 0, 2, 9].into()),
            "forged header ignored"
        );
    }

    #[test]
    fn a_full_bucket_refuses_with_a_retry_time() {
        let config = Config {
            ip_limit_per_minute: 2,
            ..Config::default()
        };
        let limiter = IpLimiter::new(&config);
        let ip = Some(IpAddr::from([203, 0, 113, 7]));
        assert!(limiter.check(ip).is_ok());
        assert!(limiter.check(ip).is_ok());
        let wait = limiter.check(ip).unwrap_err();
        assert!(
            wait > Duration::ZERO && wait <= Duration::from_secs(30),
            "{wait:?}"
        );
        assert!(
            limiter.check(Some(IpAddr::from([203, 0, 113, 8]))).is_ok(),
            "other addresses unaffected"
        );
    }
}
