//! Live events as server-sent events (`GET /api/events`).
//!
//! One task translates the server's [`ServerEvent`]s into [`ApiEvent`]s (decoding each
//! notification and Send once, whatever the number of listeners) and publishes them on a
//! broadcast channel; every SSE connection subscribes to it. A listener that keeps up
//! receives every event; one that falls more than the channel's capacity behind gets a
//! `LAGGED` event saying how many it missed, and goes on from the oldest event still held.

use std::convert::Infallible;
use std::time::Duration;

use axum::extract::{RawQuery, State};
use axum::response::sse::{Event, KeepAlive, Sse};
use futures_util::Stream;
use serde::Serialize;
use serde_json::{json, Value};
use tokio::sync::broadcast;
use tokio_stream::wrappers::errors::BroadcastStreamRecvError;
use tokio_stream::wrappers::BroadcastStream;
use tokio_stream::StreamExt;
use utoipa::ToSchema;

use super::clients::registration_json;
use super::error::ApiError;
use super::{node_json, query, responses, ApiState};
use crate::dm::Operation;
use crate::runtime::ServerEvent;
use lwm2m_objects::link::Attributes;

/// Events the API channel holds for listeners that are behind.
pub const API_EVENT_CAPACITY: usize = 8192;

/// One event, as a listener receives it: the SSE `event:` field is `kind`, the `data:`
/// field is `data` as JSON, which always holds `type`, `time` (Unix ms) and, for device
/// events, `endpoint`.
#[derive(Debug, Clone, Serialize, ToSchema, PartialEq)]
pub struct ApiEvent {
    /// REGISTRATION, UPDATED, DEREGISTRATION, SLEEPING, AWAKE, NOTIFICATION,
    /// OBSERVATION_CANCELLED, SEND, REQUEST_RESPONSE, FIRMWARE_STATE, CAMPAIGN; LAGGED for a listener that fell behind.
    pub kind: &'static str,
    pub endpoint: Option<String>,
    #[schema(value_type = Object)]
    pub data: Value,
}

impl ApiEvent {
    pub fn new(kind: &'static str, endpoint: Option<&str>, mut data: Value) -> ApiEvent {
        if let Value::Object(map) = &mut data {
            map.insert("type".into(), json!(kind));
            map.insert("time".into(), json!(super::unix_ms()));
            if let Some(ep) = endpoint {
                map.insert("endpoint".into(), json!(ep));
            }
        }
        ApiEvent {
            kind,
            endpoint: endpoint.map(str::to_string),
            data,
        }
    }
}

/// Feeds the API's event channel from the server's events until the server stops.
pub fn spawn_translator(state: ApiState) {
    let mut rx = state.handle.subscribe();
    let tx = state.events.clone();
    tokio::spawn(async move {
        loop {
            let event = match rx.recv().await {
                Ok(e) => e,
                Err(broadcast::error::RecvError::Lagged(n)) => {
                    // The translator itself fell behind the server: every listener missed
                    // these, so every listener is told.
                    let _ = tx.send(ApiEvent::new("LAGGED", None, json!({ "missed": n })));
                    continue;
                }
                Err(broadcast::error::RecvError::Closed) => break,
            };
            // A listener sees only what is sent after it subscribed: with none, the
            // translation (a JSON document per event) would be thrown away.
            if tx.receiver_count() == 0 {
                continue;
            }
            if let Some(e) = translate(&state, event).await {
                let _ = tx.send(e);
            }
        }
    });
}

