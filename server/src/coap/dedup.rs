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

    pub(crate) fn insert(
        &mut self,
        now: Instant,
        key: Key,
        lifetime: Duration,
        reply: Reply,
    ) -> Result<(), Full> {
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
    }

    pub(crate) fn next_expiry(&self) -> Option<Instant> {
        self.order.front().map(|(at, _)| *at)
    }
}
