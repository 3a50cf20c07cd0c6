//! LwM2M device-management server.
//!
//! The protocol layers are written without I/O (sans-IO, as `quinn-proto`
//! writes QUIC): each takes datagrams or parsed requests and the current
//! time and returns what to send, timers and events, so that loss,
//! retransmission and expiry are tested with a simulated clock. A thin
//! tokio driver ([`runtime`]) owns the sockets and the clock.
//!
//! - [`coap`]: the CoAP message layer (RFC 7252, 7641, 7959).
//! - [`registry`]: the registration interface, lifetimes and queue mode.
//! - [`dm`]: device-management operations as CoAP requests, and the
//!   device's answers as typed results; content-format choice per device.
//! - [`runtime`]: the tokio driver and [`runtime::ServerHandle`], the API to
//!   a running server; [`config`] is what it is started with.
//! - [`dtls`]: DTLS 1.2 on the system OpenSSL, server and client sides, sans-IO
//!   like the CoAP layer; [`security`]: devices' credentials and which
//!   endpoint an authenticated peer may speak for.
//! - [`api`]: the operator's HTTP API (REST, events, OpenAPI, health);
//!   [`metrics`]: what `/metrics` exposes.
//! - [`firmware`]: packages, their download endpoints and the update of object 5.
//! - [`store`]: persistence of registrations, observations, queued
//!   requests and credentials behind a narrow trait, on `redb`.
//! - [`bootstrap`]: the bootstrap server (`lwm2m-bootstrap`'s dialogues) over its own
//!   CoAP and DTLS sockets.
//! - [`binary`]: what the two binaries do alike (logging, token, signals, banner).
//! - [`hex`]: hex text of bytes (from `lwm2m-objects`).

pub mod api;
pub mod binary;
pub mod bootstrap;
pub mod coap;
pub mod config;
pub mod dm;
pub mod dtls;
pub mod firmware;
pub mod fleet;
pub use lwm2m_objects::hex;
pub mod metrics;
pub mod registry;
pub mod runtime;
pub mod security;
pub mod store;
