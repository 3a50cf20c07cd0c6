//! Round-trip properties of every codec: for any object model and any node
//! that fits it, decode(encode(node)) == node, in every format able to carry
//! that node. The formats' reach is spelled out in `carries` so that a codec
//! refusing a node it should carry fails the test instead of being skipped.

use std::collections::BTreeMap;

use lwm2m_objects::format::Nodes;
use lwm2m_objects::model::{ObjectDef, Operations, ResourceDef};
use lwm2m_objects::{
    Codecs, ContentFormat, Instance, Node, ObjLnk, Object, Path, Registry, Resource, ResourceType,
    TimestampedNode, Value,
};
use proptest::prelude::*;

const TYPES: [ResourceType; 9] = [
    ResourceType::String,
    ResourceType::Integer,
    ResourceType::UnsignedInteger,
    ResourceType::Float,
    ResourceType::Boolean,
    ResourceType::Opaque,
    ResourceType::Time,
    ResourceType::ObjLnk,
    ResourceType::CoreLnk,
];

fn value(t: ResourceType) -> BoxedStrategy<Value> {
    match t {
        ResourceType::String => ".{0,40}".prop_map(Value::String).boxed(),
        ResourceType::CoreLnk => "</[0-9]{1,5}(/[0-9]{1,5}){0,2}>"
            .prop_map(Value::CoreLnk)
            .boxed(),
        ResourceType::Integer => any::<i64>().prop_map(Value::Integer).boxed(),
        ResourceType::UnsignedInteger => any::<u64>().prop_map(Value::UnsignedInteger).boxed(),
        ResourceType::Time => any::<i64>().prop_map(Value::Time).boxed(),
        // JSON has no NaN or infinity; every finite double must survive.
        ResourceType::Float => prop_oneof![
            any::<f64>().prop_filter("finite", |f| f.is_finite()),
            any::<f32>()
                .prop_filter("finite", |f| f.is_finite())
                .prop_map(f64::from),
            (-1_000_000i64..1_000_000).prop_map(|i| i as f64),
        ]
        .prop_map(Value::Float)
        .boxed(),
        ResourceType::Boolean => any::<bool>().prop_map(Value::Boolean).boxed(),
        ResourceType::Opaque => proptest::collection::vec(any::<u8>(), 0..64)
            .prop_map(Value::Opaque)
            .boxed(),
        ResourceType::ObjLnk => (0u16..=65534, 0u16..=65534)
            .prop_map(|(object, instance)| Value::ObjLnk(ObjLnk { object, instance }))
            .boxed(),
        ResourceType::None => unreachable!("executable resources carry no value"),
    }
}

fn id() -> impl Strategy<Value = u16> {
    prop_oneof![0u16..10, 0u16..=65534]
}

/// A random object definition with 1 to 6 readable resources.
fn object_def(object_id: u16) -> impl Strategy<Value = ObjectDef> {
    proptest::collection::btree_map(
        id(),
        (proptest::sample::select(TYPES.to_vec()), any::<bool>()),
        1..6,
    )
    .prop_map(move |res| ObjectDef {
        id: object_id,
        name: format!("Test {object_id}"),
        description: String::new(),
        version: Default::default(),
        lwm2m_version: Default::default(),
        urn: String::new(),
        multiple: true,
        mandatory: false,
        resources: res
            .into_iter()
            .map(|(id, (kind, multiple))| {
                let def = ResourceDef {
                    id,
                    name: format!("R{id}"),
                    operations: Operations::ReadWrite,
                    multiple,
                    mandatory: false,
                    kind,
                    range: String::new(),
                    units: String::new(),
                    description: String::new(),
                };
                (id, def)
            })
            .collect(),
    })
}

fn resource(def: &ResourceDef) -> BoxedStrategy<Resource> {
    let id = def.id;
    if def.multiple {
        proptest::collection::btree_map(id_small(), value(def.kind), 1..4)
            .prop_map(move |instances| Resource::Multiple { id, instances })
            .boxed()
    } else {
        value(def.kind)
            .prop_map(move |value| Resource::Single { id, value })
            .boxed()
    }
}

fn id_small() -> impl Strategy<Value = u16> {
    prop_oneof![0u16..4, 0u16..=65534]
}

