//! The driver's writes, committed on a thread of their own while the driver goes on.
//!
//! A pass of the driver (a batch of datagrams, a command, a timer) writes a few records,
//! and what it confirms (answers to devices, replies to callers, events) may go out only
//! once they are on disk. The commit is an fsync; the driver used to wait for it, idle,
//! about a fifth of its time under a fleet's Registers. Now a pass's writes are queued as
//! [`Write`]s and what it would send or tell is held with them ([`Held`]): the store
//! thread commits the writes, and the driver, told, releases what was held, in the order
//! the passes made it. While one batch commits, the passes that follow gather into the
//! next, which one commit then covers (group commit). A pass that writes nothing while
//! nothing is committing sends at once.
//!
//! An answer still means "on disk", and a `kill -9` loses nothing that was confirmed.
//! What changes is where a write that fails is seen: by the store thread, after the
//! driver has moved on. It is logged there, and what its batch held goes out, as it
//! did before when a group's commit failed. The one refusal that mattered to a device,
//! a full registrations table, cannot happen: the registry admits devices against a
//! bound the store's own is never below.
//!
//! Enqueueing is the exception: the driver needs the seq the store assigns (and to hear
//! of a full queue) before it goes on, so [`Pipeline::enqueue`] commits everything
//! before it and itself, and waits. It is an operator's request for a sleeping device,
//! which cost a commit of its own before too.

use std::sync::{mpsc, Arc};

use tokio::sync::Notify;

use super::{Reply, ReplyTx, RequestError, ServerEvent};
use crate::coap::Transmit;
use crate::store::{
    QueuedRequest, Store, StoreError, StoredObservation, StoredRefresh, StoredRegistration,
};

/// Writes and held datagrams the passes may gather while a batch commits, before the
/// next pass waits for it: a few passes' worth at the fleet's busiest.
const MAX_GATHERED: usize = 8_192;

/// A write of the driver, applied in order by the store thread.
pub(super) enum Write {
    /// A new Register: see [`Store::replace_registration`].
    Register {
        reg: StoredRegistration,
        previous: Option<String>,
    },
    /// An Update that changed more than the time and address.
    Put(StoredRegistration),
    /// An Update that changed only those.
    Refresh(StoredRefresh),
    /// The registration id, with its observations.
    Delete(String),
    /// An endpoint's queue.
    ClearQueue(String),
    PutObservation(StoredObservation),
    DeleteObservation(Vec<u8>),
    RemoveQueued {
        endpoint: String,
        seq: u64,
    },
    Enqueue(QueuedRequest),
}

impl Write {
    /// The seq of an enqueued request; nothing for the others.
    fn apply(&self, store: &dyn Store) -> Result<Option<u64>, StoreError> {
        match self {
            Write::Register { reg, previous } => store
                .replace_registration(reg, previous.as_deref())
                .map(|_| None),
            Write::Put(reg) => store.put_registration(reg).map(|()| None),
            Write::Refresh(r) => store.refresh_registration(r).map(|()| None),
            Write::Delete(id) => store.delete_registration(id).map(|_| None),
            Write::ClearQueue(endpoint) => store.clear_queue(endpoint).map(|_| None),
            Write::PutObservation(o) => store.put_observation(o).map(|()| None),
            Write::DeleteObservation(token) => store.delete_observation(token).map(|_| None),
            Write::RemoveQueued { endpoint, seq } => {
                store.remove_queued(endpoint, *seq).map(|_| None)
            }
            Write::Enqueue(req) => store.enqueue(req).map(Some),
        }
    }

    /// What the write was about, for the log when it fails.
    fn describe(&self) -> String {
        match self {
            Write::Register { reg, .. } => {
                format!("registration {} of {:?}", reg.id, reg.endpoint)
            }
            Write::Put(reg) => format!("update of registration {}", reg.id),
            Write::Refresh(r) => format!("refresh of registration {}", r.id),
            Write::Delete(id) => format!("removal of registration {id}"),
            Write::ClearQueue(endpoint) => format!("clearing the queue of {endpoint:?}"),
            Write::PutObservation(o) => {
                format!("observation {}", crate::hex::encode(&o.token))
            }
            Write::DeleteObservation(token) => {
                format!("removal of observation {}", crate::hex::encode(token))
            }
            Write::RemoveQueued { endpoint, seq } => {
                format!("removal of queued request {seq} of {endpoint:?}")
            }
            Write::Enqueue(req) => format!("queued request for {:?}", req.endpoint),
        }
    }
}

