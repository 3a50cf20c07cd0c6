//! Dynamic groups whose membership is kept current as devices change.
//!
//! A group is a filter and the set of devices it matches. The full fleet is
//! scanned once, when the group is defined; after that a device's change is
//! evaluated only against the groups whose filter reads an attribute that
//! changed, so a million devices reporting their signal strength cost nothing
//! to a group on `model`.
//!
//! The contract that keeps memberships exact: every device is reported to
//! [`Groups::device_changed`] when it appears (with [`Changed::all`]) and
//! whenever it changes (with the attributes that changed), and to
//! [`Groups::device_removed`] when it goes; and a group is defined with every
//! device known at that moment.
//! [`crate::Inventory`] does all of this.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::ops::Bound;
use std::sync::Arc;

use serde::Serialize;

use crate::attributes::Attributes;
use crate::changed::Changed;
use crate::filter::Filter;

/// Most groups defined at once.
pub const MAX_GROUPS: usize = 1_024;
/// Longest group id, in bytes.
pub const MAX_GROUP_ID: usize = 64;
/// Longest group name, in bytes.
pub const MAX_GROUP_NAME: usize = 256;
/// Most members one page lists.
pub const MAX_PAGE: usize = 10_000;

/// Why a group operation was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum GroupError {
    #[error("at most {MAX_GROUPS} groups may be defined")]
    TooManyGroups,
    #[error("group ids are 1 to {MAX_GROUP_ID} letters, digits, '.', '_' or '-'")]
    InvalidId,
    #[error("group names are at most {MAX_GROUP_NAME} bytes")]
    NameTooLong,
    #[error("group {0:?} already exists")]
    Exists(String),
    #[error("no group {0:?}")]
    NotFound(String),
}

/// A device joined or left a group.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize)]
pub struct MembershipChange {
    pub group: Arc<str>,
    pub endpoint: Arc<str>,
    pub joined: bool,
}

/// One page of a group's members, in endpoint order.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct MembersPage {
    pub members: Vec<Arc<str>>,
    /// Pass as `after` for the next page; `None` on the last one.
    pub next_after: Option<Arc<str>>,
}

/// A group as the API shows it.
#[derive(Debug, Clone, Copy)]
pub struct GroupInfo<'a> {
    pub id: &'a str,
    pub name: &'a str,
    pub filter: &'a Filter,
    pub count: usize,
}

#[derive(Debug)]
struct Group {
    id: Arc<str>,
    name: Box<str>,
    filter: Filter,
    members: BTreeSet<Arc<str>>,
}

impl Group {
    fn info(&self) -> GroupInfo<'_> {
        GroupInfo {
            id: &self.id,
            name: &self.name,
            filter: &self.filter,
            count: self.members.len(),
        }
    }
}

/// The groups of a fleet and their members.
#[derive(Debug, Default)]
pub struct Groups {
    groups: BTreeMap<Arc<str>, Group>,
    /// The devices in at least one group, with the ids of their groups, sorted. Only
    /// those: a fleet is mostly in no group while it has none defined, and an entry of
    /// each would cost about 40 bytes a device.
    devices: HashMap<Arc<str>, Box<[Arc<str>]>>,
    evaluations: u64,
}

fn check_id(id: &str) -> Result<(), GroupError> {
    let ok = !id.is_empty()
        && id.len() <= MAX_GROUP_ID
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'));
    if ok {
        Ok(())
    } else {
        Err(GroupError::InvalidId)
    }
}

fn check_name(name: &str) -> Result<(), GroupError> {
    if name.len() > MAX_GROUP_NAME {
        Err(GroupError::NameTooLong)
    } else {
        Ok(())
    }
}

impl Groups {
    pub fn new() -> Groups {
        Groups::default()
    }

