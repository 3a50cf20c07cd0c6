//! What the rest of the program may ask of the live state: registered devices with their
//! reachability, established observations, and requests waiting for sleeping devices.
//! Each answer is a snapshot the driver takes between two datagrams.

use tokio::sync::oneshot;

use super::{Command, RequestLabel, ServerHandle};
use crate::registry::Registration;
use crate::store::{StoreError, StoredSecurity};

/// Credential calls, run on the driver's thread, which owns the store and the cache the
/// handshakes read.
pub(crate) enum SecurityCommand {
    Put {
        security: StoredSecurity,
        reply: oneshot::Sender<Result<Option<StoredSecurity>, StoreError>>,
    },
    PutAll {
        all: Vec<StoredSecurity>,
        reply: oneshot::Sender<Result<(), StoreError>>,
    },
    Get {
        endpoint: String,
        reply: oneshot::Sender<Result<Option<StoredSecurity>, StoreError>>,
    },
    Delete {
        endpoint: String,
        reply: oneshot::Sender<Result<Option<StoredSecurity>, StoreError>>,
    },
    List {
        reply: oneshot::Sender<Result<Vec<StoredSecurity>, StoreError>>,
    },
}

/// The driver is gone.
fn stopped() -> StoreError {
    StoreError::Io(std::io::Error::other("the server has stopped"))
}

/// A registered device and its live state.
#[derive(Debug, Clone, PartialEq)]
pub struct ClientInfo {
    pub registration: Registration,
    /// Whether a request sent now reaches it: without queue mode always, with it inside
    /// its awake window; over DTLS only while its session is up.
    pub awake: bool,
    pub registered_at_unix_ms: u64,
    /// Its last message of any kind.
    pub last_seen_unix_ms: u64,
    /// When the server drops the registration unless an Update comes first (lifetime plus
    /// the grace period); `None` for lifetime 0.
    pub expires_at_unix_ms: Option<u64>,
    pub queued_requests: usize,
}

/// One page of the inventory, sorted by endpoint name.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct ClientPage {
    /// Devices matching the filter, in all pages.
    pub total: usize,
    pub clients: Vec<ClientInfo>,
}

/// An established observation.
#[derive(Debug, Clone, PartialEq)]
pub struct ObservationInfo {
    pub token: Vec<u8>,
    pub paths: Vec<lwm2m_objects::Path>,
    pub composite: bool,
}

/// A request waiting for a sleeping device.
#[derive(Debug, Clone, PartialEq)]
pub struct QueuedInfo {
    pub endpoint: String,
    pub label: RequestLabel,
    pub created_at_unix_ms: u64,
}

impl ServerHandle {
    /// Asks the driver; `None` once it has stopped.
    async fn ask<T>(&self, make: impl FnOnce(oneshot::Sender<T>) -> Command) -> Option<T> {
        let (reply, rx) = oneshot::channel();
        self.commands.send(make(reply)).await.ok()?;
        rx.await.ok()
    }

    /// Registered devices whose endpoint name starts with `prefix` (all for `None`),
    /// sorted by name, `limit` of them from `offset`.
    pub async fn clients(&self, prefix: Option<&str>, offset: usize, limit: usize) -> ClientPage {
        self.clients_after(prefix, None, offset, limit).await
    }

    /// A page of registered devices after the endpoint `after` (the previous page's last):
    /// the cheap way through a large fleet, where an offset costs its length.
    pub async fn clients_after(
        &self,
        prefix: Option<&str>,
        after: Option<&str>,
        offset: usize,
        limit: usize,
    ) -> ClientPage {
        let prefix = prefix.unwrap_or_default().to_string();
        let after = after.map(str::to_string);
        self.ask(|reply| Command::Clients {
            prefix,
            after,
            offset,
            limit,
            reply,
        })
        .await
        .unwrap_or_default()
    }

    /// One registered device.
    pub async fn client(&self, endpoint: &str) -> Option<ClientInfo> {
        let endpoint = endpoint.to_string();
        self.ask(|reply| Command::Client { endpoint, reply })
            .await
            .flatten()
    }

    /// The observations established on a device's current registration.
    pub async fn observations(&self, endpoint: &str) -> Vec<ObservationInfo> {
        let endpoint = endpoint.to_string();
        self.ask(|reply| Command::Observations { endpoint, reply })
            .await
            .unwrap_or_default()
    }

    /// Ends an observation passively: it is forgotten here and in the store, and the
    /// device's next notification on it is answered with RST (RFC 7641 §3.6), which ends
    /// it there. False when no observation has this token.
    pub async fn forget_observation(&self, token: &[u8]) -> bool {
        let token = token.to_vec();
        self.ask(|reply| Command::ForgetObservation { token, reply })
            .await
            .unwrap_or(false)
    }

    /// Every request waiting for a sleeping device, including those restored after a
    /// restart.
    pub async fn queued_requests(&self) -> Vec<QueuedInfo> {
        self.ask(|reply| Command::QueuedRequests { reply })
            .await
            .unwrap_or_default()
    }

    /// Sets an endpoint's DTLS credentials (persisted, then in force for the next
    /// handshake); answers what it had.
    pub async fn put_security(
        &self,
        security: StoredSecurity,
    ) -> Result<Option<StoredSecurity>, StoreError> {
        self.ask(|reply| Command::Security(SecurityCommand::Put { security, reply }))
            .await
            .unwrap_or_else(|| Err(stopped()))
    }

    /// Sets many endpoints' credentials in one transaction: all, or none.
    pub async fn put_securities(&self, all: Vec<StoredSecurity>) -> Result<(), StoreError> {
        self.ask(|reply| Command::Security(SecurityCommand::PutAll { all, reply }))
            .await
            .unwrap_or_else(|| Err(stopped()))
    }

    pub async fn security(&self, endpoint: &str) -> Result<Option<StoredSecurity>, StoreError> {
        let endpoint = endpoint.to_string();
        self.ask(|reply| Command::Security(SecurityCommand::Get { endpoint, reply }))
            .await
            .unwrap_or_else(|| Err(stopped()))
    }

    pub async fn delete_security(
        &self,
        endpoint: &str,
    ) -> Result<Option<StoredSecurity>, StoreError> {
        let endpoint = endpoint.to_string();
        self.ask(|reply| Command::Security(SecurityCommand::Delete { endpoint, reply }))
            .await
            .unwrap_or_else(|| Err(stopped()))
    }

    pub async fn list_security(&self) -> Result<Vec<StoredSecurity>, StoreError> {
        self.ask(|reply| Command::Security(SecurityCommand::List { reply }))
            .await
            .unwrap_or_else(|| Err(stopped()))
    }
}