/// An outcome a caller hears only once what its pass wrote is committed.
pub(super) enum Completion {
    Reply(ReplyTx, Result<Reply, RequestError>),
    Event(ServerEvent),
}

/// What passes would send and tell, held until their writes are committed.
#[derive(Default)]
pub(super) struct Held {
    /// Datagrams of the plain CoAP endpoint.
    pub plain: Vec<Transmit>,
    /// Plaintext of the secure endpoint, for the DTLS sessions.
    pub secure: Vec<Transmit>,
    pub completed: Vec<Completion>,
}

impl Held {
    /// `other` after what `self` holds; taking its vectors whole when `self` has
    /// none, which is most of the time (copying them was a reallocation a pass).
    fn append(&mut self, other: Held) {
        fn join<T>(to: &mut Vec<T>, mut from: Vec<T>) {
            if to.is_empty() {
                *to = from;
            } else {
                to.append(&mut from);
            }
        }
        join(&mut self.plain, other.plain);
        join(&mut self.secure, other.secure);
        join(&mut self.completed, other.completed);
    }
}

/// A batch the store thread has committed: the seqs its enqueues got, in order, or why
/// one failed.
struct Committed {
    enqueued: Vec<Result<u64, StoreError>>,
}

pub(super) struct Pipeline {
    /// For when the store thread is not there to take a batch.
    store: Arc<dyn Store>,
    /// `None` once [`Pipeline::finish`] has ended the store thread.
    jobs: Option<mpsc::Sender<Vec<Write>>>,
    /// Joined at the stop, so that the store is closed once the driver has stopped.
    thread: Option<std::thread::JoinHandle<()>>,
    done: mpsc::Receiver<Committed>,
    woken: Arc<Notify>,
    /// Committed, to release at the end of the pass.
    ready: Held,
    /// Submitted to the store thread: what its batch holds.
    in_flight: Option<Held>,
    /// The passes since: their writes, and what they hold.
    writes: Vec<Write>,
    gathering: Held,
}

impl Pipeline {
    /// Starts the store thread. A store whose thread cannot start is written by the
    /// driver's own thread instead, as before there was one.
    pub fn start(store: Arc<dyn Store>) -> Pipeline {
        let (jobs, jobs_rx) = mpsc::channel::<Vec<Write>>();
        let (done_tx, done) = mpsc::channel();
        let woken = Arc::new(Notify::new());
        let notify = woken.clone();
        let thread_store = store.clone();
        let spawned = std::thread::Builder::new()
            .name("lwm2m-store".into())
            .spawn(move || {
                while let Ok(writes) = jobs_rx.recv() {
                    if done_tx.send(commit(&*thread_store, &writes)).is_err() {
                        break;
                    }
                    notify.notify_one();
                }
            });
        let thread = spawned
            .map_err(|e| tracing::error!(error = %e, "cannot start the store thread"))
            .ok();
        Pipeline {
            store,
            jobs: Some(jobs),
            thread,
            done,
            woken,
            ready: Held::default(),
            in_flight: None,
            writes: Vec::new(),
            gathering: Held::default(),
        }
    }

    /// Woken when a batch is committed: the driver then calls [`Pipeline::committed`].
    pub fn woken(&self) -> Arc<Notify> {
        self.woken.clone()
    }

    pub fn push(&mut self, w: Write) {
        self.writes.push(w);
    }

    /// Ends a pass: what it holds waits for its writes and for every batch before it.
    /// Past [`MAX_GATHERED`] the pass waits for the batch in flight, as every pass did
    /// before the pipeline: a disk that stalls slows the driver instead of filling
    /// memory with what the devices keep sending.
    pub fn end_pass(&mut self, held: Held) {
        self.gathering.append(held);
        let gathered = self.writes.len() + self.gathering.plain.len() + self.gathering.secure.len();
        if self.in_flight.is_some() && gathered >= MAX_GATHERED {
            match self.done.recv() {
                Ok(c) => self.land(c),
                Err(_) => self.lost(),
            }
        }
        self.committed();
    }

