//! One behavioural suite for every [`Store`] implementation: the server must not be able to
//! tell the backends apart. `conformance_suite!` instantiates every case for a backend.

use super::records::samples::{observation, queued, registration, security};
use super::*;

/// A store under test plus whatever must outlive it (a temporary directory).
pub(crate) struct Fixture {
    pub store: Box<dyn Store>,
    pub _keep: Option<Box<dyn std::any::Any>>,
}

pub(crate) fn small() -> StoreLimits {
    StoreLimits {
        max_registrations: 3,
        max_observations: 3,
        max_queued_per_endpoint: 3,
    }
}

fn ids(regs: &[StoredRegistration]) -> Vec<&str> {
    regs.iter().map(|r| r.id.as_str()).collect()
}

fn tokens(obs: &[StoredObservation]) -> Vec<Vec<u8>> {
    obs.iter().map(|o| o.token.clone()).collect()
}

pub(crate) fn register_and_look_up(f: Fixture) {
    let s = f.store;
    assert_eq!(s.get_registration("a").ok(), Some(None));
    assert_eq!(s.list_registrations().ok(), Some(vec![]));
    let a = registration("a", "ep-a");
    let b = registration("b", "ep-b");
    s.put_registration(&b).expect("put b");
    s.put_registration(&a).expect("put a");
    assert_eq!(s.get_registration("a").ok(), Some(Some(a.clone())));
    assert_eq!(s.get_registration("b").ok(), Some(Some(b.clone())));
    assert_eq!(s.get_registration("c").ok(), Some(None));
    assert_eq!(s.list_registrations().ok(), Some(vec![a, b]));
}

pub(crate) fn update_overwrites(f: Fixture) {
    let s = f.store;
    let mut a = registration("a", "ep-a");
    a.last_update_unix_ms = 1_000;
    a.lifetime_s = 10;
    s.put_registration(&a).expect("put");
    a.last_update_unix_ms = 5_000;
    a.objects_link_format = "</3/0>".into();
    s.put_registration(&a).expect("update");
    assert_eq!(s.get_registration("a").ok(), Some(Some(a.clone())));
    assert_eq!(s.list_registrations().ok(), Some(vec![a]));
}

pub(crate) fn refresh_moves_time_and_address_and_never_back(f: Fixture) {
    let s = f.store;
    let mut a = registration("a", "ep-a");
    a.last_update_unix_ms = 5_000;
    s.put_registration(&a).expect("put");
    s.put_registration(&registration("b", "ep-b")).expect("put");
    let moved: std::net::SocketAddr = "192.0.2.99:40001".parse().expect("literal address");
    let refresh = |ms: u64, peer: std::net::SocketAddr| StoredRefresh {
        id: "a".into(),
        last_update_unix_ms: ms,
        peer,
    };
    s.refresh_registration(&refresh(7_000, moved))
        .expect("refresh");
    let mut want = a.clone();
    (want.last_update_unix_ms, want.peer) = (7_000, moved);
    assert_eq!(s.get_registration("a").ok(), Some(Some(want.clone())));
    // An older refresh (one that lost a race with a full write) changes nothing.
    s.refresh_registration(&refresh(6_000, a.peer))
        .expect("refresh");
    assert_eq!(s.get_registration("a").ok(), Some(Some(want.clone())));
    assert_eq!(
        s.list_registrations().ok().map(|v| v[0].clone()),
        Some(want.clone())
    );
    // A full write after the refresh wins over it.
    let mut full = want.clone();
    full.last_update_unix_ms = 9_000;
    full.lifetime_s = 77;
    s.put_registration(&full).expect("put");
    assert_eq!(s.get_registration("a").ok(), Some(Some(full.clone())));
    assert_eq!(
        s.list_registrations().ok().map(|v| v[0].clone()),
        Some(full)
    );
    let err = s.refresh_registration(&StoredRefresh {
        id: "nobody".into(),
        ..refresh(10_000, moved)
    });
    assert!(
        matches!(err, Err(StoreError::UnknownRegistration(_))),
        "{err:?}"
    );
    let err = s.refresh_registration(&StoredRefresh {
        id: String::new(),
        ..refresh(10_000, moved)
    });
    assert!(matches!(err, Err(StoreError::InvalidKey { .. })), "{err:?}");
    // After a De-register and a Register under a new id, the old refreshes are no one's.
    s.delete_registration("a").expect("delete");
    s.put_registration(&registration("c", "ep-a")).expect("put");
    assert_eq!(ids(&s.list_registrations().expect("list")), vec!["b", "c"]);
}

