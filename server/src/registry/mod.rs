//! The registration interface (Register, Update, De-register on `/rd`)
//! and the registry behind it: lifetimes, replacement of an endpoint's
//! earlier registration, queue-mode awake windows and the requests that
//! wait for a sleeping device.
//!
//! Sans-IO: [`parse_request`] takes the CoAP request's parts as plain
//! values, [`Registry`] takes parsed requests and `now`, and both return
//! outcomes or a [`RegistrationError`] carrying the CoAP code and the
//! diagnostic text to answer with. The driver owns sockets and timers:
//! it arms one at [`Registry::next_expiry`] and calls
//! [`Registry::expire`], and after every Register or Update of a
//! queue-mode device sends what [`Registry::take_ready`] releases.

mod binding;
mod error;
mod queue;
mod request;
mod table;

pub use binding::Binding;
pub use error::echo;
pub use error::RegistrationError;
pub use queue::Ready;
pub use request::{
    parse_request, Method, RdRequest, RegisterRequest, UpdateRequest, DEFAULT_LIFETIME_S,
    LINK_FORMAT, MAX_ENDPOINT_LEN, MAX_PAYLOAD_LEN, MAX_QUERY_OPTIONS, MAX_VERSION,
};
pub use table::{
    Changes, EnqueueError, IdSource, OsIds, RdOutcome, Registered, Registration,
    RegistrationExtras, Registry, RegistryConfig, Removed, Transport, Updated, ID_BYTES, ID_LEN,
};

#[cfg(test)]
use table::encode_id;
#[cfg(test)]
mod tests;
