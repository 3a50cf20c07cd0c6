//! Sharing of strings that repeat across the fleet.
//!
//! A million devices report a handful of manufacturers, models and firmware
//! versions; storing one copy of each saves hundreds of bytes per device. The
//! strings come from devices, so the table is bounded: once full, unused
//! entries are dropped, and if that frees nothing the string is simply not
//! shared.

use std::collections::HashSet;
use std::sync::Arc;

/// Default number of distinct strings kept.
pub const DEFAULT_CAPACITY: usize = 65_536;

/// A bounded table of shared strings.
#[derive(Debug)]
pub struct Interner {
    strings: HashSet<Arc<str>>,
    capacity: usize,
    misses_since_purge: usize,
}

impl Default for Interner {
    fn default() -> Self {
        Interner::with_capacity(DEFAULT_CAPACITY)
    }
}

impl Interner {
    /// A table that keeps at most `capacity` strings (0: shares nothing).
    pub fn with_capacity(capacity: usize) -> Interner {
        Interner {
            strings: HashSet::new(),
            capacity,
            misses_since_purge: 0,
        }
    }

    /// The shared copy of `s`, made shared if there is room.
    pub fn intern(&mut self, s: &str) -> Arc<str> {
        if let Some(found) = self.strings.get(s) {
            return Arc::clone(found);
        }
        if self.strings.len() >= self.capacity {
            self.misses_since_purge += 1;
            // Purging is a scan of the table: only worth it once enough
            // strings went unshared, so a full table of live strings does not
            // cost a scan per call.
            if self.misses_since_purge > self.capacity / 8 {
                self.purge();
            }
            if self.strings.len() >= self.capacity {
                return Arc::from(s);
            }
        }
        let shared: Arc<str> = Arc::from(s);
        self.strings.insert(Arc::clone(&shared));
        shared
    }

    /// Number of strings in the table.
    pub fn len(&self) -> usize {
        self.strings.len()
    }

    pub fn is_empty(&self) -> bool {
        self.strings.is_empty()
    }

    /// Drops the strings no device holds any more.
    pub fn purge(&mut self) {
        self.strings.retain(|s| Arc::strong_count(s) > 1);
        self.misses_since_purge = 0;
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
    fn zero_capacity_never_shares() {
        let mut i = Interner::with_capacity(0);
        let a = i.intern("x");
        let b = i.intern("x");
        assert!(!Arc::ptr_eq(&a, &b));
        assert!(i.is_empty());
    }
}
