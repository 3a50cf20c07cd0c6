//! The runtime in-process through `Server::start`: queue-mode delivery, expiry events,
//! Send, and observations that outlive a restart.

mod server_support;

use std::time::Duration;

use coap_lite::{CoapOption, MessageClass, MessageType, Packet, RequestType, ResponseType};
use lwm2m_server::config::ServerConfig;
use lwm2m_server::runtime::{RequestError, Server, ServerEvent, ServerHandle};
use lwm2m_server::store::{RedbStore, Store};
use server_support::{code, location, register, request, Client};
use tokio::sync::broadcast;

fn config(dir: &std::path::Path) -> ServerConfig {
    let mut c = ServerConfig::new("127.0.0.1:0".parse().expect("addr"), dir);
    c.registry.awake_window = Duration::from_millis(300);
    c.registry.expiry_grace = Duration::ZERO;
    c
}

/// The next event matching `f`, waiting at most 10 s.
async fn next_event<T>(
    rx: &mut broadcast::Receiver<ServerEvent>,
    mut f: impl FnMut(&ServerEvent) -> Option<T>,
) -> T {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        match tokio::time::timeout_at(deadline, rx.recv()).await {
            Ok(Ok(e)) => {
                if let Some(t) = f(&e) {
                    return t;
                }
            }
            Ok(Err(e)) => panic!("event stream: {e}"),
            Err(_) => panic!("event did not come within 10 s"),
        }
    }
}

fn read_3_0_0() -> Packet {
    request(RequestType::Get, &["3", "0", "0"], &[], b"")
}

/// Answers a request from the server with a piggybacked response.
fn answer(c: &Client, req: &Packet, payload: &[u8], observe: Option<u32>) {
    let mut r = Packet::new();
    r.header.set_type(MessageType::Acknowledgement);
    r.header.message_id = req.header.message_id;
    r.header.code = MessageClass::Response(ResponseType::Content);
    r.set_token(req.get_token().to_vec());
    if let Some(o) = observe {
        r.set_observe_value(o);
    }
    r.payload = payload.to_vec();
    c.send_raw(&r);
}

/// The ids of the registrations stored in `dir`, read with the server stopped.
fn stored_ids(dir: &std::path::Path) -> Vec<String> {
    let store = RedbStore::open(dir).expect("open the store");
    let regs = store.list_registrations().expect("list");
    regs.into_iter().map(|r| r.id).collect()
}

async fn blocking<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> T {
    tokio::task::spawn_blocking(f).await.expect("join")
}

#[tokio::test]
async fn request_for_a_sleeping_device_is_delivered_right_after_its_update() {
    let dir = tempfile::tempdir().expect("tempdir");
    let server = Server::start(config(dir.path())).expect("start");
    let mut events = server.subscribe();
    let addr = server.coap_addr();
    let (mut c, loc) = blocking(move || {
        let mut c = Client::new(addr);
        let r = c.call(register("sleepy", 60, &["Q"]));
        assert_eq!(code(&r), "2.01");
        let loc = location(&r);
        (c, loc)
    })
    .await;
    next_event(&mut events, |e| {
        matches!(e, ServerEvent::Registered { .. }).then_some(())
    })
    .await;
    // Wait out the awake window (300 ms), then ask: the device must not be contacted.
    tokio::time::sleep(Duration::from_millis(400)).await;
    let h: ServerHandle = server.clone();
    let pending = tokio::spawn(async move {
        h.request("sleepy", read_3_0_0(), true, Duration::from_secs(30))
            .await
    });
    let (c2, got) = blocking(move || {
        let early = c.receive_request(Duration::from_millis(500));
        assert!(early.is_none(), "a sleeping device was sent {early:?}");
        // Wake up with an Update: 2.04 first, then the queued request.
        let path: Vec<&str> = loc.iter().map(String::as_str).collect();
        let r = c.call(request(RequestType::Post, &path, &[], b""));
        assert_eq!(code(&r), "2.04");
        let got = c
            .receive_request(Duration::from_secs(5))
            .expect("queued request delivered");
        (c, got)
    })
    .await;
    let path: Vec<String> = got
        .get_option(CoapOption::UriPath)
        .map(|l| {
            l.iter()
                .map(|v| String::from_utf8_lossy(v).into_owned())
                .collect()
        })
        .unwrap_or_default();
    assert_eq!(path, ["3", "0", "0"]);
    answer(&c2, &got, b"ACME", None);
    let response = tokio::time::timeout(Duration::from_secs(10), pending)
        .await
        .expect("in time")
        .expect("join")
        .expect("response");
    assert_eq!(response.payload, b"ACME");
    server.shutdown().await;
}

