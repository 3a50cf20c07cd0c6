//! The devices' DTLS credentials: kept in the store, and in memory for the handshake,
//! which looks a key up by PSK identity on the driver's thread and must not wait for a disk.
//!
//! An endpoint with credentials speaks only over DTLS, as the identity its credentials
//! name: a plain-CoAP Register of it is refused, and so is a DTLS peer that
//! authenticated as another endpoint's identity (see the driver's checks).

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex, RwLock};

use crate::dtls::{PeerIdentity, PskLookup};
use crate::store::{Store, StoreError, StoredSecurity};

#[derive(Default)]
struct Cache {
    /// PSK identity to (endpoint, key).
    by_identity: HashMap<Vec<u8>, (String, Vec<u8>)>,
    /// Endpoints that have credentials of any kind.
    secured: HashSet<String>,
    /// Endpoints that may authenticate with a certificate.
    x509: HashSet<String>,
}

impl Cache {
    fn insert(&mut self, s: &StoredSecurity) {
        self.secured.insert(s.endpoint.clone());
        if s.x509 {
            self.x509.insert(s.endpoint.clone());
        }
        if let (Some(id), Some(key)) = (&s.psk_identity, &s.psk_key) {
            self.by_identity
                .insert(id.clone(), (s.endpoint.clone(), key.clone()));
        }
    }

    fn remove(&mut self, s: &StoredSecurity) {
        self.secured.remove(&s.endpoint);
        self.x509.remove(&s.endpoint);
        if let Some(id) = &s.psk_identity {
            self.by_identity.remove(id);
        }
    }
}

/// Credentials by endpoint and by PSK identity.
pub struct Credentials {
    store: Arc<dyn Store>,
    cache: RwLock<Cache>,
    /// Serialises writers, so the cache follows the store in the same order.
    writer: Mutex<()>,
}

impl std::fmt::Debug for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Credentials").finish_non_exhaustive()
    }
}

impl Credentials {
    /// Loads every endpoint's credentials from the store.
    pub fn load(store: Arc<dyn Store>) -> Result<Credentials, StoreError> {
        let mut cache = Cache::default();
        for s in store.list_security()? {
            cache.insert(&s);
        }
        Ok(Credentials {
            store,
            cache: RwLock::new(cache),
            writer: Mutex::new(()),
        })
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, Cache> {
        self.cache.read().unwrap_or_else(|p| p.into_inner())
    }

    fn write_cache(&self) -> std::sync::RwLockWriteGuard<'_, Cache> {
        self.cache.write().unwrap_or_else(|p| p.into_inner())
    }

    /// Sets an endpoint's credentials (persisted first); returns what it had.
    pub fn put(&self, s: &StoredSecurity) -> Result<Option<StoredSecurity>, StoreError> {
        let _w = self.writer.lock().unwrap_or_else(|p| p.into_inner());
        let old = self.store.put_security(s)?;
        let mut cache = self.write_cache();
        if let Some(o) = &old {
            cache.remove(o);
        }
        cache.insert(s);
        Ok(old)
    }

    /// Sets many endpoints' credentials at once: all, or none.
    pub fn put_all(&self, all: &[StoredSecurity]) -> Result<(), StoreError> {
        let _w = self.writer.lock().unwrap_or_else(|p| p.into_inner());
        let olds = self.store.put_securities(all)?;
        let mut cache = self.write_cache();
        for (s, old) in all.iter().zip(&olds) {
            if let Some(o) = old {
                cache.remove(o);
            }
            cache.insert(s);
        }
        Ok(())
    }

    pub fn delete(&self, endpoint: &str) -> Result<Option<StoredSecurity>, StoreError> {
        let _w = self.writer.lock().unwrap_or_else(|p| p.into_inner());
        let old = self.store.delete_security(endpoint)?;
        if let Some(o) = &old {
            self.write_cache().remove(o);
        }
        Ok(old)
    }