    /// Defines a group and fills it from `devices`, which should be the whole
    /// fleet. Returns the number of members.
    pub fn define<'a>(
        &mut self,
        id: &str,
        name: &str,
        filter: Filter,
        devices: impl IntoIterator<Item = &'a Attributes>,
    ) -> Result<usize, GroupError> {
        check_id(id)?;
        check_name(name)?;
        if self.groups.contains_key(id) {
            return Err(GroupError::Exists(id.to_string()));
        }
        if self.groups.len() >= MAX_GROUPS {
            return Err(GroupError::TooManyGroups);
        }
        let id: Arc<str> = Arc::from(id);
        let members = self.scan(&filter, devices);
        for ep in &members {
            self.index_add(ep, &id);
        }
        let count = members.len();
        self.groups.insert(
            Arc::clone(&id),
            Group {
                id,
                name: name.into(),
                filter,
                members,
            },
        );
        Ok(count)
    }

    /// Replaces a group's name and filter and rescans `devices`, returning
    /// who joined and who left.
    pub fn redefine<'a>(
        &mut self,
        id: &str,
        name: &str,
        filter: Filter,
        devices: impl IntoIterator<Item = &'a Attributes>,
    ) -> Result<Vec<MembershipChange>, GroupError> {
        check_name(name)?;
        if !self.groups.contains_key(id) {
            return Err(GroupError::NotFound(id.to_string()));
        }
        let new = self.scan(&filter, devices);
        let Some(group) = self.groups.get_mut(id) else {
            return Err(GroupError::NotFound(id.to_string()));
        };
        let gid = Arc::clone(&group.id);
        let old = std::mem::replace(&mut group.members, new);
        group.name = name.into();
        group.filter = filter;
        let mut changes = Vec::new();
        let left: Vec<Arc<str>> = old.difference(&group.members).cloned().collect();
        let joined: Vec<Arc<str>> = group.members.difference(&old).cloned().collect();
        for ep in left {
            self.index_remove(&ep, &gid);
            changes.push(MembershipChange {
                group: Arc::clone(&gid),
                endpoint: ep,
                joined: false,
            });
        }
        for ep in joined {
            self.index_add(&ep, &gid);
            changes.push(MembershipChange {
                group: Arc::clone(&gid),
                endpoint: ep,
                joined: true,
            });
        }
        Ok(changes)
    }

    /// Removes a group; returns how many members it had. Its members are not
    /// reported one by one.
    pub fn remove_group(&mut self, id: &str) -> Result<usize, GroupError> {
        let group = self
            .groups
            .remove(id)
            .ok_or_else(|| GroupError::NotFound(id.to_string()))?;
        for ep in &group.members {
            self.index_remove(ep, &group.id);
        }
        Ok(group.members.len())
    }

    /// Brings memberships up to date after `attrs` changed in `changed`
    /// ([`Changed::all`] for a device not seen before).
    pub fn device_changed(
        &mut self,
        attrs: &Attributes,
        changed: Changed,
    ) -> Vec<MembershipChange> {
        if changed.is_empty() {
            return Vec::new();
        }
        let ep = attrs.shared_endpoint();
        // A new device meets every group, those whose filter reads nothing too.
        let new = changed == Changed::all();
        let mut changes = Vec::new();
        for group in self.groups.values_mut() {
            if !new && !group.filter.reads().intersects(changed) {
                continue;
            }
            self.evaluations += 1;
            let is = group.filter.matches(attrs);
            if is == group.members.contains(&**ep) {
                continue;
            }
            if is {
                group.members.insert(Arc::clone(ep));
            } else {
                group.members.remove(&**ep);
            }
            changes.push(MembershipChange {
                group: Arc::clone(&group.id),
                endpoint: Arc::clone(ep),
                joined: is,
            });
        }
        for c in &changes {
            if c.joined {
                self.index_add(ep, &c.group);
            } else {
                self.index_remove(ep, &c.group);
            }
        }
        changes
    }

    /// Takes a device out of every group and forgets it.
    pub fn device_removed(&mut self, endpoint: &str) -> Vec<MembershipChange> {
        let Some((ep, ids)) = self.devices.remove_entry(endpoint) else {
            return Vec::new();
        };
        let mut changes = Vec::with_capacity(ids.len());
        for id in ids.iter() {
            if let Some(g) = self.groups.get_mut(id) {
                g.members.remove(endpoint);
            }
            changes.push(MembershipChange {
                group: Arc::clone(id),
                endpoint: Arc::clone(&ep),
                joined: false,
            });
        }
        changes
    }

    /// Up to `limit` (at most [`MAX_PAGE`]) members after `after`.
    pub fn members(
        &self,
        id: &str,
        after: Option<&str>,
        limit: usize,
    ) -> Result<MembersPage, GroupError> {
        let group = self
            .groups
            .get(id)
            .ok_or_else(|| GroupError::NotFound(id.to_string()))?;
        let limit = limit.clamp(1, MAX_PAGE);
        let start = after.map_or(Bound::Unbounded, Bound::Excluded);
        let mut range = group.members.range::<str, _>((start, Bound::Unbounded));
        let members: Vec<Arc<str>> = range.by_ref().take(limit).cloned().collect();
        let next_after = if range.next().is_some() {
            members.last().cloned()
        } else {
            None
        };
        Ok(MembersPage {
            members,
            next_after,
        })
    }

    /// Number of members, or `None` for an unknown group.
    pub fn count(&self, id: &str) -> Option<usize> {
        self.groups.get(id).map(|g| g.members.len())
    }

    pub fn is_member(&self, id: &str, endpoint: &str) -> bool {
        self.groups
            .get(id)
            .is_some_and(|g| g.members.contains(endpoint))
    }

    /// The ids of the groups a device is in, sorted.
    pub fn groups_of(&self, endpoint: &str) -> &[Arc<str>] {
        self.devices.get(endpoint).map_or(&[], |g| g)
    }

    pub fn get(&self, id: &str) -> Option<GroupInfo<'_>> {
        self.groups.get(id).map(Group::info)
    }

    /// The groups in id order.
    pub fn iter(&self) -> impl Iterator<Item = GroupInfo<'_>> {
        self.groups.values().map(Group::info)
    }

    pub fn len(&self) -> usize {
        self.groups.len()
    }

    pub fn is_empty(&self) -> bool {
        self.groups.is_empty()
    }

    /// Filter evaluations made since creation: for metrics, and to check that
    /// unrelated changes cost none.
    pub fn evaluations(&self) -> u64 {
        self.evaluations
    }

    fn scan<'a>(
        &mut self,
        filter: &Filter,
        devices: impl IntoIterator<Item = &'a Attributes>,
    ) -> BTreeSet<Arc<str>> {
        let mut members = BTreeSet::new();
        for d in devices {
            self.evaluations += 1;
            if filter.matches(d) {
                members.insert(Arc::clone(d.shared_endpoint()));
            }
        }
        members
    }

    /// Holds `name`'s allocation for that device in every group it is in.
    pub(crate) fn share_name(&mut self, name: &Arc<str>) {
        let Some(ids) = self.devices.remove(&**name) else {
            return;
        };
        for id in ids.iter() {
            if let Some(g) = self.groups.get_mut(id) {
                if g.members.remove(&**name) {
                    g.members.insert(Arc::clone(name));
                }
            }
        }
        self.devices.insert(Arc::clone(name), ids);
    }

    fn index_add(&mut self, ep: &Arc<str>, id: &Arc<str>) {
        let entry = self.devices.entry(Arc::clone(ep)).or_default();
        if let Err(at) = entry.binary_search(id) {
            let mut v = entry.to_vec();
            v.insert(at, Arc::clone(id));
            *entry = v.into_boxed_slice();
        }
    }

    fn index_remove(&mut self, ep: &str, id: &str) {
        if let Some(entry) = self.devices.get_mut(ep) {
            if entry.iter().any(|g| &**g == id) {
                *entry = entry.iter().filter(|g| &***g != id).cloned().collect();
            }
            if entry.is_empty() {
                self.devices.remove(ep);
            }
        }
    }
}

