//! A document polled over HTTP and shared between Envoy's worker VMs: the protocol, as pure code
//! over a [`SharedData`] store. The key set ([`crate::keys`]) and the revocation feed
//! ([`crate::revocations`]) are two [`Document`]s polled this way.
//!
//! Envoy runs one VM per worker thread with no notification between them, so the workers share
//! three values per document in proxy-wasm shared data:
//!
//! - the document itself, as `<version>\n<body>`: the last good body, written with
//!   compare-and-swap. The version's generation grows by one each time the body changes, and
//!   its low bits name the worker that stored it, so two workers that store different bodies
//!   at once (a write to an absent key cannot be compare-and-swapped) never share a version;
//! - the [`Stamp`](records::Stamp) `{version, fetched_at, etag}`: a few bytes saying which
//!   version is shared, when it was last fetched or confirmed (304), and its `ETag`. Every
//!   worker reads the stamp on every tick and reads (and re-parses) the document only when the
//!   version is new. A revocation feed can reach megabytes; reading it on every tick of every
//!   worker would not do, and the cheap stamp is what lets the tick be short, so that a
//!   document one worker fetched is in use on all workers within a tick;
//! - the [`Lease`](records::Lease) `{holder, expires_at, failures, next_attempt_at}`: which
//!   worker is fetching (taken and released with compare-and-swap), and when the next fetch is
//!   due, so that the backoff after failures is shared by every worker.
//!
//! The document is written before its stamp, so a stamp never names a version that cannot be
//! read. A worker reads the document again whenever the stamp changes and keeps the version the
//! document itself carries, so all workers end up with the document that stayed in shared data
//! even when stamps land out of order. An answer that arrives after another worker stored a
//! different document than the one shared when the fetch started is dropped, never stored over
//! it: it may be the older of the two. The lease keeps the workers from all fetching at once;
//! with those two rules a duplicate fetch is harmless.
//!
//! [`records`] holds those three records and the pure rules that move them (encoding, version
//! numbering, the lease and its backoff); [`poller`] holds one worker's side of the protocol
//! ([`Poller`]) and the sorting of a fetch's answer ([`poller::classify`]). This module neither
//! talks to the host nor sends requests: `host.rs` implements [`SharedData`], dispatches the
//! call a [`Poller`] asks for and hands back the answer.

mod poller;
mod records;

pub(crate) use poller::{is_fresh, Document, FetchResult, Fetched, Poller, Refreshed, Timing};
// Outside this module only tests sort an answer without a `Poller`.
#[cfg(test)]
pub(crate) use poller::classify;
pub(crate) use records::{allocate_worker_id, backoff_secs, hurry, version_label, SharedNames};

/// Attempts at a compare-and-swap write before giving up until the next tick.
const CAS_ATTEMPTS: usize = 4;

/// Proxy-wasm shared data: a key-value store shared by the VMs of one `vm_id`, with a
/// compare-and-swap token per value.
pub(crate) trait SharedData {
    /// The value under `key` (`None` if absent) and its CAS token; `None` if the host fails.
    fn get(&self, key: &str) -> Option<(Option<Vec<u8>>, Option<u32>)>;

    /// Stores `value` under `key` if its CAS token is still `cas` (`None`: unconditionally).
    fn set(&self, key: &str, value: &[u8], cas: Option<u32>) -> Result<(), SetError>;
}

/// Why a [`SharedData::set`] failed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum SetError {
    /// Another VM wrote the value since it was read.
    CasMismatch,
    /// The host refused for another reason.
    Failed,
}

impl std::fmt::Display for SetError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::CasMismatch => "another worker wrote the value first",
            Self::Failed => "the host refused the write",
        })
    }
}

impl std::error::Error for SetError {}

#[cfg(test)]
pub(crate) mod tests {
    use std::cell::RefCell;
    use std::collections::HashMap;

    use super::records::{decode, decode_document, Lease, SharedNames, Stamp};
    use super::{SetError, SharedData};

    /// Shared data in memory, with Envoy's compare-and-swap rules: a CAS token of `None` (0 on
    /// the wire) writes unconditionally, any other must match the value's current token.
    #[derive(Debug, Default)]
    pub(crate) struct MockShared {
        values: RefCell<HashMap<String, (Vec<u8>, u32)>>,
        next_cas: RefCell<u32>,
        /// Writes to this key fail, as when Envoy cannot store a value.
        pub(crate) failing: RefCell<Option<String>>,
    }

    impl SharedData for MockShared {
        fn get(&self, key: &str) -> Option<(Option<Vec<u8>>, Option<u32>)> {
            Some(match self.values.borrow().get(key) {
                Some((value, cas)) => (Some(value.clone()), Some(*cas)),
                None => (None, None),
            })
        }

        fn set(&self, key: &str, value: &[u8], cas: Option<u32>) -> Result<(), SetError> {
            if self.failing.borrow().as_deref() == Some(key) {
                return Err(SetError::Failed);
            }
            let mut values = self.values.borrow_mut();
            if let (Some(expected), Some((_, current))) = (cas, values.get(key)) {
                if expected != *current {
                    return Err(SetError::CasMismatch);
                }
            }
            let mut next = self.next_cas.borrow_mut();
            *next += 1;
            values.insert(key.to_owned(), (value.to_vec(), *next));
            Ok(())
        }
    }

    impl MockShared {
        pub(crate) fn lease(&self, names: &SharedNames) -> Option<Lease> {
            decode(self.get(&names.lease)?.0.as_deref())
        }

        /// The shared stamp, with the document body.
        pub(crate) fn record(&self, names: &SharedNames) -> Option<(Stamp, String)> {
            let stamp = decode(self.get(&names.stamp)?.0.as_deref())?;
            let document = self.get(&names.document)?.0?;
            let (_, body) = decode_document(Some(&document))?;
            Some((stamp, body.to_owned()))
        }
    }
}