#[tokio::test]
async fn queued_request_expires_and_unknown_endpoint_is_refused() {
    let dir = tempfile::tempdir().expect("tempdir");
    let server = Server::start(config(dir.path())).expect("start");
    let addr = server.coap_addr();
    blocking(move || {
        let mut c = Client::new(addr);
        assert_eq!(code(&c.call(register("sleepy2", 60, &["Q"]))), "2.01");
    })
    .await;
    tokio::time::sleep(Duration::from_millis(400)).await;
    let r = server
        .request("sleepy2", read_3_0_0(), true, Duration::from_millis(200))
        .await;
    assert_eq!(r, Err(RequestError::Expired));
    let r = server
        .request("nobody", read_3_0_0(), true, Duration::from_secs(1))
        .await;
    assert_eq!(r, Err(RequestError::UnknownEndpoint("nobody".into())));
    server.shutdown().await;
}

#[tokio::test]
async fn lifetime_expiry_is_reported_by_the_timer() {
    let dir = tempfile::tempdir().expect("tempdir");
    let server = Server::start(config(dir.path())).expect("start");
    let mut events = server.subscribe();
    let addr = server.coap_addr();
    blocking(move || {
        let mut c = Client::new(addr);
        assert_eq!(code(&c.call(register("brief", 1, &[]))), "2.01");
    })
    .await;
    let reg = next_event(&mut events, |e| match e {
        ServerEvent::Expired { registration } => Some(registration.clone()),
        _ => None,
    })
    .await;
    assert_eq!(&*reg.endpoint, "brief");
    server.shutdown().await;
    // The store forgot it too: a restart does not bring it back.
    let server = Server::start(config(dir.path())).expect("restart");
    let r = server
        .request("brief", read_3_0_0(), true, Duration::from_secs(1))
        .await;
    assert_eq!(r, Err(RequestError::UnknownEndpoint("brief".into())));
    server.shutdown().await;
}

#[tokio::test]
async fn send_and_observation_notifications_survive_a_restart() {
    let dir = tempfile::tempdir().expect("tempdir");
    let server = Server::start(config(dir.path())).expect("start");
    let mut events = server.subscribe();
    let addr = server.coap_addr();
    let mut c = blocking(move || {
        let mut c = Client::new(addr);
        assert_eq!(code(&c.call(register("watched", 300, &[]))), "2.01");
        let mut send = request(RequestType::Post, &["dp"], &[], b"payload");
        send.add_option(CoapOption::ContentFormat, vec![112]);
        assert_eq!(code(&c.call(send)), "2.04");
        c
    })
    .await;
    let (cf, payload) = next_event(&mut events, |e| match e {
        ServerEvent::SendReceived {
            content_format,
            payload,
            ..
        } => Some((*content_format, payload.clone())),
        _ => None,
    })
    .await;
    assert_eq!((cf, payload.as_slice()), (Some(112), &b"payload"[..]));

    let h = server.clone();
    let obs = tokio::spawn(async move {
        h.observe("watched", read_3_0_0(), Duration::from_secs(10))
            .await
    });
    c = blocking(move || {
        let req = c
            .receive_request(Duration::from_secs(5))
            .expect("observe request");
        assert_eq!(req.get_observe_value().and_then(Result::ok), Some(0));
        answer(&c, &req, b"v1", Some(1));
        c
    })
    .await;
    let observation = obs.await.expect("join").expect("observation");
    assert_eq!(observation.token.len(), 8);
    server.shutdown().await;

    // A new process: the notification with the old token still reaches the application.
    let server = Server::start(config(dir.path())).expect("restart");
    let mut events = server.subscribe();
    let new_addr = server.coap_addr();
    let token = observation.token.clone();
    let _c = blocking(move || {
        c.server = new_addr;
        let mut n = Packet::new();
        n.header.set_type(MessageType::NonConfirmable);
        n.header.code = MessageClass::Response(ResponseType::Content);
        n.header.message_id = 999;
        n.set_token(token);
        n.set_observe_value(2);
        n.payload = b"v2".to_vec();
        c.send_raw(&n);
        c
    })
    .await;
    let (tok, payload) = next_event(&mut events, |e| match e {
        ServerEvent::Notification { token, packet, .. } => {
            Some((token.clone(), packet.payload.clone()))
        }
        _ => None,
    })
    .await;
    assert_eq!(tok, observation.token);
    assert_eq!(payload, b"v2");
    server.shutdown().await;
}

