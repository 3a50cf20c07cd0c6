//! Firmware over the air for one device: the package store, the download endpoints'
//! tokens and blocks, and the update of object 5 driven to a verified end.
//!
//! - [`packages`]: package files, content-addressed, uploaded by streaming.
//! - [`store`]: package metadata, updates and tokens in `firmware.redb`.
//! - [`download`]: tokens and the blocks of `/fw/{token}` (CoAP here, HTTP in the API).
//! - [`update`]: one device's update, step by step, persisted at every step.
//!
//! [`Firmware`] ties the store and the files together; the server's driver thread asks
//! it for blocks, the update tasks and the API for the rest.

pub mod download;
pub mod packages;
pub mod store;
pub mod update;

use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use prometheus_client::metrics::counter::Counter;

use crate::coap::block::BlockOpt;
use crate::metrics::{FirmwareDownloadLabels, Metrics};
use download::{Block, BlockReadError, Refused};
use packages::PackageFiles;
use store::{FirmwareStore, FirmwareStoreError, TokenRecord};

/// What the firmware service is configured with.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FirmwareSettings {
    /// Largest package accepted by upload.
    pub max_package_size: u64,
    /// How long a download token is valid (it is revoked earlier when the update ends).
    pub token_lifetime: Duration,
    /// From the start of an update to Downloaded.
    pub download_timeout: Duration,
    /// From Execute Update to the device's final answer.
    pub update_timeout: Duration,
    /// How long one request may wait for a sleeping device.
    pub request_expiry: Duration,
    /// How often an update in progress reads the device's state when no notification
    /// or wake-up came.
    pub poll_interval: Duration,
    /// Base URLs written into devices (`coap://host:port`), when the address the server
    /// binds is not the one devices reach it at; default: the bound address.
    pub coap_url: Option<String>,
    pub coaps_url: Option<String>,
    pub http_url: Option<String>,
    pub https_url: Option<String>,
    /// Where to serve `/fw/{token}` over HTTPS (with the `[dtls]` certificate), if at all.
    pub https_addr: Option<std::net::SocketAddr>,
}

impl Default for FirmwareSettings {
    fn default() -> FirmwareSettings {
        FirmwareSettings {
            max_package_size: 64 * 1024 * 1024,
            token_lifetime: Duration::from_secs(6 * 3600),
            download_timeout: Duration::from_secs(2 * 3600),
            update_timeout: Duration::from_secs(1800),
            request_expiry: Duration::from_secs(86_400),
            poll_interval: Duration::from_secs(60),
            coap_url: None,
            coaps_url: None,
            http_url: None,
            https_url: None,
            https_addr: None,
        }
    }
}

/// The packages, their metadata and the download tokens of one server.
pub struct Firmware {
    pub store: FirmwareStore,
    pub files: PackageFiles,
    pub settings: FirmwareSettings,
    metrics: Arc<Metrics>,
    /// Tokens in use over CoAP, with their record and open package file: a download is a
    /// request per block, and each would otherwise cost a store lookup and an open.
    /// Bounded; emptied when full and when a device's tokens are revoked.
    downloading: std::sync::Mutex<HashMap<String, (TokenRecord, Arc<std::fs::File>)>>,
    /// Bytes served to each device since its count was last taken: a campaign charges a
    /// device's download to "sent" or, when it failed, to "wasted". Bounded by the
    /// devices with tokens; taken (and removed) when an update ends.
    served_to: std::sync::Mutex<HashMap<String, u64>>,
}

/// Tokens kept in [`Firmware`]'s download cache.
const MAX_DOWNLOADING: usize = 4096;

impl std::fmt::Debug for Firmware {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Firmware").finish_non_exhaustive()
    }
}

impl Firmware {
    pub fn open(
        data_dir: &Path,
        settings: FirmwareSettings,
        metrics: Arc<Metrics>,
    ) -> Result<Firmware, FirmwareStoreError> {
        Ok(Firmware {
            store: FirmwareStore::open(data_dir)?,
            files: PackageFiles::open(data_dir)?,
            settings,
            metrics,
            downloading: Default::default(),
            served_to: Default::default(),
        })
    }

    pub fn metrics(&self) -> &Arc<Metrics> {
        &self.metrics
    }

    fn refused(&self, why: Refused) -> Refused {
        self.downloads(why.label()).inc();
        why
    }

    fn downloads(&self, outcome: &'static str) -> Counter {
        self.metrics
            .firmware_downloads
            .get_or_create(&FirmwareDownloadLabels { outcome })
            .clone()
    }

