//! The OpenAPI 3.1 document of the whole HTTP surface, served at `/api/openapi.json`.
//!
//! The device calls share one axum route (the path after the endpoint has a variable
//! number of segments), so each of them is described here by a documentation-only
//! function; the end-to-end test calls every operation of this document and checks that
//! every route it calls is in it, so the two cannot drift apart.

#![allow(dead_code)]

use axum::Json;
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::{Modify, OpenApi};

use super::bootstrap::{
    BootstrapConfigJson, BootstrapPageJson, BootstrapStatusJson, PreviousServerJson,
    ServerAccountJson, StepJson,
};
use super::campaigns::CampaignInput;
use super::clients::{ClientJson, ClientPageJson, ObjectLinkJson, RegistrationJson};
use super::device::Accepted;
use super::error::ErrorBody;
use super::events::ApiEvent;
use super::firmware::{PackageJson, PackageList, TransitionJson, UpdateInput, UpdateJson};
use super::fleet::{BulkPatch, FilterErrorJson, GroupInput, GroupJson, PreviewInput};
use super::node_json::{JsonNode, JsonType};
use super::requests::{RequestRecord, RequestStatus};
use super::responses::DmResult;
use super::security::{PskInput, PskOutput, SecurityInput, SecurityJson, SecurityList};
use super::system::Health;

#[derive(OpenApi)]
#[openapi(
    info(
        title = "LwM2M server API",
        description = "Device inventory, device management (LwM2M 1.0-1.2 operations), live events and the server's own state. Every `/api` route needs `Authorization: Bearer <token>`; read-only tokens may use GET only.",
    ),
    paths(
        super::clients::list,
        super::clients::get,
        read,
        write,
        execute_or_create,
        delete,
        discover,
        write_attributes,
        observe,
        cancel_observe,
        read_composite,
        write_composite,
        observe_composite,
        cancel_observe_composite,
        super::system::request,
        super::security::list,
        super::security::get,
        super::security::put,
        super::security::delete,
        super::bootstrap::list,
        super::bootstrap::get,
        super::bootstrap::put,
        super::bootstrap::delete,
        super::firmware::upload,
        super::firmware::list,
        super::firmware::get,
        super::firmware::delete,
        super::firmware::start,
        super::firmware::status,
        super::firmware::cancel,
        super::firmware::download,
        super::fleet::attributes,
        super::fleet::patch_attributes,
        super::fleet::patch_many,
        super::fleet::cells,
        super::fleet::put_cell,
        super::fleet::regions,
        super::fleet::put_regions,
        super::fleet::groups,
        super::fleet::put_group,
        super::fleet::group,
        super::fleet::delete_group,
        super::fleet::members,
        super::fleet::preview,
        super::campaigns::create,
        super::campaigns::list,
        super::campaigns::get,
        super::campaigns::delete,
        super::campaigns::action,
        super::events::events,
        openapi_json,
        super::system::health,
        super::system::metrics,
        super::docs::page,
    ),
    components(schemas(
        ErrorBody, ClientJson, ClientPageJson, RegistrationJson, ObjectLinkJson, DmResult,
        Accepted, JsonNode, JsonType, RequestRecord, RequestStatus, ApiEvent, Health,
        SecurityInput, PskInput, SecurityJson, PskOutput, SecurityList, BootstrapConfigJson,
        BootstrapPageJson, BootstrapStatusJson, ServerAccountJson, StepJson, PreviousServerJson, PackageJson, PackageList, UpdateInput,
        UpdateJson, TransitionJson, GroupJson, GroupInput, PreviewInput, BulkPatch,
        FilterErrorJson, CampaignInput
    )),
    modifiers(&BearerAuth),
    tags(
        (name = "clients", description = "registered devices"),
        (name = "device", description = "LwM2M operations on one device"),
        (name = "requests", description = "requests queued for sleeping devices"),
        (name = "security", description = "devices' DTLS credentials"),
        (name = "bootstrap", description = "what devices are given when they bootstrap"),
        (name = "firmware", description = "packages, updates and downloads"),
        (name = "fleet", description = "attributes, cells, regions and dynamic groups"),
        (name = "campaigns", description = "firmware campaigns over groups"),
        (name = "events", description = "live events"),
        (name = "system", description = "health, metrics and this document"),
    )
)]
pub struct ApiDoc;

