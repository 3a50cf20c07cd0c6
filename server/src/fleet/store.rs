//! The fleet's records in `fleet.redb` beside the server's store: device attributes,
//! dynamic groups, operator regions, cell status and campaigns.
//!
//! Records are JSON, as in the firmware store: they grow by optional fields. A write of
//! many records (the attributes that changed since the last flush, a campaign's state)
//! is one durable transaction.
//!
//! Attributes are keyed by a number given when a device is first written, not by its
//! name: a fleet's names are scattered (IMEIs, serials), so a second's worth of new
//! devices keyed by name landed in most leaves of the table and rewrote it whole (tens
//! of megabytes a flush at 100,000 devices). In arrival order they append.
//!
//! A campaign is a header in [`Table::Campaigns`] and one row per device in a table
//! of its own keyed by (campaign id, slot), so that saving a campaign of a million
//! devices writes the ones that changed.

use std::path::Path;
use std::sync::atomic::{AtomicU32, Ordering};

use redb::{Database, Durability, ReadableDatabase, ReadableTable, TableDefinition, TableHandle};
use serde::{de::DeserializeOwned, Serialize};

/// redb's page cache (its default is 1 GiB).
const CACHE_BYTES: usize = 8 << 20;

pub const FILE_NAME: &str = "fleet.redb";

/// Device attributes by [`Attributes::store_key`](lwm2m_fleet::Attributes::store_key).
const ATTRIBUTES: TableDefinition<'static, u32, &'static [u8]> =
    TableDefinition::new("attributes_in_arrival_order");

/// Device attributes by endpoint, as stores before 2026-12-04 kept them: moved into
/// [`ATTRIBUTES`] when such a store is opened.
const ATTRIBUTES_BY_NAME: TableDefinition<'static, &'static str, &'static [u8]> =
    TableDefinition::new("attributes");

/// Campaigns' device rows, by campaign id and slot.
const CAMPAIGN_ROWS: TableDefinition<'static, (&'static str, u32), &'static [u8]> =
    TableDefinition::new("campaign_rows");

/// A campaign's rows to write: a slot and its row, or `None` to delete it.
pub type RowChange = (u32, Option<Vec<u8>>);

/// The tables keyed by a name: a group id, a cell id, a campaign id.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Table {
    Groups,
    Regions,
    Cells,
    Campaigns,
}

impl Table {
    const ALL: [Table; 4] = [
        Table::Groups,
        Table::Regions,
        Table::Cells,
        Table::Campaigns,
    ];

    fn def(self) -> TableDefinition<'static, &'static str, &'static [u8]> {
        TableDefinition::new(match self {
            Table::Groups => "groups",
            Table::Regions => "regions",
            Table::Cells => "cells",
            Table::Campaigns => "campaigns",
        })
    }
}

