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
//! The per-IP limit is a token bucket per client address: in memory by default, so each
//! replica limits on its own (N replicas allow N times the rate), or in Redis with
//! `AUTH_REDIS_URL`, shared by every replica. The address is the trusted gateway's
//! `x-envoy-external-address`, never a client-supplied `X-Forwarded-For`.

use std::{
    collections::HashMap,
    net::{IpAddr, Ipv6Addr, SocketAddr},
    num::NonZeroU32,
    sync::Mutex,
    time::{Duration, Instant},
};

use axum::{extract::ConnectInfo, http::HeaderMap};

use crate::{config::Config, error::ApiError, metrics::Metrics};

/// Counts one outcome of an endpoint (`Metrics::login`, `Metrics::signup`, …).
pub type CountOutcome = fn(&Metrics, &'static str);

/// The header Envoy puts the client's address in (the default `AUTH_CLIENT_IP_HEADER`).
const ENVOY_EXTERNAL_ADDRESS: &str = "x-envoy-external-address";
/// The most per-address buckets kept in memory: about 4 MB. Past it, full buckets are
/// forgotten first, then the fullest of the rest, so a flood of new addresses costs the
/// flooder, not memory.
pub const MAX_BUCKETS: usize = 100_000;
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

/// Per-client-IP token buckets for the credential endpoints: in memory, or in Redis when
/// `AUTH_REDIS_URL` is set so that every replica shares them.
#[derive(Debug)]
pub struct IpLimiter {
    buckets: Buckets,
    /// The prefix length that IPv6 clients are keyed by.
    ipv6_prefix: u8,
    header: Option<String>,
    trusted_proxies: Vec<ipnet::IpNet>,
}

enum Buckets {
    Memory(MemoryBuckets),
    Redis {
        connection: redis::aio::ConnectionManager,
        script: redis::Script,
        prefix: String,
        /// Milliseconds between two tokens.
        interval_ms: u64,
        /// How far ahead of now the bucket's schedule may run: a full bucket's worth.
        burst_ms: u64,
    },
}

impl std::fmt::Debug for Buckets {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::Memory(_) => "Buckets::Memory",
            Self::Redis { .. } => "Buckets::Redis",
        })
    }
}

/// GCRA, the token bucket as one timestamp per address: the "theoretical arrival time" `tat`
/// moves `interval` ahead per request and may run at most `burst` ahead of now. Redis's own
/// clock (`TIME`) is used, so replicas with skewed clocks agree. Returns 0 (allowed) or the
/// milliseconds to wait.
const GCRA: &str = r"
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local interval = tonumber(ARGV[1])
local burst = tonumber(ARGV[2])
local tat = tonumber(redis.call('GET', KEYS[1]) or now)
if tat < now then tat = now end
local wait = tat - burst - now
if wait > 0 then return wait end
local next = tat + interval
redis.call('SET', KEYS[1], next, 'PX', next - now)
return 0
";

impl IpLimiter {
    /// A bucket of `ip_limit_per_minute` requests, refilled evenly over a minute, per address;
    /// in Redis when `AUTH_REDIS_URL` is set (connecting now, so a wrong URL fails the start).
    pub async fn new(config: &Config) -> anyhow::Result<Self> {
        use anyhow::Context as _;
        use secrecy::ExposeSecret as _;
        let per_minute = NonZeroU32::new(config.ip_limit_per_minute).unwrap_or(NonZeroU32::MIN);
        let buckets = match &config.redis_url {
            None => Buckets::Memory(MemoryBuckets::new(per_minute, MAX_BUCKETS)),
            Some(url) => {
                let client = redis::Client::open(url.expose_secret())
                    .context("AUTH_REDIS_URL is not a Redis URL")?;
                let manager = redis::aio::ConnectionManagerConfig::new()
                    .set_connection_timeout(Duration::from_secs(2))
                    .set_response_timeout(Duration::from_millis(500))
                    .set_number_of_retries(1);
                let connection = client
                    .get_connection_manager_with_config(manager)
                    .await
                    .context("cannot connect to AUTH_REDIS_URL")?;
                let interval_ms = 60_000 / u64::from(per_minute.get());
                Buckets::Redis {
                    connection,
                    script: redis::Script::new(GCRA),
                    prefix: config.redis_prefix.clone(),
                    interval_ms,
                    burst_ms: interval_ms * u64::from(per_minute.get() - 1),
                }
            }
        };
        Ok(Self {
            buckets,
            ipv6_prefix: config.ip_limit_ipv6_prefix.clamp(32, 128),
            header: config.client_ip_header.clone(),
            trusted_proxies: config.trusted_proxies.clone(),
        })
    }

