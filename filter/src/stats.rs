//! The request-path counters: one table of what is counted per request, derived from
//! [`DenyReason`] and [`AllowedBy`], and the per-worker [`Tally`] that holds the counts until
//! the next tick. Which host metric each counter is, and when the counts are handed over, is
//! `host`'s business; the fetch and signature counters are counted there too, outside a request.

use std::cell::Cell;

use crate::decide::AllowedBy;
use crate::response::DenyReason;

/// A counter bumped while a request is decided. Its discriminant indexes [`Tally`]'s cells and
/// [`Counter::ALL`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Counter {
    Allowed,
    Denied,
    DeniedMissingToken,
    DeniedInvalidToken,
    DeniedRevoked,
    DeniedInsufficientScope,
    DeniedEmailNotVerified,
    DeniedInsufficientUserAuthentication,
    DeniedNoRoute,
    DeniedKeysUnavailable,
    DeniedInternal,
    DeniedCorsPreflight,
    DeniedMethodOverride,
    JwtCacheHit,
    JwtCacheMiss,
}

impl Counter {
    /// Every counter, in discriminant order (a test holds the two together).
    pub(crate) const ALL: [Self; 15] = [
        Self::Allowed,
        Self::Denied,
        Self::DeniedMissingToken,
        Self::DeniedInvalidToken,
        Self::DeniedRevoked,
        Self::DeniedInsufficientScope,
        Self::DeniedEmailNotVerified,
        Self::DeniedInsufficientUserAuthentication,
        Self::DeniedNoRoute,
        Self::DeniedKeysUnavailable,
        Self::DeniedInternal,
        Self::DeniedCorsPreflight,
        Self::DeniedMethodOverride,
        Self::JwtCacheHit,
        Self::JwtCacheMiss,
    ];

    /// How many counters there are.
    pub(crate) const COUNT: usize = Self::ALL.len();

    /// The position of this counter in [`Counter::ALL`].
    pub(crate) fn index(self) -> usize {
        self as usize
    }

    /// The Envoy metric name (a counter), as documented in the README.
    pub(crate) fn name(self) -> &'static str {
        match self {
            Self::Allowed => "auth_filter.allowed",
            Self::Denied => "auth_filter.denied",
            Self::DeniedMissingToken => "auth_filter.denied.missing_token",
            Self::DeniedInvalidToken => "auth_filter.denied.invalid_token",
            Self::DeniedRevoked => "auth_filter.denied.revoked",
            Self::DeniedInsufficientScope => "auth_filter.denied.insufficient_scope",
            Self::DeniedEmailNotVerified => "auth_filter.denied.email_not_verified",
            Self::DeniedInsufficientUserAuthentication => {
                "auth_filter.denied.insufficient_user_authentication"
            }
            Self::DeniedNoRoute => "auth_filter.denied.no_route",
            Self::DeniedKeysUnavailable => "auth_filter.denied.keys_unavailable",
            Self::DeniedInternal => "auth_filter.denied.internal",
            Self::DeniedCorsPreflight => "auth_filter.denied.cors_preflight",
            Self::DeniedMethodOverride => "auth_filter.denied.method_override",
            Self::JwtCacheHit => "auth_filter.jwt_cache_hit",
            Self::JwtCacheMiss => "auth_filter.jwt_cache_miss",
        }
    }

    /// The counter of a denial's reason (besides [`Counter::Denied`]). An unknown `kid` is
    /// answered exactly like an invalid token, and is counted with them.
    pub(crate) fn of(reason: &DenyReason) -> Self {
        match reason {
            DenyReason::MissingToken => Self::DeniedMissingToken,
            DenyReason::InvalidToken(_) | DenyReason::UnknownKey => Self::DeniedInvalidToken,
            DenyReason::Revoked => Self::DeniedRevoked,
            DenyReason::InsufficientScope(_) => Self::DeniedInsufficientScope,
            DenyReason::EmailNotVerified => Self::DeniedEmailNotVerified,
            DenyReason::InsufficientUserAuthentication(_) => {
                Self::DeniedInsufficientUserAuthentication
            }
            DenyReason::NoRoute => Self::DeniedNoRoute,
            DenyReason::KeysUnavailable => Self::DeniedKeysUnavailable,
            DenyReason::Internal => Self::DeniedInternal,
            DenyReason::CorsPreflight => Self::DeniedCorsPreflight,
            DenyReason::MethodOverride => Self::DeniedMethodOverride,
        }
    }
}

/// The counters `host` counts outside a request: key and feed fetches, signature checks.
const HOST_COUNTERS: [&str; 8] = [
    "auth_filter.jwks_fetch_success",
    "auth_filter.jwks_fetch_failed",
    "auth_filter.revocations_fetch_success",
    "auth_filter.revocations_fetch_failed",
    "auth_filter.revocations_not_modified",
    "auth_filter.signature.host",
    "auth_filter.signature.wasm",
    "auth_filter.signature.host_failed",
];

/// Every counter the filter defines, by the name it gives Envoy. Envoy lists them as
/// `wasmcustom.<name>`, and its Prometheus endpoint as `<name>` with each `.` as `_` (no
/// `envoy_` prefix, no `_total`). `cargo xtask test` checks the dashboard and alert rules
/// against this list; a host test checks it against what the filter defines.
pub fn counter_names() -> impl Iterator<Item = &'static str> {
    Counter::ALL
        .into_iter()
        .map(Counter::name)
        .chain(HOST_COUNTERS)
}

