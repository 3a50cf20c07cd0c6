//! The live inventory: every device's attributes, the fleet context they are
//! derived in, and the groups kept current from them.
//!
//! One call per event — a resource read or notified, a session state change,
//! an operator patch — updates the attributes, whatever derives from them
//! (region on a location change, roaming on a network change) and group
//! membership, and returns who joined or left which group.

use std::collections::HashMap;
use std::sync::Arc;

use lwm2m_objects::{Path, Value};

use crate::attributes::{
    Attributes, EndpointError, ExternalError, ExternalPatch, FleetContext, HomeNetwork,
};
use crate::changed::Changed;
use crate::filter::Filter;
use crate::groups::{self, GroupError, Groups, MembershipChange};
use crate::intern::{self, Interner};
use crate::regions::Regions;

/// Default bound of the number of devices.
pub const DEFAULT_MAX_DEVICES: usize = 1_000_000;

/// Why an inventory operation was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum InventoryError {
    #[error("the inventory is full ({0} devices)")]
    Full(usize),
    #[error("no device {0:?}")]
    UnknownDevice(String),
    #[error(transparent)]
    Endpoint(#[from] EndpointError),
    #[error(transparent)]
    External(#[from] ExternalError),
    #[error(transparent)]
    Group(#[from] GroupError),
}

/// How an inventory starts.
#[derive(Debug, Clone)]
pub struct InventoryConfig {
    pub max_devices: usize,
    pub regions: Regions,
    /// Home networks of devices whose operator set none of their own.
    pub home_networks: Vec<HomeNetwork>,
    /// Distinct shared strings kept (models, firmware versions, ...), and as many
    /// distinct object lists.
    pub interner_capacity: usize,
}

impl Default for InventoryConfig {
    fn default() -> Self {
        InventoryConfig {
            max_devices: DEFAULT_MAX_DEVICES,
            regions: Regions::default(),
            home_networks: Vec::new(),
            interner_capacity: intern::DEFAULT_CAPACITY,
        }
    }
}

/// Devices, their fleet context and their groups.
#[derive(Debug)]
pub struct Inventory {
    /// Boxed: a hash table holds its entries inline with up to as many again empty, and
    /// an entry of 400 bytes would double the inventory's footprint at a million devices.
    devices: HashMap<Arc<str>, Box<Attributes>>,
    regions: Regions,
    home_networks: Vec<HomeNetwork>,
    groups: Groups,
    interner: Interner,
    max_devices: usize,
}

impl Default for Inventory {
    fn default() -> Self {
        Inventory::new(InventoryConfig::default())
    }
}

impl Inventory {
    pub fn new(config: InventoryConfig) -> Inventory {
        Inventory {
            devices: HashMap::new(),
            regions: config.regions,
            home_networks: config.home_networks,
            groups: Groups::new(),
            interner: Interner::with_capacity(config.interner_capacity),
            max_devices: config.max_devices,
        }
    }

    pub fn len(&self) -> usize {
        self.devices.len()
    }

    pub fn is_empty(&self) -> bool {
        self.devices.is_empty()
    }

    pub fn get(&self, endpoint: &str) -> Option<&Attributes> {
        self.devices.get(endpoint).map(|a| &**a)
    }

    /// Sets a device's key in the server's store (see [`Attributes::store_key`]); no
    /// attribute changes, so no group is evaluated. False for an unknown device.
    pub fn set_store_key(&mut self, endpoint: &str, key: u32) -> bool {
        match self.devices.get_mut(endpoint) {
            Some(a) => {
                a.set_store_key(key);
                true
            }
            None => false,
        }
    }

    /// The devices, in no particular order.
    pub fn iter(&self) -> impl Iterator<Item = &Attributes> {
        self.devices.values().map(|a| &**a)
    }

    pub fn groups(&self) -> &Groups {
        &self.groups
    }

    pub fn regions(&self) -> &Regions {
        &self.regions
    }

    pub fn home_networks(&self) -> &[HomeNetwork] {
        &self.home_networks
    }

    /// Adds or replaces a device's attributes as a whole, e.g. read back
    /// from storage at start-up; region and roaming are derived afresh.
    pub fn insert(
        &mut self,
        mut attrs: Attributes,
    ) -> Result<Vec<MembershipChange>, InventoryError> {
        if !self.devices.contains_key(attrs.endpoint()) && self.devices.len() >= self.max_devices {
            return Err(InventoryError::Full(self.max_devices));
        }
        attrs.share_strings(&mut self.interner);
        attrs.rederive(&FleetContext {
            regions: Some(&self.regions),
            home_networks: &self.home_networks,
            interner: None,
        });
        let ep = Arc::clone(attrs.shared_endpoint());
        let a = &mut **self
            .devices
            .entry(ep)
            .insert_entry(Box::new(attrs))
            .into_mut();
        Ok(self.groups.device_changed(a, Changed::all()))
    }

    /// Makes sure a device is known, e.g. on registration.
    pub fn register(&mut self, endpoint: &str) -> Result<Vec<MembershipChange>, InventoryError> {
        self.update(endpoint, |_, _| Changed::NONE)
    }

    /// Takes a resource value from a device; see [`Attributes::apply`]. An
    /// unknown device is added.
    pub fn apply_resource(
        &mut self,
        endpoint: &str,
        path: &Path,
        value: &Value,
    ) -> Result<Vec<MembershipChange>, InventoryError> {
        self.update(endpoint, |a, cx| a.apply_in(path, value, cx))
    }

    /// Takes a multi-instance resource as a whole; see
    /// [`Attributes::apply_multi`].
    pub fn apply_multi_resource(
        &mut self,
        endpoint: &str,
        path: &Path,
        instances: &[(u16, Value)],
    ) -> Result<Vec<MembershipChange>, InventoryError> {
        self.update(endpoint, |a, cx| a.apply_multi_in(path, instances, cx))
    }

    /// Forgets resources under `path`; see [`Attributes::forget`].
    pub fn forget_resource(
        &mut self,
        endpoint: &str,
        path: &Path,
    ) -> Result<Vec<MembershipChange>, InventoryError> {
        self.update(endpoint, |a, cx| a.forget_in(path, cx))
    }

    /// Changes a device through `f`, which reports what it changed; for the
    /// session setters (`inventory.update(ep, |a, _| a.set_online(true))`)
    /// and registration data. An unknown device is added.
    pub fn update(
        &mut self,
        endpoint: &str,
        f: impl FnOnce(&mut Attributes, &mut FleetContext<'_>) -> Changed,
    ) -> Result<Vec<MembershipChange>, InventoryError> {
        self.update_named(endpoint, || Arc::from(endpoint), f)
    }

    /// [`Inventory::update`] of a device whose name the caller holds shared (the
    /// registry's copy): the device keeps that copy rather than one of its own, a known
    /// device that held another one too (it registered afresh after its registration
    /// expired, say).
    pub fn update_shared(
        &mut self,
        endpoint: &Arc<str>,
        f: impl FnOnce(&mut Attributes, &mut FleetContext<'_>) -> Changed,
    ) -> Result<Vec<MembershipChange>, InventoryError> {
        let other_copy = self
            .devices
            .get_key_value(&**endpoint)
            .is_some_and(|(k, _)| !Arc::ptr_eq(k, endpoint));
        if other_copy {
            self.share_name(endpoint);
        }
        self.update_named(endpoint, || Arc::clone(endpoint), f)
    }

    fn update_named(
        &mut self,
        endpoint: &str,
        name: impl FnOnce() -> Arc<str>,
        f: impl FnOnce(&mut Attributes, &mut FleetContext<'_>) -> Changed,
    ) -> Result<Vec<MembershipChange>, InventoryError> {
        let new = !self.devices.contains_key(endpoint);
        if new {
            let a = Attributes::with_shared_endpoint(name())?;
            if self.devices.len() >= self.max_devices {
                return Err(InventoryError::Full(self.max_devices));
            }
            self.devices
                .insert(Arc::clone(a.shared_endpoint()), Box::new(a));
        }
        let Some(a) = self.devices.get_mut(endpoint) else {
            return Err(InventoryError::UnknownDevice(endpoint.to_string()));
        };
        let mut cx = FleetContext {
            regions: Some(&self.regions),
            home_networks: &self.home_networks,
            interner: Some(&mut self.interner),
        };
        let changed = f(a, &mut cx);
        let changed = if new { Changed::all() } else { changed };
        Ok(self.groups.device_changed(a, changed))
    }

    /// Makes the device named `name` hold that copy of its name, in the inventory and
    /// in its groups: after a restart the registry and the inventory each read their own
    /// copy of every name from storage, and sharing the registry's saves one a device.
    pub fn share_name(&mut self, name: &Arc<str>) {
        let Some((key, mut a)) = self.devices.remove_entry(&**name) else {
            return;
        };
        if !Arc::ptr_eq(&key, name) {
            a.share_endpoint(name);
            self.groups.share_name(name);
        }
        self.devices.insert(Arc::clone(name), a);
    }

    /// Applies an operator patch to a known device; a refused patch changes
    /// nothing.
    pub fn patch_external(
        &mut self,
        endpoint: &str,
        patch: &ExternalPatch,
    ) -> Result<Vec<MembershipChange>, InventoryError> {
        let Some(a) = self.devices.get_mut(endpoint) else {
            return Err(InventoryError::UnknownDevice(endpoint.to_string()));
        };
        let mut cx = FleetContext {
            regions: Some(&self.regions),
            home_networks: &self.home_networks,
            interner: Some(&mut self.interner),
        };
        let changed = a.apply_external(patch, &mut cx)?;
        Ok(self.groups.device_changed(a, changed))
    }

    /// Forgets a device, taking it out of its groups.
    pub fn remove(&mut self, endpoint: &str) -> Option<(Attributes, Vec<MembershipChange>)> {
        let a = *self.devices.remove(endpoint)?;
        Some((a, self.groups.device_removed(endpoint)))
    }

    /// Defines a group over the whole fleet; returns its member count.
    pub fn define_group(
        &mut self,
        id: &str,
        name: &str,
        filter: Filter,
    ) -> Result<usize, InventoryError> {
        Ok(self
            .groups
            .define(id, name, filter, self.devices.values().map(|a| &**a))?)
    }

    /// Replaces a group's name and filter; returns who joined and left.
    pub fn redefine_group(
        &mut self,
        id: &str,
        name: &str,
        filter: Filter,
    ) -> Result<Vec<MembershipChange>, InventoryError> {
        Ok(self
            .groups
            .redefine(id, name, filter, self.devices.values().map(|a| &**a))?)
    }

    /// Removes a group; returns how many members it had.
    pub fn remove_group(&mut self, id: &str) -> Result<usize, InventoryError> {
        Ok(self.groups.remove_group(id)?)
    }

    /// How many devices a filter would match.
    pub fn preview(&self, filter: &Filter) -> usize {
        groups::preview(filter, self.devices.values().map(|a| &**a))
    }

    /// Replaces the regions, moving devices between regions (and groups).
    pub fn set_regions(&mut self, regions: Regions) -> Vec<MembershipChange> {
        self.regions = regions;
        self.rederive_all()
    }

    /// Replaces the fleet's home networks, recomputing roaming.
    pub fn set_home_networks(&mut self, home_networks: Vec<HomeNetwork>) -> Vec<MembershipChange> {
        self.home_networks = home_networks;
        self.rederive_all()
    }

    fn rederive_all(&mut self) -> Vec<MembershipChange> {
        let cx = FleetContext {
            regions: Some(&self.regions),
            home_networks: &self.home_networks,
            interner: None,
        };
        let mut changes = Vec::new();
        for a in self.devices.values_mut() {
            let changed = a.rederive(&cx);
            if !changed.is_empty() {
                changes.extend(self.groups.device_changed(a, changed));
            }
        }
        changes
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::collections::BTreeSet;

    fn p(s: &str) -> Path {
        s.parse().unwrap()
    }

    fn regions(json: &str) -> Regions {
        Regions::from_json(json).unwrap()
    }

    fn inventory() -> Inventory {
        Inventory::new(InventoryConfig {
            max_devices: 100,
            regions: regions(
                r#"[{"name": "eu-west", "bbox": {"min_lat": 35, "max_lat": 60, "min_lon": -11, "max_lon": 15}},
                    {"name": "us", "bbox": {"min_lat": 24, "max_lat": 50, "min_lon": -125, "max_lon": -66}}]"#,
            ),
            home_networks: vec!["262-01".parse().unwrap()],
            ..InventoryConfig::default()
        })
    }

    fn joined(changes: &[MembershipChange]) -> Vec<(String, String, bool)> {
        let mut v: Vec<_> = changes
            .iter()
            .map(|c| (c.group.to_string(), c.endpoint.to_string(), c.joined))
            .collect();
        v.sort();
        v
    }

    #[test]
    fn one_call_updates_attributes_derived_ones_and_groups() {
        let mut inv = inventory();
        inv.define_group(
            "target",
            "BG95 below 2.1 in eu-west, at home",
            Filter::compile(
                r#"model == "BG95" && version_lt(firmware, "2.1.0") && region in ["eu-west"] && !roaming"#,
            )
            .unwrap(),
        )
        .unwrap();
        inv.define_group("roamers", "", Filter::compile("roaming").unwrap())
            .unwrap();

        let ep = "urn:imei:1";
        for (path, v) in [
            ("/3/0/1", Value::String("BG95".into())),
            ("/3/0/3", Value::String("2.0.4".into())),
            ("/6/0/0", Value::Float(48.1)),
        ] {
            assert!(inv.apply_resource(ep, &p(path), &v).unwrap().is_empty());
        }
        let c = inv
            .apply_resource(ep, &p("/6/0/1"), &Value::Float(11.6))
            .unwrap();
        assert_eq!(joined(&c), [("target".into(), ep.into(), true)]);
        assert_eq!(inv.get(ep).unwrap().region(), Some("eu-west"));

        // Visiting another network: roaming, out of the target group.
        inv.apply_resource(ep, &p("/4/0/9"), &Value::Integer(1))
            .unwrap();
        let c = inv
            .apply_resource(ep, &p("/4/0/10"), &Value::Integer(208))
            .unwrap();
        assert_eq!(
            joined(&c),
            [
                ("roamers".into(), ep.into(), true),
                ("target".into(), ep.into(), false)
            ]
        );
        // The operator says this device's home is 208-01.
        let patch: ExternalPatch = serde_json::from_str(r#"{"home_network": "208-01"}"#).unwrap();
        let c = inv.patch_external(ep, &patch).unwrap();
        assert_eq!(
            joined(&c),
            [
                ("roamers".into(), ep.into(), false),
                ("target".into(), ep.into(), true)
            ]
        );
        // Firmware updated: done.
        let c = inv
            .apply_resource(ep, &p("/3/0/3"), &Value::String("2.1.0".into()))
            .unwrap();
        assert_eq!(joined(&c), [("target".into(), ep.into(), false)]);
    }

    #[test]
    fn names_are_shared_with_the_caller() {
        let mut inv = inventory();
        inv.define_group("all", "", Filter::compile("true").unwrap())
            .unwrap();
        // A new device keeps the caller's copy.
        let registry_copy: Arc<str> = Arc::from("a");
        inv.update_shared(&registry_copy, |a, _| a.set_online(true))
            .unwrap();
        assert!(Arc::ptr_eq(
            inv.get("a").unwrap().shared_endpoint(),
            &registry_copy
        ));
        // A device read back with a copy of its own takes the registry's, in its groups too.
        inv.register("b").unwrap();
        let b: Arc<str> = Arc::from("b");
        inv.share_name(&b);
        assert!(Arc::ptr_eq(inv.get("b").unwrap().shared_endpoint(), &b));
        let members = inv.groups().members("all", None, 10).unwrap().members;
        assert_eq!(members.len(), 2);
        assert!(members.iter().any(|m| Arc::ptr_eq(m, &b)));
        assert!(members.iter().any(|m| Arc::ptr_eq(m, &registry_copy)));
        // An unknown name changes nothing.
        inv.share_name(&Arc::from("c"));
        assert_eq!(inv.len(), 2);
        // A known device registering afresh (a new copy of its name) takes the new copy.
        let again: Arc<str> = Arc::from("a");
        inv.update_shared(&again, |a, _| a.set_online(true))
            .unwrap();
        assert!(Arc::ptr_eq(inv.get("a").unwrap().shared_endpoint(), &again));
        let members = inv.groups().members("all", None, 10).unwrap().members;
        assert!(members.iter().any(|m| Arc::ptr_eq(m, &again)));
    }

    #[test]
    fn unrelated_changes_evaluate_no_filter() {
        let mut inv = inventory();
        inv.define_group("low", "", Filter::compile("battery < 20").unwrap())
            .unwrap();
        inv.register("d").unwrap();
        let before = inv.groups().evaluations();
        inv.apply_resource("d", &p("/4/0/2"), &Value::Integer(-90))
            .unwrap();
        inv.update("d", |a, _| a.set_last_seen(1)).unwrap();
        inv.apply_resource("d", &p("/3303/0/5700"), &Value::Float(1.0))
            .unwrap();
        assert_eq!(inv.groups().evaluations(), before);
        inv.apply_resource("d", &p("/3/0/9"), &Value::Integer(5))
            .unwrap();
        assert_eq!(inv.groups().evaluations(), before + 1);
        assert!(inv.groups().is_member("low", "d"));
    }

    #[test]
    fn bounded_and_errors() {
        let mut inv = Inventory::new(InventoryConfig {
            max_devices: 2,
            ..InventoryConfig::default()
        });
        inv.register("a").unwrap();
        inv.register("b").unwrap();
        inv.register("a").unwrap();
        assert_eq!(inv.register("c"), Err(InventoryError::Full(2)));
        assert_eq!(
            inv.insert(Attributes::new("c").unwrap()),
            Err(InventoryError::Full(2))
        );
        assert!(inv.insert(Attributes::new("a").unwrap()).is_ok());
        assert_eq!(
            inv.register(""),
            Err(InventoryError::Endpoint(EndpointError::Empty))
        );
        assert!(matches!(
            inv.patch_external("zz", &ExternalPatch::default()),
            Err(InventoryError::UnknownDevice(_))
        ));
        let bad: ExternalPatch = serde_json::from_str(r#"{"home_network": "nope"}"#).unwrap();
        assert!(matches!(
            inv.patch_external("a", &bad),
            Err(InventoryError::External(_))
        ));
        assert!(matches!(
            inv.define_group("bad id", "", Filter::compile("true").unwrap()),
            Err(InventoryError::Group(GroupError::InvalidId))
        ));
        let (gone, _) = inv.remove("a").unwrap();
        assert_eq!(gone.endpoint(), "a");
        assert!(inv.remove("a").is_none());
        assert_eq!(inv.len(), 1);
        inv.register("c").unwrap();
    }

    #[test]
    fn new_regions_and_home_networks_move_devices() {
        let mut inv = inventory();
        inv.define_group("eu", "", Filter::compile("region == 'eu-west'").unwrap())
            .unwrap();
        inv.define_group("roam", "", Filter::compile("roaming").unwrap())
            .unwrap();
        inv.apply_resource("d", &p("/6/0/0"), &Value::Float(48.1))
            .unwrap();
        inv.apply_resource("d", &p("/6/0/1"), &Value::Float(11.6))
            .unwrap();
        inv.apply_resource("d", &p("/4/0/10"), &Value::Integer(262))
            .unwrap();
        inv.apply_resource("d", &p("/4/0/9"), &Value::Integer(2))
            .unwrap();
        assert!(inv.groups().is_member("eu", "d"));
        assert!(inv.groups().is_member("roam", "d"));

        let c = inv.set_regions(regions(
            r#"[{"name": "bavaria", "bbox": {"min_lat": 47, "max_lat": 50.5, "min_lon": 9, "max_lon": 13.8}}]"#,
        ));
        assert_eq!(joined(&c), [("eu".into(), "d".into(), false)]);
        assert_eq!(inv.get("d").unwrap().region(), Some("bavaria"));
        let c = inv.set_home_networks(vec!["262-01".parse().unwrap(), "262-02".parse().unwrap()]);
        assert_eq!(joined(&c), [("roam".into(), "d".into(), false)]);
        assert_eq!(
            inv.preview(&Filter::compile("region == 'bavaria'").unwrap()),
            1
        );
    }

    #[test]
    fn stored_attributes_are_rederived_on_insert() {
        let mut inv = inventory();
        inv.define_group("eu", "", Filter::compile("region == 'eu-west'").unwrap())
            .unwrap();
        let a: Attributes = serde_json::from_str(
            r#"{"endpoint": "s", "lat": 48.1, "lon": 11.6, "region": "stale"}"#,
        )
        .unwrap();
        let c = inv.insert(a).unwrap();
        assert_eq!(joined(&c), [("eu".into(), "s".into(), true)]);
        assert_eq!(inv.get("s").unwrap().region(), Some("eu-west"));
    }

    #[derive(Debug, Clone)]
    enum Op {
        Resource(usize, &'static str, Value),
        Online(usize, bool),
        Label(usize, Option<&'static str>),
        Home(usize, Option<&'static str>),
        Remove(usize),
        Regions(bool),
        Homes(bool),
    }

    fn op() -> impl Strategy<Value = Op> {
        let d = 0..6usize;
        prop_oneof![
            (d.clone(), 0..100i64).prop_map(|(d, b)| Op::Resource(d, "/3/0/9", Value::Integer(b))),
            (d.clone(), prop::sample::select(vec!["BG95", "nRF9160"]))
                .prop_map(|(d, m)| Op::Resource(d, "/3/0/1", Value::String(m.into()))),
            (
                d.clone(),
                prop::sample::select(vec!["1.9", "2.0.9", "2.1.0", "v2.2"])
            )
                .prop_map(|(d, f)| Op::Resource(d, "/3/0/3", Value::String(f.into()))),
            (d.clone(), prop::sample::select(vec![30.0, 48.1, 52.5]))
                .prop_map(|(d, l)| Op::Resource(d, "/6/0/0", Value::Float(l))),
            (d.clone(), prop::sample::select(vec![-100.0, 11.6, 13.4]))
                .prop_map(|(d, l)| Op::Resource(d, "/6/0/1", Value::Float(l))),
            (d.clone(), prop::sample::select(vec![208i64, 262])).prop_map(|(d, m)| Op::Resource(
                d,
                "/4/0/10",
                Value::Integer(m)
            )),
            (d.clone(), 1..3i64).prop_map(|(d, m)| Op::Resource(d, "/4/0/9", Value::Integer(m))),
            (d.clone(), prop::sample::select(vec![6i64, 21, 41])).prop_map(|(d, b)| Op::Resource(
                d,
                "/4/0/0",
                Value::Integer(b)
            )),
            (d.clone(), any::<bool>()).prop_map(|(d, o)| Op::Online(d, o)),
            (
                d.clone(),
                prop::option::of(prop::sample::select(vec!["beta", "stable"]))
            )
                .prop_map(|(d, l)| Op::Label(d, l)),
            (
                d.clone(),
                prop::option::of(prop::sample::select(vec!["208-01", "262-02"]))
            )
                .prop_map(|(d, h)| Op::Home(d, h)),
            d.prop_map(Op::Remove),
            any::<bool>().prop_map(Op::Regions),
            any::<bool>().prop_map(Op::Homes),
        ]
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(48))]

        #[test]
        fn incremental_groups_equal_a_rescan(ops in proptest::collection::vec(op(), 0..80)) {
            let filters = [
                ("target", r#"model == "BG95" && version_lt(firmware, "2.1.0") && region in ["eu-west"] && !roaming"#),
                ("low", "battery < 20"),
                ("beta", "labels.ring == 'beta'"),
                ("roam", "roaming"),
                ("wifi-online", "has_wifi && online"),
                ("region", "region != null"),
                ("wired", "bearer == 'wired'"),
            ];
            let mut inv = inventory();
            for (id, src) in filters {
                inv.define_group(id, id, Filter::compile(src).unwrap()).unwrap();
            }
            for op in ops {
                let ep = |d: usize| format!("d{d}");
                match op {
                    Op::Resource(d, path, v) => { inv.apply_resource(&ep(d), &p(path), &v).unwrap(); }
                    Op::Online(d, o) => { inv.update(&ep(d), |a, _| a.set_online(o)).unwrap(); }
                    Op::Label(d, l) => {
                        let patch = ExternalPatch {
                            labels: Some([("ring".to_string(), l.map(String::from))].into_iter().collect()),
                            ..ExternalPatch::default()
                        };
                        let _ = inv.patch_external(&ep(d), &patch);
                    }
                    Op::Home(d, h) => {
                        let patch = ExternalPatch { home_network: Some(h.map(String::from)), ..ExternalPatch::default() };
                        let _ = inv.patch_external(&ep(d), &patch);
                    }
                    Op::Remove(d) => { inv.remove(&ep(d)); }
                    Op::Regions(wide) => {
                        let json = if wide {
                            r#"[{"name": "eu-west", "bbox": {"min_lat": 0, "max_lat": 60, "min_lon": -180, "max_lon": 180}}]"#
                        } else {
                            r#"[{"name": "eu-west", "bbox": {"min_lat": 35, "max_lat": 60, "min_lon": -11, "max_lon": 12}}]"#
                        };
                        inv.set_regions(regions(json));
                    }
                    Op::Homes(two) => {
                        let homes = if two { vec!["262-01".parse().unwrap(), "262-02".parse().unwrap()] } else { vec!["262-01".parse().unwrap()] };
                        inv.set_home_networks(homes);
                    }
                }
            }
            // Rescan: derive every device afresh and evaluate every filter.
            for (id, src) in filters {
                let filter = Filter::compile(src).unwrap();
                let want: BTreeSet<String> = inv
                    .iter()
                    .map(|a| {
                        let mut fresh: Attributes = serde_json::from_value(serde_json::to_value(a).unwrap()).unwrap();
                        fresh.rederive(&FleetContext { regions: Some(inv.regions()), home_networks: inv.home_networks(), interner: None });
                        prop_assert_eq!(&fresh.region(), &a.region());
                        prop_assert_eq!(fresh.roaming(), a.roaming());
                        Ok(fresh)
                    })
                    .collect::<Result<Vec<_>, _>>()?
                    .iter()
                    .filter(|a| filter.matches(a))
                    .map(|a| a.endpoint().to_string())
                    .collect();
                let got: BTreeSet<String> = inv
                    .groups()
                    .members(id, None, groups::MAX_PAGE)
                    .unwrap()
                    .members
                    .iter()
                    .map(|m| m.to_string())
                    .collect();
                prop_assert_eq!(got, want, "group {}", id);
            }
        }
    }
}