struct BearerAuth;

impl Modify for BearerAuth {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(HttpBuilder::new().scheme(HttpAuthScheme::Bearer).build()),
        );
    }
}

/// This document.
#[utoipa::path(
    get,
    path = "/api/openapi.json",
    tag = "system",
    responses(
        (status = 200, description = "the OpenAPI 3.1 document", body = Object),
        (status = 401, description = "missing or wrong token", body = ErrorBody),
    ),
    security(("bearer" = []))
)]
pub async fn openapi_json() -> Json<utoipa::openapi::OpenApi> {
    Json(ApiDoc::openapi())
}

// ----- documentation of the device calls (one axum route serves them all) -----------

/// Read a node: an object, instance, resource or resource instance.
#[utoipa::path(
    get,
    path = "/api/clients/{endpoint}/{path}",
    tag = "device",
    params(
        ("endpoint" = String, Path, description = "the endpoint name"),
        ("path" = String, Path, description = "LwM2M path without the leading slash: `3`, `3/0`, `3/0/1`, `3/0/7/1`"),
        ("format" = Option<String>, Query, description = "senml-json, senml-cbor, lwm2m-cbor, tlv, json, text, opaque or cbor; by default the best the device supports"),
        ("timeout" = Option<u64>, Query, description = "seconds to wait for an awake device (default 30)"),
        ("expires" = Option<u64>, Query, description = "seconds a request for a sleeping device may wait for it to wake (default 86400)"),
    ),
    responses(
        (status = 200, description = "the value, in `content`", body = DmResult),
        (status = 202, description = "the device sleeps: queued", body = Accepted),
        (status = 400, description = "bad path, format or query", body = ErrorBody),
        (status = 401, description = "missing or wrong token", body = ErrorBody),
        (status = 404, description = "unknown endpoint, or the device answered 4.04 (`coap_code`)", body = ErrorBody),
        (status = 502, description = "the device answered something unreadable or 5.xx", body = ErrorBody),
        (status = 504, description = "the device did not answer", body = ErrorBody),
    ),
    security(("bearer" = []))
)]
async fn read() {}

/// Write a node. `?replace=false` asks for a partial update (POST) instead of a replace (PUT).
#[utoipa::path(
    put,
    path = "/api/clients/{endpoint}/{path}",
    tag = "device",
    params(
        ("endpoint" = String, Path, description = "the endpoint name"),
        ("path" = String, Path, description = "instance, resource or resource instance: `3/0/13`"),
        ("replace" = Option<bool>, Query, description = "true (default): replace; false: partial update"),
        ("format" = Option<String>, Query, description = "content format of the CoAP request"),
        ("timeout" = Option<u64>, Query, description = "seconds"),
        ("expires" = Option<u64>, Query, description = "seconds"),
    ),
    request_body(content = JsonNode, description = "the node; `type` may be left out for resources the server's object model knows"),
    responses(
        (status = 200, description = "CHANGED", body = DmResult),
        (status = 202, description = "queued", body = Accepted),
        (status = 400, description = "bad path, body or format", body = ErrorBody),
        (status = 401, description = "missing or wrong token", body = ErrorBody),
        (status = 403, description = "read-only token", body = ErrorBody),
        (status = 404, description = "unknown endpoint or 4.04 from the device", body = ErrorBody),
        (status = 405, description = "4.05 from the device", body = ErrorBody),
        (status = 504, description = "the device did not answer", body = ErrorBody),
    ),
    security(("bearer" = []))
)]
async fn write() {}

