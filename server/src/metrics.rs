//! The server's Prometheus metrics, with the official client (`prometheus-client`).
//!
//! Every metric is an atomic: the driver thread updates them as things happen and the
//! HTTP side encodes them on a scrape, with no lock and no call into the driver. Rates
//! (registrations per second, notifications per second) are the `rate()` of counters, as
//! Prometheus expects them; the server does not average anything itself.
//!
//! Request counts and latencies are labelled by LwM2M operation (`Read`, `Write`, ...,
//! `CoAP` for raw requests) and by outcome: the device's CoAP code (`2.05`, `4.04`) or why
//! there was none (`timeout`, `reset`, `expired`, `deregistered`, `queue_full`, `error`).
//! Latency counts from the moment the request left the server, not from when it was
//! queued for a sleeping device, so the histogram measures the network and the device.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct OutcomeLabels {
    pub operation: String,
    pub code: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct OperationLabels {
    pub operation: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct HandshakeLabels {
    /// `true` for the abbreviated handshake of a resumed session.
    pub resumed: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ReasonLabels {
    /// `deregister` (the device said so) or `expired` (its lifetime ran out).
    pub reason: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct BootstrapLabels {
    /// `finished` (the device acknowledged Bootstrap-Finish) or `failed`.
    pub outcome: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct FirmwareDownloadLabels {
    /// `block` (a CoAP block served), `http` (an HTTP download or range), or why one was
    /// refused: `unknown` (or revoked), `expired`, `foreign`, `past_end`.
    pub outcome: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct FirmwarePhaseLabels {
    /// The phase an update entered: `downloading`, `updating`, `verifying`,
    /// `succeeded`, `failed`, `cancelled`.
    pub phase: &'static str,
}

type HistogramFamily = Family<OperationLabels, Histogram, fn() -> Histogram>;

fn latency_histogram() -> Histogram {
    // 10 ms to about 80 s: loopback answers, LTE-M round trips and NB-IoT devices in
    // poor coverage all land in a bucket of their own.
    Histogram::new(exponential_buckets(0.01, 2.0, 14))
}

/// All metrics of one server.
pub struct Metrics {
    registry: Registry,
    pub registered_devices: Gauge,
    pub awake_devices: Gauge,
    pub registrations: Counter,
    pub updates: Counter,
    pub deregistrations: Family<ReasonLabels, Counter>,
    pub requests: Family<OutcomeLabels, Counter>,
    pub request_duration: HistogramFamily,
    pub retransmissions: Counter,
    pub observations: Gauge,
    pub notifications: Counter,
    pub sends: Counter,
    pub queued_requests: Gauge,
    pub dtls_sessions: Gauge,
    pub dtls_handshakes: Family<HandshakeLabels, Counter>,
    pub bootstrap_sessions: Family<BootstrapLabels, Counter>,
    pub firmware_downloads: Family<FirmwareDownloadLabels, Counter>,
    pub firmware_bytes_served: Counter,
    pub firmware_updates: Family<FirmwarePhaseLabels, Counter>,
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Metrics").finish_non_exhaustive()
    }
}

impl Default for Metrics {
    fn default() -> Metrics {
        Metrics::new()
    }
}

impl Metrics {
    pub fn new() -> Metrics {
        let mut registry = Registry::default();
        let registered_devices = Gauge::default();
        let awake_devices = Gauge::default();
        let registrations = Counter::default();
        let updates = Counter::default();
        let deregistrations = Family::<ReasonLabels, Counter>::default();
        let requests = Family::<OutcomeLabels, Counter>::default();
        let request_duration: HistogramFamily =
            Family::new_with_constructor(latency_histogram as fn() -> Histogram);
        let retransmissions = Counter::default();
        let observations = Gauge::default();
        let notifications = Counter::default();
        let sends = Counter::default();
        let queued_requests = Gauge::default();
        let dtls_sessions = Gauge::default();
        let dtls_handshakes = Family::<HandshakeLabels, Counter>::default();
        let bootstrap_sessions = Family::<BootstrapLabels, Counter>::default();
        let firmware_downloads = Family::<FirmwareDownloadLabels, Counter>::default();
        let firmware_bytes_served = Counter::default();
        let firmware_updates = Family::<FirmwarePhaseLabels, Counter>::default();
        registry.register(
            "lwm2m_firmware_downloads",
            "Firmware blocks and HTTP downloads served, and refused requests by reason",
            firmware_downloads.clone(),
        );
        registry.register(
            "lwm2m_firmware_bytes_served",
            "Package bytes sent to devices",
            firmware_bytes_served.clone(),
        );
        registry.register(
            "lwm2m_firmware_updates",
            "Firmware update transitions, by the phase entered",
            firmware_updates.clone(),
        );
        registry.register(
            "lwm2m_bootstrap_sessions",
            "Bootstrap dialogues ended, by outcome",
            bootstrap_sessions.clone(),
        );
        registry.register(
            "lwm2m_dtls_sessions",
            "DTLS sessions held now (established or handshaking)",
            dtls_sessions.clone(),
        );
        registry.register(
            "lwm2m_dtls_handshakes",
            "DTLS handshakes completed, full or resumed",
            dtls_handshakes.clone(),
        );
        registry.register(
            "lwm2m_registered_devices",
            "Devices registered now",
            registered_devices.clone(),
        );
        registry.register(
            "lwm2m_awake_devices",
            "Registered devices reachable now (not in queue mode, or inside their awake window)",
            awake_devices.clone(),
        );
        registry.register(
            "lwm2m_registrations",
            "Register operations accepted",
            registrations.clone(),
        );
        registry.register(
            "lwm2m_updates",
            "Registration Update operations accepted",
            updates.clone(),
        );
        registry.register(
            "lwm2m_deregistrations",
            "Registrations ended, by De-register or by expiry",
            deregistrations.clone(),
        );
        registry.register(
            "lwm2m_requests",
            "Requests to devices by LwM2M operation and outcome",
            requests.clone(),
        );
        registry.register(
            "lwm2m_request_duration_seconds",
            "Time from sending a request to a device to its answer, by LwM2M operation",
            request_duration.clone(),
        );
        registry.register(
            "lwm2m_coap_retransmissions",
            "Confirmable messages sent again for want of an ACK",
            retransmissions.clone(),
        );
        registry.register(
            "lwm2m_observations",
            "Observations established now",
            observations.clone(),
        );
        registry.register(
            "lwm2m_notifications",
            "Notifications received",
            notifications.clone(),
        );
        registry.register("lwm2m_sends", "Send operations received", sends.clone());
        registry.register(
            "lwm2m_queued_requests",
            "Requests waiting for a sleeping device",
            queued_requests.clone(),
        );
        Metrics {
            registry,
            registered_devices,
            awake_devices,
            registrations,
            updates,
            deregistrations,
            requests,
            request_duration,
            retransmissions,
            observations,
            notifications,
            sends,
            queued_requests,
            dtls_sessions,
            dtls_handshakes,
            bootstrap_sessions,
            firmware_downloads,
            firmware_bytes_served,
            firmware_updates,
        }
    }

    /// Counts one finished request and, when it got an answer, its latency.
    pub fn request_done(&self, operation: &str, code: &str, latency: Option<f64>) {
        self.requests
            .get_or_create(&OutcomeLabels {
                operation: operation.to_string(),
                code: code.to_string(),
            })
            .inc();
        if let Some(seconds) = latency {
            self.request_duration
                .get_or_create(&OperationLabels {
                    operation: operation.to_string(),
                })
                .observe(seconds);
        }
    }

    /// The OpenMetrics text exposition.
    pub fn encode(&self) -> String {
        let mut out = String::new();
        if let Err(e) = prometheus_client::encoding::text::encode(&mut out, &self.registry) {
            tracing::warn!(error = %e, "metrics not encoded");
        }
        out
    }
}

/// A gauge's value from a count.
pub fn gauge_value(n: usize) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_exposition_names_every_metric() {
        let m = Metrics::new();
        m.registered_devices.set(3);
        m.registrations.inc();
        m.deregistrations
            .get_or_create(&ReasonLabels { reason: "expired" })
            .inc();
        m.request_done("Read", "2.05", Some(0.02));
        m.request_done("Write", "timeout", None);
        let text = m.encode();
        for needle in [
            "lwm2m_registered_devices 3",
            "lwm2m_registrations_total 1",
            "lwm2m_deregistrations_total{reason=\"expired\"} 1",
            "lwm2m_requests_total{operation=\"Read\",code=\"2.05\"} 1",
            "lwm2m_requests_total{operation=\"Write\",code=\"timeout\"} 1",
            "lwm2m_request_duration_seconds_bucket{le=\"0.02\",operation=\"Read\"} 1",
            "lwm2m_request_duration_seconds_count{operation=\"Read\"} 1",
            "lwm2m_awake_devices 0",
            "lwm2m_queued_requests 0",
            "# EOF",
        ] {
            assert!(text.contains(needle), "{needle} missing from\n{text}");
        }
        // A request that got no answer has no latency.
        assert!(!text.contains("lwm2m_request_duration_seconds_count{operation=\"Write\"}"));
    }
}
