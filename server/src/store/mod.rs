//! Persistence of what must outlive the process: registrations, observation relations and
//! requests queued for sleeping queue-mode devices.
//!
//! The rest of the server talks to the [`Store`] trait only, so that a distributed backend can
//! be added later without touching protocol code. Two implementations exist: [`RedbStore`]
//! (the default, an embedded ACID file in the data directory) and [`MemoryStore`] (for unit
//! tests of other modules). Both pass the same conformance suite.
//!
//! Every mutating call is one write transaction; when it returns `Ok`, the change is on disk
//! (redb commits with `Durability::Immediate`, i.e. fsync). A call that fails changes nothing.
//! The calls are blocking: the driver's writes run on a store thread of their own (see
//! the runtime's `pipeline`), everything else where it stands.
//!
//! # Table layout of [`RedbStore`] (file `lwm2m.redb`)
//!
//! | table | key | value | why |
//! |---|---|---|---|
//! | `meta` | `&str` | `u64` | `schema_version` (refuse to open a file written by an incompatible build) and `queue_next_seq` (one global counter, so seqs are never reused even after a queue empties, and no per-endpoint counter is left behind) |
//! | `registrations` | id `&str` | record | the primary copy, by `/rd/{id}` as every Update and De-register names it; ids sort in the order they were issued, so a burst of Registers appends at the tree's edge |
//! | `registration_refreshes` | seq `u64` | refresh record | the refresh log: an Update that moved only a registration's time and address, appended in arrival order so that a pass's Updates share a page where each would dirty one of `registrations` |
//! | `observations` | token `&[u8]` | record | notifications are matched by token, the hot path |
//! | `observations_by_registration` | `(registration id &str, token &[u8])` | `()` | a new Register or a De-register drops all observations of the old registration by a prefix range |
//! | `queue` | `(endpoint &str, seq u64)` | record | one ordered range per endpoint: peek/pop in order, count for the cap |
//! | `security` | endpoint `&str` | record | DTLS credentials of a device, set by the operator |
//! | `security_by_psk_identity` | identity `&[u8]` | endpoint `&str` | the handshake looks a key up by the identity the device presents; unique by construction |
//!
//! Records are versioned CBOR arrays (see [`records`]); a record that fails to decode
//! surfaces as [`StoreError::Corrupt`] naming table and key. Secondary indexes are written in
//! the same transaction as the primary record, so they cannot diverge.
//!
//! No index by expiry and none by endpoint: the registry keeps each registration's
//! deadline and endpoint in memory, removes an expired one by id and tells a Register
//! which registration it replaces; a start reads every registration anyway. An index by
//! expiry cost two of the few B-tree writes of each Update (its key is the expiry, which
//! every Update moves) and nothing read it; one by endpoint cost each Register a page of
//! its own, since endpoints arrive in no order. At start, two records of one endpoint
//! (which only a bug could leave) resolve to the later id, the later registration.
//!
//! The refresh log is folded into `registrations` once it holds a quarter as many refreshes
//! as there are registrations (and at least [`FOLD_AT_LEAST`]): the latest
//! refresh of each id, in id order, a few thousand at each group sync, so that each leaf
//! page is written once for all the refreshes it gets; the log's folded range goes when
//! the fold ends. Readers apply the log on top of the records (a refresh never moves a
//! record back in time), so a stop at any point of a fold loses nothing. Only the
//! driver's group-commit handle logs; any other handle writes a refresh into the record.
//!
//! Queued requests are kept per endpoint, not per registration: a device that re-registers
//! (new registration id) still gets what was queued for it; they leave by delivery, by
//! [`Store::clear_queue`] or by their own expiry.

mod memory;
pub mod records;
mod redb_store;

#[cfg(test)]
mod conformance;

pub use memory::MemoryStore;
pub use records::{
    QueuedRequest, QueuedTracking, RecordError, StoredObservation, StoredRefresh,
    StoredRegistration, StoredSecurity,
};
pub use redb_store::{RedbStore, DEFAULT_CACHE_BYTES, FOLD_AT_LEAST};

/// Longest registration id or endpoint name the store accepts. Endpoint names come from the
/// network; the registry should reject longer ones earlier, this is the last line.
pub const MAX_KEY_LEN: usize = 1024;

