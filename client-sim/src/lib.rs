//! LwM2M client library: one simulated device per [`Client`], speaking real
//! CoAP over UDP through the sans-IO endpoint of `lwm2m-server` (which is
//! role-neutral), with an object tree checked against the OMA object model.
//!
//! - [`config`]: what a device is configured with.
//! - [`store`]: the object tree; every access is checked against the model
//!   (operations R/W/E, types).
//! - [`device`]: initial values of objects 0, 1, 3, 4, 6 and drifting
//!   sensors.
//! - [`firmware`]: Firmware Update (object 5): pull over CoAP block-wise,
//!   CoAPS or HTTP with resume, push by Block1, the package check (the
//!   simulated package format is in [`firmware::package`]), the update and
//!   the reboot after it, and failures faked on purpose.
//! - [`observe`]: notification attributes and observation rules.
//! - [`ops`]: the DM and information-reporting operations, sans-IO.
//! - [`bootstrap`](mod@bootstrap): client-initiated bootstrap: the Bootstrap-Request, the
//!   bootstrap server's Discover/Read/Write/Delete on Security and Server,
//!   and the [`Account`] a Bootstrap-Finish leaves.
//! - [`bench`]: benchmarks run by hand (`lwm2m-client-sim bench ...`).
//! - [`fleet`]: many devices in one process, each on its own loopback address.
//! - [`park`]: what a sleeping fleet device keeps instead of a whole client.
//! - [`profile`]: behaviour profiles (TOML): the mix a fleet's devices draw
//!   their values from, deterministically from a seed.
//! - [`network`]: link conditions a device applies to its own datagrams:
//!   loss, delay, and cells whose bandwidth their devices share.
//! - [`client`]: the tokio driver (register, update, de-register, queue
//!   mode, Send) and the [`ClientHandle`] tests drive it through.
//!
//! ```no_run
//! # async fn demo() -> Result<(), lwm2m_client_sim::ClientError> {
//! use lwm2m_client_sim::{Client, Config};
//! let server = "127.0.0.1:5683".parse().unwrap();
//! let handle = Client::start(Config::new(server, "dev-1")).await?;
//! handle.wait_registered(std::time::Duration::from_secs(5)).await?;
//! handle.shutdown().await?;
//! # Ok(()) }
//! ```

pub mod bench;
pub mod bootstrap;
pub mod client;
pub mod config;
pub mod device;
pub mod firmware;
pub mod fleet;
pub mod network;
pub mod observe;
pub mod ops;
pub mod park;
pub mod profile;
mod rng;
pub mod store;
mod transport;

pub use bootstrap::{bootstrap, Account, BootstrapConfig, BootstrapError};
pub use client::{Client, ClientError, ClientEvent, ClientHandle, Status};
pub use config::{CertificateCredentials, Config, Psk, ServerUri, UriError};
pub use device::DeviceProfile;
pub use firmware::{DeliveryMethod, FailureMode, FirmwareConfig, FwState, Protocol, UpdateResult};
pub use ops::Operation;
