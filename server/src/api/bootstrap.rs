//! Devices' bootstrap configurations: `GET|PUT|DELETE /api/bootstrap[/{endpoint}]`.
//!
//! A PUT checks the configuration, generates the keys it leaves out, writes the account
//! marked for provisioning into the LwM2M server's credential store (this server's, or a
//! separate one's through its API), and only then stores the configuration: a device can
//! never be handed a key the LwM2M server does not know. Keys are never shown back, only
//! their fingerprints. Deleting a configuration leaves the server credentials alone: a
//! device already bootstrapped keeps using them.

use axum::body::Bytes;
use axum::extract::{FromRef, Path as UrlPath, RawQuery, State};
use axum::http::StatusCode;
use axum::Json;
use lwm2m_bootstrap::config::{os_random, Security};
use lwm2m_bootstrap::{
    BootstrapConfig, BootstrapStatus, ConfigInput, Provision, Psk, SessionState, StoreError,
};
use serde::Serialize;
use utoipa::ToSchema;

use super::error::{ApiError, ErrorBody};
use super::security::{fingerprint, PskOutput};
use super::{query, ApiState};
use crate::bootstrap::BootstrapHandle;
use crate::runtime::ServerHandle;
use crate::store::StoredSecurity;

/// Where provisioned credentials go.
#[derive(Clone, Debug)]
pub enum Provisioner {
    /// The LwM2M server in this process.
    Local(ServerHandle),
    /// A separate LwM2M server, through `PUT {base}/api/security/clients/{endpoint}`.
    Remote {
        base: String,
        token: String,
        client: reqwest::Client,
    },
    /// Nowhere: the operator sets the LwM2M server's credentials himself.
    Off,
}

/// The bootstrap server the routes manage, if this process runs one.
#[derive(Clone, Debug)]
pub struct BootstrapApi {
    pub handle: BootstrapHandle,
    pub provisioner: Provisioner,
}

/// The state of these routes: `None` when no bootstrap server runs here.
#[derive(Clone, Debug, Default)]
pub struct BootstrapState(pub Option<BootstrapApi>);

impl FromRef<ApiState> for BootstrapState {
    fn from_ref(s: &ApiState) -> BootstrapState {
        s.bootstrap.clone()
    }
}

/// A server account as the API shows it.
#[derive(Debug, Clone, Serialize, ToSchema, PartialEq)]
pub struct ServerAccountJson {
    pub short_server_id: u16,
    pub uri: String,
    pub lifetime: u32,
    pub binding: String,
    /// `psk` or `nosec`.
    pub security: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub psk: Option<PskOutput>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub default_min_period: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub default_max_period: Option<u32>,
    pub notification_storing: bool,
    /// Whether its credentials were written into the LwM2M server's credential store.
    pub provision: bool,
}

/// One request of the last dialogue and the device's answer.
#[derive(Debug, Clone, Serialize, ToSchema, PartialEq)]
pub struct StepJson {
    pub request: String,
    /// The CoAP code (`2.04`) or why none came (`timeout`).
    pub outcome: String,
}

/// A server account the device had before, from Bootstrap-Read of /1.
#[derive(Debug, Clone, Serialize, ToSchema, PartialEq)]
pub struct PreviousServerJson {
    pub instance: u16,
    pub short_server_id: Option<i64>,
    pub lifetime: Option<i64>,
    pub binding: Option<String>,
}

/// How the device's last bootstrap went.
#[derive(Debug, Clone, Serialize, ToSchema, PartialEq)]
pub struct BootstrapStatusJson {
    /// `in_progress`, `finished` or `failed`.
    pub state: &'static str,
    pub started_at_unix_ms: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ended_at_unix_ms: Option<u64>,
    /// `coap` or `coaps`.
    pub transport: String,
    pub peer: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    pub steps: Vec<StepJson>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub previous_servers: Option<Vec<PreviousServerJson>>,
}