/// On a resource (`o/i/r`): Execute, with the arguments (`0='v1',1`) as a text body.
/// On an object or instance (`o`, `o/i`): Create, with the new instance as a JSON body.
#[utoipa::path(
    post,
    path = "/api/clients/{endpoint}/{path}",
    tag = "device",
    params(
        ("endpoint" = String, Path, description = "the endpoint name"),
        ("path" = String, Path, description = "`3/0/4` executes; `3303` or `3303/1` creates"),
        ("format" = Option<String>, Query, description = "Create: content format"),
        ("timeout" = Option<u64>, Query, description = "seconds"),
        ("expires" = Option<u64>, Query, description = "seconds"),
    ),
    request_body(content = String, description = "Execute: arguments as text/plain; Create: an `instance` JsonNode (its `id` may be left out)"),
    responses(
        (status = 200, description = "executed: CHANGED", body = DmResult),
        (status = 201, description = "created: `location` is the new instance", body = DmResult),
        (status = 202, description = "queued", body = Accepted),
        (status = 400, description = "bad path or body", body = ErrorBody),
        (status = 401, description = "missing or wrong token", body = ErrorBody),
        (status = 403, description = "read-only token", body = ErrorBody),
        (status = 404, description = "unknown endpoint or 4.04 from the device", body = ErrorBody),
        (status = 504, description = "the device did not answer", body = ErrorBody),
    ),
    security(("bearer" = []))
)]
async fn execute_or_create() {}

/// Delete an object instance or a resource instance.
#[utoipa::path(
    delete,
    path = "/api/clients/{endpoint}/{path}",
    tag = "device",
    params(
        ("endpoint" = String, Path, description = "the endpoint name"),
        ("path" = String, Path, description = "`3303/1` or `3/0/7/1`"),
        ("timeout" = Option<u64>, Query, description = "seconds"),
        ("expires" = Option<u64>, Query, description = "seconds"),
    ),
    responses(
        (status = 200, description = "DELETED", body = DmResult),
        (status = 202, description = "queued", body = Accepted),
        (status = 400, description = "bad path", body = ErrorBody),
        (status = 401, description = "missing or wrong token", body = ErrorBody),
        (status = 403, description = "read-only token", body = ErrorBody),
        (status = 404, description = "unknown endpoint or 4.04 from the device", body = ErrorBody),
        (status = 504, description = "the device did not answer", body = ErrorBody),
    ),
    security(("bearer" = []))
)]
async fn delete() {}

/// Discover the attributes and children of an object, instance or resource.
#[utoipa::path(
    get,
    path = "/api/clients/{endpoint}/{path}/discover",
    tag = "device",
    params(
        ("endpoint" = String, Path, description = "the endpoint name"),
        ("path" = String, Path, description = "`3`, `3/0` or `3/0/7`"),
        ("depth" = Option<u8>, Query, description = "0..=3, LwM2M 1.2 devices only"),
        ("timeout" = Option<u64>, Query, description = "seconds"),
        ("expires" = Option<u64>, Query, description = "seconds"),
    ),
    responses(
        (status = 200, description = "the links, in `links`", body = DmResult),
        (status = 202, description = "queued", body = Accepted),
        (status = 400, description = "bad path or query", body = ErrorBody),
        (status = 401, description = "missing or wrong token", body = ErrorBody),
        (status = 404, description = "unknown endpoint or 4.04 from the device", body = ErrorBody),
        (status = 504, description = "the device did not answer", body = ErrorBody),
    ),
    security(("bearer" = []))
)]
async fn discover() {}

