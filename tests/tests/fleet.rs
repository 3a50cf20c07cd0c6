//! `lwm2m-client-sim fleet` against the binary, at a tiny size: every device registers
//! from an address of its own and de-registers when the fleet stops; a fleet from a
//! behaviour profile reports what the profile drew for each device. And the `bench scale`
//! command once at a tiny size, so that it cannot rot.
//!
//! Parking, against the server in-process (its events say from which address each
//! Update came and carry every notification's token and sequence number): a sleeping
//! queue-mode device is parked and wakes with an Update (not a Register) from a new
//! port, keeping its observation; a device downloading firmware is not parked.
//!
//! The inventory writes a device's other changes at each flush and its time last seen,
//! which every Update moves, only every `seen_flush_interval` (and at a stop).

mod http_support;

use std::collections::BTreeSet;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use http_support::*;
use lwm2m_client_sim::fleet::{Fleet, FleetConfig};
use lwm2m_client_sim::Config as ClientConfig;
use lwm2m_objects::link::Attributes;
use lwm2m_objects::{Node, Path, Resource, Value};
use lwm2m_server::config::ServerConfig;
use lwm2m_server::dm::{DmResponse, Operation, WriteMode};
use lwm2m_server::runtime::{Server, ServerEvent, ServerHandle};
use reqwest::{Method, StatusCode};
use tokio::sync::broadcast;

const DEVICES: usize = 40;

