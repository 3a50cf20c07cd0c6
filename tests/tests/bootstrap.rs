//! The bootstrap server against simulated devices: inside `lwm2m-server --bootstrap`, a
//! device bootstraps over DTLS with its factory credentials, is given a generated key and
//! registers with it over DTLS at once; everything survives SIGKILL. Refusals (unknown
//! endpoint, plain CoAP where credentials are set, another endpoint's identity,
//! Bootstrap-Pack) leave nothing changed. The standalone `lwm2m-bootstrap` provisions a
//! separate LwM2M server through its API.

mod http_support;

use std::net::SocketAddr;
use std::process::Command;
use std::time::Duration;

use coap_lite::{CoapOption, MessageClass, MessageType, Packet, RequestType, ResponseType};
use http_support::*;
use lwm2m_client_sim::bootstrap::{bootstrap, Account, BootstrapConfig, BootstrapError};
use lwm2m_client_sim::{Client, Psk};
use reqwest::{Method, StatusCode};
use serde_json::{json, Value};

const BS_KEY: &str = "0f0e0d0c0b0a09080706050403020100";
const ONE: &str = "/api/bootstrap/{endpoint}";

fn unhex(s: &str) -> Vec<u8> {
    lwm2m_server::hex::decode(s).expect("hex")
}

fn fingerprint(key: &[u8]) -> String {
    lwm2m_server::hex::encode(&openssl::sha::sha256(key)[..8])
}

fn config_file(dir: &std::path::Path) -> std::path::PathBuf {
    let path = dir.join("server.toml");
    std::fs::write(
        &path,
        "[coap_params]\nack_timeout_ms = 500\n[dtls]\ninitial_retransmit_ms = 200\n",
    )
    .expect("write config");
    path
}

fn start_with_bootstrap(dir: &std::path::Path) -> Running {
    let cfg = config_file(dir);
    start(
        &dir.join("data"),
        &[
            "--config",
            cfg.to_str().expect("utf-8"),
            "--api-token",
            ADMIN,
            "--api-read-token",
            READER,
            "--bootstrap",
            "127.0.0.1:0",
            "--bootstrap-coaps",
            "127.0.0.1:0",
        ],
        &[],
    )
}

fn device(server: SocketAddr, endpoint: &str, psk: Option<(&str, &str)>) -> BootstrapConfig {
    let mut c = BootstrapConfig::new(server, endpoint);
    c.psk = psk.map(|(identity, key)| Psk {
        identity: identity.as_bytes().to_vec(),
        key: unhex(key),
    });
    c.coap.ack_timeout = Duration::from_millis(500);
    c.finish_timeout = Duration::from_secs(20);
    c
}

async fn bootstrapped(c: BootstrapConfig) -> Result<Account, BootstrapError> {
    tokio::time::timeout(STEP, bootstrap(c))
        .await
        .expect("bootstrap ended within the step")
}

async fn put_config(api: &Api, endpoint: &str, body: Value) -> Value {
    api.ok(
        Method::PUT,
        ONE,
        &[("endpoint", endpoint)],
        "",
        Body::Json(body),
        StatusCode::OK,
    )
    .await
}

async fn get_config(api: &Api, endpoint: &str) -> Value {
    api.ok(
        Method::GET,
        ONE,
        &[("endpoint", endpoint)],
        "",
        Body::None,
        StatusCode::OK,
    )
    .await
}

async fn security(api: &Api, endpoint: &str) -> Value {
    api.ok(
        Method::GET,
        "/api/security/clients/{endpoint}",
        &[("endpoint", endpoint)],
        "",
        Body::None,
        StatusCode::OK,
    )
    .await
}

