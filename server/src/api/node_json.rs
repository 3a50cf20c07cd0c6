//! LwM2M nodes as JSON that says the type of each value, in the shape users of Eclipse
//! Leshan's server API already know:
//!
//! ```json
//! {"kind": "singleResource", "id": 14, "type": "STRING", "value": "+02:00"}
//! {"kind": "multiResource", "id": 7, "type": "INTEGER", "values": {"0": 3800, "1": 5000}}
//! {"kind": "resourceInstance", "id": 1, "type": "INTEGER", "value": 5000}
//! {"kind": "instance", "id": 0, "resources": [ ... ]}
//! {"kind": "obj", "id": 3, "instances": [ ... ]}
//! ```
//!
//! Values: STRING and CORELINK are strings, INTEGER and UNSIGNED_INTEGER integers, FLOAT
//! a number (a non-finite float, which JSON cannot carry, reads as `null`), BOOLEAN a
//! boolean, OPAQUE a hex string, TIME seconds since the Unix epoch (an integer, as LwM2M
//! counts it), OBJLNK `"object:instance"`.
//!
//! In what an operator writes, `type` may be left out: the server's object model gives the
//! type of the resources it knows, and a JSON string, boolean or number stands for itself
//! otherwise. A value that does not fit the type is refused (400) before anything is sent.

use std::collections::BTreeMap;

use lwm2m_objects::format::Nodes;
use lwm2m_objects::link::DiscoverEntry;
use lwm2m_objects::{Instance, Model, Node, Object, Path, Resource, ResourceType, Value};
use serde::{Deserialize, Serialize};
use serde_json::{json, Value as Json};
use utoipa::ToSchema;

use crate::dm::SendData;

/// The LwM2M data type of a value, named as Leshan names it.
#[derive(Serialize, Deserialize, ToSchema, Clone, Copy, Debug, PartialEq, Eq)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum JsonType {
    String,
    Integer,
    UnsignedInteger,
    Float,
    Boolean,
    Opaque,
    Time,
    #[serde(rename = "OBJLNK")]
    ObjLnk,
    #[serde(rename = "CORELINK")]
    CoreLnk,
}

impl JsonType {
    fn of(v: &Value) -> JsonType {
        match v {
            Value::String(_) => JsonType::String,
            Value::Integer(_) => JsonType::Integer,
            Value::UnsignedInteger(_) => JsonType::UnsignedInteger,
            Value::Float(_) => JsonType::Float,
            Value::Boolean(_) => JsonType::Boolean,
            Value::Opaque(_) => JsonType::Opaque,
            Value::Time(_) => JsonType::Time,
            Value::ObjLnk(_) => JsonType::ObjLnk,
            Value::CoreLnk(_) => JsonType::CoreLnk,
        }
    }

    /// The JSON type for a model type; `None` for executable resources, which hold no value.
    fn from_model(t: ResourceType) -> Option<JsonType> {
        Some(match t {
            ResourceType::String => JsonType::String,
            ResourceType::Integer => JsonType::Integer,
            ResourceType::UnsignedInteger => JsonType::UnsignedInteger,
            ResourceType::Float => JsonType::Float,
            ResourceType::Boolean => JsonType::Boolean,
            ResourceType::Opaque => JsonType::Opaque,
            ResourceType::Time => JsonType::Time,
            ResourceType::ObjLnk => JsonType::ObjLnk,
            ResourceType::CoreLnk => JsonType::CoreLnk,
            ResourceType::None => return None,
        })
    }
}

/// A node: what lives at one LwM2M path.
#[derive(Serialize, Deserialize, ToSchema, Clone, Debug, PartialEq)]
#[serde(tag = "kind", deny_unknown_fields)]
pub enum JsonNode {
    /// An object with its instances (each of kind `instance`).
    #[serde(rename = "obj")]
    Object {
        id: u16,
        #[schema(no_recursion)]
        instances: Vec<JsonNode>,
    },
    /// An object instance with its resources (of kind `singleResource` or
    /// `multiResource`). `id` may be left out in a Create, where the device picks it.
    #[serde(rename = "instance")]
    Instance {
        #[serde(default, skip_serializing_if = "Option::is_none")]
        id: Option<u16>,
        #[schema(no_recursion)]
        resources: Vec<JsonNode>,
    },
    #[serde(rename = "singleResource")]
    SingleResource {
        id: u16,
        #[serde(rename = "type", default, skip_serializing_if = "Option::is_none")]
        value_type: Option<JsonType>,
        #[schema(value_type = Object)]
        value: Json,
    },
    /// A resource with instances; `values` maps each resource instance id to its value.
    #[serde(rename = "multiResource")]
    MultiResource {
        id: u16,
        #[serde(rename = "type", default, skip_serializing_if = "Option::is_none")]
        value_type: Option<JsonType>,
        #[schema(value_type = Object)]
        values: BTreeMap<String, Json>,
    },
    #[serde(rename = "resourceInstance")]
    ResourceInstance {
        id: u16,
        #[serde(rename = "type", default, skip_serializing_if = "Option::is_none")]
        value_type: Option<JsonType>,
        #[schema(value_type = Object)]
        value: Json,
    },
}