/// A device's bootstrap configuration as the API shows it (keys masked).
#[derive(Debug, Clone, Serialize, ToSchema, PartialEq)]
pub struct BootstrapConfigJson {
    pub endpoint: String,
    /// Paths deleted before the writes.
    pub delete: Vec<String>,
    pub read_servers: bool,
    pub servers: Vec<ServerAccountJson>,
    /// What the device authenticates to the bootstrap server with; absent: plain CoAP.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub bootstrap_psk: Option<PskOutput>,
    pub updated_at_unix_ms: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub last_bootstrap: Option<BootstrapStatusJson>,
}

/// A page of configurations.
#[derive(Debug, Clone, Serialize, ToSchema, PartialEq)]
pub struct BootstrapPageJson {
    pub total: usize,
    pub offset: usize,
    pub limit: usize,
    /// The cursor of the next page (`?after=`), when this one was full.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub next: Option<String>,
    pub configs: Vec<BootstrapConfigJson>,
}

fn psk_json(p: &Psk) -> PskOutput {
    PskOutput {
        identity: String::from_utf8_lossy(&p.identity).into_owned(),
        key_fingerprint: fingerprint(&p.key),
    }
}

fn status_json(s: &BootstrapStatus) -> BootstrapStatusJson {
    BootstrapStatusJson {
        state: match s.state {
            SessionState::InProgress => "in_progress",
            SessionState::Finished => "finished",
            SessionState::Failed => "failed",
        },
        started_at_unix_ms: s.started_at_unix_ms,
        ended_at_unix_ms: s.ended_at_unix_ms,
        transport: s.transport.clone(),
        peer: s.peer.clone(),
        error: s.error.clone(),
        steps: s
            .report
            .steps
            .iter()
            .map(|r| StepJson {
                request: r.request.clone(),
                outcome: r.outcome.clone(),
            })
            .collect(),
        previous_servers: s.report.previous_servers.as_ref().map(|list| {
            list.iter()
                .map(|p| PreviousServerJson {
                    instance: p.instance,
                    short_server_id: p.short_server_id,
                    lifetime: p.lifetime,
                    binding: p.binding.clone(),
                })
                .collect()
        }),
    }
}

fn config_json(c: &BootstrapConfig, status: Option<&BootstrapStatus>) -> BootstrapConfigJson {
    BootstrapConfigJson {
        endpoint: c.endpoint.clone(),
        delete: c.delete.clone(),
        read_servers: c.read_servers,
        servers: c
            .servers
            .iter()
            .map(|s| ServerAccountJson {
                short_server_id: s.short_server_id,
                uri: s.uri.clone(),
                lifetime: s.lifetime,
                binding: s.binding.clone(),
                security: match s.security {
                    Security::Psk(_) => "psk",
                    Security::NoSec => "nosec",
                },
                psk: match &s.security {
                    Security::Psk(p) => Some(psk_json(p)),
                    Security::NoSec => None,
                },
                default_min_period: s.default_min_period,
                default_max_period: s.default_max_period,
                notification_storing: s.notification_storing,
                provision: s.provision,
            })
            .collect(),
        bootstrap_psk: c.bootstrap_psk.as_ref().map(psk_json),
        updated_at_unix_ms: c.updated_at_unix_ms,
        last_bootstrap: status.map(status_json),
    }
}

fn enabled(state: BootstrapState) -> Result<BootstrapApi, ApiError> {
    state.0.ok_or_else(|| {
        ApiError::new(
            StatusCode::NOT_FOUND,
            "bootstrap_disabled",
            "this process runs no bootstrap server (start it with --bootstrap ADDR)",
        )
    })
}

fn store_error(e: StoreError) -> ApiError {
    match e {
        StoreError::IdentityTaken(ep) => ApiError::new(
            StatusCode::CONFLICT,
            "identity_taken",
            format!("this bootstrap PSK identity belongs to endpoint {ep:?}"),
        ),
        e => ApiError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "internal",
            format!("bootstrap store: {e}"),
        ),
    }
}

