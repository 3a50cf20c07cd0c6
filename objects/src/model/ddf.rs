//! The OMA DDF XML loader: object definitions in the format of the OMA
//! LwM2M registry, both the 1.0 schema (`LWM2M.xsd`) and the 1.1 schema
//! (`LWM2M-v1_1.xsd`, which adds `LWM2MVersion`, `ObjectVersion` and
//! `Description2`).
//!
//! The files come from operators and third parties, so the parser refuses
//! DTDs (no entity expansion), caps the input size and the node count, and
//! names the element and value of every problem it finds.

use std::collections::BTreeMap;

use roxmltree::{Document, Node as XmlNode, ParsingOptions};

use super::{ObjectDef, Operations, ResourceDef, ResourceType, Version};
use crate::path::MAX_ID;

/// The largest DDF file accepted. The largest object in the OMA registry is
/// under 200 KiB.
pub const MAX_SIZE: usize = 4 * 1024 * 1024;

/// The most XML nodes a file may hold (elements, text, comments).
const MAX_NODES: u32 = 200_000;

/// Why a DDF file could not be loaded.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DdfError {
    #[error("cannot read file: {0}")]
    Io(String),
    #[error("file is {size} bytes, over the limit of {limit}")]
    TooLarge { size: usize, limit: usize },
    #[error("file is not UTF-8")]
    NotUtf8,
    #[error("not well-formed XML: {0}")]
    Xml(String),
    #[error("root element is <{0}>, not <LWM2M>: this is not an object definition file")]
    NotAnObjectFile(String),
    #[error("file defines reusable resources (ObjectType=\"CommonResources\"), not an object")]
    ReusableResources,
    #[error("<LWM2M> holds no <Object>")]
    NoObject,
    #[error("{context}: element <{element}> is missing")]
    Missing {
        context: String,
        element: &'static str,
    },
    #[error("{context}: <{element}> is {value:?}, {expected}")]
    Invalid {
        context: String,
        element: &'static str,
        value: String,
        expected: &'static str,
    },
    #[error("object {object}: resource {resource} is defined twice")]
    DuplicateResource { object: u16, resource: u16 },
}

/// Parses a DDF document into its object definitions.
pub fn parse(xml: &[u8]) -> Result<Vec<ObjectDef>, DdfError> {
    if xml.len() > MAX_SIZE {
        return Err(DdfError::TooLarge {
            size: xml.len(),
            limit: MAX_SIZE,
        });
    }
    let text = std::str::from_utf8(xml).map_err(|_| DdfError::NotUtf8)?;
    let text = text.strip_prefix('\u{feff}').unwrap_or(text);
    let opts = ParsingOptions {
        allow_dtd: false,
        nodes_limit: MAX_NODES,
        ..ParsingOptions::default()
    };
    let doc = Document::parse_with_options(text, opts).map_err(|e| DdfError::Xml(e.to_string()))?;
    let root = doc.root_element();
    if root.tag_name().name() != "LWM2M" {
        return Err(DdfError::NotAnObjectFile(
            root.tag_name().name().to_string(),
        ));
    }
    let mut objects = Vec::new();
    for node in elements(root, "Object") {
        // The registry's Common.xml shares the <LWM2M><Object> shape but holds
        // resources meant for reuse across objects, with no object id.
        if node.attribute("ObjectType") == Some("CommonResources") {
            return Err(DdfError::ReusableResources);
        }
        objects.push(object(node)?);
    }
    if objects.is_empty() {
        return Err(DdfError::NoObject);
    }
    Ok(objects)
}

fn elements<'a, 'i>(
    parent: XmlNode<'a, 'i>,
    name: &'static str,
) -> impl Iterator<Item = XmlNode<'a, 'i>> {
    parent
        .children()
        .filter(move |n| n.is_element() && n.tag_name().name() == name)
}

/// The trimmed text of a child element, if the element is there.
fn text_of<'a>(parent: XmlNode<'a, '_>, name: &'static str) -> Option<String> {
    elements(parent, name).next().map(|n| {
        n.children()
            .filter(|c| c.is_text())
            .filter_map(|c| c.text())
            .collect::<String>()
            .trim()
            .to_string()
    })
}

fn required(
    parent: XmlNode<'_, '_>,
    name: &'static str,
    context: &str,
) -> Result<String, DdfError> {
    text_of(parent, name).ok_or_else(|| DdfError::Missing {
        context: context.to_string(),
        element: name,
    })
}

fn invalid(context: &str, element: &'static str, value: &str, expected: &'static str) -> DdfError {
    DdfError::Invalid {
        context: context.to_string(),
        element,
        value: value.chars().take(64).collect(),
        expected,
    }
}

fn id(value: &str, context: &str, element: &'static str) -> Result<u16, DdfError> {
    value
        .parse::<u32>()
        .ok()
        .filter(|v| *v <= u32::from(MAX_ID))
        .map(|v| v as u16)
        .ok_or_else(|| invalid(context, element, value, "expected an id 0..=65534"))
}

