//! The fleet's routes: device attributes (and the operator's own: billing state, rate
//! plan, home network, labels), cell status, regions and dynamic groups.

use axum::body::Bytes;
use axum::extract::{Path as UrlPath, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use std::collections::BTreeMap;
use utoipa::ToSchema;

use super::error::{ApiError, ErrorBody};
use super::ApiState;
use crate::fleet::{FleetError, GroupRecord};
use lwm2m_campaign::CellStatus;
use lwm2m_fleet::{ExternalPatch, Filter, FilterError, InventoryError};

/// Most devices one bulk patch may name.
const MAX_BULK: usize = 10_000;
/// Most members one page lists.
const MAX_PAGE: usize = 10_000;

pub(super) fn body<T: serde::de::DeserializeOwned>(body: &[u8]) -> Result<T, ApiError> {
    serde_json::from_slice(body)
        .map_err(|e| ApiError::bad_request("bad_body", format!("body is not valid: {e}")))
}

/// Runs a store call off the async runtime.
pub(super) async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> T + Send + 'static,
) -> Result<T, ApiError> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "internal", e.to_string()))
}

pub(super) fn fleet_error(e: FleetError) -> ApiError {
    match e {
        FleetError::Inventory(InventoryError::UnknownDevice(ep)) => ApiError::new(
            StatusCode::NOT_FOUND,
            "unknown_endpoint",
            format!("no device {ep:?} in the inventory"),
        ),
        FleetError::Inventory(InventoryError::Full(n)) => ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "inventory_full",
            format!("the inventory holds its maximum of {n} devices"),
        ),
        FleetError::Inventory(e) => ApiError::bad_request("bad_request", e.to_string()),
        FleetError::Store(e) => ApiError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "store_error",
            e.to_string(),
        ),
    }
}

/// A malformed filter: 400 with where the error is.
#[derive(Debug, Serialize, ToSchema)]
pub struct FilterErrorJson {
    pub error: &'static str,
    pub detail: String,
    /// Byte offset into the filter.
    pub offset: usize,
    /// 1-based.
    pub line: u32,
    /// 1-based, in characters.
    pub column: u32,
}

pub(super) fn filter_error(e: &FilterError) -> (StatusCode, Json<FilterErrorJson>) {
    (
        StatusCode::BAD_REQUEST,
        Json(FilterErrorJson {
            error: "bad_filter",
            detail: e.message.clone(),
            offset: e.offset,
            line: e.line,
            column: e.column,
        }),
    )
}

type FilterResult<T> = Result<T, Box<axum::response::Response>>;

pub(super) fn compile(source: &str) -> FilterResult<Filter> {
    Filter::compile(source).map_err(|e| {
        Box::new(axum::response::IntoResponse::into_response(filter_error(
            &e,
        )))
    })
}

fn respond<T>(r: Result<T, ApiError>) -> FilterResult<T> {
    r.map_err(|e| Box::new(axum::response::IntoResponse::into_response(e)))
}

/// A device's attributes, as the inventory holds them (null where unknown).
#[utoipa::path(
    get,
    path = "/api/clients/{endpoint}/attributes",
    tag = "fleet",
    params(("endpoint" = String, Path, description = "the endpoint name")),
    responses(
        (status = 200, description = "the attributes", body = Object),
        (status = 404, description = "no such device", body = ErrorBody),
    ),
    security(("bearer" = []))
)]
pub async fn attributes(
    State(state): State<ApiState>,
    UrlPath(endpoint): UrlPath<String>,
) -> Result<Json<Value>, ApiError> {
    let a = state
        .fleet
        .attributes(&endpoint)
        .ok_or_else(|| fleet_error(InventoryError::UnknownDevice(endpoint).into()))?;
    Ok(Json(serde_json::to_value(&a).unwrap_or_default()))
}

