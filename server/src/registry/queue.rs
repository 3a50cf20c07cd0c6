//! Requests waiting for a queue-mode device to wake.

use std::collections::VecDeque;
use std::time::Instant;

/// A request and the instant after which sending it is pointless.
#[derive(Clone, Debug, PartialEq)]
pub(crate) struct Queued<R> {
    pub request: R,
    pub expires_at: Instant,
}

/// What [`Registry::take_ready`](super::Registry::take_ready) hands out:
/// the requests to send now, in the order they were queued, and those
/// that ran out of time while waiting, so their callers can be told.
#[derive(Debug, PartialEq)]
pub struct Ready<R> {
    pub ready: Vec<R>,
    pub expired: Vec<R>,
}

impl<R> Default for Ready<R> {
    fn default() -> Ready<R> {
        Ready {
            ready: Vec::new(),
            expired: Vec::new(),
        }
    }
}

/// One device's outbound queue, in arrival order.
#[derive(Debug)]
pub(crate) struct DeviceQueue<R> {
    items: VecDeque<Queued<R>>,
}

impl<R> Default for DeviceQueue<R> {
    fn default() -> DeviceQueue<R> {
        DeviceQueue {
            items: VecDeque::new(),
        }
    }
}

impl<R> DeviceQueue<R> {
    pub fn len(&self) -> usize {
        self.items.len()
    }

    pub fn push(&mut self, request: R, expires_at: Instant) {
        self.items.push_back(Queued {
            request,
            expires_at,
        });
    }

    /// Removes the entries whose time is up (`expires_at <= now`).
    pub fn drop_expired(&mut self, now: Instant) -> Vec<R> {
        let (keep, gone): (VecDeque<_>, VecDeque<_>) = std::mem::take(&mut self.items)
            .into_iter()
            .partition(|q| q.expires_at > now);
        self.items = keep;
        gone.into_iter().map(|q| q.request).collect()
    }

    /// Empties the queue in order.
    pub fn drain(&mut self) -> Vec<R> {
        self.items.drain(..).map(|q| q.request).collect()
    }

    pub fn iter(&self) -> impl Iterator<Item = &R> {
        self.items.iter().map(|q| &q.request)
    }

    pub fn next_expiry(&self) -> Option<Instant> {
        self.items.iter().map(|q| q.expires_at).min()
    }
}
