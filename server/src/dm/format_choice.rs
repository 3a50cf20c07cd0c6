//! Which content format a request carries or asks for, per device.
//!
//! The rules, in order (LwM2M 1.2 Core "Data Formats"; spec-facts §5;
//! module-quirks §13):
//!
//! 1. A per-request override wins, except that a request **body** is
//!    never LwM2M JSON (11543) towards a 1.1+ device: that format is 1.0
//!    only, and 1.1+ clients may not support it.
//! 2. A 1.2 device that advertised LwM2M CBOR (11544) gets LwM2M CBOR.
//! 3. A 1.1+ device that advertised SenML CBOR (112) gets SenML CBOR, else
//!    one that advertised SenML JSON (110) gets SenML JSON: what a device
//!    lists on its root link is what it prefers.
//! 4. Otherwise a target that holds one value (a single resource or a
//!    resource instance) gets text/plain (0), or octet-stream (42) for an
//!    opaque value: every version must support both for single values,
//!    and 1.1 clients handle TLV poorly.
//! 5. Otherwise TLV (11542), the format every 1.0 client must support and
//!    the only one a TLV-only build (which advertises nothing) speaks.
//!
//! Composite operations (1.1+) carry several paths, which only SenML and
//! LwM2M CBOR can: rules 2-3, else SenML CBOR. A list of paths (the body
//! of Read-/Observe-Composite) is SenML only, since LwM2M CBOR has no
//! path-list form: SenML CBOR unless only SenML JSON was advertised.

use lwm2m_objects::{ContentFormat, Model, Node, Path, Resource, ResourceType, Value, Version};

use super::context::DeviceContext;
use super::error::DmError;

/// What the payload at a target holds, as far as format choice cares.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Shape {
    /// One value (single resource or resource instance); `opaque` when it
    /// is of type Opaque.
    SingleValue { opaque: bool },
    /// An object, instance or multiple resource (or a resource the model
    /// does not know).
    Tree,
}

impl Shape {
    /// The shape of what a Read or Observe of `path` returns, by the model.
    pub fn of_target(path: &Path, model: &dyn Model) -> Shape {
        let def = path
            .object_id()
            .zip(path.resource_id())
            .and_then(|(o, r)| model.resource(o, r));
        match (path.depth(), def) {
            (3, Some(d)) if !d.multiple => Shape::SingleValue {
                opaque: d.kind == ResourceType::Opaque,
            },
            (4, d) => Shape::SingleValue {
                opaque: d.is_some_and(|d| d.kind == ResourceType::Opaque),
            },
            _ => Shape::Tree,
        }
    }

    /// The shape of a node a Write sends.
    pub fn of_node(node: &Node) -> Shape {
        match node {
            Node::Resource(Resource::Single { value, .. })
            | Node::ResourceInstance { value, .. } => Shape::SingleValue {
                opaque: matches!(value, Value::Opaque(_)),
            },
            _ => Shape::Tree,
        }
    }
}

/// The best advertised node format for the device's version (rules 2-3).
fn advertised_rich(device: &DeviceContext) -> Option<ContentFormat> {
    if device.at_least(Version::V1_2) && device.advertises(ContentFormat::Lwm2mCbor) {
        return Some(ContentFormat::Lwm2mCbor);
    }
    if device.at_least(Version::V1_1) {
        for f in [ContentFormat::SenmlCbor, ContentFormat::SenmlJson] {
            if device.advertises(f) {
                return Some(f);
            }
        }
    }
    None
}

/// The default format for one node (Read/Observe Accept, Write body).
pub fn node_format(device: &DeviceContext, shape: Shape) -> ContentFormat {
    if let Some(f) = advertised_rich(device) {
        return f;
    }
    match shape {
        Shape::SingleValue { opaque: true } => ContentFormat::Opaque,
        Shape::SingleValue { opaque: false } => ContentFormat::Text,
        Shape::Tree => ContentFormat::Tlv,
    }
}

/// The default format of a Create body. Without an instance id only TLV
/// can say "the client picks the id" (a TLV body of bare resources); SenML
/// names and LwM2M CBOR keys always carry the instance id.
pub fn create_format(device: &DeviceContext, with_instance_id: bool) -> ContentFormat {
    match advertised_rich(device) {
        Some(f) if with_instance_id => f,
        _ => ContentFormat::Tlv,
    }
}

/// The default format of composite values (Write-Composite body,
/// Read-/Observe-Composite Accept).
pub fn composite_format(device: &DeviceContext) -> ContentFormat {
    advertised_rich(device).unwrap_or(ContentFormat::SenmlCbor)
}

/// The format of a path list (Read-/Observe-Composite request body).
pub fn paths_format(device: &DeviceContext) -> ContentFormat {
    if device.advertises(ContentFormat::SenmlJson) && !device.advertises(ContentFormat::SenmlCbor) {
        ContentFormat::SenmlJson
    } else {
        ContentFormat::SenmlCbor
    }
}

/// Checks an override for a request body (rule 1, and formats that cannot
/// carry the payload at all).
pub fn check_body_format(
    device: &DeviceContext,
    format: ContentFormat,
    composite: bool,
) -> Result<(), DmError> {
    if format == ContentFormat::Lwm2mJson && device.at_least(Version::V1_1) {
        return Err(DmError::FormatRefused {
            format,
            reason: "LwM2M JSON is a 1.0 format and is never sent to a 1.1+ device",
        });
    }
    if format == ContentFormat::LinkFormat {
        return Err(DmError::FormatRefused {
            format,
            reason: "link format carries no values",
        });
    }
    if composite
        && !matches!(
            format,
            ContentFormat::SenmlJson | ContentFormat::SenmlCbor | ContentFormat::Lwm2mCbor
        )
    {
        return Err(DmError::FormatRefused {
            format,
            reason: "composite payloads need SenML JSON, SenML CBOR or LwM2M CBOR",
        });
    }
    Ok(())
}

