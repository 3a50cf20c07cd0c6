//! The inventory of registered devices: `GET /api/clients` and `GET /api/clients/{ep}`.

use axum::extract::{Path as UrlPath, RawQuery, State};
use axum::Json;
use serde::Serialize;
use utoipa::ToSchema;

use super::error::{ApiError, ErrorBody};
use super::{query, ApiState};
use crate::registry::Registration;
use crate::runtime::ClientInfo;

/// One object or object instance the device registered, `</3/0>;ver=1.1`.
#[derive(Debug, Clone, Serialize, ToSchema, PartialEq)]
pub struct ObjectLinkJson {
    /// `/3` or `/3/0`.
    pub path: String,
    /// The object's version when the device gave one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub version: Option<String>,
}

/// A registration as the device made it.
#[derive(Debug, Clone, Serialize, ToSchema, PartialEq)]
pub struct RegistrationJson {
    pub endpoint: String,
    /// The server's location id: the device updates at `/rd/{registration_id}`.
    pub registration_id: String,
    /// The LwM2M enabler version: 1.0, 1.1 or 1.2.
    pub version: String,
    /// Binding mode, e.g. `U` or `UQ`.
    pub binding: String,
    /// Seconds; 0 means it never expires.
    pub lifetime_s: u32,
    pub queue_mode: bool,
    /// The address its last Register or Update came from.
    pub address: String,
    /// `udp` (plain CoAP) or `dtls`: where requests to it go.
    pub transport: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sms: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub profile_id: Option<String>,
    /// The alternate root path, `/` for most devices.
    pub root_path: String,
    /// Content formats the device listed on its root link.
    pub content_formats: Vec<u16>,
    pub objects: Vec<ObjectLinkJson>,
}

/// A registered device with its live state.
#[derive(Debug, Clone, Serialize, ToSchema, PartialEq)]
pub struct ClientJson {
    #[serde(flatten)]
    pub registration: RegistrationJson,
    /// Whether requests reach it now: always true without queue mode.
    pub awake: bool,
    pub registered_at_unix_ms: u64,
    /// The last datagram of any kind from it.
    pub last_seen_unix_ms: u64,
    /// When the registration ends without an Update; absent for lifetime 0.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub expires_at_unix_ms: Option<u64>,
    /// Requests waiting for it to wake.
    pub queued_requests: usize,
}

/// A page of the inventory.
#[derive(Debug, Clone, Serialize, ToSchema, PartialEq)]
pub struct ClientPageJson {
    /// Devices matching the filter, in all pages.
    pub total: usize,
    pub offset: usize,
    pub limit: usize,
    /// The cursor of the next page (`?after=`), when this one was full.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub next: Option<String>,
    pub clients: Vec<ClientJson>,
}

pub fn registration_json(r: &Registration) -> RegistrationJson {
    RegistrationJson {
        endpoint: r.endpoint.to_string(),
        registration_id: r.id.to_string(),
        version: r.version.to_string(),
        binding: r.binding.to_string(),
        lifetime_s: r.lifetime_s,
        queue_mode: r.queue_mode,
        address: r.peer.to_string(),
        transport: match r.transport {
            crate::registry::Transport::Udp => "udp",
            crate::registry::Transport::Dtls => "dtls",
        },
        sms: r.sms().map(str::to_string),
        profile_id: r.profile_id().map(str::to_string),
        root_path: r.objects.root_path.clone(),
        content_formats: r.objects.content_formats.clone(),
        objects: r
            .objects
            .objects
            .iter()
            .map(|o| ObjectLinkJson {
                path: match o.instance {
                    Some(i) => format!("/{}/{}", o.object, i),
                    None => format!("/{}", o.object),
                },
                version: o.version.map(|v| v.to_string()),
            })
            .collect(),
    }
}

pub fn client_json(c: &ClientInfo) -> ClientJson {
    ClientJson {
        registration: registration_json(&c.registration),
        awake: c.awake,
        registered_at_unix_ms: c.registered_at_unix_ms,
        last_seen_unix_ms: c.last_seen_unix_ms,
        expires_at_unix_ms: c.expires_at_unix_ms,
        queued_requests: c.queued_requests,
    }
}

/// Lists registered devices, sorted by endpoint name.
#[utoipa::path(
    get,
    path = "/api/clients",
    tag = "clients",
    params(
        ("prefix" = Option<String>, Query, description = "only endpoints whose name starts with this"),
        ("after" = Option<String>, Query, description = "cursor: list from the first endpoint after this name (the previous page's `next`)"),
        ("offset" = Option<usize>, Query, description = "devices to skip (default 0)"),
        ("limit" = Option<usize>, Query, description = "page size, 1..=1000 (default 100)"),
    ),
    responses(
        (status = 200, description = "a page of devices", body = ClientPageJson),
        (status = 400, description = "bad query", body = ErrorBody),
        (status = 401, description = "missing or wrong token", body = ErrorBody),
    ),
    security(("bearer" = []))
)]
pub async fn list(
    State(state): State<ApiState>,
    RawQuery(raw): RawQuery,
) -> Result<Json<ClientPageJson>, ApiError> {
    let q = query::Page::parse(raw.as_deref())?;
    let page = state
        .handle
        .clients_after(q.prefix.as_deref(), q.after.as_deref(), q.offset, q.limit)
        .await;
    let names = page
        .clients
        .iter()
        .map(|c| c.registration.endpoint.as_ref());
    Ok(Json(ClientPageJson {
        total: page.total,
        offset: q.offset,
        limit: q.limit,
        next: q.next(names, page.clients.len()),
        clients: page.clients.iter().map(client_json).collect(),
    }))
}

/// One registered device.
#[utoipa::path(
    get,
    path = "/api/clients/{endpoint}",
    tag = "clients",
    params(("endpoint" = String, Path, description = "the endpoint name")),
    responses(
        (status = 200, description = "the device", body = ClientJson),
        (status = 401, description = "missing or wrong token", body = ErrorBody),
        (status = 404, description = "no such registered endpoint", body = ErrorBody),
    ),
    security(("bearer" = []))
)]
pub async fn get(
    State(state): State<ApiState>,
    UrlPath(endpoint): UrlPath<String>,
) -> Result<Json<ClientJson>, ApiError> {
    state
        .handle
        .client(&endpoint)
        .await
        .map(|c| Json(client_json(&c)))
        .ok_or_else(|| ApiError::unknown_endpoint(&endpoint))
}
