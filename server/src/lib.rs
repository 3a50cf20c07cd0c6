//! LwM2M device-management server.
//!
//! The protocol layers are written without I/O (sans-IO, as `quinn-proto`
//! writes QUIC): each takes datagrams or parsed requests and the current
//! time and returns what to send, timers and events, so that loss,
//! retransmission and expiry are tested with a simulated clock. A thin
//! tokio driver ([`runtime`]) owns the socket and the clock.
//!
//! - [`coap`]: the CoAP message layer (RFC 7252, 7641, 7959).
//! - [`registry`]: the registration interface, lifetimes and queue mode.
//! - [`dm`]: device-management operations as CoAP requests, and the
//!   device's answers as typed results; content-format choice per device.
//! - [`runtime`]: the tokio driver and [`runtime::ServerHandle`], the API to
//!   a running server; [`config`] is what it is started with.
//! - [`api`]: the operator's HTTP API (REST, events, OpenAPI, metrics, health).
//! - [`store`]: persistence of registrations, observations and queued
//!   requests behind a narrow trait, on `redb`.

pub mod api;
pub mod coap;
pub mod config;
pub mod dm;
pub mod dtls;
pub mod hex;
pub mod metrics;
pub mod registry;
pub mod runtime;
pub mod security;
pub mod store;
