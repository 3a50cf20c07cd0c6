//! Firmware metadata in `firmware.redb` beside the server's store: packages, one update
//! per device, and the download tokens. Package contents are files named by their
//! SHA-256 (see [`super::packages`]); this file only says what they are.
//!
//! Records are JSON: they grow by optional fields, which older records lack and read as
//! their defaults. Every change is one durable transaction.

use std::path::Path;

use redb::{Database, Durability, ReadableDatabase, ReadableTable, TableDefinition};
use serde::{de::DeserializeOwned, Deserialize, Serialize};

use super::update::UpdateRecord;

/// redb's page cache (its default is 1 GiB).
const CACHE_BYTES: usize = 8 << 20;

pub const FILE_NAME: &str = "firmware.redb";

const PACKAGES: TableDefinition<&str, &[u8]> = TableDefinition::new("packages");
const UPDATES: TableDefinition<&str, &[u8]> = TableDefinition::new("updates");
const TOKENS: TableDefinition<&str, &[u8]> = TableDefinition::new("tokens");

#[derive(Debug, thiserror::Error)]
pub enum FirmwareStoreError {
    #[error("storage: {0}")]
    Backend(#[from] redb::Error),
    #[error("cannot create the data directory: {0}")]
    Io(#[from] std::io::Error),
    #[error("record {0} does not decode: {1}")]
    Corrupt(String, String),
    #[error("the firmware store is closed (the server stopped)")]
    Closed,
}

macro_rules! backend_from {
    ($($t:ty),*) => {$(
        impl From<$t> for FirmwareStoreError {
            fn from(e: $t) -> Self {
                FirmwareStoreError::Backend(redb::Error::from(e))
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

/// A firmware package as uploaded.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Package {
    pub id: String,
    pub name: String,
    pub version: String,
    /// Device models it is for (`/3/0/1`); empty: any.
    #[serde(default)]
    pub models: Vec<String>,
    /// Hardware revisions it is for (`/3/0/18`); empty: any.
    #[serde(default)]
    pub hardware: Vec<String>,
    #[serde(default)]
    pub tags: Vec<String>,
    /// Lower-case hex of the content's SHA-256: also its file name.
    pub sha256: String,
    pub size: u64,
    pub created_at_unix_ms: u64,
}

/// A download token: who may fetch which package, until when.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TokenRecord {
    pub endpoint: String,
    pub package_id: String,
    pub sha256: String,
    pub size: u64,
    pub expires_at_unix_ms: u64,
}

/// Closed when the server stops, so that a server started again in the same process can
/// open the file (redb allows one open database per file).
pub struct FirmwareStore {
    db: std::sync::RwLock<Option<Database>>,
}

fn decode<T: DeserializeOwned>(key: &str, bytes: &[u8]) -> Result<T, FirmwareStoreError> {
    serde_json::from_slice(bytes)
        .map_err(|e| FirmwareStoreError::Corrupt(key.to_string(), e.to_string()))
}

fn encode<T: Serialize>(value: &T) -> Vec<u8> {
    // These plain structs always serialise.
    serde_json::to_vec(value).unwrap_or_default()
}

impl FirmwareStore {
    pub fn open(dir: &Path) -> Result<FirmwareStore, FirmwareStoreError> {
        std::fs::create_dir_all(dir)?;
        // Packages and updates are few; their records need no large cache.
        let db = redb::Builder::new()
            .set_cache_size(CACHE_BYTES)
            .create(dir.join(FILE_NAME))?;
        let store = FirmwareStore {
            db: std::sync::RwLock::new(Some(db)),
        };
        store.write(|t| {
            t.open_table(PACKAGES)?;
            t.open_table(UPDATES)?;
            t.open_table(TOKENS)?;
            Ok(())
        })?;
        Ok(store)
    }

    /// Closes the database; every later call fails with [`FirmwareStoreError::Closed`].
    pub fn close(&self) {
        *self.db.write().unwrap_or_else(|e| e.into_inner()) = None;
    }

    fn read_txn(&self) -> Result<redb::ReadTransaction, FirmwareStoreError> {
        let db = self.db.read().unwrap_or_else(|e| e.into_inner());
        Ok(db
            .as_ref()
            .ok_or(FirmwareStoreError::Closed)?
            .begin_read()?)
    }

    fn write<T>(
        &self,
        f: impl FnOnce(&redb::WriteTransaction) -> Result<T, FirmwareStoreError>,
    ) -> Result<T, FirmwareStoreError> {
        let db = self.db.read().unwrap_or_else(|e| e.into_inner());
        let mut txn = db
            .as_ref()
            .ok_or(FirmwareStoreError::Closed)?
            .begin_write()?;
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

    fn get<T: DeserializeOwned>(
        &self,
        table: TableDefinition<&str, &[u8]>,
        key: &str,
    ) -> Result<Option<T>, FirmwareStoreError> {
        let txn = self.read_txn()?;
        let t = txn.open_table(table)?;
        let v = t.get(key)?;
        v.map(|v| decode(key, v.value())).transpose()
    }

    fn all<T: DeserializeOwned>(
        &self,
        table: TableDefinition<&str, &[u8]>,
    ) -> Result<Vec<T>, FirmwareStoreError> {
        let txn = self.read_txn()?;
        let t = txn.open_table(table)?;
        let mut out = Vec::new();
        for entry in t.iter()? {
            let (k, v) = entry?;
            out.push(decode(k.value(), v.value())?);
        }
        Ok(out)
    }

    pub fn put_package(&self, p: &Package) -> Result<(), FirmwareStoreError> {
        self.write(|t| {
            t.open_table(PACKAGES)?
                .insert(p.id.as_str(), encode(p).as_slice())?;
            Ok(())
        })
    }

    pub fn package(&self, id: &str) -> Result<Option<Package>, FirmwareStoreError> {
        self.get(PACKAGES, id)
    }

    pub fn packages(&self) -> Result<Vec<Package>, FirmwareStoreError> {
        self.all(PACKAGES)
    }

    /// Deletes a package's record unless an update that has not ended uses it; answers
    /// the record, and whether another package still has the same content.
    pub fn delete_package(&self, id: &str) -> Result<DeletePackage, FirmwareStoreError> {
        self.write(|t| {
            let updates = t.open_table(UPDATES)?;
            for entry in updates.iter()? {
                let (k, v) = entry?;
                let u: UpdateRecord = decode(k.value(), v.value())?;
                if u.package_id == id && !u.phase.is_final() {
                    return Ok(DeletePackage::InUse(u.endpoint));
                }
            }
            let mut packages = t.open_table(PACKAGES)?;
            let old: Package = match packages.remove(id)? {
                Some(v) => decode(id, v.value())?,
                None => return Ok(DeletePackage::Missing),
            };
            let mut shared = false;
            for entry in packages.iter()? {
                let (k, v) = entry?;
                let p: Package = decode(k.value(), v.value())?;
                shared |= p.sha256 == old.sha256;
            }
            Ok(DeletePackage::Deleted {
                package: old,
                content_shared: shared,
            })
        })
    }

    pub fn put_update(&self, u: &UpdateRecord) -> Result<(), FirmwareStoreError> {
        self.write(|t| {
            t.open_table(UPDATES)?
                .insert(u.endpoint.as_str(), encode(u).as_slice())?;
            Ok(())
        })
    }

    pub fn update(&self, endpoint: &str) -> Result<Option<UpdateRecord>, FirmwareStoreError> {
        self.get(UPDATES, endpoint)
    }

    pub fn updates(&self) -> Result<Vec<UpdateRecord>, FirmwareStoreError> {
        self.all(UPDATES)
    }

    pub fn put_token(&self, token: &str, r: &TokenRecord) -> Result<(), FirmwareStoreError> {
        self.write(|t| {
            t.open_table(TOKENS)?.insert(token, encode(r).as_slice())?;
            Ok(())
        })
    }

    pub fn token(&self, token: &str) -> Result<Option<TokenRecord>, FirmwareStoreError> {
        self.get(TOKENS, token)
    }

    /// Revokes every token of `endpoint` (its update ended or a new one starts).
    pub fn revoke_tokens(&self, endpoint: &str) -> Result<usize, FirmwareStoreError> {
        self.write(|t| {
            let mut tokens = t.open_table(TOKENS)?;
            let mut mine = Vec::new();
            for entry in tokens.iter()? {
                let (k, v) = entry?;
                let r: TokenRecord = decode(k.value(), v.value())?;
                if r.endpoint == endpoint {
                    mine.push(k.value().to_string());
                }
            }
            for k in &mine {
                tokens.remove(k.as_str())?;
            }
            Ok(mine.len())
        })
    }
}

/// What [`FirmwareStore::delete_package`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DeletePackage {
    Deleted {
        package: Package,
        content_shared: bool,
    },
    /// This endpoint's running update uses it.
    InUse(String),
    Missing,
}
