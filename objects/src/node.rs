//! The object tree as nodes, and the flat records that record-based formats
//! (SenML, LwM2M JSON, LwM2M CBOR) carry.
//!
//! A [`Node`] is what lives at one path: an object, an object instance, a
//! resource (single or multiple) or a resource instance. Codecs that target
//! one path decode into a `Node`; composite operations work on a map of
//! paths to nodes; notifications and Send carry timestamped nodes.

use std::collections::BTreeMap;

use crate::path::Path;
use crate::value::Value;

/// An object with its instances.
#[derive(Clone, Debug, PartialEq, Default)]
pub struct Object {
    pub id: u16,
    pub instances: BTreeMap<u16, Instance>,
}

/// An object instance with its resources.
#[derive(Clone, Debug, PartialEq, Default)]
pub struct Instance {
    pub id: u16,
    pub resources: BTreeMap<u16, Resource>,
}

/// A resource: one value, or a set of resource instances.
#[derive(Clone, Debug, PartialEq)]
pub enum Resource {
    Single {
        id: u16,
        value: Value,
    },
    Multiple {
        id: u16,
        instances: BTreeMap<u16, Value>,
    },
}

/// What lives at a path.
#[derive(Clone, Debug, PartialEq)]
pub enum Node {
    Object(Object),
    Instance(Instance),
    Resource(Resource),
    /// A resource instance `/o/i/r/ri`: its id and value.
    ResourceInstance {
        id: u16,
        value: Value,
    },
}

/// A node tagged with the time it was measured (seconds since the Unix
/// epoch; SenML allows fractions). `None` means "now" / not given.
#[derive(Clone, Debug, PartialEq)]
pub struct TimestampedNode {
    pub time: Option<f64>,
    pub node: Node,
}

/// One value at a full resource or resource-instance path.
#[derive(Clone, Debug, PartialEq)]
pub struct Record {
    pub path: Path,
    pub value: Value,
    pub time: Option<f64>,
}

impl Resource {
    pub fn id(&self) -> u16 {
        match self {
            Resource::Single { id, .. } | Resource::Multiple { id, .. } => *id,
        }
    }
}

impl Instance {
    pub fn new(id: u16) -> Instance {
        Instance {
            id,
            resources: BTreeMap::new(),
        }
    }

    /// Adds a resource, replacing one with the same id.
    pub fn with(mut self, r: Resource) -> Instance {
        self.resources.insert(r.id(), r);
        self
    }
}

impl Object {
    pub fn new(id: u16) -> Object {
        Object {
            id,
            instances: BTreeMap::new(),
        }
    }
    pub fn with(mut self, i: Instance) -> Object {
        self.instances.insert(i.id, i);
        self
    }
}

impl Node {
    /// The id of this node's own path segment.
    pub fn id(&self) -> u16 {
        match self {
            Node::Object(o) => o.id,
            Node::Instance(i) => i.id,
            Node::Resource(r) => r.id(),
            Node::ResourceInstance { id, .. } => *id,
        }
    }

    /// The path depth a node of this kind sits at (1 object .. 4 resource instance).
    pub fn depth(&self) -> usize {
        match self {
            Node::Object(_) => 1,
            Node::Instance(_) => 2,
            Node::Resource(_) => 3,
            Node::ResourceInstance { .. } => 4,
        }
    }

    /// Flattens the node at `path` into records (in path order). Empty
    /// containers produce no record.
    pub fn to_records(&self, path: &Path, time: Option<f64>) -> Vec<Record> {
        let mut out = Vec::new();
        self.push_records(*path, time, &mut out);
        out
    }

    fn push_records(&self, path: Path, time: Option<f64>, out: &mut Vec<Record>) {
        // Paths below a valid path with ids taken from a valid tree are always
        // valid, so `child` cannot fail here; a failure would drop the entry.
        match self {
            Node::Object(o) => {
                for i in o.instances.values() {
                    if let Ok(p) = path.child(i.id) {
                        Node::Instance(i.clone()).push_records(p, time, out);
                    }
                }
            }
            Node::Instance(i) => {
                for r in i.resources.values() {
                    if let Ok(p) = path.child(r.id()) {
                        push_resource(r, p, time, out);
                    }
                }
            }
            Node::Resource(r) => push_resource(r, path, time, out),
            Node::ResourceInstance { value, .. } => out.push(Record {
                path,
                value: value.clone(),
                time,
            }),
        }
    }
}

