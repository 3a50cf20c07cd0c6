//! Firmware campaigns: `/api/campaigns`.

use axum::body::Bytes;
use axum::extract::{Path as UrlPath, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::Deserialize;
use serde_json::{json, Value};
use utoipa::ToSchema;

use super::error::{ApiError, ErrorBody};
use super::fleet::{body, compile, FilterErrorJson};
use super::ApiState;
use crate::fleet::campaigns::{CampaignRecord, CampaignsError, Target};
use lwm2m_campaign::Policy;

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CampaignInput {
    /// Default: generated.
    #[serde(default)]
    pub id: Option<String>,
    #[serde(default)]
    pub name: Option<String>,
    pub package_id: String,
    /// A group id; or give `filter`.
    #[serde(default)]
    pub group: Option<String>,
    /// A CEL filter over the attributes; or give `group`.
    #[serde(default)]
    pub filter: Option<String>,
    /// Waves, thresholds, concurrency, windows, rules, retries (all optional).
    #[serde(default)]
    #[schema(value_type = Object)]
    pub policy: Option<Value>,
}

fn error(e: CampaignsError) -> ApiError {
    match e {
        CampaignsError::UnknownPackage(_) | CampaignsError::UnknownGroup(_) => {
            ApiError::bad_request("bad_request", e.to_string())
        }
        CampaignsError::UnknownCampaign(_) => {
            ApiError::new(StatusCode::NOT_FOUND, "not_found", e.to_string())
        }
        CampaignsError::Exists(_) | CampaignsError::NotFinished(_) => {
            ApiError::new(StatusCode::CONFLICT, "conflict", e.to_string())
        }
        CampaignsError::TooMany => {
            ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "too_many", e.to_string())
        }
        CampaignsError::Filter(_) | CampaignsError::Campaign(_) => {
            ApiError::bad_request("bad_request", e.to_string())
        }
        CampaignsError::Store(_) | CampaignsError::Firmware(_) => ApiError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "store_error",
            e.to_string(),
        ),
    }
}

fn campaign_json(state: &ApiState, r: &CampaignRecord) -> Value {
    let progress = r.campaign.progress(super::unix_ms(), &state.fleet.cells());
    json!({
        "id": r.id,
        "name": r.name,
        "package_id": r.package_id,
        "target": r.target,
        "created_at_unix_ms": r.created_at_unix_ms,
        "status": r.campaign.status().name(),
        "policy": r.campaign.policy(),
        "devices": r.campaign.len(),
        "progress": progress,
        "regions": regions(state, r),
    })
}

/// Devices per region (as the inventory places them; "unknown" without a location) and
/// state.
fn regions(state: &ApiState, r: &CampaignRecord) -> Value {
    let mut out: std::collections::BTreeMap<String, std::collections::BTreeMap<&'static str, u32>> =
        Default::default();
    for (endpoint, kind) in r.campaign.devices() {
        let region = state
            .fleet
            .attributes(endpoint)
            .and_then(|a| a.region().map(str::to_string))
            .unwrap_or_else(|| "unknown".to_string());
        *out.entry(region)
            .or_default()
            .entry(kind.name())
            .or_default() += 1;
    }
    json!(out)
}

async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, CampaignsError> + Send + 'static,
) -> Result<T, ApiError> {
    super::fleet::blocking(f).await?.map_err(error)
}

/// Creates a campaign over the target's devices now (and, with `join_new_members`, over
/// those that start matching while it runs).
#[utoipa::path(
    post,
    path = "/api/campaigns",
    tag = "campaigns",
    request_body = CampaignInput,
    responses(
        (status = 201, description = "created", body = Object),
        (status = 400, description = "bad body, policy, target or filter", body = FilterErrorJson),
        (status = 409, description = "the id is taken", body = ErrorBody),
    ),
    security(("bearer" = []))
)]
pub async fn create(State(state): State<ApiState>, raw: Bytes) -> Response {
    match create_inner(&state, &raw).await {
        Ok(r) => r,
        Err(r) => *r,
    }
}

fn boxed(e: ApiError) -> Box<Response> {
    Box::new(e.into_response())
}

