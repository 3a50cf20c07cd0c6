//! Radio cells: the network-status table the operator's API gives, and the
//! campaign's own book of cells with their download slots and ready queues.
//!
//! Cells are interned: a device keeps a `u32` index instead of its cell's name, which
//! keeps the per-device state small at ten thousand devices and more.

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering};

use serde::{Deserialize, Serialize};

/// What the network-status API says about one cell.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct CellStatus {
    /// Bandwidth the operator grants firmware downloads in this cell, in bit/s; our
    /// own downloads count against it (it is not "what is left after them").
    pub available_bps: u64,
    /// A congested or failed cell takes no new downloads at all.
    #[serde(default)]
    pub congested: bool,
}

/// Every table ever made in this process gets distinct revisions, so a campaign that
/// polls with a table it has not seen before can never mistake it for an old one.
static NEXT_REVISION: AtomicU64 = AtomicU64::new(1);

fn next_revision() -> u64 {
    NEXT_REVISION.fetch_add(1, Ordering::Relaxed)
}

/// The network status of the cells the operator knows, cell id to status.
///
/// It carries a revision that changes with every edit: a campaign re-examines its
/// saturated cells only when the table changed or a slot was released, which keeps a
/// poll's cost proportional to what it decides rather than to the number of cells.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct CellTable {
    cells: HashMap<String, CellStatus>,
    #[serde(skip, default = "next_revision")]
    revision: u64,
}

impl Default for CellTable {
    fn default() -> Self {
        CellTable {
            cells: HashMap::new(),
            revision: next_revision(),
        }
    }
}

impl PartialEq for CellTable {
    fn eq(&self, other: &Self) -> bool {
        self.cells == other.cells
    }
}

impl CellTable {
    pub fn new() -> CellTable {
        CellTable::default()
    }

    pub fn insert(&mut self, cell: impl Into<String>, status: CellStatus) {
        self.cells.insert(cell.into(), status);
        self.revision = next_revision();
    }

    pub fn remove(&mut self, cell: &str) -> Option<CellStatus> {
        self.revision = next_revision();
        self.cells.remove(cell)
    }

    pub fn get(&self, cell: &str) -> Option<&CellStatus> {
        self.cells.get(cell)
    }

    pub fn len(&self) -> usize {
        self.cells.len()
    }

    pub fn is_empty(&self) -> bool {
        self.cells.is_empty()
    }

    pub fn iter(&self) -> impl Iterator<Item = (&str, &CellStatus)> {
        self.cells.iter().map(|(k, v)| (k.as_str(), v))
    }

    /// Changes whenever the table's content may have changed.
    pub fn revision(&self) -> u64 {
        self.revision
    }
}

impl<S: Into<String>> FromIterator<(S, CellStatus)> for CellTable {
    fn from_iter<T: IntoIterator<Item = (S, CellStatus)>>(iter: T) -> Self {
        CellTable {
            cells: iter.into_iter().map(|(k, v)| (k.into(), v)).collect(),
            revision: next_revision(),
        }
    }
}

/// Index of the bucket for devices whose cell is unknown.
pub const UNKNOWN_CELL: u32 = 0;

/// Where a cell stands in the dispatch loop.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub(crate) enum Sched {
    /// No ready device queued, or not looked at yet.
    #[default]
    Idle,
    /// In the round-robin queue of cells to take devices from.
    Runnable,
    /// Has ready devices but was full when last looked at.
    Saturated,
}

/// One cell in the campaign's book.
#[derive(Debug, Clone, Default)]
pub(crate) struct CellSlot {
    /// `None` for the unknown bucket.
    pub name: Option<String>,
    /// Downloads charged to this cell (in progress or being recovered).
    pub in_flight: u32,
    /// Ready devices, as (device index, queue ticket); stale entries are dropped
    /// when they reach the front.
    pub queue: VecDeque<(u32, u32)>,
    pub sched: Sched,
    /// Whether this cell is in [`CellBook::saturated`], so it is listed once.
    pub listed: bool,
}