/// An instance holding a non-empty subset of the definition's resources
/// (formats built from records cannot carry an empty instance).
fn instance(def: &ObjectDef, iid: u16) -> BoxedStrategy<Instance> {
    let all: Vec<BoxedStrategy<Resource>> = def.resources.values().map(resource).collect();
    (
        all,
        proptest::collection::vec(any::<bool>(), def.resources.len()),
    )
        .prop_map(move |(resources, keep)| {
            let mut inst = Instance::new(iid);
            for (i, (r, k)) in resources.into_iter().zip(keep).enumerate() {
                if k || i == 0 {
                    inst = inst.with(r);
                }
            }
            inst
        })
        .boxed()
}

/// A node at a path of any depth below one object.
fn case(def: ObjectDef) -> BoxedStrategy<(ObjectDef, Path, Node)> {
    let o = def.id;
    let d2 = def.clone();
    let by_depth = (
        1usize..=4,
        id_small(),
        0usize..def.resources.len(),
        id_small(),
    );
    by_depth
        .prop_flat_map(move |(depth, iid, ridx, riid)| {
            let def = d2.clone();
            let rdef = def
                .resources
                .values()
                .nth(ridx)
                .cloned()
                .expect("index < len");
            let node: BoxedStrategy<(Path, Node)> = match depth {
                1 => proptest::collection::btree_set(id_small(), 1..3)
                    .prop_flat_map({
                        let def = def.clone();
                        move |ids| {
                            let insts: Vec<_> = ids.iter().map(|i| instance(&def, *i)).collect();
                            insts.prop_map(move |insts| {
                                let obj = insts.into_iter().fold(Object::new(o), Object::with);
                                (Path::object(o), Node::Object(obj))
                            })
                        }
                    })
                    .boxed(),
                2 => instance(&def, iid)
                    .prop_map(move |i| (Path::instance(o, iid), Node::Instance(i)))
                    .boxed(),
                3 => resource(&rdef)
                    .prop_map(move |r| (Path::resource(o, iid, r.id()), Node::Resource(r)))
                    .boxed(),
                _ if !rdef.multiple => resource(&rdef)
                    .prop_map(move |r| (Path::resource(o, iid, r.id()), Node::Resource(r)))
                    .boxed(),
                _ => {
                    let rid = rdef.id;
                    value(rdef.kind)
                        .prop_map(move |value| {
                            (
                                Path::resource_instance(o, iid, rid, riid),
                                Node::ResourceInstance { id: riid, value },
                            )
                        })
                        .boxed()
                }
            };
            let def = def.clone();
            node.prop_map(move |(p, n)| (def.clone(), p, n))
        })
        .boxed()
}

fn registry(defs: impl IntoIterator<Item = ObjectDef>) -> Registry {
    let mut r = Registry::new();
    for d in defs {
        r.insert(d);
    }
    r
}

/// The single value a node holds, if it holds exactly one.
fn single(node: &Node) -> Option<&Value> {
    match node {
        Node::Resource(Resource::Single { value, .. }) | Node::ResourceInstance { value, .. } => {
            Some(value)
        }
        _ => None,
    }
}

/// Whether a format must be able to carry this node.
fn carries(format: ContentFormat, node: &Node) -> bool {
    match format {
        ContentFormat::LinkFormat => false,
        ContentFormat::Text | ContentFormat::Cbor => single(node).is_some(),
        ContentFormat::Opaque => matches!(single(node), Some(Value::Opaque(_))),
        ContentFormat::Tlv
        | ContentFormat::SenmlJson
        | ContentFormat::SenmlCbor
        | ContentFormat::Lwm2mJson
        | ContentFormat::Lwm2mCbor => true,
    }
}

const COMPOSITE: [ContentFormat; 3] = [
    ContentFormat::SenmlJson,
    ContentFormat::SenmlCbor,
    ContentFormat::Lwm2mCbor,
];
const TIMESTAMPED: [ContentFormat; 3] = [
    ContentFormat::SenmlJson,
    ContentFormat::SenmlCbor,
    ContentFormat::Lwm2mJson,
];

