//! The fleet through the binary with simulated devices: the inventory read and observed
//! at registration, operator attributes, cells, a dynamic group with its preview and a
//! malformed filter, and a campaign that skips roaming and suspended devices, never
//! exceeds a cell's cap and updates every eligible device once, also across a `kill -9`
//! of the server mid-campaign.

mod http_support;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use http_support::*;
use lwm2m_client_sim::device::Cellular;
use lwm2m_client_sim::firmware::stats::FirmwareStats;
use lwm2m_client_sim::firmware::{package, FailureMode, FirmwareConfig};
use lwm2m_client_sim::network::{Cell, LinkConditions};
use lwm2m_client_sim::{Client, ClientEvent, ClientHandle, Config as ClientConfig, FwState};
use reqwest::{Method, StatusCode};
use serde_json::{json, Value};

/// Bound on polls (each 200 ms).
const POLLS: usize = 600;

fn config(dir: &std::path::Path) -> std::path::PathBuf {
    let path = dir.join("server.toml");
    std::fs::write(
        &path,
        "[coap_params]\nack_timeout_ms = 300\n\
         [registry]\nawake_window_ms = 1500\n\
         [firmware]\npoll_interval_ms = 300\n\
         [fleet]\nflush_interval_ms = 100\n",
    )
    .expect("config");
    path
}

