//! Test fixtures shared by the codec tests: the Device object instance of
//! the specification's examples, and small builders.

use crate::node::{Instance, Node, Resource};
use crate::value::Value;

/// Bytes from hex text; whitespace is ignored.
pub fn hex(s: &str) -> Vec<u8> {
    let s: String = s.split_whitespace().collect();
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&s[i..i + 2], 16).expect("test hex"))
        .collect()
}

pub fn single(id: u16, value: impl Into<Value>) -> Resource {
    Resource::Single {
        id,
        value: value.into(),
    }
}

/// A multiple integer resource with instances 0, 1, ...
pub fn ints(id: u16, v: &[i64]) -> Resource {
    Resource::Multiple {
        id,
        instances: v
            .iter()
            .enumerate()
            .map(|(i, x)| (i as u16, Value::Integer(*x)))
            .collect(),
    }
}

/// `/3/0` with the values of the specification's TLV, SenML and JSON examples.
pub fn device() -> Node {
    Node::Instance(
        Instance::new(0)
            .with(single(0, "Open Mobile Alliance"))
            .with(single(1, "Lightweight M2M Client"))
            .with(single(2, "345000123"))
            .with(single(3, "1.0"))
            .with(ints(6, &[1, 5]))
            .with(ints(7, &[3800, 5000]))
            .with(ints(8, &[125, 900]))
            .with(single(9, 100i64))
            .with(single(10, 15i64))
            .with(ints(11, &[0]))
            .with(single(13, Value::Time(1_367_491_215)))
            .with(single(14, "+02:00"))
            .with(single(16, "U")),
    )
}
