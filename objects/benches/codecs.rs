//! Encoding and decoding the Device object (/3/0) and a 1,000-resource object
//! instance in every content format, against a baseline measured in the same
//! run: generic JSON (`serde_json::Value`) of the same records, the cost any
//! JSON API would pay for the same data. `benches/report.py` turns the
//! results into the ratio table in BENCHMARKS.md.

use std::hint::black_box;

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion};
use lwm2m_objects::model::{ObjectDef, Operations, ResourceDef};
use lwm2m_objects::{
    Codecs, ContentFormat, Instance, Model, Node, ObjLnk, Path, Registry, Resource, ResourceType,
    Value,
};

fn device() -> Node {
    let multi = |v: &[i64]| {
        v.iter()
            .enumerate()
            .map(|(i, x)| (i as u16, Value::Integer(*x)))
            .collect()
    };
    Node::Instance(
        Instance::new(0)
            .with(single(0, "Open Mobile Alliance".into()))
            .with(single(1, "Lightweight M2M Client".into()))
            .with(single(2, "345000123".into()))
            .with(single(3, "1.0".into()))
            .with(Resource::Multiple {
                id: 6,
                instances: multi(&[1, 5]),
            })
            .with(Resource::Multiple {
                id: 7,
                instances: multi(&[3800, 5000]),
            })
            .with(Resource::Multiple {
                id: 8,
                instances: multi(&[125, 900]),
            })
            .with(single(9, Value::Integer(100)))
            .with(single(10, Value::Integer(15)))
            .with(Resource::Multiple {
                id: 11,
                instances: multi(&[0]),
            })
            .with(single(13, Value::Time(1_367_491_215)))
            .with(single(14, "+02:00".into()))
            .with(single(16, "U".into())),
    )
}

fn single(id: u16, value: Value) -> Resource {
    Resource::Single { id, value }
}

const BIG: u16 = 10_500;

/// An object with 1,000 single resources of every type, in rotation.
fn big_object() -> (ObjectDef, Node) {
    let kinds = [
        ResourceType::String,
        ResourceType::Integer,
        ResourceType::Float,
        ResourceType::Boolean,
        ResourceType::Time,
        ResourceType::Opaque,
        ResourceType::ObjLnk,
        ResourceType::UnsignedInteger,
    ];
    let mut def = ObjectDef {
        id: BIG,
        name: "Bench".into(),
        description: String::new(),
        version: Default::default(),
        lwm2m_version: Default::default(),
        urn: String::new(),
        multiple: false,
        mandatory: false,
        resources: Default::default(),
    };
    let mut inst = Instance::new(0);
    for id in 0..1000u16 {
        let kind = kinds[id as usize % kinds.len()];
        def.resources.insert(
            id,
            ResourceDef {
                id,
                name: format!("R{id}"),
                operations: Operations::ReadWrite,
                multiple: false,
                mandatory: false,
                kind,
                range: String::new(),
                units: String::new(),
                description: String::new(),
            },
        );
        let i = i64::from(id);
        let value = match kind {
            ResourceType::String => Value::String(format!("value number {id}")),
            ResourceType::Integer => Value::Integer(i * 7919 - 100_000),
            ResourceType::Float => Value::Float(i as f64 * 1.25 + 0.1),
            ResourceType::Boolean => Value::Boolean(id % 3 == 0),
            ResourceType::Time => Value::Time(1_700_000_000 + i),
            ResourceType::Opaque => Value::Opaque((0..16).map(|b| b ^ id as u8).collect()),
            ResourceType::ObjLnk => Value::ObjLnk(ObjLnk {
                object: 3,
                instance: id,
            }),
            _ => Value::UnsignedInteger(u64::from(id) << 40),
        };
        inst = inst.with(single(id, value));
    }
    (def, Node::Instance(inst))
}