fn start_server(dir: &std::path::Path, coap: &str) -> Running {
    let cfg = config(dir);
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

/// A package the simulated devices accept, of `kib` KiB.
fn firmware_package(version: &str, kib: usize) -> Vec<u8> {
    let body: Vec<u8> = (0..kib * 1024 - 100).map(|i| (i % 251) as u8).collect();
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

/// Device `i`: a BG95 on firmware 1.0.0 (the last one another model), in cell 100 or
/// 200; device 6 is served by a French network.
fn device(server: SocketAddr, i: usize) -> ClientConfig {
    let mut c = ClientConfig::new(server, format!("fl-{i}"));
    c.coap.ack_timeout = Duration::from_millis(300);
    c.registration_retry = Duration::from_millis(300);
    c.profile.update_time = Duration::from_millis(300);
    c.firmware = FirmwareConfig::default();
    c.profile.model = if i == 7 {
        "OTHER".into()
    } else {
        "BG95".into()
    };
    c.profile.firmware_version = "1.0.0".into();
    c.profile.battery.level = 80;
    c.profile.radio.bearer = 6;
    c.profile.radio.cellular = Some(Cellular {
        cell_id: if i < 4 { 100 } else { 200 },
        mcc: if i == 6 { 208 } else { 262 },
        mnc: 1,
        apn: "iot".into(),
    });
    c
}

/// Running devices, each with a count of the times it started installing (entered
/// State 3, Updating), from its own events, and the downloads they ran at once in each
/// cell, counted by the devices (the simulator's side of the server's cell accounting).
struct Devices {
    _handles: Vec<ClientHandle>,
    installs: Vec<Arc<AtomicUsize>>,
    stats: Arc<FirmwareStats>,
}

impl Devices {
    fn installs(&self) -> Vec<usize> {
        self.installs
            .iter()
            .map(|c| c.load(Ordering::SeqCst))
            .collect()
    }

    /// The most downloads each cell ever carried at once, by the devices' own count.
    fn cell_peaks(&self) -> BTreeMap<u32, u32> {
        self.stats
            .cells()
            .into_iter()
            .filter_map(|(cell, load)| Some((cell?, load.peak)))
            .collect()
    }
}

/// Puts device `i` of `c` in its radio cell (/4/0/8) on the simulator's side too, a cell
/// of unlimited bandwidth that only names where each download runs, and counts its
/// downloads in `stats`.
fn in_cell(
    c: &mut ClientConfig,
    i: usize,
    cells: &mut BTreeMap<u32, Arc<Cell>>,
    stats: &Arc<FirmwareStats>,
) {
    let id = c.profile.radio.cellular.as_ref().expect("cellular").cell_id;
    let cell = cells
        .entry(id)
        .or_insert_with(|| Arc::new(Cell::new(id, None, None, Duration::from_secs(2))))
        .clone();
    c.link = Some(LinkConditions {
        loss_up: 0.0,
        loss_down: 0.0,
        latency: (Duration::ZERO, Duration::ZERO),
        cell: Some(cell),
        seed: i as u64,
    });
    c.firmware.stats = Some(stats.handle().for_device(i));
}

/// Counts the times the device enters State 3 (Updating), from its own events.
fn count_installs(h: &ClientHandle) -> Arc<AtomicUsize> {
    let count = Arc::new(AtomicUsize::new(0));
    let mut rx = h.subscribe();
    let c = count.clone();
    tokio::spawn(async move {
        while let Ok(e) = rx.recv().await {
            if let ClientEvent::FirmwareState {
                state: FwState::Updating,
                ..
            } = e
            {
                c.fetch_add(1, Ordering::SeqCst);
            }
        }
    });
    count
}

async fn start_devices(server: SocketAddr, n: usize) -> Devices {
    let mut handles = Vec::new();
    let mut installs = Vec::new();
    let stats = FirmwareStats::new();
    let mut cells = BTreeMap::new();
    for i in 0..n {
        let mut c = device(server, i);
        in_cell(&mut c, i, &mut cells, &stats);
        let h = Client::start(c).await.expect("client");
        let count = count_installs(&h);
        h.wait_registered(STEP).await.expect("registers");
        handles.push(h);
        installs.push(count);
    }
    Devices {
        _handles: handles,
        installs,
        stats,
    }
}

/// Polls until every device's attributes satisfy `ready`.
async fn wait_inventory(api: &Api, n: usize, ready: impl Fn(&Value) -> bool) -> Vec<Value> {
    for _ in 0..POLLS {
        let mut all = Vec::new();
        for i in 0..n {
            let (status, a) = api
                .call(
                    Method::GET,
                    "/api/clients/{endpoint}/attributes",
                    &[("endpoint", &format!("fl-{i}"))],
                    "",
                    Body::None,
                    Auth::Bearer(ADMIN),
                )
                .await;
            if status == StatusCode::OK && ready(&a) {
                all.push(a);
            }
        }
        if all.len() == n {
            return all;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    panic!("the inventory never had every device");
}

fn read_everything(a: &Value) -> bool {
    a["model"].is_string() && a["cell_id"].is_number() && a["battery"].is_number()
}

/// Sets the home network of every device, suspends fl-3, and caps cell 100 at one
/// download and cell 200 at two (8 kbit/s a device).
async fn operator_setup(api: &Api, n: usize) {
    let mut devices = BTreeMap::new();
    for i in 0..n {
        devices.insert(format!("fl-{i}"), json!({ "home_network": "262-01" }));
    }
    let r = api
        .ok(
            Method::PATCH,
            "/api/clients/attributes",
            &[],
            "",
            Body::Json(json!({ "devices": devices })),
            StatusCode::OK,
        )
        .await;
    assert_eq!(r["updated"], n);
    let a = api
        .ok(
            Method::PATCH,
            "/api/clients/{endpoint}/attributes",
            &[("endpoint", "fl-3")],
            "",
            Body::Json(json!({ "billing_state": "suspended", "labels": {"site": "north"} })),
            StatusCode::OK,
        )
        .await;
    assert_eq!(a["billing"], "suspended");
    for (cell, bps) in [("100", 8_000), ("200", 16_000)] {
        api.ok(
            Method::PUT,
            "/api/network/cells/{cell}",
            &[("cell", cell)],
            "",
            Body::Json(json!({ "available_bps": bps })),
            StatusCode::OK,
        )
        .await;
    }
}

fn policy() -> Value {
    json!({
        "device_rate_bps": 8000,
        "default_cell_bps": 8000,
        "rules": { "roaming": "skip", "skip_suspended": true },
        "retry": { "initial_ms": 500, "factor": 2.0, "max_ms": 5000, "max_attempts": 5 }
    })
}

/// POST /api/campaigns with `body`; the created campaign.
async fn create_campaign(api: &Api, body: Value) -> Value {
    api.ok(
        Method::POST,
        "/api/campaigns",
        &[],
        "",
        Body::Json(body),
        StatusCode::CREATED,
    )
    .await
}

/// GET /api/campaigns/{id}.
async fn campaign(api: &Api, id: &str) -> Value {
    api.ok(
        Method::GET,
        "/api/campaigns/{id}",
        &[("id", id)],
        "",
        Body::None,
        StatusCode::OK,
    )
    .await
}

/// Polls the campaign until it completes, checking every look at its cells against
/// their caps.
async fn wait_complete(api: &Api, id: &str) -> Value {
    for _ in 0..POLLS {
        let c = campaign(api, id).await;
        for cell in c["progress"]["cells"].as_array().expect("cells") {
            assert!(
                cell["in_flight"].as_u64() <= cell["cap"].as_u64(),
                "cell over its cap: {cell}"
            );
        }
        if c["status"] == "completed" {
            return c;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    panic!("the campaign never completed");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn inventory_groups_and_a_metered_campaign_that_follows_the_rules() {
    let dir = tempfile::tempdir().expect("tempdir");
    let srv = start_server(dir.path(), "127.0.0.1:0");
    let api = Api::new(srv.http);
    let n = 8;
    let devices = start_devices(srv.coap, n).await;
    let attrs = wait_inventory(&api, n, read_everything).await;
    assert!(attrs[0]["manufacturer"].is_string(), "{}", attrs[0]);
    assert_eq!(attrs[0]["firmware"], "1.0.0");
    assert_eq!(attrs[4]["cell_id"], 200);
    operator_setup(&api, n).await;
    let a6 = wait_inventory(&api, n, |a| a["roaming"].is_boolean()).await;
    assert_eq!(a6[6]["roaming"], true, "{}", a6[6]);
    assert_eq!(a6[0]["roaming"], false);

    // A group, its preview, and a malformed filter.
    let filter = r#"model == "BG95" && version_lt(firmware, "2.0.0")"#;
    let p = api
        .ok(
            Method::POST,
            "/api/groups/preview",
            &[],
            "",
            Body::Json(json!({ "filter": filter })),
            StatusCode::OK,
        )
        .await;
    assert_eq!(p["count"], 7);
    let bad = api
        .ok(
            Method::POST,
            "/api/groups/preview",
            &[],
            "",
            Body::Json(json!({ "filter": "model ==\n  && battery" })),
            StatusCode::BAD_REQUEST,
        )
        .await;
    assert_eq!(bad["error"], "bad_filter");
    assert_eq!(bad["line"], 2, "{bad}");
    let g = api
        .ok(
            Method::POST,
            "/api/groups",
            &[],
            "",
            Body::Json(json!({ "id": "old-bg95", "filter": filter })),
            StatusCode::CREATED,
        )
        .await;
    assert_eq!(g["members"], 7);

    let id = upload(&api, "2.0.0", firmware_package("2.0.0", 8)).await;
    let c = create_campaign(
        &api,
        json!({
            "id": "c1", "package_id": id, "group": "old-bg95", "policy": policy()
        }),
    )
    .await;
    assert_eq!(c["devices"], 7);
    let done = wait_complete(&api, "c1").await;
    let counts = &done["progress"]["counts"];
    assert_eq!(counts["succeeded"], 5, "{done}");
    assert_eq!(
        counts["skipped"], 2,
        "suspended fl-3 and roaming fl-6: {done}"
    );
    assert!(done["progress"]["bytes_sent"].as_u64() >= Some(5 * 8 * 1024 - 500));
    // Each eligible device installed once, the others never.
    assert_eq!(devices.installs(), vec![1, 1, 1, 0, 1, 1, 0, 0]);
    // The devices' own count agrees with the server's accounting: cell 100 (three
    // eligible devices) never ran more than its one download at once, cell 200 (two)
    // never more than two.
    let peaks = devices.cell_peaks();
    assert_eq!(peaks.get(&100), Some(&1), "{peaks:?}");
    assert!(matches!(peaks.get(&200), Some(1..=2)), "{peaks:?}");
    // The new version reaches the inventory and the group: none left on the old one.
    wait_inventory(&api, n, |a| {
        a["endpoint"] == "fl-3"
            || a["endpoint"] == "fl-6"
            || a["endpoint"] == "fl-7"
            || a["firmware"] == "2.0.0"
    })
    .await;
    let members = api
        .ok(
            Method::GET,
            "/api/groups/{id}/members",
            &[("id", "old-bg95")],
            "",
            Body::None,
            StatusCode::OK,
        )
        .await;
    assert_eq!(members["members"], json!(["fl-3", "fl-6"]), "{members}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_campaign_resumes_after_kill_9_without_updating_a_device_twice() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut srv = start_server(dir.path(), "127.0.0.1:0");
    let coap = srv.coap;
    let api = Api::new(srv.http);
    let n = 4;
    let devices = start_devices(srv.coap, n).await;
    wait_inventory(&api, n, read_everything).await;
    let id = upload(&api, "2.0.0", firmware_package("2.0.0", 48)).await;
    // Cell 100 (fl-0..fl-3) takes one download at a time.
    api.ok(
        Method::PUT,
        "/api/network/cells/{cell}",
        &[("cell", "100")],
        "",
        Body::Json(json!({ "available_bps": 8000 })),
        StatusCode::OK,
    )
    .await;
    create_campaign(
        &api,
        json!({
            "id": "c2", "package_id": id, "filter": "model == \"BG95\"", "policy": policy()
        }),
    )
    .await;
    // Killed once the first device is done and the second is under way.
    let mut killed = false;
    for _ in 0..POLLS {
        let c = campaign(&api, "c2").await;
        if c["progress"]["counts"]["succeeded"].as_u64() >= Some(1)
            && c["progress"]["counts"]["in_progress"].as_u64() >= Some(1)
        {
            srv.child.kill().expect("kill -9");
            let _ = srv.child.wait();
            killed = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(
        killed,
        "the campaign never had one device done and one under way"
    );
    let srv = start_server(dir.path(), &coap.to_string());
    let api = Api::new(srv.http);
    let done = wait_complete(&api, "c2").await;
    assert_eq!(done["progress"]["counts"]["succeeded"], 4, "{done}");
    assert_eq!(devices.installs(), vec![1, 1, 1, 1]);
    // Not even the restart put a second download into the one-download cell.
    assert_eq!(devices.cell_peaks().get(&100), Some(&1));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_error_threshold_pauses_a_campaign_with_its_reason() {
    let dir = tempfile::tempdir().expect("tempdir");
    let srv = start_server(dir.path(), "127.0.0.1:0");
    let api = Api::new(srv.http);
    let n = 6;
    let mut handles = Vec::new();
    for i in 0..n {
        let mut c = device(srv.coap, i);
        // Every device refuses the package: Update Result 6, never worth a retry.
        c.firmware.fail = Some(FailureMode::UnsupportedPackage);
        let h = Client::start(c).await.expect("client");
        h.wait_registered(STEP).await.expect("registers");
        handles.push(h);
    }
    wait_inventory(&api, n, read_everything).await;
    let id = upload(&api, "2.0.0", firmware_package("2.0.0", 4)).await;
    let mut p = policy();
    p["error_threshold"] = json!({ "fraction": 0.5, "min_sample": 2, "scope": "campaign" });
    p["max_concurrent"] = json!(1);
    create_campaign(
        &api,
        json!({
            "id": "bad", "package_id": id, "filter": "model == \"BG95\"", "policy": p
        }),
    )
    .await;
    let mut paused = Value::Null;
    for _ in 0..POLLS {
        let c = campaign(&api, "bad").await;
        if c["status"] == "paused" && c["progress"]["in_flight"] == 0 {
            paused = c;
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert!(!paused.is_null(), "the campaign never paused");
    let failed = paused["progress"]["counts"]["failed"]
        .as_u64()
        .expect("failed");
    assert!((2..n as u64).contains(&failed), "{paused}");
    let reason = paused["progress"]["status"].to_string();
    assert!(reason.contains("error"), "the reason is shown: {reason}");
    // Paused means paused: nothing more starts.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let later = campaign(&api, "bad").await;
    assert_eq!(later["progress"]["counts"]["failed"], failed, "{later}");
    assert_eq!(later["progress"]["in_flight"], 0);
    // The operator may cancel it; the devices not yet tried end cancelled.
    let c = api
        .ok(
            Method::POST,
            "/api/campaigns/{id}/{action}",
            &[("id", "bad"), ("action", "cancel")],
            "",
            Body::None,
            StatusCode::OK,
        )
        .await;
    assert_eq!(c["status"], "cancelled", "{c}");
    assert_eq!(
        c["progress"]["counts"]["cancelled"].as_u64(),
        Some(n as u64 - failed)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn queue_mode_devices_are_updated_when_they_wake() {
    let dir = tempfile::tempdir().expect("tempdir");
    let srv = start_server(dir.path(), "127.0.0.1:0");
    let api = Api::new(srv.http);
    let n = 3;
    let mut handles = Vec::new();
    let mut installs = Vec::new();
    for i in 0..n {
        let mut c = device(srv.coap, i);
        c.queue_mode = true;
        c.awake_window = Duration::from_millis(1500);
        c.sleep_duration = Duration::from_secs(2);
        let h = Client::start(c).await.expect("client");
        let count = count_installs(&h);
        h.wait_registered(STEP).await.expect("registers");
        handles.push(h);
        installs.push(count);
    }
    wait_inventory(&api, n, |a| read_everything(a) && a["queue_mode"] == true).await;
    let id = upload(&api, "2.0.0", firmware_package("2.0.0", 4)).await;
    let mut p = policy();
    // Fast enough that the whole update fits in a wake.
    p["device_rate_bps"] = json!(1_000_000);
    p["default_cell_bps"] = json!(1_000_000);
    p["wake"] = json!({ "overhead_ms": 300 });
    create_campaign(
        &api,
        json!({
            "id": "q", "package_id": id, "filter": "queue_mode", "policy": p
        }),
    )
    .await;
    let done = wait_complete(&api, "q").await;
    assert_eq!(done["progress"]["counts"]["succeeded"], n, "{done}");
    let counts: Vec<usize> = installs.iter().map(|c| c.load(Ordering::SeqCst)).collect();
    assert_eq!(counts, vec![1; n]);
}

fn unix_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("after 1970")
        .as_millis() as u64
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_maintenance_window_holds_a_campaign_and_devices_that_start_matching_join_it() {
    let dir = tempfile::tempdir().expect("tempdir");
    let srv = start_server(dir.path(), "127.0.0.1:0");
    let api = Api::new(srv.http);
    let n = 3;
    let devices = start_devices(srv.coap, n).await;
    wait_inventory(&api, n, read_everything).await;
    // fl-0 and fl-1 are active; fl-2 is on trial and does not match yet.
    let mut billing = BTreeMap::new();
    for i in 0..n {
        let state = if i == 2 { "trial" } else { "active" };
        billing.insert(format!("fl-{i}"), json!({ "billing_state": state }));
    }
    api.ok(
        Method::PATCH,
        "/api/clients/attributes",
        &[],
        "",
        Body::Json(json!({ "devices": billing })),
        StatusCode::OK,
    )
    .await;
    let id = upload(&api, "2.0.0", firmware_package("2.0.0", 4)).await;
    // The window opens at a full minute at least 10 s away, on the wall clock (UTC),
    // and lasts long enough for three small updates.
    const MIN: u64 = 60_000;
    let opens = (unix_ms() + 10_000).div_ceil(MIN) * MIN;
    let minute_of_day = (opens / MIN) % (24 * 60);
    let cron = format!("{} {} * * *", minute_of_day % 60, minute_of_day / 60);
    let mut p = policy();
    p["windows"] = json!([{ "cron": cron, "duration_ms": 5 * MIN, "tz": "UTC" }]);
    p["join_new_members"] = json!(true);
    let c = create_campaign(
        &api,
        json!({
            "id": "w", "package_id": id, "filter": "billing == \"active\"", "policy": p
        }),
    )
    .await;
    assert_eq!(c["devices"], 2, "{c}");
    // Until the window opens nothing starts, and the campaign says when it will; fl-2
    // joins when its billing turns active.
    api.ok(
        Method::PATCH,
        "/api/clients/{endpoint}/attributes",
        &[("endpoint", "fl-2")],
        "",
        Body::Json(json!({ "billing_state": "active" })),
        StatusCode::OK,
    )
    .await;
    let mut joined = false;
    for _ in 0..POLLS {
        if unix_ms() + 1_000 >= opens {
            break;
        }
        let c = campaign(&api, "w").await;
        let progress = &c["progress"];
        assert_eq!(progress["in_flight"], 0, "started outside the window: {c}");
        assert_eq!(progress["counts"]["succeeded"], 0, "{c}");
        assert_eq!(progress["window"]["open"], false, "{c}");
        assert_eq!(progress["window"]["next_open_unix_ms"], opens, "{c}");
        joined |= c["devices"] == 3;
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert!(joined, "fl-2 never joined the waiting campaign");
    assert_eq!(
        devices.installs(),
        vec![0; n],
        "installed before the window"
    );
    let done = wait_complete(&api, "w").await;
    assert_eq!(done["progress"]["counts"]["succeeded"], 3, "{done}");
    assert_eq!(done["progress"]["window"]["open"], true, "{done}");
    assert_eq!(devices.installs(), vec![1; n]);
}