/// Why JSON from an operator is not a node the target can take.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NodeJsonError {
    #[error("{path}: a {found} does not fit here; expected {expected}")]
    WrongKind {
        path: String,
        found: &'static str,
        expected: &'static str,
    },
    #[error("{path}: the body's id {found} differs from the path's {expected}")]
    IdMismatch {
        path: String,
        found: u16,
        expected: u16,
    },
    #[error("{path}: {reason}")]
    BadValue { path: String, reason: String },
    #[error("{path}: id {id} is given twice")]
    Duplicate { path: String, id: u16 },
    #[error("{0:?} is not a path like /3/0/1")]
    BadPath(String),
    #[error("ids are 0..=65534")]
    BadId,
}

fn value_json(v: &Value) -> Json {
    match v {
        Value::String(s) | Value::CoreLnk(s) => json!(s),
        Value::Integer(i) | Value::Time(i) => json!(i),
        Value::UnsignedInteger(u) => json!(u),
        Value::Float(f) => json!(f),
        Value::Boolean(b) => json!(b),
        Value::Opaque(b) => json!(crate::hex::encode(b)),
        Value::ObjLnk(l) => json!(l.to_string()),
    }
}

/// The type of a value the operator sent without saying it.
fn infer(v: &Json) -> Option<JsonType> {
    match v {
        Json::String(_) => Some(JsonType::String),
        Json::Bool(_) => Some(JsonType::Boolean),
        Json::Number(n) if n.is_i64() => Some(JsonType::Integer),
        Json::Number(n) if n.is_u64() => Some(JsonType::UnsignedInteger),
        Json::Number(_) => Some(JsonType::Float),
        _ => None,
    }
}

/// Reads one JSON value as `t` (`None`: from the model, else from the JSON itself).
fn parse_value(
    v: &Json,
    t: Option<JsonType>,
    model_type: Option<JsonType>,
    path: &Path,
) -> Result<Value, NodeJsonError> {
    let bad = |reason: String| NodeJsonError::BadValue {
        path: path.to_string(),
        reason,
    };
    let t = t
        .or(model_type)
        .or_else(|| infer(v))
        .ok_or_else(|| bad(format!("{v} is not a string, number or boolean")))?;
    let expected = |what: &str| bad(format!("a {} value is {what}, not {v}", type_name(t)));
    Ok(match t {
        JsonType::String => Value::String(v.as_str().ok_or_else(|| expected("a string"))?.into()),
        JsonType::CoreLnk => Value::CoreLnk(v.as_str().ok_or_else(|| expected("a string"))?.into()),
        JsonType::Integer => Value::Integer(v.as_i64().ok_or_else(|| expected("an integer"))?),
        JsonType::Time => Value::Time(
            v.as_i64()
                .ok_or_else(|| expected("an integer of seconds since 1970"))?,
        ),
        JsonType::UnsignedInteger => Value::UnsignedInteger(
            v.as_u64()
                .ok_or_else(|| expected("a non-negative integer"))?,
        ),
        JsonType::Float => Value::Float(v.as_f64().ok_or_else(|| expected("a number"))?),
        JsonType::Boolean => Value::Boolean(v.as_bool().ok_or_else(|| expected("a boolean"))?),
        JsonType::Opaque => Value::Opaque(
            v.as_str()
                .and_then(crate::hex::decode)
                .ok_or_else(|| expected("a hex string"))?,
        ),
        JsonType::ObjLnk => Value::ObjLnk(
            v.as_str()
                .and_then(|s| s.parse().ok())
                .ok_or_else(|| expected("\"object:instance\""))?,
        ),
    })
}

fn type_name(t: JsonType) -> String {
    serde_json::to_value(t)
        .ok()
        .and_then(|v| v.as_str().map(str::to_string))
        .unwrap_or_default()
}