/// Write-Attributes: notification attributes of a node. An attribute given without a
/// value (`?pmin`) is removed.
#[utoipa::path(
    put,
    path = "/api/clients/{endpoint}/{path}/attributes",
    tag = "device",
    params(
        ("endpoint" = String, Path, description = "the endpoint name"),
        ("path" = String, Path, description = "`3/0/9`"),
        ("pmin" = Option<u32>, Query, description = "minimum period, s"),
        ("pmax" = Option<u32>, Query, description = "maximum period, s"),
        ("gt" = Option<f64>, Query, description = "greater than"),
        ("lt" = Option<f64>, Query, description = "less than"),
        ("st" = Option<f64>, Query, description = "step"),
        ("epmin" = Option<u32>, Query, description = "minimum evaluation period, s (1.1+)"),
        ("epmax" = Option<u32>, Query, description = "maximum evaluation period, s (1.1+)"),
        ("edge" = Option<bool>, Query, description = "edge (1.2)"),
        ("con" = Option<bool>, Query, description = "confirmable notifications (1.2)"),
        ("hqmax" = Option<u32>, Query, description = "historical queue maximum (1.2)"),
        ("timeout" = Option<u64>, Query, description = "seconds"),
        ("expires" = Option<u64>, Query, description = "seconds"),
    ),
    responses(
        (status = 200, description = "CHANGED", body = DmResult),
        (status = 202, description = "queued", body = Accepted),
        (status = 400, description = "bad path or attributes", body = ErrorBody),
        (status = 401, description = "missing or wrong token", body = ErrorBody),
        (status = 403, description = "read-only token", body = ErrorBody),
        (status = 404, description = "unknown endpoint or 4.04 from the device", body = ErrorBody),
        (status = 504, description = "the device did not answer", body = ErrorBody),
    ),
    security(("bearer" = []))
)]
async fn write_attributes() {}

/// Observe a node; notifications arrive as NOTIFICATION events. Attributes given as query
/// parameters are sent with the Observe.
#[utoipa::path(
    post,
    path = "/api/clients/{endpoint}/{path}/observe",
    tag = "device",
    params(
        ("endpoint" = String, Path, description = "the endpoint name"),
        ("path" = String, Path, description = "`3/0/9`"),
        ("format" = Option<String>, Query, description = "content format of the notifications"),
        ("pmin" = Option<u32>, Query, description = "and the other attributes of Write-Attributes"),
        ("timeout" = Option<u64>, Query, description = "seconds"),
        ("expires" = Option<u64>, Query, description = "seconds"),
    ),
    responses(
        (status = 200, description = "the current value; `observation` is its token", body = DmResult),
        (status = 202, description = "queued", body = Accepted),
        (status = 400, description = "bad path, format or attributes", body = ErrorBody),
        (status = 401, description = "missing or wrong token", body = ErrorBody),
        (status = 403, description = "read-only token", body = ErrorBody),
        (status = 404, description = "unknown endpoint or 4.04 from the device", body = ErrorBody),
        (status = 504, description = "the device did not answer", body = ErrorBody),
    ),
    security(("bearer" = []))
)]
async fn observe() {}

/// Cancel the observations of a node: forget them (the device's next notification is
/// answered RST), or with `?active` send the cancel (GET with Observe 1) and return the
/// device's answer.
#[utoipa::path(
    delete,
    path = "/api/clients/{endpoint}/{path}/observe",
    tag = "device",
    params(
        ("endpoint" = String, Path, description = "the endpoint name"),
        ("path" = String, Path, description = "`3/0/9`"),
        ("active" = Option<bool>, Query, description = "send a cancel to the device"),
        ("format" = Option<String>, Query, description = "active: format of the answer"),
        ("timeout" = Option<u64>, Query, description = "seconds"),
    ),
    responses(
        (status = 200, description = "`cancelled`: how many observations ended", body = Object),
        (status = 400, description = "bad path", body = ErrorBody),
        (status = 401, description = "missing or wrong token", body = ErrorBody),
        (status = 403, description = "read-only token", body = ErrorBody),
        (status = 404, description = "unknown endpoint, or no observation of this path", body = ErrorBody),
        (status = 504, description = "active: the device did not answer", body = ErrorBody),
    ),
    security(("bearer" = []))
)]
async fn cancel_observe() {}