fn no_config(endpoint: &str) -> ApiError {
    ApiError::new(
        StatusCode::NOT_FOUND,
        "no_bootstrap_config",
        format!("no bootstrap configuration for endpoint {endpoint:?}"),
    )
}

/// What the credential store held before a provisioning, to put back if the
/// configuration cannot be stored after all.
enum Undo {
    Nothing,
    Restore(Box<StoredSecurity>),
    Delete(String),
}

/// Writes `p` into the LwM2M server's credential store, keeping the device's permission
/// to use a certificate if it had one.
async fn provision(to: &Provisioner, p: &Provision) -> Result<Undo, ApiError> {
    let identity = String::from_utf8_lossy(&p.psk.identity).into_owned();
    match to {
        Provisioner::Off => Ok(Undo::Nothing),
        Provisioner::Local(handle) => {
            let before = handle
                .security(&p.endpoint)
                .await
                .map_err(super::security::store_error)?;
            let stored = StoredSecurity {
                endpoint: p.endpoint.clone(),
                psk_identity: Some(p.psk.identity.clone()),
                psk_key: Some(p.psk.key.clone()),
                x509: before.as_ref().is_some_and(|s| s.x509),
                updated_at_unix_ms: super::unix_ms(),
            };
            handle
                .put_security(stored)
                .await
                .map_err(super::security::store_error)?;
            Ok(match before {
                Some(b) => Undo::Restore(Box::new(b)),
                None => Undo::Delete(p.endpoint.clone()),
            })
        }
        Provisioner::Remote {
            base,
            token,
            client,
        } => {
            let url = format!(
                "{}/api/security/clients/{}",
                base.trim_end_matches('/'),
                path_segment(&p.endpoint)
            );
            let body = serde_json::json!({"psk": {
                "identity": identity,
                "key": crate::hex::encode(&p.psk.key),
            }});
            let unreachable = |e: String| {
                ApiError::new(
                    StatusCode::BAD_GATEWAY,
                    "provisioning_failed",
                    format!("the LwM2M server's credentials were not set ({e}); nothing stored"),
                )
            };
            let answer = client
                .put(url)
                .bearer_auth(token)
                .json(&body)
                .send()
                .await
                .map_err(|e| unreachable(e.to_string()))?;
            let status = answer.status();
            if status.is_success() {
                // The remote API never shows a key, so there is nothing to put back.
                return Ok(Undo::Nothing);
            }
            let text: String = answer
                .text()
                .await
                .unwrap_or_default()
                .chars()
                .take(300)
                .collect();
            if status == reqwest::StatusCode::CONFLICT {
                return Err(ApiError::new(StatusCode::CONFLICT, "identity_taken", text));
            }
            Err(unreachable(format!("it answered {status}: {text}")))
        }
    }
}

async fn undo(to: &Provisioner, undo: Undo) {
    let Provisioner::Local(handle) = to else {
        return;
    };
    let result = match undo {
        Undo::Nothing => return,
        Undo::Restore(s) => handle.put_security(*s).await.map(|_| ()),
        Undo::Delete(ep) => handle.delete_security(&ep).await.map(|_| ()),
    };
    if let Err(e) = result {
        tracing::error!(error = %e, "provisioned credentials not put back");
    }
}

/// An endpoint name as one URL path segment.
fn path_segment(s: &str) -> String {
    s.bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
                (b as char).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect()
}

const EXAMPLE: &str = r#"{"servers": [{"short_server_id": 1, "uri": "coaps://lwm2m.example.net:5684", "lifetime": 300, "psk": {}}], "bootstrap_psk": {"identity": "bs-dev-1", "key": "000102030405060708090a0b0c0d0e0f"}}"#;