pub(crate) fn replace_drops_old_registration_and_its_observations(f: Fixture) {
    let s = f.store;
    let old = registration("old", "ep");
    let other = registration("other", "ep-2");
    s.put_registration(&old).expect("put");
    s.put_registration(&other).expect("put");
    s.put_observation(&observation(&[1], "old", "ep"))
        .expect("obs");
    s.put_observation(&observation(&[2], "old", "ep"))
        .expect("obs");
    s.put_observation(&observation(&[3], "other", "ep-2"))
        .expect("obs");
    let new = registration("new", "ep");
    assert_eq!(
        s.replace_registration(&new, Some("old")).ok(),
        Some(Some(old))
    );
    assert_eq!(s.get_registration("old").ok(), Some(None));
    assert_eq!(s.get_registration("new").ok(), Some(Some(new)));
    assert_eq!(s.get_observation(&[1]).ok(), Some(None));
    assert_eq!(s.list_observations("old").ok(), Some(vec![]));
    assert_eq!(
        tokens(&s.list_all_observations().expect("all")),
        vec![vec![3]]
    );
    // Without a previous registration it is a plain insert.
    let fresh = registration("fresh", "ep-3");
    assert_eq!(s.replace_registration(&fresh, None).ok(), Some(None));
    // A previous one already gone (or never stored) is no error.
    let again = registration("again", "ep-4");
    assert_eq!(
        s.replace_registration(&again, Some("gone")).ok(),
        Some(None)
    );
    assert_eq!(
        ids(&s.list_registrations().expect("list")),
        vec!["again", "fresh", "new", "other"]
    );
}

pub(crate) fn replace_with_same_id_keeps_one_record(f: Fixture) {
    let s = f.store;
    let a = registration("a", "ep");
    s.put_registration(&a).expect("put");
    s.put_observation(&observation(&[1], "a", "ep"))
        .expect("obs");
    let mut a2 = a.clone();
    a2.lifetime_s = 60;
    assert_eq!(s.replace_registration(&a2, None).ok(), Some(Some(a)));
    assert_eq!(s.list_registrations().ok(), Some(vec![a2]));
    assert_eq!(s.list_all_observations().ok(), Some(vec![]));
}

pub(crate) fn deregister_drops_observations_only_of_that_registration(f: Fixture) {
    let s = f.store;
    let a = registration("a", "ep-a");
    s.put_registration(&a).expect("put");
    s.put_registration(&registration("b", "ep-b")).expect("put");
    s.put_observation(&observation(&[1], "a", "ep-a"))
        .expect("obs");
    s.put_observation(&observation(&[2], "b", "ep-b"))
        .expect("obs");
    assert_eq!(s.delete_registration("a").ok(), Some(Some(a)));
    assert_eq!(s.delete_registration("a").ok(), Some(None));
    assert_eq!(s.get_registration("a").ok(), Some(None));
    assert_eq!(
        tokens(&s.list_all_observations().expect("all")),
        vec![vec![2]]
    );
}

pub(crate) fn registration_cap(f: Fixture) {
    let s = f.store; // limits: 3
    for i in 0..3 {
        s.put_registration(&registration(&format!("r{i}"), &format!("ep{i}")))
            .expect("under cap");
    }
    let err = s.put_registration(&registration("r3", "ep3"));
    assert!(
        matches!(err, Err(StoreError::Full { limit: 3, .. })),
        "{err:?}"
    );
    let err = s.replace_registration(&registration("r3", "ep3"), None);
    assert!(
        matches!(err, Err(StoreError::Full { limit: 3, .. })),
        "{err:?}"
    );
    // Updating or replacing an existing one needs no room.
    s.put_registration(&registration("r0", "ep0"))
        .expect("update at cap");
    s.replace_registration(&registration("r9", "ep1"), Some("r1"))
        .expect("replace at cap");
    let err = s.replace_registration(&registration("r8", "ep8"), Some("gone"));
    assert!(
        matches!(err, Err(StoreError::Full { limit: 3, .. })),
        "a previous one not stored makes no room: {err:?}"
    );
    assert_eq!(s.list_registrations().map(|v| v.len()).ok(), Some(3));
}