fn push_resource(r: &Resource, path: Path, time: Option<f64>, out: &mut Vec<Record>) {
    match r {
        Resource::Single { value, .. } => out.push(Record {
            path,
            value: value.clone(),
            time,
        }),
        Resource::Multiple { instances, .. } => {
            for (ri, v) in instances {
                if let Ok(p) = path.child(*ri) {
                    out.push(Record {
                        path: p,
                        value: v.clone(),
                        time,
                    });
                }
            }
        }
    }
}

/// Why a set of records does not form one node at the requested path.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum TreeError {
    #[error("record path {record} is not at or below the requested path {base}")]
    OutsideBase { record: Path, base: Path },
    #[error("record path {0} does not name a resource or resource instance")]
    NotAValuePath(Path),
    #[error("path {0} appears twice")]
    Duplicate(Path),
    #[error("resource {0} is given both as a single value and with instances")]
    Conflict(Path),
    #[error("the payload holds no value for {0}")]
    Empty(Path),
}

/// Which resources are multiple, as far as the caller knows: from the model,
/// or from the shape of the records (`/o/i/r/ri` paths) when there is no
/// definition.
pub type IsMultiple<'a> = &'a dyn Fn(u16, u16) -> bool;

/// Builds the node at `base` from records whose paths lie at or below it.
///
/// A record at `/o/i/r` of a resource the model says is multiple is an error
/// (the caller passes `is_multiple`); a record at `/o/i/r/ri` always makes the
/// resource multiple. A payload with no record gives the empty object or
/// instance when `base` is one, and [`TreeError::Empty`] below that.
pub fn node_from_records(
    base: &Path,
    records: impl IntoIterator<Item = (Path, Value)>,
    is_multiple: IsMultiple<'_>,
) -> Result<Node, TreeError> {
    let mut tree: BTreeMap<u16, Object> = BTreeMap::new();
    for (path, value) in records {
        if !path.starts_with(base) {
            return Err(TreeError::OutsideBase {
                record: path,
                base: *base,
            });
        }
        insert_record(&mut tree, path, value, is_multiple)?;
    }
    extract(tree, base)
}

/// Builds the nodes of a composite payload.
///
/// With `requested` paths (a Read-Composite or Observe-Composite response),
/// each record lands under the longest requested path that is a prefix of it,
/// and the result has one node per requested path that received a record.
/// Without them (Write-Composite, Send), each record is its own node: a
/// single resource at `/o/i/r` or a resource instance at `/o/i/r/ri`.
pub fn nodes_from_records(
    requested: Option<&[Path]>,
    records: impl IntoIterator<Item = (Path, Value)>,
    is_multiple: IsMultiple<'_>,
) -> Result<BTreeMap<Path, Node>, TreeError> {
    let mut out = BTreeMap::new();
    let Some(requested) = requested else {
        for (path, value) in records {
            let node = node_from_records(&path, [(path, value)], is_multiple)?;
            if out.insert(path, node).is_some() {
                return Err(TreeError::Duplicate(path));
            }
        }
        return Ok(out);
    };
    let mut groups: BTreeMap<Path, Vec<(Path, Value)>> = BTreeMap::new();
    for (path, value) in records {
        let Some(base) = requested
            .iter()
            .filter(|b| path.starts_with(b))
            .max_by_key(|b| b.depth())
        else {
            return Err(TreeError::OutsideBase {
                record: path,
                base: Path::ROOT,
            });
        };
        groups.entry(*base).or_default().push((path, value));
    }
    for (base, recs) in groups {
        if base.is_root() {
            return Err(TreeError::NotAValuePath(base));
        }
        out.insert(base, node_from_records(&base, recs, is_multiple)?);
    }
    Ok(out)
}

