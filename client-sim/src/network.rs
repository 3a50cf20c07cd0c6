//! Link conditions between a simulated device and the server, applied by the device
//! itself to every datagram it sends and receives, since loopback delivers everything at
//! once and a fleet on loopback would otherwise never see what a radio network does to
//! it: loss in each direction, a one-way delay, and the shared capacity of a cell.
//!
//! A [`Cell`] is one radio cell's link, shared (`Arc`) by every device camped on it, in
//! each direction a queue in virtual time: a datagram of `len` bytes offered at `now`
//! leaves at `max(now, next_free) + len / bandwidth`, and that becomes the next free
//! moment. Concurrent downloads in one cell therefore share its bandwidth, and a cell
//! that is busy delays everybody's traffic. A datagram that would wait longer than the
//! cell's bound (the devices' CoAP ACK timeout, unless a profile says otherwise) is
//! dropped and takes none of the cell's time, as a base station's bounded buffer drops
//! what it cannot send in time: the sender's retransmission is what comes next, as in
//! the field.
//!
//! Order on the way out: the cell's uplink queue, then the loss draw, then the delay; on
//! the way in, the downlink queue, the loss draw, the delay. The radio's loss happens
//! after the cell has spent its time on the datagram, which is how a lost transmission
//! still costs capacity.
//!
//! A device without [`LinkConditions`] (the default) sends and receives directly, at no
//! cost: none of this runs.

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::net::UdpSocket;

use crate::rng::Rng;

/// Datagrams a device holds back for delivery later; more are dropped, as a full receive
/// buffer drops them.
pub const MAX_HELD_DATAGRAMS: usize = 256;

/// Which way a datagram crosses a cell.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Direction {
    /// From the device towards the server.
    Up,
    /// From the server towards the device.
    Down,
}

/// One direction of a cell: its bandwidth and when it is next free.
#[derive(Debug)]
struct Lane {
    /// `None`: unlimited, nothing queues.
    bytes_per_s: Option<u64>,
    next_free: Mutex<Option<Instant>>,
}

impl Lane {
    fn new(bytes_per_s: Option<u64>) -> Lane {
        Lane {
            bytes_per_s: bytes_per_s.filter(|b| *b > 0),
            next_free: Mutex::new(None),
        }
    }
}

/// A radio cell: its id (/4/0/8 of the devices in it) and the capacity its devices
/// share in each direction.
#[derive(Debug)]
pub struct Cell {
    id: u32,
    up: Lane,
    down: Lane,
    max_delay: Duration,
    passed: AtomicU64,
    dropped: AtomicU64,
}

impl Cell {
    /// A cell with these bandwidths in bytes a second (`None`: unlimited), which drops a
    /// datagram that would be through later than `max_delay` after it was offered.
    pub fn new(
        id: u32,
        downlink_bytes_per_s: Option<u64>,
        uplink_bytes_per_s: Option<u64>,
        max_delay: Duration,
    ) -> Cell {
        Cell {
            id,
            up: Lane::new(uplink_bytes_per_s),
            down: Lane::new(downlink_bytes_per_s),
            max_delay,
            passed: AtomicU64::new(0),
            dropped: AtomicU64::new(0),
        }
    }

    pub fn id(&self) -> u32 {
        self.id
    }

    /// Whether either direction has a bandwidth: an unlimited cell delays nothing.
    pub fn is_limited(&self) -> bool {
        self.up.bytes_per_s.is_some() || self.down.bytes_per_s.is_some()
    }

    /// Datagrams the cell carried and dropped so far, both directions.
    pub fn counts(&self) -> (u64, u64) {
        (
            self.passed.load(Ordering::Relaxed),
            self.dropped.load(Ordering::Relaxed),
        )
    }

    /// When a datagram of `len` bytes offered at `now` is through the cell, or `None`
    /// when that would be more than the cell's bound after `now`: then it is dropped and
    /// the cell's queue is as it was.
    pub fn pass(&self, direction: Direction, now: Instant, len: usize) -> Option<Instant> {
        let lane = match direction {
            Direction::Up => &self.up,
            Direction::Down => &self.down,
        };
        let Some(rate) = lane.bytes_per_s else {
            self.passed.fetch_add(1, Ordering::Relaxed);
            return Some(now);
        };
        let airtime = Duration::from_secs_f64(len as f64 / rate as f64);
        // A poisoned lock only means another device's thread panicked mid-update of an
        // instant; the instant is still one.
        let mut next_free = lane
            .next_free
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let start = next_free.map_or(now, |t| t.max(now));
        let done = start + airtime;
        if done.saturating_duration_since(now) > self.max_delay {
            self.dropped.fetch_add(1, Ordering::Relaxed);
            return None;
        }
        *next_free = Some(done);
        self.passed.fetch_add(1, Ordering::Relaxed);
        Some(done)
    }
}

