//! Durability across SIGKILL: a child process (this test binary, re-executed in the writer
//! role) applies a deterministic sequence of store operations and prints `committed N` after
//! each one returns; the parent kills it with SIGKILL mid-stream, reopens the file and checks
//! that the store holds exactly the first N+1 operations' effects, or N+2 when the child died
//! between a commit and its print. The expected state is computed by replaying the same
//! operations on a `MemoryStore`.

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use lwm2m_server::store::{
    MemoryStore, QueuedRequest, RedbStore, Store, StoreLimits, StoredObservation,
    StoredRegistration,
};

const ROLE_VAR: &str = "LWM2M_STORE_CRASH_WRITER_DIR";
/// Upper bound on the writer's work, far more than it gets to before being killed.
const MAX_OPS: u64 = 200_000;
const ENDPOINTS: u64 = 5;

fn limits() -> StoreLimits {
    StoreLimits {
        max_registrations: 1_000_000,
        max_observations: 1_000_000,
        max_queued_per_endpoint: 1_000_000,
    }
}

fn endpoint(i: u64) -> String {
    format!("ep{}", (i / 4) % ENDPOINTS)
}

fn token(i: u64) -> Vec<u8> {
    // tokens of different lengths, 1..=8 bytes
    let bytes = i.to_be_bytes();
    let len = (i % 8 + 1) as usize;
    bytes[8 - len..].to_vec()
}

fn registration(i: u64) -> StoredRegistration {
    StoredRegistration {
        id: format!("r{i}"),
        endpoint: endpoint(i),
        lifetime_s: 3600,
        lwm2m_version: "1.2".into(),
        binding: "UQ".into(),
        queue_mode: i.is_multiple_of(2),
        sms: None,
        root_path: "/".into(),
        objects_link_format: format!("</1/0>,</3/0>,</3303/{i}>"),
        peer: format!("192.0.2.{}:{}", i % 250, 1024 + i % 60_000)
            .parse()
            .expect("literal address"),
        registered_at_unix_ms: 1_000 + i,
        last_update_unix_ms: 1_000 + i,
        secure: i.is_multiple_of(3),
    }
}

/// Operation `i`; every one is a single committed transaction.
fn apply(store: &dyn Store, i: u64) {
    // The registration created by the latest op with i % 4 == 0.
    let base = i - i % 4;
    match i % 4 {
        0 => {
            // The endpoint's previous registration came 4 * ENDPOINTS ops before.
            let previous = i.checked_sub(4 * ENDPOINTS).map(|p| format!("r{p}"));
            store
                .replace_registration(&registration(i), previous.as_deref())
                .expect("replace_registration");
        }
        1 => {
            let obs = StoredObservation {
                token: token(i),
                registration_id: format!("r{base}"),
                endpoint: endpoint(i),
                paths: vec![format!("/3303/{i}/5700")],
                composite: false,
                content_format: Some(112),
                created_at_unix_ms: 2_000 + i,
                last_sequence: None,
                observed: vec![format!("/3303/{i}/5700")],
            };
            store.put_observation(&obs).expect("put_observation");
        }
        2 => {
            let req = QueuedRequest {
                endpoint: endpoint(i),
                seq: 0,
                method: 3,
                uri_path: "/5/0/1".into(),
                uri_query: vec![],
                content_format: Some(0),
                accept: None,
                observe: None,
                payload: format!("coap://fw/{i}").into_bytes(),
                expires_at_unix_ms: 10_000 + i,
                tracking: None,
            };
            store.enqueue(&req).expect("enqueue");
        }
        _ => {
            if (i / 4).is_multiple_of(2) {
                store.pop_queue(&endpoint(i)).expect("pop_queue");
            } else {
                let mut obs = store
                    .get_observation(&token(i - 2))
                    .expect("get_observation")
                    .expect("observation of op i-2");
                obs.last_sequence = Some(i as u32);
                store.put_observation(&obs).expect("update observation");
            }
        }
    }
}

