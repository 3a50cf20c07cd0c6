//! Typed device management, without I/O: each [`Operation`] builds the
//! CoAP request the LwM2M specification maps it to
//! ([`Operation::to_request`]) and reads the device's answer into a
//! [`DmResponse`] or a [`DmError`] ([`Operation::parse_response`]); the
//! device's Send is read by [`parse_send`]. Sending, retrying, queueing
//! for sleeping devices and matching notifications are the caller's,
//! through the CoAP endpoint and the registry.
//!
//! - [`context`]: what a device registered that addressing and format
//!   choice need (version, `ct` list, alternate root path).
//! - [`format_choice`]: which content format a request carries or asks
//!   for, per device, with the rules cited.
//! - [`operation`]: the operations and their request mapping.
//! - [`response`]: success and error responses.
//! - [`execute`]: Execute argument syntax.
//! - [`send`]: the device's Send.
//! - [`error`]: typed errors, device error codes and diagnostics.

pub mod context;
pub mod error;
pub mod execute;
pub mod format_choice;
pub mod operation;
pub mod response;
pub mod send;

pub use context::DeviceContext;
pub use error::{DeviceError, DmError, ErrorCode};
pub use execute::{ExecuteArg, ExecuteArgs, ExecuteArgsError};
pub use format_choice::Shape;
pub use operation::{Operation, WriteMode, MAX_COMPOSITE_PATHS};
pub use response::DmResponse;
pub use send::{parse_send, SendData, SendError};

#[cfg(test)]
mod tests;