    /// Takes in what the store thread has committed since the last call.
    pub fn committed(&mut self) {
        while let Ok(c) = self.done.try_recv() {
            self.land(c);
        }
        self.advance();
    }

    /// What may go out now, oldest first.
    pub fn take_ready(&mut self) -> Held {
        std::mem::take(&mut self.ready)
    }

    /// Queues a request in the store and answers its seq, once it and every write
    /// before it are committed.
    pub fn enqueue(&mut self, req: QueuedRequest) -> Result<u64, StoreError> {
        self.push(Write::Enqueue(req));
        let mut committed = self.drain();
        committed
            .enqueued
            .pop()
            .unwrap_or_else(|| Err(StoreError::Backend("the store thread has stopped".into())))
    }

    /// Commits everything and waits, for a stop: then [`Pipeline::take_ready`] holds
    /// the rest.
    pub fn finish(&mut self) {
        self.drain();
        self.jobs = None;
        if let Some(thread) = self.thread.take() {
            if thread.join().is_err() {
                tracing::error!("the store thread panicked");
            }
        }
    }

    /// Waits for the batch in flight, then commits what gathered since, and answers
    /// that last commit.
    fn drain(&mut self) -> Committed {
        if self.in_flight.is_some() {
            match self.done.recv() {
                Ok(c) => self.land(c),
                Err(_) => self.lost(),
            }
        }
        let writes = std::mem::take(&mut self.writes);
        let committed = match self.submit(writes) {
            Ok(()) => self.done.recv().ok(),
            Err(here) => Some(here),
        };
        let gathered = std::mem::take(&mut self.gathering);
        self.ready.append(gathered);
        committed.unwrap_or(Committed {
            enqueued: Vec::new(),
        })
    }

    fn land(&mut self, c: Committed) {
        for e in c.enqueued.into_iter().filter_map(Result::err) {
            // Only `enqueue`, which waits, submits an enqueue.
            tracing::error!(error = %e, "request queued without a caller waiting");
        }
        if let Some(held) = self.in_flight.take() {
            self.ready.append(held);
        }
    }

    /// The store thread is gone (it cannot panic on a store's error; it could if the
    /// process is going down): what it held goes out as after a failed commit.
    fn lost(&mut self) {
        tracing::error!("the store thread stopped; writes in flight are not known to be stored");
        if let Some(held) = self.in_flight.take() {
            self.ready.append(held);
        }
    }

    /// Submits what gathered if nothing is in flight; what gathered without writes
    /// behind nothing goes out at once.
    fn advance(&mut self) {
        if self.in_flight.is_some() {
            return;
        }
        let gathered = std::mem::take(&mut self.gathering);
        if self.writes.is_empty() {
            self.ready.append(gathered);
            return;
        }
        let writes = std::mem::take(&mut self.writes);
        match self.submit(writes) {
            Ok(()) => self.in_flight = Some(gathered),
            Err(_) => self.ready.append(gathered),
        }
    }

    /// Hands writes to the store thread; commits them on this one if it is gone.
    fn submit(&mut self, writes: Vec<Write>) -> Result<(), Committed> {
        let writes = match &self.jobs {
            Some(jobs) => match jobs.send(writes) {
                Ok(()) => return Ok(()),
                Err(mpsc::SendError(writes)) => writes,
            },
            None => writes,
        };
        Err(commit(&*self.store, &writes))
    }
}

/// Applies a batch in one group and commits it. A write the store refuses changes
/// nothing (see [`Store`]) and the others still go in.
fn commit(store: &dyn Store, writes: &[Write]) -> Committed {
    store.begin_group();
    let mut enqueued = Vec::new();
    for w in writes {
        let result = w.apply(store);
        if let Err(e) = &result {
            tracing::error!(error = %e, write = %w.describe(), "not stored");
        }
        if matches!(w, Write::Enqueue(_)) {
            enqueued.push(result.map(Option::unwrap_or_default));
        }
    }
    if let Err(e) = store.sync() {
        tracing::error!(error = %e, writes = writes.len(), "store commit failed: what the answers confirm is not stored");
    }
    Committed { enqueued }
}