/// Read-Composite (LwM2M 1.1+).
#[utoipa::path(
    get,
    path = "/api/clients/{endpoint}/composite",
    tag = "device",
    params(
        ("endpoint" = String, Path, description = "the endpoint name"),
        ("paths" = String, Query, description = "comma-separated paths: `/3/0/1,/3/0/2`"),
        ("format" = Option<String>, Query, description = "senml-json, senml-cbor or lwm2m-cbor"),
        ("timeout" = Option<u64>, Query, description = "seconds"),
        ("expires" = Option<u64>, Query, description = "seconds"),
    ),
    responses(
        (status = 200, description = "`content` maps each path to its node", body = DmResult),
        (status = 202, description = "queued", body = Accepted),
        (status = 400, description = "bad paths or format", body = ErrorBody),
        (status = 401, description = "missing or wrong token", body = ErrorBody),
        (status = 404, description = "unknown endpoint", body = ErrorBody),
        (status = 409, description = "the device registered LwM2M 1.0", body = ErrorBody),
        (status = 504, description = "the device did not answer", body = ErrorBody),
    ),
    security(("bearer" = []))
)]
async fn read_composite() {}

/// Write-Composite (LwM2M 1.1+): the body maps paths to nodes.
#[utoipa::path(
    put,
    path = "/api/clients/{endpoint}/composite",
    tag = "device",
    params(
        ("endpoint" = String, Path, description = "the endpoint name"),
        ("format" = Option<String>, Query, description = "senml-json, senml-cbor or lwm2m-cbor"),
        ("timeout" = Option<u64>, Query, description = "seconds"),
        ("expires" = Option<u64>, Query, description = "seconds"),
    ),
    request_body(content = Object, description = "`{\"/1/0/3\": {\"kind\": \"singleResource\", \"id\": 3, \"value\": 10}}`"),
    responses(
        (status = 200, description = "CHANGED", body = DmResult),
        (status = 202, description = "queued", body = Accepted),
        (status = 400, description = "bad body or format", body = ErrorBody),
        (status = 401, description = "missing or wrong token", body = ErrorBody),
        (status = 403, description = "read-only token", body = ErrorBody),
        (status = 404, description = "unknown endpoint", body = ErrorBody),
        (status = 504, description = "the device did not answer", body = ErrorBody),
    ),
    security(("bearer" = []))
)]
async fn write_composite() {}

/// Observe-Composite (LwM2M 1.1+).
#[utoipa::path(
    post,
    path = "/api/clients/{endpoint}/composite/observe",
    tag = "device",
    params(
        ("endpoint" = String, Path, description = "the endpoint name"),
        ("paths" = String, Query, description = "comma-separated paths"),
        ("format" = Option<String>, Query, description = "senml-json, senml-cbor or lwm2m-cbor"),
        ("pmin" = Option<u32>, Query, description = "pmin, pmax, epmin, epmax, con apply"),
        ("timeout" = Option<u64>, Query, description = "seconds"),
        ("expires" = Option<u64>, Query, description = "seconds"),
    ),
    responses(
        (status = 200, description = "current values; `observation` is the token", body = DmResult),
        (status = 202, description = "queued", body = Accepted),
        (status = 400, description = "bad paths or attributes", body = ErrorBody),
        (status = 401, description = "missing or wrong token", body = ErrorBody),
        (status = 403, description = "read-only token", body = ErrorBody),
        (status = 404, description = "unknown endpoint", body = ErrorBody),
        (status = 504, description = "the device did not answer", body = ErrorBody),
    ),
    security(("bearer" = []))
)]
async fn observe_composite() {}

/// Cancel an Observe-Composite of exactly these paths (passive, or `?active`).
#[utoipa::path(
    delete,
    path = "/api/clients/{endpoint}/composite/observe",
    tag = "device",
    params(
        ("endpoint" = String, Path, description = "the endpoint name"),
        ("paths" = String, Query, description = "the same paths as the observation"),
        ("active" = Option<bool>, Query, description = "send a cancel to the device"),
        ("format" = Option<String>, Query, description = "active: format of the answer"),
        ("timeout" = Option<u64>, Query, description = "seconds"),
    ),
    responses(
        (status = 200, description = "`cancelled`: how many observations ended", body = Object),
        (status = 400, description = "bad paths", body = ErrorBody),
        (status = 401, description = "missing or wrong token", body = ErrorBody),
        (status = 403, description = "read-only token", body = ErrorBody),
        (status = 404, description = "unknown endpoint or no such observation", body = ErrorBody),
    ),
    security(("bearer" = []))
)]
async fn cancel_observe_composite() {}
