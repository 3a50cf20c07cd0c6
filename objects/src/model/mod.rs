//! Object and resource definitions, and the registry that codecs consult.
//!
//! Definitions come from two places: the core objects built into this crate
//! ([`core`]) and OMA DDF XML files loaded at run time ([`ddf`]). Both produce
//! the same [`ObjectDef`].

pub mod core;
pub mod ddf;

use std::collections::BTreeMap;
use std::fmt;
use std::str::FromStr;
use std::sync::Arc;

/// An object or enabler version, `major.minor`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Version {
    pub major: u8,
    pub minor: u8,
}

impl Version {
    pub const V1_0: Version = Version::new(1, 0);
    pub const V1_1: Version = Version::new(1, 1);
    pub const V1_2: Version = Version::new(1, 2);

    pub const fn new(major: u8, minor: u8) -> Version {
        Version { major, minor }
    }
}

impl Default for Version {
    fn default() -> Version {
        Version::V1_0
    }
}

impl fmt::Display for Version {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{}", self.major, self.minor)
    }
}

/// Why a string is not a `major.minor` version.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("version must be \"major.minor\" with numbers 0..=255, got {0:?}")]
pub struct VersionError(pub String);

impl FromStr for Version {
    type Err = VersionError;
    fn from_str(s: &str) -> Result<Version, VersionError> {
        let err = || VersionError(s.chars().take(16).collect());
        let (a, b) = s.trim().split_once('.').ok_or_else(err)?;
        let num = |t: &str| -> Result<u8, VersionError> {
            if t.is_empty() || t.len() > 3 || !t.bytes().all(|c| c.is_ascii_digit()) {
                return Err(err());
            }
            t.parse().map_err(|_| err())
        };
        Ok(Version::new(num(a)?, num(b)?))
    }
}

/// The operations a resource allows.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Operations {
    /// No operation (resources only usable inside other structures).
    None,
    Read,
    Write,
    ReadWrite,
    Execute,
}

impl Operations {
    pub fn readable(self) -> bool {
        matches!(self, Operations::Read | Operations::ReadWrite)
    }
    pub fn writable(self) -> bool {
        matches!(self, Operations::Write | Operations::ReadWrite)
    }
    pub fn executable(self) -> bool {
        self == Operations::Execute
    }
}

/// The LwM2M data types. `None` is the type of executable resources.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ResourceType {
    String,
    Integer,
    UnsignedInteger,
    Float,
    Boolean,
    Opaque,
    Time,
    ObjLnk,
    CoreLnk,
    None,
}

impl fmt::Display for ResourceType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            ResourceType::String => "String",
            ResourceType::Integer => "Integer",
            ResourceType::UnsignedInteger => "Unsigned Integer",
            ResourceType::Float => "Float",
            ResourceType::Boolean => "Boolean",
            ResourceType::Opaque => "Opaque",
            ResourceType::Time => "Time",
            ResourceType::ObjLnk => "Objlnk",
            ResourceType::CoreLnk => "Corelnk",
            ResourceType::None => "none",
        })
    }
}

/// The definition of one resource of an object.
#[derive(Clone, Debug, PartialEq)]
pub struct ResourceDef {
    pub id: u16,
    pub name: String,
    pub operations: Operations,
    /// True when the resource has resource instances (`/o/i/r/ri`).
    pub multiple: bool,
    pub mandatory: bool,
    pub kind: ResourceType,
    /// The range or enumeration as written in the definition (`0..100`,
    /// `0-6`, `1..255 bytes`); free text in the registry, so kept as text.
    pub range: String,
    pub units: String,
    pub description: String,
}

/// The definition of one object.
#[derive(Clone, Debug, PartialEq)]
pub struct ObjectDef {
    pub id: u16,
    pub name: String,
    pub description: String,
    /// The object's own version (`ObjectVersion`, 1.0 when absent).
    pub version: Version,
    /// The enabler version the definition was written for (`LWM2MVersion`).
    pub lwm2m_version: Version,
    pub urn: String,
    /// True when the object may have more than one instance.
    pub multiple: bool,
    pub mandatory: bool,
    pub resources: BTreeMap<u16, ResourceDef>,
}