#[derive(Debug, thiserror::Error)]
pub enum FleetStoreError {
    #[error("storage: {0}")]
    Backend(#[from] redb::Error),
    #[error("cannot create the data directory: {0}")]
    Io(#[from] std::io::Error),
    #[error("record {0} does not decode: {1}")]
    Corrupt(String, String),
    #[error("record {0} does not encode: {1}")]
    Encode(String, String),
    #[error("every attributes key is taken")]
    KeysExhausted,
}

macro_rules! backend_from {
    ($($t:ty),*) => {$(
        impl From<$t> for FleetStoreError {
            fn from(e: $t) -> Self {
                FleetStoreError::Backend(redb::Error::from(e))
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

/// One change of a batch: a record written, or removed (`None`).
type Change = (String, Option<Vec<u8>>);

pub struct FleetStore {
    db: Database,
    /// The attributes key given last.
    last_key: AtomicU32,
}

impl std::fmt::Debug for FleetStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FleetStore").finish_non_exhaustive()
    }
}

/// A record's JSON.
pub fn encode<T: Serialize>(key: &str, value: &T) -> Result<Vec<u8>, FleetStoreError> {
    serde_json::to_vec(value).map_err(|e| FleetStoreError::Encode(key.to_string(), e.to_string()))
}

fn decode<T: DeserializeOwned>(key: &str, bytes: &[u8]) -> Result<T, FleetStoreError> {
    serde_json::from_slice(bytes)
        .map_err(|e| FleetStoreError::Corrupt(key.to_string(), e.to_string()))
}

impl FleetStore {
    pub fn open(dir: &Path) -> Result<FleetStore, FleetStoreError> {
        std::fs::create_dir_all(dir)?;
        let db = redb::Builder::new()
            .set_cache_size(CACHE_BYTES)
            .create(dir.join(FILE_NAME))?;
        let store = FleetStore {
            db,
            last_key: AtomicU32::new(0),
        };
        let last = store.write(|txn| {
            for t in Table::ALL {
                txn.open_table(t.def())?;
            }
            txn.open_table(CAMPAIGN_ROWS)?;
            let mut attributes = txn.open_table(ATTRIBUTES)?;
            let mut last = match attributes.last()? {
                Some((k, _)) => k.value(),
                None => 0,
            };
            let legacy = txn
                .list_tables()?
                .any(|t| t.name() == ATTRIBUTES_BY_NAME.name());
            if legacy {
                let by_name = txn.open_table(ATTRIBUTES_BY_NAME)?;
                for entry in by_name.iter()? {
                    let (_, v) = entry?;
                    last = last.checked_add(1).ok_or(FleetStoreError::KeysExhausted)?;
                    attributes.insert(last, v.value())?;
                }
                drop(by_name);
                txn.delete_table(ATTRIBUTES_BY_NAME)?;
            }
            Ok(last)
        })?;
        store.last_key.store(last, Ordering::Relaxed);
        Ok(store)
    }

    /// A key for a device's first attributes record, after every key given before.
    pub fn new_attributes_key(&self) -> Result<u32, FleetStoreError> {
        self.last_key
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |k| k.checked_add(1))
            .map(|k| k + 1)
            .map_err(|_| FleetStoreError::KeysExhausted)
    }

    /// Writes attributes records by key in one transaction.
    pub fn put_attributes(&self, records: &[(u32, Vec<u8>)]) -> Result<(), FleetStoreError> {
        if records.is_empty() {
            return Ok(());
        }
        self.write(|txn| {
            let mut t = txn.open_table(ATTRIBUTES)?;
            for (key, bytes) in records {
                t.insert(key, bytes.as_slice())?;
            }
            Ok(())
        })
    }

    pub fn get_attributes<T: DeserializeOwned>(
        &self,
        key: u32,
    ) -> Result<Option<T>, FleetStoreError> {
        let txn = self.db.begin_read()?;
        let t = txn.open_table(ATTRIBUTES)?;
        let v = t.get(key)?;
        v.map(|v| decode(&key.to_string(), v.value())).transpose()
    }

    /// Every attributes record with its key, in arrival order; one that does not decode
    /// is reported and skipped.
    pub fn all_attributes<T: DeserializeOwned>(&self) -> Result<Vec<(u32, T)>, FleetStoreError> {
        let txn = self.db.begin_read()?;
        let t = txn.open_table(ATTRIBUTES)?;
        let mut out = Vec::new();
        for entry in t.iter()? {
            let (k, v) = entry?;
            match decode(&k.value().to_string(), v.value()) {
                Ok(value) => out.push((k.value(), value)),
                Err(e) => tracing::error!(error = %e, "attributes record skipped"),
            }
        }
        Ok(out)
    }

    fn write<T>(
        &self,
        f: impl FnOnce(&redb::WriteTransaction) -> Result<T, FleetStoreError>,
    ) -> Result<T, FleetStoreError> {
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

    pub fn put<T: Serialize>(
        &self,
        table: Table,
        key: &str,
        value: &T,
    ) -> Result<(), FleetStoreError> {
        let bytes = encode(key, value)?;
        self.apply(table, vec![(key.to_string(), Some(bytes))])
    }

    pub fn delete(&self, table: Table, key: &str) -> Result<bool, FleetStoreError> {
        self.write(|txn| {
            let mut t = txn.open_table(table.def())?;
            let removed = t.remove(key)?.is_some();
            Ok(removed)
        })
    }

    /// Writes and removes records of one table in one transaction.
    fn apply(&self, table: Table, changes: Vec<Change>) -> Result<(), FleetStoreError> {
        if changes.is_empty() {
            return Ok(());
        }
        self.write(|txn| {
            let mut t = txn.open_table(table.def())?;
            for (key, value) in &changes {
                match value {
                    Some(bytes) => {
                        t.insert(key.as_str(), bytes.as_slice())?;
                    }
                    None => {
                        t.remove(key.as_str())?;
                    }
                }
            }
            Ok(())
        })
    }

    /// Writes a campaign's header and the rows that changed in one transaction;
    /// `replace` first removes every row the campaign had (its slots were renumbered).
    pub fn save_campaign(
        &self,
        id: &str,
        header: &[u8],
        rows: &[RowChange],
        replace: bool,
    ) -> Result<(), FleetStoreError> {
        self.write(|txn| {
            txn.open_table(Table::Campaigns.def())?.insert(id, header)?;
            let mut t = txn.open_table(CAMPAIGN_ROWS)?;
            if replace {
                t.retain_in((id, 0u32)..=(id, u32::MAX), |_, _| false)?;
            }
            for (slot, row) in rows {
                match row {
                    Some(bytes) => {
                        t.insert((id, *slot), bytes.as_slice())?;
                    }
                    None => {
                        t.remove((id, *slot))?;
                    }
                }
            }
            Ok(())
        })
    }

    /// A campaign's rows in slot order, at most `limit` of them.
    pub fn campaign_rows(
        &self,
        id: &str,
        limit: usize,
    ) -> Result<Vec<(u32, Vec<u8>)>, FleetStoreError> {
        let txn = self.db.begin_read()?;
        let t = txn.open_table(CAMPAIGN_ROWS)?;
        let mut out = Vec::new();
        for entry in t.range((id, 0u32)..=(id, u32::MAX))?.take(limit) {
            let (k, v) = entry?;
            out.push((k.value().1, v.value().to_vec()));
        }
        Ok(out)
    }

    /// Removes a campaign's header and rows; whether it was there.
    pub fn delete_campaign(&self, id: &str) -> Result<bool, FleetStoreError> {
        self.write(|txn| {
            let removed = txn
                .open_table(Table::Campaigns.def())?
                .remove(id)?
                .is_some();
            txn.open_table(CAMPAIGN_ROWS)?
                .retain_in((id, 0u32)..=(id, u32::MAX), |_, _| false)?;
            Ok(removed)
        })
    }

    pub fn get<T: DeserializeOwned>(
        &self,
        table: Table,
        key: &str,
    ) -> Result<Option<T>, FleetStoreError> {
        let txn = self.db.begin_read()?;
        let t = txn.open_table(table.def())?;
        let v = t.get(key)?;
        v.map(|v| decode(key, v.value())).transpose()
    }

    /// Every record of a table, in key order; one that does not decode is reported and
    /// skipped rather than keeping the others from loading.
    pub fn all<T: DeserializeOwned>(
        &self,
        table: Table,
    ) -> Result<Vec<(String, T)>, FleetStoreError> {
        let txn = self.db.begin_read()?;
        let t = txn.open_table(table.def())?;
        let mut out = Vec::new();
        for entry in t.iter()? {
            let (k, v) = entry?;
            match decode(k.value(), v.value()) {
                Ok(value) => out.push((k.value().to_string(), value)),
                Err(e) => tracing::error!(table = ?table, error = %e, "fleet record skipped"),
            }
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_survive_reopening_and_batches_apply_whole() {
        let dir = tempfile::tempdir().unwrap();
        {
            let s = FleetStore::open(dir.path()).unwrap();
            s.put(Table::Groups, "g1", &serde_json::json!({"filter": "true"}))
                .unwrap();
            let (a, b) = (
                s.new_attributes_key().unwrap(),
                s.new_attributes_key().unwrap(),
            );
            assert_eq!((a, b), (1, 2));
            s.put_attributes(&[(b, b"{\"x\":2}".to_vec()), (a, b"{\"x\":1}".to_vec())])
                .unwrap();
            s.put_attributes(&[(a, b"{\"x\":3}".to_vec())]).unwrap();
        }
        let s = FleetStore::open(dir.path()).unwrap();
        let attrs: Vec<(u32, serde_json::Value)> = s.all_attributes().unwrap();
        assert_eq!(
            attrs,
            vec![
                (1, serde_json::json!({"x": 3})),
                (2, serde_json::json!({"x": 2}))
            ]
        );
        assert_eq!(s.new_attributes_key().unwrap(), 3, "after the stored keys");
        let one: Option<serde_json::Value> = s.get_attributes(2).unwrap();
        assert_eq!(one, Some(serde_json::json!({"x": 2})));
        let g: Option<serde_json::Value> = s.get(Table::Groups, "g1").unwrap();
        assert_eq!(g, Some(serde_json::json!({"filter": "true"})));
        assert!(s.delete(Table::Groups, "g1").unwrap());
        assert!(!s.delete(Table::Groups, "g1").unwrap());
    }

    #[test]
    fn campaign_rows_are_kept_per_campaign_and_replaced_whole() {
        let dir = tempfile::tempdir().unwrap();
        let rows = |s: &FleetStore, id: &str| -> Vec<(u32, String)> {
            s.campaign_rows(id, 100)
                .unwrap()
                .into_iter()
                .map(|(k, v)| (k, String::from_utf8(v).unwrap()))
                .collect()
        };
        {
            let s = FleetStore::open(dir.path()).unwrap();
            let some = |v: &str| Some(v.as_bytes().to_vec());
            s.save_campaign("c", b"1", &[(0, some("a")), (2, some("c"))], false)
                .unwrap();
            // A campaign whose id extends the other's keeps its rows apart.
            s.save_campaign("c2", b"9", &[(0, some("z"))], false)
                .unwrap();
            s.save_campaign("c", b"2", &[(1, some("b")), (2, None)], false)
                .unwrap();
            assert_eq!(rows(&s, "c"), [(0, "a".into()), (1, "b".into())]);
            assert_eq!(s.campaign_rows("c", 1).unwrap().len(), 1, "limited");
        }
        let s = FleetStore::open(dir.path()).unwrap();
        assert_eq!(rows(&s, "c"), [(0, "a".into()), (1, "b".into())]);
        s.save_campaign("c", b"3", &[(0, Some(b"n".to_vec()))], true)
            .unwrap();
        assert_eq!(rows(&s, "c"), [(0, "n".into())], "replaced");
        assert_eq!(rows(&s, "c2"), [(0, "z".into())]);
        let header: Option<u32> = s.get(Table::Campaigns, "c").unwrap();
        assert_eq!(header, Some(3));
        assert!(s.delete_campaign("c").unwrap());
        assert!(rows(&s, "c").is_empty());
        assert!(!s.delete_campaign("c").unwrap());
        assert_eq!(rows(&s, "c2"), [(0, "z".into())]);
    }

    #[test]
    fn attributes_kept_by_name_move_to_arrival_order_once() {
        let dir = tempfile::tempdir().unwrap();
        {
            // A store as written before attributes had keys of their own.
            let db = redb::Database::create(dir.path().join(FILE_NAME)).unwrap();
            let txn = db.begin_write().unwrap();
            {
                let mut t = txn.open_table(ATTRIBUTES_BY_NAME).unwrap();
                t.insert("zeta", b"{\"endpoint\":\"zeta\"}".as_slice())
                    .unwrap();
                t.insert("alpha", b"{\"endpoint\":\"alpha\"}".as_slice())
                    .unwrap();
            }
            txn.commit().unwrap();
        }
        let expected = vec![
            (1, serde_json::json!({"endpoint": "alpha"})),
            (2, serde_json::json!({"endpoint": "zeta"})),
        ];
        {
            let s = FleetStore::open(dir.path()).unwrap();
            let attrs: Vec<(u32, serde_json::Value)> = s.all_attributes().unwrap();
            assert_eq!(attrs, expected);
            assert_eq!(s.new_attributes_key().unwrap(), 3);
        }
        // Opened again, nothing moves twice and the old table is gone.
        let s = FleetStore::open(dir.path()).unwrap();
        let attrs: Vec<(u32, serde_json::Value)> = s.all_attributes().unwrap();
        assert_eq!(attrs, expected);
        let txn = s.db.begin_read().unwrap();
        assert!(!txn.list_tables().unwrap().any(|t| t.name() == "attributes"));
    }

    #[test]
    fn an_undecodable_record_is_skipped_not_fatal() {
        let dir = tempfile::tempdir().unwrap();
        let s = FleetStore::open(dir.path()).unwrap();
        s.apply(
            Table::Cells,
            vec![
                ("c1".into(), Some(b"not json".to_vec())),
                ("c2".into(), Some(b"{\"available_bps\":5}".to_vec())),
            ],
        )
        .unwrap();
        let cells: Vec<(String, serde_json::Value)> = s.all(Table::Cells).unwrap();
        assert_eq!(cells.len(), 1);
        assert_eq!(cells[0].0, "c2");
    }
}
