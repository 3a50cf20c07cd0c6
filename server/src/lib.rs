//! LwM2M device-management server.
//!
//! The protocol layers are written without I/O (sans-IO, as `quinn-proto`
//! writes QUIC): each takes datagrams or parsed requests and the current
//! time and returns what to send, timers and events, so that loss,
//! retransmission and expiry are tested with a simulated clock. A thin
//! tokio driver (coming) owns the sockets and the clock.
//!
//! - [`coap`]: the CoAP message layer (RFC 7252, 7641, 7959).
//! - [`registry`]: the registration interface, lifetimes and queue mode.
//! - [`dm`]: device-management operations as CoAP requests, and the
//!   device's answers as typed results; content-format choice per device.
//! - [`dm`]: device-management operations as CoAP requests and typed
//!   responses.
//! - [`store`]: persistence of registrations, observations and queued
//!   requests behind a narrow trait, on `redb`.

pub mod coap;
pub mod dm;
pub mod registry;
pub mod store;