/// Starts a client with the bootstrapped account and waits for its registration.
async fn register(account: &Account, endpoint: &str) -> lwm2m_client_sim::ClientHandle {
    let mut c = account.config(endpoint);
    c.coap.ack_timeout = Duration::from_millis(500);
    c.registration_retry = Duration::from_millis(500);
    let client = Client::start(c).await.expect("client");
    client.wait_registered(STEP).await.expect("registers");
    client
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_device_bootstraps_over_dtls_and_registers_with_its_generated_key() {
    let dir = tempfile::tempdir().expect("tempdir");
    let srv = start_with_bootstrap(dir.path());
    let api = Api::new(srv.http);
    let bs = srv.bootstrap_coaps.expect("bootstrap over DTLS");
    let cfg = put_config(
        &api,
        "bs-dev",
        json!({
            "servers": [{"short_server_id": 7, "uri": format!("coaps://{}", srv.coaps),
                         "lifetime": 60, "psk": {}}],
            "bootstrap_psk": {"identity": "bs-dev-factory", "key": BS_KEY},
            "read_servers": true,
        }),
    )
    .await;
    let account_psk = &cfg["servers"][0]["psk"];
    assert_eq!(account_psk["identity"], "bs-dev", "{cfg}");
    assert!(
        cfg.to_string().find(BS_KEY).is_none(),
        "a key was shown: {cfg}"
    );
    // Provisioned into the LwM2M server's credential store before the device asked.
    let stored = security(&api, "bs-dev").await;
    assert_eq!(
        stored["psk"]["key_fingerprint"],
        account_psk["key_fingerprint"]
    );

    let account = bootstrapped(device(bs, "bs-dev", Some(("bs-dev-factory", BS_KEY))))
        .await
        .expect("bootstraps");
    assert!(account.secure);
    assert_eq!(account.uri, format!("coaps://{}", srv.coaps));
    assert_eq!((account.short_server_id, account.lifetime), (7, Some(60)));
    let psk = account.psk.clone().expect("a PSK account");
    assert_eq!(psk.identity, b"bs-dev");
    assert_eq!(json!(fingerprint(&psk.key)), account_psk["key_fingerprint"]);

    let client = register(&account, "bs-dev").await;
    let info = api
        .ok(
            Method::GET,
            "/api/clients/{endpoint}",
            &[("endpoint", "bs-dev")],
            "",
            Body::None,
            StatusCode::OK,
        )
        .await;
    assert_eq!(
        (info["transport"].clone(), info["lifetime_s"].clone()),
        (json!("dtls"), json!(60))
    );

    let status = get_config(&api, "bs-dev").await["last_bootstrap"].clone();
    assert_eq!(status["state"], "finished", "{status}");
    assert_eq!(status["transport"], "coaps");
    let steps: Vec<String> = status["steps"]
        .as_array()
        .expect("steps")
        .iter()
        .map(|s| {
            format!(
                "{} {}",
                s["request"].as_str().unwrap_or(""),
                s["outcome"].as_str().unwrap_or("")
            )
        })
        .collect();
    assert_eq!(
        steps.first().map(String::as_str),
        Some("Bootstrap-Read /1 2.05")
    );
    assert!(
        steps.contains(&"Bootstrap-Discover / 2.05".to_string()),
        "{steps:?}"
    );
    assert_eq!(
        steps.last().map(String::as_str),
        Some("Bootstrap-Finish 2.04")
    );
    let metrics = api
        .http
        .get(format!("{}/metrics", api.base))
        .send()
        .await
        .expect("metrics")
        .text()
        .await
        .expect("text");
    assert!(
        metrics.contains("lwm2m_bootstrap_sessions_total{outcome=\"finished\"} 1"),
        "{metrics}"
    );
    client.shutdown().await.ok();

    // SIGKILL: the configuration, the status and the provisioned key survive.
    let before = get_config(&api, "bs-dev").await;
    drop(srv);
    let srv = start_with_bootstrap(dir.path());
    let api = Api::new(srv.http);
    assert_eq!(get_config(&api, "bs-dev").await, before);
    let stored = security(&api, "bs-dev").await;
    assert_eq!(
        stored["psk"]["key_fingerprint"],
        account_psk["key_fingerprint"]
    );
    // And the device can bootstrap again from the restarted server.
    let bs = srv.bootstrap_coaps.expect("bootstrap over DTLS");
    bootstrapped(device(bs, "bs-dev", Some(("bs-dev-factory", BS_KEY))))
        .await
        .expect("bootstraps again");
}

/// A Bootstrap-Pack-Request, sent by hand: the server refuses it so that the client falls
/// back to Bootstrap-Request.
async fn bootstrap_pack(server: SocketAddr) -> Packet {
    let socket = tokio::net::UdpSocket::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let mut p = Packet::new();
    p.header.set_type(MessageType::Confirmable);
    p.header.code = MessageClass::Request(RequestType::Get);
    p.header.message_id = 7;
    p.set_token(vec![1, 2]);
    p.add_option(CoapOption::UriPath, b"bspack".to_vec());
    p.add_option(CoapOption::UriQuery, b"ep=anyone".to_vec());
    socket
        .send_to(&p.to_bytes().expect("encode"), server)
        .await
        .expect("send");
    let mut buf = [0u8; 1500];
    let (n, _) = tokio::time::timeout(STEP, socket.recv_from(&mut buf))
        .await
        .expect("an answer")
        .expect("recv");
    Packet::from_bytes(&buf[..n]).expect("a CoAP answer")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refused_bootstraps_and_configurations_change_nothing() {
    let dir = tempfile::tempdir().expect("tempdir");
    let srv = start_with_bootstrap(dir.path());
    let api = Api::new(srv.http);
    let plain = srv.bootstrap.expect("bootstrap over CoAP");
    let secure = srv.bootstrap_coaps.expect("bootstrap over DTLS");
    let account = |ssid: u16| json!([{"short_server_id": ssid, "uri": format!("coaps://{}", srv.coaps), "psk": {}}]);
    put_config(
        &api,
        "dev-a",
        json!({"servers": account(1), "bootstrap_psk": {"identity": "factory-a", "key": BS_KEY}}),
    )
    .await;
    let b = put_config(
        &api,
        "dev-b",
        json!({"servers": account(1), "bootstrap_psk": {"identity": "factory-b", "key": BS_KEY}}),
    )
    .await;

    let refused = |r: Result<Account, BootstrapError>| match r {
        Err(BootstrapError::Refused { code, diagnostic }) => (code, diagnostic),
        other => panic!("expected a refusal, got {other:?}"),
    };
    let (code, why) = refused(bootstrapped(device(plain, "nobody", None)).await);
    assert_eq!(code, ResponseType::BadRequest);
    assert!(why.contains("no bootstrap configuration"), "{why}");
    // dev-b has bootstrap credentials: plain CoAP is not enough.
    let (code, why) = refused(bootstrapped(device(plain, "dev-b", None)).await);
    assert_eq!(code, ResponseType::BadRequest);
    assert!(why.contains("over DTLS"), "{why}");
    // dev-a's factory credentials do not speak for dev-b.
    let (code, why) =
        refused(bootstrapped(device(secure, "dev-b", Some(("factory-a", BS_KEY)))).await);
    assert_eq!(code, ResponseType::BadRequest);
    assert!(why.contains("not the one of endpoint"), "{why}");
    let pack = bootstrap_pack(plain).await;
    assert_eq!(
        pack.header.code,
        MessageClass::Response(ResponseType::MethodNotAllowed)
    );
    assert!(String::from_utf8_lossy(&pack.payload).contains("Bootstrap-Request"));
    assert_eq!(
        get_config(&api, "dev-b").await,
        b,
        "no session was recorded"
    );

    // Operator mistakes: JSON errors, nothing stored.
    let bad = |body: Body, status: StatusCode, error: &'static str| {
        let api = api.clone();
        async move {
            let answer = api
                .ok(Method::PUT, ONE, &[("endpoint", "dev-c")], "", body, status)
                .await;
            assert_eq!(answer["error"], error, "{answer}");
        }
    };
    bad(Body::Text("{".into()), StatusCode::BAD_REQUEST, "bad_body").await;
    bad(
        Body::Json(json!({"servers": [{"short_server_id": 1, "uri": "coaps://h:1"}]})),
        StatusCode::BAD_REQUEST,
        "bad_body",
    )
    .await;
    bad(
        Body::Json(json!({"servers": account(1), "bootstrap_psk": {"identity": "factory-a", "key": BS_KEY}})),
        StatusCode::CONFLICT,
        "identity_taken",
    )
    .await;
    // The PSK identity of dev-a's account in the LwM2M server's store is taken too.
    bad(
        Body::Json(
            json!({"servers": [{"short_server_id": 1, "uri": format!("coaps://{}", srv.coaps),
                                      "psk": {"identity": "dev-a"}}]}),
        ),
        StatusCode::CONFLICT,
        "identity_taken",
    )
    .await;
    let ro = api
        .call(
            Method::PUT,
            ONE,
            &[("endpoint", "dev-c")],
            "",
            Body::Json(json!({"servers": account(1)})),
            Auth::Bearer(READER),
        )
        .await;
    assert_eq!(ro.0, StatusCode::FORBIDDEN);
    for endpoint in ["dev-c"] {
        let missing = api
            .ok(
                Method::GET,
                ONE,
                &[("endpoint", endpoint)],
                "",
                Body::None,
                StatusCode::NOT_FOUND,
            )
            .await;
        assert_eq!(missing["error"], "no_bootstrap_config");
    }
    api.ok(
        Method::GET,
        "/api/security/clients/{endpoint}",
        &[("endpoint", "dev-c")],
        "",
        Body::None,
        StatusCode::NOT_FOUND,
    )
    .await;
    let page = api
        .ok(
            Method::GET,
            "/api/bootstrap",
            &[],
            "prefix=dev-&limit=1",
            Body::None,
            StatusCode::OK,
        )
        .await;
    assert_eq!(
        (
            page["total"].clone(),
            page["configs"][0]["endpoint"].clone()
        ),
        (json!(2), json!("dev-a"))
    );
    assert_eq!(page["next"], "dev-a");
    let rest = api
        .ok(
            Method::GET,
            "/api/bootstrap",
            &[],
            "prefix=dev-&limit=5&after=dev-a",
            Body::None,
            StatusCode::OK,
        )
        .await;
    assert_eq!(rest["configs"][0]["endpoint"], "dev-b");
    assert_eq!(
        rest["next"],
        Value::Null,
        "a page that is not full is the last"
    );
    api.ok(
        Method::DELETE,
        ONE,
        &[("endpoint", "dev-a")],
        "",
        Body::None,
        StatusCode::NO_CONTENT,
    )
    .await;
    api.ok(
        Method::DELETE,
        ONE,
        &[("endpoint", "dev-a")],
        "",
        Body::None,
        StatusCode::NOT_FOUND,
    )
    .await;
    // Its bootstrap identity is free again; its server credentials stay.
    let (code, _) =
        refused(bootstrapped(device(secure, "dev-a", Some(("factory-b", BS_KEY)))).await);
    assert_eq!(code, ResponseType::BadRequest);
    security(&api, "dev-a").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_standalone_bootstrap_server_provisions_a_separate_lwm2m_server() {
    let dir = tempfile::tempdir().expect("tempdir");
    let cfg = config_file(dir.path());
    let cfg = cfg.to_str().expect("utf-8");
    let srv = start(
        &dir.path().join("data"),
        &["--config", cfg, "--api-token", ADMIN],
        &[],
    );
    let mut cmd = Command::new(binary("lwm2m-bootstrap"));
    cmd.args([
        "--coap",
        "127.0.0.1:0",
        "--coaps",
        "off",
        "--http",
        "127.0.0.1:0",
        "--config",
        cfg,
    ])
    .arg("--data-dir")
    .arg(dir.path().join("bootstrap"))
    .args([
        "--server-api",
        &format!("http://{}", srv.http),
        "--server-api-token",
        ADMIN,
    ])
    .env("RUST_LOG", "warn")
    .env_remove("LWM2M_API_TOKEN")
    .env_remove("LWM2M_API_READ_TOKEN");
    let (child, line, rx) = spawn(cmd, "lwm2m-bootstrap");
    let standalone = Standalone(child);
    let addrs = banner(&line);
    let addr = |k: &str| addrs.iter().find(|(n, _)| n == k).and_then(|(_, a)| *a);
    let (Some(bs), None, Some(bs_http)) =
        (addr("bootstrap"), addr("bootstrap-coaps"), addr("http"))
    else {
        panic!("unexpected first line {line:?}");
    };
    let token =
        std::fs::read_to_string(token_file(&rx).expect("a generated token")).expect("token");
    let bs_api = Api::new(bs_http);
    let answer = bs_api
        .call(
            Method::PUT,
            ONE,
            &[("endpoint", "split-dev")],
            "",
            Body::Json(
                json!({"servers": [{"short_server_id": 3, "uri": format!("coaps://{}", srv.coaps),
                                          "lifetime": 90, "psk": {"identity": "split-id"}}]}),
            ),
            Auth::Bearer(token.trim()),
        )
        .await;
    assert_eq!(answer.0, StatusCode::OK, "{}", answer.1);
    let api = Api::new(srv.http);
    let stored = security(&api, "split-dev").await;
    assert_eq!(stored["psk"]["identity"], "split-id");
    assert_eq!(
        stored["psk"]["key_fingerprint"],
        answer.1["servers"][0]["psk"]["key_fingerprint"]
    );

    let account = bootstrapped(device(bs, "split-dev", None))
        .await
        .expect("bootstraps");
    let client = register(&account, "split-dev").await;
    client.shutdown().await.ok();
    // The standalone API is as strict as the server's.
    let anonymous = bs_api
        .call(
            Method::GET,
            "/api/bootstrap",
            &[],
            "",
            Body::None,
            Auth::None,
        )
        .await;
    assert_eq!(anonymous.0, StatusCode::UNAUTHORIZED);
    drop(standalone);
}

/// The standalone binary; killed on drop.
struct Standalone(std::process::Child);

impl Drop for Standalone {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}