/// Bootstrap configurations, by endpoint name.
#[utoipa::path(
    get,
    path = "/api/bootstrap",
    tag = "bootstrap",
    params(
        ("prefix" = Option<String>, Query, description = "only endpoints whose name starts with this"),
        ("after" = Option<String>, Query, description = "cursor: from the first endpoint after this name (the previous page's `next`)"),
        ("offset" = Option<usize>, Query, description = "configurations to skip (default 0)"),
        ("limit" = Option<usize>, Query, description = "page size, 1..=1000 (default 100)"),
    ),
    responses(
        (status = 200, description = "a page of configurations, keys masked", body = BootstrapPageJson),
        (status = 400, description = "bad query", body = ErrorBody),
        (status = 401, description = "missing or wrong token", body = ErrorBody),
        (status = 404, description = "no bootstrap server runs here", body = ErrorBody),
    ),
    security(("bearer" = []))
)]
pub async fn list(
    State(state): State<BootstrapState>,
    RawQuery(raw): RawQuery,
) -> Result<Json<BootstrapPageJson>, ApiError> {
    let bs = enabled(state)?;
    let page = query::Page::parse(raw.as_deref())?;
    let (total, configs) = bs
        .handle
        .list(
            page.prefix.as_deref().unwrap_or(""),
            page.after.as_deref(),
            page.offset,
            page.limit,
        )
        .await
        .map_err(store_error)?;
    let names = configs.iter().map(|(c, _)| c.endpoint.as_str());
    Ok(Json(BootstrapPageJson {
        total,
        offset: page.offset,
        limit: page.limit,
        next: page.next(names, configs.len()),
        configs: configs
            .iter()
            .map(|(c, s)| config_json(c, s.as_ref()))
            .collect(),
    }))
}

/// One device's bootstrap configuration and how its last bootstrap went.
#[utoipa::path(
    get,
    path = "/api/bootstrap/{endpoint}",
    tag = "bootstrap",
    params(("endpoint" = String, Path, description = "the endpoint name")),
    responses(
        (status = 200, description = "the configuration, keys masked", body = BootstrapConfigJson),
        (status = 401, description = "missing or wrong token", body = ErrorBody),
        (status = 404, description = "no configuration for this endpoint, or no bootstrap server", body = ErrorBody),
    ),
    security(("bearer" = []))
)]
pub async fn get(
    State(state): State<BootstrapState>,
    UrlPath(endpoint): UrlPath<String>,
) -> Result<Json<BootstrapConfigJson>, ApiError> {
    let bs = enabled(state)?;
    let (c, s) = bs
        .handle
        .get(&endpoint)
        .await
        .map_err(store_error)?
        .ok_or_else(|| no_config(&endpoint))?;
    Ok(Json(config_json(&c, s.as_ref())))
}