#[cfg(test)]
mod tests {
    use std::sync::Mutex;
    use std::time::Duration;

    use super::*;
    use crate::store::records::samples;
    use crate::store::{MemoryStore, StoredSecurity};

    /// A store whose commits wait for the test to open a gate, one per commit; the
    /// writes go to a [`MemoryStore`].
    struct Gated {
        inner: MemoryStore,
        gate: Mutex<mpsc::Receiver<()>>,
    }

    impl Store for Gated {
        fn sync(&self) -> Result<(), StoreError> {
            let gate = self.gate.lock().expect("gate");
            gate.recv_timeout(Duration::from_secs(10))
                .expect("the test opens the gate");
            self.inner.sync()
        }
        fn put_registration(&self, reg: &StoredRegistration) -> Result<(), StoreError> {
            self.inner.put_registration(reg)
        }
        fn replace_registration(
            &self,
            reg: &StoredRegistration,
            previous: Option<&str>,
        ) -> Result<Option<StoredRegistration>, StoreError> {
            self.inner.replace_registration(reg, previous)
        }
        fn refresh_registration(&self, refresh: &StoredRefresh) -> Result<(), StoreError> {
            self.inner.refresh_registration(refresh)
        }
        fn get_registration(&self, id: &str) -> Result<Option<StoredRegistration>, StoreError> {
            self.inner.get_registration(id)
        }
        fn list_registrations(&self) -> Result<Vec<StoredRegistration>, StoreError> {
            self.inner.list_registrations()
        }
        fn delete_registration(&self, id: &str) -> Result<Option<StoredRegistration>, StoreError> {
            self.inner.delete_registration(id)
        }
        fn put_observation(&self, obs: &StoredObservation) -> Result<(), StoreError> {
            self.inner.put_observation(obs)
        }
        fn get_observation(&self, t: &[u8]) -> Result<Option<StoredObservation>, StoreError> {
            self.inner.get_observation(t)
        }
        fn delete_observation(&self, t: &[u8]) -> Result<Option<StoredObservation>, StoreError> {
            self.inner.delete_observation(t)
        }
        fn list_observations(&self, id: &str) -> Result<Vec<StoredObservation>, StoreError> {
            self.inner.list_observations(id)
        }
        fn list_all_observations(&self) -> Result<Vec<StoredObservation>, StoreError> {
            self.inner.list_all_observations()
        }
        fn delete_observations_of(&self, id: &str) -> Result<Vec<StoredObservation>, StoreError> {
            self.inner.delete_observations_of(id)
        }
        fn enqueue(&self, req: &QueuedRequest) -> Result<u64, StoreError> {
            self.inner.enqueue(req)
        }
        fn peek_queue(&self, ep: &str, max: usize) -> Result<Vec<QueuedRequest>, StoreError> {
            self.inner.peek_queue(ep, max)
        }
        fn pop_queue(&self, ep: &str) -> Result<Option<QueuedRequest>, StoreError> {
            self.inner.pop_queue(ep)
        }
        fn remove_queued(&self, ep: &str, seq: u64) -> Result<Option<QueuedRequest>, StoreError> {
            self.inner.remove_queued(ep, seq)
        }
        fn queue_len(&self, ep: &str) -> Result<u64, StoreError> {
            self.inner.queue_len(ep)
        }
        fn clear_queue(&self, ep: &str) -> Result<u64, StoreError> {
            self.inner.clear_queue(ep)
        }
        fn drop_expired_queued(&self, now: u64) -> Result<Vec<QueuedRequest>, StoreError> {
            self.inner.drop_expired_queued(now)
        }
        fn put_security(&self, s: &StoredSecurity) -> Result<Option<StoredSecurity>, StoreError> {
            self.inner.put_security(s)
        }
        fn put_securities(
            &self,
            all: &[StoredSecurity],
        ) -> Result<Vec<Option<StoredSecurity>>, StoreError> {
            self.inner.put_securities(all)
        }
        fn get_security(&self, ep: &str) -> Result<Option<StoredSecurity>, StoreError> {
            self.inner.get_security(ep)
        }
        fn security_by_psk_identity(
            &self,
            id: &[u8],
        ) -> Result<Option<StoredSecurity>, StoreError> {
            self.inner.security_by_psk_identity(id)
        }
        fn delete_security(&self, ep: &str) -> Result<Option<StoredSecurity>, StoreError> {
            self.inner.delete_security(ep)
        }
        fn list_security(&self) -> Result<Vec<StoredSecurity>, StoreError> {
            self.inner.list_security()
        }
    }

