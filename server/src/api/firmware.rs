//! Firmware over the API: packages (`/api/packages`), one device's update
//! (`/api/clients/{endpoint}/firmware`) and the HTTP download endpoint (`/fw/{token}`,
//! outside the token-protected routes: the download token is its own credential).

use axum::body::Body;
use axum::extract::{Path as UrlPath, RawQuery, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use futures_util::StreamExt;
use serde::{Deserialize, Serialize};
use tokio::io::{AsyncReadExt, AsyncSeekExt};
use utoipa::ToSchema;

use super::error::{ApiError, ErrorBody};
use super::{query, ApiState};
use crate::firmware::download::parse_range;
use crate::firmware::packages::UploadError;
use crate::firmware::store::{DeletePackage, Package};
use crate::firmware::update::{result_meaning, Method, Protocol, StartError, UpdateRecord};

/// Longest name, version, model, tag.
const MAX_TEXT: usize = 128;
/// Most models, hardware revisions or tags of one package.
const MAX_LIST: usize = 32;
/// Bytes read from a package file per chunk of an HTTP download.
const CHUNK: usize = 64 * 1024;

/// A package as the API shows it.
#[derive(Debug, Clone, Serialize, ToSchema, PartialEq)]
pub struct PackageJson {
    pub id: String,
    pub name: String,
    pub version: String,
    pub models: Vec<String>,
    pub hardware: Vec<String>,
    pub tags: Vec<String>,
    pub sha256: String,
    pub size: u64,
    pub created_at_unix_ms: u64,
}

#[derive(Debug, Clone, Serialize, ToSchema, PartialEq)]
pub struct PackageList {
    pub packages: Vec<PackageJson>,
}

fn package_json(p: &Package) -> PackageJson {
    PackageJson {
        id: p.id.clone(),
        name: p.name.clone(),
        version: p.version.clone(),
        models: p.models.clone(),
        hardware: p.hardware.clone(),
        tags: p.tags.clone(),
        sha256: p.sha256.clone(),
        size: p.size,
        created_at_unix_ms: p.created_at_unix_ms,
    }
}

/// A firmware update request.
#[derive(Debug, Clone, Deserialize, ToSchema, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct UpdateInput {
    /// The package id.
    pub package: String,
    /// `pull` (the device downloads) or `push` (the server writes the package); default:
    /// from the device's Delivery Method (/5/0/9).
    #[serde(default)]
    #[schema(value_type = Option<String>)]
    pub method: Option<Method>,
    /// For pull: `coap`, `coaps`, `http` or `https`; default: the first the server serves
    /// and the device lists in /5/0/8, in the order coaps, https, coap, http.
    #[serde(default)]
    #[schema(value_type = Option<String>)]
    pub protocol: Option<Protocol>,
}

/// One step of an update.
#[derive(Debug, Clone, Serialize, ToSchema, PartialEq)]
pub struct TransitionJson {
    pub at_unix_ms: u64,
    pub phase: &'static str,
    pub state: Option<i64>,
    pub result: Option<i64>,
}

/// Where a device's update stands.
#[derive(Debug, Clone, Serialize, ToSchema, PartialEq)]
pub struct UpdateJson {
    pub endpoint: String,
    pub package: String,
    pub package_version: String,
    /// `starting`, `downloading`, `updating`, `verifying`, `succeeded`, `failed`,
    /// `cancelled`.
    pub phase: &'static str,
    pub method: Option<&'static str>,
    pub protocol: Option<&'static str>,
    /// The device's State (/5/0/3) and Update Result (/5/0/5) last read.
    pub state: Option<i64>,
    pub result: Option<i64>,
    pub result_meaning: Option<&'static str>,
    /// Why it failed or was cancelled.
    pub reason: Option<String>,
    pub previous_version: Option<String>,
    pub final_version: Option<String>,
    /// The Package URI written into the device (pull).
    pub uri: Option<String>,
    pub started_at_unix_ms: u64,
    pub updated_at_unix_ms: u64,
    pub deadline_unix_ms: Option<u64>,
    pub history: Vec<TransitionJson>,
}