/// Sets what a device is given when it bootstraps, replacing its previous configuration.
/// A `psk` without `key` gets a generated 128-bit key (a new one on every PUT), without
/// `identity` the endpoint name. The account to provision (`provision`, by default the
/// one with a PSK) is written into the LwM2M server's credential store first.
#[utoipa::path(
    put,
    path = "/api/bootstrap/{endpoint}",
    tag = "bootstrap",
    params(("endpoint" = String, Path, description = "the endpoint name")),
    request_body(content = Object, description = "`servers`: accounts (`short_server_id`, `uri` coap:// or coaps://, `lifetime`, `binding`, `psk` {identity?, key? hex}, `default_min_period`, `default_max_period`, `notification_storing`, `provision`); `delete`: paths (default [\"/0\", \"/1\"]); `bootstrap_psk` {identity, key}: the device must bootstrap over DTLS with it; `read_servers`: Bootstrap-Read /1 first.", example = json!(EXAMPLE)),
    responses(
        (status = 200, description = "stored; keys are not shown back", body = BootstrapConfigJson),
        (status = 400, description = "bad configuration", body = ErrorBody),
        (status = 401, description = "missing or wrong token", body = ErrorBody),
        (status = 403, description = "read-only token", body = ErrorBody),
        (status = 404, description = "no bootstrap server runs here", body = ErrorBody),
        (status = 409, description = "a PSK identity belongs to another endpoint", body = ErrorBody),
        (status = 502, description = "the separate LwM2M server did not take the credentials", body = ErrorBody),
    ),
    security(("bearer" = []))
)]
pub async fn put(
    State(state): State<BootstrapState>,
    UrlPath(endpoint): UrlPath<String>,
    body: Bytes,
) -> Result<Json<BootstrapConfigJson>, ApiError> {
    let bs = enabled(state)?;
    let input: ConfigInput = serde_json::from_slice(&body)
        .map_err(|e| ApiError::bad_request("bad_body", format!("body is not valid: {e}")))?;
    let config = BootstrapConfig::from_input(&endpoint, input, super::unix_ms(), &mut os_random)
        .map_err(|e| ApiError::bad_request("bad_body", e.0))?;
    // Refused here rather than by the store after the provisioning, which is then undone
    // only for this process's own LwM2M server.
    if let Some(p) = &config.bootstrap_psk {
        let owner = bs
            .handle
            .identity_owner(&p.identity)
            .await
            .map_err(store_error)?;
        if let Some(owner) = owner.filter(|o| *o != endpoint) {
            return Err(store_error(StoreError::IdentityTaken(owner)));
        }
    }
    let done = match config.provision() {
        Some(p) => provision(&bs.provisioner, &p).await?,
        None => Undo::Nothing,
    };
    if let Err(e) = bs.handle.put(config.clone()).await {
        undo(&bs.provisioner, done).await;
        return Err(store_error(e));
    }
    tracing::info!(%endpoint, "bootstrap configuration set");
    Ok(Json(config_json(&config, None)))
}

/// Removes a device's bootstrap configuration and status; its next Bootstrap-Request is
/// refused. The credentials provisioned into the LwM2M server stay.
#[utoipa::path(
    delete,
    path = "/api/bootstrap/{endpoint}",
    tag = "bootstrap",
    params(("endpoint" = String, Path, description = "the endpoint name")),
    responses(
        (status = 204, description = "removed"),
        (status = 401, description = "missing or wrong token", body = ErrorBody),
        (status = 403, description = "read-only token", body = ErrorBody),
        (status = 404, description = "no configuration for this endpoint, or no bootstrap server", body = ErrorBody),
    ),
    security(("bearer" = []))
)]
pub async fn delete(
    State(state): State<BootstrapState>,
    UrlPath(endpoint): UrlPath<String>,
) -> Result<StatusCode, ApiError> {
    let bs = enabled(state)?;
    bs.handle
        .delete(&endpoint)
        .await
        .map_err(store_error)?
        .ok_or_else(|| no_config(&endpoint))?;
    tracing::info!(%endpoint, "bootstrap configuration removed");
    Ok(StatusCode::NO_CONTENT)
}

/// The routes of `/api/bootstrap`, for any router whose state holds a [`BootstrapState`].
pub fn routes<S>() -> axum::Router<S>
where
    S: Clone + Send + Sync + 'static,
    BootstrapState: FromRef<S>,
{
    use axum::routing;
    axum::Router::new()
        .route("/api/bootstrap", routing::get(list))
        .route(
            "/api/bootstrap/{endpoint}",
            routing::get(get).put(put).delete(delete),
        )
}

/// Liveness of a standalone bootstrap server.
pub async fn health(State(state): State<BootstrapState>) -> Json<super::system::Health> {
    let coap = state
        .0
        .as_ref()
        .and_then(|b| b.handle.coap_addr().or(b.handle.coaps_addr()))
        .map(|a| a.to_string())
        .unwrap_or_default();
    Json(super::system::Health { status: "ok", coap })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn endpoint_names_are_escaped_as_one_segment() {
        assert_eq!(path_segment("urn:imei:35/1 x"), "urn%3Aimei%3A35%2F1%20x");
        assert_eq!(path_segment("dev-1.a_b~"), "dev-1.a_b~");
    }
}
