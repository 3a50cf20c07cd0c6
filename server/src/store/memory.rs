//! The [`Store`] kept in process memory, for unit tests of the modules above the store. Same
//! semantics and limits as the redb store (checked by the shared conformance suite); nothing
//! survives the process.

use std::collections::BTreeMap;
use std::sync::{Mutex, MutexGuard};

use super::{
    check_key, check_observation, check_registration, check_security, check_token, QueuedRequest,
    Store, StoreError, StoreLimits, StoredObservation, StoredRefresh, StoredRegistration,
    StoredSecurity,
};

#[derive(Default)]
struct Inner {
    registrations: BTreeMap<String, StoredRegistration>,
    observations: BTreeMap<Vec<u8>, StoredObservation>,
    queue: BTreeMap<(String, u64), QueuedRequest>,
    next_seq: u64,
    security: BTreeMap<String, StoredSecurity>,
    by_psk_identity: BTreeMap<Vec<u8>, String>,
}

impl Inner {
    fn remove_registration(&mut self, id: &str) -> Option<StoredRegistration> {
        let reg = self.registrations.remove(id)?;
        self.remove_observations_of(id);
        Some(reg)
    }

    fn remove_observations_of(&mut self, id: &str) -> Vec<StoredObservation> {
        let tokens: Vec<Vec<u8>> = self
            .observations
            .iter()
            .filter(|(_, o)| o.registration_id == id)
            .map(|(t, _)| t.clone())
            .collect();
        tokens
            .iter()
            .filter_map(|t| self.observations.remove(t))
            .collect()
    }

    fn put_security(&mut self, sec: &StoredSecurity) -> Result<Option<StoredSecurity>, StoreError> {
        if let Some(id) = &sec.psk_identity {
            if let Some(holder) = self.by_psk_identity.get(id).filter(|h| **h != sec.endpoint) {
                return Err(StoreError::IdentityTaken(holder.clone()));
            }
        }
        let old = self.security.insert(sec.endpoint.clone(), sec.clone());
        if let Some(id) = old.as_ref().and_then(|o| o.psk_identity.clone()) {
            self.by_psk_identity.remove(&id);
        }
        if let Some(id) = &sec.psk_identity {
            self.by_psk_identity
                .insert(id.clone(), sec.endpoint.clone());
        }
        Ok(old)
    }

    fn queue_keys(&self, endpoint: &str) -> Vec<(String, u64)> {
        self.queue
            .range((endpoint.to_owned(), 0)..=(endpoint.to_owned(), u64::MAX))
            .map(|(k, _)| k.clone())
            .collect()
    }
}

pub struct MemoryStore {
    inner: Mutex<Inner>,
    limits: StoreLimits,
}

impl Default for MemoryStore {
    fn default() -> Self {
        Self::new()
    }
}

impl MemoryStore {
    pub fn new() -> Self {
        Self::with_limits(StoreLimits::default())
    }

    pub fn with_limits(limits: StoreLimits) -> Self {
        MemoryStore {
            inner: Mutex::new(Inner::default()),
            limits,
        }
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        // A panic while holding the lock cannot leave a half-applied change: every method
        // validates before it mutates. So a poisoned lock is still consistent.
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }
}

impl Store for MemoryStore {
    fn put_registration(&self, reg: &StoredRegistration) -> Result<(), StoreError> {
        check_registration(reg)?;
        let mut g = self.lock();
        let known = g.registrations.contains_key(&reg.id);
        if !known && g.registrations.len() as u64 >= self.limits.max_registrations {
            return Err(StoreError::Full {
                table: "registrations",
                limit: self.limits.max_registrations,
            });
        }
        g.registrations.insert(reg.id.clone(), reg.clone());
        Ok(())
    }

    fn replace_registration(
        &self,
        reg: &StoredRegistration,
        previous: Option<&str>,
    ) -> Result<Option<StoredRegistration>, StoreError> {
        check_registration(reg)?;
        let mut g = self.lock();
        let replaced = previous.is_some_and(|p| g.registrations.contains_key(p))
            || g.registrations.contains_key(&reg.id);
        if !replaced && g.registrations.len() as u64 >= self.limits.max_registrations {
            return Err(StoreError::Full {
                table: "registrations",
                limit: self.limits.max_registrations,
            });
        }
        let old = previous.and_then(|id| g.remove_registration(id));
        // Ids are unique: a record with this id goes too.
        let same_id = g.remove_registration(&reg.id);
        g.registrations.insert(reg.id.clone(), reg.clone());
        Ok(old.or(same_id))
    }

    fn refresh_registration(&self, refresh: &StoredRefresh) -> Result<(), StoreError> {
        check_key("registration id", &refresh.id)?;
        let mut g = self.lock();
        let reg = g
            .registrations
            .get_mut(&refresh.id)
            .ok_or_else(|| StoreError::UnknownRegistration(refresh.id.clone()))?;
        reg.apply(refresh);
        Ok(())
    }

    fn get_registration(&self, id: &str) -> Result<Option<StoredRegistration>, StoreError> {
        Ok(self.lock().registrations.get(id).cloned())
    }

    fn list_registrations(&self) -> Result<Vec<StoredRegistration>, StoreError> {
        Ok(self.lock().registrations.values().cloned().collect())
    }

    fn delete_registration(&self, id: &str) -> Result<Option<StoredRegistration>, StoreError> {
        Ok(self.lock().remove_registration(id))
    }