    /// The token's record if `requester` may use it now. `requester` is the endpoint a
    /// DTLS peer authenticated as; `None` over plain CoAP and HTTP, where the token alone
    /// is the proof.
    pub fn authorize(
        &self,
        token: &str,
        requester: Option<&str>,
        now_unix_ms: u64,
    ) -> Result<TokenRecord, Refused> {
        if !download::is_token(token) {
            return Err(self.refused(Refused::Unknown));
        }
        let record = match self.store.token(&token.to_ascii_lowercase()) {
            Ok(Some(r)) => r,
            Ok(None) => return Err(self.refused(Refused::Unknown)),
            Err(e) => {
                tracing::error!(error = %e, "token lookup failed");
                return Err(self.refused(Refused::Unknown));
            }
        };
        self.check(&record, requester, now_unix_ms)?;
        Ok(record)
    }

    /// Whether `requester` may use a token with this record now.
    fn check(
        &self,
        record: &TokenRecord,
        requester: Option<&str>,
        now_unix_ms: u64,
    ) -> Result<(), Refused> {
        if now_unix_ms >= record.expires_at_unix_ms {
            return Err(self.refused(Refused::Expired));
        }
        if requester.is_some_and(|r| r != record.endpoint) {
            tracing::warn!(requester = ?requester, owner = %record.endpoint, "firmware token of another device");
            return Err(self.refused(Refused::Foreign));
        }
        Ok(())
    }

    /// Revokes every download token of `endpoint` (its update ended).
    pub fn revoke(&self, endpoint: &str) -> Result<usize, FirmwareStoreError> {
        self.downloading
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .retain(|_, (r, _)| r.endpoint != endpoint);
        self.store.revoke_tokens(endpoint)
    }

    /// The record and open file of a token, from the cache or the store.
    fn open_download(
        &self,
        token: &str,
        requester: Option<&str>,
        now_unix_ms: u64,
    ) -> Result<(TokenRecord, Arc<std::fs::File>), Refused> {
        let key = token.to_ascii_lowercase();
        let cached = self
            .downloading
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(&key)
            .cloned();
        if let Some((record, file)) = cached {
            self.check(&record, requester, now_unix_ms)?;
            return Ok((record, file));
        }
        let record = self.authorize(token, requester, now_unix_ms)?;
        let file = match std::fs::File::open(self.files.path(&record.sha256)) {
            Ok(f) => Arc::new(f),
            Err(e) => {
                tracing::error!(error = %e, sha256 = %record.sha256, "package file unreadable");
                return Err(self.refused(Refused::Unknown));
            }
        };
        let mut cache = self.downloading.lock().unwrap_or_else(|e| e.into_inner());
        if cache.len() >= MAX_DOWNLOADING {
            cache.clear();
        }
        cache.insert(key, (record.clone(), file.clone()));
        Ok((record, file))
    }

    /// One block of the package behind `token` (block 0 at the largest size when the
    /// request names none).
    pub fn coap_block(
        &self,
        token: &str,
        requester: Option<&str>,
        requested: Option<BlockOpt>,
        now_unix_ms: u64,
    ) -> Result<(TokenRecord, Block), Refused> {
        let (record, file) = self.open_download(token, requester, now_unix_ms)?;
        let (num, szx) = requested.map_or((0, download::MAX_SZX), |b| (b.num, b.szx));
        match download::read_block(&file, record.size, num, szx) {
            Ok(block) => {
                self.downloads("block").inc();
                self.metrics
                    .firmware_bytes_served
                    .inc_by(block.payload.len() as u64);
                self.count_served(&record.endpoint, block.payload.len() as u64);
                Ok((record, block))
            }
            Err(BlockReadError::PastEnd) => Err(self.refused(Refused::PastEnd)),
            Err(BlockReadError::Io(e)) => {
                tracing::error!(error = %e, sha256 = %record.sha256, "package file unreadable");
                Err(self.refused(Refused::Unknown))
            }
        }
    }

    /// Counts bytes served over HTTP.
    pub fn served_http(&self, endpoint: &str, bytes: u64) {
        self.downloads("http").inc();
        self.metrics.firmware_bytes_served.inc_by(bytes);
        self.count_served(endpoint, bytes);
    }

    fn count_served(&self, endpoint: &str, bytes: u64) {
        let mut served = self.served_to.lock().unwrap_or_else(|e| e.into_inner());
        match served.get_mut(endpoint) {
            Some(n) => *n = n.saturating_add(bytes),
            None => {
                served.insert(endpoint.to_string(), bytes);
            }
        }
    }

    /// The bytes served to `endpoint` since the last call, and forgets them.
    pub fn take_served(&self, endpoint: &str) -> u64 {
        self.served_to
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(endpoint)
            .unwrap_or(0)
    }
}