fn version(
    parent: XmlNode<'_, '_>,
    name: &'static str,
    context: &str,
) -> Result<Version, DdfError> {
    match text_of(parent, name).filter(|t| !t.is_empty()) {
        None => Ok(Version::V1_0),
        Some(t) => t
            .parse()
            .map_err(|_| invalid(context, name, &t, "expected a version \"major.minor\"")),
    }
}

/// `Multiple`/`Single` and `Mandatory`/`Optional`, case-insensitively.
fn choice(
    parent: XmlNode<'_, '_>,
    name: &'static str,
    context: &str,
    yes: &str,
    no: &str,
    expected: &'static str,
) -> Result<bool, DdfError> {
    let v = required(parent, name, context)?;
    if v.eq_ignore_ascii_case(yes) {
        Ok(true)
    } else if v.eq_ignore_ascii_case(no) {
        Ok(false)
    } else {
        Err(invalid(context, name, &v, expected))
    }
}

fn object(node: XmlNode<'_, '_>) -> Result<ObjectDef, DdfError> {
    let raw_id = required(node, "ObjectID", "object")?;
    let oid = id(&raw_id, "object", "ObjectID")?;
    let cx = format!("object {oid}");
    let mut description = text_of(node, "Description1").unwrap_or_default();
    if let Some(d2) = text_of(node, "Description2").filter(|d| !d.is_empty()) {
        description = format!("{description}\n\n{d2}");
    }
    let mut resources = BTreeMap::new();
    if let Some(list) = elements(node, "Resources").next() {
        for item in elements(list, "Item") {
            let r = resource(item, oid)?;
            let rid = r.id;
            if resources.insert(rid, r).is_some() {
                return Err(DdfError::DuplicateResource {
                    object: oid,
                    resource: rid,
                });
            }
        }
    }
    Ok(ObjectDef {
        id: oid,
        name: required(node, "Name", &cx)?,
        description,
        version: version(node, "ObjectVersion", &cx)?,
        lwm2m_version: version(node, "LWM2MVersion", &cx)?,
        urn: text_of(node, "ObjectURN").unwrap_or_default(),
        multiple: choice(
            node,
            "MultipleInstances",
            &cx,
            "Multiple",
            "Single",
            "expected Multiple or Single",
        )?,
        mandatory: choice(
            node,
            "Mandatory",
            &cx,
            "Mandatory",
            "Optional",
            "expected Mandatory or Optional",
        )?,
        resources,
    })
}

fn resource(item: XmlNode<'_, '_>, oid: u16) -> Result<ResourceDef, DdfError> {
    let obj_cx = format!("object {oid}");
    let raw_id = item.attribute("ID").ok_or_else(|| DdfError::Missing {
        context: obj_cx.clone(),
        element: "Item ID attribute",
    })?;
    let rid = id(raw_id.trim(), &obj_cx, "Item ID")?;
    let cx = format!("object {oid} resource {rid}");
    let ops_text = text_of(item, "Operations").unwrap_or_default();
    let operations = match ops_text.to_ascii_uppercase().as_str() {
        "" | "NONE" => Operations::None,
        "R" => Operations::Read,
        "W" => Operations::Write,
        "RW" => Operations::ReadWrite,
        "E" => Operations::Execute,
        _ => {
            return Err(invalid(
                &cx,
                "Operations",
                &ops_text,
                "expected R, W, RW, E or nothing",
            ))
        }
    };
    let type_text = text_of(item, "Type").unwrap_or_default();
    let kind = match type_text.to_ascii_lowercase().as_str() {
        "string" => ResourceType::String,
        "integer" => ResourceType::Integer,
        "unsigned integer" => ResourceType::UnsignedInteger,
        "float" => ResourceType::Float,
        "boolean" => ResourceType::Boolean,
        "opaque" => ResourceType::Opaque,
        "time" => ResourceType::Time,
        "objlnk" => ResourceType::ObjLnk,
        "corelnk" => ResourceType::CoreLnk,
        "" | "none" => ResourceType::None,
        _ => {
            return Err(invalid(
                &cx,
                "Type",
                &type_text,
                "expected an LwM2M data type",
            ))
        }
    };
    Ok(ResourceDef {
        id: rid,
        name: required(item, "Name", &cx)?,
        operations,
        multiple: choice(
            item,
            "MultipleInstances",
            &cx,
            "Multiple",
            "Single",
            "expected Multiple or Single",
        )?,
        mandatory: choice(
            item,
            "Mandatory",
            &cx,
            "Mandatory",
            "Optional",
            "expected Mandatory or Optional",
        )?,
        kind,
        range: text_of(item, "RangeEnumeration").unwrap_or_default(),
        units: text_of(item, "Units").unwrap_or_default(),
        description: text_of(item, "Description").unwrap_or_default(),
    })
}

#[cfg(test)]
mod tests;
