//! The server's own routes: health, metrics, tracked requests.

use std::sync::Arc;

use axum::extract::{FromRef, Path as UrlPath, State};
use axum::http::header;
use axum::response::IntoResponse;
use axum::Json;
use serde::Serialize;
use utoipa::ToSchema;

use super::error::{ApiError, ErrorBody};
use super::requests::RequestRecord;
use super::ApiState;
use crate::metrics::Metrics;

impl FromRef<ApiState> for Arc<Metrics> {
    fn from_ref(s: &ApiState) -> Arc<Metrics> {
        s.handle.metrics()
    }
}

/// Health answer.
#[derive(Debug, Serialize, ToSchema)]
pub struct Health {
    /// `ok`.
    pub status: &'static str,
    /// The CoAP address the server listens on.
    pub coap: String,
}

/// Liveness: answers while the server runs.
#[utoipa::path(
    get,
    path = "/healthz",
    tag = "system",
    responses(
        (status = 200, description = "the server runs", body = Health),
        (status = 401, description = "token needed (when configured so)", body = ErrorBody),
    )
)]
pub async fn health(State(state): State<ApiState>) -> Json<Health> {
    Json(Health {
        status: "ok",
        coap: state.handle.coap_addr().to_string(),
    })
}

/// Prometheus metrics in the OpenMetrics text format.
#[utoipa::path(
    get,
    path = "/metrics",
    tag = "system",
    responses(
        (status = 200, description = "OpenMetrics text", body = String, content_type = "application/openmetrics-text"),
        (status = 401, description = "token needed (when configured so)", body = ErrorBody),
    )
)]
pub async fn metrics(State(metrics): State<Arc<Metrics>>) -> impl IntoResponse {
    (
        [(
            header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        metrics.encode(),
    )
}

/// A request queued for a sleeping device, and its result once it has one.
#[utoipa::path(
    get,
    path = "/api/requests/{id}",
    tag = "requests",
    params(("id" = String, Path, description = "the `request_id` of a 202 answer")),
    responses(
        (status = 200, description = "the request and, once finished, its result", body = RequestRecord),
        (status = 401, description = "missing or wrong token", body = ErrorBody),
        (status = 404, description = "unknown or forgotten request id", body = ErrorBody),
    ),
    security(("bearer" = []))
)]
pub async fn request(
    State(state): State<ApiState>,
    UrlPath(id): UrlPath<String>,
) -> Result<Json<RequestRecord>, ApiError> {
    state.requests.get(&id).map(Json).ok_or_else(|| {
        ApiError::new(
            axum::http::StatusCode::NOT_FOUND,
            "unknown_request",
            format!("no tracked request {id:?} (unknown, or its result was evicted)"),
        )
    })
}