async fn create_inner(state: &ApiState, raw: &[u8]) -> Result<Response, Box<Response>> {
    let input: CampaignInput = body(raw).map_err(boxed)?;
    let policy = match &input.policy {
        None => Policy::default(),
        Some(p) => Policy::from_json(&p.to_string())
            .map_err(|e| boxed(ApiError::bad_request("bad_policy", e.to_string())))?,
    };
    let target = match (input.group, input.filter) {
        (Some(g), None) => Target::Group(g),
        (None, Some(f)) => {
            compile(&f)?;
            Target::Filter(f)
        }
        _ => {
            return Err(boxed(ApiError::bad_request(
                "bad_body",
                "give exactly one of group and filter",
            )))
        }
    };
    let id = match input.id {
        Some(id)
            if !id.is_empty()
                && id.len() <= 64
                && id
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b)) =>
        {
            id
        }
        Some(_) => {
            return Err(boxed(ApiError::bad_request(
                "bad_body",
                "an id of 1 to 64 of [A-Za-z0-9._-]",
            )))
        }
        None => format!("c{}", super::unix_ms()),
    };
    let name = input.name.unwrap_or_else(|| id.clone());
    let campaigns = state.campaigns.clone();
    let package = input.package_id;
    let record = blocking(move || campaigns.create(id, name, package, target, policy))
        .await
        .map_err(boxed)?;
    Ok((StatusCode::CREATED, Json(campaign_json(state, &record))).into_response())
}

/// Every campaign with its progress.
#[utoipa::path(
    get,
    path = "/api/campaigns",
    tag = "campaigns",
    responses((status = 200, description = "the campaigns", body = Object)),
    security(("bearer" = []))
)]
pub async fn list(State(state): State<ApiState>) -> Json<Value> {
    let all: Vec<Value> = state
        .campaigns
        .list()
        .iter()
        .map(|r| campaign_json(&state, r))
        .collect();
    Json(json!({ "campaigns": all }))
}

/// One campaign: status, counts per state, per wave and per cell, bytes sent and wasted,
/// estimated completion.
#[utoipa::path(
    get,
    path = "/api/campaigns/{id}",
    tag = "campaigns",
    params(("id" = String, Path, description = "the campaign id")),
    responses(
        (status = 200, description = "the campaign", body = Object),
        (status = 404, description = "no such campaign", body = ErrorBody),
    ),
    security(("bearer" = []))
)]
pub async fn get(
    State(state): State<ApiState>,
    UrlPath(id): UrlPath<String>,
) -> Result<Json<Value>, ApiError> {
    let r = state
        .campaigns
        .get(&id)
        .ok_or_else(|| error(CampaignsError::UnknownCampaign(id)))?;
    Ok(Json(campaign_json(&state, &r)))
}

/// Deletes a completed or cancelled campaign.
#[utoipa::path(
    delete,
    path = "/api/campaigns/{id}",
    tag = "campaigns",
    params(("id" = String, Path, description = "the campaign id")),
    responses(
        (status = 204, description = "deleted"),
        (status = 404, description = "no such campaign", body = ErrorBody),
        (status = 409, description = "still running or paused", body = ErrorBody),
    ),
    security(("bearer" = []))
)]
pub async fn delete(
    State(state): State<ApiState>,
    UrlPath(id): UrlPath<String>,
) -> Result<StatusCode, ApiError> {
    let campaigns = state.campaigns.clone();
    let i = id.clone();
    if blocking(move || campaigns.delete(&i)).await? {
        Ok(StatusCode::NO_CONTENT)
    } else {
        Err(error(CampaignsError::UnknownCampaign(id)))
    }
}

/// `pause`, `resume` or `cancel` (cancel resets the devices not yet installing).
#[utoipa::path(
    post,
    path = "/api/campaigns/{id}/{action}",
    tag = "campaigns",
    params(
        ("id" = String, Path, description = "the campaign id"),
        ("action" = String, Path, description = "pause, resume or cancel"),
    ),
    responses(
        (status = 200, description = "done; the campaign", body = Object),
        (status = 400, description = "not possible in its state", body = ErrorBody),
        (status = 404, description = "no such campaign or action", body = ErrorBody),
    ),
    security(("bearer" = []))
)]
pub async fn action(
    State(state): State<ApiState>,
    UrlPath((id, action)): UrlPath<(String, String)>,
) -> Result<Json<Value>, ApiError> {
    let campaigns = state.campaigns.clone();
    let i = id.clone();
    match action.as_str() {
        "pause" => blocking(move || campaigns.pause(&i, "paused by the operator")).await?,
        "resume" => blocking(move || campaigns.resume(&i)).await?,
        "cancel" => {
            blocking(move || campaigns.cancel(&i)).await?;
        }
        _ => {
            return Err(ApiError::new(
                StatusCode::NOT_FOUND,
                "not_found",
                format!("no action {action:?}: pause, resume or cancel"),
            ))
        }
    }
    get(State(state), UrlPath(id)).await
}
