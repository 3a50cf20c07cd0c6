//! Simulated devices over DTLS-PSK against the real binary: registration and device
//! management, a wrong key, an identity speaking for another endpoint, a queue-mode
//! device that shakes hands again on every wake, a handshake through a link losing 20%
//! of its datagrams, and a flood of ClientHellos that must leave no state behind.

mod http_support;

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use http_support::*;
use lwm2m_client_sim::{Client, Config as ClientConfig, Psk};
use lwm2m_objects::Path;
use reqwest::{Method, StatusCode};
use serde_json::{json, Value};
use tokio::net::UdpSocket;

const KEY: &str = "00112233445566778899aabbccddeeff";
const NODE: &str = "/api/clients/{endpoint}/{path}";

fn unhex(s: &str) -> Vec<u8> {
    lwm2m_server::hex::decode(s).expect("hex")
}

fn config_file(dir: &std::path::Path) -> std::path::PathBuf {
    config_with(dir, "")
}

fn config_with(dir: &std::path::Path, dtls: &str) -> std::path::PathBuf {
    let path = dir.join("server.toml");
    std::fs::write(
        &path,
        format!(
            "[registry]\nawake_window_ms = 1500\n[coap_params]\nack_timeout_ms = 500\n\
             [dtls]\ninitial_retransmit_ms = 200\n{dtls}"
        ),
    )
    .expect("write config");
    path
}

async fn credentials(api: &Api, endpoint: &str, identity: &str) {
    api.set_psk(endpoint, identity, KEY).await;
}

fn device_config(server: SocketAddr, endpoint: &str, identity: &str, key: &str) -> ClientConfig {
    let mut c = ClientConfig::new(server, endpoint);
    c.psk = Some(Psk {
        identity: identity.as_bytes().to_vec(),
        key: unhex(key),
    });
    c.coap.ack_timeout = Duration::from_millis(500);
    c.registration_retry = Duration::from_millis(500);
    c
}

