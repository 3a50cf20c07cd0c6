//! Firmware updates of simulated devices through the binary: pull over CoAP, CoAPS and
//! HTTP and push over CoAP to a verified version; every failure the device can report,
//! and a device that lies about its success; a download interrupted and resumed where it
//! stopped; an expired token; used tokens revoked; cancel; a queue-mode device updated
//! across its sleep cycles with a server restart in the middle.

mod http_support;

use std::net::SocketAddr;
use std::time::Duration;

use coap_lite::{CoapOption, MessageClass, MessageType, Packet, RequestType, ResponseType};
use http_support::*;
use lwm2m_client_sim::firmware::{package, FailureMode, FirmwareConfig};
use lwm2m_client_sim::{Client, ClientHandle, Config as ClientConfig, Psk};
use reqwest::{Method, StatusCode};
use serde_json::{json, Value};

const KEY: &str = "00112233445566778899aabbccddeeff";
const FIRMWARE: &str = "/api/clients/{endpoint}/firmware";
/// Bound on the polls of an update's status.
const POLLS: usize = 400;

/// The test configuration; `extra` goes into `[firmware]`, `dtls` into `[dtls]`.
fn config(dir: &std::path::Path, extra: &str, dtls: &str) -> std::path::PathBuf {
    let path = dir.join("server.toml");
    std::fs::write(
        &path,
        format!(
            "[coap_params]\nack_timeout_ms = 300\n[dtls]\ninitial_retransmit_ms = 200\n{dtls}\
             [registry]\nawake_window_ms = 1500\n\
             [firmware]\npoll_interval_ms = 300\n{extra}"
        ),
    )
    .expect("config");
    path
}

fn start_server(dir: &std::path::Path, extra: &str) -> Running {
    start_server_at(dir, "127.0.0.1:0", extra)
}

fn start_server_at(dir: &std::path::Path, coap: &str, extra: &str) -> Running {
    start_configured(dir, coap, config(dir, extra, ""))
}

fn start_configured(dir: &std::path::Path, coap: &str, cfg: std::path::PathBuf) -> Running {
    start_at(
        coap,
        &dir.join("data"),
        &[
            "--config",
            cfg.to_str().expect("utf-8"),
            "--api-token",
            ADMIN,
        ],
        &[],
    )
}

/// A package the simulated devices accept, of `blocks` KiB.
fn firmware_package(version: &str, blocks: usize) -> Vec<u8> {
    let body: Vec<u8> = (0..blocks * 1024 - 100).map(|i| (i % 251) as u8).collect();
    package::build(version, &body)
}

async fn upload(api: &Api, version: &str, bytes: Vec<u8>) -> String {
    let p = api
        .ok(
            Method::POST,
            "/api/packages",
            &[],
            &format!("name=sim&version={version}"),
            Body::Octets(bytes),
            StatusCode::CREATED,
        )
        .await;
    p["id"].as_str().expect("id").to_string()
}

fn device(server: SocketAddr, endpoint: &str, fw: FirmwareConfig) -> ClientConfig {
    let mut c = ClientConfig::new(server, endpoint);
    c.coap.ack_timeout = Duration::from_millis(300);
    c.registration_retry = Duration::from_millis(300);
    c.profile.update_time = Duration::from_millis(300);
    c.firmware = fw;
    c
}

fn secure(mut c: ClientConfig, identity: &str) -> ClientConfig {
    c.psk = Some(Psk {
        identity: identity.as_bytes().to_vec(),
        key: lwm2m_server::hex::decode(KEY).expect("hex"),
    });
    c
}

async fn started(c: ClientConfig) -> ClientHandle {
    let h = Client::start(c).await.expect("client");
    h.wait_registered(STEP).await.expect("registers");
    h
}

async fn begin(api: &Api, endpoint: &str, body: Value) -> Value {
    api.ok(
        Method::POST,
        FIRMWARE,
        &[("endpoint", endpoint)],
        "",
        Body::Json(body),
        StatusCode::ACCEPTED,
    )
    .await
}

/// Polls the update until it has ended.
async fn ended(api: &Api, endpoint: &str) -> Value {
    ended_within(api, endpoint, POLLS).await
}