fn insert_record(
    tree: &mut BTreeMap<u16, Object>,
    path: Path,
    value: Value,
    is_multiple: IsMultiple<'_>,
) -> Result<(), TreeError> {
    let &[o, i, r, ref rest @ ..] = path.ids() else {
        return Err(TreeError::NotAValuePath(path));
    };
    let inst = tree
        .entry(o)
        .or_insert_with(|| Object::new(o))
        .instances
        .entry(i)
        .or_insert_with(|| Instance::new(i));
    match (rest.first(), inst.resources.get_mut(&r)) {
        (None, None) => {
            if is_multiple(o, r) {
                return Err(TreeError::Conflict(path));
            }
            inst.resources.insert(r, Resource::Single { id: r, value });
        }
        (None, Some(_)) => return Err(TreeError::Duplicate(path)),
        (Some(&ri), None) => {
            let mut instances = BTreeMap::new();
            instances.insert(ri, value);
            inst.resources
                .insert(r, Resource::Multiple { id: r, instances });
        }
        (Some(&ri), Some(Resource::Multiple { instances, .. })) => {
            if instances.insert(ri, value).is_some() {
                return Err(TreeError::Duplicate(path));
            }
        }
        (Some(_), Some(Resource::Single { .. })) => return Err(TreeError::Conflict(path)),
    }
    Ok(())
}

fn extract(mut tree: BTreeMap<u16, Object>, base: &Path) -> Result<Node, TreeError> {
    let empty = || TreeError::Empty(*base);
    match *base.ids() {
        [o] => Ok(Node::Object(
            tree.remove(&o).unwrap_or_else(|| Object::new(o)),
        )),
        [o, i] => Ok(Node::Instance(
            tree.remove(&o)
                .and_then(|mut ob| ob.instances.remove(&i))
                .unwrap_or_else(|| Instance::new(i)),
        )),
        [o, i, r] => tree
            .remove(&o)
            .and_then(|mut ob| ob.instances.remove(&i))
            .and_then(|mut inst| inst.resources.remove(&r))
            .map(Node::Resource)
            .ok_or_else(empty),
        [o, i, r, ri] => match tree
            .remove(&o)
            .and_then(|mut ob| ob.instances.remove(&i))
            .and_then(|mut inst| inst.resources.remove(&r))
        {
            Some(Resource::Multiple { mut instances, .. }) => instances
                .remove(&ri)
                .map(|value| Node::ResourceInstance { id: ri, value })
                .ok_or_else(empty),
            _ => Err(empty()),
        },
        _ => Err(TreeError::NotAValuePath(*base)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn never(_: u16, _: u16) -> bool {
        false
    }

    #[test]
    fn records_round_trip_through_nodes() {
        let inst = Instance::new(0)
            .with(Resource::Single {
                id: 0,
                value: "Open Mobile Alliance".into(),
            })
            .with(Resource::Multiple {
                id: 6,
                instances: [(0, Value::Integer(1)), (1, Value::Integer(5))].into(),
            });
        let base = Path::instance(3, 0);
        let recs = Node::Instance(inst.clone()).to_records(&base, None);
        assert_eq!(
            recs.iter().map(|r| r.path.to_string()).collect::<Vec<_>>(),
            ["/3/0/0", "/3/0/6/0", "/3/0/6/1"]
        );
        let back =
            node_from_records(&base, recs.into_iter().map(|r| (r.path, r.value)), &never).unwrap();
        assert_eq!(back, Node::Instance(inst));
    }

    #[test]
    fn rejects_inconsistent_records() {
        let base = Path::instance(3, 0);
        let v = || Value::Integer(1);
        let dup = [
            (Path::resource(3, 0, 1), v()),
            (Path::resource(3, 0, 1), v()),
        ];
        assert_eq!(
            node_from_records(&base, dup, &never),
            Err(TreeError::Duplicate(Path::resource(3, 0, 1)))
        );
        let conflict = [
            (Path::resource(3, 0, 6), v()),
            (Path::resource_instance(3, 0, 6, 0), v()),
        ];
        assert!(matches!(
            node_from_records(&base, conflict, &never),
            Err(TreeError::Conflict(_))
        ));
        let outside = [(Path::resource(4, 0, 1), v())];
        assert!(matches!(
            node_from_records(&base, outside, &never),
            Err(TreeError::OutsideBase { .. })
        ));
        let multi = |_: u16, r: u16| r == 6;
        assert!(matches!(
            node_from_records(&base, [(Path::resource(3, 0, 6), v())], &multi),
            Err(TreeError::Conflict(_))
        ));
        assert_eq!(
            node_from_records(&Path::resource(3, 0, 9), [], &never),
            Err(TreeError::Empty(Path::resource(3, 0, 9)))
        );
        assert_eq!(
            node_from_records(&base, [], &never),
            Ok(Node::Instance(Instance::new(0)))
        );
    }
}