#[tokio::test]
async fn a_register_again_replaces_the_stored_registration_and_a_start_keeps_the_later_one() {
    let dir = tempfile::tempdir().expect("tempdir");
    let server = Server::start(config(dir.path())).expect("start");
    let addr = server.coap_addr();
    let (first, second) = blocking(move || {
        let mut c = Client::new(addr);
        let a = c.call(register("twice", 600, &[]));
        let b = c.call(register("twice", 600, &[]));
        assert_eq!((code(&a), code(&b)), ("2.01".into(), "2.01".into()));
        (location(&a)[1].clone(), location(&b)[1].clone())
    })
    .await;
    assert_ne!(first, second);
    server.shutdown().await;
    // The store holds the second alone: the driver named the first as the one replaced.
    assert_eq!(stored_ids(dir.path()), vec![second.clone()]);
    let stored = {
        let store = RedbStore::open(dir.path()).expect("open the store");
        // Two records of one endpoint, as only a bug could leave them: a start keeps
        // the later id (the later Register) and deletes the other.
        let mut earlier = store
            .get_registration(&second)
            .expect("get")
            .expect("stored");
        earlier.id = "--earlier--0".into();
        store.put_registration(&earlier).expect("put");
        assert_eq!(store.list_registrations().expect("list").len(), 2);
        second
    };
    let server = Server::start(config(dir.path())).expect("restart");
    let reg = server.registration("twice").await.expect("restored");
    assert_eq!(&*reg.id, stored);
    server.shutdown().await;
    assert_eq!(stored_ids(dir.path()), vec![stored]);
}

#[tokio::test]
async fn an_update_from_a_new_port_is_stored_through_the_refresh_log() {
    let dir = tempfile::tempdir().expect("tempdir");
    let server = Server::start(config(dir.path())).expect("start");
    let addr = server.coap_addr();
    let (id, new_peer) = blocking(move || {
        let mut c = Client::new(addr);
        let r = c.call(register("mover", 600, &[]));
        assert_eq!(code(&r), "2.01");
        let id = location(&r)[1].clone();
        // Behind a NAT the device comes back from another port, and updates.
        std::thread::sleep(Duration::from_millis(20));
        let mut moved = Client::new(addr);
        let u = moved.call(request(RequestType::Post, &["rd", &id], &[], b""));
        assert_eq!(code(&u), "2.04");
        (id, moved.socket.local_addr().expect("addr"))
    })
    .await;
    server.shutdown().await;
    let store = RedbStore::open(dir.path()).expect("open the store");
    let regs = store.list_registrations().expect("list");
    assert_eq!(regs.len(), 1);
    assert_eq!((regs[0].id.as_str(), regs[0].peer), (id.as_str(), new_peer));
    assert!(
        regs[0].last_update_unix_ms > regs[0].registered_at_unix_ms,
        "the Update's time is stored: {regs:?}"
    );
}
