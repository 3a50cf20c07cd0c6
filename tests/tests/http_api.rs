//! The HTTP API of the real binary, end to end: every route against simulated devices,
//! server-sent events of every kind, the queued-request flow of a sleeping device,
//! authentication on every route, errors, token sources, and the OpenAPI document
//! checked against the routes these tests call.

mod http_support;

use std::collections::BTreeSet;
use std::net::UdpSocket;
use std::time::Duration;

use coap_lite::{CoapOption, MessageClass, MessageType, Packet, RequestType};
use http_support::*;
use lwm2m_client_sim::{Client, ClientHandle, Config as ClientConfig};
use lwm2m_objects::Path;
use reqwest::{Method, StatusCode};
use serde_json::{json, Value};

const DEV: &str = "http-dev";
const SLEEPY: &str = "http-sleepy";

/// These tests count observations and queued requests exactly: the inventory's own
/// reads and observations (tested in `fleet_campaigns`) are off.
fn config_file(dir: &std::path::Path, extra: &str) -> std::path::PathBuf {
    let path = dir.join("server.toml");
    std::fs::write(
        &path,
        format!(
            "[registry]\nawake_window_ms = 1500\n[coap_params]\nack_timeout_ms = 500\nmax_retransmit = 2\n\
             [fleet]\ninventory_reads = false\n{extra}"
        ),
    )
    .expect("write config");
    path
}

async fn device(
    coap: std::net::SocketAddr,
    name: &str,
    tune: impl FnOnce(&mut ClientConfig),
) -> ClientHandle {
    let mut config = ClientConfig::new(coap, name);
    config.extra_objects = vec![9];
    tune(&mut config);
    let device = Client::start(config).await.expect("device starts");
    device
        .wait_registered(STEP)
        .await
        .expect("device registers");
    device
}

fn p<'a>(endpoint: &'a str, path: &'a str) -> [(&'a str, &'a str); 2] {
    [("endpoint", endpoint), ("path", path)]
}

const NODE: &str = "/api/clients/{endpoint}/{path}";
const NONE: Body = Body::None;

fn single(id: u16, value: Value) -> Value {
    json!({ "kind": "singleResource", "id": id, "value": value })
}

