//! Transmission parameters (RFC 7252 §4.8) and the caps on every table a peer can grow.

use std::time::Duration;

/// Everything an operator may tune; the defaults are the RFC 7252 values.
///
/// The caps exist because every table here is keyed by something a peer sends: without
/// them one misbehaving device (or a spoofer) could grow memory without bound.
#[derive(Debug, Clone)]
pub struct Config {
    /// Initial retransmission timeout of a confirmable message (ACK_TIMEOUT).
    pub ack_timeout: Duration,
    /// The first timeout is drawn from `[ack_timeout, ack_timeout * ack_random_factor]`
    /// so that many devices woken at once do not retransmit in lock-step.
    pub ack_random_factor: f64,
    /// Retransmissions after the first transmission before the exchange fails.
    pub max_retransmit: u32,
    /// Exchanges in flight per peer; further requests wait in a per-peer queue.
    pub nstart: usize,
    /// How long a confirmable message id is remembered for duplicate detection.
    pub exchange_lifetime: Duration,
    /// How long a non-confirmable message id is remembered for duplicate detection.
    pub non_lifetime: Duration,
    /// How long to wait for a separate response after an empty ACK, or for any response
    /// to a non-confirmable request. Not an RFC constant; MAX_TRANSMIT_WAIT by default.
    pub response_timeout: Duration,
    /// How long an incoming confirmable request waits for the application's answer before
    /// we send an empty ACK and fall back to a separate response. Must stay well below
    /// `ack_timeout` or the peer retransmits needlessly.
    pub piggyback_delay: Duration,
    /// Block size exponent we prefer (size = 2^(szx+4)); 6 = 1024 bytes.
    pub preferred_szx: u8,
    /// Largest body reassembled from blocks, in either direction.
    pub max_body: usize,
    /// Outgoing requests known at once: queued, in flight and established observations.
    pub max_pending: usize,
    /// Remembered (peer, message id) pairs. Entries older than MAX_TRANSMIT_SPAN make room
    /// for new ones when it is reached, so it bounds the messages of the last 45 s: the
    /// default takes a fleet re-registering at 10,000 a second (about 100 bytes each).
    pub max_dedup: usize,
    /// Incoming requests handed to the application and not answered yet.
    pub max_incoming: usize,
    /// Incoming Block1 uploads being reassembled.
    pub max_block1_assemblies: usize,
    /// A notification older by sequence number is still accepted when this much time has
    /// passed since the last one (RFC 7641 §3.4: 128 s).
    pub observe_freshness: Duration,
    /// Whether a non-confirmable notification for an unknown token is answered with RST.
    /// RFC 7641 §3.6 allows it; one modem stopped sending Updates after such a RST
    /// (module-quirks 8), so operators can switch it off.
    pub reset_unmatched_non: bool,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            ack_timeout: Duration::from_secs(2),
            ack_random_factor: 1.5,
            max_retransmit: 4,
            nstart: 1,
            exchange_lifetime: Duration::from_secs(247),
            non_lifetime: Duration::from_secs(145),
            response_timeout: Duration::from_secs(93),
            piggyback_delay: Duration::from_millis(500),
            preferred_szx: 6,
            max_body: 1 << 20,
            max_pending: 100_000,
            max_dedup: 500_000,
            max_incoming: 10_000,
            max_block1_assemblies: 1_000,
            observe_freshness: Duration::from_secs(128),
            reset_unmatched_non: true,
        }
    }
}
