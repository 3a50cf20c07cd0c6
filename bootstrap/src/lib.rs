//! LwM2M bootstrap server, without I/O: what each device is to be given, the dialogue
//! that gives it, and where both are kept. The `lwm2m-server` crate runs it over CoAP
//! and DTLS, inside its own binary (`--bootstrap`) or as `lwm2m-bootstrap`.
//!
//! - [`config`]: the operator's per-device configuration (server accounts, deletes,
//!   credentials, generated keys), checked.
//! - [`request`]: Bootstrap-Request (`POST /bs?ep=`) read from CoAP; Bootstrap-Pack refused.
//! - [`session`]: one device's dialogue: Read, Delete, Discover, Write, Finish.
//! - [`store`]: configurations and the outcome of each device's last session, on redb.

pub mod config;
pub mod request;
pub mod session;
pub mod store;

pub use config::{BootstrapConfig, ConfigError, ConfigInput, Provision, Psk};
pub use request::{BootstrapRequest, Refusal};
pub use session::{Next, Outgoing, Report, Session};
pub use store::{BootstrapStatus, BootstrapStore, SessionState, StoreError};