pub(crate) fn observations_by_token(f: Fixture) {
    let s = f.store;
    s.put_registration(&registration("a", "ep-a")).expect("put");
    s.put_registration(&registration("b", "ep-b")).expect("put");
    let token = [0xde, 0xad, 0xbe, 0xef, 0, 1, 2, 3];
    let mut o = observation(&token, "a", "ep-a");
    s.put_observation(&o).expect("obs");
    assert_eq!(s.get_observation(&token).ok(), Some(Some(o.clone())));
    // advancing the sequence number overwrites in place
    o.last_sequence = Some(8);
    s.put_observation(&o).expect("overwrite");
    assert_eq!(s.get_observation(&token).ok(), Some(Some(o.clone())));
    assert_eq!(s.list_observations("a").ok(), Some(vec![o.clone()]));
    // moving the token to another registration unlinks it from the first
    let mut moved = o.clone();
    moved.registration_id = "b".into();
    s.put_observation(&moved).expect("move");
    assert_eq!(s.list_observations("a").ok(), Some(vec![]));
    assert_eq!(s.list_observations("b").ok(), Some(vec![moved.clone()]));
    assert_eq!(s.delete_observation(&token).ok(), Some(Some(moved)));
    assert_eq!(s.delete_observation(&token).ok(), Some(None));
    assert_eq!(s.list_observations("b").ok(), Some(vec![]));
}

pub(crate) fn observation_needs_registration_and_valid_token(f: Fixture) {
    let s = f.store;
    let err = s.put_observation(&observation(&[1], "nobody", "ep"));
    assert!(
        matches!(err, Err(StoreError::UnknownRegistration(_))),
        "{err:?}"
    );
    s.put_registration(&registration("a", "ep")).expect("put");
    for bad in [&[][..], &[0u8; 9][..]] {
        let err = s.put_observation(&observation(bad, "a", "ep"));
        assert!(
            matches!(err, Err(StoreError::InvalidToken(n)) if n == bad.len()),
            "{err:?}"
        );
        assert!(matches!(
            s.get_observation(bad),
            Err(StoreError::InvalidToken(_))
        ));
        assert!(matches!(
            s.delete_observation(bad),
            Err(StoreError::InvalidToken(_))
        ));
    }
    assert_eq!(s.list_all_observations().ok(), Some(vec![]));
}

pub(crate) fn delete_observations_of_returns_them(f: Fixture) {
    let s = f.store;
    s.put_registration(&registration("a", "ep-a")).expect("put");
    s.put_registration(&registration("ab", "ep-ab"))
        .expect("put");
    s.put_observation(&observation(&[2], "a", "ep-a"))
        .expect("obs");
    s.put_observation(&observation(&[1], "a", "ep-a"))
        .expect("obs");
    // "ab" shares the prefix "a": a prefix range must not pick it up
    s.put_observation(&observation(&[3], "ab", "ep-ab"))
        .expect("obs");
    let gone = s.delete_observations_of("a").expect("delete");
    assert_eq!(tokens(&gone), vec![vec![1], vec![2]]);
    assert_eq!(
        tokens(&s.list_all_observations().expect("all")),
        vec![vec![3]]
    );
    assert!(s.get_registration("a").ok().flatten().is_some());
}

pub(crate) fn observation_cap(f: Fixture) {
    let s = f.store; // limits: 3
    s.put_registration(&registration("a", "ep")).expect("put");
    for t in 1..=3u8 {
        s.put_observation(&observation(&[t], "a", "ep"))
            .expect("under cap");
    }
    let err = s.put_observation(&observation(&[4], "a", "ep"));
    assert!(
        matches!(err, Err(StoreError::Full { limit: 3, .. })),
        "{err:?}"
    );
    s.put_observation(&observation(&[1], "a", "ep"))
        .expect("overwrite at cap");
    s.delete_observation(&[2]).expect("delete");
    s.put_observation(&observation(&[4], "a", "ep"))
        .expect("room again");
}