fn kind_name(j: &JsonNode) -> &'static str {
    match j {
        JsonNode::Object { .. } => "obj",
        JsonNode::Instance { .. } => "instance",
        JsonNode::SingleResource { .. } => "singleResource",
        JsonNode::MultiResource { .. } => "multiResource",
        JsonNode::ResourceInstance { .. } => "resourceInstance",
    }
}

fn resource_json(r: &Resource) -> JsonNode {
    match r {
        Resource::Single { id, value } => JsonNode::SingleResource {
            id: *id,
            value_type: Some(JsonType::of(value)),
            value: value_json(value),
        },
        Resource::Multiple { id, instances } => JsonNode::MultiResource {
            id: *id,
            // All instances of one resource share its type; an empty one has none to say.
            value_type: instances.values().next().map(JsonType::of),
            values: instances
                .iter()
                .map(|(k, v)| (k.to_string(), value_json(v)))
                .collect(),
        },
    }
}

fn instance_json(i: &Instance) -> JsonNode {
    JsonNode::Instance {
        id: Some(i.id),
        resources: i.resources.values().map(resource_json).collect(),
    }
}

impl JsonNode {
    pub fn from_node(n: &Node) -> JsonNode {
        match n {
            Node::Object(o) => JsonNode::Object {
                id: o.id,
                instances: o.instances.values().map(instance_json).collect(),
            },
            Node::Instance(i) => instance_json(i),
            Node::Resource(r) => resource_json(r),
            Node::ResourceInstance { id, value } => JsonNode::ResourceInstance {
                id: *id,
                value_type: Some(JsonType::of(value)),
                value: value_json(value),
            },
        }
    }

    /// The node for `path`, typed by the operator's `type` fields, else by `model`.
    pub fn to_node(&self, path: &Path, model: &dyn Model) -> Result<Node, NodeJsonError> {
        let wrong = |expected| NodeJsonError::WrongKind {
            path: path.to_string(),
            found: kind_name(self),
            expected,
        };
        let ids = path.ids();
        match (ids.len(), self) {
            (1, JsonNode::Object { .. }) => {
                let o = ids.first().copied().unwrap_or_default();
                self.object(o, model).map(Node::Object)
            }
            (1, _) => Err(wrong("an obj")),
            (2, JsonNode::Instance { .. }) => {
                let (o, i) = (ids[0], ids[1]);
                self.instance(o, Some(i), model).map(Node::Instance)
            }
            (2, _) => Err(wrong("an instance")),
            (3, JsonNode::SingleResource { .. } | JsonNode::MultiResource { .. }) => {
                let parent = Path::instance(ids[0], ids[1]);
                self.resource(&parent, Some(ids[2]), model)
                    .map(Node::Resource)
            }
            (3, _) => Err(wrong("a singleResource or multiResource")),
            (
                4,
                JsonNode::ResourceInstance {
                    id,
                    value_type,
                    value,
                },
            ) => {
                check_id(path, *id, ids[3])?;
                let model_type = model_type(model, ids[0], ids[2]);
                let value = parse_value(value, *value_type, model_type, path)?;
                Ok(Node::ResourceInstance { id: *id, value })
            }
            (4, _) => Err(wrong("a resourceInstance")),
            _ => Err(wrong("nothing: the root holds no node")),
        }
    }

    fn object(&self, object: u16, model: &dyn Model) -> Result<Object, NodeJsonError> {
        let JsonNode::Object { id, instances } = self else {
            return Err(self.wrong_kind(&Path::object(object), "an obj"));
        };
        check_id(&Path::object(object), *id, object)?;
        let mut out = Object::new(object);
        for j in instances {
            let i = j.instance(object, None, model)?;
            if out.instances.contains_key(&i.id) {
                return Err(NodeJsonError::Duplicate {
                    path: Path::object(object).to_string(),
                    id: i.id,
                });
            }
            out.instances.insert(i.id, i);
        }
        Ok(out)
    }

    /// An instance of `object`; `expected` is the id the path names, if any. Inside an
    /// object every instance must say its id.
    fn instance(
        &self,
        object: u16,
        expected: Option<u16>,
        model: &dyn Model,
    ) -> Result<Instance, NodeJsonError> {
        let (id, resources) = self.instance_parts(object, expected, model)?;
        let id = id.ok_or_else(|| NodeJsonError::BadValue {
            path: Path::object(object).to_string(),
            reason: "an instance needs its id here".into(),
        })?;
        let mut out = Instance::new(id);
        for r in resources {
            out.resources.insert(r.id(), r);
        }
        Ok(out)
    }