async fn clients(api: &Api) -> Value {
    api.ok(
        Method::GET,
        "/api/clients",
        &[],
        "",
        Body::None,
        StatusCode::OK,
    )
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn devices_over_dtls_psk_are_managed_and_impostors_refused() {
    let dir = tempfile::tempdir().expect("tempdir");
    let cfg = config_file(dir.path());
    let cfg = cfg.to_str().expect("utf-8");
    let srv = start(
        &dir.path().join("data"),
        &["--config", cfg, "--api-token", ADMIN],
        &[],
    );
    let api = Api::new(srv.http);
    credentials(&api, "dtls-dev", "dtls-dev-id").await;
    credentials(&api, "dtls-other", "dtls-other-id").await;
    let mut events = api.events("ep=dtls-dev", ADMIN).await;

    let dev = Client::start(device_config(srv.coaps, "dtls-dev", "dtls-dev-id", KEY))
        .await
        .expect("device");
    dev.wait_registered(STEP)
        .await
        .expect("registers over DTLS");
    let reg = wait_event(&mut events, "REGISTRATION", |_| true).await;
    let registration_id = reg["registration"]["registration_id"].clone();
    let info = api
        .ok(
            Method::GET,
            "/api/clients/{endpoint}",
            &[("endpoint", "dtls-dev")],
            "",
            Body::None,
            StatusCode::OK,
        )
        .await;
    assert_eq!(info["transport"], "dtls");

    // Device management over the session.
    let read = api
        .ok(
            Method::GET,
            NODE,
            &[("endpoint", "dtls-dev"), ("path", "3/0/0")],
            "",
            Body::None,
            StatusCode::OK,
        )
        .await;
    assert_eq!(read["content"]["type"], "STRING");
    api.ok(
        Method::PUT,
        NODE,
        &[("endpoint", "dtls-dev"), ("path", "3/0/14")],
        "",
        Body::Json(json!({ "kind": "singleResource", "id": 14, "value": "+01:00" })),
        StatusCode::OK,
    )
    .await;
    let ob = api
        .ok(
            Method::POST,
            "/api/clients/{endpoint}/{path}/observe",
            &[("endpoint", "dtls-dev"), ("path", "3/0/9")],
            "pmax=1",
            Body::None,
            StatusCode::OK,
        )
        .await;
    let token = ob["observation"].as_str().expect("token").to_string();
    wait_event(&mut events, "NOTIFICATION", |v| {
        v["observation"] == token.as_str()
    })
    .await;
    dev.send(vec![Path::resource(3, 0, 9)]).await.expect("send");
    wait_event(&mut events, "SEND", |_| true).await;

    // The right identity with the wrong key never gets through.
    let wrong = Client::start(device_config(
        srv.coaps,
        "dtls-other",
        "dtls-other-id",
        "ffeeddccbbaa99887766554433221100",
    ))
    .await
    .expect("device");
    assert!(wrong.wait_registered(Duration::from_secs(3)).await.is_err());
    wrong.shutdown().await.ok();

    // A valid identity may not speak for another endpoint: not as a new one...
    let impostor = Client::start(device_config(srv.coaps, "impostor", "dtls-dev-id", KEY))
        .await
        .expect("device");
    assert!(impostor
        .wait_registered(Duration::from_secs(3))
        .await
        .is_err());
    impostor.shutdown().await.ok();
    // ...nor as an existing one.
    let thief = Client::start(device_config(srv.coaps, "dtls-dev", "dtls-other-id", KEY))
        .await
        .expect("device");
    assert!(thief.wait_registered(Duration::from_secs(3)).await.is_err());
    thief.shutdown().await.ok();
    let list = clients(&api).await;
    assert_eq!(list["total"], 1, "{list}");
    assert_eq!(
        list["clients"][0]["registration_id"], registration_id,
        "unchanged"
    );
    // And a device with credentials may not fall back to plain CoAP.
    let mut plain = ClientConfig::new(srv.coap, "dtls-other");
    plain.registration_retry = Duration::from_millis(500);
    let plain = Client::start(plain).await.expect("device");
    assert!(plain.wait_registered(Duration::from_secs(2)).await.is_err());
    plain.shutdown().await.ok();

    dev.shutdown().await.expect("de-registers");
    let d = wait_event(&mut events, "DEREGISTRATION", |_| true).await;
    assert_eq!(d["reason"], "deregister");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sleeping_dtls_device_gets_its_queued_request_after_a_new_handshake() {
    let dir = tempfile::tempdir().expect("tempdir");
    let cfg = config_file(dir.path());
    let cfg = cfg.to_str().expect("utf-8");
    let srv = start(
        &dir.path().join("data"),
        &["--config", cfg, "--api-token", ADMIN],
        &[],
    );
    let api = Api::new(srv.http);
    credentials(&api, "dtls-sleepy", "sleepy-id").await;
    let mut events = api.events("ep=dtls-sleepy", ADMIN).await;
    let mut c = device_config(srv.coaps, "dtls-sleepy", "sleepy-id", KEY);
    c.queue_mode = true;
    c.awake_window = Duration::from_millis(500);
    c.sleep_duration = Duration::from_secs(600);
    // A new source port after every sleep, as behind a carrier NAT.
    c.rebind_on_wake = true;
    let dev = Client::start(c).await.expect("device");
    dev.wait_registered(STEP).await.expect("registers");
    wait_event(&mut events, "SLEEPING", |_| true).await;
    let queued = api
        .ok(
            Method::GET,
            NODE,
            &[("endpoint", "dtls-sleepy"), ("path", "3/0/0")],
            "",
            Body::None,
            StatusCode::ACCEPTED,
        )
        .await;
    let id = queued["request_id"].as_str().expect("id").to_string();
    dev.wake().await.expect("wake");
    wait_event(&mut events, "AWAKE", |_| true).await;
    let done = wait_event(&mut events, "REQUEST_RESPONSE", |v| {
        v["request"]["id"] == id.as_str()
    })
    .await;
    assert_eq!(done["request"]["status"], "done", "{done}");
    // The wake was an abbreviated handshake: the session was resumed.
    let (_, metrics) = api
        .call(Method::GET, "/metrics", &[], "", Body::None, Auth::None)
        .await;
    let metrics = metrics.as_str().unwrap_or_default().to_string();
    assert!(
        metrics.contains("lwm2m_dtls_handshakes_total{resumed=\"true\"} 1"),
        "{metrics}"
    );
    assert!(metrics.contains("lwm2m_dtls_handshakes_total{resumed=\"false\"} 1"));
    dev.shutdown().await.ok();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_waits_while_the_idle_session_is_gone_and_goes_out_on_the_next_handshake() {
    let dir = tempfile::tempdir().expect("tempdir");
    let cfg = config_with(dir.path(), "idle_timeout_ms = 700\n");
    let cfg = cfg.to_str().expect("utf-8");
    let srv = start(
        &dir.path().join("data"),
        &["--config", cfg, "--api-token", ADMIN],
        &[],
    );
    let api = Api::new(srv.http);
    credentials(&api, "dtls-idle", "idle-id").await;
    let mut events = api.events("ep=dtls-idle", ADMIN).await;
    let dev = Client::start(device_config(srv.coaps, "dtls-idle", "idle-id", KEY))
        .await
        .expect("device");
    dev.wait_registered(STEP).await.expect("registers");
    wait_event(&mut events, "REGISTRATION", |_| true).await;
    let info = "/api/clients/{endpoint}";
    // The server drops the idle session: the device is registered, not reachable.
    let deadline = std::time::Instant::now() + STEP;
    loop {
        let c = api
            .ok(
                Method::GET,
                info,
                &[("endpoint", "dtls-idle")],
                "",
                Body::None,
                StatusCode::OK,
            )
            .await;
        if c["awake"] == false {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the idle session was never dropped"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let queued = api
        .ok(
            Method::GET,
            NODE,
            &[("endpoint", "dtls-idle"), ("path", "3/0/0")],
            "",
            Body::None,
            StatusCode::ACCEPTED,
        )
        .await;
    let id = queued["request_id"].as_str().expect("id").to_string();
    // Its next Update shakes hands again (resumed), and the request goes out.
    dev.update().await.expect("update");
    let done = wait_event(&mut events, "REQUEST_RESPONSE", |v| {
        v["request"]["id"] == id.as_str()
    })
    .await;
    assert_eq!(done["request"]["status"], "done", "{done}");
    dev.shutdown().await.ok();
}

/// Forwards between one client and `server`, dropping `percent` of the datagrams each way.
async fn lossy_relay(server: SocketAddr, percent: u64) -> (SocketAddr, Arc<AtomicU64>) {
    let front = Arc::new(UdpSocket::bind("127.0.0.1:0").await.expect("bind"));
    let back = Arc::new(UdpSocket::bind("127.0.0.1:0").await.expect("bind"));
    let addr = front.local_addr().expect("addr");
    let dropped = Arc::new(AtomicU64::new(0));
    let (f, b, d) = (front.clone(), back.clone(), dropped.clone());
    tokio::spawn(async move {
        let mut rng = 0x2545_F491_4F6C_DD1Du64;
        let mut lose = move || {
            rng ^= rng << 13;
            rng ^= rng >> 7;
            rng ^= rng << 17;
            rng % 100 < percent
        };
        let mut client = None;
        let (mut up, mut down) = (vec![0u8; 65_535], vec![0u8; 65_535]);
        // Bounded in time by the test's runtime: the task ends with it.
        loop {
            tokio::select! {
                Ok((n, from)) = f.recv_from(&mut up) => {
                    client = Some(from);
                    if lose() { d.fetch_add(1, Ordering::Relaxed); } else { let _ = b.send_to(&up[..n], server).await; }
                }
                Ok((n, _)) = b.recv_from(&mut down) => {
                    if let Some(c) = client {
                        if lose() { d.fetch_add(1, Ordering::Relaxed); } else { let _ = f.send_to(&down[..n], c).await; }
                    }
                }
            }
        }
    });
    (addr, dropped)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dtls_handshake_and_registration_get_through_twenty_percent_loss() {
    let dir = tempfile::tempdir().expect("tempdir");
    let cfg = config_file(dir.path());
    let cfg = cfg.to_str().expect("utf-8");
    let srv = start(
        &dir.path().join("data"),
        &["--config", cfg, "--api-token", ADMIN],
        &[],
    );
    let api = Api::new(srv.http);
    credentials(&api, "lossy-dev", "lossy-id").await;
    let (relay, dropped) = lossy_relay(srv.coaps, 20).await;
    let dev = Client::start(device_config(relay, "lossy-dev", "lossy-id", KEY))
        .await
        .expect("device");
    dev.wait_registered(Duration::from_secs(60))
        .await
        .expect("registers through the lossy link");
    let read = api
        .ok(
            Method::GET,
            NODE,
            &[("endpoint", "lossy-dev"), ("path", "3/0/0")],
            "timeout=60",
            Body::None,
            StatusCode::OK,
        )
        .await;
    assert_eq!(read["content"]["type"], "STRING");
    assert!(dropped.load(Ordering::Relaxed) > 0, "the link lost nothing");
    dev.shutdown().await.ok();
}

/// Resident memory of a process, in KiB.
fn rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_hello_flood_from_many_ports_keeps_no_state() {
    let dir = tempfile::tempdir().expect("tempdir");
    let cfg = config_file(dir.path());
    let cfg = cfg.to_str().expect("utf-8");
    let srv = start(
        &dir.path().join("data"),
        &["--config", cfg, "--api-token", ADMIN],
        &[],
    );
    let api = Api::new(srv.http);
    credentials(&api, "after-flood", "after-id").await;
    let pid = srv.child.id();
    // A real ClientHello, sent from 20,000 source addresses (200 sockets, 100 each).
    let mut hello_src =
        lwm2m_server::dtls::DtlsClient::psk(b"x", b"y", None, Duration::from_secs(1))
            .expect("client");
    let hello = hello_src.poll_transmit().pop().expect("ClientHello");
    let before = rss_kib(pid);
    let mut answered = 0u64;
    for _ in 0..200 {
        let sock = UdpSocket::bind("127.0.0.1:0").await.expect("bind");
        for _ in 0..100 {
            sock.send_to(&hello, srv.coaps).await.expect("send");
        }
        let mut buf = [0u8; 2048];
        while let Ok(Ok((n, _))) =
            tokio::time::timeout(Duration::from_millis(2), sock.recv_from(&mut buf)).await
        {
            assert!(n <= hello.len(), "an answer larger than the ClientHello");
            answered += 1;
        }
    }
    let after = rss_kib(pid);
    assert!(
        answered > 0,
        "the server answered no ClientHello with a cookie"
    );
    // 20,000 sessions would hold hundreds of megabytes; cookies hold nothing.
    assert!(
        after.saturating_sub(before) < 16 * 1024,
        "the flood grew the server by {} KiB",
        after.saturating_sub(before)
    );
    // The server still serves a real device.
    let dev = Client::start(device_config(srv.coaps, "after-flood", "after-id", KEY))
        .await
        .expect("device");
    dev.wait_registered(STEP)
        .await
        .expect("registers after the flood");
    dev.shutdown().await.ok();
}