/// What the network does to one device's datagrams.
#[derive(Debug, Clone)]
pub struct LinkConditions {
    /// Probability that a datagram the device sends is lost (0 to 1).
    pub loss_up: f64,
    /// Probability that a datagram sent to the device is lost (0 to 1).
    pub loss_down: f64,
    /// Each datagram's one-way delay is drawn uniformly from this range.
    pub latency: (Duration, Duration),
    /// The cell the device is in, shared with the other devices in it.
    pub cell: Option<Arc<Cell>>,
    /// Seed of the loss and delay draws.
    pub seed: u64,
}

impl LinkConditions {
    /// Conditions that change nothing: a device with them may skip shaping altogether.
    pub fn is_neutral(&self) -> bool {
        self.loss_up <= 0.0
            && self.loss_down <= 0.0
            && self.latency.1.is_zero()
            && !self.cell.as_ref().is_some_and(|c| c.is_limited())
    }
}

/// A datagram held back until its delivery time; `seq` keeps equal times in order.
#[derive(Debug, PartialEq, Eq, PartialOrd, Ord)]
struct Held {
    at: Instant,
    seq: u64,
    from: SocketAddr,
    bytes: Vec<u8>,
}

/// One socket's view of its [`LinkConditions`]: decides each datagram's fate and holds
/// the received ones until they are due.
#[derive(Debug)]
pub(crate) struct Shaper {
    conditions: LinkConditions,
    rng: Rng,
    held: BinaryHeap<Reverse<Held>>,
    seq: u64,
}

impl Shaper {
    /// A shaper for these conditions; `salt` tells apart the sockets of one device (its
    /// registration socket, each download's), which draw independently.
    pub(crate) fn new(conditions: &LinkConditions, salt: u64) -> Shaper {
        Shaper {
            rng: Rng::derive(conditions.seed, salt),
            conditions: conditions.clone(),
            held: BinaryHeap::new(),
            seq: 0,
        }
    }

    /// A shaper unless the conditions change nothing.
    pub(crate) fn for_conditions(conditions: Option<&LinkConditions>, salt: u64) -> Option<Shaper> {
        conditions
            .filter(|c| !c.is_neutral())
            .map(|c| Shaper::new(c, salt))
    }

    fn delay(&mut self) -> Duration {
        let (lo, hi) = self.conditions.latency;
        if hi <= lo {
            return lo;
        }
        Duration::from_secs_f64(self.rng.between(lo.as_secs_f64(), hi.as_secs_f64()))
    }

    /// When a datagram of `len` bytes the device sends at `now` reaches the wire, or
    /// `None` when it is lost.
    pub(crate) fn outbound(&mut self, now: Instant, len: usize) -> Option<Instant> {
        let through = match &self.conditions.cell {
            Some(c) => c.pass(Direction::Up, now, len)?,
            None => now,
        };
        if self.rng.chance(self.conditions.loss_up) {
            return None;
        }
        Some(through + self.delay())
    }

    /// Takes a datagram that arrived at `now`: it is held until it is due, or lost.
    pub(crate) fn inbound(&mut self, now: Instant, bytes: Vec<u8>, from: SocketAddr) {
        let through = match &self.conditions.cell {
            Some(c) => match c.pass(Direction::Down, now, bytes.len()) {
                Some(t) => t,
                None => return,
            },
            None => now,
        };
        if self.rng.chance(self.conditions.loss_down) || self.held.len() >= MAX_HELD_DATAGRAMS {
            return;
        }
        let at = through + self.delay();
        self.seq = self.seq.wrapping_add(1);
        self.held.push(Reverse(Held {
            at,
            seq: self.seq,
            from,
            bytes,
        }));
    }