async fn translate(state: &ApiState, event: ServerEvent) -> Option<ApiEvent> {
    let handle = &state.handle;
    Some(match event {
        ServerEvent::FirmwareState(record) => ApiEvent::new(
            "FIRMWARE_STATE",
            Some(&record.endpoint.clone()),
            json!({ "update": super::firmware::update_json(&record) }),
        ),
        ServerEvent::Campaign { id, what, progress } => ApiEvent::new(
            "CAMPAIGN",
            None,
            json!({ "campaign": id, "what": what, "progress": progress }),
        ),
        ServerEvent::Registered {
            registration,
            replaced,
        } => ApiEvent::new(
            "REGISTRATION",
            Some(&registration.endpoint.clone()),
            json!({
                "registration": registration_json(&registration),
                "replaced_registration_id": replaced,
            }),
        ),
        ServerEvent::Updated {
            registration,
            changes,
        } => {
            let mut changed = Vec::new();
            for (flag, name) in [
                (changes.lifetime, "lifetime"),
                (changes.binding, "binding"),
                (changes.queue_mode, "queue_mode"),
                (changes.sms, "sms"),
                (changes.profile_id, "profile_id"),
                (changes.objects, "objects"),
                (changes.peer, "address"),
            ] {
                if flag {
                    changed.push(name);
                }
            }
            ApiEvent::new(
                "UPDATED",
                Some(&registration.endpoint.clone()),
                json!({ "registration": registration_json(&registration), "changed": changed }),
            )
        }
        ServerEvent::Deregistered { registration } => ApiEvent::new(
            "DEREGISTRATION",
            Some(&registration.endpoint),
            json!({ "registration_id": registration.id, "reason": "deregister" }),
        ),
        ServerEvent::Expired { registration } => ApiEvent::new(
            "DEREGISTRATION",
            Some(&registration.endpoint),
            json!({ "registration_id": registration.id, "reason": "expired" }),
        ),
        ServerEvent::Awake {
            endpoint,
            registration_id,
        } => ApiEvent::new(
            "AWAKE",
            Some(&endpoint),
            json!({ "registration_id": registration_id }),
        ),
        ServerEvent::Sleeping {
            endpoint,
            registration_id,
        } => ApiEvent::new(
            "SLEEPING",
            Some(&endpoint),
            json!({ "registration_id": registration_id }),
        ),
        ServerEvent::Notification {
            endpoint,
            token,
            sequence,
            packet,
            paths,
            composite,
            device,
            ..
        } => {
            let op = if composite {
                Operation::ObserveComposite {
                    paths: paths.clone(),
                    attributes: Attributes::default(),
                    format: None,
                }
            } else {
                let path = paths.first().copied()?;
                Operation::Observe {
                    path,
                    attributes: Attributes::default(),
                    format: None,
                }
            };
            let mut data = json!({
                "observation": crate::hex::encode(&token),
                "paths": paths.iter().map(ToString::to_string).collect::<Vec<_>>(),
                "sequence": sequence,
            });
            match handle.read_answer(&device, &op, &packet) {
                Ok(r) => {
                    if let Some(c) = responses::to_result(&r).content {
                        data["content"] = c;
                    }
                }
                Err(e) => {
                    data["error"] = json!(ApiError::from(e).body);
                }
            }
            ApiEvent::new("NOTIFICATION", Some(&endpoint), data)
        }
        ServerEvent::ObservationCancelled {
            endpoint,
            token,
            packet,
        } => ApiEvent::new(
            "OBSERVATION_CANCELLED",
            Some(&endpoint),
            json!({ "observation": crate::hex::encode(&token), "coap_code": packet.header.code.to_string() }),
        ),
        ServerEvent::SendReceived {
            endpoint,
            registration_id,
            content_format,
            payload,
        } => {
            let data = match handle.read_send(content_format, &payload) {
                Ok(d) => {
                    let mut m = node_json::send_to_json(&d);
                    m.insert("registration_id".into(), json!(registration_id));
                    Value::Object(m)
                }
                Err(e) => json!({
                    "registration_id": registration_id,
                    "error": { "error": "bad_send", "detail": e.to_string() },
                }),
            };
            ApiEvent::new("SEND", Some(&endpoint), data)
        }
        ServerEvent::QueuedRequestCompleted {
            endpoint,
            label,
            token,
            outcome,
        } => {
            // Only requests queued before a restart arrive here (their caller is gone);
            // the others are reported by the task that waited for them.
            let id = label.request_id.clone()?;
            super::device::completion_after_restart(state, &id, &endpoint, &label, &token, outcome)
                .await
        }
    })
}

/// Query of `GET /api/events`.
#[derive(Debug, Default)]
struct EventsQuery {
    endpoint: Option<String>,
}