/// Sets what the operator's systems know of a device: `billing_state`, `rate_plan`,
/// `home_network` ("MCC-MNC"), `labels` (merged; a null value removes a label). A null
/// field clears it. Written before the answer.
#[utoipa::path(
    patch,
    path = "/api/clients/{endpoint}/attributes",
    tag = "fleet",
    params(("endpoint" = String, Path, description = "the endpoint name")),
    request_body = Object,
    responses(
        (status = 200, description = "the attributes after the patch", body = Object),
        (status = 400, description = "bad patch", body = ErrorBody),
        (status = 404, description = "no such device", body = ErrorBody),
    ),
    security(("bearer" = []))
)]
pub async fn patch_attributes(
    State(state): State<ApiState>,
    UrlPath(endpoint): UrlPath<String>,
    raw: Bytes,
) -> Result<Json<Value>, ApiError> {
    let patch: ExternalPatch = body(&raw)?;
    let fleet = state.fleet.clone();
    let a = blocking(move || fleet.patch_external(&endpoint, &patch))
        .await?
        .map_err(fleet_error)?;
    Ok(Json(serde_json::to_value(&a).unwrap_or_default()))
}

/// Patches of many devices at once.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct BulkPatch {
    /// Endpoint -> patch, as for one device.
    #[schema(value_type = Object)]
    pub devices: BTreeMap<String, ExternalPatch>,
}

/// The same for many devices in one transaction: one refused patch refuses all.
#[utoipa::path(
    patch,
    path = "/api/clients/attributes",
    tag = "fleet",
    request_body = BulkPatch,
    responses(
        (status = 200, description = "how many were updated", body = Object),
        (status = 400, description = "bad patch", body = ErrorBody),
        (status = 404, description = "a device is unknown", body = ErrorBody),
    ),
    security(("bearer" = []))
)]
pub async fn patch_many(
    State(state): State<ApiState>,
    raw: Bytes,
) -> Result<Json<Value>, ApiError> {
    let input: BulkPatch = body(&raw)?;
    if input.devices.len() > MAX_BULK {
        return Err(ApiError::bad_request(
            "bad_body",
            format!("at most {MAX_BULK} devices a request"),
        ));
    }
    let patches: Vec<_> = input.devices.into_iter().collect();
    let fleet = state.fleet.clone();
    let n = blocking(move || fleet.patch_many(&patches))
        .await?
        .map_err(fleet_error)?;
    Ok(Json(json!({ "updated": n })))
}

/// Every cell the operator described.
#[utoipa::path(
    get,
    path = "/api/network/cells",
    tag = "fleet",
    responses((status = 200, description = "cell id -> status", body = Object)),
    security(("bearer" = []))
)]
pub async fn cells(State(state): State<ApiState>) -> Json<Value> {
    let cells: BTreeMap<String, CellStatus> = state
        .fleet
        .cells()
        .iter()
        .map(|(k, v)| (k.to_string(), *v))
        .collect();
    Json(json!({ "cells": cells }))
}

/// A cell's network status from the operator's connectivity platform: the bandwidth
/// granted to firmware downloads (`available_bps`, bit/s) and whether it is congested.
/// Campaigns cap their concurrent downloads in the cell by it.
#[utoipa::path(
    put,
    path = "/api/network/cells/{cell}",
    tag = "fleet",
    params(("cell" = String, Path, description = "the cell id, as devices report it in /4/0/8")),
    request_body = Object,
    responses(
        (status = 200, description = "stored", body = Object),
        (status = 400, description = "bad body", body = ErrorBody),
    ),
    security(("bearer" = []))
)]
pub async fn put_cell(
    State(state): State<ApiState>,
    UrlPath(cell): UrlPath<String>,
    raw: Bytes,
) -> Result<Json<Value>, ApiError> {
    #[derive(Deserialize)]
    #[serde(deny_unknown_fields)]
    struct CellInput {
        available_bps: u64,
        #[serde(default)]
        congested: bool,
    }
    if cell.is_empty() || cell.len() > 64 {
        return Err(ApiError::bad_request(
            "bad_path",
            "a cell id of 1 to 64 bytes",
        ));
    }
    let input: CellInput = body(&raw)?;
    let status = CellStatus {
        available_bps: input.available_bps,
        congested: input.congested,
    };
    let fleet = state.fleet.clone();
    let c = cell.clone();
    blocking(move || fleet.put_cell(&c, status))
        .await?
        .map_err(fleet_error)?;
    Ok(Json(json!({ "cell": cell, "status": status })))
}

