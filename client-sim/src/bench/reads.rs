//! Reads of `/3/0/9` through the server's library API ([`ServerHandle::perform`]) at
//! answering devices, against the same devices read by a bare requester: a socket per
//! read sent straight to the device, without a server between. The server runs in this
//! process (its driver on a thread of its own), as a program embedding the library would.

use std::sync::Arc;
use std::time::Duration;

use lwm2m_objects::Path as LwPath;
use lwm2m_server::config::ServerConfig;
use lwm2m_server::dm::Operation;
use lwm2m_server::runtime::{Server, ServerHandle};

use super::loadgen::{
    self, battery_read, exchange, Answered, AnsweringDevice, Lost, Outcome, Pace, Timing,
};
use super::{BenchError, ProgressFn};

struct Setup {
    server: ServerHandle,
    devices: Arc<Vec<AnsweringDevice>>,
    dir: std::path::PathBuf,
}

impl Drop for Setup {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

impl Setup {
    async fn start(devices: usize) -> Result<Setup, BenchError> {
        let dir = super::server::scratch_dir("reads");
        let mut config = ServerConfig::new(
            std::net::SocketAddr::from(([127, 0, 0, 1], 0)),
            dir.join("data"),
        );
        config.registry.max_registrations = devices + 1000;
        let server = tokio::task::block_in_place(|| Server::start(config))
            .map_err(|e| BenchError::Server(e.to_string()))?;
        let coap = server.coap_addr();
        let mut list = Vec::with_capacity(devices);
        for i in 0..devices {
            let d = AnsweringDevice::start(
                i,
                super::endpoint("reader-", i),
                Some(coap),
                &Timing::default(),
            )
            .await
            .map_err(|e| BenchError::Devices(format!("device {i}: {e}")))?;
            list.push(d);
        }
        Ok(Setup {
            server,
            devices: Arc::new(list),
            dir,
        })
    }

    /// `count` reads through the server, `window` in flight, paced by `pace`.
    async fn through_server(
        &self,
        count: usize,
        window: usize,
        pace: Pace,
        progress: ProgressFn<'_>,
    ) -> Outcome {
        let (server, devices) = (self.server.clone(), self.devices.clone());
        loadgen::run(
            count,
            window,
            pace,
            move |i| {
                let server = server.clone();
                let ep = devices
                    .get(i % devices.len().max(1))
                    .map(|d| d.endpoint.clone());
                async move {
                    let ep = ep.ok_or(Lost::Timeout)?;
                    let op = Operation::Read {
                        path: LwPath::resource(3, 0, 9),
                        format: None,
                    };
                    server
                        .perform(&ep, &op, Duration::from_secs(10))
                        .await
                        .map_err(|e| Lost::Io(e.to_string()))?;
                    Ok(Answered {
                        response: coap_lite::Packet::new(),
                        retransmissions: 0,
                    })
                }
            },
            |done, t| progress("read via server", done, t),
        )
        .await
    }

    /// The same reads from a bare requester straight to the devices.
    async fn bare(
        &self,
        count: usize,
        window: usize,
        pace: Pace,
        progress: ProgressFn<'_>,
    ) -> Outcome {
        let devices = self.devices.clone();
        let first_requester = devices.len();
        loadgen::run(
            count,
            window,
            pace,
            move |i| {
                let to = devices.get(i % devices.len().max(1)).map(|d| d.address);
                async move {
                    let to = to.ok_or(Lost::Timeout)?;
                    // Requesters take the addresses after the devices', one per window slot.
                    exchange(
                        first_requester + i % window.max(1),
                        to,
                        battery_read(),
                        &Timing::default(),
                    )
                    .await
                }
            },
            |done, t| progress("read bare", done, t),
        )
        .await
    }
}

/// What `rate` measured for reads.
#[derive(Debug, Clone)]
pub struct ReadRate {
    pub devices: usize,
    pub bare: Outcome,
    pub server: Outcome,
}

/// `count` reads at `devices` devices, `window` in flight, through the server and bare.
pub async fn rate_reads(
    count: usize,
    devices: usize,
    window: usize,
    progress: ProgressFn<'_>,
) -> Result<ReadRate, BenchError> {
    let setup = Setup::start(devices).await?;
    let bare = setup.bare(count, window, Pace::Closed, progress).await;
    let server = setup
        .through_server(count, window, Pace::Closed, progress)
        .await;
    setup.server.shutdown().await;
    Ok(ReadRate {
        devices,
        bare,
        server,
    })
}

/// What `latency` measured.
#[derive(Debug, Clone)]
pub struct LatencyReport {
    /// Reads a second through the server, closed loop: the maximum.
    pub max_rate: f64,
    /// Half of it, the rate both open-loop runs were paced at.
    pub rate: f64,
    pub bare: Outcome,
    pub server: Outcome,
}

/// The maximum read rate through the server (closed loop, `count` reads), then `count`
/// reads through it and `count` bare, each paced at half that rate.
pub async fn latency(
    count: usize,
    devices: usize,
    window: usize,
    progress: ProgressFn<'_>,
) -> Result<LatencyReport, BenchError> {
    let setup = Setup::start(devices).await?;
    let max = setup
        .through_server(count, window, Pace::Closed, progress)
        .await;
    let rate = max.rate() / 2.0;
    // Open loop: enough in flight that pacing, not the window, sets the rate.
    let open_window = window.max(64) * 4;
    let server = setup
        .through_server(count, open_window, Pace::Open { rate }, progress)
        .await;
    let bare = setup
        .bare(count, open_window, Pace::Open { rate }, progress)
        .await;
    setup.server.shutdown().await;
    Ok(LatencyReport {
        max_rate: max.rate(),
        rate,
        bare,
        server,
    })
}
