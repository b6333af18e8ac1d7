//! The keys a decoder may verify with, looked up by `kid`. The set is plain data: it never
//! fetches, and an unknown `kid` is an error, not a reason to look elsewhere (RFC 8725 §3.10).

use std::collections::BTreeMap;

use crate::error::{ErrorKind, Result};
use crate::key::Key;

/// Keys by `kid`, at most one per `kid`. Empty by default.
#[derive(Clone, Debug, Default)]
pub struct KeySet {
    keys: BTreeMap<String, Key>,
}

impl KeySet {
    /// Adds `key`, replacing and returning any key with the same `kid`.
    pub fn insert(&mut self, key: Key) -> Option<Key> {
        self.keys.insert(key.kid().to_owned(), key)
    }

    /// The key whose `kid` is `kid`, compared byte for byte.
    pub fn get(&self, kid: &str) -> Option<&Key> {
        self.keys.get(kid)
    }

    /// Number of keys.
    pub fn len(&self) -> usize {
        self.keys.len()
    }

    /// Whether the set holds no key.
    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }

    /// The key ids, in ascending byte order.
    pub fn kids(&self) -> impl Iterator<Item = &str> {
        self.keys.keys().map(String::as_str)
    }

    /// The keys, in ascending `kid` order.
    pub fn iter(&self) -> impl Iterator<Item = &Key> {
        self.keys.values()
    }

    /// The key for a header's `kid`; without one, the only key if there is exactly one.
    pub(crate) fn select(&self, kid: Option<&str>) -> Result<&Key> {
        let key = match kid {
            Some(kid) => self.get(kid).ok_or(ErrorKind::UnknownKey)?,
            None if self.len() == 1 => self.iter().next().ok_or(ErrorKind::MissingKeyId)?,
            None => return Err(ErrorKind::MissingKeyId.into()),
        };
        Ok(key)
    }
}

impl FromIterator<Key> for KeySet {
    /// Collects keys; a later key replaces an earlier one with the same `kid`.
    fn from_iter<I: IntoIterator<Item = Key>>(iter: I) -> Self {
        let mut set = Self::default();
        set.extend(iter);
        set
    }
}

impl Extend<Key> for KeySet {
    fn extend<I: IntoIterator<Item = Key>>(&mut self, iter: I) {
        for key in iter {
            self.insert(key);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(kid: &str, fill: u8) -> Key {
        Key::hs256(kid, &[fill; 32]).unwrap()
    }

    #[test]
    fn insert_replaces_same_kid() {
        let mut set = KeySet::default();
        assert!(set.is_empty());
        assert!(set.insert(key("a", 1)).is_none());
        let replaced = set.insert(key("a", 2)).unwrap();
        assert_eq!(replaced.secret(), Some([1; 32].as_slice()));
        assert_eq!(set.len(), 1);
        assert_eq!(set.get("a").unwrap().secret(), Some([2; 32].as_slice()));
    }

    #[test]
    fn collects_and_lists_kids_in_order() {
        let set: KeySet = [key("b", 1), key("a", 2), key("b", 3)]
            .into_iter()
            .collect();
        assert_eq!(set.kids().collect::<Vec<_>>(), ["a", "b"]);
        assert_eq!(set.iter().map(Key::kid).collect::<Vec<_>>(), ["a", "b"]);
        assert_eq!(
            set.get("b").unwrap().secret(),
            Some([3; 32].as_slice()),
            "the later key wins"
        );
        assert!(set.get("c").is_none());
    }

    #[test]
    fn select_picks_by_kid_or_the_only_key() {
        let one: KeySet = [key("a", 1)].into_iter().collect();
        let two: KeySet = [key("a", 1), key("b", 2)].into_iter().collect();
        assert_eq!(one.select(None).unwrap().kid(), "a");
        assert_eq!(two.select(Some("b")).unwrap().kid(), "b");
        let cases = [
            (&two, None, "no kid and two keys is ambiguous"),
            (&KeySet::default(), None, "no kid and no key"),
        ];
        for (set, kid, reason) in cases {
            let err = set.select(kid).unwrap_err();
            assert!(matches!(err.kind(), ErrorKind::MissingKeyId), "{reason}");
        }
        let err = one.select(Some("A")).unwrap_err();
        assert!(
            matches!(err.kind(), ErrorKind::UnknownKey),
            "kid is case-sensitive"
        );
    }
}