/// Checks an override for a path-list body (SenML only).
pub fn check_paths_format(format: ContentFormat) -> Result<(), DmError> {
    match format {
        ContentFormat::SenmlJson | ContentFormat::SenmlCbor => Ok(()),
        _ => Err(DmError::FormatRefused {
            format,
            reason: "a list of paths is carried in SenML JSON or SenML CBOR only",
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use lwm2m_objects::Registry;
    use ContentFormat::*;

    fn dev(v: Version, cts: &[ContentFormat]) -> DeviceContext {
        DeviceContext::new(v).with_formats(cts)
    }

    const TREE: Shape = Shape::Tree;
    const TEXT: Shape = Shape::SingleValue { opaque: false };
    const BYTES: Shape = Shape::SingleValue { opaque: true };

    /// The rule table of the module documentation, row by row.
    #[test]
    fn node_format_table() {
        let v10 = Version::V1_0;
        let v11 = Version::V1_1;
        let v12 = Version::V1_2;
        let rows: &[(Version, &[ContentFormat], Shape, ContentFormat, &str)] = &[
            (
                v12,
                &[SenmlCbor, Lwm2mCbor],
                TREE,
                Lwm2mCbor,
                "rule 2: 1.2 + 11544",
            ),
            (
                v12,
                &[Lwm2mCbor],
                TEXT,
                Lwm2mCbor,
                "rule 2 also for single values",
            ),
            (v11, &[Lwm2mCbor], TREE, Tlv, "rule 2 needs 1.2; rule 5"),
            (
                v11,
                &[Lwm2mCbor, SenmlJson],
                TREE,
                SenmlJson,
                "rule 2 needs 1.2; rule 3",
            ),
            (
                v12,
                &[SenmlJson, SenmlCbor],
                TREE,
                SenmlCbor,
                "rule 3: CBOR before JSON",
            ),
            (v11, &[SenmlCbor], TREE, SenmlCbor, "rule 3"),
            (v11, &[SenmlJson], TEXT, SenmlJson, "rule 3"),
            (v10, &[SenmlCbor], TREE, Tlv, "1.0 has no SenML: rule 5"),
            (v11, &[Lwm2mJson], TREE, Tlv, "never LwM2M JSON by default"),
            (v11, &[], TEXT, Text, "rule 4"),
            (v11, &[], BYTES, Opaque, "rule 4, opaque"),
            (v10, &[], TEXT, Text, "rule 4 on 1.0"),
            (v10, &[], TREE, Tlv, "rule 5 on 1.0"),
            (
                v12,
                &[],
                TREE,
                Tlv,
                "rule 5: TLV-only builds advertise nothing",
            ),
        ];
        for (v, cts, shape, want, why) in rows {
            assert_eq!(node_format(&dev(*v, cts), *shape), *want, "{why}");
        }
    }

    #[test]
    fn create_without_id_is_tlv() {
        let d = dev(Version::V1_2, &[Lwm2mCbor]);
        assert_eq!(create_format(&d, true), Lwm2mCbor);
        assert_eq!(create_format(&d, false), Tlv);
        assert_eq!(create_format(&dev(Version::V1_0, &[]), true), Tlv);
    }

    #[test]
    fn composite_and_paths_formats() {
        assert_eq!(composite_format(&dev(Version::V1_1, &[])), SenmlCbor);
        assert_eq!(
            composite_format(&dev(Version::V1_1, &[SenmlJson])),
            SenmlJson
        );
        assert_eq!(
            composite_format(&dev(Version::V1_2, &[Lwm2mCbor])),
            Lwm2mCbor
        );
        assert_eq!(paths_format(&dev(Version::V1_2, &[Lwm2mCbor])), SenmlCbor);
        assert_eq!(paths_format(&dev(Version::V1_1, &[SenmlJson])), SenmlJson);
        assert_eq!(
            paths_format(&dev(Version::V1_1, &[SenmlJson, SenmlCbor])),
            SenmlCbor
        );
    }

    #[test]
    fn overrides_are_checked() {
        let d11 = dev(Version::V1_1, &[]);
        let d10 = dev(Version::V1_0, &[]);
        assert!(check_body_format(&d11, Lwm2mJson, false).is_err());
        assert!(check_body_format(&d10, Lwm2mJson, false).is_ok());
        assert!(check_body_format(&d11, Tlv, false).is_ok());
        assert!(check_body_format(&d11, Tlv, true).is_err());
        assert!(check_body_format(&d11, LinkFormat, false).is_err());
        assert!(check_body_format(&d11, SenmlJson, true).is_ok());
        assert!(check_paths_format(Lwm2mCbor).is_err());
        assert!(check_paths_format(SenmlJson).is_ok());
    }

    #[test]
    fn shapes_from_model_and_nodes() {
        let m = Registry::with_core();
        let single = Shape::of_target(&Path::resource(3, 0, 0), &m);
        assert_eq!(single, TEXT);
        assert_eq!(Shape::of_target(&Path::resource(3, 0, 6), &m), TREE);
        assert_eq!(Shape::of_target(&Path::resource(5, 0, 0), &m), BYTES);
        assert_eq!(
            Shape::of_target(&Path::resource_instance(3, 0, 6, 0), &m),
            TEXT
        );
        assert_eq!(Shape::of_target(&Path::resource(999, 0, 0), &m), TREE);
        assert_eq!(Shape::of_target(&Path::instance(3, 0), &m), TREE);
        let n = Node::ResourceInstance {
            id: 0,
            value: Value::Opaque(vec![1]),
        };
        assert_eq!(Shape::of_node(&n), BYTES);
    }
}