/// Everything observable through the trait, for comparison.
fn snapshot(
    store: &dyn Store,
) -> (
    Vec<StoredRegistration>,
    Vec<StoredObservation>,
    Vec<QueuedRequest>,
) {
    let regs = store.list_registrations().expect("list registrations");
    let obs = store.list_all_observations().expect("list observations");
    let mut queue = Vec::new();
    for e in 0..ENDPOINTS {
        queue.extend(
            store
                .peek_queue(&format!("ep{e}"), usize::MAX)
                .expect("peek"),
        );
    }
    (regs, obs, queue)
}

/// The writer role; a no-op unless this binary was started by `survives_sigkill`.
#[test]
fn crash_writer_child() {
    let Some(dir) = std::env::var_os(ROLE_VAR) else {
        return;
    };
    let store = RedbStore::open_with_limits(Path::new(&dir), limits()).expect("open store");
    for i in 0..MAX_OPS {
        apply(&store, i);
        println!("committed {i}");
    }
}

/// Kills the writer whatever way the parent leaves, so a failing test leaves no process.
struct KillOnDrop(std::process::Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn crash_once(kill_after: u64) {
    let dir = tempfile::tempdir().expect("temp dir");
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut child = KillOnDrop(
        Command::new(std::env::current_exe().expect("test binary path"))
            .args([
                "crash_writer_child",
                "--exact",
                "--nocapture",
                "--test-threads",
                "1",
            ])
            .env(ROLE_VAR, dir.path())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("spawn writer"),
    );
    let stdout = child.0.stdout.take().expect("piped stdout");
    let (tx, rx) = mpsc::channel();
    let reader = std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            // libtest may print its "test ... " prefix on the same line as the first report.
            if let Some((_, n)) = line.split_once("committed ") {
                if let Ok(n) = n.trim().parse::<u64>() {
                    if tx.send(n).is_err() {
                        break;
                    }
                }
            }
        }
    });

    let mut last: Option<u64> = None;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match rx.recv_timeout(left) {
            Ok(n) => {
                assert_eq!(Some(n), last.map_or(Some(0), |l| l.checked_add(1)));
                last = Some(n);
                if n >= kill_after {
                    break;
                }
            }
            Err(e) => {
                panic!("writer stopped reporting before op {kill_after}: {e:?} (last {last:?})");
            }
        }
    }
    // Child::kill sends SIGKILL on Unix: no destructors, no flush, no orderly close.
    child.0.kill().expect("SIGKILL writer");
    let status = child.0.wait().expect("reap writer");
    assert!(!status.success(), "writer was killed, not finished");
    // Lines already in the pipe were committed too.
    for n in rx.iter() {
        assert_eq!(Some(n), last.map(|l| l + 1));
        last = Some(n);
    }
    reader.join().expect("reader thread");
    let last = last.expect("at least one commit");

    let reopened = RedbStore::open_with_limits(dir.path(), limits()).expect("reopen after kill");
    let found = snapshot(&reopened);
    let model = MemoryStore::with_limits(limits());
    for i in 0..=last {
        apply(&model, i);
    }
    let expected = snapshot(&model);
    if found != expected {
        // The child may have died after committing op last+1 but before printing it.
        apply(&model, last + 1);
        assert_eq!(
            found,
            snapshot(&model),
            "store after SIGKILL matches neither {} nor {} committed operations",
            last + 1,
            last + 2
        );
    }
    assert!(!found.0.is_empty() && !found.1.is_empty());
    // The reopened store keeps working and its counters continue past what was written.
    let max_seq = found.2.iter().map(|q| q.seq).max();
    let mut req = found.2.first().cloned().expect("something queued");
    req.payload = b"after restart".to_vec();
    let seq = reopened.enqueue(&req).expect("enqueue after restart");
    assert!(Some(seq) > max_seq);
}

#[test]
fn survives_sigkill() {
    // Different kill points hit different operation kinds (op number % 4).
    for kill_after in [41, 134, 307] {
        crash_once(kill_after);
    }
}