/// The operator's regions.
#[utoipa::path(
    get,
    path = "/api/network/regions",
    tag = "fleet",
    responses((status = 200, description = "the regions as written", body = Object)),
    security(("bearer" = []))
)]
pub async fn regions(State(state): State<ApiState>) -> Json<Value> {
    Json(state.fleet.regions_json().unwrap_or_else(|| json!([])))
}

/// Replaces the regions (bounding boxes or polygons, first match wins); every device's
/// region is derived again.
#[utoipa::path(
    put,
    path = "/api/network/regions",
    tag = "fleet",
    request_body = Object,
    responses(
        (status = 200, description = "stored", body = Object),
        (status = 400, description = "bad regions", body = ErrorBody),
    ),
    security(("bearer" = []))
)]
pub async fn put_regions(
    State(state): State<ApiState>,
    raw: Bytes,
) -> Result<Json<Value>, ApiError> {
    let json: Value = body(&raw)?;
    let text = String::from_utf8_lossy(&raw).into_owned();
    let regions = lwm2m_fleet::Regions::from_json(&text)
        .map_err(|e| ApiError::bad_request("bad_regions", e.to_string()))?;
    let fleet = state.fleet.clone();
    let stored = json.clone();
    blocking(move || fleet.set_regions(stored, regions))
        .await?
        .map_err(fleet_error)?;
    Ok(Json(json))
}

/// A dynamic group.
#[derive(Debug, Serialize, ToSchema)]
pub struct GroupJson {
    pub id: String,
    pub name: String,
    /// CEL over the attributes.
    pub filter: String,
    pub members: usize,
}

fn group_json((g, members): (GroupRecord, usize)) -> GroupJson {
    GroupJson {
        id: g.id,
        name: g.name,
        filter: g.filter,
        members,
    }
}

/// Every group with its member count.
#[utoipa::path(
    get,
    path = "/api/groups",
    tag = "fleet",
    responses((status = 200, description = "the groups", body = [GroupJson])),
    security(("bearer" = []))
)]
pub async fn groups(State(state): State<ApiState>) -> Json<Vec<GroupJson>> {
    Json(state.fleet.groups().into_iter().map(group_json).collect())
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct GroupInput {
    /// 1 to 64 of `[A-Za-z0-9._-]`.
    pub id: String,
    #[serde(default)]
    pub name: Option<String>,
    pub filter: String,
}

/// Defines a group (or redefines the group of that id); its members are found once and
/// kept current as attributes change.
#[utoipa::path(
    post,
    path = "/api/groups",
    tag = "fleet",
    request_body = GroupInput,
    responses(
        (status = 201, description = "defined", body = GroupJson),
        (status = 400, description = "bad filter, with its position", body = FilterErrorJson),
    ),
    security(("bearer" = []))
)]
pub async fn put_group(State(state): State<ApiState>, raw: Bytes) -> Response {
    flatten(put_group_inner(state, raw).await)
}

/// A handler's answer, whichever way it went.
fn flatten<T: IntoResponse>(r: FilterResult<T>) -> Response {
    match r {
        Ok(v) => v.into_response(),
        Err(e) => *e,
    }
}

async fn put_group_inner(
    state: ApiState,
    raw: Bytes,
) -> FilterResult<(StatusCode, Json<GroupJson>)> {
    let input: GroupInput = respond(body(&raw))?;
    let filter = compile(&input.filter)?;
    let record = GroupRecord {
        name: input.name.unwrap_or_else(|| input.id.clone()),
        id: input.id,
        filter: input.filter,
    };
    let fleet = state.fleet.clone();
    let r = record.clone();
    let members = respond(blocking(move || fleet.put_group(r, filter)).await)?;
    let members = respond(members.map_err(fleet_error))?;
    Ok((StatusCode::CREATED, Json(group_json((record, members)))))
}