    /// The client address: the gateway's header when the connection comes from a trusted
    /// proxy, else the connection's own address. `None` when neither is known (in-process
    /// tests).
    pub fn client_ip(
        &self,
        peer: Option<&ConnectInfo<SocketAddr>>,
        headers: &HeaderMap,
    ) -> Option<IpAddr> {
        // A dual-stack listener sees IPv4 peers as `::ffff:a.b.c.d`; compare them as IPv4.
        let peer = peer.map(|ConnectInfo(addr)| addr.ip().to_canonical());
        let trusted =
            peer.is_some_and(|ip| self.trusted_proxies.iter().any(|net| net.contains(&ip)));
        let from_header = || {
            let name = self.header.as_deref()?;
            // Envoy writes x-envoy-external-address only for requests it deems external; for
            // internal ones (a loopback peer, always; private ranges, under some defaults) it
            // passes the client's own copy through and marks the request x-envoy-internal,
            // which it never lets a client set on an external request. Such a copy is the
            // client's choice, not the gateway's.
            if name == ENVOY_EXTERNAL_ADDRESS && headers.contains_key("x-envoy-internal") {
                return None;
            }
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

    /// [`IpLimiter::check`] as every front end answers it: a refusal is logged, counted with
    /// the endpoint's other `outcomes` (like the per-email lock), and becomes 429
    /// `rate_limited` (HTTP) or RESOURCE_EXHAUSTED (gRPC).
    pub async fn admit(
        &self,
        ip: Option<IpAddr>,
        metrics: &Metrics,
        outcomes: Option<CountOutcome>,
    ) -> Result<(), ApiError> {
        self.check(ip).await.map_err(|wait| {
            tracing::info!(
                event = "rate_limited",
                scope = "ip",
                "client address over its limit"
            );
            if let Some(count) = outcomes {
                count(metrics, "rate_limited");
            }
            ApiError::RateLimited {
                retry_after_secs: wait.as_secs().max(1),
            }
        })
    }

    /// `Err(retry after)` when `ip` has used up its bucket. If Redis does not answer, the
    /// request is let through (and logged): the per-email throttle, in the database, still
    /// stands, and an outage of the limiter must not become an outage of login.
    pub async fn check(&self, ip: Option<IpAddr>) -> Result<(), Duration> {
        let Some(ip) = ip else {
            return Ok(());
        };
        let key = bucket_key(ip, self.ipv6_prefix);
        match &self.buckets {
            Buckets::Memory(buckets) => buckets.check(key, Instant::now()),
            Buckets::Redis {
                connection,
                script,
                prefix,
                interval_ms,
                burst_ms,
            } => {
                let mut connection = connection.clone();
                let wait: redis::RedisResult<u64> = script
                    .key(format!("{prefix}{}", key.redis_suffix()))
                    .arg(*interval_ms)
                    .arg(*burst_ms)
                    .invoke_async(&mut connection)
                    .await;
                match wait {
                    Ok(0) => Ok(()),
                    Ok(ms) => Err(Duration::from_millis(ms)),
                    Err(e) => {
                        tracing::warn!(error = %e, "rate-limit store unreachable: request let through");
                        Ok(())
                    }
                }
            }
        }
    }

    /// Forgets addresses whose buckets are full again (Redis expires its keys itself). Memory
    /// stays bounded by [`MAX_BUCKETS`] whether or not this runs.
    pub fn prune(&self) {
        if let Buckets::Memory(buckets) = &self.buckets {
            buckets.prune(Instant::now());
        }
    }
}

/// What a bucket belongs to: an IPv4 address (IPv4-mapped IPv6 ones included), or an IPv6
/// network of the configured prefix length.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) enum BucketKey {
    V4(std::net::Ipv4Addr),
    V6(Ipv6Addr, u8),
}

impl BucketKey {
    /// The Redis key's tail: `192.0.2.1`, or `2001:db8::/64`.
    fn redis_suffix(self) -> String {
        match self {
            Self::V4(ip) => ip.to_string(),
            Self::V6(net, len) => format!("{net}/{len}"),
        }
    }
}

/// The bucket `ip` counts against: itself for IPv4 and IPv4-mapped IPv6, its `/ipv6_prefix`
/// network for other IPv6 addresses (whoever holds one address usually holds the whole /64).
pub(crate) fn bucket_key(ip: IpAddr, ipv6_prefix: u8) -> BucketKey {
    match ip.to_canonical() {
        IpAddr::V4(v4) => BucketKey::V4(v4),
        IpAddr::V6(v6) => {
            let len = ipv6_prefix.min(128);
            let mask = u128::MAX.checked_shl(u32::from(128 - len)).unwrap_or(0);
            BucketKey::V6(Ipv6Addr::from(u128::from(v6) & mask), len)
        }
    }
}

/// In-memory GCRA buckets, at most `max` of them. Each is one instant, the "theoretical
/// arrival time": a bucket whose instant has passed is full, the same as no bucket at all, so
/// forgetting it changes nothing.
#[derive(Debug)]
pub(crate) struct MemoryBuckets {
    tats: Mutex<HashMap<BucketKey, Instant>>,
    interval: Duration,
    burst: Duration,
    max: usize,
}

impl MemoryBuckets {
    pub(crate) fn new(per_minute: NonZeroU32, max: usize) -> Self {
        let interval = Duration::from_secs(60) / per_minute.get();
        Self {
            tats: Mutex::new(HashMap::new()),
            interval,
            burst: interval * (per_minute.get() - 1),
            max: max.max(2),
        }
    }

