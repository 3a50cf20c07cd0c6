//! The default [`Store`]: one redb file in the data directory. See the module docs of
//! [`super`] for the table layout.

use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError};

use redb::{
    Database, Durability, ReadableDatabase, ReadableTable, ReadableTableMetadata, Table,
    TableDefinition, WriteTransaction,
};

use super::records::{
    decode_observation, decode_queued, decode_refresh, decode_registration, decode_security,
    encode_observation, encode_queued, encode_refresh, encode_registration, encode_security,
};
use super::{
    check_key, check_observation, check_registration, check_security, check_token, hex,
    QueuedRequest, Store, StoreError, StoreLimits, StoredObservation, StoredRefresh,
    StoredRegistration, StoredSecurity,
};

/// File name inside the data directory.
pub const FILE_NAME: &str = "lwm2m.redb";
/// redb's page cache by default: its own default is 1 GiB, which a small machine holding a
/// large fleet cannot give to a cache (the records are read at start and on writes; the
/// working set is the in-memory registry).
pub const DEFAULT_CACHE_BYTES: usize = 64 << 20;
/// Layout version of the tables; bumped when a table's key or value type changes.
pub const SCHEMA_VERSION: u64 = 1;

const SCHEMA_KEY: &str = "schema_version";
const NEXT_SEQ_KEY: &str = "queue_next_seq";

const REGS_NAME: &str = "registrations";
const OBS_NAME: &str = "observations";
const REFRESHES_NAME: &str = "registration_refreshes";
const QUEUE_NAME: &str = "queue";
const SEC_NAME: &str = "security";

const META: TableDefinition<&str, u64> = TableDefinition::new("meta");
const REGS: TableDefinition<&str, &[u8]> = TableDefinition::new(REGS_NAME);
/// Indexes that files written before they were dropped still hold (see the module's
/// documentation of the store); deleted when such a file is opened.
const DROPPED_REGS_BY_EXPIRY: TableDefinition<(u64, &str), ()> =
    TableDefinition::new("registrations_by_expiry");
const DROPPED_REGS_BY_EP: TableDefinition<&str, &str> =
    TableDefinition::new("registrations_by_endpoint");
const REFRESHES: TableDefinition<u64, &[u8]> = TableDefinition::new(REFRESHES_NAME);
const OBS: TableDefinition<&[u8], &[u8]> = TableDefinition::new(OBS_NAME);
const OBS_BY_REG: TableDefinition<(&str, &[u8]), ()> =
    TableDefinition::new("observations_by_registration");
const QUEUE: TableDefinition<(&str, u64), &[u8]> = TableDefinition::new(QUEUE_NAME);
const SEC: TableDefinition<&str, &[u8]> = TableDefinition::new(SEC_NAME);
const SEC_BY_PSK: TableDefinition<&[u8], &str> = TableDefinition::new("security_by_psk_identity");

/// Sorts after every token of at most 8 bytes, closing prefix ranges over tokens.
const TOKEN_MAX: [u8; 9] = [0xff; 9];