impl ObjectDef {
    pub fn resource(&self, id: u16) -> Option<&ResourceDef> {
        self.resources.get(&id)
    }
}

/// Where codecs look up definitions. Implemented by [`Registry`]; the server
/// can implement it per device to honour the object versions a device
/// registered (`</3>;ver=1.1`).
pub trait Model {
    fn object(&self, id: u16) -> Option<&ObjectDef>;

    fn resource(&self, object: u16, resource: u16) -> Option<&ResourceDef> {
        self.object(object).and_then(|o| o.resource(resource))
    }
}

/// A model that knows no object: codecs fall back to the types the format carries.
pub struct NoModel;

impl Model for NoModel {
    fn object(&self, _: u16) -> Option<&ObjectDef> {
        None
    }
}

/// A set of object definitions, keyed by object id and version.
///
/// Several versions of one object can be held (a fleet has devices of both
/// `/3` 1.0 and 1.2); [`Model::object`] answers with the newest.
#[derive(Clone, Debug, Default)]
pub struct Registry {
    objects: BTreeMap<(u16, Version), Arc<ObjectDef>>,
}

impl Registry {
    /// An empty registry.
    pub fn new() -> Registry {
        Registry::default()
    }

    /// A registry holding the built-in core objects 0-7 and 9.
    pub fn with_core() -> Registry {
        let mut r = Registry::new();
        for def in core::definitions() {
            r.insert(def);
        }
        r
    }

    /// Adds a definition, replacing one with the same id and version.
    pub fn insert(&mut self, def: ObjectDef) {
        self.objects.insert((def.id, def.version), Arc::new(def));
    }

    /// The definition of exactly this version.
    pub fn get(&self, id: u16, version: Version) -> Option<&ObjectDef> {
        self.objects.get(&(id, version)).map(|d| d.as_ref())
    }

    /// Every definition, in id then version order.
    pub fn iter(&self) -> impl Iterator<Item = &ObjectDef> {
        self.objects.values().map(|d| d.as_ref())
    }

    pub fn len(&self) -> usize {
        self.objects.len()
    }

    pub fn is_empty(&self) -> bool {
        self.objects.is_empty()
    }

    /// Loads every `*.xml` file of a directory, returning the failures by
    /// file name rather than stopping at the first, so an operator sees all
    /// that is wrong at once.
    pub fn load_dir(
        &mut self,
        dir: &std::path::Path,
    ) -> std::io::Result<Vec<(String, ddf::DdfError)>> {
        let mut failures = Vec::new();
        let mut files: Vec<_> = std::fs::read_dir(dir)?
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.extension().is_some_and(|e| e == "xml"))
            .collect();
        files.sort();
        for file in files {
            let name = file
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default();
            let text = match std::fs::read(&file) {
                Ok(t) => t,
                Err(e) => {
                    failures.push((name, ddf::DdfError::Io(e.to_string())));
                    continue;
                }
            };
            match ddf::parse(&text) {
                Ok(defs) => defs.into_iter().for_each(|d| self.insert(d)),
                Err(e) => failures.push((name, e)),
            }
        }
        Ok(failures)
    }
}

impl Model for Registry {
    fn object(&self, id: u16) -> Option<&ObjectDef> {
        self.objects
            .range((id, Version::new(0, 0))..=(id, Version::new(255, 255)))
            .next_back()
            .map(|(_, d)| d.as_ref())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versions_parse() {
        assert_eq!("1.2".parse::<Version>().unwrap(), Version::V1_2);
        assert_eq!(" 1.0 ".parse::<Version>().unwrap(), Version::V1_0);
        for bad in ["1", "1.", ".1", "1.2.3", "256.0", "a.b", "-1.0"] {
            assert!(bad.parse::<Version>().is_err(), "{bad}");
        }
    }

    #[test]
    fn registry_answers_with_newest_version() {
        let mut r = Registry::new();
        let mut d = core::definitions().into_iter().find(|d| d.id == 3).unwrap();
        d.version = Version::V1_0;
        r.insert(d.clone());
        d.version = Version::V1_2;
        d.name = "newer".into();
        r.insert(d);
        assert_eq!(r.object(3).unwrap().name, "newer");
        assert!(r.get(3, Version::V1_0).is_some());
        assert!(r.object(4).is_none());
    }
}
