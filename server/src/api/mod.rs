//! The operator's HTTP front door (axum): device inventory and management, queued
//! requests, live events, the OpenAPI document and its reference page, metrics and
//! health.
//!
//! - [`auth`]: bearer tokens, read-only and admin roles.
//! - [`clients`]: the inventory.
//! - [`device`]: LwM2M operations on one device, and queueing for sleeping ones.
//! - [`requests`]: results of queued requests.
//! - [`events`]: server-sent events.
//! - [`node_json`]: LwM2M nodes as typed JSON.
//! - [`responses`], [`error`]: the JSON of answers and of errors.
//! - [`openapi`], [`docs`]: the document and its HTML rendering.
//! - [`security`]: devices' DTLS credentials.
//! - [`bootstrap`]: devices' bootstrap configurations.
//! - [`firmware`]: packages, one device's update, and the HTTP download endpoint;
//!   [`https`]: that endpoint over TLS.
//! - [`system`]: health, metrics, tracked requests.
//!
//! Every error, including those axum produces itself (unknown route, wrong method, body
//! too large), leaves as `{"error", "detail"}` JSON: see `json_errors`.

pub mod auth;
pub mod bootstrap;
pub mod campaigns;
pub mod clients;
pub mod device;
pub mod docs;
pub mod error;
pub mod events;
pub mod firmware;
pub mod fleet;
pub mod https;
pub mod node_json;
pub mod openapi;
mod query;
pub mod requests;
pub mod responses;
pub mod security;
pub mod system;

use std::future::Future;
use std::sync::Arc;

use axum::extract::DefaultBodyLimit;
use axum::http::{header, HeaderValue, StatusCode};
use axum::middleware;
use axum::response::{IntoResponse, Response};
use axum::routing::{any, get};
use axum::Router;
use tokio::sync::{broadcast, watch};

use crate::config::ApiSettings;
use crate::runtime::ServerHandle;
use error::ApiError;
use events::ApiEvent;
use requests::RequestTracker;

/// Largest request body: a Write of a big opaque resource fits, a flood does not.
pub const MAX_BODY: usize = 1024 * 1024;

/// Milliseconds since the Unix epoch, for timestamps in answers and events.
pub fn unix_ms() -> u64 {
    crate::runtime::persist::unix_now_ms()
}

/// What every handler shares.
#[derive(Clone)]
pub struct ApiState {
    pub handle: ServerHandle,
    pub settings: Arc<ApiSettings>,
    pub tokens: Arc<auth::Tokens>,
    pub requests: Arc<RequestTracker>,
    pub events: broadcast::Sender<ApiEvent>,
    /// The object model used to type JSON values written by operators.
    pub model: Arc<lwm2m_objects::Registry>,
    /// Turns true when the HTTP server stops; event streams end then.
    pub stopping: watch::Receiver<bool>,
    /// One permit per open event stream.
    pub streams: Arc<tokio::sync::Semaphore>,
    /// The bootstrap server of this process, if it runs one.
    pub bootstrap: bootstrap::BootstrapState,
    /// Runs firmware updates.
    pub updater: crate::firmware::update::Updater,
    /// Attributes, groups, regions and cells of the fleet.
    pub fleet: crate::fleet::Fleet,
    pub campaigns: crate::fleet::campaigns::Campaigns,
}

/// A configured API: its router, and the switch that ends its event streams.
pub struct Api {
    pub router: Router,
    /// `/fw/{token}` alone, for the HTTPS download listener.
    pub downloads: Router,
    stop: watch::Sender<bool>,
}

impl Api {
    /// Builds the router, starts the event translator and tracks again the requests that
    /// still wait for sleeping devices from before a restart.
    pub async fn new(handle: ServerHandle, settings: ApiSettings) -> Api {
        let urls = crate::firmware::update::BaseUrls {
            coap: Some(format!("coap://{}", handle.coap_addr())),
            coaps: handle.coaps_addr().map(|a| format!("coaps://{a}")),
            http: None,
            https: None,
        };
        Api::with_parts(handle, settings, None, urls).await
    }

