//! `lwm2m-client-sim fleet` against the binary, at a tiny size: every device registers
//! from an address of its own and de-registers when the fleet stops; a fleet from a
//! behaviour profile reports what the profile drew for each device. And the `bench scale`
//! command once at a tiny size, so that it cannot rot.

mod http_support;

use std::collections::BTreeSet;
use std::process::{Command, Stdio};
use std::time::Duration;

use http_support::*;
use reqwest::{Method, StatusCode};

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
