//! CoAP message layer (RFC 7252, RFC 7641, RFC 7959), written sans-IO like quinn-proto:
//! an [`Endpoint`] takes datagrams and the current time and returns datagrams to send,
//! events and the next timer. A driver owns the socket and the clock.
//!
//! `coap-lite` only parses and builds messages; reliability, duplicate detection, token
//! matching, NSTART queueing, block-wise transfer and observe live here.

pub mod block;
mod config;
mod dedup;
mod endpoint;
pub mod observe;
mod rng;

pub use config::Config;
pub use endpoint::{
    CancelReason, Endpoint, Event, FailReason, IncomingId, RequestId, RespondError, SendError,
    Sizes, Transmit,
};
pub use rng::os_seed;