    fn gated() -> (Arc<Gated>, mpsc::Sender<()>) {
        let (open, gate) = mpsc::channel();
        let store = Arc::new(Gated {
            inner: MemoryStore::new(),
            gate: Mutex::new(gate),
        });
        (store, open)
    }

    /// A pass's held datagram, told apart by its peer's port.
    fn held(port: u16) -> Held {
        Held {
            plain: vec![Transmit {
                peer: std::net::SocketAddr::from(([127, 0, 0, 1], port)),
                bytes: vec![0x60, 0x44, 0, 1],
            }],
            ..Held::default()
        }
    }

    fn ports(h: &Held) -> Vec<u16> {
        h.plain.iter().map(|t| t.peer.port()).collect()
    }

    /// Waits (bounded) until the store thread has committed and the pipeline has taken
    /// it in, as the driver does when woken.
    fn wait_ready(p: &mut Pipeline) -> Held {
        for _ in 0..500 {
            p.committed();
            let h = p.take_ready();
            if !h.plain.is_empty() {
                return h;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        Held::default()
    }

    #[test]
    fn what_a_pass_confirms_waits_for_its_commit_and_later_passes_wait_behind_it() {
        let (store, open) = gated();
        let mut p = Pipeline::start(store.clone());
        p.push(Write::Register {
            reg: samples::registration("r1", "ep1"),
            previous: None,
        });
        p.end_pass(held(1));
        assert!(p.take_ready().plain.is_empty(), "held until committed");
        // Two passes while the first batch commits: one writes, one only sends; the
        // second must not overtake the first.
        p.push(Write::Register {
            reg: samples::registration("r2", "ep2"),
            previous: None,
        });
        p.end_pass(held(2));
        p.end_pass(held(3));
        assert!(p.take_ready().plain.is_empty());
        open.send(()).expect("gate");
        assert_eq!(ports(&wait_ready(&mut p)), vec![1]);
        assert!(store.inner.get_registration("r1").expect("get").is_some());
        p.committed();
        assert!(
            p.take_ready().plain.is_empty(),
            "the second batch is not committed"
        );
        open.send(()).expect("gate");
        assert_eq!(ports(&wait_ready(&mut p)), vec![2, 3]);
        assert!(store.inner.get_registration("r2").expect("get").is_some());
        // Nothing in flight: a pass that writes nothing goes out at once.
        p.end_pass(held(4));
        assert_eq!(ports(&p.take_ready()), vec![4]);
        p.finish_with(&open);
    }

    #[test]
    fn an_enqueue_is_applied_after_the_writes_before_it_and_answers_its_seq() {
        let (store, open) = gated();
        let mut p = Pipeline::start(store.clone());
        let first = store
            .inner
            .enqueue(&samples::queued("ep", u64::MAX))
            .expect("seq");
        p.push(Write::ClearQueue("ep".into()));
        p.end_pass(held(1));
        // Both commits (the clear in flight, then the enqueue) are let through.
        open.send(()).expect("gate");
        open.send(()).expect("gate");
        let seq = p
            .enqueue(samples::queued("ep", u64::MAX))
            .expect("enqueued");
        assert!(seq > first);
        let queued = store.inner.peek_queue("ep", 10).expect("peek");
        assert_eq!(queued.iter().map(|q| q.seq).collect::<Vec<_>>(), vec![seq]);
        assert_eq!(
            ports(&p.take_ready()),
            vec![1],
            "the waited-for pass is released"
        );
        p.finish_with(&open);
    }

    impl Pipeline {
        /// `finish` with the gate opened for its last commit.
        fn finish_with(&mut self, open: &mpsc::Sender<()>) {
            open.send(()).expect("gate");
            self.finish();
        }
    }
}