    fn instance_parts(
        &self,
        object: u16,
        expected: Option<u16>,
        model: &dyn Model,
    ) -> Result<(Option<u16>, Vec<Resource>), NodeJsonError> {
        let here = match expected {
            Some(i) => Path::instance(object, i),
            None => Path::object(object),
        };
        let JsonNode::Instance { id, resources } = self else {
            return Err(self.wrong_kind(&here, "an instance"));
        };
        let id = match (*id, expected) {
            (Some(found), Some(e)) => {
                check_id(&here, found, e)?;
                Some(e)
            }
            (a, b) => a.or(b),
        };
        if id.is_some_and(|i| i > lwm2m_objects::path::MAX_ID) {
            return Err(NodeJsonError::BadId);
        }
        // Resources are typed by their object; the instance id only names the path.
        let parent = Path::instance(object, id.unwrap_or(0));
        let mut out: Vec<Resource> = Vec::with_capacity(resources.len());
        for r in resources {
            let r = r.resource(&parent, None, model)?;
            if out.iter().any(|x| x.id() == r.id()) {
                return Err(NodeJsonError::Duplicate {
                    path: here.to_string(),
                    id: r.id(),
                });
            }
            out.push(r);
        }
        Ok((id, out))
    }

    /// A resource of the instance at `parent`; `expected` is the id the path names.
    fn resource(
        &self,
        parent: &Path,
        expected: Option<u16>,
        model: &dyn Model,
    ) -> Result<Resource, NodeJsonError> {
        let object = parent.object_id().unwrap_or_default();
        let instance = parent.instance_id().unwrap_or_default();
        match self {
            JsonNode::SingleResource {
                id,
                value_type,
                value,
            } => {
                let path = resource_path(object, instance, *id)?;
                if let Some(e) = expected {
                    check_id(&path, *id, e)?;
                }
                let value = parse_value(value, *value_type, model_type(model, object, *id), &path)?;
                Ok(Resource::Single { id: *id, value })
            }
            JsonNode::MultiResource {
                id,
                value_type,
                values,
            } => {
                let path = resource_path(object, instance, *id)?;
                if let Some(e) = expected {
                    check_id(&path, *id, e)?;
                }
                let model_type = model_type(model, object, *id);
                let mut instances = BTreeMap::new();
                for (k, v) in values {
                    let ri: u16 = k
                        .parse()
                        .ok()
                        .filter(|ri| *ri <= lwm2m_objects::path::MAX_ID)
                        .ok_or_else(|| NodeJsonError::BadValue {
                            path: path.to_string(),
                            reason: format!("{k:?} is not a resource instance id 0..=65534"),
                        })?;
                    let at = Path::resource_instance(object, instance, *id, ri);
                    instances.insert(ri, parse_value(v, *value_type, model_type, &at)?);
                }
                Ok(Resource::Multiple { id: *id, instances })
            }
            other => Err(other.wrong_kind(parent, "a singleResource or multiResource")),
        }
    }

    fn wrong_kind(&self, path: &Path, expected: &'static str) -> NodeJsonError {
        NodeJsonError::WrongKind {
            path: path.to_string(),
            found: kind_name(self),
            expected,
        }
    }
}

fn resource_path(object: u16, instance: u16, id: u16) -> Result<Path, NodeJsonError> {
    Path::from_ids(&[object, instance, id]).map_err(|_| NodeJsonError::BadId)
}

fn check_id(path: &Path, found: u16, expected: u16) -> Result<(), NodeJsonError> {
    if found == expected {
        Ok(())
    } else {
        Err(NodeJsonError::IdMismatch {
            path: path.to_string(),
            found,
            expected,
        })
    }
}

fn model_type(model: &dyn Model, object: u16, resource: u16) -> Option<JsonType> {
    model
        .resource(object, resource)
        .and_then(|r| JsonType::from_model(r.kind))
}

/// Composite results: each path (`/3/0/1`) to its node.
pub fn nodes_to_json(n: &Nodes) -> BTreeMap<String, JsonNode> {
    n.iter()
        .map(|(p, node)| (p.to_string(), JsonNode::from_node(node)))
        .collect()
}

