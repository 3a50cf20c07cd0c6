//! The real `lwm2m-server` binary with simulated devices of each enabler
//! version and preferred format: they register, the binary is killed with
//! SIGKILL and started again on the same port and data directory, and every
//! device's next Update is accepted (its registration survived), then every
//! device de-registers.

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use lwm2m_client_sim::{Client, ClientEvent, ClientHandle, Config as ClientConfig};
use lwm2m_objects::{ContentFormat, Version};
use tokio::sync::broadcast;

/// The server binary `cargo test --workspace` builds beside this test
/// (`target/<profile>/lwm2m-server`; tests run from `target/<profile>/deps`).
fn server_binary() -> PathBuf {
    let exe = std::env::current_exe().expect("test executable path");
    let bin = exe
        .parent()
        .and_then(Path::parent)
        .map(|dir| dir.join("lwm2m-server"))
        .expect("target directory");
    assert!(
        bin.is_file(),
        "{} is missing: run `cargo test --workspace` (or `cargo build -p lwm2m-server`) first",
        bin.display()
    );
    bin
}

struct Running(Child);

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn start(coap: &str, data_dir: &Path) -> (Running, SocketAddr) {
    let mut child = Command::new(server_binary())
        .args([
            "--coap",
            coap,
            "--coaps",
            "127.0.0.1:0",
            "--http",
            "127.0.0.1:0",
            "--data-dir",
        ])
        .arg(data_dir)
        .env("RUST_LOG", "warn")
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("spawn lwm2m-server");
    let stdout = child.stdout.take().expect("stdout");
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let mut line = String::new();
        let _ = BufReader::new(stdout).read_line(&mut line);
        let _ = tx.send(line);
    });
    let running = Running(child);
    let line = rx
        .recv_timeout(Duration::from_secs(20))
        .expect("the binary printed its address");
    let addr = line
        .trim()
        .strip_prefix("listening coap=")
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|a| a.parse().ok())
        .unwrap_or_else(|| panic!("unexpected first line {line:?}"));
    (running, addr)
}

async fn next_update_outcome(events: &mut broadcast::Receiver<ClientEvent>) -> ClientEvent {
    tokio::time::timeout(Duration::from_secs(20), async {
        loop {
            match events.recv().await {
                Ok(e @ (ClientEvent::Updated | ClientEvent::UpdateFailed { .. })) => return e,
                Ok(e @ ClientEvent::Registered { .. }) => return e,
                _ => {}
            }
        }
    })
    .await
    .expect("an Update outcome")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn devices_stay_registered_across_sigkill_of_the_binary() {
    let dir = tempfile::tempdir().unwrap();
    let (first, addr) = start("127.0.0.1:0", dir.path());

    let kinds = [
        ("bin-1.0-tlv", Version::V1_0, ContentFormat::Tlv),
        (
            "bin-1.1-senml-cbor",
            Version::V1_1,
            ContentFormat::SenmlCbor,
        ),
        (
            "bin-1.2-lwm2m-cbor",
            Version::V1_2,
            ContentFormat::Lwm2mCbor,
        ),
    ];
    let mut devices: Vec<(ClientHandle, broadcast::Receiver<ClientEvent>)> = Vec::new();
    for (name, version, format) in kinds {
        let mut config = ClientConfig::new(addr, name);
        config.version = version;
        config.format = format;
        let device = Client::start(config).await.unwrap();
        let events = device.subscribe();
        device
            .wait_registered(Duration::from_secs(10))
            .await
            .unwrap_or_else(|e| panic!("{name} did not register: {e}"));
        devices.push((device, events));
    }

    drop(first); // SIGKILL and wait
    let (second, again) = start(&addr.to_string(), dir.path());
    assert_eq!(again, addr);

    for (device, events) in &mut devices {
        while events.try_recv().is_ok() {} // the events of the first registration
        device.update().await.unwrap();
        let outcome = next_update_outcome(events).await;
        assert!(
            matches!(outcome, ClientEvent::Updated),
            "after the restart the Update got {outcome:?}: the registration was lost"
        );
    }
    // Those Updates went to the store's refresh log, which a start reads on top of the
    // records: a second SIGKILL must not cost the registrations they refreshed.
    drop(second);
    let (_third, again) = start(&addr.to_string(), dir.path());
    assert_eq!(again, addr);
    for (device, events) in &mut devices {
        device.update().await.unwrap();
        let outcome = next_update_outcome(events).await;
        assert!(
            matches!(outcome, ClientEvent::Updated),
            "after the second restart the Update got {outcome:?}"
        );
    }
    for (device, events) in &mut devices {
        device.shutdown().await.unwrap();
        tokio::time::timeout(Duration::from_secs(10), async {
            while !matches!(events.recv().await, Ok(ClientEvent::Deregistered)) {}
        })
        .await
        .expect("de-registered");
    }
}

/// Group commit: the binary takes up to 256 datagrams per pass and answers them after one
/// store sync. A burst of devices started at once makes such batches, and a SIGKILL right
/// after the last 2.01 must still find every acknowledged registration. (What the sync
/// adds, durability past a power cut, a SIGKILL cannot show: the store's unit tests check
/// that mechanism.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_acknowledged_registration_of_a_burst_survives_sigkill() {
    const DEVICES: usize = 300;
    let dir = tempfile::tempdir().unwrap();
    let (first, addr) = start("127.0.0.1:0", dir.path());
    let mut cfg = lwm2m_client_sim::fleet::FleetConfig::new(ClientConfig::new(addr, "x"), DEVICES);
    cfg.prefix = "burst-".into();
    cfg.start_rate = 100_000;
    cfg.register_timeout = Duration::from_secs(20);
    let fleet = lwm2m_client_sim::fleet::Fleet::start(cfg, |_, _| {})
        .await
        .unwrap();
    assert_eq!(
        fleet.progress().registered,
        DEVICES,
        "{:?}",
        fleet.progress()
    );

    drop(first); // SIGKILL at once, while the last answers are barely out
    let (_second, again) = start(&addr.to_string(), dir.path());
    assert_eq!(again, addr);

    let mut lost = Vec::new();
    for i in 0..fleet.len() {
        let device = fleet.device(i).await.unwrap();
        let mut events = device.subscribe();
        device.update().await.unwrap();
        let outcome = next_update_outcome(&mut events).await;
        if !matches!(outcome, ClientEvent::Updated) {
            lost.push(outcome);
        }
    }
    assert!(
        lost.is_empty(),
        "{} of {DEVICES} registrations lost: {lost:?}",
        lost.len()
    );
    fleet.shutdown(64).await;
}