/// Server-sent events; `?ep=NAME` keeps only that device's events (and LAGGED).
#[utoipa::path(
    get,
    path = "/api/events",
    tag = "events",
    params(("ep" = Option<String>, Query, description = "only events of this endpoint")),
    responses(
        (status = 200, description = "`text/event-stream`: one SSE event per ApiEvent; `event:` is its kind, `data:` its JSON", body = ApiEvent, content_type = "text/event-stream"),
        (status = 400, description = "bad query", body = super::error::ErrorBody),
        (status = 401, description = "missing or wrong token", body = super::error::ErrorBody),
        (status = 503, description = "too many event streams open", body = super::error::ErrorBody),
    ),
    security(("bearer" = []))
)]
pub async fn events(
    State(state): State<ApiState>,
    RawQuery(raw): RawQuery,
) -> Result<Sse<impl Stream<Item = Result<Event, Infallible>>>, ApiError> {
    let mut q = EventsQuery::default();
    for (k, v) in query::pairs(raw.as_deref().unwrap_or(""))? {
        match k.as_str() {
            "ep" => q.endpoint = Some(v),
            other => {
                return Err(ApiError::bad_request(
                    "bad_query",
                    format!("unknown parameter {other:?}; only `ep` is accepted"),
                ))
            }
        }
    }
    let permit = state.streams.clone().try_acquire_owned().map_err(|_| {
        ApiError::new(
            axum::http::StatusCode::SERVICE_UNAVAILABLE,
            "too_many_streams",
            format!(
                "{} event streams are open already; close one or raise [api] max_event_streams",
                state.settings.max_event_streams
            ),
        )
    })?;
    // The permit lives as long as the stream: dropping the connection frees it.
    let stream = filtered(state.events.subscribe(), q.endpoint).map(move |e| {
        let _held = &permit;
        Ok(sse(&e))
    });
    // The first line tells the listener the subscription is in place.
    let hello = tokio_stream::once(Ok(Event::default().comment("subscribed")));
    // Ends the stream when the server stops, so a graceful shutdown does not wait forever
    // for listeners to hang up.
    let mut stop = state.stopping.clone();
    let stopped = async move {
        let _ = stop.wait_for(|s| *s).await;
    };
    let stream = futures_util::StreamExt::take_until(hello.chain(stream), stopped);
    Ok(Sse::new(stream).keep_alive(KeepAlive::new().interval(Duration::from_secs(15))))
}

/// The events a listener gets: those of `endpoint` (all when `None`), and a LAGGED event
/// with the number missed whenever it fell behind.
fn filtered(
    rx: broadcast::Receiver<ApiEvent>,
    endpoint: Option<String>,
) -> impl Stream<Item = ApiEvent> {
    BroadcastStream::new(rx).filter_map(move |r| match r {
        Ok(e) => {
            let wanted = match (&endpoint, &e.endpoint) {
                (None, _) => true,
                (Some(f), Some(ep)) => f == ep,
                (Some(_), None) => e.kind == "LAGGED",
            };
            wanted.then_some(e)
        }
        Err(BroadcastStreamRecvError::Lagged(n)) => {
            Some(ApiEvent::new("LAGGED", None, json!({ "missed": n })))
        }
    })
}

fn sse(e: &ApiEvent) -> Event {
    Event::default().event(e.kind).data(e.data.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ev(ep: &str, n: u64) -> ApiEvent {
        ApiEvent::new("UPDATED", Some(ep), json!({ "n": n }))
    }

    #[tokio::test]
    async fn a_listener_that_keeps_up_gets_everything_in_order() {
        let (tx, rx) = broadcast::channel(4);
        let mut s = Box::pin(filtered(rx, Some("a".into())));
        for n in 0..20 {
            tx.send(ev("a", n)).expect("send");
            tx.send(ev("b", n)).expect("send");
            // Read as they come: never more than two behind.
            let got = s.next().await.expect("event");
            assert_eq!(got.kind, "UPDATED");
            assert_eq!(got.data["n"], n);
            assert_eq!(got.endpoint.as_deref(), Some("a"));
        }
    }

    #[tokio::test]
    async fn a_slow_listener_is_told_how_many_it_missed() {
        let (tx, rx) = broadcast::channel(4);
        let mut s = Box::pin(filtered(rx, None));
        for n in 0..10 {
            tx.send(ev("a", n)).expect("send");
        }
        let first = s.next().await.expect("event");
        assert_eq!(first.kind, "LAGGED");
        assert_eq!(first.data["missed"], 6);
        // Then the oldest still held, in order.
        for n in 6..10 {
            assert_eq!(s.next().await.expect("event").data["n"], n);
        }
    }
}