    pub(crate) fn check(&self, key: BucketKey, now: Instant) -> Result<(), Duration> {
        let mut tats = self
            .tats
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let tat = match tats.get(&key) {
            Some(&tat) => tat.max(now),
            None => {
                if tats.len() >= self.max {
                    self.evict(&mut tats, now);
                }
                now
            }
        };
        let wait = tat.saturating_duration_since(now + self.burst);
        if !wait.is_zero() {
            return Err(wait);
        }
        tats.insert(key, tat + self.interval);
        Ok(())
    }

    /// Makes room: forgets the full buckets, and if that frees less than a quarter of the map,
    /// the fullest buckets down to half of it (amortised O(1) per new key; an evicted bucket
    /// comes back full, which only a flood of more than `max` networks can earn).
    fn evict(&self, tats: &mut HashMap<BucketKey, Instant>, now: Instant) {
        tats.retain(|_, tat| *tat > now);
        if tats.len() > self.max - self.max / 4 {
            let mut instants: Vec<Instant> = tats.values().copied().collect();
            let keep = self.max / 2;
            let cut_at = instants.len() - keep;
            let (_, &mut cut, _) = instants.select_nth_unstable(cut_at);
            tats.retain(|_, tat| *tat > cut);
            // Ties at the cut may leave a few more than `keep`; never more than the map held.
            if tats.len() >= self.max {
                tats.clear();
            }
        }
        tracing::debug!(buckets = tats.len(), "per-address buckets evicted");
    }

    fn prune(&self, now: Instant) {
        let mut tats = self
            .tats
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        tats.retain(|_, tat| *tat > now);
        tats.shrink_to(self.max);
    }