/// Every (method, path) of the OpenAPI document.
fn documented(doc: &Value) -> BTreeSet<(String, String)> {
    let mut out = BTreeSet::new();
    for (path, item) in doc["paths"].as_object().expect("paths") {
        for m in ["get", "put", "post", "delete", "patch"] {
            if item.get(m).is_some() {
                out.insert((m.to_string(), path.clone()));
            }
        }
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_route_with_events_auth_and_the_openapi_document() {
    let dir = tempfile::tempdir().expect("tempdir");
    let cfg = config_file(dir.path(), "");
    let cfg = cfg.to_str().expect("utf-8");
    let srv = start(
        &dir.path().join("data"),
        &[
            "--config",
            cfg,
            "--api-token",
            ADMIN,
            "--api-read-token",
            READER,
        ],
        &[],
    );
    let api = Api::new(srv.http);
    let mut all = api.events("", READER).await;
    let mut mine = api.events(&format!("ep={DEV}"), READER).await;

    let dev = device(srv.coap, DEV, |_| {}).await;
    let reg = wait_event(&mut all, "REGISTRATION", |v| v["endpoint"] == DEV).await;
    assert_eq!(reg["registration"]["version"], "1.1");

    // The server's own routes.
    let health = api
        .call(Method::GET, "/healthz", &[], "", NONE, Auth::None)
        .await;
    assert_eq!(health.0, StatusCode::OK);
    assert_eq!(health.1["status"], "ok");
    let (status, metrics) = api
        .call(Method::GET, "/metrics", &[], "", NONE, Auth::None)
        .await;
    assert_eq!(status, StatusCode::OK);
    assert!(metrics
        .as_str()
        .is_some_and(|m| m.contains("lwm2m_registered_devices")));
    let (status, html) = api
        .call(Method::GET, "/docs", &[], "", NONE, Auth::None)
        .await;
    assert_eq!(status, StatusCode::OK);
    assert!(html.as_str().is_some_and(|h| h.contains("<html")));
    let (status, doc) = api
        .call(
            Method::GET,
            "/api/openapi.json",
            &[],
            "",
            NONE,
            Auth::Bearer(READER),
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    assert!(doc["openapi"]
        .as_str()
        .is_some_and(|v| v.starts_with("3.1")));

    // Inventory.
    let list = api
        .ok(Method::GET, "/api/clients", &[], "", NONE, StatusCode::OK)
        .await;
    assert_eq!(list["total"], 1);
    assert_eq!(list["clients"][0]["endpoint"], DEV);
    assert_eq!(list["clients"][0]["awake"], true);
    let none = api
        .ok(
            Method::GET,
            "/api/clients",
            &[],
            "prefix=zzz",
            NONE,
            StatusCode::OK,
        )
        .await;
    assert_eq!(none["total"], 0);
    let bad = api
        .ok(
            Method::GET,
            "/api/clients",
            &[],
            "limit=0",
            NONE,
            StatusCode::BAD_REQUEST,
        )
        .await;
    assert_eq!(bad["error"], "bad_query");
    let one = api
        .ok(
            Method::GET,
            "/api/clients/{endpoint}",
            &[("endpoint", DEV)],
            "",
            NONE,
            StatusCode::OK,
        )
        .await;
    assert!(one["objects"]
        .as_array()
        .is_some_and(|o| o.iter().any(|l| l["path"] == "/3/0")));
    assert!(one["last_seen_unix_ms"].as_u64().is_some_and(|t| t > 0));

    // Read, in every format the device speaks.
    let read = api
        .ok(Method::GET, NODE, &p(DEV, "3/0"), "", NONE, StatusCode::OK)
        .await;
    assert_eq!(read["status"], "CONTENT");
    assert_eq!(read["content"]["kind"], "instance");
    let manufacturer = read["content"]["resources"]
        .as_array()
        .and_then(|r| r.iter().find(|r| r["id"] == 0))
        .cloned()
        .expect("resource 0");
    assert_eq!(manufacturer["type"], "STRING");
    for f in ["tlv", "senml-json", "senml-cbor", "json"] {
        let again = api
            .ok(
                Method::GET,
                NODE,
                &p(DEV, "3/0/0"),
                &format!("format={f}"),
                NONE,
                StatusCode::OK,
            )
            .await;
        assert_eq!(
            again["content"]["value"], manufacturer["value"],
            "format {f}"
        );
    }
    let text = api
        .ok(
            Method::GET,
            NODE,
            &p(DEV, "3/0/0"),
            "format=text",
            NONE,
            StatusCode::OK,
        )
        .await;
    assert_eq!(text["content"]["value"], manufacturer["value"]);

    // Write: replace a resource (type from the model), partial update of the instance.
    api.ok(
        Method::PUT,
        NODE,
        &p(DEV, "3/0/14"),
        "",
        Body::Json(single(14, json!("+02:00"))),
        StatusCode::OK,
    )
    .await;
    let v = api
        .ok(
            Method::GET,
            NODE,
            &p(DEV, "3/0/14"),
            "",
            NONE,
            StatusCode::OK,
        )
        .await;
    assert_eq!(v["content"]["value"], "+02:00");
    api.ok(
        Method::PUT,
        NODE,
        &p(DEV, "3/0"),
        "replace=false",
        Body::Json(
            json!({"kind": "instance", "id": 0, "resources": [single(15, json!("Europe/Paris"))]}),
        ),
        StatusCode::OK,
    )
    .await;
    let v = api
        .ok(
            Method::GET,
            NODE,
            &p(DEV, "3/0/15"),
            "",
            NONE,
            StatusCode::OK,
        )
        .await;
    assert_eq!(v["content"]["value"], "Europe/Paris");

    // Execute (Reset Error Code), Create and Delete.
    let ex = api
        .ok(
            Method::POST,
            NODE,
            &p(DEV, "3/0/12"),
            "",
            Body::Text(String::new()),
            StatusCode::OK,
        )
        .await;
    assert_eq!(ex["status"], "CHANGED");
    let created = api
        .ok(
            Method::POST,
            NODE,
            &p(DEV, "9"),
            "",
            Body::Json(json!({"kind": "instance", "id": 7, "resources": [single(0, json!("app")), single(1, json!("1.0.0"))]})),
            StatusCode::CREATED,
        )
        .await;
    assert_eq!(created["location"], "/9/7");
    // Create ignores read-only values (LwM2M Core, Create operation), so the new
    // instance exists without the read-only name and version.
    let pkg = api
        .ok(Method::GET, NODE, &p(DEV, "9/7"), "", NONE, StatusCode::OK)
        .await;
    assert_eq!(pkg["content"]["kind"], "instance");
    assert_eq!(pkg["content"]["id"], 7);
    assert!(pkg["content"]["resources"]
        .as_array()
        .is_some_and(|r| !r.iter().any(|r| r["value"] == "1.0.0")));
    // An observation of the instance ends when the instance goes: the device says so
    // with a 4.04 notification.
    let watched = api
        .ok(
            Method::POST,
            "/api/clients/{endpoint}/{path}/observe",
            &p(DEV, "9/7"),
            "",
            NONE,
            StatusCode::OK,
        )
        .await;
    let watched = watched["observation"].as_str().expect("token").to_string();
    api.ok(
        Method::DELETE,
        NODE,
        &p(DEV, "9/7"),
        "",
        NONE,
        StatusCode::OK,
    )
    .await;
    let gone = api
        .ok(
            Method::GET,
            NODE,
            &p(DEV, "9/7"),
            "",
            NONE,
            StatusCode::NOT_FOUND,
        )
        .await;
    assert_eq!(gone["coap_code"], "4.04");
    let ended = wait_event(&mut mine, "OBSERVATION_CANCELLED", |v| {
        v["observation"] == watched.as_str()
    })
    .await;
    assert_eq!(ended["coap_code"], "4.04");

    // Discover and Write-Attributes.
    let links = api
        .ok(
            Method::GET,
            "/api/clients/{endpoint}/{path}/discover",
            &p(DEV, "3/0"),
            "",
            NONE,
            StatusCode::OK,
        )
        .await;
    assert!(links["links"]
        .as_array()
        .is_some_and(|l| l.iter().any(|e| e["path"] == "/3/0/0")));
    api.ok(
        Method::PUT,
        "/api/clients/{endpoint}/{path}/attributes",
        &p(DEV, "3/0/9"),
        "pmin=0&pmax=1",
        NONE,
        StatusCode::OK,
    )
    .await;

    // Observe, notifications as events, active cancel; then a passive one.
    let observe = "/api/clients/{endpoint}/{path}/observe";
    let ob = api
        .ok(
            Method::POST,
            observe,
            &p(DEV, "3/0/9"),
            "pmax=1",
            NONE,
            StatusCode::OK,
        )
        .await;
    let token = ob["observation"].as_str().expect("token").to_string();
    let n = wait_event(&mut mine, "NOTIFICATION", |v| {
        v["observation"] == token.as_str()
    })
    .await;
    assert_eq!(n["content"]["kind"], "singleResource");
    assert_eq!(n["paths"], json!(["/3/0/9"]));
    let c = api
        .ok(
            Method::DELETE,
            observe,
            &p(DEV, "3/0/9"),
            "active",
            NONE,
            StatusCode::OK,
        )
        .await;
    assert_eq!(c["cancelled"], 1);
    api.ok(
        Method::POST,
        observe,
        &p(DEV, "3/0/9"),
        "pmax=1",
        NONE,
        StatusCode::OK,
    )
    .await;
    let c = api
        .ok(
            Method::DELETE,
            observe,
            &p(DEV, "3/0/9"),
            "",
            NONE,
            StatusCode::OK,
        )
        .await;
    assert_eq!(c["cancelled"], 1);
    let none = api
        .ok(
            Method::DELETE,
            observe,
            &p(DEV, "3/0/9"),
            "",
            NONE,
            StatusCode::NOT_FOUND,
        )
        .await;
    assert_eq!(none["error"], "no_observation");

    // Composite calls.
    let composite = "/api/clients/{endpoint}/composite";
    let ep = [("endpoint", DEV)];
    let rc = api
        .ok(
            Method::GET,
            composite,
            &ep,
            "paths=/3/0/0,/3/0/9",
            NONE,
            StatusCode::OK,
        )
        .await;
    assert_eq!(rc["content"]["/3/0/0"]["value"], manufacturer["value"]);
    assert!(rc["content"]["/3/0/9"].is_object());
    api.ok(
        Method::PUT,
        composite,
        &ep,
        "",
        Body::Json(json!({ "/3/0/14": single(14, json!("+03:00")) })),
        StatusCode::OK,
    )
    .await;
    let v = api
        .ok(
            Method::GET,
            NODE,
            &p(DEV, "3/0/14"),
            "",
            NONE,
            StatusCode::OK,
        )
        .await;
    assert_eq!(v["content"]["value"], "+03:00");
    let cob = "/api/clients/{endpoint}/composite/observe";
    let ob = api
        .ok(
            Method::POST,
            cob,
            &ep,
            "paths=/3/0/9,/3/0/10&pmax=1",
            NONE,
            StatusCode::OK,
        )
        .await;
    let token = ob["observation"].as_str().expect("token").to_string();
    let n = wait_event(&mut mine, "NOTIFICATION", |v| {
        v["observation"] == token.as_str()
    })
    .await;
    assert!(n["content"]["/3/0/9"].is_object(), "{n}");
    let c = api
        .ok(
            Method::DELETE,
            cob,
            &ep,
            "paths=/3/0/9,/3/0/10",
            NONE,
            StatusCode::OK,
        )
        .await;
    assert_eq!(c["cancelled"], 1);

    // Send and Update from the device.
    dev.send(vec![Path::resource(3, 0, 9)]).await.expect("send");
    let s = wait_event(&mut mine, "SEND", |_| true).await;
    assert!(s["content"]["/3/0/9"].is_object(), "{s}");
    dev.update().await.expect("update");
    wait_event(&mut mine, "UPDATED", |_| true).await;

    // A sleeping queue-mode device: 202, then the result when it wakes.
    let sleepy = device(srv.coap, SLEEPY, |c| {
        c.queue_mode = true;
        c.awake_window = Duration::from_millis(500);
        c.sleep_duration = Duration::from_secs(600);
    })
    .await;
    wait_event(&mut all, "SLEEPING", |v| v["endpoint"] == SLEEPY).await;
    let info = api
        .ok(
            Method::GET,
            "/api/clients/{endpoint}",
            &[("endpoint", SLEEPY)],
            "",
            NONE,
            StatusCode::OK,
        )
        .await;
    assert_eq!(info["awake"], false);
    assert_eq!(info["queue_mode"], true);
    let queued = api
        .ok(
            Method::GET,
            NODE,
            &p(SLEEPY, "3/0/0"),
            "",
            NONE,
            StatusCode::ACCEPTED,
        )
        .await;
    let id = queued["request_id"].as_str().expect("id").to_string();
    assert_eq!(queued["location"], format!("/api/requests/{id}"));
    let req = "/api/requests/{id}";
    let r = api
        .ok(Method::GET, req, &[("id", &id)], "", NONE, StatusCode::OK)
        .await;
    assert_eq!(r["status"], "queued");
    let unknown = api
        .ok(
            Method::GET,
            req,
            &[("id", "nope")],
            "",
            NONE,
            StatusCode::NOT_FOUND,
        )
        .await;
    assert_eq!(unknown["error"], "unknown_request");
    sleepy.wake().await.expect("wake");
    wait_event(&mut all, "AWAKE", |v| v["endpoint"] == SLEEPY).await;
    let done = wait_event(&mut all, "REQUEST_RESPONSE", |v| {
        v["request"]["id"] == id.as_str()
    })
    .await;
    assert_eq!(done["request"]["status"], "done");
    assert_eq!(
        done["request"]["result"]["content"]["value"],
        manufacturer["value"]
    );
    let r = api
        .ok(Method::GET, req, &[("id", &id)], "", NONE, StatusCode::OK)
        .await;
    assert_eq!(r["status"], "done");

    // DTLS credentials: set, shown without the key, listed, refused when bad or taken,
    // removed.
    let sec = "/api/security/clients/{endpoint}";
    let key = "000102030405060708090a0b0c0d0e0f";
    let psk = |identity: &str| Body::Json(json!({ "psk": { "identity": identity, "key": key } }));
    let set = api
        .ok(
            Method::PUT,
            sec,
            &[("endpoint", "dtls-1")],
            "",
            psk("id-1"),
            StatusCode::OK,
        )
        .await;
    assert_eq!(set["psk"]["identity"], "id-1");
    assert!(
        !set.to_string().contains(key),
        "the key never comes back: {set}"
    );
    let got = api
        .ok(
            Method::GET,
            sec,
            &[("endpoint", "dtls-1")],
            "",
            NONE,
            StatusCode::OK,
        )
        .await;
    assert_eq!(got["psk"]["key_fingerprint"], set["psk"]["key_fingerprint"]);
    let taken = api
        .ok(
            Method::PUT,
            sec,
            &[("endpoint", "dtls-2")],
            "",
            psk("id-1"),
            StatusCode::CONFLICT,
        )
        .await;
    assert_eq!(taken["error"], "identity_taken");
    let bad = Body::Json(json!({ "psk": { "identity": "id-2", "key": "xyz" } }));
    let v = api
        .ok(
            Method::PUT,
            sec,
            &[("endpoint", "dtls-2")],
            "",
            bad,
            StatusCode::BAD_REQUEST,
        )
        .await;
    assert_eq!(v["error"], "bad_body");
    let all = api
        .ok(
            Method::GET,
            "/api/security/clients",
            &[],
            "",
            NONE,
            StatusCode::OK,
        )
        .await;
    assert_eq!(all["clients"].as_array().map(Vec::len), Some(1));
    api.ok(
        Method::DELETE,
        sec,
        &[("endpoint", "dtls-1")],
        "",
        NONE,
        StatusCode::OK,
    )
    .await;
    let gone = api
        .ok(
            Method::GET,
            sec,
            &[("endpoint", "dtls-1")],
            "",
            NONE,
            StatusCode::NOT_FOUND,
        )
        .await;
    assert_eq!(gone["error"], "no_credentials");

    // Authentication on every documented route: nothing passes without a valid token,
    // a read-only token changes nothing, and indeed nothing changed.
    let ops = documented(&doc);
    // The download endpoint's credential is its token, not the API's.
    let open = ["/healthz", "/metrics", "/docs", "/fw/{token}"];
    for (method, path) in &ops {
        let m = Method::from_bytes(method.to_ascii_uppercase().as_bytes()).expect("method");
        let params = [("endpoint", DEV), ("path", "3/0/14"), ("id", id.as_str())];
        let body = || Body::Json(single(14, json!("+09:00")));
        let wanted = if open.contains(&path.as_str()) {
            continue;
        } else {
            StatusCode::UNAUTHORIZED
        };
        for auth in [
            Auth::None,
            Auth::Bearer("not-a-valid-token-at-all"),
            Auth::Raw(&format!("Basic {ADMIN}")),
            Auth::Raw("Bearer "),
        ] {
            let (status, v) = api.call(m.clone(), path, &params, "", body(), auth).await;
            assert_eq!(status, wanted, "{method} {path} with {auth:?}: {v}");
            assert_eq!(v["error"], "unauthorized", "{method} {path}");
        }
        if m != Method::GET {
            let (status, v) = api
                .call(m.clone(), path, &params, "", body(), Auth::Bearer(READER))
                .await;
            assert_eq!(
                status,
                StatusCode::FORBIDDEN,
                "{method} {path} read-only: {v}"
            );
            assert_eq!(v["error"], "forbidden");
        }
    }
    let v = api
        .ok(
            Method::GET,
            NODE,
            &p(DEV, "3/0/14"),
            "",
            NONE,
            StatusCode::OK,
        )
        .await;
    assert_eq!(
        v["content"]["value"], "+03:00",
        "a refused call changed the device"
    );
    let still = api
        .ok(Method::GET, "/api/clients", &[], "", NONE, StatusCode::OK)
        .await;
    assert_eq!(still["total"], 2);
    // The cursor walks the same list page by page.
    let mut walked = Vec::new();
    let mut query = "limit=1".to_string();
    for _ in 0..3 {
        let page = api
            .ok(
                Method::GET,
                "/api/clients",
                &[],
                &query,
                NONE,
                StatusCode::OK,
            )
            .await;
        walked.extend(
            page["clients"]
                .as_array()
                .into_iter()
                .flatten()
                .map(|c| c["endpoint"].clone()),
        );
        match page["next"].as_str() {
            Some(next) => query = format!("limit=1&after={next}"),
            None => break,
        }
    }
    let all: Vec<Value> = still["clients"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|c| c["endpoint"].clone())
        .collect();
    assert_eq!(walked, all);

    // Metrics moved.
    let (_, metrics) = api
        .call(Method::GET, "/metrics", &[], "", NONE, Auth::None)
        .await;
    let metrics = metrics.as_str().expect("text").to_string();
    let line = |prefix: &str, needles: &[&str]| {
        metrics
            .lines()
            .any(|l| l.starts_with(prefix) && needles.iter().all(|n| l.contains(n)))
    };
    assert!(line("lwm2m_registered_devices ", &[" 2"]), "{metrics}");
    assert!(
        line(
            "lwm2m_requests_total{",
            &["operation=\"Read\"", "code=\"2.05\""]
        ),
        "{metrics}"
    );
    assert!(line("lwm2m_notifications_total", &[]), "{metrics}");
    assert!(
        line(
            "lwm2m_request_duration_seconds_bucket{",
            &["operation=\"Read\""]
        ),
        "{metrics}"
    );

    // De-registration.
    dev.shutdown().await.expect("shutdown");
    let d = wait_event(&mut mine, "DEREGISTRATION", |_| true).await;
    assert_eq!(d["reason"], "deregister");
    sleepy.shutdown().await.ok();

    // The filtered stream only carried the one device.
    while let Ok((kind, v)) = mine.try_recv() {
        assert_eq!(v["endpoint"], DEV, "{kind} {v}");
    }

    // A download token nobody issued: 404, whatever the API token.
    let (status, v) = api
        .call(
            Method::GET,
            "/fw/{token}",
            &[("token", "00112233445566778899aabbccddeeff")],
            "",
            NONE,
            Auth::None,
        )
        .await;
    assert_eq!(
        (status, v["error"].clone()),
        (StatusCode::NOT_FOUND, json!("not_found"))
    );

    // The document and the routes called agree both ways.
    let called = api.called.lock().expect("lock").clone();
    let missing: Vec<_> = called.difference(&ops).collect();
    assert!(missing.is_empty(), "called but not documented: {missing:?}");
    let untested: Vec<_> = ops.difference(&called).collect();
    assert!(
        untested.is_empty(),
        "documented but never called: {untested:?}"
    );
}

/// Requests queued for a sleeping device survive SIGKILL of the server: after the restart
/// they are tracked under the same ids, sent when the device wakes, and their answers are
/// read and reported as the synchronous calls would have reported them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn queued_requests_survive_sigkill_under_their_ids() {
    let dir = tempfile::tempdir().expect("tempdir");
    let cfg = config_file(dir.path(), "");
    let cfg = cfg.to_str().expect("utf-8");
    let data = dir.path().join("data");
    let args = ["--config", cfg, "--api-token", ADMIN];
    let first = start(&data, &args, &[]);
    let api = Api::new(first.http);
    let mut events = api.events(&format!("ep={SLEEPY}"), ADMIN).await;
    let sleepy = device(first.coap, SLEEPY, |c| {
        c.queue_mode = true;
        // Awake longer than the server believes (1.5 s) and than pmax: a queue-mode
        // device notifies only while awake.
        c.awake_window = Duration::from_secs(3);
        c.sleep_duration = Duration::from_secs(600);
    })
    .await;
    wait_event(&mut events, "SLEEPING", |_| true).await;
    let observe = "/api/clients/{endpoint}/{path}/observe";
    let queued = [
        api.ok(
            Method::GET,
            NODE,
            &p(SLEEPY, "3/0/0"),
            "",
            NONE,
            StatusCode::ACCEPTED,
        )
        .await,
        api.ok(
            Method::PUT,
            NODE,
            &p(SLEEPY, "3/0/14"),
            "",
            Body::Json(single(14, json!("+05:00"))),
            StatusCode::ACCEPTED,
        )
        .await,
        api.ok(
            Method::POST,
            observe,
            &p(SLEEPY, "3/0/9"),
            "pmax=1",
            NONE,
            StatusCode::ACCEPTED,
        )
        .await,
    ];
    let ids: Vec<String> = queued
        .iter()
        .map(|v| v["request_id"].as_str().expect("id").to_string())
        .collect();
    let client = "/api/clients/{endpoint}";
    let info = api
        .ok(
            Method::GET,
            client,
            &[("endpoint", SLEEPY)],
            "",
            NONE,
            StatusCode::OK,
        )
        .await;
    assert_eq!(info["queued_requests"], 3);

    // SIGKILL, and a new server on the same port and data directory.
    let coap = first.coap.to_string();
    drop(events);
    drop(first);
    let second = start_at(&coap, &data, &args, &[]);
    let api = Api::new(second.http);
    let req = "/api/requests/{id}";
    for (id, (operation, path)) in ids.iter().zip([
        ("Read", "/3/0/0"),
        ("Write", "/3/0/14"),
        ("Observe", "/3/0/9"),
    ]) {
        let r = api
            .ok(Method::GET, req, &[("id", id)], "", NONE, StatusCode::OK)
            .await;
        assert_eq!(r["status"], "queued", "{r}");
        assert_eq!(r["endpoint"], SLEEPY);
        assert_eq!(
            (r["operation"].as_str(), r["path"].as_str()),
            (Some(operation), Some(path))
        );
    }
    let mut events = api.events(&format!("ep={SLEEPY}"), ADMIN).await;

    sleepy.wake().await.expect("wake");
    wait_event(&mut events, "AWAKE", |_| true).await;
    let mut done = std::collections::BTreeMap::new();
    while done.len() < ids.len() {
        let e = wait_event(&mut events, "REQUEST_RESPONSE", |_| true).await;
        let id = e["request"]["id"].as_str().expect("id").to_string();
        done.insert(id, e["request"].clone());
    }
    let read = &done[&ids[0]];
    assert_eq!(read["status"], "done", "{read}");
    assert_eq!(read["result"]["content"]["type"], "STRING");
    assert!(read["result"]["content"]["value"]
        .as_str()
        .is_some_and(|v| !v.is_empty()));
    assert_eq!(done[&ids[1]]["result"]["status"], "CHANGED");
    let token = done[&ids[2]]["result"]["observation"]
        .as_str()
        .expect("the observation's token")
        .to_string();
    // The observation made after the restart delivers notifications under its token.
    let n = wait_event(&mut events, "NOTIFICATION", |v| {
        v["observation"] == token.as_str()
    })
    .await;
    assert_eq!(n["paths"], json!(["/3/0/9"]));
    let v = api
        .ok(
            Method::GET,
            NODE,
            &p(SLEEPY, "3/0/14"),
            "",
            NONE,
            StatusCode::OK,
        )
        .await;
    assert_eq!(v["content"]["value"], "+05:00");
    let r = api
        .ok(
            Method::GET,
            req,
            &[("id", &ids[1])],
            "",
            NONE,
            StatusCode::OK,
        )
        .await;
    assert_eq!(r["status"], "done");
    sleepy.shutdown().await.ok();
}

/// Registers by hand from a socket that will never answer the server.
fn silent_device(coap: std::net::SocketAddr, name: &str) -> UdpSocket {
    let socket = UdpSocket::bind("127.0.0.1:0").expect("bind");
    socket
        .set_read_timeout(Some(Duration::from_millis(500)))
        .expect("timeout");
    let mut p = Packet::new();
    p.header.set_type(MessageType::Confirmable);
    p.header.code = MessageClass::Request(RequestType::Post);
    p.header.message_id = 7;
    p.set_token(vec![1, 2, 3, 4]);
    p.add_option(CoapOption::UriPath, b"rd".to_vec());
    for q in [format!("ep={name}"), "lt=300".into(), "lwm2m=1.1".into()] {
        p.add_option(CoapOption::UriQuery, q.into_bytes());
    }
    p.payload = b"</3/0>".to_vec();
    let bytes = p.to_bytes().expect("encode");
    let mut buf = [0u8; 1500];
    for _ in 0..10 {
        socket.send_to(&bytes, coap).expect("send");
        if let Ok((n, _)) = socket.recv_from(&mut buf) {
            if let Ok(r) = Packet::from_bytes(&buf[..n]) {
                if r.header.message_id == 7 {
                    assert_eq!(r.header.code.to_string(), "2.01");
                    return socket;
                }
            }
        }
    }
    panic!("the silent device could not register");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn errors_are_json_with_the_right_status() {
    let dir = tempfile::tempdir().expect("tempdir");
    let cfg = config_file(dir.path(), "[api]\nmax_event_streams = 2\n");
    let srv = start(
        &dir.path().join("data"),
        &[
            "--config",
            cfg.to_str().expect("utf-8"),
            "--api-token",
            ADMIN,
        ],
        &[],
    );
    let api = Api::new(srv.http);
    let _dev = device(srv.coap, DEV, |_| {}).await;
    // Event streams are bounded: the third open one is refused, as JSON.
    let _one = api.events("", ADMIN).await;
    let _two = api.events("", ADMIN).await;
    let (status, v) = api
        .call(
            Method::GET,
            "/api/events",
            &[],
            "",
            NONE,
            Auth::Bearer(ADMIN),
        )
        .await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{v}");
    assert_eq!(v["error"], "too_many_streams");
    let check = |v: &Value, error: &str| {
        assert_eq!(v["error"], error, "{v}");
        assert!(v["detail"].as_str().is_some_and(|d| !d.is_empty()), "{v}");
    };

    let v = api
        .ok(
            Method::GET,
            "/api/clients/{endpoint}",
            &[("endpoint", "nobody")],
            "",
            NONE,
            StatusCode::NOT_FOUND,
        )
        .await;
    check(&v, "unknown_endpoint");
    let v = api
        .ok(
            Method::GET,
            NODE,
            &p("nobody", "3/0"),
            "",
            NONE,
            StatusCode::NOT_FOUND,
        )
        .await;
    check(&v, "unknown_endpoint");
    for bad in ["3/x", "65535", "3/0/1/2/3", "3/0/frob"] {
        let v = api
            .ok(
                Method::GET,
                NODE,
                &p(DEV, bad),
                "",
                NONE,
                StatusCode::BAD_REQUEST,
            )
            .await;
        check(&v, "bad_path");
    }
    let v = api
        .ok(
            Method::GET,
            NODE,
            &p(DEV, "3/0"),
            "format=xml",
            NONE,
            StatusCode::BAD_REQUEST,
        )
        .await;
    check(&v, "bad_format");
    let v = api
        .ok(
            Method::GET,
            NODE,
            &p(DEV, "3/0"),
            "fromat=tlv",
            NONE,
            StatusCode::BAD_REQUEST,
        )
        .await;
    check(&v, "bad_query");
    // The device's own errors, mapped and shown.
    let v = api
        .ok(
            Method::GET,
            NODE,
            &p(DEV, "77"),
            "",
            NONE,
            StatusCode::NOT_FOUND,
        )
        .await;
    check(&v, "device_error");
    assert_eq!(v["coap_code"], "4.04");
    let v = api
        .ok(
            Method::PUT,
            NODE,
            &p(DEV, "3/0/0"),
            "",
            Body::Json(single(0, json!("someone else"))),
            StatusCode::METHOD_NOT_ALLOWED,
        )
        .await;
    check(&v, "device_error");
    assert_eq!(v["coap_code"], "4.05");
    let v = api
        .ok(
            Method::GET,
            NODE,
            &p(DEV, "0/0"),
            "",
            NONE,
            StatusCode::FORBIDDEN,
        )
        .await;
    check(&v, "protected_object");
    // Bodies.
    let v = api
        .ok(
            Method::PUT,
            NODE,
            &p(DEV, "3/0/14"),
            "",
            Body::Json(single(14, json!(5))),
            StatusCode::BAD_REQUEST,
        )
        .await;
    check(&v, "bad_body");
    let v = api
        .ok(
            Method::PUT,
            NODE,
            &p(DEV, "3/0/14"),
            "",
            Body::Bytes(b"{not json".to_vec()),
            StatusCode::BAD_REQUEST,
        )
        .await;
    check(&v, "bad_body");
    let v = api
        .ok(
            Method::PUT,
            NODE,
            &p(DEV, "3/0/14"),
            "",
            NONE,
            StatusCode::BAD_REQUEST,
        )
        .await;
    check(&v, "bad_body");
    let v = api
        .ok(
            Method::POST,
            NODE,
            &p(DEV, "3/0/12"),
            "",
            Body::Text("0='unterminated".into()),
            StatusCode::BAD_REQUEST,
        )
        .await;
    check(&v, "bad_body");
    let big = vec![b' '; 2 * 1024 * 1024];
    let v = api
        .ok(
            Method::PUT,
            NODE,
            &p(DEV, "3/0/14"),
            "",
            Body::Bytes(big),
            StatusCode::PAYLOAD_TOO_LARGE,
        )
        .await;
    check(&v, "body_too_large");
    // Routes and methods that do not exist.
    let v = api
        .ok(
            Method::GET,
            "/api/nothing-here",
            &[],
            "",
            NONE,
            StatusCode::NOT_FOUND,
        )
        .await;
    check(&v, "not_found");
    let v = api
        .ok(
            Method::PATCH,
            "/api/clients",
            &[],
            "",
            NONE,
            StatusCode::METHOD_NOT_ALLOWED,
        )
        .await;
    check(&v, "method_not_allowed");
    let v = api
        .ok(
            Method::PATCH,
            NODE,
            &p(DEV, "3/0"),
            "",
            NONE,
            StatusCode::METHOD_NOT_ALLOWED,
        )
        .await;
    check(&v, "method_not_allowed");
    // A device that never answers: 504, within the asked timeout.
    let _silent = silent_device(srv.coap, "silent");
    let started = std::time::Instant::now();
    let v = api
        .ok(
            Method::GET,
            NODE,
            &p("silent", "3/0"),
            "timeout=2",
            NONE,
            StatusCode::GATEWAY_TIMEOUT,
        )
        .await;
    check(&v, "device_timeout");
    assert!(started.elapsed() < Duration::from_secs(10));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tokens_come_from_flags_environment_file_or_are_generated() {
    let dir = tempfile::tempdir().expect("tempdir");
    let clients = |api: Api, token: String| async move {
        api.call(
            Method::GET,
            "/api/clients",
            &[],
            "",
            NONE,
            Auth::Bearer(&token),
        )
        .await
        .0
    };

    // No token anywhere: one is generated, kept, and works again after a restart.
    let data = dir.path().join("generated");
    let first = start(&data, &[], &[]);
    let file = first
        .token_file
        .clone()
        .expect("the server says where its token is");
    assert!(file.starts_with(&data));
    let token = std::fs::read_to_string(&file)
        .expect("token file")
        .trim()
        .to_string();
    let api = Api::new(first.http);
    assert_eq!(clients(api.clone(), token.clone()).await, StatusCode::OK);
    assert_eq!(clients(api, "x".repeat(64)).await, StatusCode::UNAUTHORIZED);
    drop(first);
    let second = start(&data, &[], &[]);
    let again = std::fs::read_to_string(second.token_file.as_ref().expect("file"))
        .expect("token file")
        .trim()
        .to_string();
    assert_eq!(again, token, "the generated token survives a restart");
    assert_eq!(clients(Api::new(second.http), token).await, StatusCode::OK);
    drop(second);

    // File < environment < flag; a source replaces the tokens of the ones below it.
    let file_token = "file-admin-token-000001";
    let env_token = "env-admin-token-0000001";
    let flag_token = "flag-admin-token-000001";
    let cfg = config_file(
        dir.path(),
        &format!("[api]\nadmin_tokens = [\"{file_token}\"]\nopen_metrics = false\n"),
    );
    let cfg = cfg.to_str().expect("utf-8");
    let data = dir.path().join("configured");
    let s = start(&data, &["--config", cfg], &[]);
    assert!(s.token_file.is_none());
    let api = Api::new(s.http);
    assert_eq!(
        clients(api.clone(), file_token.into()).await,
        StatusCode::OK
    );
    // open_metrics = false: /metrics needs a token now.
    let (status, _) = api
        .call(Method::GET, "/metrics", &[], "", NONE, Auth::None)
        .await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    let (status, _) = api
        .call(
            Method::GET,
            "/metrics",
            &[],
            "",
            NONE,
            Auth::Bearer(file_token),
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    drop(s);
    let s = start(&data, &["--config", cfg], &[("LWM2M_API_TOKEN", env_token)]);
    let api = Api::new(s.http);
    assert_eq!(clients(api.clone(), env_token.into()).await, StatusCode::OK);
    assert_eq!(
        clients(api, file_token.into()).await,
        StatusCode::UNAUTHORIZED
    );
    drop(s);
    let s = start(
        &data,
        &["--config", cfg, "--api-token", flag_token],
        &[("LWM2M_API_TOKEN", env_token)],
    );
    let api = Api::new(s.http);
    assert_eq!(
        clients(api.clone(), flag_token.into()).await,
        StatusCode::OK
    );
    assert_eq!(
        clients(api, env_token.into()).await,
        StatusCode::UNAUTHORIZED
    );
    drop(s);

    // A weak token is refused at start.
    let out = std::process::Command::new(server_binary())
        .args([
            "--coap",
            "127.0.0.1:0",
            "--http",
            "127.0.0.1:0",
            "--api-token",
            "short",
            "--data-dir",
        ])
        .arg(dir.path().join("weak"))
        .output()
        .expect("run");
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("at least 16"));
}