/// How many of `devices` a filter matches: for showing an operator what a
/// group would hold before defining it.
pub fn preview<'a>(filter: &Filter, devices: impl IntoIterator<Item = &'a Attributes>) -> usize {
    devices.into_iter().filter(|d| filter.matches(d)).count()
}

#[cfg(test)]
mod tests {
    use super::*;
    use lwm2m_objects::{Path, Value};
    use proptest::prelude::*;

    fn dev(ep: &str, model: &str, battery: i64) -> Attributes {
        let mut a = Attributes::new(ep).unwrap();
        a.apply(&"/3/0/1".parse().unwrap(), &Value::String(model.into()));
        a.apply(&"/3/0/9".parse().unwrap(), &Value::Integer(battery));
        a
    }

    fn f(src: &str) -> Filter {
        Filter::compile(src).unwrap()
    }

    #[test]
    fn define_scans_and_changes_update_incrementally() {
        let mut fleet = vec![
            dev("a", "BG95", 80),
            dev("b", "BG95", 10),
            dev("c", "nRF9160", 5),
        ];
        let mut g = Groups::new();
        for d in &fleet {
            g.device_changed(d, Changed::all());
        }
        // In no group, a device takes no room in the index.
        assert!(g.devices.is_empty());
        assert_eq!(
            g.define("bg95", "BG95 modules", f("model == 'BG95'"), &fleet),
            Ok(2)
        );
        assert_eq!(
            g.define("low", "Low battery", f("battery < 20"), &fleet),
            Ok(2)
        );
        assert_eq!(
            g.groups_of("b").iter().map(|s| &**s).collect::<Vec<_>>(),
            ["bg95", "low"]
        );

        let before = g.evaluations();
        // The signal is read by no group: nothing is evaluated.
        let c = fleet[0].apply(&"/4/0/2".parse().unwrap(), &Value::Integer(-80));
        assert!(g.device_changed(&fleet[0], c).is_empty());
        assert_eq!(g.evaluations(), before);
        // The battery is read by one group: one evaluation.
        let c = fleet[0].apply(&"/3/0/9".parse().unwrap(), &Value::Integer(15));
        let changes = g.device_changed(&fleet[0], c);
        assert_eq!(g.evaluations(), before + 1);
        assert_eq!(
            changes,
            [MembershipChange {
                group: "low".into(),
                endpoint: "a".into(),
                joined: true
            }]
        );
        assert_eq!(g.count("low"), Some(3));

        // A new device is evaluated against every group.
        let d = dev("d", "BG95", 50);
        let changes = g.device_changed(&d, Changed::all());
        assert_eq!(g.evaluations(), before + 3);
        assert_eq!(changes.len(), 1);
        assert!(g.is_member("bg95", "d"));
        fleet.push(d);

        let left = g.device_removed("b");
        assert_eq!(left.len(), 2);
        assert!(left.iter().all(|c| !c.joined && &*c.endpoint == "b"));
        assert!(g.groups_of("b").is_empty());
        assert_eq!(g.count("bg95"), Some(2));
        assert!(g.device_removed("b").is_empty());
    }