    #[cfg(test)]
    fn len(&self) -> usize {
        self.tats.lock().unwrap().len()
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

    #[tokio::test]
    async fn forwarded_address_counts_only_from_a_trusted_proxy() {
        let config = Config {
            trusted_proxies: vec![
                "127.0.0.1/32".parse().unwrap(),
                "10.1.0.0/16".parse().unwrap(),
            ],
            ..Config::default()
        };
        let limiter = IpLimiter::new(&config).await.unwrap();
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
        let in_range = ConnectInfo(SocketAddr::from(([10, 1, 200, 3], 40000)));
        let out_of_range = ConnectInfo(SocketAddr::from(([10, 2, 0, 1], 40000)));
        assert_eq!(
            limiter.client_ip(Some(&in_range), &headers),
            Some([203, 0, 113, 7].into()),
            "a proxy anywhere in a trusted range"
        );
        assert_eq!(
            limiter.client_ip(Some(&out_of_range), &headers),
            Some([10, 2, 0, 1].into()),
            "just outside the range"
        );
        let mut internal = headers.clone();
        internal.insert("x-envoy-internal", "true".parse().unwrap());
        assert_eq!(
            limiter.client_ip(Some(&gateway), &internal),
            Some([127, 0, 0, 1].into()),
            "on a request Envoy deems internal the header is the client's own"
        );
        let mapped: SocketAddr = "[::ffff:127.0.0.1]:40000".parse().unwrap();
        assert_eq!(
            limiter.client_ip(Some(&ConnectInfo(mapped)), &headers),
            Some([203, 0, 113, 7].into()),
            "an IPv4 proxy seen through a dual-stack listener"
        );
    }

    #[tokio::test]
    async fn a_full_bucket_refuses_with_a_retry_time() {
        let config = Config {
            ip_limit_per_minute: 2,
            ..Config::default()
        };
        let limiter = IpLimiter::new(&config).await.unwrap();
        let ip = Some(IpAddr::from([203, 0, 113, 7]));
        assert!(limiter.check(ip).await.is_ok());
        assert!(limiter.check(ip).await.is_ok());
        let wait = limiter.check(ip).await.unwrap_err();
        assert!(
            wait > Duration::ZERO && wait <= Duration::from_secs(30),
            "{wait:?}"
        );
        let other = limiter.check(Some(IpAddr::from([203, 0, 113, 8]))).await;
        assert!(other.is_ok(), "other addresses unaffected");
    }

    #[test]
    fn ipv6_addresses_share_a_bucket_per_prefix() {
        let key = |ip: &str, len| bucket_key(ip.parse().unwrap(), len);
        assert_eq!(
            key("2001:db8:1:2::1", 64),
            key("2001:db8:1:2:ffff:ffff:ffff:ffff", 64),
            "one /64"
        );
        assert_ne!(
            key("2001:db8:1:2::1", 64),
            key("2001:db8:1:3::1", 64),
            "two /64s"
        );
        assert_eq!(
            key("2001:db8:1:2::1", 48),
            key("2001:db8:1:3::1", 48),
            "one /48"
        );
        assert_ne!(
            key("2001:db8::1", 128),
            key("2001:db8::2", 128),
            "/128: per address"
        );
        assert_eq!(
            key("::ffff:203.0.113.7", 64),
            BucketKey::V4([203, 0, 113, 7].into()),
            "IPv4-mapped: the IPv4 address"
        );
        assert_ne!(
            key("203.0.113.7", 64),
            key("203.0.113.8", 64),
            "IPv4: per address"
        );
        assert_eq!(
            key("2001:db8:1:2::1", 64).redis_suffix(),
            "2001:db8:1:2::/64"
        );
    }

    #[tokio::test]
    async fn two_addresses_in_one_slash_64_share_a_bucket() {
        let config = Config {
            ip_limit_per_minute: 2,
            ..Config::default()
        };
        let limiter = IpLimiter::new(&config).await.unwrap();
        let ip = |s: &str| Some(s.parse::<IpAddr>().unwrap());
        assert!(limiter.check(ip("2001:db8:1:2::1")).await.is_ok());
        assert!(limiter.check(ip("2001:db8:1:2::2")).await.is_ok());
        assert!(
            limiter.check(ip("2001:db8:1:2:abcd::9")).await.is_err(),
            "a third address in the same /64 finds the bucket empty"
        );
        assert!(
            limiter.check(ip("2001:db8:1:3::1")).await.is_ok(),
            "the next /64 has its own bucket"
        );
    }

    #[test]
    fn a_million_new_keys_keep_the_map_bounded() {
        let max = 1_000;
        let buckets = MemoryBuckets::new(NonZeroU32::new(2).unwrap(), max);
        let now = Instant::now();
        let guesser = BucketKey::V4([198, 51, 100, 1].into());
        assert!(buckets.check(guesser, now).is_ok());
        assert!(buckets.check(guesser, now).is_ok());
        assert!(buckets.check(guesser, now).is_err(), "empty");
        for n in 0..1_000_000_u128 {
            let key = BucketKey::V6(Ipv6Addr::from((0x2001_0db8_u128 << 96) | (n << 64)), 64);
            assert!(buckets.check(key, now).is_ok(), "a new network starts full");
            assert!(
                buckets.len() <= max,
                "{} buckets after {n} keys",
                buckets.len()
            );
        }
        assert!(
            buckets.check(guesser, now).is_err(),
            "a flood of new networks does not refill an emptied bucket"
        );
        // Once its time has passed, a bucket is full and the first to go.
        let later = now + Duration::from_secs(3600);
        assert!(buckets.check(guesser, later).is_ok());
        buckets.prune(later + Duration::from_secs(3600));
        assert_eq!(
            buckets.len(),
            0,
            "every bucket is full again: all forgotten"
        );
    }
}
