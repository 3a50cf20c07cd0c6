//! Sharing of strings and object lists that repeat across the fleet.
//!
//! A million devices report a handful of manufacturers, models and firmware
//! versions, and announce one of a few object lists; storing one copy of each
//! saves hundreds of bytes per device. They come from devices, so each table is
//! bounded: once full, unused entries are dropped, and if that frees nothing the
//! value is simply not shared.

use std::collections::HashSet;
use std::hash::Hash;
use std::sync::Arc;

use crate::attributes::ObjectList;

/// Default number of distinct strings kept.
pub const DEFAULT_CAPACITY: usize = 65_536;

/// Bounded tables of shared strings and object lists.
#[derive(Debug)]
pub struct Interner {
    strings: Table<str>,
    object_lists: Table<[(u16, Arc<str>)]>,
}

/// One bounded table of shared values.
#[derive(Debug)]
struct Table<T: ?Sized> {
    values: HashSet<Arc<T>>,
    capacity: usize,
    misses_since_purge: usize,
}

impl<T: ?Sized + Hash + Eq> Table<T> {
    fn new(capacity: usize) -> Table<T> {
        Table {
            values: HashSet::new(),
            capacity,
            misses_since_purge: 0,
        }
    }

    /// The shared copy of `value`, made by `make` (and shared if there is room) when
    /// there is none.
    fn share(&mut self, value: &T, make: impl FnOnce() -> Arc<T>) -> Arc<T> {
        if let Some(found) = self.values.get(value) {
            return Arc::clone(found);
        }
        if self.values.len() >= self.capacity {
            self.misses_since_purge += 1;
            // Purging is a scan of the table: only worth it once enough
            // values went unshared, so a full table of live values does not
            // cost a scan per call.
            if self.misses_since_purge > self.capacity / 8 {
                self.purge();
            }
            if self.values.len() >= self.capacity {
                return make();
            }
        }
        let shared = make();
        self.values.insert(Arc::clone(&shared));
        shared
    }

    fn purge(&mut self) {
        self.values.retain(|v| Arc::strong_count(v) > 1);
        self.misses_since_purge = 0;
    }
}

impl Default for Interner {
    fn default() -> Self {
        Interner::with_capacity(DEFAULT_CAPACITY)
    }
}

impl Interner {
    /// A table that keeps at most `capacity` strings (0: shares nothing), and as many
    /// object lists.
    pub fn with_capacity(capacity: usize) -> Interner {
        Interner {
            strings: Table::new(capacity),
            object_lists: Table::new(capacity),
        }
    }

    /// The shared copy of `s`, made shared if there is room.
    pub fn intern(&mut self, s: &str) -> Arc<str> {
        self.strings.share(s, || Arc::from(s))
    }

    /// The shared copy of an object list (its versions already interned).
    pub fn share_objects(&mut self, list: Vec<(u16, Arc<str>)>) -> ObjectList {
        self.object_lists
            .share(&list, || Arc::from(list.as_slice()))
    }

    /// Number of strings in the table.
    pub fn len(&self) -> usize {
        self.strings.values.len()
    }

    pub fn is_empty(&self) -> bool {
        self.strings.values.is_empty()
    }

    /// Drops the strings and lists no device holds any more.
    pub fn purge(&mut self) {
        self.strings.purge();
        self.object_lists.purge();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn equal_strings_share_one_allocation() {
        let mut i = Interner::default();
        let a = i.intern("BG95-M3");
        let b = i.intern("BG95-M3");
        assert!(Arc::ptr_eq(&a, &b));
        assert_eq!(i.len(), 1);
    }

    #[test]
    fn a_full_table_reclaims_unused_entries_else_stops_sharing() {
        let mut i = Interner::with_capacity(2);
        let a = i.intern("a");
        drop(i.intern("b"));
        // Full: the purge drops the unused "b" and "c" takes its place.
        let c1 = i.intern("c");
        let c2 = i.intern("c");
        assert!(Arc::ptr_eq(&c1, &c2));
        assert_eq!(i.len(), 2);
        // Full of live strings: "d" is handed out unshared.
        let d1 = i.intern("d");
        let d2 = i.intern("d");
        assert_eq!(&*d1, "d");
        assert!(!Arc::ptr_eq(&d1, &d2));
        assert!(Arc::ptr_eq(&a, &i.intern("a")));
        assert_eq!(i.len(), 2);
    }

    #[test]
    fn equal_object_lists_share_one_allocation() {
        let mut i = Interner::default();
        let v = i.intern("1.1");
        let a = i.share_objects(vec![(3, v.clone()), (5, v.clone())]);
        let b = i.share_objects(vec![(3, v.clone()), (5, v.clone())]);
        let c = i.share_objects(vec![(3, v)]);
        assert!(Arc::ptr_eq(&a, &b));
        assert!(!Arc::ptr_eq(&a, &c));
        drop((a, b));
        i.purge();
        assert_eq!(i.object_lists.values.len(), 1);
    }

    #[test]
    fn zero_capacity_never_shares() {
        let mut i = Interner::with_capacity(0);
        let a = i.intern("x");
        let b = i.intern("x");
        assert!(!Arc::ptr_eq(&a, &b));
        assert!(i.is_empty());
    }
}