/// Caps on the tables whose size a peer can drive.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StoreLimits {
    pub max_registrations: u64,
    pub max_observations: u64,
    pub max_queued_per_endpoint: u64,
}

impl Default for StoreLimits {
    fn default() -> Self {
        StoreLimits {
            max_registrations: 1_000_000,
            max_observations: 4_000_000,
            max_queued_per_endpoint: 64,
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("record in table {table} at key {key} does not decode: {source}")]
    Corrupt {
        table: &'static str,
        /// The key in readable form (text, or hex for tokens).
        key: String,
        source: RecordError,
    },
    #[error("{table} is full ({limit} entries)")]
    Full { table: &'static str, limit: u64 },
    #[error("queue of endpoint {endpoint:?} is full ({limit} requests)")]
    QueueFull { endpoint: String, limit: u64 },
    #[error("no registration {0:?}")]
    UnknownRegistration(String),
    #[error("PSK identity is already the identity of endpoint {0:?}")]
    IdentityTaken(String),
    #[error("observation token must be 1 to 8 bytes, got {0}")]
    InvalidToken(usize),
    #[error("invalid {what}: {reason}")]
    InvalidKey {
        what: &'static str,
        reason: &'static str,
    },
    #[error("store file has schema version {found}, this build reads {supported}")]
    UnsupportedSchema { found: u64, supported: u64 },
    #[error("cannot prepare data directory: {0}")]
    Io(#[from] std::io::Error),
    #[error("storage backend: {0}")]
    Backend(#[source] Box<dyn std::error::Error + Send + Sync>),
}

/// The operations the server needs from persistent storage. Object-safe: the server holds an
/// `Arc<dyn Store>`.
pub trait Store: Send + Sync {
    /// Group commit: the writes from here to [`Store::sync`] are committed together by it,
    /// and nobody reads them before. Only a [`RedbStore::group_commit`] handle groups
    /// anything; every other write is durable when it returns.
    fn begin_group(&self) {}

    /// Makes every write of the group durable, and ends it.
    fn sync(&self) -> Result<(), StoreError> {
        Ok(())
    }

    /// Inserts a registration, or overwrites the one with the same id (an Update).
    ///
    /// The store keeps no index of endpoints: that an endpoint has one registration is
    /// the registry's to keep, which holds every registration in memory and says which
    /// one a Register replaces. An index on disk cost each Register a B-tree page of its
    /// own (endpoints arrive in no order), about as much as everything else it writes.
    fn put_registration(&self, reg: &StoredRegistration) -> Result<(), StoreError>;

    /// A new Register: removes registration `previous` (the one of the same endpoint the
    /// registry replaces) and any registration with `reg`'s id, each with its
    /// observations, and inserts `reg`, atomically. Returns what was removed.
    fn replace_registration(
        &self,
        reg: &StoredRegistration,
        previous: Option<&str>,
    ) -> Result<Option<StoredRegistration>, StoreError>;

    /// An Update that moved only the registration's time and perhaps its address
    /// ([`StoredRefresh`]): a record newer than it stays as it is. Fails with
    /// [`StoreError::UnknownRegistration`] for an id not stored.
    fn refresh_registration(&self, refresh: &StoredRefresh) -> Result<(), StoreError>;

    fn get_registration(&self, id: &str) -> Result<Option<StoredRegistration>, StoreError>;

    /// All registrations, ordered by id; for rebuilding state at start.
    fn list_registrations(&self) -> Result<Vec<StoredRegistration>, StoreError>;

    /// De-register: removes the registration and its observations. Returns what was removed.
    fn delete_registration(&self, id: &str) -> Result<Option<StoredRegistration>, StoreError>;

    /// Inserts or overwrites (e.g. to advance `last_sequence`) an observation. Its
    /// registration must exist, so that dropping a registration drops all its observations.
    fn put_observation(&self, obs: &StoredObservation) -> Result<(), StoreError>;

    fn get_observation(&self, token: &[u8]) -> Result<Option<StoredObservation>, StoreError>;

    fn delete_observation(&self, token: &[u8]) -> Result<Option<StoredObservation>, StoreError>;

    /// Observations of one registration, ordered by token.
    fn list_observations(
        &self,
        registration_id: &str,
    ) -> Result<Vec<StoredObservation>, StoreError>;

    /// All observations, ordered by token; for rebuilding the token table at start.
    fn list_all_observations(&self) -> Result<Vec<StoredObservation>, StoreError>;

    /// Removes and returns all observations of one registration.
    fn delete_observations_of(
        &self,
        registration_id: &str,
    ) -> Result<Vec<StoredObservation>, StoreError>;

    /// Appends to the endpoint's queue; `req.seq` is ignored and the assigned seq returned.
    /// Seqs increase monotonically across the whole store and are never reused.
    fn enqueue(&self, req: &QueuedRequest) -> Result<u64, StoreError>;

    /// Up to `max` oldest requests of the endpoint, in order, without removing them.
    fn peek_queue(&self, endpoint: &str, max: usize) -> Result<Vec<QueuedRequest>, StoreError>;

    /// Removes and returns the oldest request of the endpoint.
    fn pop_queue(&self, endpoint: &str) -> Result<Option<QueuedRequest>, StoreError>;

    /// Removes one request once delivered; with [`Store::peek_queue`] this gives
    /// at-least-once delivery across a crash, where pop-then-send would lose the request.
    fn remove_queued(&self, endpoint: &str, seq: u64) -> Result<Option<QueuedRequest>, StoreError>;

    fn queue_len(&self, endpoint: &str) -> Result<u64, StoreError>;

    /// Drops the whole queue of the endpoint; returns how many requests were dropped.
    fn clear_queue(&self, endpoint: &str) -> Result<u64, StoreError>;

    /// Removes and returns every queued request expired at `now_unix_ms`.
    fn drop_expired_queued(&self, now_unix_ms: u64) -> Result<Vec<QueuedRequest>, StoreError>;

    /// Sets an endpoint's credentials, replacing (and returning) what it had. A PSK
    /// identity names one endpoint only: one another endpoint holds is refused with
    /// [`StoreError::IdentityTaken`], and nothing changes.
    fn put_security(&self, s: &StoredSecurity) -> Result<Option<StoredSecurity>, StoreError>;

    /// [`put_security`](Self::put_security) for many endpoints in one transaction: all
    /// are set, or none (the first refusal is the error). Answers what each had.
    fn put_securities(
        &self,
        all: &[StoredSecurity],
    ) -> Result<Vec<Option<StoredSecurity>>, StoreError>;

    fn get_security(&self, endpoint: &str) -> Result<Option<StoredSecurity>, StoreError>;

    /// The credentials that hold a PSK identity: the handshake's lookup.
    fn security_by_psk_identity(
        &self,
        identity: &[u8],
    ) -> Result<Option<StoredSecurity>, StoreError>;

    fn delete_security(&self, endpoint: &str) -> Result<Option<StoredSecurity>, StoreError>;

    /// Every endpoint's credentials, ordered by endpoint.
    fn list_security(&self) -> Result<Vec<StoredSecurity>, StoreError>;
}

fn check_key(what: &'static str, key: &str) -> Result<(), StoreError> {
    if key.is_empty() {
        return Err(StoreError::InvalidKey {
            what,
            reason: "empty",
        });
    }
    if key.len() > MAX_KEY_LEN {
        return Err(StoreError::InvalidKey {
            what,
            reason: "longer than MAX_KEY_LEN",
        });
    }
    Ok(())
}

fn check_registration(reg: &StoredRegistration) -> Result<(), StoreError> {
    check_key("registration id", &reg.id)?;
    check_key("endpoint", &reg.endpoint)
}

fn check_security(s: &StoredSecurity) -> Result<(), StoreError> {
    check_key("endpoint", &s.endpoint)?;
    if let Some(id) = &s.psk_identity {
        if id.is_empty() || id.len() > MAX_KEY_LEN {
            return Err(StoreError::InvalidKey {
                what: "PSK identity",
                reason: "empty or longer than MAX_KEY_LEN",
            });
        }
    }
    Ok(())
}

fn check_token(token: &[u8]) -> Result<(), StoreError> {
    if token.is_empty() || token.len() > 8 {
        return Err(StoreError::InvalidToken(token.len()));
    }
    Ok(())
}

fn check_observation(obs: &StoredObservation) -> Result<(), StoreError> {
    check_token(&obs.token)?;
    check_key("registration id", &obs.registration_id)
}

fn hex(bytes: &[u8]) -> String {
    crate::hex::encode(bytes)
}