/// A Write-Composite body: each path to the node written there.
pub fn nodes_from_json(
    n: &BTreeMap<String, JsonNode>,
    model: &dyn Model,
) -> Result<Nodes, NodeJsonError> {
    let mut out = Nodes::new();
    for (k, j) in n {
        let path: Path = k.parse().map_err(|_| NodeJsonError::BadPath(k.clone()))?;
        out.insert(path, j.to_node(&path, model)?);
    }
    Ok(out)
}

/// A Create body: the new instance of `object`, with its id from the path
/// (`instance`) or the body, or none (the device picks one).
pub fn instance_from_json(
    j: &JsonNode,
    object: u16,
    instance: Option<u16>,
    model: &dyn Model,
) -> Result<(Option<u16>, Vec<Resource>), NodeJsonError> {
    j.instance_parts(object, instance, model)
}

/// What a device sent with Send: `content`, the newest value at each path, and for a
/// time series (SenML records with times, all under one path) `series` as well, every
/// reading with its time (seconds since 1970, `null` for "now").
pub fn send_to_json(d: &SendData) -> serde_json::Map<String, Json> {
    let mut out = serde_json::Map::new();
    match d {
        SendData::Nodes(n) => {
            out.insert("content".into(), json!(nodes_to_json(n)));
        }
        SendData::Series { path, series } => {
            // Readings come oldest first; the last one is the current value.
            let latest: BTreeMap<String, JsonNode> = series
                .last()
                .map(|t| (path.to_string(), JsonNode::from_node(&t.node)))
                .into_iter()
                .collect();
            out.insert("content".into(), json!(latest));
            let readings: Vec<Json> = series
                .iter()
                .map(|t| json!({ "time": t.time, "node": JsonNode::from_node(&t.node) }))
                .collect();
            out.insert("path".into(), json!(path.to_string()));
            out.insert("series".into(), Json::Array(readings));
        }
    }
    out
}