/// Request-path counts, kept per worker and handed to Envoy on the next tick: one host call
/// per counter per request costs more than a cached token check.
#[derive(Debug, Default)]
pub(crate) struct Tally([Cell<u64>; Counter::COUNT]);

impl Tally {
    fn bump(&self, counter: Counter) {
        if let Some(cell) = self.0.get(counter.index()) {
            cell.set(cell.get().saturating_add(1));
        }
    }

    /// Counts an allowed request, and whether the cache answered for its token.
    pub(crate) fn allowed(&self, by: AllowedBy) {
        self.bump(Counter::Allowed);
        match by {
            AllowedBy::Token { cache_hit: true } => self.bump(Counter::JwtCacheHit),
            AllowedBy::Token { cache_hit: false } => self.bump(Counter::JwtCacheMiss),
            AllowedBy::Public => {}
        }
    }

    /// Counts a denied request under its reason's counter.
    pub(crate) fn denied(&self, reason: &DenyReason) {
        self.bump(Counter::Denied);
        self.bump(Counter::of(reason));
    }

    /// Hands each counter's count since the last call to `add`, skipping zeros, and starts over.
    pub(crate) fn drain(&self, mut add: impl FnMut(Counter, u64)) {
        for (counter, cell) in Counter::ALL.into_iter().zip(&self.0) {
            let count = cell.take();
            if count > 0 {
                add(counter, count);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashSet;

    use super::*;

    /// One value of every reason. The match has no wildcard, so a new reason fails to compile
    /// here until it is added to the list.
    fn every_reason() -> Vec<DenyReason> {
        let all = vec![
            DenyReason::MissingToken,
            DenyReason::InvalidToken("bad signature".to_owned()),
            DenyReason::UnknownKey,
            DenyReason::Revoked,
            DenyReason::InsufficientScope("needs admin".to_owned()),
            DenyReason::EmailNotVerified,
            DenyReason::InsufficientUserAuthentication(vec!["aal2".to_owned()]),
            DenyReason::NoRoute,
            DenyReason::CorsPreflight,
            DenyReason::MethodOverride,
            DenyReason::KeysUnavailable,
            DenyReason::Internal,
        ];
        let listed = |reason: &DenyReason| match reason {
            DenyReason::MissingToken
            | DenyReason::InvalidToken(_)
            | DenyReason::UnknownKey
            | DenyReason::Revoked
            | DenyReason::InsufficientScope(_)
            | DenyReason::EmailNotVerified
            | DenyReason::InsufficientUserAuthentication(_)
            | DenyReason::NoRoute
            | DenyReason::CorsPreflight
            | DenyReason::MethodOverride
            | DenyReason::KeysUnavailable
            | DenyReason::Internal => true,
        };
        assert!(all.iter().all(listed));
        all
    }

    #[test]
    fn all_lists_every_counter_at_its_own_index() {
        for (index, counter) in Counter::ALL.into_iter().enumerate() {
            assert_eq!(counter.index(), index, "{counter:?}");
        }
    }

    #[test]
    fn every_counter_has_a_unique_metric_name() {
        let names: HashSet<&str> = Counter::ALL.into_iter().map(Counter::name).collect();
        assert_eq!(names.len(), Counter::COUNT);
        assert!(names.iter().all(|n| n.starts_with("auth_filter.")));
    }

    #[test]
    fn every_deny_reason_maps_to_a_distinct_denial_counter() {
        let reasons = every_reason();
        let mut by_counter: Vec<(Counter, &DenyReason)> = Vec::new();
        for reason in &reasons {
            let counter = Counter::of(reason);
            assert!(
                counter.name().starts_with("auth_filter.denied."),
                "{reason:?} counts as {counter:?}, not a denial counter"
            );
            // An unknown `kid` is told to the client as an invalid token, and counted so.
            let shares = by_counter
                .iter()
                .find(|(c, _)| *c == counter)
                .map(|(_, r)| *r);
            match shares {
                None => by_counter.push((counter, reason)),
                Some(DenyReason::InvalidToken(_)) if *reason == DenyReason::UnknownKey => {}
                Some(other) => panic!("{reason:?} and {other:?} share {counter:?}"),
            }
        }
        let denial_counters = Counter::ALL
            .iter()
            .filter(|c| c.name().starts_with("auth_filter.denied."))
            .count();
        assert_eq!(
            by_counter.len(),
            denial_counters,
            "a denial counter no reason uses"
        );
    }

    #[test]
    fn a_tally_drains_what_was_counted_once() {
        let tally = Tally::default();
        tally.allowed(AllowedBy::Token { cache_hit: true });
        tally.allowed(AllowedBy::Token { cache_hit: true });
        tally.allowed(AllowedBy::Public);
        tally.denied(&DenyReason::UnknownKey);
        tally.denied(&DenyReason::MethodOverride);

        let mut drained = Vec::new();
        tally.drain(|counter, count| drained.push((counter, count)));
        let mut again = Vec::new();
        tally.drain(|counter, count| again.push((counter, count)));

        assert_eq!(
            drained,
            [
                (Counter::Allowed, 3),
                (Counter::Denied, 2),
                (Counter::DeniedInvalidToken, 1),
                (Counter::DeniedMethodOverride, 1),
                (Counter::JwtCacheHit, 2),
            ]
        );
        assert!(again.is_empty(), "counts are handed over once: {again:?}");
    }
}