pub(crate) fn queue_is_ordered_per_endpoint(f: Fixture) {
    let s = f.store;
    let mut seqs = Vec::new();
    for (i, ep) in ["x", "y", "x", "x", "y"].iter().enumerate() {
        let mut q = queued(ep, 1_000);
        q.uri_path = format!("/{i}");
        q.seq = 999; // ignored
        seqs.push(s.enqueue(&q).expect("enqueue"));
    }
    assert!(seqs.windows(2).all(|w| w[0] < w[1]), "{seqs:?}");
    assert_eq!(s.queue_len("x").ok(), Some(3));
    assert_eq!(s.queue_len("y").ok(), Some(2));
    assert_eq!(s.queue_len("z").ok(), Some(0));
    let peek = s.peek_queue("x", 2).expect("peek");
    assert_eq!(
        peek.iter()
            .map(|q| (q.seq, q.uri_path.as_str()))
            .collect::<Vec<_>>(),
        vec![(seqs[0], "/0"), (seqs[2], "/2")]
    );
    assert_eq!(s.queue_len("x").ok(), Some(3), "peek removes nothing");
    assert_eq!(
        s.pop_queue("x").ok().flatten().map(|q| q.uri_path),
        Some("/0".into())
    );
    assert_eq!(
        s.remove_queued("x", seqs[3])
            .ok()
            .flatten()
            .map(|q| q.uri_path),
        Some("/3".into())
    );
    assert_eq!(s.remove_queued("x", seqs[3]).ok(), Some(None));
    assert_eq!(
        s.pop_queue("x").ok().flatten().map(|q| q.uri_path),
        Some("/2".into())
    );
    assert_eq!(s.pop_queue("x").ok(), Some(None));
    assert_eq!(s.clear_queue("y").ok(), Some(2));
    assert_eq!(s.peek_queue("y", 10).ok(), Some(vec![]));
    // seqs are never reused, even after queues emptied
    let again = s.enqueue(&queued("x", 1_000)).expect("enqueue");
    assert!(again > seqs[4]);
}

pub(crate) fn queue_cap_is_per_endpoint(f: Fixture) {
    let s = f.store; // limits: 3
    for _ in 0..3 {
        s.enqueue(&queued("x", 1_000)).expect("under cap");
    }
    let err = s.enqueue(&queued("x", 1_000));
    assert!(
        matches!(&err, Err(StoreError::QueueFull { endpoint, limit: 3 }) if endpoint == "x"),
        "{err:?}"
    );
    assert_eq!(s.queue_len("x").ok(), Some(3));
    s.enqueue(&queued("y", 1_000))
        .expect("other endpoint unaffected");
    s.pop_queue("x").expect("pop");
    s.enqueue(&queued("x", 1_000)).expect("room again");
}

pub(crate) fn expired_queued_requests_are_dropped(f: Fixture) {
    let s = f.store;
    let a = s.enqueue(&queued("x", 100)).expect("enqueue");
    let b = s.enqueue(&queued("y", 200)).expect("enqueue");
    let c = s.enqueue(&queued("x", 300)).expect("enqueue");
    assert_eq!(s.drop_expired_queued(99).ok(), Some(vec![]));
    let gone = s.drop_expired_queued(200).expect("sweep");
    let mut gone_seqs: Vec<u64> = gone.iter().map(|q| q.seq).collect();
    gone_seqs.sort_unstable();
    assert_eq!(gone_seqs, vec![a, b]);
    assert_eq!(s.peek_queue("x", 10).ok().map(|v| v.len()), Some(1));
    assert_eq!(
        s.peek_queue("x", 10)
            .ok()
            .and_then(|v| v.first().map(|q| q.seq)),
        Some(c)
    );
}

pub(crate) fn keys_are_validated(f: Fixture) {
    let s = f.store;
    let long = "e".repeat(MAX_KEY_LEN + 1);
    for (id, ep) in [("", "ep"), ("id", ""), ("id", long.as_str())] {
        let err = s.put_registration(&registration(id, ep));
        assert!(matches!(err, Err(StoreError::InvalidKey { .. })), "{err:?}");
        let err = s.replace_registration(&registration(id, ep), None);
        assert!(matches!(err, Err(StoreError::InvalidKey { .. })), "{err:?}");
    }
    let err = s.enqueue(&queued("", 1));
    assert!(matches!(err, Err(StoreError::InvalidKey { .. })), "{err:?}");
    let ok = "e".repeat(MAX_KEY_LEN);
    s.put_registration(&registration(&ok, &ok))
        .expect("max length is fine");
    assert_eq!(s.list_registrations().map(|v| v.len()).ok(), Some(1));
}

/// Instantiates every case for one backend. `$make` is an expression of type
/// `fn(StoreLimits) -> Fixture`.
macro_rules! conformance_suite {
    ($make:expr) => {
        conformance_suite!(@cases $make,
            register_and_look_up: default,
            update_overwrites: default,
            refresh_moves_time_and_address_and_never_back: default,
            replace_drops_old_registration_and_its_observations: default,
            replace_with_same_id_keeps_one_record: default,
            deregister_drops_observations_only_of_that_registration: default,
            registration_cap: small,
            observations_by_token: default,
            observation_needs_registration_and_valid_token: default,
            delete_observations_of_returns_them: default,
            observation_cap: small,
            queue_is_ordered_per_endpoint: default,
            queue_cap_is_per_endpoint: small,
            expired_queued_requests_are_dropped: default,
            keys_are_validated: default,
            security_by_endpoint_and_identity: default,
        );
    };
    (@cases $make:expr, $($case:ident : $limits:ident),* $(,)?) => {$(
        #[test]
        fn $case() {
            let make: fn($crate::store::StoreLimits) -> $crate::store::conformance::Fixture = $make;
            $crate::store::conformance::$case(make($crate::store::conformance::$limits()));
        }
    )*};
}