/// A Discover answer: each link's path and its attributes (name to value, `null` for a
/// valueless one).
pub fn discover_to_json(d: &[DiscoverEntry]) -> Json {
    Json::Array(
        d.iter()
            .map(|e| {
                let attributes: serde_json::Map<String, Json> = e
                    .attributes
                    .to_params()
                    .into_iter()
                    .map(|(k, v)| (k, v.map_or(Json::Null, Json::String)))
                    .collect();
                json!({ "path": e.path.to_string(), "attributes": attributes })
            })
            .collect(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use lwm2m_objects::{ObjLnk, Registry};

    fn model() -> Registry {
        Registry::with_core()
    }

    #[test]
    fn every_value_type_round_trips() {
        let m = lwm2m_objects::NoModel;
        let values = [
            Value::String("x".into()),
            Value::Integer(-5),
            Value::UnsignedInteger(u64::MAX),
            Value::Float(1.5),
            Value::Boolean(true),
            Value::Opaque(vec![0, 0xAB, 0xFF]),
            Value::Time(1_700_000_000),
            Value::ObjLnk(ObjLnk {
                object: 3,
                instance: 0,
            }),
            Value::CoreLnk("</3/0>".into()),
        ];
        for v in values {
            let node = Node::Resource(Resource::Single {
                id: 1,
                value: v.clone(),
            });
            let j = JsonNode::from_node(&node);
            let text = serde_json::to_string(&j).expect("json");
            let back: JsonNode = serde_json::from_str(&text).expect("parse");
            let again = back
                .to_node(&Path::resource(3, 0, 1), &m)
                .expect("typed by its own type");
            assert_eq!(again, node, "{text}");
        }
    }

    #[test]
    fn the_shape_is_leshans() {
        let node = Node::Instance(
            Instance::new(0)
                .with(Resource::Single {
                    id: 14,
                    value: "+02:00".into(),
                })
                .with(Resource::Multiple {
                    id: 7,
                    instances: BTreeMap::from([(0, Value::Integer(3800))]),
                }),
        );
        let j = serde_json::to_value(JsonNode::from_node(&node)).expect("json");
        assert_eq!(
            j,
            json!({"kind": "instance", "id": 0, "resources": [
                {"kind": "multiResource", "id": 7, "type": "INTEGER", "values": {"0": 3800}},
                {"kind": "singleResource", "id": 14, "type": "STRING", "value": "+02:00"},
            ]})
        );
    }

    #[test]
    fn the_model_types_untyped_values() {
        let m = model();
        // /3/0/13 Current Time is a Time; /3/0/9 Battery Level an Integer.
        let j: JsonNode = serde_json::from_value(
            json!({"kind": "singleResource", "id": 13, "value": 1700000000}),
        )
        .expect("json");
        assert_eq!(
            j.to_node(&Path::resource(3, 0, 13), &m).expect("node"),
            Node::Resource(Resource::Single {
                id: 13,
                value: Value::Time(1_700_000_000)
            })
        );
        // A number for a string resource is refused.
        let j: JsonNode =
            serde_json::from_value(json!({"kind": "singleResource", "id": 14, "value": 5}))
                .expect("json");
        let e = j.to_node(&Path::resource(3, 0, 14), &m).expect_err("type");
        assert!(matches!(e, NodeJsonError::BadValue { .. }), "{e}");
    }

    #[test]
    fn bodies_that_do_not_fit_the_path_are_refused() {
        let m = model();
        let single: JsonNode =
            serde_json::from_value(json!({"kind": "singleResource", "id": 15, "value": "x"}))
                .expect("json");
        assert!(matches!(
            single.to_node(&Path::resource(3, 0, 14), &m),
            Err(NodeJsonError::IdMismatch { .. })
        ));
        assert!(matches!(
            single.to_node(&Path::instance(3, 0), &m),
            Err(NodeJsonError::WrongKind { .. })
        ));
        for bad in [
            json!({"kind": "nope", "id": 1}),
            json!({"kind": "singleResource", "id": 70000, "value": 1}),
            json!({"kind": "singleResource", "id": 1, "value": 1, "extra": true}),
            json!({"kind": "singleResource", "id": 1, "type": "WEIRD", "value": 1}),
        ] {
            assert!(
                serde_json::from_value::<JsonNode>(bad.clone()).is_err(),
                "{bad}"
            );
        }
        let dup: JsonNode =
            serde_json::from_value(json!({"kind": "instance", "id": 0, "resources": [
                {"kind": "singleResource", "id": 14, "value": "a"},
                {"kind": "singleResource", "id": 14, "value": "b"},
            ]}))
            .expect("json");
        assert!(matches!(
            dup.to_node(&Path::instance(3, 0), &m),
            Err(NodeJsonError::Duplicate { .. })
        ));
        let opaque: JsonNode = serde_json::from_value(
            json!({"kind": "singleResource", "id": 1, "type": "OPAQUE", "value": "abc"}),
        )
        .expect("json");
        assert!(opaque.to_node(&Path::resource(3, 0, 1), &m).is_err());
    }

    #[test]
    fn create_takes_the_instance_id_from_path_or_body() {
        let m = model();
        let j: JsonNode = serde_json::from_value(json!({"kind": "instance", "resources": [
            {"kind": "singleResource", "id": 0, "value": "app"},
        ]}))
        .expect("json");
        let (id, resources) = instance_from_json(&j, 9, None, &m).expect("create");
        assert_eq!(id, None);
        assert_eq!(resources.len(), 1);
        assert_eq!(
            instance_from_json(&j, 9, Some(4), &m).expect("c").0,
            Some(4)
        );
        let j: JsonNode =
            serde_json::from_value(json!({"kind": "instance", "id": 7, "resources": []}))
                .expect("json");
        assert_eq!(instance_from_json(&j, 9, None, &m).expect("c").0, Some(7));
        assert!(instance_from_json(&j, 9, Some(8), &m).is_err());
    }

    #[test]
    fn composite_bodies_name_their_paths() {
        let m = model();
        let map: BTreeMap<String, JsonNode> = serde_json::from_value(json!({
            "/3/0/14": {"kind": "singleResource", "id": 14, "value": "+01:00"},
            "/1/0/1": {"kind": "singleResource", "id": 1, "value": 60},
        }))
        .expect("json");
        let nodes = nodes_from_json(&map, &m).expect("nodes");
        assert_eq!(nodes.len(), 2);
        // /1/0/1 Lifetime is an Integer in the model, whatever JSON number carries it.
        assert_eq!(
            nodes.get(&Path::resource(1, 0, 1)),
            Some(&Node::Resource(Resource::Single {
                id: 1,
                value: Value::Integer(60)
            }))
        );
        let back = nodes_to_json(&nodes);
        assert!(back.contains_key("/3/0/14"));
        let bad: BTreeMap<String, JsonNode> = serde_json::from_value(json!({
            "3/0/14": {"kind": "singleResource", "id": 14, "value": "x"},
        }))
        .expect("json");
        assert!(matches!(
            nodes_from_json(&bad, &m),
            Err(NodeJsonError::BadPath(_))
        ));
    }
}
