//! The observations the server holds, by request, with an index by registration and one
//! by token. A fleet holds a few per device, and finding one device's observations (the
//! inventory does before each observation it sets up, a re-registration when it cancels
//! them, the operator's cancel by token) must not cost a scan of all of them: a scan it
//! was, and a registration storm of 10,000 devices, reading and observing each, spent
//! most of the driver's time comparing registration ids.

use std::collections::HashMap;

use lwm2m_objects::Path;

use crate::coap::RequestId;
use crate::registry::Transport;

/// A request or observation of one transport's endpoint.
pub(super) type Key = (Transport, RequestId);

/// An established observation.
pub(super) struct Observed {
    pub endpoint: String,
    pub registration_id: String,
    pub token: Vec<u8>,
    /// The LwM2M paths observed, as the observing call named them.
    pub paths: Vec<Path>,
    pub composite: bool,
}

#[derive(Default)]
pub(super) struct ObservedTable {
    by_key: HashMap<Key, Observed>,
    by_registration: HashMap<String, Vec<Key>>,
    by_token: HashMap<Vec<u8>, Key>,
}

impl ObservedTable {
    pub fn len(&self) -> usize {
        self.by_key.len()
    }

    /// Adds `o` under `key`, replacing what was there.
    pub fn insert(&mut self, key: Key, o: Observed) {
        self.remove(&key);
        self.by_registration
            .entry(o.registration_id.clone())
            .or_default()
            .push(key);
        self.by_token.insert(o.token.clone(), key);
        self.by_key.insert(key, o);
    }

    pub fn get(&self, key: &Key) -> Option<&Observed> {
        self.by_key.get(key)
    }

    pub fn remove(&mut self, key: &Key) -> Option<Observed> {
        let o = self.by_key.remove(key)?;
        if let Some(keys) = self.by_registration.get_mut(&o.registration_id) {
            keys.retain(|k| k != key);
            if keys.is_empty() {
                self.by_registration.remove(&o.registration_id);
            }
        }
        if self.by_token.get(&o.token) == Some(key) {
            self.by_token.remove(&o.token);
        }
        Some(o)
    }

    /// The observation with this token.
    pub fn key_of_token(&self, token: &[u8]) -> Option<Key> {
        self.by_token.get(token).copied()
    }

    /// The keys of one registration's observations.
    pub fn keys_of(&self, registration_id: &str) -> Vec<Key> {
        self.by_registration
            .get(registration_id)
            .cloned()
            .unwrap_or_default()
    }

    /// One registration's observations.
    pub fn of_registration<'a>(
        &'a self,
        registration_id: &str,
    ) -> impl Iterator<Item = &'a Observed> + 'a {
        self.by_registration
            .get(registration_id)
            .into_iter()
            .flatten()
            .filter_map(|k| self.by_key.get(k))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn obs(reg: &str, token: u8) -> Observed {
        Observed {
            endpoint: format!("ep-{reg}"),
            registration_id: reg.into(),
            token: vec![token],
            paths: Vec::new(),
            composite: false,
        }
    }

    fn key(n: u64) -> Key {
        (Transport::default(), RequestId(n))
    }

    #[test]
    fn the_indexes_follow_inserts_replacements_and_removals() {
        let mut t = ObservedTable::default();
        t.insert(key(1), obs("a", 1));
        t.insert(key(2), obs("a", 2));
        t.insert(key(3), obs("b", 3));
        assert_eq!(t.len(), 3);
        assert_eq!(t.keys_of("a"), vec![key(1), key(2)]);
        assert_eq!(t.of_registration("b").count(), 1);
        assert_eq!(t.key_of_token(&[2]), Some(key(2)));
        // Replacing key 2 with another registration's observation moves it.
        t.insert(key(2), obs("b", 4));
        assert_eq!(t.keys_of("a"), vec![key(1)]);
        assert_eq!(t.keys_of("b"), vec![key(3), key(2)]);
        assert_eq!(t.key_of_token(&[2]), None);
        assert_eq!(t.key_of_token(&[4]), Some(key(2)));
        assert!(t.remove(&key(1)).is_some());
        assert!(t.remove(&key(1)).is_none());
        assert!(t.keys_of("a").is_empty());
        assert_eq!(t.of_registration("a").count(), 0);
        assert!(
            !t.by_registration.contains_key("a"),
            "no empty lists left behind"
        );
        assert_eq!(t.len(), 2);
    }

    #[test]
    fn a_reused_token_keeps_pointing_at_the_live_observation() {
        let mut t = ObservedTable::default();
        t.insert(key(1), obs("a", 9));
        t.insert(key(2), obs("a", 9));
        assert_eq!(t.key_of_token(&[9]), Some(key(2)));
        t.remove(&key(1));
        assert_eq!(t.key_of_token(&[9]), Some(key(2)));
    }
}