/// [`ended`], polling at most `polls` times, 100 ms apart.
async fn ended_within(api: &Api, endpoint: &str, polls: usize) -> Value {
    let mut last = Value::Null;
    for _ in 0..polls {
        last = api
            .ok(
                Method::GET,
                FIRMWARE,
                &[("endpoint", endpoint)],
                "",
                Body::None,
                StatusCode::OK,
            )
            .await;
        if ["succeeded", "failed", "cancelled"].contains(&last["phase"].as_str().unwrap_or("")) {
            return last;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("the update of {endpoint} did not end in time: {last}");
}

/// Polls the update until it is in `phase`.
async fn reached(api: &Api, endpoint: &str, phase: &str) -> Value {
    let mut last = Value::Null;
    for _ in 0..POLLS {
        last = api
            .ok(
                Method::GET,
                FIRMWARE,
                &[("endpoint", endpoint)],
                "",
                Body::None,
                StatusCode::OK,
            )
            .await;
        if last["phase"] == phase {
            return last;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("the update of {endpoint} never reached {phase}: {last}");
}

async fn metrics(api: &Api) -> String {
    api.http
        .get(format!("{}/metrics", api.base))
        .send()
        .await
        .expect("metrics")
        .text()
        .await
        .expect("text")
}

async fn device_version(api: &Api, endpoint: &str) -> Value {
    api.ok(
        Method::GET,
        "/api/clients/{endpoint}/{path}",
        &[("endpoint", endpoint), ("path", "3/0/3")],
        "",
        Body::None,
        StatusCode::OK,
    )
    .await["content"]["value"]
        .clone()
}

/// A CoAP GET of a download URI, by hand: its response code.
async fn coap_get(uri: &str) -> ResponseType {
    let rest = uri.strip_prefix("coap://").expect("a coap URI");
    let (authority, path) = rest.split_once('/').expect("a path");
    let server: SocketAddr = authority.parse().expect("address");
    let socket = tokio::net::UdpSocket::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let mut p = Packet::new();
    p.header.set_type(MessageType::Confirmable);
    p.header.code = MessageClass::Request(RequestType::Get);
    p.header.message_id = 1;
    p.set_token(vec![1]);
    for seg in path.split('/') {
        p.add_option(CoapOption::UriPath, seg.as_bytes().to_vec());
    }
    socket
        .send_to(&p.to_bytes().expect("encode"), server)
        .await
        .expect("send");
    let mut buf = [0u8; 1500];
    let (n, _) = tokio::time::timeout(STEP, socket.recv_from(&mut buf))
        .await
        .expect("answer")
        .expect("recv");
    match Packet::from_bytes(&buf[..n]).expect("coap").header.code {
        MessageClass::Response(r) => r,
        other => panic!("not a response: {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pull_over_coap_coaps_and_http_and_push_over_coap_end_verified() {
    let dir = tempfile::tempdir().expect("tempdir");
    let srv = start_server(dir.path(), "");
    let api = Api::new(srv.http);
    let id = upload(&api, "2.0.0", firmware_package("2.0.0", 24)).await;
    api.set_psk("fw-coaps", "fw-coaps-id", KEY).await;
    let devices = [
        (
            "fw-coap",
            json!({"package": id, "protocol": "coap"}),
            srv.coap,
            false,
        ),
        ("fw-coaps", json!({"package": id}), srv.coaps, true),
        (
            "fw-http",
            json!({"package": id, "protocol": "http"}),
            srv.coap,
            false,
        ),
        (
            "fw-push",
            json!({"package": id, "method": "push"}),
            srv.coap,
            false,
        ),
    ];
    let mut handles = Vec::new();
    for (ep, _, server, dtls) in &devices {
        let c = device(*server, ep, FirmwareConfig::default());
        let c = if *dtls { secure(c, "fw-coaps-id") } else { c };
        handles.push(started(c).await);
    }
    let mut events = api.events("", ADMIN).await;
    for (ep, body, _, _) in &devices {
        begin(&api, ep, body.clone()).await;
    }
    let mut uris = Vec::new();
    for (ep, _, _, _) in &devices {
        let u = ended(&api, ep).await;
        assert_eq!(u["phase"], "succeeded", "{ep}: {u}");
        assert_eq!(
            (u["previous_version"].clone(), u["final_version"].clone()),
            (json!("1.0.0"), json!("2.0.0"))
        );
        assert_eq!(device_version(&api, ep).await, "2.0.0");
        uris.push(u["uri"].clone());
    }
    assert_eq!(
        [
            uris[0].as_str().map(|u| &u[..7]),
            uris[1].as_str().map(|u| &u[..8]),
            uris[2].as_str().map(|u| &u[..7])
        ],
        [Some("coap://"), Some("coaps://"), Some("http://")]
    );
    assert_eq!(uris[3], Value::Null, "push writes no URI");
    let phases: Vec<String> = ended(&api, "fw-coap").await["history"]
        .as_array()
        .expect("history")
        .iter()
        .map(|h| h["phase"].as_str().unwrap_or("").to_string())
        .collect();
    assert_eq!(
        phases,
        [
            "starting",
            "downloading",
            "updating",
            "verifying",
            "succeeded"
        ]
    );
    // Each step was an event (and so was each change of the device's state in a step).
    let mut seen: Vec<String> = Vec::new();
    while seen.last().map(String::as_str) != Some("succeeded") {
        let (kind, data) = tokio::time::timeout(STEP, events.recv())
            .await
            .expect("an event")
            .expect("stream");
        let phase = data["update"]["phase"].as_str().unwrap_or("").to_string();
        if kind == "FIRMWARE_STATE" && data["endpoint"] == "fw-coap" && seen.last() != Some(&phase)
        {
            seen.push(phase);
        }
    }
    assert_eq!(seen, phases);

    // The tokens died with their updates.
    assert_eq!(
        coap_get(uris[0].as_str().expect("uri")).await,
        ResponseType::NotFound
    );
    let http = api
        .http
        .get(uris[2].as_str().expect("uri"))
        .send()
        .await
        .expect("http");
    assert_eq!(http.status(), StatusCode::NOT_FOUND);
    let m = metrics(&api).await;
    assert!(
        m.contains("lwm2m_firmware_updates_total{phase=\"succeeded\"} 4"),
        "{m}"
    );
    assert!(
        m.contains("lwm2m_firmware_downloads_total{outcome=\"http\"} 1"),
        "{m}"
    );
    for h in handles {
        h.shutdown().await.ok();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_failure_the_device_reports_ends_the_update_with_its_meaning() {
    let dir = tempfile::tempdir().expect("tempdir");
    let srv = start_server(dir.path(), "");
    let api = Api::new(srv.http);
    let id = upload(&api, "2.0.0", firmware_package("2.0.0", 4)).await;
    let mut cases: Vec<(String, Option<FailureMode>, bool, i64)> = FailureMode::ALL
        .iter()
        .map(|m| {
            (
                format!("fail-{}", m.name()),
                Some(*m),
                false,
                m.result().code(),
            )
        })
        .collect();
    cases.push(("liar".into(), None, true, 1));
    let mut handles = Vec::new();
    for (ep, fail, lie, _) in &cases {
        let fw = FirmwareConfig {
            fail: *fail,
            lie: *lie,
            retries: 0,
            ..FirmwareConfig::default()
        };
        handles.push(started(device(srv.coap, ep, fw)).await);
        begin(&api, ep, json!({"package": id, "protocol": "coap"})).await;
    }
    for (ep, _, lie, result) in &cases {
        let u = ended(&api, ep).await;
        assert_eq!(u["phase"], "failed", "{ep}: {u}");
        let reason = u["reason"].as_str().unwrap_or("");
        if *lie {
            assert!(
                reason.contains("reports success but runs firmware \"1.0.0\""),
                "{ep}: {reason}"
            );
        } else {
            assert!(
                reason.contains(&format!("Update Result {result}:")),
                "{ep}: {reason}"
            );
            assert_eq!(u["result"], json!(result), "{ep}");
        }
    }
    for h in handles {
        h.shutdown().await.ok();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lost_execute_update_is_sent_again_while_the_device_stays_downloaded() {
    let dir = tempfile::tempdir().expect("tempdir");
    let srv = start_server(dir.path(), "");
    let api = Api::new(srv.http);
    let id = upload(&api, "2.0.0", firmware_package("2.0.0", 4)).await;
    // The device acknowledges the first Execute Update and does nothing with it.
    let fw = FirmwareConfig {
        ignore_executes: 1,
        ..FirmwareConfig::default()
    };
    let h = started(device(srv.coap, "fw-deaf", fw)).await;
    begin(&api, "fw-deaf", json!({"package": id, "protocol": "coap"})).await;
    let u = ended(&api, "fw-deaf").await;
    assert_eq!(u["phase"], "succeeded", "{u}");
    assert_eq!(u["final_version"], "2.0.0");
    assert_eq!(device_version(&api, "fw-deaf").await, "2.0.0");
    h.shutdown().await.ok();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_interrupted_download_resumes_from_its_block_and_an_expired_token_is_refused() {
    let dir = tempfile::tempdir().expect("tempdir");
    let srv = start_server(dir.path(), "token_lifetime_s = 3\n");
    let api = Api::new(srv.http);
    let id = upload(&api, "2.0.0", firmware_package("2.0.0", 20)).await;
    let resumed = FirmwareConfig {
        interrupt_after_blocks: Some(7),
        interrupt_for: Duration::from_millis(800),
        ..FirmwareConfig::default()
    };
    let dev = started(device(srv.coap, "resume-dev", resumed)).await;
    begin(
        &api,
        "resume-dev",
        json!({"package": id, "protocol": "coap"}),
    )
    .await;
    let u = ended(&api, "resume-dev").await;
    assert_eq!(u["phase"], "succeeded", "{u}");
    // 20 blocks, the one in flight at the pause perhaps twice: the second connection
    // started at block 7, not 0 (that would be 27).
    let m = metrics(&api).await;
    let served: u64 = m
        .lines()
        .find(|l| l.starts_with("lwm2m_firmware_downloads_total{outcome=\"block\"}"))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|n| n.parse().ok())
        .unwrap_or(0);
    assert!((20..=21).contains(&served), "{served} blocks served");
    dev.shutdown().await.ok();

    // Paused past the token's lifetime: the rest of the download is refused, the device
    // reports the connection lost.
    let late = FirmwareConfig {
        interrupt_after_blocks: Some(2),
        interrupt_for: Duration::from_millis(3500),
        retries: 0,
        ..FirmwareConfig::default()
    };
    let dev = started(device(srv.coap, "late-dev", late)).await;
    begin(&api, "late-dev", json!({"package": id, "protocol": "coap"})).await;
    let u = ended(&api, "late-dev").await;
    assert_eq!(u["phase"], "failed", "{u}");
    assert_eq!(u["result"], 4, "{u}");
    let m = metrics(&api).await;
    assert!(
        m.contains("lwm2m_firmware_downloads_total{outcome=\"expired\"}"),
        "{m}"
    );
    dev.shutdown().await.ok();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cancelled_update_resets_the_device_and_a_package_in_use_stays() {
    let dir = tempfile::tempdir().expect("tempdir");
    let srv = start_server(dir.path(), "");
    let api = Api::new(srv.http);
    let id = upload(&api, "2.0.0", firmware_package("2.0.0", 30)).await;
    let slow = FirmwareConfig {
        block_delay: Duration::from_millis(100),
        ..FirmwareConfig::default()
    };
    let dev = started(device(srv.coap, "cancel-dev", slow)).await;
    begin(
        &api,
        "cancel-dev",
        json!({"package": id, "protocol": "coap"}),
    )
    .await;
    let u = reached(&api, "cancel-dev", "downloading").await;
    let again = api
        .ok(
            Method::POST,
            FIRMWARE,
            &[("endpoint", "cancel-dev")],
            "",
            Body::Json(json!({"package": id})),
            StatusCode::CONFLICT,
        )
        .await;
    assert_eq!(again["error"], "update_in_progress");
    let in_use = api
        .ok(
            Method::DELETE,
            "/api/packages/{id}",
            &[("id", &id)],
            "",
            Body::None,
            StatusCode::CONFLICT,
        )
        .await;
    assert_eq!(in_use["error"], "package_in_use");
    api.ok(
        Method::DELETE,
        FIRMWARE,
        &[("endpoint", "cancel-dev")],
        "",
        Body::None,
        StatusCode::ACCEPTED,
    )
    .await;
    let done = ended(&api, "cancel-dev").await;
    assert_eq!(done["phase"], "cancelled", "{done}");
    assert_eq!(done["reason"], "cancelled by the operator", "{done}");
    let state = api
        .ok(
            Method::GET,
            "/api/clients/{endpoint}/{path}",
            &[("endpoint", "cancel-dev"), ("path", "5/0/3")],
            "",
            Body::None,
            StatusCode::OK,
        )
        .await;
    assert_eq!(state["content"]["value"], 0, "the device is Idle again");
    assert_eq!(
        coap_get(u["uri"].as_str().expect("uri")).await,
        ResponseType::NotFound
    );
    api.ok(
        Method::DELETE,
        "/api/packages/{id}",
        &[("id", &id)],
        "",
        Body::None,
        StatusCode::NO_CONTENT,
    )
    .await;
    dev.shutdown().await.ok();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_queue_mode_device_is_updated_across_sleep_cycles_and_a_restart() {
    let dir = tempfile::tempdir().expect("tempdir");
    let srv = start_server(dir.path(), "");
    let coap = srv.coap.to_string();
    let api = Api::new(srv.http);
    let id = upload(&api, "2.0.0", firmware_package("2.0.0", 8)).await;
    let mut c = device(srv.coap, "sleepy-fw", FirmwareConfig::default());
    c.queue_mode = true;
    // The server's awake window is 1.5 s: the device sleeps longer than that.
    c.awake_window = Duration::from_millis(150);
    c.sleep_duration = Duration::from_millis(2500);
    // A download of 8 blocks taking 6.4 s: the device's own wake-ups (every 2.65 s) fall
    // inside the update however fast the server is.
    c.firmware.block_delay = Duration::from_millis(800);
    c.lifetime = 60;
    let dev = started(c).await;
    let mut events = api.events("ep=sleepy-fw", ADMIN).await;
    // Asleep before the update starts: every step waits for a wake-up.
    wait_event(&mut events, "SLEEPING", |_| true).await;
    begin(
        &api,
        "sleepy-fw",
        json!({"package": id, "protocol": "coap"}),
    )
    .await;
    reached(&api, "sleepy-fw", "downloading").await;
    // SIGKILL in the middle of the update; the new server takes the same CoAP port (the
    // device's download goes on against it, with the same token).
    drop(srv);
    let mut wakes = 0;
    while let Ok(Some((kind, _))) =
        tokio::time::timeout(Duration::from_millis(50), events.recv()).await
    {
        wakes += usize::from(kind == "AWAKE");
    }
    let srv = start_server_at(dir.path(), &coap, "");
    let api = Api::new(srv.http);
    let mut events = api.events("ep=sleepy-fw", ADMIN).await;
    // Every step waits for a wake-up 2.65 s apart: far more than the other tests.
    let u = ended_within(&api, "sleepy-fw", 4 * POLLS).await;
    assert_eq!(u["phase"], "succeeded", "{u}");
    assert_eq!(u["final_version"], "2.0.0");
    while let Ok(Some((kind, _))) =
        tokio::time::timeout(Duration::from_millis(50), events.recv()).await
    {
        wakes += usize::from(kind == "AWAKE");
    }
    println!("the device woke {wakes} times during the update");
    assert!(
        wakes >= 3,
        "the device woke {wakes} times during the update"
    );
    dev.shutdown().await.ok();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_package_for_other_hardware_and_a_stalled_download_fail_with_their_reason() {
    let dir = tempfile::tempdir().expect("tempdir");
    let srv = start_server(dir.path(), "download_timeout_s = 1\n");
    let api = Api::new(srv.http);
    let other = api
        .ok(
            Method::POST,
            "/api/packages",
            &[],
            "name=sim&version=2.0.0&models=OTHER-MODEL",
            Body::Octets(firmware_package("2.0.0", 2)),
            StatusCode::CREATED,
        )
        .await["id"]
        .as_str()
        .expect("id")
        .to_string();
    let dev = started(device(srv.coap, "wrong-model", FirmwareConfig::default())).await;
    begin(&api, "wrong-model", json!({"package": other})).await;
    let u = ended(&api, "wrong-model").await;
    assert_eq!(u["phase"], "failed", "{u}");
    assert!(
        u["reason"]
            .as_str()
            .unwrap_or("")
            .contains("for models [\"OTHER-MODEL\"]; the device reports \"NB-TRACK-1\""),
        "{u}"
    );
    assert_eq!(u["uri"], Value::Null, "nothing was written to the device");
    dev.shutdown().await.ok();

    let id = upload(&api, "2.0.0", firmware_package("2.0.0", 30)).await;
    let slow = FirmwareConfig {
        block_delay: Duration::from_millis(200),
        ..FirmwareConfig::default()
    };
    let dev = started(device(srv.coap, "stalled", slow)).await;
    begin(&api, "stalled", json!({"package": id, "protocol": "coap"})).await;
    let u = ended(&api, "stalled").await;
    assert_eq!(u["phase"], "failed", "{u}");
    assert_eq!(u["reason"], "the download did not finish in time", "{u}");
    dev.shutdown().await.ok();
}

/// A self-signed certificate for 127.0.0.1 and its key, as PEM files in `dir`.
fn server_certificate(dir: &std::path::Path) -> (std::path::PathBuf, std::path::PathBuf, Vec<u8>) {
    use openssl::asn1::Asn1Time;
    use openssl::bn::BigNum;
    use openssl::ec::{EcGroup, EcKey};
    use openssl::hash::MessageDigest;
    use openssl::nid::Nid;
    use openssl::pkey::PKey;
    use openssl::x509::extension::SubjectAlternativeName;
    use openssl::x509::{X509Name, X509};
    let group = EcGroup::from_curve_name(Nid::X9_62_PRIME256V1).expect("P-256");
    let key = PKey::from_ec_key(EcKey::generate(&group).expect("key")).expect("pkey");
    let mut name = X509Name::builder().expect("name");
    name.append_entry_by_nid(Nid::COMMONNAME, "127.0.0.1")
        .expect("cn");
    let name = name.build();
    let mut b = X509::builder().expect("builder");
    b.set_version(2).expect("v3");
    b.set_serial_number(
        &BigNum::from_u32(7)
            .and_then(|n| n.to_asn1_integer())
            .expect("serial"),
    )
    .expect("serial");
    b.set_subject_name(&name).expect("subject");
    b.set_issuer_name(&name).expect("issuer");
    b.set_pubkey(&key).expect("pubkey");
    b.set_not_before(&Asn1Time::days_from_now(0).expect("t"))
        .expect("nb");
    b.set_not_after(&Asn1Time::days_from_now(2).expect("t"))
        .expect("na");
    let san = SubjectAlternativeName::new()
        .ip("127.0.0.1")
        .build(&b.x509v3_context(None, None))
        .expect("san");
    b.append_extension(san).expect("ext");
    b.sign(&key, MessageDigest::sha256()).expect("sign");
    let cert = b.build().to_pem().expect("pem");
    let (cert_path, key_path) = (dir.join("server.pem"), dir.join("server.key"));
    std::fs::write(&cert_path, &cert).expect("write cert");
    std::fs::write(&key_path, key.private_key_to_pem_pkcs8().expect("pem")).expect("write key");
    (cert_path, key_path, cert)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pull_over_https_checks_the_servers_certificate() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (cert, key, cert_pem) = server_certificate(dir.path());
    let cfg = config(
        dir.path(),
        "https = \"127.0.0.1:0\"\n",
        &format!(
            "certificate = {:?}\nprivate_key = {:?}\n",
            cert.to_str().expect("utf-8"),
            key.to_str().expect("utf-8")
        ),
    );
    let srv = start_configured(dir.path(), "127.0.0.1:0", cfg);
    let api = Api::new(srv.http);
    let id = upload(&api, "2.0.0", firmware_package("2.0.0", 12)).await;
    let fw = FirmwareConfig {
        protocols: vec![lwm2m_client_sim::Protocol::Https],
        https_ca_pem: Some(cert_pem),
        ..FirmwareConfig::default()
    };
    let dev = started(device(srv.coap, "fw-https", fw)).await;
    begin(&api, "fw-https", json!({"package": id})).await;
    let u = ended(&api, "fw-https").await;
    assert_eq!(u["phase"], "succeeded", "{u}");
    assert_eq!(u["protocol"], "https");
    assert!(
        u["uri"]
            .as_str()
            .unwrap_or("")
            .starts_with("https://127.0.0.1:"),
        "{u}"
    );
    dev.shutdown().await.ok();

    // A device that does not trust the certificate cannot download.
    let untrusting = FirmwareConfig {
        protocols: vec![lwm2m_client_sim::Protocol::Https],
        retries: 0,
        ..FirmwareConfig::default()
    };
    let dev = started(device(srv.coap, "fw-https-untrusting", untrusting)).await;
    begin(&api, "fw-https-untrusting", json!({"package": id})).await;
    let u = ended(&api, "fw-https-untrusting").await;
    assert_eq!(
        (u["phase"].clone(), u["result"].clone()),
        (json!("failed"), json!(4)),
        "{u}"
    );
    dev.shutdown().await.ok();
}