fn method_name(m: Method) -> &'static str {
    match m {
        Method::Pull => "pull",
        Method::Push => "push",
    }
}

fn protocol_name(p: Protocol) -> &'static str {
    match p {
        Protocol::Coap => "coap",
        Protocol::Coaps => "coaps",
        Protocol::Http => "http",
        Protocol::Https => "https",
    }
}

pub fn update_json(r: &UpdateRecord) -> UpdateJson {
    UpdateJson {
        endpoint: r.endpoint.clone(),
        package: r.package_id.clone(),
        package_version: r.package_version.clone(),
        phase: r.phase.name(),
        method: r.method.map(method_name),
        protocol: r.protocol.map(protocol_name),
        state: r.state,
        result: r.result,
        result_meaning: r.result.map(result_meaning),
        reason: r.reason.clone(),
        previous_version: r.previous_version.clone(),
        final_version: r.final_version.clone(),
        uri: r.uri.clone(),
        started_at_unix_ms: r.started_at_unix_ms,
        updated_at_unix_ms: r.updated_at_unix_ms,
        deadline_unix_ms: r.deadline_unix_ms,
        history: r
            .history
            .iter()
            .map(|t| TransitionJson {
                at_unix_ms: t.at_unix_ms,
                phase: t.phase.name(),
                state: t.state,
                result: t.result,
            })
            .collect(),
    }
}

fn store_error(e: impl std::fmt::Display) -> ApiError {
    ApiError::new(
        StatusCode::INTERNAL_SERVER_ERROR,
        "internal",
        format!("firmware store: {e}"),
    )
}

fn no_package(id: &str) -> ApiError {
    ApiError::new(
        StatusCode::NOT_FOUND,
        "unknown_package",
        format!("no package {id:?}"),
    )
}

/// The metadata of an upload, from its query.
fn metadata(raw: Option<&str>) -> Result<(String, String, [Vec<String>; 3]), ApiError> {
    let bad = |d: String| ApiError::bad_request("bad_query", d);
    let (mut name, mut version) = (None, None);
    let mut lists: [Vec<String>; 3] = Default::default();
    for (k, v) in query::pairs(raw.unwrap_or(""))? {
        if v.len() > MAX_TEXT * MAX_LIST {
            return Err(bad(format!("{k} is too long")));
        }
        let list = || -> Vec<String> {
            v.split(',')
                .map(str::trim)
                .filter(|s| !s.is_empty())
                .map(str::to_string)
                .collect()
        };
        match k.as_str() {
            "name" => name = Some(v.clone()),
            "version" => version = Some(v.clone()),
            "models" => lists[0] = list(),
            "hardware" => lists[1] = list(),
            "tags" => lists[2] = list(),
            other => {
                return Err(bad(format!(
                    "unknown parameter {other:?}; accepted: name, version, models, hardware, tags"
                )))
            }
        }
    }
    let text = |what: &str, v: Option<String>| match v {
        Some(t) if !t.is_empty() && t.len() <= MAX_TEXT && !t.chars().any(char::is_control) => {
            Ok(t)
        }
        _ => Err(bad(format!(
            "{what} is required: 1 to {MAX_TEXT} characters"
        ))),
    };
    let name = text("name", name)?;
    let version = text("version", version)?;
    for l in &lists {
        if l.len() > MAX_LIST || l.iter().any(|s| s.len() > MAX_TEXT) {
            return Err(bad(format!(
                "models, hardware and tags list at most {MAX_LIST} items of {MAX_TEXT} characters"
            )));
        }
    }
    Ok((name, version, lists))
}

