//! Attribute names and sets of them.
//!
//! Groups are kept current incrementally: a change to a device reports which
//! attributes moved, a filter knows which attributes it reads, and only the
//! groups where the two meet are re-evaluated. Both sides are the same
//! bitset so that the test is one `&` per group, whatever the fleet size.

use std::fmt;

macro_rules! attrs {
    ($($variant:ident => $name:literal, $var:literal;)*) => {
        /// One attribute of a device, by the name filters and JSON use.
        #[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
        #[repr(u8)]
        pub enum Attr {
            $($variant,)*
        }

        impl Attr {
            /// Every attribute, in declaration order.
            pub const ALL: &'static [Attr] = &[$(Attr::$variant,)*];

            /// The name used in filters, in [`Changed`] sets and in JSON.
            pub fn name(self) -> &'static str {
                match self {
                    $(Attr::$variant => $name,)*
                }
            }

            /// The attribute of that name, if any.
            pub fn from_name(name: &str) -> Option<Attr> {
                match name {
                    $($name => Some(Attr::$variant),)*
                    _ => None,
                }
            }

            /// Whether a filter may read it: a few raw inputs are only
            /// visible through what is derived from them.
            pub fn is_filter_variable(self) -> bool {
                match self {
                    $(Attr::$variant => $var,)*
                }
            }
        }
    };
}

attrs! {
    Endpoint => "endpoint", true;
    Manufacturer => "manufacturer", true;
    Model => "model", true;
    Serial => "serial", true;
    Firmware => "firmware", true;
    Hardware => "hardware", true;
    Software => "software", true;
    DeviceType => "device_type", true;
    Lwm2mVersion => "lwm2m_version", true;
    Objects => "objects", true;
    Protocols => "protocols", true;
    Delivery => "delivery", true;
    Online => "online", true;
    Awake => "awake", true;
    QueueMode => "queue_mode", true;
    NextWake => "next_wake", true;
    LastSeen => "last_seen", true;
    Bearer => "bearer", true;
    BearerCode => "bearer_code", true;
    AvailableBearers => "available_bearers", false;
    HasWifi => "has_wifi", true;
    Signal => "signal", true;
    LinkQuality => "link_quality", true;
    CellId => "cell_id", true;
    Mcc => "mcc", true;
    Mnc => "mnc", true;
    Roaming => "roaming", true;
    HomeNetwork => "home_network", false;
    Lat => "lat", true;
    Lon => "lon", true;
    Region => "region", true;
    Battery => "battery", true;
    PowerSources => "power_sources", false;
    OnMains => "on_mains", true;
    Billing => "billing", true;
    RatePlan => "rate_plan", true;
    Labels => "labels", true;
}

impl fmt::Display for Attr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// A set of attributes: those that changed, or those a filter reads.
#[derive(Clone, Copy, Default, PartialEq, Eq, Hash)]
pub struct Changed(u64);

impl Changed {
    /// No attribute.
    pub const NONE: Changed = Changed(0);

    /// Every attribute: what a device seen for the first time has changed.
    pub fn all() -> Changed {
        Attr::ALL.iter().fold(Changed::NONE, |set, &a| set.with(a))
    }

    pub fn is_empty(self) -> bool {
        self.0 == 0
    }

    pub fn contains(self, attr: Attr) -> bool {
        self.0 & Self::bit(attr) != 0
    }

    pub fn insert(&mut self, attr: Attr) {
        self.0 |= Self::bit(attr);
    }

    /// Inserts `attr` when `moved` is true: the common shape of "compare old
    /// and new, note it if they differ".
    pub fn note(&mut self, attr: Attr, moved: bool) {
        if moved {
            self.insert(attr);
        }
    }

    /// This set with `attr` added.
    #[must_use]
    pub fn with(mut self, attr: Attr) -> Changed {
        self.insert(attr);
        self
    }

    pub fn union(self, other: Changed) -> Changed {
        Changed(self.0 | other.0)
    }

    pub fn intersects(self, other: Changed) -> bool {
        self.0 & other.0 != 0
    }

    pub fn len(self) -> usize {
        self.0.count_ones() as usize
    }

    /// The attributes in declaration order.
    pub fn iter(self) -> impl Iterator<Item = Attr> {
        Attr::ALL.iter().copied().filter(move |&a| self.contains(a))
    }

    /// The names of the attributes, in declaration order.
    pub fn names(self) -> impl Iterator<Item = &'static str> {
        self.iter().map(Attr::name)
    }

    fn bit(attr: Attr) -> u64 {
        1u64 << (attr as u8)
    }
}

impl std::ops::BitOr for Changed {
    type Output = Changed;
    fn bitor(self, rhs: Changed) -> Changed {
        self.union(rhs)
    }
}

impl std::ops::BitOrAssign for Changed {
    fn bitor_assign(&mut self, rhs: Changed) {
        *self = self.union(rhs);
    }
}

impl FromIterator<Attr> for Changed {
    fn from_iter<I: IntoIterator<Item = Attr>>(iter: I) -> Changed {
        iter.into_iter().fold(Changed::NONE, Changed::with)
    }
}

impl fmt::Debug for Changed {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_set().entries(self.names()).finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_attribute_fits_in_the_bitset_and_names_round_trip() {
        assert!(Attr::ALL.len() <= 64);
        for (i, &a) in Attr::ALL.iter().enumerate() {
            assert_eq!(a as usize, i);
            assert_eq!(Attr::from_name(a.name()), Some(a));
        }
        assert_eq!(Attr::from_name("nope"), None);
        assert_eq!(Changed::all().len(), Attr::ALL.len());
    }

    #[test]
    fn set_operations() {
        let a = Changed::NONE.with(Attr::Model).with(Attr::Battery);
        let b: Changed = [Attr::Battery, Attr::Region].into_iter().collect();
        assert!(a.intersects(b));
        assert!(!a.intersects(Changed::NONE.with(Attr::Region)));
        assert_eq!((a | b).len(), 3);
        assert_eq!(a.names().collect::<Vec<_>>(), ["model", "battery"]);
        assert!(Changed::NONE.is_empty());
        let mut c = Changed::NONE;
        c.note(Attr::Online, false);
        assert!(c.is_empty());
        c.note(Attr::Online, true);
        assert!(c.contains(Attr::Online));
    }

    #[test]
    fn raw_inputs_are_not_filter_variables() {
        assert!(!Attr::HomeNetwork.is_filter_variable());
        assert!(!Attr::PowerSources.is_filter_variable());
        assert!(!Attr::AvailableBearers.is_filter_variable());
        assert!(Attr::OnMains.is_filter_variable());
    }
}
