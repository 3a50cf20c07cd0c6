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

/// One device's outbound queue, in arrival order. Allocated with its first request: a
/// fleet's queues are mostly empty, and an empty `VecDeque` inline in each registration
/// would cost 32 bytes a device.
#[derive(Debug)]
pub(crate) struct DeviceQueue<R> {
    #[allow(clippy::box_collection)] // the point: one pointer while empty
    items: Option<Box<VecDeque<Queued<R>>>>,
}

impl<R> Default for DeviceQueue<R> {
    fn default() -> DeviceQueue<R> {
        DeviceQueue { items: None }
    }
}

impl<R> DeviceQueue<R> {
    pub fn len(&self) -> usize {
        self.items.as_ref().map_or(0, |q| q.len())
    }

    pub fn push(&mut self, request: R, expires_at: Instant) {
        self.items.get_or_insert_default().push_back(Queued {
            request,
            expires_at,
        });
    }

    /// Removes the entries whose time is up (`expires_at <= now`).
    pub fn drop_expired(&mut self, now: Instant) -> Vec<R> {
        let Some(items) = self.items.take() else {
            return Vec::new();
        };
        let (keep, gone): (VecDeque<_>, VecDeque<_>) =
            items.into_iter().partition(|q| q.expires_at > now);
        self.items = (!keep.is_empty()).then(|| Box::new(keep));
        gone.into_iter().map(|q| q.request).collect()
    }

    /// Empties the queue in order.
    pub fn drain(&mut self) -> Vec<R> {
        self.items
            .take()
            .map(|q| q.into_iter().map(|q| q.request).collect())
            .unwrap_or_default()
    }

    pub fn iter(&self) -> impl Iterator<Item = &R> {
        self.iter_queued().map(|q| &q.request)
    }

    pub fn next_expiry(&self) -> Option<Instant> {
        self.iter_queued().map(|q| q.expires_at).min()
    }

    fn iter_queued(&self) -> impl Iterator<Item = &Queued<R>> {
        self.items.iter().flat_map(|q| q.iter())
    }
}
