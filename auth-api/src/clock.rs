//! The service's notion of "now", in Unix seconds.
//!
//! Production reads the system clock. Tests freeze it ([`Clock::frozen`]), so that a second
//! ticking over mid-test cannot lift a lock or end a window early, and move it forward to cross
//! expiry and grace windows without sleeping; nothing outside tests calls either.

use std::{
    sync::{
        atomic::{AtomicI64, Ordering},
        Arc,
    },
    time::{Duration, SystemTime, UNIX_EPOCH},
};

/// System time (or, in tests, a frozen time) plus an offset that only tests change; cheap to
/// clone, clones share both.
#[derive(Debug, Clone, Default)]
pub struct Clock {
    offset_secs: Arc<AtomicI64>,
    /// Zero: the system time; else the frozen time.
    frozen_at: Arc<AtomicI64>,
}

impl Clock {
    /// A clock that stays at the present second until [`Clock::advance`] moves it.
    pub fn frozen() -> Self {
        let clock = Self::default();
        clock.frozen_at.store(system_now(), Ordering::Relaxed);
        clock
    }

    /// Now, in whole Unix seconds.
    pub fn now(&self) -> i64 {
        let base = match self.frozen_at.load(Ordering::Relaxed) {
            0 => system_now(),
            frozen => frozen,
        };
        base + self.offset_secs.load(Ordering::Relaxed)
    }

    /// Moves this clock (and its clones) forward.
    pub fn advance(&self, by: Duration) {
        let secs = i64::try_from(by.as_secs()).unwrap_or(i64::MAX);
        self.offset_secs.fetch_add(secs, Ordering::Relaxed);
    }
}

fn system_now() -> i64 {
    let system = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    i64::try_from(system).unwrap_or(i64::MAX)
}

/// A duration as whole seconds for arithmetic with Unix times.
pub fn secs(duration: Duration) -> i64 {
    i64::try_from(duration.as_secs()).unwrap_or(i64::MAX)
}
