//! `lwm2m-client-sim fleet` against the binary, at a tiny size: every device registers
//! from an address of its own and de-registers when the fleet stops. And the `bench scale`
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