macro_rules! backend_from {
    ($($t:ty),*) => {$(
        impl From<$t> for StoreError {
            fn from(e: $t) -> Self {
                StoreError::Backend(Box::new(redb::Error::from(e)))
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

pub struct RedbStore {
    db: Arc<Database>,
    limits: StoreLimits,
    /// A group-commit handle: between [`Store::begin_group`] and [`Store::sync`] its
    /// writes go into one open transaction, committed at the sync.
    grouped: bool,
    grouping: AtomicBool,
    open: Mutex<Option<WriteTransaction>>,
    /// Shared by the handles on one file; only a group-commit handle appends (it folds
    /// at its syncs).
    log: Arc<Mutex<RefreshLog>>,
}

/// Refreshes the log holds before a fold starts: this many at least, and a quarter as
/// many as there are registrations. A fold rewrites each leaf page of `registrations`
/// that a refresh in the log touches once; with fewer refreshes than pages it would
/// save little over writing each record at its Update.
pub const FOLD_AT_LEAST: u64 = 4_096;
/// Refreshes folded into their records at each sync while a fold runs: more than a
/// pass adds, so a fold ends, and few enough to keep a pass short.
const FOLD_STEP: usize = 2_048;

/// What the store knows of its refresh log without reading it.
#[derive(Debug)]
struct RefreshLog {
    next_seq: u64,
    /// Entries in the table (at most; a group that failed to commit counted its own).
    len: u64,
    /// The length from which a sync looks at starting a fold.
    fold_from: u64,
    fold_at_least: u64,
    fold: Option<Fold>,
}

/// A fold under way: the log's entries up to `through_seq`, the latest of each id,
/// sorted by id so that each step's records lie side by side.
#[derive(Debug)]
struct Fold {
    refreshes: Vec<StoredRefresh>,
    next: usize,
    through_seq: u64,
    loaded: u64,
}

impl RedbStore {
    /// Opens (creating if needed) `dir/lwm2m.redb`.
    pub fn open(dir: &Path) -> Result<Self, StoreError> {
        Self::open_with(dir, StoreLimits::default(), DEFAULT_CACHE_BYTES)
    }

    pub fn open_with_limits(dir: &Path, limits: StoreLimits) -> Result<Self, StoreError> {
        Self::open_with(dir, limits, DEFAULT_CACHE_BYTES)
    }

    /// Opens with redb's page cache bounded at `cache_bytes`.
    pub fn open_with(
        dir: &Path,
        limits: StoreLimits,
        cache_bytes: usize,
    ) -> Result<Self, StoreError> {
        std::fs::create_dir_all(dir)?;
        let db = redb::Builder::new()
            .set_cache_size(cache_bytes)
            .create(dir.join(FILE_NAME))?;
        let store = RedbStore {
            db: Arc::new(db),
            limits,
            grouped: false,
            grouping: AtomicBool::new(false),
            open: Mutex::new(None),
            log: Arc::new(Mutex::new(RefreshLog {
                next_seq: 0,
                len: 0,
                fold_from: FOLD_AT_LEAST,
                fold_at_least: FOLD_AT_LEAST,
                fold: None,
            })),
        };
        store.write(|t| {
            let found = t.meta()?.get(SCHEMA_KEY)?.map(|v| v.value());
            match found {
                None => {
                    t.meta()?.insert(SCHEMA_KEY, SCHEMA_VERSION)?;
                }
                Some(SCHEMA_VERSION) => {}
                Some(found) => {
                    return Err(StoreError::UnsupportedSchema {
                        found,
                        supported: SCHEMA_VERSION,
                    })
                }
            }
            t.txn.delete_table(DROPPED_REGS_BY_EXPIRY)?;
            t.txn.delete_table(DROPPED_REGS_BY_EP)?;
            // Writes open their tables lazily and readers expect every table to exist:
            // each one is created here.
            t.open_all()?;
            let refreshes = t.refreshes()?;
            let last = refreshes.last()?.map(|(k, _)| k.value());
            let mut log = store.log.lock().unwrap_or_else(PoisonError::into_inner);
            log.next_seq = last.map_or(0, |k| k.saturating_add(1));
            log.len = refreshes.len()?;
            Ok(())
        })?;
        Ok(store)
    }

    /// Starts folding once the log holds `n` refreshes (or a quarter as many as there
    /// are registrations), for tests of the fold with a few records.
    pub fn fold_refreshes_at(self, n: u64) -> RedbStore {
        {
            let mut log = self.log.lock().unwrap_or_else(PoisonError::into_inner);
            log.fold_at_least = n;
            log.fold_from = n;
        }
        self
    }

    /// One step of the fold, in the transaction a sync is about to commit; starts one
    /// if the log is long enough. A fold that fails is dropped (the log keeps every
    /// refresh, readers apply them) and tried again once the log has grown as much.
    fn fold_step(&self, txn: &WriteTransaction) {
        let mut log = self.log.lock().unwrap_or_else(PoisonError::into_inner);
        if let Err(e) = Self::fold_step_in(&mut log, txn) {
            tracing::error!(error = %e, "folding the refresh log failed; it stays as it is");
            log.fold = None;
            log.fold_from = log.len.saturating_add(log.fold_at_least);
        }
    }

    fn fold_step_in(log: &mut RefreshLog, txn: &WriteTransaction) -> Result<(), StoreError> {
        let mut t = Tables::open(txn)?;
        let fold = match &mut log.fold {
            Some(fold) => fold,
            None => {
                let threshold = log.fold_at_least.max(t.regs()?.len()? / 4);
                if log.len < threshold {
                    log.fold_from = threshold;
                    return Ok(());
                }
                let mut refreshes = Vec::new();
                let mut through_seq = 0;
                for item in t.refreshes()?.iter()? {
                    let (k, v) = item?;
                    through_seq = k.value();
                    refreshes.push(decode_refresh_at(through_seq, v.value())?);
                }
                let loaded = refreshes.len() as u64;
                // The latest of each id: a stable sort keeps each id's refreshes in log
                // order, reversed so that dedup keeps the last.
                refreshes.sort_by(|a, b| a.id.cmp(&b.id));
                refreshes.reverse();
                refreshes.dedup_by(|a, b| a.id == b.id);
                refreshes.reverse();
                log.fold.insert(Fold {
                    refreshes,
                    next: 0,
                    through_seq,
                    loaded,
                })
            }
        };
        let end = fold
            .refreshes
            .len()
            .min(fold.next.saturating_add(FOLD_STEP));
        for r in fold.refreshes.get(fold.next..end).unwrap_or_default() {
            // Gone (de-registered, replaced, expired) or newer than the refresh: as is.
            let Some(mut reg) = get_registration(&*t.regs()?, &r.id)? else {
                continue;
            };
            if r.last_update_unix_ms >= reg.last_update_unix_ms {
                reg.apply(r);
                t.insert_registration(&reg)?;
            }
        }
        fold.next = end;
        if end == fold.refreshes.len() {
            let (through, loaded) = (fold.through_seq, fold.loaded);
            t.refreshes()?.retain_in(..=through, |_, _| false)?;
            log.len = log.len.saturating_sub(loaded);
            log.fold = None;
            log.fold_from = log.fold_at_least;
        }
        Ok(())
    }

    /// A second handle on the same database for one writer that commits in groups: from
    /// [`Store::begin_group`] to [`Store::sync`] its writes share one transaction, which
    /// the sync commits (durably). The driver groups what a batch of datagrams writes and
    /// syncs before it sends the answers, so an answer still means "on disk", at one
    /// commit and one fsync per batch instead of one per datagram. Readers, through any
    /// handle, see a group's writes once it is committed; other writers wait for it.
    pub fn group_commit(&self) -> RedbStore {
        RedbStore {
            db: self.db.clone(),
            limits: self.limits,
            grouped: true,
            grouping: AtomicBool::new(false),
            open: Mutex::new(None),
            log: self.log.clone(),
        }
    }

    /// Runs `f` in a write transaction: its own, committed (durably) only if `f`
    /// succeeds; or, inside a group, the group's. Every `f` here refuses (an endpoint
    /// taken, a full table) before its first change, so a refusal inside a group leaves
    /// nothing behind either.
    fn write<T>(
        &self,
        f: impl FnOnce(&mut Tables<'_>) -> Result<T, StoreError>,
    ) -> Result<T, StoreError> {
        if self.grouped && self.grouping.load(Ordering::Acquire) {
            let mut open = self.open.lock().unwrap_or_else(PoisonError::into_inner);
            let txn = match open.take() {
                Some(txn) => txn,
                None => {
                    let mut txn = self.db.begin_write()?;
                    txn.set_durability(Durability::Immediate)?;
                    txn
                }
            };
            // No early return: the transaction holds the group's earlier writes.
            let result = match Tables::open(&txn) {
                Ok(mut tables) => f(&mut tables),
                Err(e) => Err(e),
            };
            *open = Some(txn);
            return result;
        }
        let mut txn = self.db.begin_write()?;
        // Immediate is redb's default; said explicitly because the crash guarantee rests on it.
        txn.set_durability(Durability::Immediate)?;
        let result = {
            let mut tables = Tables::open(&txn)?;
            f(&mut tables)
        };
        match result {
            Ok(v) => {
                txn.commit()?;
                Ok(v)
            }
            Err(e) => {
                // Abort errors are secondary; the caller needs the original one.
                let _ = txn.abort();
                Err(e)
            }
        }
    }
}

/// The tables of one write transaction, each opened on first use and kept open until the
/// write is done, so helpers can use several together. Opening is lazy because a write
/// touches a few of them and each open (and close) is a lookup (and an update) in redb's
/// table of tables: opening all of them cost a registration more than its own inserts.
struct Tables<'txn> {
    txn: &'txn WriteTransaction,
    meta: Option<Table<'txn, &'static str, u64>>,
    regs: Option<Table<'txn, &'static str, &'static [u8]>>,
    refreshes: Option<Table<'txn, u64, &'static [u8]>>,
    obs: Option<Table<'txn, &'static [u8], &'static [u8]>>,
    obs_by_reg: Option<Table<'txn, (&'static str, &'static [u8]), ()>>,
    queue: Option<Table<'txn, (&'static str, u64), &'static [u8]>>,
    sec: Option<Table<'txn, &'static str, &'static [u8]>>,
    sec_by_psk: Option<Table<'txn, &'static [u8], &'static str>>,
}

/// One accessor per table: opens it on first use.
macro_rules! table_accessors {
    ($($name:ident: $def:ident => $k:ty, $v:ty;)*) => {
        $(
            fn $name(&mut self) -> Result<&mut Table<'txn, $k, $v>, StoreError> {
                let txn = self.txn;
                Ok(match &mut self.$name {
                    Some(table) => table,
                    slot => slot.insert(txn.open_table($def)?),
                })
            }
        )*
    };
}

impl<'txn> Tables<'txn> {
    fn open(txn: &'txn WriteTransaction) -> Result<Self, StoreError> {
        Ok(Tables {
            txn,
            meta: None,
            regs: None,
            refreshes: None,
            obs: None,
            obs_by_reg: None,
            queue: None,
            sec: None,
            sec_by_psk: None,
        })
    }

    fn open_all(&mut self) -> Result<(), StoreError> {
        self.meta()?;
        self.regs()?;
        self.refreshes()?;
        self.obs()?;
        self.obs_by_reg()?;
        self.queue()?;
        self.sec()?;
        self.sec_by_psk()?;
        Ok(())
    }

    table_accessors! {
        meta: META => &'static str, u64;
        regs: REGS => &'static str, &'static [u8];
        refreshes: REFRESHES => u64, &'static [u8];
        obs: OBS => &'static [u8], &'static [u8];
        obs_by_reg: OBS_BY_REG => (&'static str, &'static [u8]), ();
        queue: QUEUE => (&'static str, u64), &'static [u8];
        sec: SEC => &'static str, &'static [u8];
        sec_by_psk: SEC_BY_PSK => &'static [u8], &'static str;
    }

    fn put_security(&mut self, sec: &StoredSecurity) -> Result<Option<StoredSecurity>, StoreError> {
        let endpoint = sec.endpoint.as_str();
        if let Some(id) = sec.psk_identity.as_deref() {
            if let Some(holder) = self.sec_by_psk()?.get(id)? {
                if holder.value() != endpoint {
                    return Err(StoreError::IdentityTaken(holder.value().to_owned()));
                }
            }
        }
        let old = get_security(&*self.sec()?, endpoint)?;
        if let Some(id) = old.as_ref().and_then(|o| o.psk_identity.as_deref()) {
            self.sec_by_psk()?.remove(id)?;
        }
        self.sec()?
            .insert(endpoint, encode_security(sec).as_slice())?;
        if let Some(id) = sec.psk_identity.as_deref() {
            self.sec_by_psk()?.insert(id, endpoint)?;
        }
        Ok(old)
    }

    fn insert_registration(&mut self, reg: &StoredRegistration) -> Result<(), StoreError> {
        self.regs()?
            .insert(reg.id.as_str(), encode_registration(reg).as_slice())?;
        Ok(())
    }

    /// Removes the registration and its index entries, but not its observations.
    fn remove_registration(&mut self, id: &str) -> Result<Option<StoredRegistration>, StoreError> {
        let old = get_registration(&*self.regs()?, id)?;
        if old.is_some() {
            self.regs()?.remove(id)?;
            self.remove_observations_of(id)?;
        }
        Ok(old)
    }

    fn remove_observations_of(&mut self, id: &str) -> Result<Vec<StoredObservation>, StoreError> {
        let tokens = tokens_of(&*self.obs_by_reg()?, id)?;
        let mut out = Vec::with_capacity(tokens.len());
        for token in tokens {
            self.obs_by_reg()?.remove((id, token.as_slice()))?;
            if let Some(o) = get_observation(&*self.obs()?, &token)? {
                out.push(o);
            }
            self.obs()?.remove(token.as_slice())?;
        }
        Ok(out)
    }
}

fn get_security(
    t: &impl ReadableTable<&'static str, &'static [u8]>,
    endpoint: &str,
) -> Result<Option<StoredSecurity>, StoreError> {
    match t.get(endpoint)? {
        None => Ok(None),
        Some(v) => decode_security(v.value())
            .map(Some)
            .map_err(|source| StoreError::Corrupt {
                table: SEC_NAME,
                key: endpoint.to_owned(),
                source,
            }),
    }
}

fn decode_refresh_at(seq: u64, bytes: &[u8]) -> Result<StoredRefresh, StoreError> {
    decode_refresh(bytes).map_err(|source| StoreError::Corrupt {
        table: REFRESHES_NAME,
        key: seq.to_string(),
        source,
    })
}

fn get_registration(
    t: &impl ReadableTable<&'static str, &'static [u8]>,
    id: &str,
) -> Result<Option<StoredRegistration>, StoreError> {
    match t.get(id)? {
        None => Ok(None),
        Some(v) => decode_registration(v.value())
            .map(Some)
            .map_err(|source| StoreError::Corrupt {
                table: REGS_NAME,
                key: id.to_owned(),
                source,
            }),
    }
}

fn get_observation(
    t: &impl ReadableTable<&'static [u8], &'static [u8]>,
    token: &[u8],
) -> Result<Option<StoredObservation>, StoreError> {
    match t.get(token)? {
        None => Ok(None),
        Some(v) => decode_observation(v.value())
            .map(Some)
            .map_err(|source| StoreError::Corrupt {
                table: OBS_NAME,
                key: hex(token),
                source,
            }),
    }
}

fn queued_corrupt(endpoint: &str, seq: u64, source: super::RecordError) -> StoreError {
    StoreError::Corrupt {
        table: QUEUE_NAME,
        key: format!("{endpoint}/{seq}"),
        source,
    }
}

fn tokens_of(
    t: &impl ReadableTable<(&'static str, &'static [u8]), ()>,
    id: &str,
) -> Result<Vec<Vec<u8>>, StoreError> {
    let mut out = Vec::new();
    for item in t.range((id, &[][..])..=(id, &TOKEN_MAX[..]))? {
        let (k, _) = item?;
        out.push(k.value().1.to_vec());
    }
    Ok(out)
}

/// Up to `max` queued requests of one endpoint in seq order.
fn queue_of(
    t: &impl ReadableTable<(&'static str, u64), &'static [u8]>,
    endpoint: &str,
    max: usize,
) -> Result<Vec<QueuedRequest>, StoreError> {
    let mut out = Vec::new();
    for item in t.range((endpoint, 0u64)..=(endpoint, u64::MAX))?.take(max) {
        let (k, v) = item?;
        let seq = k.value().1;
        out.push(decode_queued(v.value()).map_err(|e| queued_corrupt(endpoint, seq, e))?);
    }
    Ok(out)
}

fn queue_count(
    t: &impl ReadableTable<(&'static str, u64), &'static [u8]>,
    endpoint: &str,
) -> Result<u64, StoreError> {
    let mut n = 0u64;
    for item in t.range((endpoint, 0u64)..=(endpoint, u64::MAX))? {
        item?;
        n += 1;
    }
    Ok(n)
}

impl Store for RedbStore {
    fn begin_group(&self) {
        if self.grouped {
            self.grouping.store(true, Ordering::Release);
        }
    }

    fn sync(&self) -> Result<(), StoreError> {
        self.grouping.store(false, Ordering::Release);
        let open = self
            .open
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take();
        let folding = self.grouped && {
            let log = self.log.lock().unwrap_or_else(PoisonError::into_inner);
            log.fold.is_some() || log.len >= log.fold_from
        };
        let txn = match (open, folding) {
            (Some(txn), _) => txn,
            (None, true) => {
                let mut txn = self.db.begin_write()?;
                txn.set_durability(Durability::Immediate)?;
                txn
            }
            (None, false) => return Ok(()),
        };
        if folding {
            self.fold_step(&txn);
        }
        let committed = txn.commit();
        if committed.is_err() {
            // The step's records are not written: the fold must not drop the log.
            self.log.lock().unwrap_or_else(PoisonError::into_inner).fold = None;
        }
        Ok(committed?)
    }

    fn put_registration(&self, reg: &StoredRegistration) -> Result<(), StoreError> {
        check_registration(reg)?;
        let max = self.limits.max_registrations;
        self.write(|t| {
            let known = t.regs()?.get(reg.id.as_str())?.is_some();
            if !known && t.regs()?.len()? >= max {
                return Err(StoreError::Full {
                    table: REGS_NAME,
                    limit: max,
                });
            }
            t.insert_registration(reg)
        })
    }

    fn replace_registration(
        &self,
        reg: &StoredRegistration,
        previous: Option<&str>,
    ) -> Result<Option<StoredRegistration>, StoreError> {
        check_registration(reg)?;
        let max = self.limits.max_registrations;
        self.write(|t| {
            let previous_known = match previous {
                Some(id) => t.regs()?.get(id)?.is_some(),
                None => false,
            };
            let same_known = t.regs()?.get(reg.id.as_str())?.is_some();
            if !previous_known && !same_known && t.regs()?.len()? >= max {
                return Err(StoreError::Full {
                    table: REGS_NAME,
                    limit: max,
                });
            }
            let old = match previous {
                Some(id) if previous_known => t.remove_registration(id)?,
                _ => None,
            };
            // Ids are unique: a record with this id goes too.
            let same_id = match same_known {
                true => t.remove_registration(&reg.id)?,
                false => None,
            };
            t.insert_registration(reg)?;
            Ok(old.or(same_id))
        })
    }

    /// A group-commit handle logs the refresh (see the module's documentation of the
    /// store); any other handle writes it into the record.
    fn refresh_registration(&self, refresh: &StoredRefresh) -> Result<(), StoreError> {
        check_key("registration id", &refresh.id)?;
        let unknown = || StoreError::UnknownRegistration(refresh.id.clone());
        self.write(|t| {
            if !self.grouped {
                let mut reg = get_registration(&*t.regs()?, &refresh.id)?.ok_or_else(unknown)?;
                reg.apply(refresh);
                return t.insert_registration(&reg);
            }
            if t.regs()?.get(refresh.id.as_str())?.is_none() {
                return Err(unknown());
            }
            let mut log = self.log.lock().unwrap_or_else(PoisonError::into_inner);
            t.refreshes()?
                .insert(log.next_seq, encode_refresh(refresh).as_slice())?;
            log.next_seq = log.next_seq.saturating_add(1);
            log.len = log.len.saturating_add(1);
            Ok(())
        })
    }

    /// Reads the whole refresh log for the id's refreshes: the server reads registrations
    /// back only at start, through [`Store::list_registrations`].
    fn get_registration(&self, id: &str) -> Result<Option<StoredRegistration>, StoreError> {
        let txn = self.db.begin_read()?;
        let Some(mut reg) = get_registration(&txn.open_table(REGS)?, id)? else {
            return Ok(None);
        };
        for item in txn.open_table(REFRESHES)?.iter()? {
            let (k, v) = item?;
            let r = decode_refresh_at(k.value(), v.value())?;
            if r.id == id {
                reg.apply(&r);
            }
        }
        Ok(Some(reg))
    }

    fn list_registrations(&self) -> Result<Vec<StoredRegistration>, StoreError> {
        let txn = self.db.begin_read()?;
        let regs = txn.open_table(REGS)?;
        let mut out = Vec::new();
        for item in regs.iter()? {
            let (k, v) = item?;
            out.push(
                decode_registration(v.value()).map_err(|source| StoreError::Corrupt {
                    table: REGS_NAME,
                    key: k.value().to_owned(),
                    source,
                })?,
            );
        }
        // In id order, as the table is: each refresh finds its record by bisection.
        for item in txn.open_table(REFRESHES)?.iter()? {
            let (k, v) = item?;
            let r = decode_refresh_at(k.value(), v.value())?;
            if let Ok(i) = out.binary_search_by(|reg| reg.id.as_str().cmp(&r.id)) {
                if let Some(reg) = out.get_mut(i) {
                    reg.apply(&r);
                }
            }
        }
        Ok(out)
    }

    fn delete_registration(&self, id: &str) -> Result<Option<StoredRegistration>, StoreError> {
        self.write(|t| t.remove_registration(id))
    }

    fn put_observation(&self, obs: &StoredObservation) -> Result<(), StoreError> {
        check_observation(obs)?;
        let max = self.limits.max_observations;
        self.write(|t| {
            if t.regs()?.get(obs.registration_id.as_str())?.is_none() {
                return Err(StoreError::UnknownRegistration(obs.registration_id.clone()));
            }
            let token = obs.token.as_slice();
            // An overwrite may move the token to another registration: drop the old link.
            let previous = t.obs()?.get(token)?.map(|v| decode_observation(v.value()));
            match previous {
                Some(Ok(prev)) => {
                    t.obs_by_reg()?
                        .remove((prev.registration_id.as_str(), token))?;
                }
                Some(Err(source)) => {
                    return Err(StoreError::Corrupt {
                        table: OBS_NAME,
                        key: hex(token),
                        source,
                    })
                }
                None => {
                    if t.obs()?.len()? >= max {
                        return Err(StoreError::Full {
                            table: OBS_NAME,
                            limit: max,
                        });
                    }
                }
            }
            t.obs()?.insert(token, encode_observation(obs).as_slice())?;
            t.obs_by_reg()?
                .insert((obs.registration_id.as_str(), token), ())?;
            Ok(())
        })
    }

    fn get_observation(&self, token: &[u8]) -> Result<Option<StoredObservation>, StoreError> {
        check_token(token)?;
        let txn = self.db.begin_read()?;
        get_observation(&txn.open_table(OBS)?, token)
    }

    fn delete_observation(&self, token: &[u8]) -> Result<Option<StoredObservation>, StoreError> {
        check_token(token)?;
        self.write(|t| {
            let Some(o) = get_observation(&*t.obs()?, token)? else {
                return Ok(None);
            };
            t.obs()?.remove(token)?;
            t.obs_by_reg()?
                .remove((o.registration_id.as_str(), token))?;
            Ok(Some(o))
        })
    }

    fn list_observations(
        &self,
        registration_id: &str,
    ) -> Result<Vec<StoredObservation>, StoreError> {
        let txn = self.db.begin_read()?;
        let tokens = tokens_of(&txn.open_table(OBS_BY_REG)?, registration_id)?;
        let obs = txn.open_table(OBS)?;
        let mut out = Vec::with_capacity(tokens.len());
        for token in tokens {
            if let Some(o) = get_observation(&obs, &token)? {
                out.push(o);
            }
        }
        Ok(out)
    }

    fn list_all_observations(&self) -> Result<Vec<StoredObservation>, StoreError> {
        let txn = self.db.begin_read()?;
        let obs = txn.open_table(OBS)?;
        let mut out = Vec::new();
        for item in obs.iter()? {
            let (k, v) = item?;
            out.push(
                decode_observation(v.value()).map_err(|source| StoreError::Corrupt {
                    table: OBS_NAME,
                    key: hex(k.value()),
                    source,
                })?,
            );
        }
        Ok(out)
    }

    fn delete_observations_of(
        &self,
        registration_id: &str,
    ) -> Result<Vec<StoredObservation>, StoreError> {
        self.write(|t| t.remove_observations_of(registration_id))
    }

    fn enqueue(&self, req: &QueuedRequest) -> Result<u64, StoreError> {
        check_key("endpoint", &req.endpoint)?;
        let max = self.limits.max_queued_per_endpoint;
        self.write(|t| {
            let endpoint = req.endpoint.as_str();
            if queue_count(&*t.queue()?, endpoint)? >= max {
                return Err(StoreError::QueueFull {
                    endpoint: req.endpoint.clone(),
                    limit: max,
                });
            }
            let seq = t.meta()?.get(NEXT_SEQ_KEY)?.map_or(0, |v| v.value());
            let next = seq.checked_add(1).ok_or(StoreError::Full {
                table: QUEUE_NAME,
                limit: u64::MAX,
            })?;
            t.meta()?.insert(NEXT_SEQ_KEY, next)?;
            let mut stored = req.clone();
            stored.seq = seq;
            t.queue()?
                .insert((endpoint, seq), encode_queued(&stored).as_slice())?;
            Ok(seq)
        })
    }

    fn peek_queue(&self, endpoint: &str, max: usize) -> Result<Vec<QueuedRequest>, StoreError> {
        let txn = self.db.begin_read()?;
        queue_of(&txn.open_table(QUEUE)?, endpoint, max)
    }

    fn pop_queue(&self, endpoint: &str) -> Result<Option<QueuedRequest>, StoreError> {
        self.write(|t| {
            let Some(first) = queue_of(&*t.queue()?, endpoint, 1)?.into_iter().next() else {
                return Ok(None);
            };
            t.queue()?.remove((endpoint, first.seq))?;
            Ok(Some(first))
        })
    }

    fn remove_queued(&self, endpoint: &str, seq: u64) -> Result<Option<QueuedRequest>, StoreError> {
        self.write(|t| {
            let found = match t.queue()?.get((endpoint, seq))? {
                None => return Ok(None),
                Some(v) => {
                    decode_queued(v.value()).map_err(|e| queued_corrupt(endpoint, seq, e))?
                }
            };
            t.queue()?.remove((endpoint, seq))?;
            Ok(Some(found))
        })
    }

    fn queue_len(&self, endpoint: &str) -> Result<u64, StoreError> {
        let txn = self.db.begin_read()?;
        queue_count(&txn.open_table(QUEUE)?, endpoint)
    }

    fn clear_queue(&self, endpoint: &str) -> Result<u64, StoreError> {
        self.write(|t| {
            let mut seqs = Vec::new();
            for item in t.queue()?.range((endpoint, 0u64)..=(endpoint, u64::MAX))? {
                let (k, _) = item?;
                seqs.push(k.value().1);
            }
            for seq in &seqs {
                t.queue()?.remove((endpoint, *seq))?;
            }
            Ok(seqs.len() as u64)
        })
    }

    fn drop_expired_queued(&self, now_unix_ms: u64) -> Result<Vec<QueuedRequest>, StoreError> {
        self.write(|t| {
            // A full scan: the queue holds at most max_queued_per_endpoint per sleeping
            // device and is swept rarely, so an expiry index would cost more than it saves.
            let mut expired = Vec::new();
            for item in t.queue()?.iter()? {
                let (k, v) = item?;
                let (endpoint, seq) = k.value();
                let q = decode_queued(v.value()).map_err(|e| queued_corrupt(endpoint, seq, e))?;
                if q.is_expired(now_unix_ms) {
                    expired.push(q);
                }
            }
            for q in &expired {
                t.queue()?.remove((q.endpoint.as_str(), q.seq))?;
            }
            Ok(expired)
        })
    }

    fn put_security(&self, sec: &StoredSecurity) -> Result<Option<StoredSecurity>, StoreError> {
        check_security(sec)?;
        self.write(|t| t.put_security(sec))
    }

    fn put_securities(
        &self,
        all: &[StoredSecurity],
    ) -> Result<Vec<Option<StoredSecurity>>, StoreError> {
        all.iter().try_for_each(check_security)?;
        // One transaction: one fsync for the whole file, and nothing stays if one fails.
        self.write(|t| all.iter().map(|s| t.put_security(s)).collect())
    }

    fn get_security(&self, endpoint: &str) -> Result<Option<StoredSecurity>, StoreError> {
        let txn = self.db.begin_read()?;
        get_security(&txn.open_table(SEC)?, endpoint)
    }

    fn security_by_psk_identity(
        &self,
        identity: &[u8],
    ) -> Result<Option<StoredSecurity>, StoreError> {
        let txn = self.db.begin_read()?;
        let Some(endpoint) = txn.open_table(SEC_BY_PSK)?.get(identity)? else {
            return Ok(None);
        };
        get_security(&txn.open_table(SEC)?, endpoint.value())
    }

    fn delete_security(&self, endpoint: &str) -> Result<Option<StoredSecurity>, StoreError> {
        self.write(|t| {
            let old = get_security(&*t.sec()?, endpoint)?;
            if old.is_some() {
                t.sec()?.remove(endpoint)?;
            }
            if let Some(id) = old.as_ref().and_then(|o| o.psk_identity.as_deref()) {
                t.sec_by_psk()?.remove(id)?;
            }
            Ok(old)
        })
    }

    fn list_security(&self) -> Result<Vec<StoredSecurity>, StoreError> {
        let txn = self.db.begin_read()?;
        let sec = txn.open_table(SEC)?;
        let mut out = Vec::new();
        for item in sec.iter()? {
            let (k, v) = item?;
            out.push(
                decode_security(v.value()).map_err(|source| StoreError::Corrupt {
                    table: SEC_NAME,
                    key: k.value().to_owned(),
                    source,
                })?,
            );
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::super::records::samples::{observation, queued, registration};
    use super::*;

    fn write_raw<K: redb::Key + 'static>(
        store: &RedbStore,
        def: TableDefinition<K, &[u8]>,
        key: K::SelfType<'_>,
        value: &[u8],
    ) {
        let txn = store.db.begin_write().expect("txn");
        txn.open_table(def)
            .expect("table")
            .insert(key, value)
            .expect("insert");
        txn.commit().expect("commit");
    }

    /// What the tables hold, without the log applied: the records and the log's length.
    fn raw(s: &RedbStore) -> (Vec<StoredRegistration>, u64) {
        let txn = s.db.begin_read().expect("read");
        let regs = txn.open_table(REGS).expect("table");
        let records = regs
            .iter()
            .expect("iter")
            .map(|item| decode_registration(item.expect("item").1.value()).expect("record"))
            .collect();
        let log = txn
            .open_table(REFRESHES)
            .expect("table")
            .len()
            .expect("len");
        (records, log)
    }

    /// The driver's kind of handle on `dir`, folding from `n` refreshes.
    fn group_handle(dir: &Path, n: u64) -> RedbStore {
        RedbStore::open(dir)
            .expect("open")
            .fold_refreshes_at(n)
            .group_commit()
    }

    fn refresh(id: &str, ms: u64) -> StoredRefresh {
        StoredRefresh {
            id: id.into(),
            last_update_unix_ms: ms,
            peer: "192.0.2.1:9".parse().expect("literal address"),
        }
    }

    #[test]
    fn refreshes_are_folded_into_their_records_a_step_a_sync_and_survive_a_stop_mid_fold() {
        // Later than the sample records' own time.
        const T1: u64 = 1_700_000_050_000;
        const T2: u64 = 1_700_000_060_000;
        let dir = tempfile::tempdir().expect("temp dir");
        let n = FOLD_STEP + FOLD_STEP / 2;
        let ids: Vec<String> = (0..n).map(|i| format!("r{i:05}")).collect();
        let open = || group_handle(dir.path(), 4);
        {
            let s = open();
            s.begin_group();
            for id in &ids {
                s.put_registration(&registration(id, &format!("ep-{id}")))
                    .expect("put");
            }
            s.sync().expect("sync");
            s.begin_group();
            for id in &ids {
                s.refresh_registration(&refresh(id, T1)).expect("refresh");
            }
            // The log reached its threshold: this sync folds the first step.
            s.sync().expect("sync");
            let (records, log) = raw(&s);
            let folded = records.iter().filter(|r| r.last_update_unix_ms == T1);
            assert_eq!(folded.count(), FOLD_STEP);
            assert_eq!(log, n as u64, "the log stays until the fold ends");
            // Stopped here, as a kill would stop it: every step is one commit.
        }
        let s = open();
        let all = s.list_registrations().expect("list");
        assert_eq!(all.len(), n);
        assert!(all.iter().all(|r| r.last_update_unix_ms == T1));
        assert_eq!(
            s.get_registration(&ids[n - 1])
                .expect("get")
                .map(|r| r.last_update_unix_ms),
            Some(T1)
        );
        // The reopened handle starts the fold again at its syncs and ends it.
        for _ in 0..3 {
            s.begin_group();
            s.sync().expect("sync");
        }
        let (records, log) = raw(&s);
        assert_eq!(log, 0, "a fold that ended empties the log");
        assert!(records.iter().all(|r| r.last_update_unix_ms == T1));
        // Below a quarter of the registrations the log waits; readers apply it, and a
        // refresh of a registration gone since is no one's.
        s.begin_group();
        for id in ids.iter().take(4) {
            s.refresh_registration(&refresh(id, T2)).expect("refresh");
        }
        s.delete_registration(&ids[0]).expect("delete");
        s.sync().expect("sync");
        let (records, log) = raw(&s);
        assert_eq!((records.len(), log), (n - 1, 4));
        assert!(records.iter().all(|r| r.last_update_unix_ms == T1));
        let all = s.list_registrations().expect("list");
        let newer = all.iter().filter(|r| r.last_update_unix_ms == T2);
        assert_eq!(newer.count(), 3);
    }

    #[test]
    fn an_undecodable_refresh_names_its_table_and_seq_and_a_fold_leaves_the_log() {
        let dir = tempfile::tempdir().expect("temp dir");
        let open = || group_handle(dir.path(), 1);
        {
            let s = open();
            s.put_registration(&registration("a", "ep")).expect("put");
            write_raw(&s, REFRESHES, 7, &[0x84, 0x01]);
        }
        let s = open();
        for r in [
            s.list_registrations().map(drop),
            s.get_registration("a").map(drop),
        ] {
            match r {
                Err(StoreError::Corrupt { table, key, .. }) => {
                    assert_eq!((table, key.as_str()), (REFRESHES_NAME, "7"))
                }
                other => panic!("expected Corrupt, got {other:?}"),
            }
        }
        // The fold fails on it and is dropped; the pass's own writes still commit.
        s.begin_group();
        s.put_registration(&registration("b", "ep-b")).expect("put");
        s.sync().expect("the pass commits");
        assert_eq!(raw(&s).1, 1, "the log is left as it was");
        assert_eq!(raw(&s).0.len(), 2);
    }

    #[test]
    fn a_group_shares_one_transaction_committed_by_sync() {
        let dir = tempfile::tempdir().expect("temp dir");
        let limits = StoreLimits {
            max_registrations: 3,
            ..StoreLimits::default()
        };
        let plain = RedbStore::open_with_limits(dir.path(), limits).expect("open");
        let group = plain.group_commit();

        group
            .put_registration(&registration("a", "ep-a"))
            .expect("put");
        assert!(
            plain.get_registration("a").expect("get").is_some(),
            "outside a group a write is committed at once"
        );

        group.begin_group();
        group
            .put_registration(&registration("b", "ep-b"))
            .expect("put");
        group
            .put_registration(&registration("c", "ep-c"))
            .expect("put");
        assert!(
            group.get_registration("c").expect("get").is_none(),
            "nobody reads the group's writes before the sync"
        );
        let refused = group.put_registration(&registration("d", "ep-d"));
        assert!(
            matches!(refused, Err(StoreError::Full { .. })),
            "{refused:?}"
        );
        group.sync().expect("sync");
        for id in ["a", "b", "c"] {
            assert!(plain.get_registration(id).expect("get").is_some(), "{id}");
        }
        assert!(plain.get_registration("d").expect("get").is_none());
        assert!(plain.get_registration("x").expect("get").is_none());

        group.delete_registration("c").expect("delete");
        assert!(
            plain.get_registration("c").expect("get").is_none(),
            "sync ended the group: the delete is committed at once"
        );
        drop((plain, group));
        let again = RedbStore::open(dir.path()).expect("reopen");
        let ids: Vec<String> = again
            .list_registrations()
            .expect("list")
            .into_iter()
            .map(|r| r.id)
            .collect();
        assert_eq!(ids, ["a", "b"]);
    }

    #[test]
    fn a_file_with_the_old_indexes_loses_them_and_keeps_its_registrations() {
        let dir = tempfile::tempdir().expect("temp dir");
        {
            let s = RedbStore::open(dir.path()).expect("open");
            s.put_registration(&registration("a", "ep")).expect("put");
            let txn = s.db.begin_write().expect("txn");
            txn.open_table(DROPPED_REGS_BY_EXPIRY)
                .expect("table")
                .insert((11_000, "a"), ())
                .expect("insert");
            txn.open_table(DROPPED_REGS_BY_EP)
                .expect("table")
                .insert("ep", "a")
                .expect("insert");
            txn.commit().expect("commit");
        }
        let s = RedbStore::open(dir.path()).expect("reopen");
        let txn = s.db.begin_read().expect("read");
        assert!(
            txn.open_table(DROPPED_REGS_BY_EXPIRY).is_err(),
            "the expiry index is gone"
        );
        assert!(
            txn.open_table(DROPPED_REGS_BY_EP).is_err(),
            "the endpoint index is gone"
        );
        assert_eq!(s.list_registrations().map(|v| v.len()).ok(), Some(1));
    }

    #[test]
    fn everything_survives_reopen() {
        let dir = tempfile::tempdir().expect("temp dir");
        let reg = registration("a", "ep");
        let obs = observation(&[1, 2, 3], "a", "ep");
        let seq;
        {
            let s = RedbStore::open(dir.path()).expect("open");
            s.put_registration(&reg).expect("put");
            s.put_observation(&obs).expect("obs");
            seq = s.enqueue(&queued("ep", 5)).expect("enqueue");
        }
        assert!(dir.path().join(FILE_NAME).is_file());
        let s = RedbStore::open(dir.path()).expect("reopen");
        assert_eq!(s.get_registration("a").ok(), Some(Some(reg)));
        assert_eq!(s.get_observation(&[1, 2, 3]).ok(), Some(Some(obs)));
        let q = s.peek_queue("ep", 10).expect("peek");
        assert_eq!(q.iter().map(|q| q.seq).collect::<Vec<_>>(), vec![seq]);
        // the seq counter is persistent too
        assert!(s.enqueue(&queued("ep", 5)).expect("enqueue") > seq);
    }

    #[test]
    fn open_creates_missing_directories() {
        let dir = tempfile::tempdir().expect("temp dir");
        let nested = dir.path().join("a/b");
        RedbStore::open(&nested).expect("open");
        assert!(nested.join(FILE_NAME).is_file());
    }

    #[test]
    fn undecodable_records_name_table_and_key() {
        let dir = tempfile::tempdir().expect("temp dir");
        let s = RedbStore::open(dir.path()).expect("open");
        s.put_registration(&registration("a", "ep")).expect("put");
        s.put_observation(&observation(&[0xab, 0xcd], "a", "ep"))
            .expect("obs");
        let seq = s.enqueue(&queued("ep", 5)).expect("enqueue");
        write_raw(&s, REGS, "a", &[0x85, 0x07]);
        write_raw(&s, OBS, &[0xab, 0xcd][..], &[0xff]);
        write_raw(&s, QUEUE, ("ep", seq), &[]);

        let is_corrupt = |r: Result<(), StoreError>, t: &str, k: &str| match r {
            Err(StoreError::Corrupt { table, key, .. }) => {
                assert_eq!((table, key.as_str()), (t, k))
            }
            other => panic!("expected Corrupt in {t} at {k}, got {other:?}"),
        };
        is_corrupt(s.get_registration("a").map(drop), "registrations", "a");
        is_corrupt(s.list_registrations().map(drop), "registrations", "a");
        is_corrupt(
            s.get_observation(&[0xab, 0xcd]).map(drop),
            "observations",
            "abcd",
        );
        is_corrupt(s.list_all_observations().map(drop), "observations", "abcd");
        let key = format!("ep/{seq}");
        is_corrupt(s.peek_queue("ep", 1).map(drop), "queue", &key);
        is_corrupt(s.drop_expired_queued(0).map(drop), "queue", &key);
        // A failed write changes nothing: the corrupt record is still there, untouched.
        is_corrupt(s.delete_registration("a").map(drop), "registrations", "a");
        let txn = s.db.begin_read().expect("txn");
        let regs = txn.open_table(REGS).expect("table");
        assert_eq!(
            regs.get("a").expect("get").map(|v| v.value().to_vec()),
            Some(vec![0x85, 0x07])
        );
    }

    #[test]
    fn a_file_of_another_schema_version_is_refused() {
        let dir = tempfile::tempdir().expect("temp dir");
        {
            let s = RedbStore::open(dir.path()).expect("open");
            let txn = s.db.begin_write().expect("txn");
            txn.open_table(META)
                .expect("meta")
                .insert(SCHEMA_KEY, 99)
                .expect("insert");
            txn.commit().expect("commit");
        }
        match RedbStore::open(dir.path()) {
            Err(StoreError::UnsupportedSchema {
                found: 99,
                supported: SCHEMA_VERSION,
            }) => {}
            Err(e) => panic!("unexpected error {e}"),
            Ok(_) => panic!("opened a file of schema version 99"),
        }
    }

    #[test]
    fn a_file_that_is_not_a_database_is_an_error() {
        let dir = tempfile::tempdir().expect("temp dir");
        std::fs::write(dir.path().join(FILE_NAME), b"not a redb file at all").expect("write");
        assert!(matches!(
            RedbStore::open(dir.path()),
            Err(StoreError::Backend(_))
        ));
    }
}