    /// When the next held datagram is due.
    pub(crate) fn next_due(&self) -> Option<Instant> {
        self.held.peek().map(|Reverse(h)| h.at)
    }

    /// A held datagram that is due by `now`, earliest first.
    pub(crate) fn pop_due(&mut self, now: Instant) -> Option<(Vec<u8>, SocketAddr)> {
        if self.next_due()? > now {
            return None;
        }
        self.held.pop().map(|Reverse(h)| (h.bytes, h.from))
    }

    /// Forgets what is held: the radio is off (the device sleeps).
    pub(crate) fn clear(&mut self) {
        self.held.clear();
    }
}

/// Sends `bytes` to `to` through the shaper, when there is one: at once, later from a
/// task of its own (so that the sender does not wait for the network's delay), or not
/// at all.
pub(crate) async fn send_shaped(
    socket: &Arc<UdpSocket>,
    shaper: Option<&mut Shaper>,
    bytes: &[u8],
    to: SocketAddr,
) {
    let now = Instant::now();
    let at = match shaper {
        None => now,
        Some(s) => match s.outbound(now, bytes.len()) {
            Some(at) => at,
            None => return,
        },
    };
    if at <= now {
        if let Err(e) = socket.send_to(bytes, to).await {
            tracing::debug!(error = %e, "send failed");
        }
        return;
    }
    let socket = socket.clone();
    let bytes = bytes.to_vec();
    tokio::spawn(async move {
        tokio::time::sleep_until(at.into()).await;
        if let Err(e) = socket.send_to(&bytes, to).await {
            tracing::debug!(error = %e, "send failed");
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: Duration = Duration::from_millis(1);

    fn conditions(loss_up: f64, loss_down: f64) -> LinkConditions {
        LinkConditions {
            loss_up,
            loss_down,
            latency: (Duration::ZERO, Duration::ZERO),
            cell: None,
            seed: 42,
        }
    }

    /// Runs `transfers` stop-and-wait transfers at once through one cell's downlink,
    /// `blocks` blocks of `len` bytes each, the next block asked for when the last one is
    /// through (as a CoAP block-wise download does); answers when each finished.
    fn transfers(
        cell: &Cell,
        t0: Instant,
        transfers: usize,
        blocks: usize,
        len: usize,
    ) -> Vec<Duration> {
        let mut ready = vec![t0; transfers];
        let mut left = vec![blocks; transfers];
        // Each pass moves the transfer whose next block is offered first.
        for _ in 0..transfers * blocks {
            let Some(k) = (0..transfers)
                .filter(|k| left[*k] > 0)
                .min_by_key(|k| (ready[*k], *k))
            else {
                break;
            };
            ready[k] = cell
                .pass(Direction::Down, ready[k], len)
                .expect("within the bound");
            left[k] -= 1;
        }
        ready.iter().map(|t| *t - t0).collect()
    }

    #[test]
    fn two_transfers_in_one_cell_each_take_twice_as_long() {
        let t0 = Instant::now();
        let alone = Cell::new(1, Some(10_000), None, Duration::from_secs(5));
        let one = transfers(&alone, t0, 1, 20, 1000);
        assert_eq!(one, vec![Duration::from_secs(2)]);
        let shared = Cell::new(2, Some(10_000), None, Duration::from_secs(5));
        let two = transfers(&shared, t0, 2, 20, 1000);
        for d in &two {
            let ratio = d.as_secs_f64() / one[0].as_secs_f64();
            assert!((1.9..=2.05).contains(&ratio), "{two:?} against {one:?}");
        }
        // The uplink is a lane of its own, unlimited here.
        assert_eq!(shared.pass(Direction::Up, t0, 1000), Some(t0));
    }

    #[test]
    fn a_datagram_that_would_wait_past_the_bound_is_dropped_and_costs_nothing() {
        let t0 = Instant::now();
        let cell = Cell::new(7, Some(1000), Some(1000), Duration::from_millis(1500));
        assert_eq!(
            cell.pass(Direction::Down, t0, 1000),
            Some(t0 + Duration::from_secs(1))
        );
        // Through at t0 + 2 s: past the 1.5 s bound.
        assert_eq!(cell.pass(Direction::Down, t0, 1000), None);
        // The dropped one took no time: a small one still fits behind the first.
        assert_eq!(
            cell.pass(Direction::Down, t0, 500),
            Some(t0 + Duration::from_millis(1500))
        );
        assert_eq!(cell.counts(), (2, 1));
        // Once the queue has drained, the cell is free again.
        let later = t0 + Duration::from_secs(10);
        assert_eq!(
            cell.pass(Direction::Down, later, 1000),
            Some(later + Duration::from_secs(1))
        );
    }

    #[test]
    fn loss_zero_never_drops_and_loss_one_always_does() {
        let now = Instant::now();
        let from: SocketAddr = "127.0.0.1:1".parse().unwrap();
        let mut keep = Shaper::new(&conditions(0.0, 0.0), 1);
        let mut lose = Shaper::new(&conditions(1.0, 1.0), 1);
        for _ in 0..10_000 {
            assert_eq!(keep.outbound(now, 100), Some(now));
            assert_eq!(lose.outbound(now, 100), None);
            keep.inbound(now, vec![1], from);
            assert!(keep.pop_due(now).is_some());
            lose.inbound(now, vec![1], from);
            assert!(lose.pop_due(now).is_none());
        }
    }

    #[test]
    fn some_loss_drops_about_that_share() {
        let now = Instant::now();
        let mut s = Shaper::new(&conditions(0.2, 0.0), 3);
        let lost = (0..10_000)
            .filter(|_| s.outbound(now, 10).is_none())
            .count();
        assert!((1700..=2300).contains(&lost), "{lost}");
    }

    #[test]
    fn received_datagrams_are_held_for_their_delay_in_order() {
        let now = Instant::now();
        let from: SocketAddr = "127.0.0.1:1".parse().unwrap();
        let mut c = conditions(0.0, 0.0);
        c.latency = (20 * MS, 40 * MS);
        let mut s = Shaper::new(&c, 1);
        for b in 0..10u8 {
            s.inbound(now, vec![b], from);
        }
        assert!(s.pop_due(now + 19 * MS).is_none());
        let due = s.next_due().expect("held");
        assert!(due >= now + 20 * MS && due <= now + 40 * MS);
        let mut got = 0;
        let mut last = now;
        while let Some(at) = s.next_due() {
            assert!(at >= last);
            last = at;
            assert!(s.pop_due(at).is_some());
            got += 1;
        }
        assert_eq!(got, 10);
        let sent = s.outbound(now, 10).expect("no loss");
        assert!(sent >= now + 20 * MS && sent <= now + 40 * MS);
        // Held no more than a receive buffer does.
        for _ in 0..MAX_HELD_DATAGRAMS + 10 {
            s.inbound(now, vec![0], from);
        }
        assert_eq!(s.held.len(), MAX_HELD_DATAGRAMS);
        s.clear();
        assert!(s.next_due().is_none());
    }

    /// Real sockets and the real clock: two senders sharing a cell's uplink take about
    /// twice as long as one alone.
    #[tokio::test]
    async fn senders_in_one_cell_share_its_bandwidth_on_the_wire() {
        async fn run(senders: usize) -> Duration {
            let sink = UdpSocket::bind("127.0.0.1:0").await.expect("bind");
            let to = sink.local_addr().expect("addr");
            let cell = Arc::new(Cell::new(1, None, Some(20_000), Duration::from_secs(5)));
            let (datagrams, len) = (5usize, 1000usize);
            let t0 = Instant::now();
            for k in 0..senders {
                let socket = Arc::new(UdpSocket::bind("127.0.0.1:0").await.expect("bind"));
                let mut c = conditions(0.0, 0.0);
                c.cell = Some(cell.clone());
                let mut s = Shaper::new(&c, k as u64);
                for _ in 0..datagrams {
                    send_shaped(&socket, Some(&mut s), &[0u8; 1000], to).await;
                }
            }
            let mut buf = [0u8; 2000];
            for _ in 0..senders * datagrams {
                let got = tokio::time::timeout(Duration::from_secs(5), sink.recv_from(&mut buf))
                    .await
                    .expect("in time")
                    .expect("recv");
                assert_eq!(got.0, len);
            }
            t0.elapsed()
        }
        let one = run(1).await;
        let two = run(2).await;
        let ratio = two.as_secs_f64() / one.as_secs_f64();
        assert!(
            one >= Duration::from_millis(240) && (1.6..=2.6).contains(&ratio),
            "one {one:?}, two {two:?}"
        );
    }
}