    #[test]
    fn redefine_reports_the_difference_and_remove_cleans_the_index() {
        let fleet = vec![dev("a", "BG95", 80), dev("b", "BG95", 10), dev("c", "X", 5)];
        let mut g = Groups::new();
        g.define("g", "", f("model == 'BG95'"), &fleet).unwrap();
        let mut changes = g.redefine("g", "low", f("battery < 20"), &fleet).unwrap();
        changes.sort_by(|x, y| x.endpoint.cmp(&y.endpoint));
        assert_eq!(
            changes
                .iter()
                .map(|c| (&*c.endpoint, c.joined))
                .collect::<Vec<_>>(),
            [("a", false), ("c", true)]
        );
        assert_eq!(g.get("g").unwrap().name, "low");
        assert_eq!(g.get("g").unwrap().filter.source(), "battery < 20");
        assert_eq!(g.remove_group("g"), Ok(2));
        assert!(g.groups_of("b").is_empty());
        assert_eq!(g.remove_group("g"), Err(GroupError::NotFound("g".into())));
        assert!(matches!(
            g.redefine("g", "", f("true"), &fleet),
            Err(GroupError::NotFound(_))
        ));
    }

    #[test]
    fn validation() {
        let mut g = Groups::new();
        let none: [Attributes; 0] = [];
        for bad in ["", "has space", "slash/", &"x".repeat(MAX_GROUP_ID + 1)] {
            assert_eq!(
                g.define(bad, "", f("true"), &none),
                Err(GroupError::InvalidId),
                "{bad:?}"
            );
        }
        assert_eq!(
            g.define("ok", &"n".repeat(MAX_GROUP_NAME + 1), f("true"), &none),
            Err(GroupError::NameTooLong)
        );
        g.define("ok", "", f("true"), &none).unwrap();
        assert_eq!(
            g.define("ok", "", f("true"), &none),
            Err(GroupError::Exists("ok".into()))
        );
        for i in 1..MAX_GROUPS {
            g.define(&format!("g{i}"), "", f("true"), &none).unwrap();
        }
        assert_eq!(
            g.define("one-more", "", f("true"), &none),
            Err(GroupError::TooManyGroups)
        );
        assert_eq!(g.len(), MAX_GROUPS);
    }

