//! Requests that wait for a sleeping device: the API answers 202 with an id at once, and
//! the result is kept here for `GET /api/requests/{id}` and announced as a
//! `REQUEST_RESPONSE` event when it arrives.
//!
//! Results live in memory, bounded: the oldest finished ones go first. The request itself
//! is persisted by the server's queue with its id, operation and paths, so after a restart
//! it is tracked again, still sent when the device wakes, and its answer is read and
//! reported under the same id.

use std::collections::{HashMap, VecDeque};
use std::sync::Mutex;

use serde::Serialize;
use utoipa::ToSchema;

use super::error::ErrorBody;

/// Where a request stands.
#[derive(Debug, Clone, Copy, Serialize, ToSchema, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum RequestStatus {
    /// Waiting for the device to wake, or for its answer.
    Queued,
    /// The device answered with success; `result` has the answer.
    Done,
    /// It failed: an error answer, a timeout, expiry or deregistration; see `error`.
    Failed,
}

/// One tracked request, as `GET /api/requests/{id}` shows it.
#[derive(Debug, Clone, Serialize, ToSchema, PartialEq)]
pub struct RequestRecord {
    pub id: String,
    pub endpoint: String,
    /// The LwM2M operation, e.g. `Read`.
    pub operation: String,
    /// The target path, `/` for composite operations.
    pub path: String,
    pub status: RequestStatus,
    pub created_at_unix_ms: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub completed_at_unix_ms: Option<u64>,
    /// The answer, shaped as the synchronous call would have returned it.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<Object>)]
    pub result: Option<serde_json::Value>,
    /// The HTTP status the synchronous call would have returned, with its error body.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub http_status: Option<u16>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<ErrorBody>,
}

/// The bounded table of tracked requests.
#[derive(Debug)]
pub struct RequestTracker {
    max: usize,
    inner: Mutex<Table>,
}

#[derive(Debug, Default)]
struct Table {
    records: HashMap<String, RequestRecord>,
    /// Ids in creation order, for eviction.
    order: VecDeque<String>,
}

impl RequestTracker {
    pub fn new(max: usize) -> RequestTracker {
        RequestTracker {
            max: max.max(1),
            inner: Mutex::new(Table::default()),
        }
    }

    /// A fresh, unguessable id (another operator's request results are not enumerable).
    pub fn new_id() -> String {
        let mut b = [0u8; 12];
        if getrandom::fill(&mut b).is_err() {
            // No randomness: fall back to time and a counter; ids stay unique.
            static N: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
            let n = N.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            b[..8].copy_from_slice(&super::unix_ms().to_be_bytes());
            b[8..].copy_from_slice(&(n as u32).to_be_bytes());
        }
        crate::hex::encode(&b)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Table> {
        // A panic elsewhere while holding the lock leaves a usable table.
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Records a new queued request.
    pub fn start(&self, id: &str, endpoint: &str, operation: &str, path: &str) {
        self.restore(id, endpoint, operation, path, super::unix_ms());
    }

    /// Records a queued request created at `created_at_unix_ms`: one the server's queue
    /// kept across a restart.
    pub fn restore(
        &self,
        id: &str,
        endpoint: &str,
        operation: &str,
        path: &str,
        created_at_unix_ms: u64,
    ) {
        let record = RequestRecord {
            id: id.to_string(),
            endpoint: endpoint.to_string(),
            operation: operation.to_string(),
            path: path.to_string(),
            status: RequestStatus::Queued,
            created_at_unix_ms,
            completed_at_unix_ms: None,
            result: None,
            http_status: None,
            error: None,
        };
        let mut t = self.lock();
        t.insert(record, self.max);
    }

    /// Stores the outcome of a request; creates the record if it is unknown (a request
    /// queued before a restart). Returns the finished record.
    pub fn finish(
        &self,
        id: &str,
        endpoint: &str,
        outcome: Result<serde_json::Value, (u16, ErrorBody)>,
    ) -> RequestRecord {
        let mut t = self.lock();
        let now = super::unix_ms();
        let mut record = t.records.remove(id).unwrap_or_else(|| RequestRecord {
            id: id.to_string(),
            endpoint: endpoint.to_string(),
            operation: "unknown (queued before a restart)".to_string(),
            path: String::new(),
            status: RequestStatus::Queued,
            created_at_unix_ms: now,
            completed_at_unix_ms: None,
            result: None,
            http_status: None,
            error: None,
        });
        record.completed_at_unix_ms = Some(now);
        match outcome {
            Ok(v) => {
                record.status = RequestStatus::Done;
                record.http_status = Some(200);
                record.result = Some(v);
            }
            Err((status, body)) => {
                record.status = RequestStatus::Failed;
                record.http_status = Some(status);
                record.error = Some(body);
            }
        }
        t.order.retain(|x| x != id);
        t.insert(record.clone(), self.max);
        record
    }

    pub fn get(&self, id: &str) -> Option<RequestRecord> {
        self.lock().records.get(id).cloned()
    }

    pub fn len(&self) -> usize {
        self.lock().records.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

impl Table {
    fn insert(&mut self, record: RequestRecord, max: usize) {
        self.order.push_back(record.id.clone());
        self.records.insert(record.id.clone(), record);
        // Bounded: each turn removes one id from `order`.
        while self.records.len() > max {
            let victim = self
                .order
                .iter()
                .position(|id| {
                    self.records
                        .get(id)
                        .is_some_and(|r| r.status != RequestStatus::Queued)
                })
                .unwrap_or(0);
            match self.order.remove(victim) {
                Some(id) => {
                    self.records.remove(&id);
                }
                None => break,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finished_requests_are_evicted_before_queued_ones() {
        let t = RequestTracker::new(2);
        t.start("a", "ep", "Read", "/3/0");
        t.start("b", "ep", "Read", "/3/0");
        t.finish("b", "ep", Ok(serde_json::json!({"status": "CONTENT"})));
        t.start("c", "ep", "Read", "/3/0");
        assert_eq!(t.len(), 2);
        assert!(t.get("a").is_some(), "the queued one stays");
        assert!(t.get("b").is_none(), "the finished one went first");
        let r = t.finish(
            "zz",
            "ep",
            Err((
                504,
                ErrorBody {
                    error: "expired".into(),
                    detail: "x".into(),
                    coap_code: None,
                },
            )),
        );
        assert_eq!(r.status, RequestStatus::Failed);
        assert_eq!(t.len(), 2);
    }

    #[test]
    fn ids_are_unique() {
        let a = RequestTracker::new_id();
        assert_eq!(a.len(), 24);
        assert_ne!(a, RequestTracker::new_id());
    }
}
