//! Duplicate detection of incoming CON/NON messages by (peer, message id) (RFC 7252 §4.5).

use std::collections::{HashMap, VecDeque};
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use super::IncomingId;

pub(crate) type Key = (SocketAddr, u16);

/// What we do when the same message arrives again.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Reply {
    /// Stay silent (a NON, or a CON still with the application before any ACK).
    Nothing,
    /// The application has the request; its answer is not known yet.
    Pending(IncomingId),
    /// Send these bytes again: the piggybacked response, the empty ACK or the RST.
    Resend(Vec<u8>),
}

#[derive(Debug)]
struct Entry {
    expires: Instant,
    reply: Reply,
}

/// Full: the message is dropped rather than risk delivering it twice later.
#[derive(Debug, thiserror::Error)]
#[error("duplicate-detection table full")]
pub(crate) struct Full;

#[derive(Debug)]
pub(crate) struct Dedup {
    map: HashMap<Key, Entry>,
    order: VecDeque<(Instant, Key)>,
    cap: usize,
}

impl Dedup {
    pub(crate) fn new(cap: usize) -> Self {
        Self {
            map: HashMap::new(),
            order: VecDeque::new(),
            cap,
        }
    }

    pub(crate) fn len(&self) -> usize {
        self.map.len()
    }

    pub(crate) fn get(&self, key: &Key) -> Option<&Reply> {
        self.map.get(key).map(|e| &e.reply)
    }

    /// Remembers `key` for `lifetime`. When the table is full, the entry closest to its
    /// expiry makes room if it expires before `evictable_until`: the endpoint passes the
    /// point past which an entry's message is older than MAX_TRANSMIT_SPAN, after which
    /// no retransmission of it can still come. A device fleet re-registering at once
    /// then costs memory for the last 45 s of messages, not for the whole 247 s
    /// EXCHANGE_LIFETIME; only more fresh messages than the cap are refused.
    pub(crate) fn insert(
        &mut self,
        now: Instant,
        key: Key,
        lifetime: Duration,
        reply: Reply,
        evictable_until: Instant,
    ) -> Result<(), Full> {
        if self.map.len() >= self.cap || self.order.len() >= self.cap.saturating_mul(2) {
            self.evict_before(evictable_until);
        }
        if self.map.len() >= self.cap || self.order.len() >= self.cap.saturating_mul(2) {
            return Err(Full);
        }
        let expires = now.checked_add(lifetime).unwrap_or(now);
        self.map.insert(key, Entry { expires, reply });
        self.order.push_back((expires, key));
        Ok(())
    }

    /// Changes the remembered answer; the lifetime keeps running from the first arrival.
    pub(crate) fn set(&mut self, key: &Key, reply: Reply) {
        if let Some(e) = self.map.get_mut(key) {
            e.reply = reply;
        }
    }

    pub(crate) fn expire(&mut self, now: Instant) {
        while let Some((at, key)) = self.order.front().copied() {
            if at > now {
                break;
            }
            self.order.pop_front();
            if self.map.get(&key).is_some_and(|e| e.expires <= now) {
                self.map.remove(&key);
            }
        }
        self.shrink();
    }

    /// Drops the entries nearest their expiry, up to a tenth of the cap, as long as
    /// they expire before `until`.
    fn evict_before(&mut self, until: Instant) {
        for _ in 0..(self.cap / 10).max(1) {
            match self.order.front().copied() {
                Some((at, key)) if at <= until => {
                    self.order.pop_front();
                    if self.map.get(&key).is_some_and(|e| e.expires == at) {
                        self.map.remove(&key);
                    }
                }
                _ => break,
            }
        }
    }

    /// Gives back the room a burst left: a table sized for a million messages of a fleet
    /// coming back from an outage must not stay that size once they have expired.
    fn shrink(&mut self) {
        if self.map.capacity() > 1024 && self.map.len() < self.map.capacity() / 4 {
            self.map.shrink_to(self.map.len() * 2);
        }
        if self.order.capacity() > 1024 && self.order.len() < self.order.capacity() / 4 {
            self.order.shrink_to(self.order.len() * 2);
        }
    }

    pub(crate) fn next_expiry(&self) -> Option<Instant> {
        self.order.front().map(|(at, _)| *at)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const LIFETIME: Duration = Duration::from_secs(247);
    const SPAN: Duration = Duration::from_secs(45);

    fn key(i: u16) -> Key {
        (SocketAddr::from(([127, 0, 0, 1], 5683)), i)
    }

    #[test]
    fn a_full_table_makes_room_only_with_messages_past_their_retransmissions() {
        let t0 = Instant::now();
        let mut d = Dedup::new(10);
        for i in 0..10 {
            d.insert(t0, key(i), LIFETIME, Reply::Nothing, t0 + LIFETIME - SPAN)
                .expect("room");
        }
        let soon = t0 + Duration::from_secs(1);
        assert!(
            d.insert(
                soon,
                key(10),
                LIFETIME,
                Reply::Nothing,
                soon + LIFETIME - SPAN
            )
            .is_err(),
            "every remembered message may still be retransmitted: refuse the new one"
        );
        assert!(d.get(&key(0)).is_some());
        let later = t0 + SPAN + Duration::from_secs(1);
        d.insert(
            later,
            key(10),
            LIFETIME,
            Reply::Nothing,
            later + LIFETIME - SPAN,
        )
        .expect("the oldest are past MAX_TRANSMIT_SPAN");
        assert!(d.get(&key(10)).is_some());
        assert!(d.get(&key(0)).is_none(), "the oldest made room");
        assert!(d.len() <= 10);
    }

    #[test]
    fn the_table_gives_back_its_room_once_a_burst_has_expired() {
        let t0 = Instant::now();
        let mut d = Dedup::new(100_000);
        for i in 0..50_000u32 {
            let k = (
                SocketAddr::from(([127, 1, (i >> 8) as u8, i as u8], 5683)),
                1,
            );
            d.insert(t0, k, LIFETIME, Reply::Nothing, t0).expect("room");
        }
        let full = d.map.capacity();
        assert!(full >= 50_000);
        d.expire(t0 + LIFETIME);
        assert_eq!(d.len(), 0);
        assert!(
            d.map.capacity() < full / 4,
            "{} of {full}",
            d.map.capacity()
        );
        assert!(d.order.capacity() < 50_000);
    }
}