/// Uploads a package: the raw body is the package; metadata in the query. Streamed to
/// disk and hashed on the way; an upload over the size limit or cut short leaves nothing.
#[utoipa::path(
    post,
    path = "/api/packages",
    tag = "firmware",
    params(
        ("name" = String, Query, description = "package name"),
        ("version" = String, Query, description = "the firmware version the device reports (/3/0/3) once updated"),
        ("models" = Option<String>, Query, description = "device models it is for, comma-separated"),
        ("hardware" = Option<String>, Query, description = "hardware revisions it is for, comma-separated"),
        ("tags" = Option<String>, Query, description = "free-form tags, comma-separated"),
    ),
    request_body(content = Vec<u8>, content_type = "application/octet-stream", description = "the package"),
    responses(
        (status = 201, description = "stored", body = PackageJson),
        (status = 400, description = "bad metadata, empty or truncated body", body = ErrorBody),
        (status = 401, description = "missing or wrong token", body = ErrorBody),
        (status = 403, description = "read-only token", body = ErrorBody),
        (status = 413, description = "over the size limit", body = ErrorBody),
    ),
    security(("bearer" = []))
)]
pub async fn upload(
    State(state): State<ApiState>,
    RawQuery(raw): RawQuery,
    body: Body,
) -> Result<(StatusCode, Json<PackageJson>), ApiError> {
    let (name, version, [models, hardware, tags]) = metadata(raw.as_deref())?;
    let fw = state.handle.firmware();
    let max = fw.settings.max_package_size;
    let (sha256, size) = fw
        .files
        .receive(body.into_data_stream(), max)
        .await
        .map_err(|e| match e {
            UploadError::TooLarge(_) => ApiError::new(
                StatusCode::PAYLOAD_TOO_LARGE,
                "body_too_large",
                e.to_string(),
            ),
            UploadError::Truncated(_) | UploadError::Empty => {
                ApiError::bad_request("bad_body", e.to_string())
            }
            UploadError::Io(_) => store_error(e),
        })?;
    let id = crate::firmware::download::new_token()
        .map(|t| t.get(..16).unwrap_or_default().to_string())
        .map_err(store_error)?;
    let package = Package {
        id,
        name,
        version,
        models,
        hardware,
        tags,
        sha256,
        size,
        created_at_unix_ms: super::unix_ms(),
    };
    fw.store.put_package(&package).map_err(store_error)?;
    tracing::info!(id = %package.id, size, "firmware package stored");
    Ok((StatusCode::CREATED, Json(package_json(&package))))
}

/// Every package.
#[utoipa::path(
    get,
    path = "/api/packages",
    tag = "firmware",
    responses(
        (status = 200, description = "the packages", body = PackageList),
        (status = 401, description = "missing or wrong token", body = ErrorBody),
    ),
    security(("bearer" = []))
)]
pub async fn list(State(state): State<ApiState>) -> Result<Json<PackageList>, ApiError> {
    let all = state
        .handle
        .firmware()
        .store
        .packages()
        .map_err(store_error)?;
    Ok(Json(PackageList {
        packages: all.iter().map(package_json).collect(),
    }))
}

/// One package.
#[utoipa::path(
    get,
    path = "/api/packages/{id}",
    tag = "firmware",
    params(("id" = String, Path, description = "the package id")),
    responses(
        (status = 200, description = "the package", body = PackageJson),
        (status = 401, description = "missing or wrong token", body = ErrorBody),
        (status = 404, description = "no such package", body = ErrorBody),
    ),
    security(("bearer" = []))
)]
pub async fn get(
    State(state): State<ApiState>,
    UrlPath(id): UrlPath<String>,
) -> Result<Json<PackageJson>, ApiError> {
    let p = state
        .handle
        .firmware()
        .store
        .package(&id)
        .map_err(store_error)?;
    p.map(|p| Json(package_json(&p)))
        .ok_or_else(|| no_package(&id))
}