/// The baseline payload: the node's records as generic JSON objects.
fn generic_json(path: &Path, node: &Node) -> serde_json::Value {
    use base64::Engine;
    let recs = node.to_records(path, None);
    serde_json::Value::Array(
        recs.into_iter()
            .map(|r| {
                let v = match r.value {
                    Value::String(s) | Value::CoreLnk(s) => serde_json::json!(s),
                    Value::Integer(i) | Value::Time(i) => serde_json::json!(i),
                    Value::UnsignedInteger(u) => serde_json::json!(u),
                    Value::Float(f) => serde_json::json!(f),
                    Value::Boolean(b) => serde_json::json!(b),
                    Value::Opaque(b) => {
                        serde_json::json!(base64::engine::general_purpose::STANDARD.encode(b))
                    }
                    Value::ObjLnk(l) => serde_json::json!(l.to_string()),
                };
                serde_json::json!({ "n": r.path.to_string(), "v": v })
            })
            .collect(),
    )
}

const NODE_FORMATS: [ContentFormat; 5] = [
    ContentFormat::Tlv,
    ContentFormat::SenmlJson,
    ContentFormat::SenmlCbor,
    ContentFormat::Lwm2mJson,
    ContentFormat::Lwm2mCbor,
];

fn bench_node(c: &mut Criterion, name: &str, model: &dyn Model, path: Path, node: &Node) {
    let codecs = Codecs::new();
    let mut g = c.benchmark_group(name);
    let baseline = generic_json(&path, node);
    let baseline_bytes = serde_json::to_vec(&baseline).expect("JSON of plain values");
    g.bench_function(BenchmarkId::new("encode", "baseline"), |b| {
        b.iter(|| serde_json::to_vec(black_box(&baseline)))
    });
    g.bench_function(BenchmarkId::new("decode", "baseline"), |b| {
        b.iter(|| serde_json::from_slice::<serde_json::Value>(black_box(&baseline_bytes)))
    });
    for format in NODE_FORMATS {
        let bytes = codecs
            .encode(format, &path, node, model)
            .unwrap_or_else(|e| panic!("{format}: {e}"));
        let label = format!("{}", format.code());
        g.bench_function(BenchmarkId::new("encode", &label), |b| {
            b.iter(|| codecs.encode(format, black_box(&path), black_box(node), model))
        });
        g.bench_function(BenchmarkId::new("decode", &label), |b| {
            b.iter(|| codecs.decode(format, black_box(&bytes), black_box(&path), model))
        });
    }
    g.finish();
}

/// The single-value formats on the one value they carry.
fn bench_single(c: &mut Criterion, model: &dyn Model) {
    let codecs = Codecs::new();
    let mut g = c.benchmark_group("single");
    let cases = [
        (
            ContentFormat::Text,
            Path::resource(3, 0, 0),
            Value::from("Open Mobile Alliance"),
        ),
        (
            ContentFormat::Cbor,
            Path::resource(3, 0, 13),
            Value::Time(1_367_491_215),
        ),
        (
            ContentFormat::Opaque,
            Path::resource(5, 0, 0),
            Value::Opaque(vec![0x5a; 1024]),
        ),
    ];
    for (format, path, value) in cases {
        let node = Node::Resource(single(path.resource_id().unwrap_or(0), value));
        let baseline = generic_json(&path, &node);
        let baseline_bytes = serde_json::to_vec(&baseline).expect("JSON of plain values");
        let bytes = codecs
            .encode(format, &path, &node, model)
            .expect("single value");
        let label = format!("{}", format.code());
        g.bench_function(
            BenchmarkId::new(format!("encode-{label}"), "baseline"),
            |b| b.iter(|| serde_json::to_vec(black_box(&baseline))),
        );
        g.bench_function(
            BenchmarkId::new(format!("decode-{label}"), "baseline"),
            |b| b.iter(|| serde_json::from_slice::<serde_json::Value>(black_box(&baseline_bytes))),
        );
        g.bench_function(BenchmarkId::new(format!("encode-{label}"), &label), |b| {
            b.iter(|| codecs.encode(format, black_box(&path), black_box(&node), model))
        });
        g.bench_function(BenchmarkId::new(format!("decode-{label}"), &label), |b| {
            b.iter(|| codecs.decode(format, black_box(&bytes), black_box(&path), model))
        });
    }
    g.finish();
}

fn codecs(c: &mut Criterion) {
    let mut model = Registry::with_core();
    let (def, big) = big_object();
    model.insert(def);
    bench_node(c, "device", &model, Path::instance(3, 0), &device());
    bench_node(c, "object-1000", &model, Path::instance(BIG, 0), &big);
    bench_single(c, &model);
}

criterion_group!(benches, codecs);
criterion_main!(benches);