    #[test]
    fn pages() {
        let fleet: Vec<Attributes> = (0..25).map(|i| dev(&format!("d{i:02}"), "M", 1)).collect();
        let mut g = Groups::new();
        g.define("all", "", f("model == 'M'"), &fleet).unwrap();
        let mut seen = Vec::new();
        let mut after: Option<Arc<str>> = None;
        loop {
            let page = g.members("all", after.as_deref(), 10).unwrap();
            assert!(page.members.len() <= 10);
            seen.extend(page.members.iter().cloned());
            match page.next_after {
                Some(n) => after = Some(n),
                None => break,
            }
        }
        assert_eq!(seen.len(), 25);
        assert!(seen.windows(2).all(|w| w[0] < w[1]));
        assert_eq!(g.members("all", Some("d99"), 10).unwrap().members.len(), 0);
        assert_eq!(g.members("all", None, 0).unwrap().members.len(), 1);
        assert!(g.members("nope", None, 10).is_err());
        assert_eq!(preview(&f("battery == 1"), &fleet), 25);
        assert_eq!(g.iter().map(|i| i.count).sum::<usize>(), 25);
    }

    #[derive(Debug, Clone)]
    enum Op {
        Battery(usize, i64),
        Model(usize, u8),
        Signal(usize, i64),
        Online(usize, bool),
        Remove(usize),
    }

    fn op() -> impl Strategy<Value = Op> {
        prop_oneof![
            (0..8usize, 0..100i64).prop_map(|(d, b)| Op::Battery(d, b)),
            (0..8usize, 0..3u8).prop_map(|(d, m)| Op::Model(d, m)),
            (0..8usize, -120..-50i64).prop_map(|(d, s)| Op::Signal(d, s)),
            (0..8usize, any::<bool>()).prop_map(|(d, o)| Op::Online(d, o)),
            (0..8usize).prop_map(Op::Remove),
        ]
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(64))]

        #[test]
        fn incremental_membership_equals_a_rescan(ops in proptest::collection::vec(op(), 0..60)) {
            let filters = [
                ("low", "battery < 30"),
                ("bg", "model == 'M0' || model == 'M1'"),
                ("weak-online", "online && signal < -100"),
                ("not-low", "!(battery < 30)"),
                ("all", "true"),
            ];
            let mut fleet: Vec<Option<Attributes>> = vec![None; 8];
            let mut g = Groups::new();
            for (id, src) in filters {
                g.define(id, id, f(src), fleet.iter().flatten()).unwrap();
            }
            let path = |s: &str| s.parse::<Path>().unwrap();
            // A device appears with everything changed, as the contract says.
            let known = |fleet: &mut Vec<Option<Attributes>>, g: &mut Groups, d: usize| {
                if fleet[d].is_none() {
                    let a = Attributes::new(&format!("d{d}")).unwrap();
                    g.device_changed(&a, Changed::all());
                    fleet[d] = Some(a);
                }
            };
            for op in ops {
                let (d, change) = match op {
                    Op::Remove(d) => {
                        fleet[d] = None;
                        g.device_removed(&format!("d{d}"));
                        continue;
                    }
                    Op::Battery(d, b) => (d, (path("/3/0/9"), Value::Integer(b))),
                    Op::Model(d, m) => (d, (path("/3/0/1"), Value::String(format!("M{m}")))),
                    Op::Signal(d, s) => (d, (path("/4/0/2"), Value::Integer(s))),
                    Op::Online(d, o) => {
                        known(&mut fleet, &mut g, d);
                        let Some(a) = fleet[d].as_mut() else { continue };
                        let c = a.set_online(o);
                        g.device_changed(a, c);
                        continue;
                    }
                };
                known(&mut fleet, &mut g, d);
                let Some(a) = fleet[d].as_mut() else { continue };
                let c = a.apply(&change.0, &change.1);
                g.device_changed(a, c);
            }
            for (id, src) in filters {
                let filter = f(src);
                let want: BTreeSet<Arc<str>> = fleet
                    .iter()
                    .flatten()
                    .filter(|a| filter.matches(a))
                    .map(|a| Arc::clone(a.shared_endpoint()))
                    .collect();
                let got: BTreeSet<Arc<str>> = g.members(id, None, MAX_PAGE).unwrap().members.into_iter().collect();
                prop_assert_eq!(&got, &want, "group {}", id);
                for ep in &want {
                    prop_assert!(g.groups_of(ep).iter().any(|x| &**x == id));
                }
            }
        }
    }
}
