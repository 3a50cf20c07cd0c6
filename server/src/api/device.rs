//! Device management over HTTP: `/api/clients/{endpoint}/{path...}`.
//!
//! The path after the endpoint names the target (`3/0/1`) and, as a last segment, the
//! kind of call (`discover`, `attributes`, `observe`); `composite` and
//! `composite/observe` name the composite calls. The HTTP method picks the operation:
//!
//! | method | target | LwM2M operation |
//! |---|---|---|
//! | GET | `{path}` | Read |
//! | PUT | `{path}` | Write (`?replace=false`: partial update) |
//! | POST | `{o}/{i}/{r}` | Execute (arguments as the text body) |
//! | POST | `{o}` or `{o}/{i}` | Create (an instance as the JSON body) |
//! | DELETE | `{path}` | Delete |
//! | GET | `{path}/discover` | Discover |
//! | PUT | `{path}/attributes` | Write-Attributes |
//! | POST / DELETE | `{path}/observe` | Observe / Cancel-Observe (`?active`) |
//! | GET / PUT | `composite` | Read-Composite / Write-Composite |
//! | POST / DELETE | `composite/observe` | Observe-Composite / its cancel |
//!
//! A call to a queue-mode device that sleeps is answered 202 with a request id at once;
//! the request waits in the server's persisted queue and its result is tracked (see
//! [`super::requests`]).