    fn put_observation(&self, obs: &StoredObservation) -> Result<(), StoreError> {
        check_observation(obs)?;
        let mut g = self.lock();
        if !g.registrations.contains_key(&obs.registration_id) {
            return Err(StoreError::UnknownRegistration(obs.registration_id.clone()));
        }
        let exists = g.observations.contains_key(&obs.token);
        if !exists && g.observations.len() as u64 >= self.limits.max_observations {
            return Err(StoreError::Full {
                table: "observations",
                limit: self.limits.max_observations,
            });
        }
        g.observations.insert(obs.token.clone(), obs.clone());
        Ok(())
    }

    fn get_observation(&self, token: &[u8]) -> Result<Option<StoredObservation>, StoreError> {
        check_token(token)?;
        Ok(self.lock().observations.get(token).cloned())
    }

    fn delete_observation(&self, token: &[u8]) -> Result<Option<StoredObservation>, StoreError> {
        check_token(token)?;
        Ok(self.lock().observations.remove(token))
    }

    fn list_observations(
        &self,
        registration_id: &str,
    ) -> Result<Vec<StoredObservation>, StoreError> {
        Ok(self
            .lock()
            .observations
            .values()
            .filter(|o| o.registration_id == registration_id)
            .cloned()
            .collect())
    }

    fn list_all_observations(&self) -> Result<Vec<StoredObservation>, StoreError> {
        Ok(self.lock().observations.values().cloned().collect())
    }

    fn delete_observations_of(
        &self,
        registration_id: &str,
    ) -> Result<Vec<StoredObservation>, StoreError> {
        Ok(self.lock().remove_observations_of(registration_id))
    }

    fn enqueue(&self, req: &QueuedRequest) -> Result<u64, StoreError> {
        check_key("endpoint", &req.endpoint)?;
        let mut g = self.lock();
        let len = g.queue_keys(&req.endpoint).len() as u64;
        if len >= self.limits.max_queued_per_endpoint {
            return Err(StoreError::QueueFull {
                endpoint: req.endpoint.clone(),
                limit: self.limits.max_queued_per_endpoint,
            });
        }
        let seq = g.next_seq;
        g.next_seq = seq.checked_add(1).ok_or(StoreError::Full {
            table: "queue",
            limit: u64::MAX,
        })?;
        let mut stored = req.clone();
        stored.seq = seq;
        g.queue.insert((req.endpoint.clone(), seq), stored);
        Ok(seq)
    }

    fn peek_queue(&self, endpoint: &str, max: usize) -> Result<Vec<QueuedRequest>, StoreError> {
        let g = self.lock();
        Ok(g.queue
            .range((endpoint.to_owned(), 0)..=(endpoint.to_owned(), u64::MAX))
            .take(max)
            .map(|(_, q)| q.clone())
            .collect())
    }

    fn pop_queue(&self, endpoint: &str) -> Result<Option<QueuedRequest>, StoreError> {
        let mut g = self.lock();
        let first = g.queue_keys(endpoint).into_iter().next();
        Ok(first.and_then(|k| g.queue.remove(&k)))
    }

    fn remove_queued(&self, endpoint: &str, seq: u64) -> Result<Option<QueuedRequest>, StoreError> {
        Ok(self.lock().queue.remove(&(endpoint.to_owned(), seq)))
    }

    fn queue_len(&self, endpoint: &str) -> Result<u64, StoreError> {
        Ok(self.lock().queue_keys(endpoint).len() as u64)
    }

    fn clear_queue(&self, endpoint: &str) -> Result<u64, StoreError> {
        let mut g = self.lock();
        let keys = g.queue_keys(endpoint);
        for k in &keys {
            g.queue.remove(k);
        }
        Ok(keys.len() as u64)
    }

    fn drop_expired_queued(&self, now_unix_ms: u64) -> Result<Vec<QueuedRequest>, StoreError> {
        let mut g = self.lock();
        let keys: Vec<(String, u64)> = g
            .queue
            .iter()
            .filter(|(_, q)| q.is_expired(now_unix_ms))
            .map(|(k, _)| k.clone())
            .collect();
        Ok(keys.iter().filter_map(|k| g.queue.remove(k)).collect())
    }

    fn put_security(&self, sec: &StoredSecurity) -> Result<Option<StoredSecurity>, StoreError> {
        check_security(sec)?;
        self.lock().put_security(sec)
    }

    fn put_securities(
        &self,
        all: &[StoredSecurity],
    ) -> Result<Vec<Option<StoredSecurity>>, StoreError> {
        all.iter().try_for_each(check_security)?;
        let mut g = self.lock();
        // Applied to a copy first, so that a refusal half way leaves nothing behind.
        let mut next = Inner {
            security: g.security.clone(),
            by_psk_identity: g.by_psk_identity.clone(),
            ..Inner::default()
        };
        let old = all
            .iter()
            .map(|s| next.put_security(s))
            .collect::<Result<Vec<_>, _>>()?;
        g.security = next.security;
        g.by_psk_identity = next.by_psk_identity;
        Ok(old)
    }

    fn get_security(&self, endpoint: &str) -> Result<Option<StoredSecurity>, StoreError> {
        Ok(self.lock().security.get(endpoint).cloned())
    }

    fn security_by_psk_identity(
        &self,
        identity: &[u8],
    ) -> Result<Option<StoredSecurity>, StoreError> {
        let g = self.lock();
        Ok(g.by_psk_identity
            .get(identity)
            .and_then(|ep| g.security.get(ep))
            .cloned())
    }

    fn delete_security(&self, endpoint: &str) -> Result<Option<StoredSecurity>, StoreError> {
        let mut g = self.lock();
        let old = g.security.remove(endpoint);
        if let Some(id) = old.as_ref().and_then(|o| o.psk_identity.clone()) {
            g.by_psk_identity.remove(&id);
        }
        Ok(old)
    }

    fn list_security(&self) -> Result<Vec<StoredSecurity>, StoreError> {
        Ok(self.lock().security.values().cloned().collect())
    }
}