proptest! {
    #![proptest_config(ProptestConfig { cases: 2000, ..ProptestConfig::default() })]

    #[test]
    fn every_format_round_trips_what_it_carries(
        (def, path, node) in (10_000u16..10_003).prop_flat_map(object_def).prop_flat_map(case)
    ) {
        let model = registry([def]);
        let codecs = Codecs::new();
        let mut tried = 0;
        for format in ContentFormat::ALL {
            if !carries(format, &node) {
                continue;
            }
            tried += 1;
            let bytes = codecs.encode(format, &path, &node, &model)
                .map_err(|e| TestCaseError::fail(format!("{format} encode {path}: {e}")))?;
            let back = codecs.decode(format, &bytes, &path, &model)
                .map_err(|e| TestCaseError::fail(format!("{format} decode {path}: {e}")))?;
            prop_assert_eq!(&back, &node, "{} at {}", format, path);
        }
        prop_assert!(tried >= 5);
    }

    #[test]
    fn composite_formats_round_trip(
        defs in proptest::collection::vec((10_000u16..10_003).prop_flat_map(object_def), 1..3)
            .prop_flat_map(|defs| {
                let cases: Vec<_> = defs.into_iter().map(case).collect();
                cases
            })
    ) {
        // One node per object at most, so that no requested path lies under another.
        let mut nodes: Nodes = BTreeMap::new();
        let mut seen = std::collections::BTreeSet::new();
        let mut model_defs = Vec::new();
        for (def, path, node) in defs {
            if seen.insert(def.id) {
                model_defs.push(def);
                nodes.insert(path, node);
            }
        }
        let model = registry(model_defs);
        let codecs = Codecs::new();
        let paths: Vec<Path> = nodes.keys().copied().collect();
        for format in COMPOSITE {
            let codec = codecs.get(format.code()).map_err(|e| TestCaseError::fail(e.to_string()))?;
            let bytes = codec.encode_nodes(&nodes, &model)
                .map_err(|e| TestCaseError::fail(format!("{format} encode: {e}")))?;
            let back = codec.decode_nodes(&bytes, Some(&paths), &model)
                .map_err(|e| TestCaseError::fail(format!("{format} decode: {e}")))?;
            prop_assert_eq!(&back, &nodes, "{}", format);
        }
        for format in [ContentFormat::SenmlJson, ContentFormat::SenmlCbor] {
            let codec = codecs.get(format.code()).map_err(|e| TestCaseError::fail(e.to_string()))?;
            let bytes = codec.encode_paths(&paths)
                .map_err(|e| TestCaseError::fail(format!("{format} encode paths: {e}")))?;
            prop_assert_eq!(codec.decode_paths(&bytes).map_err(|e| TestCaseError::fail(e.to_string()))?, paths.clone());
        }
    }

    #[test]
    fn timestamped_formats_round_trip((def, path, nodes) in series()) {
        let model = registry([def]);
        let codecs = Codecs::new();
        let series: Vec<TimestampedNode> = nodes
            .into_iter()
            .enumerate()
            .map(|(i, node)| TimestampedNode { time: Some(1_700_000_000.0 + 10.0 * i as f64), node })
            .collect();
        for format in TIMESTAMPED {
            let codec = codecs.get(format.code()).map_err(|e| TestCaseError::fail(e.to_string()))?;
            let bytes = codec.encode_timestamped(&path, &series, &model)
                .map_err(|e| TestCaseError::fail(format!("{format} encode: {e}")))?;
            let back = codec.decode_timestamped(&bytes, &path, &model)
                .map_err(|e| TestCaseError::fail(format!("{format} decode: {e}")))?;
            prop_assert_eq!(&back, &series, "{}", format);
        }
    }
}

/// Several measurements of one path, each a node that fits the model.
fn series() -> impl Strategy<Value = (ObjectDef, Path, Vec<Node>)> {
    (10_000u16..10_003)
        .prop_flat_map(object_def)
        .prop_flat_map(case)
        .prop_flat_map(|(def, path, first)| {
            let more = proptest::collection::vec(node_at(&def, path), 0..3);
            (Just(def), Just(path), Just(first), more)
        })
        .prop_map(|(def, path, first, mut more)| {
            more.insert(0, first);
            (def, path, more)
        })
}

fn node_at(def: &ObjectDef, path: Path) -> BoxedStrategy<Node> {
    let ids = path.ids().to_vec();
    let rdef = || def.resources[&ids[2]].clone();
    match ids.len() {
        1 => instance(def, 0)
            .prop_map(move |i| Node::Object(Object::new(ids[0]).with(i)))
            .boxed(),
        2 => instance(def, ids[1]).prop_map(Node::Instance).boxed(),
        3 => resource(&rdef()).prop_map(Node::Resource).boxed(),
        _ => {
            let riid = ids[3];
            value(rdef().kind)
                .prop_map(move |value| Node::ResourceInstance { id: riid, value })
                .boxed()
        }
    }
}