    pub fn get(&self, endpoint: &str) -> Result<Option<StoredSecurity>, StoreError> {
        self.store.get_security(endpoint)
    }

    pub fn list(&self) -> Result<Vec<StoredSecurity>, StoreError> {
        self.store.list_security()
    }

    /// The endpoint an authenticated DTLS peer may speak for.
    pub fn endpoint_of(&self, identity: &PeerIdentity) -> Option<String> {
        match identity {
            PeerIdentity::Psk(id) => self.read().by_identity.get(id).map(|(ep, _)| ep.clone()),
            // A certificate the trust store vouches for names its endpoint, unless that
            // endpoint's credentials say it uses a PSK only.
            PeerIdentity::Certificate { common_name } => {
                let cache = self.read();
                (!cache.secured.contains(common_name) || cache.x509.contains(common_name))
                    .then(|| common_name.clone())
            }
            PeerIdentity::Anonymous => None,
        }
    }

    /// Whether the endpoint has credentials, and so must use DTLS.
    pub fn is_secured(&self, endpoint: &str) -> bool {
        self.read().secured.contains(endpoint)
    }
}

impl PskLookup for Credentials {
    fn psk(&self, identity: &[u8]) -> Option<Vec<u8>> {
        self.read()
            .by_identity
            .get(identity)
            .map(|(_, k)| k.clone())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::MemoryStore;

    fn sec(ep: &str, id: &str, key: &[u8]) -> StoredSecurity {
        StoredSecurity {
            endpoint: ep.into(),
            psk_identity: Some(id.as_bytes().to_vec()),
            psk_key: Some(key.to_vec()),
            x509: false,
            updated_at_unix_ms: 0,
        }
    }

    #[test]
    fn a_certificate_speaks_for_its_cn_unless_that_endpoint_uses_a_psk_only() {
        let store: Arc<dyn Store> = Arc::new(MemoryStore::default());
        let c = Credentials::load(store).expect("load");
        let cert = |cn: &str| PeerIdentity::Certificate {
            common_name: cn.into(),
        };
        assert_eq!(c.endpoint_of(&cert("free")).as_deref(), Some("free"));
        c.put(&sec("psk-only", "id", b"k")).expect("put");
        assert_eq!(c.endpoint_of(&cert("psk-only")), None);
        c.put(&StoredSecurity {
            x509: true,
            ..sec("psk-only", "id", b"k")
        })
        .expect("put");
        assert_eq!(
            c.endpoint_of(&cert("psk-only")).as_deref(),
            Some("psk-only")
        );
        assert_eq!(c.endpoint_of(&PeerIdentity::Anonymous), None);
    }

    #[test]
    fn the_cache_follows_the_store() {
        let store: Arc<dyn Store> = Arc::new(MemoryStore::default());
        store.put_security(&sec("a", "id-a", b"k1")).expect("put");
        let c = Credentials::load(store.clone()).expect("load");
        assert_eq!(c.psk(b"id-a"), Some(b"k1".to_vec()));
        assert_eq!(
            c.endpoint_of(&PeerIdentity::Psk(b"id-a".to_vec()))
                .as_deref(),
            Some("a")
        );
        assert!(c.is_secured("a") && !c.is_secured("b"));
        // A new identity replaces the old one at once.
        c.put(&sec("a", "id-a2", b"k2")).expect("put");
        assert_eq!(c.psk(b"id-a"), None);
        assert_eq!(c.psk(b"id-a2"), Some(b"k2".to_vec()));
        // A refused write changes neither store nor cache.
        assert!(c.put(&sec("b", "id-a2", b"k3")).is_err());
        assert!(!c.is_secured("b"));
        assert_eq!(c.psk(b"id-a2"), Some(b"k2".to_vec()));
        c.delete("a").expect("delete");
        assert_eq!(c.psk(b"id-a2"), None);
        assert!(!c.is_secured("a"));
        assert_eq!(store.list_security().expect("list"), vec![]);
    }
}