    /// As [`Api::new`], with the routes of `/api/bootstrap` managing `bootstrap`, and
    /// firmware downloads at `urls`.
    pub async fn with_parts(
        handle: ServerHandle,
        settings: ApiSettings,
        bootstrap: Option<bootstrap::BootstrapApi>,
        urls: crate::firmware::update::BaseUrls,
    ) -> Api {
        let updater = crate::firmware::update::Updater::start(handle.clone(), urls);
        // A fleet store that cannot be opened is as fatal as the server's own.
        let fleet = match crate::fleet::Fleet::start(handle.clone(), settings.fleet.clone()).await {
            Ok(f) => f,
            Err(e) => panic!("the fleet store in the data directory cannot be opened: {e}"),
        };
        let campaigns =
            match crate::fleet::campaigns::Campaigns::start(fleet.clone(), updater.clone()) {
                Ok(c) => c,
                Err(e) => panic!("the stored campaigns cannot be loaded: {e}"),
            };
        let (stop, stopping) = watch::channel(false);
        let (events, _) = broadcast::channel(events::API_EVENT_CAPACITY);
        let streams = Arc::new(tokio::sync::Semaphore::new(settings.max_event_streams));
        let state = ApiState {
            handle,
            tokens: Arc::new(auth::Tokens::new(
                &settings.admin_tokens,
                &settings.read_tokens,
            )),
            requests: Arc::new(RequestTracker::new(settings.max_tracked_requests)),
            settings: Arc::new(settings),
            events,
            model: Arc::new(lwm2m_objects::Registry::with_core()),
            stopping,
            streams,
            bootstrap: bootstrap::BootstrapState(bootstrap),
            updater,
            fleet,
            campaigns,
        };
        events::spawn_translator(state.clone());
        for q in state.handle.queued_requests().await {
            if let Some(id) = &q.label.request_id {
                state.requests.restore(
                    id,
                    &q.endpoint,
                    &q.label.operation,
                    &q.label.paths_text(),
                    q.created_at_unix_ms,
                );
            }
        }
        Api {
            downloads: finish(Router::new().route("/fw/{token}", get(firmware::download)))
                .with_state(state.clone()),
            router: router(state),
            stop,
        }
    }

    /// Serves until `shutdown` completes, then ends the event streams and lets the open
    /// requests finish.
    pub async fn serve(
        self,
        listener: tokio::net::TcpListener,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> std::io::Result<()> {
        let stop = self.stop;
        axum::serve(listener, self.router)
            .with_graceful_shutdown(async move {
                shutdown.await;
                let _ = stop.send(true);
            })
            .await
    }
}

fn router(state: ApiState) -> Router {
    let api = Router::new()
        .route("/api/clients", get(clients::list))
        .route("/api/clients/{endpoint}", get(clients::get))
        .route(
            "/api/clients/attributes",
            axum::routing::patch(fleet::patch_many),
        )
        .route(
            "/api/clients/{endpoint}/attributes",
            get(fleet::attributes).patch(fleet::patch_attributes),
        )
        .route("/api/network/cells", get(fleet::cells))
        .route(
            "/api/network/cells/{cell}",
            axum::routing::put(fleet::put_cell),
        )
        .route(
            "/api/network/regions",
            get(fleet::regions).put(fleet::put_regions),
        )
        .route("/api/groups", get(fleet::groups).post(fleet::put_group))
        .route("/api/groups/preview", axum::routing::post(fleet::preview))
        .route(
            "/api/groups/{id}",
            get(fleet::group).delete(fleet::delete_group),
        )
        .route("/api/groups/{id}/members", get(fleet::members))
        .route(
            "/api/campaigns",
            get(campaigns::list).post(campaigns::create),
        )
        .route(
            "/api/campaigns/{id}",
            get(campaigns::get).delete(campaigns::delete),
        )
        .route(
            "/api/campaigns/{id}/{action}",
            axum::routing::post(campaigns::action),
        )
        .route("/api/clients/{endpoint}/{*path}", any(device::dispatch))
        .route("/api/requests/{id}", get(system::request))
        .merge(bootstrap::routes())
        .route("/api/security/clients", get(security::list))
        .route(
            "/api/security/clients/{endpoint}",
            get(security::get)
                .put(security::put)
                .delete(security::delete),
        )
        .route("/api/events", get(events::events))
        .route(
            "/api/packages",
            axum::routing::post(firmware::upload).get(firmware::list),
        )
        .route(
            "/api/packages/{id}",
            get(firmware::get).delete(firmware::delete),
        )
        .route(
            "/api/clients/{endpoint}/firmware",
            get(firmware::status)
                .post(firmware::start)
                .delete(firmware::cancel),
        )
        .route("/api/openapi.json", get(openapi::openapi_json))
        .route_layer(middleware::from_fn_with_state(
            state.clone(),
            auth::require_token,
        ));
    let open = Router::new()
        .route("/healthz", get(system::health))
        .route("/metrics", get(system::metrics))
        .route_layer(middleware::from_fn_with_state(
            state.clone(),
            auth::require_token_unless_open,
        ));
    finish(
        Router::new()
            .merge(api)
            .merge(open)
            .route("/docs", get(docs::page))
            .route("/fw/{token}", get(firmware::download)),
    )
    .with_state(state)
}

/// What every router of this API ends with: JSON errors for unknown routes, wrong methods
/// and axum's own rejections, and the body limit.
fn finish<S: Clone + Send + Sync + 'static>(router: Router<S>) -> Router<S> {
    router
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(middleware::map_response(json_errors))
        .layer(DefaultBodyLimit::max(MAX_BODY))
}