use std::str::FromStr;
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::{Path as UrlPath, RawQuery, State};
use axum::http::{Method, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use coap_lite::Packet;
use lwm2m_objects::link::Attributes;
use lwm2m_objects::{ContentFormat, Path};
use serde::Serialize;
use serde_json::{json, Value};
use utoipa::ToSchema;

use super::error::ApiError;
use super::events::ApiEvent;
use super::node_json::{self, JsonNode};
use super::requests::RequestTracker;
use super::{query, responses, ApiState};
use crate::dm::{DeviceError, ExecuteArgs, Operation, WriteMode, MAX_COMPOSITE_PATHS};
use crate::registry::Registration;
use crate::runtime::{Performed, RequestError, RequestLabel};

/// Longest `?timeout=` and `?expires=` accepted, in seconds.
const MAX_TIMEOUT_S: u64 = 3600;
const MAX_EXPIRES_S: u64 = 30 * 86_400;

/// What the path after the endpoint names.
#[derive(Debug, Clone, PartialEq)]
pub enum Target {
    Node(Path),
    Discover(Path),
    Attributes(Path),
    Observe(Path),
    Composite,
    CompositeObserve,
}

impl Target {
    pub fn parse(rest: &str) -> Result<Target, ApiError> {
        let segments: Vec<&str> = rest.split('/').filter(|s| !s.is_empty()).collect();
        let bad = |why: &str| {
            ApiError::bad_request("bad_path", format!("{why} (got {:?})", format!("/{rest}")))
        };
        match segments.as_slice() {
            ["composite"] => return Ok(Target::Composite),
            ["composite", "observe"] => return Ok(Target::CompositeObserve),
            [] => return Err(bad("a path like 3/0/1 is needed after the endpoint")),
            _ => {}
        }
        let (ids, suffix) = match segments.split_last() {
            Some((last, ids)) if last.parse::<u32>().is_err() => (ids, Some(*last)),
            _ => (segments.as_slice(), None),
        };
        if ids.is_empty() || ids.len() > 4 {
            return Err(bad("a path has 1 to 4 numeric ids"));
        }
        let mut numbers = Vec::with_capacity(ids.len());
        for id in ids {
            let n: u16 = id
                .parse()
                .map_err(|_| bad("path ids are numbers 0..=65534"))?;
            numbers.push(n);
        }
        let path = Path::from_ids(&numbers).map_err(|e| bad(&e.to_string()))?;
        match suffix {
            None => Ok(Target::Node(path)),
            Some("discover") => Ok(Target::Discover(path)),
            Some("attributes") => Ok(Target::Attributes(path)),
            Some("observe") => Ok(Target::Observe(path)),
            Some(other) => Err(bad(&format!(
                "unknown call {other:?}; expected discover, attributes or observe"
            ))),
        }
    }
}

/// The query parameters of a device call.
#[derive(Debug, Default)]
pub struct Options {
    format: Option<ContentFormat>,
    timeout: Option<Duration>,
    expires: Option<Duration>,
    replace: Option<bool>,
    active: bool,
    paths: Option<Vec<Path>>,
    depth: Option<u8>,
    /// Attribute parameters, re-joined for [`Attributes::parse_query`].
    attributes: Vec<String>,
}

const ATTRIBUTE_KEYS: [&str; 10] = [
    "pmin", "pmax", "gt", "lt", "st", "epmin", "epmax", "edge", "con", "hqmax",
];

/// `?format=` names, after the short names users of other servers know.
pub fn parse_format(name: &str) -> Result<ContentFormat, ApiError> {
    let f = match name.to_ascii_lowercase().as_str() {
        "text" | "0" => ContentFormat::Text,
        "opaque" | "42" => ContentFormat::Opaque,
        "cbor" | "60" => ContentFormat::Cbor,
        "senml-json" | "110" => ContentFormat::SenmlJson,
        "senml-cbor" | "112" => ContentFormat::SenmlCbor,
        "tlv" | "11542" => ContentFormat::Tlv,
        "json" | "11543" => ContentFormat::Lwm2mJson,
        "lwm2m-cbor" | "11544" => ContentFormat::Lwm2mCbor,
        _ => {
            return Err(ApiError::bad_request(
                "bad_format",
                format!(
                    "unknown format {name:?}; use senml-json, senml-cbor, lwm2m-cbor, tlv, json, text, opaque or cbor"
                ),
            ))
        }
    };
    Ok(f)
}

fn parse_paths(list: &str) -> Result<Vec<Path>, ApiError> {
    let mut out = Vec::new();
    for p in list.split(',').filter(|p| !p.trim().is_empty()) {
        if out.len() == MAX_COMPOSITE_PATHS {
            return Err(ApiError::bad_request(
                "bad_query",
                format!("at most {MAX_COMPOSITE_PATHS} paths"),
            ));
        }
        let path = Path::from_str(p.trim()).map_err(|e| {
            ApiError::bad_request("bad_path", format!("{p:?} is not a path like /3/0/1: {e}"))
        })?;
        out.push(path);
    }
    if out.is_empty() {
        return Err(ApiError::bad_request(
            "bad_query",
            "paths=/3/0/1,/3/0/2 names at least one path",
        ));
    }
    Ok(out)
}

fn seconds(key: &str, v: &str, max: u64) -> Result<Duration, ApiError> {
    match v.parse::<u64>() {
        Ok(n) if (1..=max).contains(&n) => Ok(Duration::from_secs(n)),
        _ => Err(ApiError::bad_request(
            "bad_query",
            format!("{key} is a number of seconds, 1..={max}, not {v:?}"),
        )),
    }
}

impl Options {
    /// Parses the query, accepting only the keys `allowed` (and attributes when
    /// `attributes` is true): a misspelt key is an error, not silently ignored.
    fn parse(raw: Option<&str>, allowed: &[&str], attributes: bool) -> Result<Options, ApiError> {
        let mut o = Options::default();
        for (k, v) in query::pairs(raw.unwrap_or(""))? {
            let key = k.as_str();
            if attributes && ATTRIBUTE_KEYS.contains(&key) {
                o.attributes.push(if v.is_empty() {
                    k.clone()
                } else {
                    format!("{k}={v}")
                });
                continue;
            }
            if !allowed.contains(&key) {
                let mut accepted: Vec<&str> = allowed.to_vec();
                if attributes {
                    accepted.extend(ATTRIBUTE_KEYS);
                }
                return Err(ApiError::bad_request(
                    "bad_query",
                    format!(
                        "unknown parameter {key:?} here; accepted: {}",
                        accepted.join(", ")
                    ),
                ));
            }
            match key {
                "format" => o.format = Some(parse_format(&v)?),
                "timeout" => o.timeout = Some(seconds(key, &v, MAX_TIMEOUT_S)?),
                "expires" => o.expires = Some(seconds(key, &v, MAX_EXPIRES_S)?),
                "replace" => {
                    o.replace = Some(match v.as_str() {
                        "true" | "" => true,
                        "false" => false,
                        _ => {
                            return Err(ApiError::bad_request(
                                "bad_query",
                                "replace is true or false",
                            ))
                        }
                    })
                }
                "active" => {
                    o.active = match v.as_str() {
                        "true" | "" => true,
                        "false" => false,
                        _ => {
                            return Err(ApiError::bad_request(
                                "bad_query",
                                "active is true or false",
                            ))
                        }
                    }
                }
                "paths" => o.paths = Some(parse_paths(&v)?),
                "depth" => {
                    o.depth = Some(v.parse::<u8>().ok().filter(|d| *d <= 3).ok_or_else(|| {
                        ApiError::bad_request("bad_query", "depth is 0, 1, 2 or 3")
                    })?)
                }
                _ => {}
            }
        }
        Ok(o)
    }

    fn attributes(&self) -> Result<Attributes, ApiError> {
        Attributes::parse_query(&self.attributes.join("&"))
            .map_err(|e| ApiError::bad_request("bad_attributes", e.to_string()))
    }

    fn paths(&self) -> Result<Vec<Path>, ApiError> {
        self.paths.clone().ok_or_else(|| {
            ApiError::bad_request("bad_query", "composite calls need ?paths=/3/0/1,/3/0/2")
        })
    }
}

/// Common keys of every device call.
const COMMON: [&str; 3] = ["format", "timeout", "expires"];

fn keys(extra: &[&'static str]) -> Vec<&'static str> {
    let mut k = COMMON.to_vec();
    k.extend_from_slice(extra);
    k
}

/// Answer of a call queued for a sleeping device.
#[derive(Debug, Clone, Serialize, ToSchema, PartialEq)]
pub struct Accepted {
    pub request_id: String,
    /// Always `queued`.
    pub status: &'static str,
    /// Where the result will be: `/api/requests/{request_id}`.
    pub location: String,
}

fn parse_json<T: serde::de::DeserializeOwned>(body: &[u8]) -> Result<T, ApiError> {
    if body.is_empty() {
        return Err(ApiError::bad_request(
            "bad_body",
            "this call needs a JSON body",
        ));
    }
    serde_json::from_slice(body)
        .map_err(|e| ApiError::bad_request("bad_body", format!("body is not valid: {e}")))
}

fn method_not_allowed(method: &Method, target: &Target) -> ApiError {
    ApiError::new(
        StatusCode::METHOD_NOT_ALLOWED,
        "method_not_allowed",
        format!("{method} is not a device call on {target:?}"),
    )
}

/// A device call, read from the HTTP request: everything an operator can get wrong is
/// found here, before any device is asked anything.
#[derive(Debug)]
pub enum Call {
    Perform(Operation, Options),
    /// Cancel-Observe (`composite`: of a composite observation) of these paths.
    Cancel {
        paths: Vec<Path>,
        composite: bool,
        options: Options,
    },
}

/// The handler of every device call; the table in the module doc says which is which.
pub async fn dispatch(
    State(state): State<ApiState>,
    method: Method,
    UrlPath((endpoint, rest)): UrlPath<(String, String)>,
    RawQuery(raw): RawQuery,
    body: Bytes,
) -> Result<Response, ApiError> {
    match parse_call(&method, &rest, raw.as_deref(), &body, &*state.model)? {
        Call::Perform(op, o) => perform(&state, &endpoint, op, &o).await,
        Call::Cancel {
            paths,
            composite,
            options,
        } => cancel(&state, &endpoint, paths, composite, &options).await,
    }
}

/// Reads a device call from its method, the path after the endpoint, the query and the
/// body. Pure, so that it is fuzzed as it is.
pub fn parse_call(
    method: &Method,
    rest: &str,
    raw: Option<&str>,
    body: &[u8],
    model: &dyn lwm2m_objects::Model,
) -> Result<Call, ApiError> {
    let target = Target::parse(rest)?;
    let (op, o) = match (method, &target) {
        (&Method::GET, Target::Node(path)) => {
            let o = Options::parse(raw, &COMMON, false)?;
            let op = Operation::Read {
                path: *path,
                format: o.format,
            };
            (op, o)
        }
        (&Method::PUT, Target::Node(path)) => {
            let o = Options::parse(raw, &keys(&["replace"]), false)?;
            let json: JsonNode = parse_json(body)?;
            let node = json
                .to_node(path, model)
                .map_err(|e| ApiError::bad_request("bad_body", e.to_string()))?;
            let mode = if o.replace.unwrap_or(true) {
                WriteMode::Replace
            } else {
                WriteMode::PartialUpdate
            };
            let op = Operation::Write {
                path: *path,
                node,
                mode,
                format: o.format,
            };
            (op, o)
        }
        (&Method::POST, Target::Node(path)) if path.is_resource() => {
            let o = Options::parse(raw, &["timeout", "expires"], false)?;
            let text = std::str::from_utf8(body).map_err(|_| {
                ApiError::bad_request("bad_body", "Execute arguments are UTF-8 text")
            })?;
            let args = if text.trim().is_empty() {
                ExecuteArgs::default()
            } else {
                ExecuteArgs::from_str(text.trim())
                    .map_err(|e| ApiError::bad_request("bad_body", e.to_string()))?
            };
            (Operation::Execute { path: *path, args }, o)
        }
        (&Method::POST, Target::Node(path)) if path.depth() <= 2 => {
            let o = Options::parse(raw, &COMMON, false)?;
            let json: JsonNode = parse_json(body)?;
            let object = path.object_id().unwrap_or_default();
            let (instance, resources) =
                node_json::instance_from_json(&json, object, path.instance_id(), model)
                    .map_err(|e| ApiError::bad_request("bad_body", e.to_string()))?;
            let op = Operation::Create {
                object,
                instance,
                resources,
                format: o.format,
            };
            (op, o)
        }
        (&Method::DELETE, Target::Node(path)) => {
            let o = Options::parse(raw, &["timeout", "expires"], false)?;
            (Operation::Delete { path: *path }, o)
        }
        (&Method::GET, Target::Discover(path)) => {
            let o = Options::parse(raw, &["timeout", "expires", "depth"], false)?;
            let op = Operation::Discover {
                path: *path,
                depth: o.depth,
            };
            (op, o)
        }
        (&Method::PUT, Target::Attributes(path)) => {
            let o = Options::parse(raw, &["timeout", "expires"], true)?;
            let op = Operation::WriteAttributes {
                path: *path,
                attributes: o.attributes()?,
            };
            (op, o)
        }
        (&Method::POST, Target::Observe(path)) => {
            let o = Options::parse(raw, &COMMON, true)?;
            let op = Operation::Observe {
                path: *path,
                attributes: o.attributes()?,
                format: o.format,
            };
            (op, o)
        }
        (&Method::DELETE, Target::Observe(path)) => {
            let options = Options::parse(raw, &["format", "timeout", "active"], false)?;
            return Ok(Call::Cancel {
                paths: vec![*path],
                composite: false,
                options,
            });
        }
        (&Method::GET, Target::Composite) => {
            let o = Options::parse(raw, &keys(&["paths"]), false)?;
            let op = Operation::ReadComposite {
                paths: o.paths()?,
                format: o.format,
            };
            (op, o)
        }
        (&Method::PUT, Target::Composite) => {
            let o = Options::parse(raw, &COMMON, false)?;
            let map: std::collections::BTreeMap<String, JsonNode> = parse_json(body)?;
            let nodes = node_json::nodes_from_json(&map, model)
                .map_err(|e| ApiError::bad_request("bad_body", e.to_string()))?;
            let op = Operation::WriteComposite {
                nodes,
                format: o.format,
            };
            (op, o)
        }
        (&Method::POST, Target::CompositeObserve) => {
            let o = Options::parse(raw, &keys(&["paths"]), true)?;
            let op = Operation::ObserveComposite {
                paths: o.paths()?,
                attributes: o.attributes()?,
                format: o.format,
            };
            (op, o)
        }
        (&Method::DELETE, Target::CompositeObserve) => {
            let options = Options::parse(raw, &["format", "timeout", "active", "paths"], false)?;
            return Ok(Call::Cancel {
                paths: options.paths()?,
                composite: true,
                options,
            });
        }
        _ => return Err(method_not_allowed(method, &target)),
    };
    Ok(Call::Perform(op, o))
}

/// Runs an operation: at once for a reachable device, queued (202) for a sleeping one.
async fn perform(
    state: &ApiState,
    endpoint: &str,
    op: Operation,
    o: &Options,
) -> Result<Response, ApiError> {
    let client = state
        .handle
        .client(endpoint)
        .await
        .ok_or_else(|| ApiError::unknown_endpoint(endpoint))?;
    // Asleep (queue mode), or over DTLS without a session: it waits for the device.
    if !client.awake {
        return queue(state, &client.registration, op, o).await;
    }
    let timeout = o.timeout.unwrap_or(state.settings.default_timeout);
    let call = async {
        let submitted = state
            .handle
            .submit_tracked_to(&client.registration, &op, timeout, None)
            .await?;
        submitted.finish().await.map(|p| result_of(&p))
    };
    // The CoAP layer gives up on its own (retransmissions, response timeout); this bounds
    // the HTTP call by what the caller asked for when that is shorter.
    let result = tokio::time::timeout(timeout, call).await.map_err(|_| {
        ApiError::new(
            StatusCode::GATEWAY_TIMEOUT,
            "device_timeout",
            format!("no answer from the device within {} s", timeout.as_secs()),
        )
    })??;
    let status = if result.status == "CREATED" {
        StatusCode::CREATED
    } else {
        StatusCode::OK
    };
    Ok((status, Json(result)).into_response())
}

/// The answer's JSON, with the observation's token for an Observe.
fn result_of(p: &Performed) -> responses::DmResult {
    let mut result = responses::to_result(&p.response);
    result.observation = p.observation.as_deref().map(crate::hex::encode);
    result
}

/// Queues the operation for a sleeping device and answers 202 once the request is
/// persisted in the device's queue: from then on a crash of the server does not lose it.
async fn queue(
    state: &ApiState,
    registration: &Registration,
    op: Operation,
    o: &Options,
) -> Result<Response, ApiError> {
    let endpoint = &*registration.endpoint;
    let id = RequestTracker::new_id();
    let expires = o.expires.unwrap_or(state.settings.request_expiry);
    let submitted = state
        .handle
        .submit_tracked_to(registration, &op, expires, Some(id.clone()))
        .await?;
    let label = RequestLabel::for_operation(&op, None);
    state
        .requests
        .start(&id, endpoint, &label.operation, &label.paths_text());
    let (state2, endpoint2, id2) = (state.clone(), endpoint.to_string(), id.clone());
    tokio::spawn(async move {
        let outcome = submitted
            .finish()
            .await
            .map(|p| serde_json::to_value(result_of(&p)).unwrap_or(Value::Null))
            .map_err(|e| {
                let e = ApiError::from(e);
                (e.status.as_u16(), e.body)
            });
        let record = state2.requests.finish(&id2, &endpoint2, outcome);
        let _ = state2.events.send(request_event(&record));
    });
    let body = Accepted {
        location: format!("/api/requests/{id}"),
        request_id: id,
        status: "queued",
    };
    Ok((StatusCode::ACCEPTED, Json(body)).into_response())
}

fn request_event(record: &super::requests::RequestRecord) -> ApiEvent {
    ApiEvent::new(
        "REQUEST_RESPONSE",
        Some(&record.endpoint),
        json!({ "request": record }),
    )
}

/// The operation to read an answer with, rebuilt from what the server's queue kept of a
/// request: its name and paths. Every operation answered 2.04 Changed reads the same.
fn answer_reader(label: &RequestLabel) -> Option<Operation> {
    let path = label.paths.first().copied()?;
    let paths = label.paths.clone();
    let attributes = Attributes::default;
    Some(match label.operation.as_str() {
        "Read" => Operation::Read { path, format: None },
        "Discover" => Operation::Discover { path, depth: None },
        "Observe" => Operation::Observe {
            path,
            attributes: attributes(),
            format: None,
        },
        "Read-Composite" => Operation::ReadComposite {
            paths,
            format: None,
        },
        "Observe-Composite" => Operation::ObserveComposite {
            paths,
            attributes: attributes(),
            format: None,
        },
        "Write" | "Write-Attributes" | "Write-Composite" | "Execute" => Operation::Execute {
            path,
            args: ExecuteArgs::default(),
        },
        "Delete" => Operation::Delete { path },
        "Create" => Operation::Create {
            object: path.object_id()?,
            instance: path.instance_id(),
            resources: Vec::new(),
            format: None,
        },
        _ => return None,
    })
}

/// Records and announces the result of a request queued before a restart, read as the
/// synchronous call would have read it.
pub async fn completion_after_restart(
    state: &ApiState,
    id: &str,
    endpoint: &str,
    label: &RequestLabel,
    token: &[u8],
    outcome: Result<Packet, RequestError>,
) -> ApiEvent {
    let outcome = match outcome {
        Ok(p) => match answer_reader(label) {
            Some(op) => match state.handle.read_notification(endpoint, &op, &p).await {
                Ok(response) => {
                    let observation = (!token.is_empty()).then(|| token.to_vec());
                    let performed = Performed {
                        response,
                        observation,
                    };
                    Ok(serde_json::to_value(result_of(&performed)).unwrap_or(Value::Null))
                }
                Err(e) => {
                    let e = ApiError::from(e);
                    Err((e.status.as_u16(), e.body))
                }
            },
            None => match DeviceError::from_response(&p) {
                Some(d) => {
                    let e = ApiError::device(&d);
                    Err((e.status.as_u16(), e.body))
                }
                None => Ok(json!({ "coap_code": p.header.code.to_string() })),
            },
        },
        Err(e) => {
            let e = ApiError::from(e);
            Err((e.status.as_u16(), e.body))
        }
    };
    let record = state.requests.finish(id, endpoint, outcome);
    request_event(&record)
}

/// Ends the observations of `paths` on a device: forgets them (passive: the device's next
/// notification is answered RST), or with `?active` sends the cancel and returns the
/// device's answer.
async fn cancel(
    state: &ApiState,
    endpoint: &str,
    paths: Vec<Path>,
    composite: bool,
    o: &Options,
) -> Result<Response, ApiError> {
    if state.handle.client(endpoint).await.is_none() {
        return Err(ApiError::unknown_endpoint(endpoint));
    }
    let matching: Vec<_> = state
        .handle
        .observations(endpoint)
        .await
        .into_iter()
        .filter(|ob| ob.composite == composite && ob.paths == paths)
        .collect();
    let Some(first) = matching.first() else {
        return Err(ApiError::new(
            StatusCode::NOT_FOUND,
            "no_observation",
            format!(
                "no observation of {} on {endpoint:?}",
                paths
                    .iter()
                    .map(ToString::to_string)
                    .collect::<Vec<_>>()
                    .join(",")
            ),
        ));
    };
    let mut result: Value = json!({ "cancelled": matching.len() });
    if o.active {
        let op = if composite {
            Operation::CancelObserveComposite {
                paths: paths.clone(),
                format: o.format,
            }
        } else {
            Operation::CancelObserve {
                path: paths.first().copied().unwrap_or(Path::ROOT),
                format: o.format,
            }
        };
        let timeout = o.timeout.unwrap_or(state.settings.default_timeout);
        let r = tokio::time::timeout(timeout, state.handle.cancel(endpoint, &first.token, &op))
            .await
            .map_err(|_| {
                ApiError::new(
                    StatusCode::GATEWAY_TIMEOUT,
                    "device_timeout",
                    "no answer to the cancel",
                )
            })??;
        result = serde_json::to_value(responses::to_result(&r)).unwrap_or(Value::Null);
        result["cancelled"] = json!(matching.len());
        for ob in matching.iter().skip(1) {
            state.handle.forget_observation(&ob.token).await;
        }
    } else {
        for ob in &matching {
            state.handle.forget_observation(&ob.token).await;
        }
    }
    Ok(Json(result).into_response())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn targets() {
        assert_eq!(
            Target::parse("3/0/1").expect("t"),
            Target::Node(Path::resource(3, 0, 1))
        );
        assert_eq!(
            Target::parse("3/0/").expect("t"),
            Target::Node(Path::instance(3, 0))
        );
        assert_eq!(
            Target::parse("3/0/discover").expect("t"),
            Target::Discover(Path::instance(3, 0))
        );
        assert_eq!(
            Target::parse("3/0/9/observe").expect("t"),
            Target::Observe(Path::resource(3, 0, 9))
        );
        assert_eq!(Target::parse("composite").expect("t"), Target::Composite);
        assert_eq!(
            Target::parse("composite/observe").expect("t"),
            Target::CompositeObserve
        );
        for bad in [
            "",
            "x",
            "3/x/1",
            "65535",
            "3/0/1/2/3",
            "3/0/frobnicate",
            "observe",
            "70000",
        ] {
            let e = Target::parse(bad).expect_err(bad);
            assert_eq!(e.status, StatusCode::BAD_REQUEST, "{bad}");
            assert_eq!(e.body.error, "bad_path", "{bad}");
        }
    }

    #[test]
    fn options_refuse_unknown_keys() {
        assert!(Options::parse(Some("format=tlv&timeout=5"), &COMMON, false).is_ok());
        assert!(Options::parse(Some("fromat=tlv"), &COMMON, false).is_err());
        assert!(Options::parse(Some("format=xml"), &COMMON, false).is_err());
        assert!(Options::parse(Some("timeout=0"), &COMMON, false).is_err());
        assert!(Options::parse(Some("pmin=5"), &COMMON, false).is_err());
        let o = Options::parse(Some("pmin=5&pmax=10"), &COMMON, true).expect("attrs");
        let a = o.attributes().expect("attributes");
        assert_eq!(a.pmin.and_then(|v| v.get()), Some(5));
        let o =
            Options::parse(Some("paths=/3/0/1,/3/0/2"), &keys(&["paths"]), false).expect("paths");
        assert_eq!(o.paths().expect("p").len(), 2);
        assert!(Options::parse(Some("paths=/3/x"), &keys(&["paths"]), false).is_err());
    }
}