async fn clients(api: &Api) -> serde_json::Value {
    api.ok(
        Method::GET,
        "/api/clients",
        &[],
        "prefix=tiny-&limit=1000",
        Body::None,
        StatusCode::OK,
    )
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fleet_registers_each_device_from_its_own_address_and_leaves() {
    let dir = tempfile::tempdir().expect("tempdir");
    let srv = start(&dir.path().join("data"), &["--api-token", ADMIN], &[]);
    let api = Api::new(srv.http);
    let mut cmd = Command::new(binary("lwm2m-client-sim"));
    cmd.args(["fleet", "--server", &format!("coap://{}", srv.coap)])
        .args([
            "--count",
            &DEVICES.to_string(),
            "--prefix",
            "tiny-",
            "--rate",
            "200",
        ])
        .args(["--duration", "3"])
        .stderr(Stdio::inherit());
    let (mut child, first, rx) = spawn(cmd, "lwm2m-client-sim fleet");
    let mut lines = vec![first];
    let ready = loop {
        match rx.recv_timeout(STEP) {
            Ok(l) if l.starts_with("fleet ready") => break l,
            Ok(l) => lines.push(l),
            Err(_) => {
                let _ = child.kill();
                panic!("no `fleet ready` line; got {lines:?}");
            }
        }
    };
    assert!(
        ready.contains(&format!("registered={DEVICES} failed=0")),
        "{ready}"
    );
    // The last progress line before it: none in queue mode, so none parked.
    let last = lines.last().expect("a progress line");
    assert!(
        last.contains(&format!("asleep=0 awake={DEVICES} ")),
        "{last}"
    );
    let page = clients(&api).await;
    assert_eq!(page["total"], DEVICES, "{page}");
    let addresses: BTreeSet<String> = page["clients"]
        .as_array()
        .expect("clients")
        .iter()
        .map(|c| {
            let a = c["address"].as_str().unwrap_or("");
            a.rsplit_once(':').map_or(a, |(ip, _)| ip).to_string()
        })
        .collect();
    assert_eq!(
        addresses.len(),
        DEVICES,
        "one address per device: {addresses:?}"
    );
    let status = tokio::task::spawn_blocking(move || child.wait())
        .await
        .expect("join")
        .expect("wait");
    assert!(status.success(), "{status}");
    let mut left = clients(&api).await["total"].clone();
    for _ in 0..50 {
        if left == 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
        left = clients(&api).await["total"].clone();
    }
    assert_eq!(left, 0, "every device de-registered");
}

/// A small mix: two models 3:1, half the devices in queue mode, NB-IoT and Wi-Fi, a
/// third of the cellular ones roaming, batteries that lose 1 % a second, and a little
/// latency on every datagram.
const PROFILE: &str = r#"
seed = 11
[[model]]
manufacturer = "Acme"
model = "M-1"
weight = 3
firmware = [{ version = "1.0.0" }, { version = "1.1.0" }]
[[model]]
manufacturer = "Globex"
model = "G-2"
weight = 1
[[schedule]]
name = "awake"
lifetime_s = 300
[[schedule]]
name = "queue"
queue_mode = true
lifetime_s = [600, 1200]
awake_s = 60
sleep_s = 60
[[bearer]]
kind = "nb-iot"
weight = 3
[[bearer]]
kind = "wifi"
[network]
home_mcc = 262
home_mnc = 2
roaming_share = 0.3
[[network.visited]]
mcc = 208
mnc = 15
[cells]
per_region = 2
downlink_bytes_per_s = 100000
uplink_bytes_per_s = 100000
[battery]
level_pct = [60, 90]
drain_pct_per_h = 3600
[link]
latency_ms = [1, 10]
"#;

const PROFILED: usize = 20;

/// The value of resource `id` in an instance read through the API.
fn resource(read: &serde_json::Value, id: u64) -> serde_json::Value {
    read["content"]["resources"]
        .as_array()
        .and_then(|rs| rs.iter().find(|r| r["id"] == id))
        .map(|r| r["value"].clone())
        .unwrap_or(serde_json::Value::Null)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_profiled_fleet_reports_what_the_profile_drew() {
    let dir = tempfile::tempdir().expect("tempdir");
    let file = dir.path().join("tiny.toml");
    std::fs::write(&file, PROFILE).expect("write the profile");
    let profile = lwm2m_client_sim::profile::Profile::load(&file).expect("the profile");
    let srv = start(&dir.path().join("data"), &["--api-token", ADMIN], &[]);
    let api = Api::new(srv.http);
    let mut cmd = Command::new(binary("lwm2m-client-sim"));
    cmd.args(["fleet", "--server", &format!("coap://{}", srv.coap)])
        .arg("--profile")
        .arg(&file)
        .args(["--count", &PROFILED.to_string(), "--prefix", "prof-"])
        .args(["--rate", "200", "--duration", "60"])
        .stderr(Stdio::inherit());
    let (mut child, first, rx) = spawn(cmd, "lwm2m-client-sim fleet");
    assert!(first.starts_with("fleet profile "), "{first}");
    let mut lines = vec![first];
    let ready = loop {
        match rx.recv_timeout(STEP) {
            Ok(l) if l.starts_with("fleet ready") => break l,
            Ok(l) => lines.push(l),
            Err(_) => {
                let _ = child.kill();
                panic!("no `fleet ready` line; got {lines:?}");
            }
        }
    };
    assert!(
        ready.contains(&format!("registered={PROFILED} failed=0")),
        "{ready}"
    );

    let page = api
        .ok(
            Method::GET,
            "/api/clients",
            &[],
            "prefix=prof-&limit=1000",
            Body::None,
            StatusCode::OK,
        )
        .await;
    assert_eq!(page["total"], PROFILED, "{page}");
    let (mut models, mut roaming, mut queued) = (BTreeSet::new(), 0, 0);
    let mut awake_device = None;
    for i in 0..PROFILED {
        let want = profile.device(i);
        let ep = format!("prof-{i:07}");
        let listed = page["clients"]
            .as_array()
            .and_then(|cs| cs.iter().find(|c| c["endpoint"] == ep.as_str()))
            .unwrap_or_else(|| panic!("{ep} not listed"));
        assert_eq!(listed["lifetime_s"], want.lifetime, "{ep}");
        assert_eq!(listed["queue_mode"], want.queue_mode, "{ep}");
        let read = |path: &'static str| {
            let api = api.clone();
            let ep = ep.clone();
            async move {
                api.ok(
                    Method::GET,
                    "/api/clients/{endpoint}/{path}",
                    &[("endpoint", &ep), ("path", path)],
                    "timeout=10",
                    Body::None,
                    StatusCode::OK,
                )
                .await
            }
        };
        let device = read("3/0").await;
        let d = &want.device;
        assert_eq!(resource(&device, 0), d.manufacturer.as_str(), "{ep}");
        assert_eq!(resource(&device, 1), d.model.as_str(), "{ep}");
        assert_eq!(resource(&device, 3), d.firmware_version.as_str(), "{ep}");
        let battery = resource(&device, 9).as_i64().expect("battery level");
        // Drawn in 60..=90, and it has drained for a few seconds since.
        assert!(
            battery <= d.battery.level && battery >= d.battery.level - 15,
            "{ep}: {battery} from {}",
            d.battery.level
        );
        let radio = read("4/0").await;
        assert_eq!(resource(&radio, 0), i64::from(d.radio.bearer), "{ep}");
        match &d.radio.cellular {
            Some(c) => {
                assert_eq!(resource(&radio, 10), i64::from(c.mcc), "{ep}");
                assert_eq!(resource(&radio, 9), i64::from(c.mnc), "{ep}");
                assert_eq!(resource(&radio, 8), i64::from(c.cell_id), "{ep}");
                let home = (c.mcc, c.mnc) == (262, 2);
                assert_eq!(home, !want.roaming, "{ep}");
            }
            None => {
                assert_eq!(d.radio.bearer, 21, "{ep}");
                assert_eq!(resource(&radio, 10), serde_json::Value::Null, "{ep}");
            }
        }
        models.insert(d.model.clone());
        roaming += usize::from(want.roaming);
        queued += usize::from(want.queue_mode);
        if !want.queue_mode && awake_device.is_none() {
            awake_device = Some((ep.clone(), battery));
        }
    }
    // The draw of seed 11 for 20 devices has every kind in it; the checks above saw them.
    assert_eq!(models.len(), 2, "{models:?}");
    assert!(
        roaming > 0 && queued > 0 && queued < PROFILED,
        "{roaming} {queued}"
    );

    // The battery drains through the object store, so an observation of it notifies.
    let (ep, before) = awake_device.expect("a device without queue mode");
    let mut events = api.events(&format!("ep={ep}"), ADMIN).await;
    let ob = api
        .ok(
            Method::POST,
            "/api/clients/{endpoint}/{path}/observe",
            &[("endpoint", &ep), ("path", "3/0/9")],
            "",
            Body::None,
            StatusCode::OK,
        )
        .await;
    let token = ob["observation"].as_str().expect("token").to_string();
    let at_observe = ob["content"]["value"].as_i64().expect("a level");
    assert!(at_observe <= before, "{at_observe} after {before}");
    let n = wait_event(&mut events, "NOTIFICATION", |v| {
        v["observation"] == token.as_str()
            && v["content"]["value"]
                .as_i64()
                .is_some_and(|b| b < at_observe)
    })
    .await;
    assert_eq!(n["paths"], serde_json::json!(["/3/0/9"]));
    let _ = child.kill();
    let _ = child.wait();
}

#[test]
fn the_scale_benchmark_runs_at_a_tiny_size() {
    let out = Command::new(binary("lwm2m-client-sim"))
        .args([
            "bench",
            "scale",
            "--count",
            "20",
            "--rate",
            "200",
            "--server-binary",
        ])
        .arg(server_binary())
        .stderr(Stdio::null())
        .output()
        .expect("run the benchmark");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{text}");
    assert!(
        text.contains("bench scale devices=20 registered=20 listed=20 lost=0"),
        "{text}"
    );
}

/// The in-process server, told that its devices' awake windows are short.
fn server(dir: &std::path::Path) -> ServerHandle {
    let mut config = ServerConfig::new("127.0.0.1:0".parse().unwrap(), dir);
    config.registry.awake_window = Duration::from_secs(1);
    Server::start(config).expect("server starts")
}

/// A queue-mode device that wakes on a new port after every sleep.
fn sleepy(server: &ServerHandle, awake: Duration, sleep: Duration) -> ClientConfig {
    let mut c = ClientConfig::new(server.coap_addr(), "x");
    c.queue_mode = true;
    c.awake_window = awake;
    c.sleep_duration = sleep;
    c.rebind_on_wake = true;
    c
}

/// The first server event `pick` takes something from, within [`STEP`] in all; `pick`
/// may panic at an event that must not come first.
async fn wait_for<T>(
    events: &mut broadcast::Receiver<ServerEvent>,
    what: &str,
    mut pick: impl FnMut(ServerEvent) -> Option<T>,
) -> T {
    let found = tokio::time::timeout(STEP, async {
        loop {
            match events.recv().await {
                Ok(e) => {
                    if let Some(t) = pick(e) {
                        return t;
                    }
                }
                Err(broadcast::error::RecvError::Lagged(_)) => {}
                Err(e) => panic!("{what}: the event stream ended: {e}"),
            }
        }
    })
    .await;
    found.unwrap_or_else(|_| panic!("{what}: not within {STEP:?}"))
}

/// Polls `what` every 20 ms until it holds, for at most [`STEP`].
async fn until(what: &str, mut holds: impl FnMut() -> bool) {
    let deadline = Instant::now() + STEP;
    while !holds() {
        assert!(Instant::now() < deadline, "{what}: not within {STEP:?}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn battery(n: &DmResponse) -> i64 {
    match n {
        DmResponse::Observed {
            node:
                Node::Resource(Resource::Single {
                    value: Value::Integer(v),
                    ..
                }),
            ..
        } => *v,
        other => panic!("not a battery level: {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_parked_device_wakes_with_an_update_from_a_new_port_and_keeps_its_observation() {
    let dir = tempfile::tempdir().expect("tempdir");
    let server = server(dir.path());
    let mut events = server.subscribe();
    let mut template = sleepy(&server, Duration::from_millis(1500), Duration::from_secs(3));
    // 2 % a second, in steps of a second: the level moves while the device sleeps, by
    // about 6 % a sleep.
    template.profile.battery.drain_pct_per_h = Some(7200.0);
    let mut cfg = FleetConfig::new(template, 1);
    cfg.prefix = "parked-".into();
    let fleet = Fleet::start(cfg, |_, _| {}).await.expect("fleet");
    assert_eq!(fleet.progress().registered, 1);
    let ep = "parked-0000000";
    let first = wait_for(&mut events, "registration", |e| match e {
        ServerEvent::Registered { registration, .. } => Some(registration),
        _ => None,
    })
    .await;
    assert_eq!(&*first.endpoint, ep);
    let observe = Operation::Observe {
        path: Path::resource(3, 0, 9),
        attributes: Attributes::default(),
        format: None,
    };
    let observed = server
        .perform(ep, &observe, STEP)
        .await
        .expect("observe while awake");
    let (mut token, mut seq, mut level) = (None, 0, battery(&observed));

    // Awake: notifications as the battery drains; then the device parks.
    let deadline = Instant::now() + STEP;
    while !fleet.is_parked(0) {
        assert!(Instant::now() < deadline, "the device never parked");
        let Ok(Ok(e)) = tokio::time::timeout(Duration::from_millis(20), events.recv()).await else {
            continue;
        };
        match e {
            ServerEvent::Registered { .. } => panic!("registered again while awake"),
            ServerEvent::Notification {
                token: t,
                sequence,
                packet,
                ..
            } => {
                let n = server
                    .read_notification(ep, &observe, &packet)
                    .await
                    .expect("a notification of /3/0/9");
                assert!(
                    token.get_or_insert_with(|| t.clone()) == &t,
                    "one observation"
                );
                (seq, level) = (sequence, battery(&n));
            }
            _ => {}
        }
    }
    let token = token.expect("a notification before the device slept");
    let (kept, location) = fleet
        .inspect_parked(0, |p| (p.observations(), p.location().to_string()))
        .expect("parked");
    assert_eq!(kept, 1, "the parked record keeps the observation");
    assert_eq!(location, format!("/rd/{}", first.id));
    let p = fleet.progress();
    assert_eq!((p.asleep, p.awake), (1, 0), "{p:?}");

    // Its wake: an Update of the same registration from a new port, nothing before it.
    let woke = wait_for(&mut events, "the wake's Update", |e| match e {
        ServerEvent::Updated { registration, .. } => Some(registration),
        ServerEvent::Registered { .. } => panic!("a parked device must not register again"),
        ServerEvent::Notification { .. } => panic!("a notification while parked"),
        _ => None,
    })
    .await;
    assert_eq!(woke.id, first.id, "the same registration");
    assert_eq!(woke.peer.ip(), first.peer.ip(), "the device's own address");
    assert_ne!(
        woke.peer.port(),
        first.peer.port(),
        "a new port after the sleep"
    );
    assert!(fleet.progress().wakes >= 1);

    // What changed while it slept is notified now, under the same token, newer.
    let (sequence, packet) = wait_for(&mut events, "a notification after the wake", |e| match e {
        ServerEvent::Notification {
            token: t,
            sequence,
            packet,
            ..
        } => {
            assert_eq!(t, token, "the observation's token");
            Some((sequence, packet))
        }
        ServerEvent::Registered { .. } => panic!("registered again"),
        _ => None,
    })
    .await;
    assert!(sequence > seq, "sequence {sequence} after {seq}");
    let after = battery(
        &server
            .read_notification(ep, &observe, &packet)
            .await
            .expect("a notification of /3/0/9"),
    );
    // Awake, at most one step of 2 % can go unnotified before the park; the sleep of
    // 3 s drains about 6 % more.
    assert!(
        after <= level - 4,
        "{after} % after {level} %: it drained while asleep"
    );

    fleet.shutdown(4).await;
    let gone = wait_for(&mut events, "de-registration", |e| match e {
        ServerEvent::Deregistered { registration } => Some(registration),
        _ => None,
    })
    .await;
    assert_eq!(gone.id, first.id);
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fleet_device_downloading_firmware_does_not_park() {
    let dir = tempfile::tempdir().expect("tempdir");
    let server = server(dir.path());
    let mut events = server.subscribe();
    // A package server that accepts and never answers: the download stays in progress
    // until the connections are dropped.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("listener");
    let uri = format!("http://{}/fw.bin", listener.local_addr().expect("address"));
    let (stop, mut stopped) = tokio::sync::oneshot::channel::<()>();
    let accepted = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let holder = {
        let accepted = accepted.clone();
        tokio::spawn(async move {
            let mut held = Vec::new();
            loop {
                tokio::select! {
                    c = listener.accept() => {
                        if let Ok((conn, _)) = c {
                            held.push(conn);
                            accepted.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                        }
                    }
                    _ = &mut stopped => return,
                }
            }
        })
    };
    let (awake, sleep) = (Duration::from_millis(800), Duration::from_secs(1));
    let mut template = sleepy(&server, awake, sleep);
    template.firmware.http_timeout = Duration::from_secs(60);
    template.firmware.retries = 0;
    let mut cfg = FleetConfig::new(template, 1);
    cfg.prefix = "fw-park-".into();
    let fleet = Fleet::start(cfg, |_, _| {}).await.expect("fleet");
    let ep = "fw-park-0000000";
    // Idle, it parks.
    until("the idle device parks", || fleet.is_parked(0)).await;

    // Woken for the write; the server hears its Update, then writes the Package URI.
    let device = fleet.device(0).await.expect("the device, woken");
    let woke = wait_for(&mut events, "the wake's Update", |e| match e {
        ServerEvent::Updated { registration, .. } => Some(registration),
        _ => None,
    })
    .await;
    assert_eq!(&*woke.endpoint, ep);
    let write = Operation::Write {
        path: Path::resource(5, 0, 1),
        node: Node::Resource(Resource::Single {
            id: 1,
            value: Value::String(uri),
        }),
        mode: WriteMode::Replace,
        format: None,
    };
    server
        .perform(ep, &write, STEP)
        .await
        .expect("Package URI written");
    until("the download connects", || {
        accepted.load(std::sync::atomic::Ordering::Relaxed) > 0
    })
    .await;

    // Several awake windows and sleeps later it still runs, downloading.
    let watch = Instant::now();
    while watch.elapsed() < 3 * (awake + sleep) {
        assert!(!fleet.is_parked(0), "parked in the middle of a download");
        let p = fleet.progress();
        assert_eq!((p.asleep, p.awake), (0, 1), "{p:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let state = device
        .read(Path::resource(5, 0, 3))
        .await
        .expect("the same client still runs");
    assert_eq!(
        state,
        Node::Resource(Resource::Single {
            id: 3,
            value: Value::Integer(1)
        }),
        "Downloading"
    );

    // The package server goes away: the download fails, and the device parks again.
    let _ = stop.send(());
    let _ = holder.await;
    until("the device parks once the download is over", || {
        fleet.is_parked(0)
    })
    .await;
    fleet.shutdown(4).await;
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_time_last_seen_alone_waits_for_its_own_interval_and_a_stop_writes_it() {
    use lwm2m_server::fleet::{Fleet as Inventory, FleetSettings};
    let dir = tempfile::tempdir().expect("tempdir");
    let server = server(dir.path());
    let settings = FleetSettings {
        inventory_reads: false,
        flush_interval: Duration::from_millis(20),
        seen_flush_interval: Duration::from_secs(3600),
        ..FleetSettings::default()
    };
    let inventory = Inventory::start(server.clone(), settings)
        .await
        .expect("inventory");
    let on_disk = || {
        inventory
            .stored_attributes("seen-0")
            .expect("the store reads")
    };
    let stored = |what: &str| {
        on_disk()
            .unwrap_or_else(|| panic!("{what}: no stored attributes"))
            .last_seen_unix_ms()
    };
    let mut cfg = ClientConfig::new(server.coap_addr(), "seen-0");
    cfg.lifetime = 300;
    let client = lwm2m_client_sim::client::Client::start(cfg)
        .await
        .expect("client");
    client.wait_registered(STEP).await.expect("registered");
    until("the registration's attributes are written", || {
        on_disk().is_some()
    })
    .await;
    let written = stored("after the Register");
    assert!(
        written.is_some(),
        "a Register writes the time last seen with the rest"
    );

    // The Update moves the time in memory; the flushes that follow leave it on disk.
    tokio::time::sleep(Duration::from_millis(5)).await;
    client.update().await.expect("update");
    until("the Update reaches the inventory", || {
        inventory
            .attributes("seen-0")
            .and_then(|a| a.last_seen_unix_ms())
            > written
    })
    .await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(stored("ten flushes after the Update"), written);

    let latest = inventory
        .attributes("seen-0")
        .and_then(|a| a.last_seen_unix_ms());
    server.shutdown().await;
    until("the stop writes the time last seen", || {
        on_disk().and_then(|a| a.last_seen_unix_ms()) == latest
    })
    .await;
    drop(client);
}

/// A SIGKILL before the inventory wrote an Update's time last seen costs nothing: the
/// restart takes it from the registration, which the store keeps at every Update.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn after_a_sigkill_a_registered_device_was_last_seen_at_its_last_update() {
    /// The inventory's time last seen of the device once it is past `after`, polled
    /// every 20 ms for at most [`STEP`].
    async fn last_seen_after(api: &Api, after: i64) -> i64 {
        let deadline = Instant::now() + STEP;
        loop {
            let (status, a) = api
                .call(
                    Method::GET,
                    "/api/clients/{endpoint}/attributes",
                    &[("endpoint", "seen-kill")],
                    "",
                    Body::None,
                    Auth::Bearer(ADMIN),
                )
                .await;
            let seen = a["last_seen"].as_i64().unwrap_or(0);
            if status == StatusCode::OK && seen > after {
                return seen;
            }
            assert!(
                Instant::now() < deadline,
                "last seen stays at {seen} ({status}), not after {after}"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let data = dir.path().join("data");
    let srv = start(&data, &["--api-token", ADMIN], &[]);
    let mut cfg = ClientConfig::new(srv.coap, "seen-kill");
    cfg.lifetime = 300;
    let client = lwm2m_client_sim::client::Client::start(cfg)
        .await
        .expect("client");
    client.wait_registered(STEP).await.expect("registered");
    let api = Api::new(srv.http);
    let registered = last_seen_after(&api, 0).await;
    // Past the next flush, which writes the Register's attributes.
    tokio::time::sleep(Duration::from_millis(1_500)).await;
    client.update().await.expect("update");
    let updated = last_seen_after(&api, registered).await;

    drop(srv); // SIGKILL, before the time is due to be written
    let srv = start(&data, &["--api-token", ADMIN], &[]);
    // The registration's time is the driver's, a little before the inventory's.
    let restored = last_seen_after(&Api::new(srv.http), registered).await;
    assert!(
        restored >= updated - 1_000,
        "last seen at {restored} after the restart: the Update of {updated} was lost"
    );
    drop(client);
}

/// Attributes are stored under a key given at a device's first write; a restart must
/// take the stored key back, or every later write of the device would add a record.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_device_keeps_one_stored_record_across_restarts() {
    let dir = tempfile::tempdir().expect("tempdir");
    let data = dir.path().join("data");
    let patch = |api: Api, site: &'static str| async move {
        let (status, body) = api
            .call(
                Method::PATCH,
                "/api/clients/{endpoint}/attributes",
                &[("endpoint", "one-record")],
                "",
                Body::Json(serde_json::json!({ "labels": { "site": site } })),
                Auth::Bearer(ADMIN),
            )
            .await;
        assert_eq!(status, StatusCode::OK, "{body}");
    };
    let mut cfg = ClientConfig::new("127.0.0.1:9".parse().unwrap(), "one-record");
    cfg.lifetime = 300;
    for site in ["north", "south"] {
        let srv = start(&data, &["--api-token", ADMIN], &[]);
        cfg.server = srv.coap;
        let client = lwm2m_client_sim::client::Client::start(cfg.clone())
            .await
            .expect("client");
        client.wait_registered(STEP).await.expect("registered");
        // An operator's patch is written before it is answered.
        patch(Api::new(srv.http), site).await;
        drop(srv); // SIGKILL
        drop(client);
    }
    let store = lwm2m_server::fleet::store::FleetStore::open(&data).expect("the fleet store opens");
    let records: Vec<serde_json::Value> = store
        .all_attributes::<serde_json::Value>()
        .expect("records read")
        .into_iter()
        .map(|(_, r)| r)
        .filter(|r| r["endpoint"] == "one-record")
        .collect();
    assert_eq!(records.len(), 1, "{records:?}");
    assert_eq!(records[0]["labels"]["site"], "south");
}