/// The state of the standalone bootstrap server's API.
#[derive(Clone)]
struct BootstrapOnly {
    bootstrap: bootstrap::BootstrapState,
    access: auth::Access,
    metrics: Arc<crate::metrics::Metrics>,
}

impl axum::extract::FromRef<BootstrapOnly> for bootstrap::BootstrapState {
    fn from_ref(s: &BootstrapOnly) -> Self {
        s.bootstrap.clone()
    }
}
impl axum::extract::FromRef<BootstrapOnly> for auth::Access {
    fn from_ref(s: &BootstrapOnly) -> Self {
        s.access.clone()
    }
}
impl axum::extract::FromRef<BootstrapOnly> for Arc<crate::metrics::Metrics> {
    fn from_ref(s: &BootstrapOnly) -> Self {
        s.metrics.clone()
    }
}

/// The API of `lwm2m-bootstrap`, a bootstrap server without an LwM2M server: the
/// `/api/bootstrap` routes, `/healthz` and `/metrics`, with the same tokens and errors.
pub fn bootstrap_only_router(
    bootstrap: bootstrap::BootstrapApi,
    settings: &ApiSettings,
    metrics: Arc<crate::metrics::Metrics>,
) -> Router {
    let state = BootstrapOnly {
        bootstrap: bootstrap::BootstrapState(Some(bootstrap)),
        access: auth::Access {
            tokens: Arc::new(auth::Tokens::new(
                &settings.admin_tokens,
                &settings.read_tokens,
            )),
            open_metrics: settings.open_metrics,
            open_health: settings.open_health,
        },
        metrics,
    };
    let api = bootstrap::routes().route_layer(middleware::from_fn_with_state(
        state.clone(),
        auth::require_token,
    ));
    let open = Router::new()
        .route("/healthz", get(bootstrap::health))
        .route("/metrics", get(system::metrics))
        .route_layer(middleware::from_fn_with_state(
            state.clone(),
            auth::require_token_unless_open,
        ));
    finish(Router::new().merge(api).merge(open)).with_state(state)
}

/// Serves `router` until `shutdown` completes.
pub async fn serve_router(
    router: Router,
    listener: tokio::net::TcpListener,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    axum::serve(listener, router)
        .with_graceful_shutdown(shutdown)
        .await
}

async fn not_found() -> ApiError {
    ApiError::new(StatusCode::NOT_FOUND, "not_found", "no such route")
}

async fn method_not_allowed() -> ApiError {
    ApiError::new(
        StatusCode::METHOD_NOT_ALLOWED,
        "method_not_allowed",
        "this route does not take this method",
    )
}

/// Rewrites any error answer that is not JSON (axum's own rejections: a path that does
/// not decode, a body over the limit) into the API's error shape.
async fn json_errors(response: Response) -> Response {
    let status = response.status();
    if !(status.is_client_error() || status.is_server_error()) {
        return response;
    }
    let is_json = response
        .headers()
        .get(header::CONTENT_TYPE)
        .is_some_and(|v| v.as_bytes().starts_with(b"application/json"));
    if is_json {
        return response;
    }
    let (parts, body) = response.into_parts();
    // Rejection texts are short; anything longer is cut.
    let detail = match axum::body::to_bytes(body, 4096).await {
        Ok(b) => String::from_utf8_lossy(&b).into_owned(),
        Err(_) => String::new(),
    };
    let error = match status {
        StatusCode::PAYLOAD_TOO_LARGE => "body_too_large",
        StatusCode::NOT_FOUND => "not_found",
        StatusCode::METHOD_NOT_ALLOWED => "method_not_allowed",
        StatusCode::UNSUPPORTED_MEDIA_TYPE => "bad_content_type",
        s if s.is_client_error() => "bad_request",
        _ => "internal",
    };
    let mut rebuilt = ApiError::new(status, error, detail).into_response();
    for (name, value) in parts.headers.iter() {
        if name != header::CONTENT_TYPE && name != header::CONTENT_LENGTH {
            rebuilt.headers_mut().insert(name.clone(), value.clone());
        }
    }
    rebuilt.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    if status == StatusCode::PAYLOAD_TOO_LARGE {
        // The unread rest of the body makes the connection unusable: say so, so that
        // the client does not send its next request on it.
        rebuilt
            .headers_mut()
            .insert(header::CONNECTION, HeaderValue::from_static("close"));
    }
    rebuilt
}