/// The campaign's interned cells with their slots and dispatch bookkeeping.
#[derive(Debug, Clone)]
pub(crate) struct CellBook {
    pub slots: Vec<CellSlot>,
    index: HashMap<String, u32>,
    /// Cells to take devices from, round robin.
    pub runnable: VecDeque<u32>,
    /// Cells that were full; looked at again when a slot frees or the table changes.
    pub saturated: Vec<u32>,
    /// Revision of the table the saturated cells were judged against.
    pub seen_revision: Option<u64>,
}

impl Default for CellBook {
    fn default() -> Self {
        CellBook {
            slots: vec![CellSlot::default()],
            index: HashMap::new(),
            runnable: VecDeque::new(),
            saturated: Vec::new(),
            seen_revision: None,
        }
    }
}

impl CellBook {
    /// Builds the book from persisted names (index 0, the unknown bucket, is implied).
    pub fn from_names(names: Vec<String>) -> Result<CellBook, String> {
        let mut book = CellBook::default();
        for name in names {
            if book.index.contains_key(&name) {
                return Err(format!("cell {name:?} listed twice"));
            }
            book.intern(Some(&name));
        }
        Ok(book)
    }

    /// Names in index order, without the unknown bucket.
    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.slots.iter().skip(1).filter_map(|s| s.name.as_deref())
    }

    pub fn intern(&mut self, name: Option<&str>) -> u32 {
        let Some(name) = name else {
            return UNKNOWN_CELL;
        };
        if let Some(&i) = self.index.get(name) {
            return i;
        }
        let i = u32::try_from(self.slots.len()).unwrap_or(u32::MAX);
        self.slots.push(CellSlot {
            name: Some(name.to_string()),
            ..CellSlot::default()
        });
        self.index.insert(name.to_string(), i);
        i
    }

    pub fn len(&self) -> usize {
        self.slots.len()
    }

    pub fn name(&self, cell: u32) -> Option<&str> {
        self.slots
            .get(cell as usize)
            .and_then(|s| s.name.as_deref())
    }

    /// The status the table gives this cell; `None` means "use the default".
    pub fn status<'t>(&self, cell: u32, table: &'t CellTable) -> Option<&'t CellStatus> {
        self.name(cell).and_then(|n| table.get(n))
    }

    /// Queues a ready device and makes its cell runnable unless it is known full.
    /// A device that can be reached only for a while (`first`: a queue-mode device
    /// awake now) goes ahead of those that can be reached on any later turn, or its
    /// wake ends while it waits behind them and it starves until they are all done.
    pub fn push_ready(&mut self, cell: u32, device: u32, ticket: u32, first: bool) {
        let Some(slot) = self.slots.get_mut(cell as usize) else {
            return;
        };
        if first {
            slot.queue.push_front((device, ticket));
        } else {
            slot.queue.push_back((device, ticket));
        }
        if slot.sched == Sched::Idle {
            slot.sched = Sched::Runnable;
            self.runnable.push_back(cell);
        }
    }

    pub fn charge(&mut self, cell: u32) {
        if let Some(slot) = self.slots.get_mut(cell as usize) {
            slot.in_flight = slot.in_flight.saturating_add(1);
        }
    }

    /// Frees a slot; a cell that was full becomes runnable again.
    pub fn release(&mut self, cell: u32) {
        let Some(slot) = self.slots.get_mut(cell as usize) else {
            return;
        };
        slot.in_flight = slot.in_flight.saturating_sub(1);
        if slot.sched == Sched::Saturated {
            slot.sched = Sched::Runnable;
            self.runnable.push_back(cell);
            // Its entry in `saturated` is dropped lazily: only cells still marked
            // saturated are taken from that list.
        }
    }

    /// After the table changed, every full cell is worth another look.
    pub fn wake_saturated(&mut self) {
        for cell in std::mem::take(&mut self.saturated) {
            if let Some(slot) = self.slots.get_mut(cell as usize) {
                slot.listed = false;
                if slot.sched == Sched::Saturated {
                    slot.sched = Sched::Runnable;
                    self.runnable.push_back(cell);
                }
            }
        }
    }

    pub fn mark_saturated(&mut self, cell: u32) {
        if let Some(slot) = self.slots.get_mut(cell as usize) {
            slot.sched = Sched::Saturated;
            if !slot.listed {
                slot.listed = true;
                self.saturated.push(cell);
            }
        }
    }

    pub fn mark_idle(&mut self, cell: u32) {
        if let Some(slot) = self.slots.get_mut(cell as usize) {
            slot.sched = Sched::Idle;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn up(bps: u64) -> CellStatus {
        CellStatus {
            available_bps: bps,
            congested: false,
        }
    }

    #[test]
    fn every_edit_changes_the_revision_and_tables_never_share_one() {
        let mut a = CellTable::new();
        let b = CellTable::new();
        assert_ne!(a.revision(), b.revision());
        let r0 = a.revision();
        a.insert("c1", up(5));
        let r1 = a.revision();
        assert_ne!(r0, r1);
        a.remove("c1");
        assert_ne!(r1, a.revision());
        let c: CellTable = [("x", up(1))].into_iter().collect();
        assert_eq!(c.get("x"), Some(&up(1)));
        assert_eq!(c.len(), 1);
    }

    #[test]
    fn table_json_has_no_revision_and_gets_a_fresh_one() {
        let t: CellTable = [("c", up(7))].into_iter().collect();
        let text = serde_json::to_string(&t).unwrap();
        assert!(!text.contains("revision"));
        let back: CellTable = serde_json::from_str(&text).unwrap();
        assert_eq!(back, t);
        assert_ne!(back.revision(), t.revision());
        let s: CellStatus = serde_json::from_str(r#"{"available_bps":3}"#).unwrap();
        assert!(!s.congested);
    }

    #[test]
    fn interning_is_stable_and_unknown_is_zero() {
        let mut book = CellBook::default();
        assert_eq!(book.intern(None), UNKNOWN_CELL);
        let a = book.intern(Some("a"));
        let b = book.intern(Some("b"));
        assert_eq!(book.intern(Some("a")), a);
        assert_ne!(a, b);
        assert_eq!(book.name(a), Some("a"));
        assert_eq!(book.name(UNKNOWN_CELL), None);
        let names: Vec<String> = book.names().map(str::to_string).collect();
        let again = CellBook::from_names(names).unwrap();
        assert_eq!(again.name(a), Some("a"));
        assert_eq!(again.name(b), Some("b"));
        assert!(CellBook::from_names(vec!["a".into(), "a".into()]).is_err());
    }

    #[test]
    fn a_released_slot_makes_a_full_cell_runnable_once() {
        let mut book = CellBook::default();
        let c = book.intern(Some("c"));
        book.push_ready(c, 1, 1, false);
        book.push_ready(c, 2, 1, true);
        assert_eq!(book.runnable.len(), 1, "a cell is queued once");
        book.runnable.clear();
        book.charge(c);
        book.mark_saturated(c);
        book.release(c);
        assert_eq!(book.slots[c as usize].in_flight, 0);
        assert_eq!(book.runnable, [c]);
        book.release(c);
        assert_eq!(book.runnable, [c], "already runnable");
        assert_eq!(book.slots[c as usize].in_flight, 0, "never below zero");
        book.runnable.clear();
        for _ in 0..5 {
            book.mark_saturated(c);
            book.release(c);
        }
        assert_eq!(book.saturated, [c], "listed once however often");
        book.runnable.clear();
        book.wake_saturated();
        assert!(
            book.runnable.is_empty(),
            "runnable already: not queued again"
        );
    }

    #[test]
    fn wake_saturated_requeues_full_cells() {
        let mut book = CellBook::default();
        let a = book.intern(Some("a"));
        let b = book.intern(Some("b"));
        book.mark_saturated(a);
        book.mark_saturated(b);
        book.wake_saturated();
        assert_eq!(book.runnable, [a, b]);
        assert!(book.saturated.is_empty());
        // Out-of-range indexes are ignored, never a panic.
        book.charge(99);
        book.release(99);
        book.push_ready(99, 0, 0, false);
        book.mark_saturated(99);
    }
}