/// Deletes a package, and its file when no other package has the same content. A
/// package a running update uses cannot be deleted.
#[utoipa::path(
    delete,
    path = "/api/packages/{id}",
    tag = "firmware",
    params(("id" = String, Path, description = "the package id")),
    responses(
        (status = 204, description = "deleted"),
        (status = 401, description = "missing or wrong token", body = ErrorBody),
        (status = 403, description = "read-only token", body = ErrorBody),
        (status = 404, description = "no such package", body = ErrorBody),
        (status = 409, description = "a running update uses it", body = ErrorBody),
    ),
    security(("bearer" = []))
)]
pub async fn delete(
    State(state): State<ApiState>,
    UrlPath(id): UrlPath<String>,
) -> Result<StatusCode, ApiError> {
    let fw = state.handle.firmware();
    match fw.store.delete_package(&id).map_err(store_error)? {
        DeletePackage::Deleted {
            package,
            content_shared,
        } => {
            if !content_shared {
                fw.files.remove(&package.sha256);
            }
            Ok(StatusCode::NO_CONTENT)
        }
        DeletePackage::InUse(ep) => Err(ApiError::new(
            StatusCode::CONFLICT,
            "package_in_use",
            format!("the update of {ep:?} uses this package"),
        )),
        DeletePackage::Missing => Err(no_package(&id)),
    }
}

/// Starts a firmware update of one device.
#[utoipa::path(
    post,
    path = "/api/clients/{endpoint}/firmware",
    tag = "firmware",
    params(("endpoint" = String, Path, description = "the endpoint name")),
    request_body(content = UpdateInput, description = "`{\"package\": \"ID\"}`, optionally `method` and `protocol`"),
    responses(
        (status = 202, description = "started; follow it at GET or in FIRMWARE_STATE events", body = UpdateJson),
        (status = 400, description = "bad body", body = ErrorBody),
        (status = 401, description = "missing or wrong token", body = ErrorBody),
        (status = 403, description = "read-only token", body = ErrorBody),
        (status = 404, description = "unknown endpoint or package", body = ErrorBody),
        (status = 409, description = "an update of this device is in progress", body = ErrorBody),
    ),
    security(("bearer" = []))
)]
pub async fn start(
    State(state): State<ApiState>,
    UrlPath(endpoint): UrlPath<String>,
    body: axum::body::Bytes,
) -> Result<(StatusCode, Json<UpdateJson>), ApiError> {
    let input: UpdateInput = serde_json::from_slice(&body)
        .map_err(|e| ApiError::bad_request("bad_body", format!("body is not valid: {e}")))?;
    let record = state
        .updater
        .begin(&endpoint, &input.package, input.method, input.protocol)
        .await
        .map_err(|e| match e {
            StartError::UnknownPackage(id) => no_package(&id),
            StartError::NotRegistered(ep) => ApiError::unknown_endpoint(&ep),
            StartError::InProgress(_) => {
                ApiError::new(StatusCode::CONFLICT, "update_in_progress", e.to_string())
            }
            StartError::Store(_) => store_error(e),
        })?;
    Ok((StatusCode::ACCEPTED, Json(update_json(&record))))
}

/// Where the device's last firmware update stands.
#[utoipa::path(
    get,
    path = "/api/clients/{endpoint}/firmware",
    tag = "firmware",
    params(("endpoint" = String, Path, description = "the endpoint name")),
    responses(
        (status = 200, description = "the update", body = UpdateJson),
        (status = 401, description = "missing or wrong token", body = ErrorBody),
        (status = 404, description = "no update of this device", body = ErrorBody),
    ),
    security(("bearer" = []))
)]
pub async fn status(
    State(state): State<ApiState>,
    UrlPath(endpoint): UrlPath<String>,
) -> Result<Json<UpdateJson>, ApiError> {
    let r = state
        .handle
        .firmware()
        .store
        .update(&endpoint)
        .map_err(store_error)?;
    r.map(|r| Json(update_json(&r))).ok_or_else(|| {
        ApiError::new(
            StatusCode::NOT_FOUND,
            "no_update",
            format!("no firmware update of {endpoint:?}"),
        )
    })
}

