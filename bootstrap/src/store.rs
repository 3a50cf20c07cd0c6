//! The bootstrap configurations and the outcome of each device's last bootstrap, in one
//! redb file (`bootstrap.redb` in the data directory).
//!
//! Tables:
//! - `configs`: endpoint → the [`BootstrapConfig`] as JSON (records grow by optional
//!   fields, which older records lack and read as their defaults).
//! - `bootstrap_psk`: PSK identity the device uses with the bootstrap server → endpoint,
//!   so a handshake finds its key with one lookup and two devices cannot share an identity.
//! - `status`: endpoint → the [`BootstrapStatus`] of its last session, as JSON.
//! - `in_progress`: endpoints whose session was running; at start these are marked failed,
//!   since a session does not outlive the process.
//!
//! Every change is one durable transaction.

use std::path::Path;

use redb::{
    Database, Durability, ReadableDatabase, ReadableTable, ReadableTableMetadata, TableDefinition,
};
use serde::{Deserialize, Serialize};

use crate::config::{BootstrapConfig, Psk};
use crate::session::Report;

/// redb's page cache (its default is 1 GiB).
const CACHE_BYTES: usize = 8 << 20;

pub const FILE_NAME: &str = "bootstrap.redb";

const CONFIGS: TableDefinition<&str, &[u8]> = TableDefinition::new("configs");
const BOOTSTRAP_PSK: TableDefinition<&[u8], &str> = TableDefinition::new("bootstrap_psk");
const STATUS: TableDefinition<&str, &[u8]> = TableDefinition::new("status");
const IN_PROGRESS: TableDefinition<&str, ()> = TableDefinition::new("in_progress");

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("storage: {0}")]
    Backend(#[from] redb::Error),
    #[error("cannot create the data directory: {0}")]
    Io(#[from] std::io::Error),
    #[error("record of {0} does not decode: {1}")]
    Corrupt(String, String),
    #[error("bootstrap PSK identity is already used by endpoint {0}")]
    IdentityTaken(String),
}

macro_rules! backend_from {
    ($($t:ty),*) => {$(
        impl From<$t> for StoreError {
            fn from(e: $t) -> Self {
                StoreError::Backend(redb::Error::from(e))
            }
        }
    )*};
}
backend_from!(
    redb::DatabaseError,
    redb::TransactionError,
    redb::TableError,
    redb::StorageError,
    redb::CommitError,
    redb::SetDurabilityError
);

/// How a device's last bootstrap went.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SessionState {
    InProgress,
    Finished,
    Failed,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BootstrapStatus {
    pub state: SessionState,
    pub started_at_unix_ms: u64,
    #[serde(default)]
    pub ended_at_unix_ms: Option<u64>,
    /// `coap` or `coaps`.
    pub transport: String,
    pub peer: String,
    #[serde(default)]
    pub error: Option<String>,
    #[serde(default)]
    pub report: Report,
}

pub struct BootstrapStore {
    db: Database,
}

fn decode<T: for<'a> Deserialize<'a>>(key: &str, bytes: &[u8]) -> Result<T, StoreError> {
    serde_json::from_slice(bytes).map_err(|e| StoreError::Corrupt(key.to_string(), e.to_string()))
}

fn encode<T: Serialize>(value: &T) -> Vec<u8> {
    // Serialising these plain structs cannot fail.
    serde_json::to_vec(value).unwrap_or_default()
}

impl BootstrapStore {
    /// Opens (creating if needed) `dir/bootstrap.redb`, and marks the sessions a previous
    /// process left running as failed.
    pub fn open(dir: &Path, now_unix_ms: u64) -> Result<BootstrapStore, StoreError> {
        std::fs::create_dir_all(dir)?;
        // A configuration is read once per bootstrap: a large cache buys nothing.
        let db = redb::Builder::new()
            .set_cache_size(CACHE_BYTES)
            .create(dir.join(FILE_NAME))?;
        let store = BootstrapStore { db };
        store.write(|t| {
            t.open_table(CONFIGS)?;
            t.open_table(BOOTSTRAP_PSK)?;
            let mut status = t.open_table(STATUS)?;
            let mut running = t.open_table(IN_PROGRESS)?;
            let stale: Vec<String> = running
                .iter()?
                .map(|e| e.map(|(k, _)| k.value().to_string()))
                .collect::<Result<_, _>>()?;
            for ep in stale {
                let old = status.get(ep.as_str())?.map(|v| v.value().to_vec());
                if let Some(bytes) = old {
                    let mut s: BootstrapStatus = decode(&ep, &bytes)?;
                    s.state = SessionState::Failed;
                    s.ended_at_unix_ms = Some(now_unix_ms);
                    s.error = Some("the bootstrap server stopped during the session".into());
                    status.insert(ep.as_str(), encode(&s).as_slice())?;
                }
                running.remove(ep.as_str())?;
            }
            Ok(())
        })?;
        Ok(store)
    }

    fn write<T>(
        &self,
        f: impl FnOnce(&redb::WriteTransaction) -> Result<T, StoreError>,
    ) -> Result<T, StoreError> {
        let mut txn = self.db.begin_write()?;
        txn.set_durability(Durability::Immediate)?;
        match f(&txn) {
            Ok(v) => {
                txn.commit()?;
                Ok(v)
            }
            Err(e) => {
                let _ = txn.abort();
                Err(e)
            }
        }
    }

    /// Stores `config`, replacing the endpoint's previous one; answers that one.
    pub fn put(&self, config: &BootstrapConfig) -> Result<Option<BootstrapConfig>, StoreError> {
        let ep = config.endpoint.as_str();
        self.write(|t| {
            let mut configs = t.open_table(CONFIGS)?;
            let mut by_psk = t.open_table(BOOTSTRAP_PSK)?;
            if let Some(p) = &config.bootstrap_psk {
                if let Some(owner) = by_psk.get(p.identity.as_slice())? {
                    if owner.value() != ep {
                        return Err(StoreError::IdentityTaken(owner.value().to_string()));
                    }
                }
            }
            let old = configs
                .get(ep)?
                .map(|v| decode::<BootstrapConfig>(ep, v.value()))
                .transpose()?;
            if let Some(p) = old.as_ref().and_then(|o| o.bootstrap_psk.as_ref()) {
                by_psk.remove(p.identity.as_slice())?;
            }
            if let Some(p) = &config.bootstrap_psk {
                by_psk.insert(p.identity.as_slice(), ep)?;
            }
            configs.insert(ep, encode(config).as_slice())?;
            Ok(old)
        })
    }

    pub fn get(&self, endpoint: &str) -> Result<Option<BootstrapConfig>, StoreError> {
        let txn = self.db.begin_read()?;
        let configs = txn.open_table(CONFIGS)?;
        let v = configs.get(endpoint)?;
        v.map(|v| decode(endpoint, v.value())).transpose()
    }

    /// Deletes the endpoint's configuration and status; answers the configuration.
    pub fn delete(&self, endpoint: &str) -> Result<Option<BootstrapConfig>, StoreError> {
        self.write(|t| {
            let mut configs = t.open_table(CONFIGS)?;
            let old = configs
                .remove(endpoint)?
                .map(|v| decode::<BootstrapConfig>(endpoint, v.value()))
                .transpose()?;
            if let Some(p) = old.as_ref().and_then(|o| o.bootstrap_psk.as_ref()) {
                t.open_table(BOOTSTRAP_PSK)?.remove(p.identity.as_slice())?;
            }
            t.open_table(STATUS)?.remove(endpoint)?;
            t.open_table(IN_PROGRESS)?.remove(endpoint)?;
            Ok(old)
        })
    }

    /// Configurations whose endpoint starts with `prefix`, in name order, from `offset`;
    /// and how many match in all. Without a prefix the count is the table's length and
    /// the scan stops at the end of the page; with one, the matching range is counted.
    ///
    /// `after` (a name) starts the page after it, as a cursor; `total` then counts the
    /// matches from there.
    pub fn list(
        &self,
        prefix: &str,
        after: Option<&str>,
        offset: usize,
        limit: usize,
    ) -> Result<(usize, Vec<BootstrapConfig>), StoreError> {
        use std::ops::Bound;
        let txn = self.db.begin_read()?;
        let configs = txn.open_table(CONFIGS)?;
        let start = match after {
            Some(a) if a >= prefix => Bound::Excluded(a),
            _ => Bound::Included(prefix),
        };
        let whole = prefix.is_empty() && after.is_none();
        let mut page = Vec::new();
        let mut matched = 0usize;
        for entry in configs.range::<&str>((start, Bound::Unbounded))? {
            let (k, v) = entry?;
            if !k.value().starts_with(prefix) || (whole && page.len() >= limit) {
                break;
            }
            if matched >= offset && page.len() < limit {
                page.push(decode(k.value(), v.value())?);
            }
            matched += 1;
        }
        let total = if whole {
            usize::try_from(configs.len()?).unwrap_or(usize::MAX)
        } else {
            matched
        };
        Ok((total, page))
    }

    /// The endpoint and key of a bootstrap PSK identity.
    pub fn bootstrap_psk(&self, identity: &[u8]) -> Result<Option<(String, Psk)>, StoreError> {
        let txn = self.db.begin_read()?;
        let by_psk = txn.open_table(BOOTSTRAP_PSK)?;
        let Some(ep) = by_psk.get(identity)?.map(|v| v.value().to_string()) else {
            return Ok(None);
        };
        let configs = txn.open_table(CONFIGS)?;
        let config = configs
            .get(ep.as_str())?
            .map(|v| decode::<BootstrapConfig>(&ep, v.value()))
            .transpose()?;
        Ok(config.and_then(|c| c.bootstrap_psk).map(|p| (ep, p)))
    }

    pub fn status(&self, endpoint: &str) -> Result<Option<BootstrapStatus>, StoreError> {
        let txn = self.db.begin_read()?;
        let status = txn.open_table(STATUS)?;
        let v = status.get(endpoint)?;
        v.map(|v| decode(endpoint, v.value())).transpose()
    }

    /// Records a session's status; one that is running is remembered as such, so that a
    /// restart can say it was cut short.
    pub fn set_status(&self, endpoint: &str, s: &BootstrapStatus) -> Result<(), StoreError> {
        self.write(|t| {
            t.open_table(STATUS)?
                .insert(endpoint, encode(s).as_slice())?;
            let mut running = t.open_table(IN_PROGRESS)?;
            if s.state == SessionState::InProgress {
                running.insert(endpoint, ())?;
            } else {
                running.remove(endpoint)?;
            }
            Ok(())
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::ConfigInput;

    fn config(ep: &str, bs_identity: Option<&str>) -> BootstrapConfig {
        let mut json =
            serde_json::json!({"servers":[{"short_server_id":1,"uri":"coaps://h:5684","psk":{}}]});
        if let Some(id) = bs_identity {
            json["bootstrap_psk"] =
                serde_json::json!({"identity": id, "key": "000102030405060708090a0b0c0d0e0f"});
        }
        let input: ConfigInput = serde_json::from_value(json).expect("input");
        BootstrapConfig::from_input(ep, input, 1, &mut crate::config::os_random).expect("valid")
    }

    #[test]
    fn configs_identities_status_and_restart() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = BootstrapStore::open(dir.path(), 1).expect("open");
        let a = config("a", Some("bs-a"));
        assert_eq!(store.put(&a).expect("put"), None);
        assert!(matches!(
            store.put(&config("b", Some("bs-a"))),
            Err(StoreError::IdentityTaken(e)) if e == "a"
        ));
        store.put(&config("b", None)).expect("put b");
        store.put(&config("ab", Some("bs-ab"))).expect("put ab");
        assert_eq!(store.get("a").expect("get"), Some(a.clone()));
        assert_eq!(
            store
                .bootstrap_psk(b"bs-a")
                .expect("lookup")
                .map(|(e, _)| e),
            Some("a".into())
        );
        let (total, page) = store.list("", None, 1, 1).expect("list");
        assert_eq!((total, page[0].endpoint.as_str()), (3, "ab"));
        let (total, page) = store.list("", Some("ab"), 0, 10).expect("list");
        assert_eq!((total, page[0].endpoint.as_str()), (1, "b"));
        let (total, page) = store.list("a", None, 0, 10).expect("list");
        assert_eq!(total, 2);
        assert_eq!(page.len(), 2);
        // A new identity for "a" frees the old one.
        store.put(&config("a", Some("bs-a2"))).expect("replace");
        assert_eq!(store.bootstrap_psk(b"bs-a").expect("lookup"), None);
        let running = BootstrapStatus {
            state: SessionState::InProgress,
            started_at_unix_ms: 5,
            ended_at_unix_ms: None,
            transport: "coap".into(),
            peer: "127.0.0.1:1".into(),
            error: None,
            report: Report::default(),
        };
        store.set_status("a", &running).expect("status");
        drop(store);
        let store = BootstrapStore::open(dir.path(), 9).expect("reopen");
        let s = store.status("a").expect("status").expect("kept");
        assert_eq!(
            (s.state, s.ended_at_unix_ms),
            (SessionState::Failed, Some(9))
        );
        assert_eq!(
            store.delete("a").expect("delete").map(|c| c.endpoint),
            Some("a".into())
        );
        assert_eq!(store.status("a").expect("status"), None);
        assert_eq!(store.bootstrap_psk(b"bs-a2").expect("lookup"), None);
    }
}