/// One group.
#[utoipa::path(
    get,
    path = "/api/groups/{id}",
    tag = "fleet",
    params(("id" = String, Path, description = "the group id")),
    responses(
        (status = 200, description = "the group", body = GroupJson),
        (status = 404, description = "no such group", body = ErrorBody),
    ),
    security(("bearer" = []))
)]
pub async fn group(
    State(state): State<ApiState>,
    UrlPath(id): UrlPath<String>,
) -> Result<Json<GroupJson>, ApiError> {
    state
        .fleet
        .group(&id)
        .map(|g| Json(group_json(g)))
        .ok_or_else(|| no_group(&id))
}

fn no_group(id: &str) -> ApiError {
    ApiError::new(
        StatusCode::NOT_FOUND,
        "not_found",
        format!("no group {id:?}"),
    )
}

/// Deletes a group.
#[utoipa::path(
    delete,
    path = "/api/groups/{id}",
    tag = "fleet",
    params(("id" = String, Path, description = "the group id")),
    responses(
        (status = 204, description = "deleted"),
        (status = 404, description = "no such group", body = ErrorBody),
    ),
    security(("bearer" = []))
)]
pub async fn delete_group(
    State(state): State<ApiState>,
    UrlPath(id): UrlPath<String>,
) -> Result<StatusCode, ApiError> {
    let fleet = state.fleet.clone();
    let i = id.clone();
    let removed = blocking(move || fleet.delete_group(&i))
        .await?
        .map_err(fleet_error)?;
    if removed {
        Ok(StatusCode::NO_CONTENT)
    } else {
        Err(no_group(&id))
    }
}

#[derive(Debug, Deserialize)]
pub struct MembersQuery {
    pub after: Option<String>,
    pub limit: Option<usize>,
}

/// A page of a group's members in endpoint order; `next_after` continues it.
#[utoipa::path(
    get,
    path = "/api/groups/{id}/members",
    tag = "fleet",
    params(
        ("id" = String, Path, description = "the group id"),
        ("after" = Option<String>, Query, description = "the last endpoint of the previous page"),
        ("limit" = Option<usize>, Query, description = "at most this many (default 1000, at most 10000)"),
    ),
    responses(
        (status = 200, description = "members", body = Object),
        (status = 404, description = "no such group", body = ErrorBody),
    ),
    security(("bearer" = []))
)]
pub async fn members(
    State(state): State<ApiState>,
    UrlPath(id): UrlPath<String>,
    Query(q): Query<MembersQuery>,
) -> Result<Json<Value>, ApiError> {
    if state.fleet.group(&id).is_none() {
        return Err(no_group(&id));
    }
    let limit = q.limit.unwrap_or(1_000).clamp(1, MAX_PAGE);
    let page = state
        .fleet
        .members(&id, q.after.as_deref(), limit)
        .map_err(fleet_error)?;
    Ok(Json(json!({
        "members": page.members.iter().map(|m| m.to_string()).collect::<Vec<_>>(),
        "next_after": page.next_after.map(|n| n.to_string()),
    })))
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PreviewInput {
    pub filter: String,
}

/// How many devices a filter matches now, before it is saved.
#[utoipa::path(
    post,
    path = "/api/groups/preview",
    tag = "fleet",
    request_body = PreviewInput,
    responses(
        (status = 200, description = "the count", body = Object),
        (status = 400, description = "bad filter, with its position", body = FilterErrorJson),
    ),
    security(("bearer" = []))
)]
pub async fn preview(State(state): State<ApiState>, raw: Bytes) -> Response {
    flatten(preview_inner(state, raw).await)
}

async fn preview_inner(state: ApiState, raw: Bytes) -> FilterResult<Json<Value>> {
    let input: PreviewInput = respond(body(&raw))?;
    let filter = compile(&input.filter)?;
    let fleet = state.fleet.clone();
    let count = respond(blocking(move || fleet.preview(&filter)).await)?;
    Ok(Json(json!({ "count": count })))
}