pub(crate) fn security_by_endpoint_and_identity(f: Fixture) {
    let s = f.store;
    assert_eq!(s.list_security().ok(), Some(vec![]));
    let a = security("ep-a", "id-a");
    let b = security("ep-b", "id-b");
    assert_eq!(s.put_security(&b).ok(), Some(None));
    assert_eq!(s.put_security(&a).ok(), Some(None));
    assert_eq!(s.get_security("ep-a").ok(), Some(Some(a.clone())));
    assert_eq!(
        s.security_by_psk_identity(b"id-b").ok(),
        Some(Some(b.clone()))
    );
    assert_eq!(s.list_security().ok(), Some(vec![a.clone(), b.clone()]));
    // An identity belongs to one endpoint: taking another's changes nothing.
    let thief = security("ep-c", "id-a");
    assert!(matches!(
        s.put_security(&thief),
        Err(StoreError::IdentityTaken(ep)) if ep == "ep-a"
    ));
    assert_eq!(s.get_security("ep-c").ok(), Some(None));
    // A new identity for an endpoint frees the old one.
    let a2 = security("ep-a", "id-a2");
    assert_eq!(s.put_security(&a2).ok(), Some(Some(a.clone())));
    assert_eq!(s.security_by_psk_identity(b"id-a").ok(), Some(None));
    assert_eq!(
        s.security_by_psk_identity(b"id-a2").ok(),
        Some(Some(a2.clone()))
    );
    assert!(s.put_security(&thief).is_ok(), "id-a is free now");
    assert_eq!(s.delete_security("ep-a").ok(), Some(Some(a2)));
    assert_eq!(s.security_by_psk_identity(b"id-a2").ok(), Some(None));
    assert_eq!(s.delete_security("ep-a").ok(), Some(None));
    let empty = StoredSecurity {
        psk_identity: Some(Vec::new()),
        ..security("ep-d", "x")
    };
    assert!(s.put_security(&empty).is_err());
    // In bulk: all or nothing, conflicts inside the batch included.
    let before = s.list_security().expect("list");
    let clash = [security("ep-x", "id-x"), security("ep-y", "id-b")];
    assert!(matches!(
        s.put_securities(&clash),
        Err(StoreError::IdentityTaken(_))
    ));
    let twice = [security("ep-x", "id-x"), security("ep-y", "id-x")];
    assert!(s.put_securities(&twice).is_err());
    assert_eq!(
        s.list_security().expect("list"),
        before,
        "nothing of a refused batch"
    );
    let olds = s
        .put_securities(&[security("ep-x", "id-x"), security("ep-b", "id-b2")])
        .expect("batch");
    assert_eq!(olds, vec![None, Some(b)]);
    assert_eq!(s.security_by_psk_identity(b"id-b").ok(), Some(None));
    assert!(s.get_security("ep-x").expect("get").is_some());
}

pub(crate) fn default() -> StoreLimits {
    StoreLimits::default()
}

mod memory_backend {
    use super::*;
    conformance_suite!(|limits| Fixture {
        store: Box::new(MemoryStore::with_limits(limits)),
        _keep: None,
    });
}

mod redb_backend {
    use super::*;
    conformance_suite!(|limits| {
        let dir = tempfile::tempdir().expect("temp dir");
        let store = RedbStore::open_with_limits(dir.path(), limits).expect("open");
        Fixture {
            store: Box::new(store),
            _keep: Some(Box::new(dir)),
        }
    });
}

/// The driver's handle: refreshes go to the log, which every reader applies.
mod redb_group_handle {
    use super::*;
    conformance_suite!(|limits| {
        let dir = tempfile::tempdir().expect("temp dir");
        let store = RedbStore::open_with_limits(dir.path(), limits)
            .expect("open")
            .fold_refreshes_at(2)
            .group_commit();
        Fixture {
            store: Box::new(store),
            _keep: Some(Box::new(dir)),
        }
    });
}