/// Cancels the device's running update: its Package URI is emptied, which resets its
/// state machine, and the download token is revoked.
#[utoipa::path(
    delete,
    path = "/api/clients/{endpoint}/firmware",
    tag = "firmware",
    params(("endpoint" = String, Path, description = "the endpoint name")),
    responses(
        (status = 202, description = "cancelling; the update ends as `cancelled`"),
        (status = 401, description = "missing or wrong token", body = ErrorBody),
        (status = 403, description = "read-only token", body = ErrorBody),
        (status = 404, description = "no running update of this device", body = ErrorBody),
    ),
    security(("bearer" = []))
)]
pub async fn cancel(
    State(state): State<ApiState>,
    UrlPath(endpoint): UrlPath<String>,
) -> Result<StatusCode, ApiError> {
    if state.updater.cancel(&endpoint) {
        Ok(StatusCode::ACCEPTED)
    } else {
        Err(ApiError::new(
            StatusCode::NOT_FOUND,
            "no_update",
            format!("no running firmware update of {endpoint:?}"),
        ))
    }
}

/// A package over HTTP, for the device holding the token; `Range` gives 206.
#[utoipa::path(
    get,
    path = "/fw/{token}",
    tag = "firmware",
    params(("token" = String, Path, description = "the device's download token")),
    responses(
        (status = 200, description = "the package", body = Vec<u8>, content_type = "application/octet-stream"),
        (status = 206, description = "the range asked for", body = Vec<u8>, content_type = "application/octet-stream"),
        (status = 404, description = "unknown, expired, revoked or foreign token", body = ErrorBody),
        (status = 416, description = "a range outside the package", body = ErrorBody),
    )
)]
pub async fn download(
    State(state): State<ApiState>,
    UrlPath(token): UrlPath<String>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let fw = state.handle.firmware();
    let record = fw.authorize(&token, None, super::unix_ms()).map_err(|_| {
        ApiError::new(
            StatusCode::NOT_FOUND,
            "not_found",
            "no such firmware download",
        )
    })?;
    let size = record.size;
    let range = match headers.get(header::RANGE) {
        None => None,
        Some(v) => Some(
            v.to_str()
                .ok()
                .and_then(|v| parse_range(v, size))
                .ok_or_else(|| {
                    ApiError::new(
                        StatusCode::RANGE_NOT_SATISFIABLE,
                        "bad_range",
                        format!("one range of bytes=FIRST-LAST inside {size} bytes"),
                    )
                })?,
        ),
    };
    let (first, last) = range.unwrap_or((0, size.saturating_sub(1)));
    let len = last + 1 - first;
    let mut file = tokio::fs::File::open(fw.files.path(&record.sha256))
        .await
        .map_err(store_error)?;
    file.seek(std::io::SeekFrom::Start(first))
        .await
        .map_err(store_error)?;
    fw.served_http(&record.endpoint, len);
    let reader = file.take(len);
    let stream = futures_util::stream::unfold(reader, |mut r| async move {
        let mut buf = vec![0u8; CHUNK];
        match r.read(&mut buf).await {
            Ok(0) => None,
            Ok(n) => {
                buf.truncate(n);
                Some((Ok::<_, std::io::Error>(axum::body::Bytes::from(buf)), r))
            }
            Err(e) => Some((Err(e), r)),
        }
    })
    .boxed();
    let mut response = Response::new(Body::from_stream(stream));
    *response.status_mut() = if range.is_some() {
        StatusCode::PARTIAL_CONTENT
    } else {
        StatusCode::OK
    };
    let h = response.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/octet-stream"),
    );
    h.insert(header::ACCEPT_RANGES, HeaderValue::from_static("bytes"));
    h.insert(header::CONTENT_LENGTH, HeaderValue::from(len));
    if let Ok(v) = HeaderValue::from_str(&format!("\"{}\"", record.sha256)) {
        h.insert(header::ETAG, v);
    }
    if range.is_some() {
        if let Ok(v) = HeaderValue::from_str(&format!("bytes {first}-{last}/{size}")) {
            h.insert(header::CONTENT_RANGE, v);
        }
    }
    Ok(response.into_response())
}
