//! A device's successful answer as the JSON the API returns.

use serde::Serialize;
use serde_json::Value;
use utoipa::ToSchema;

use super::node_json::{self, JsonNode};
use crate::dm::DmResponse;

/// The answer to a device-management call.
#[derive(Debug, Clone, Serialize, ToSchema, PartialEq)]
pub struct DmResult {
    /// CONTENT, CHANGED, CREATED or DELETED.
    pub status: &'static str,
    /// The CoAP code the device answered: 2.05, 2.04, 2.01 or 2.02.
    pub coap_code: &'static str,
    /// Read, Observe: one node (`kind` says which); composite calls: an object mapping
    /// each path to its node.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<Object>)]
    pub content: Option<Value>,
    /// Discover: the links with their attributes.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<Vec<Object>>)]
    pub links: Option<Value>,
    /// Create: the new instance's path.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub location: Option<String>,
    /// Observe: the observation's token (hex); notifications carry it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub observation: Option<String>,
    /// Observe: the Observe sequence number of the first answer.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sequence: Option<u32>,
}

impl DmResult {
    fn new(status: &'static str, coap_code: &'static str) -> DmResult {
        DmResult {
            status,
            coap_code,
            content: None,
            links: None,
            location: None,
            observation: None,
            sequence: None,
        }
    }
}

fn node(n: &lwm2m_objects::Node) -> Value {
    serde_json::to_value(JsonNode::from_node(n)).unwrap_or(Value::Null)
}

fn nodes(n: &lwm2m_objects::format::Nodes) -> Value {
    serde_json::to_value(node_json::nodes_to_json(n)).unwrap_or(Value::Null)
}

/// The typed result.
pub fn to_result(r: &DmResponse) -> DmResult {
    match r {
        DmResponse::Node(n) => DmResult {
            content: Some(node(n)),
            ..DmResult::new("CONTENT", "2.05")
        },
        DmResponse::Nodes(n) => DmResult {
            content: Some(nodes(n)),
            ..DmResult::new("CONTENT", "2.05")
        },
        DmResponse::Discovered(entries) => DmResult {
            links: Some(node_json::discover_to_json(entries)),
            ..DmResult::new("CONTENT", "2.05")
        },
        DmResponse::Changed => DmResult::new("CHANGED", "2.04"),
        DmResponse::Created { path } => DmResult {
            location: path.map(|p| p.to_string()),
            ..DmResult::new("CREATED", "2.01")
        },
        DmResponse::Deleted => DmResult::new("DELETED", "2.02"),
        DmResponse::Observed { node: n, sequence } => DmResult {
            content: Some(node(n)),
            sequence: *sequence,
            ..DmResult::new("CONTENT", "2.05")
        },
        DmResponse::ObservedComposite { nodes: n, sequence } => DmResult {
            content: Some(nodes(n)),
            sequence: *sequence,
            ..DmResult::new("CONTENT", "2.05")
        },
    }
}
