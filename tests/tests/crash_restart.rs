//! SIGKILL of a server that holds a registration and an observation, then a
//! restart on the same data directory and port: the device stays registered
//! and its next notification is still matched to the observation.
//!
//! The server to be killed runs in a child process (this test binary run
//! again in the `server_child` role), because SIGKILL must hit a whole
//! process; the device runs in the test and never notices the crash.

use std::io::{BufRead, BufReader};
use std::net::{SocketAddr, UdpSocket};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use lwm2m_client_sim::{Client, Config as ClientConfig};
use lwm2m_objects::link::Attributes;
use lwm2m_objects::{Node, Path, Resource, Value};
use lwm2m_server::config::ServerConfig;
use lwm2m_server::dm::{DmResponse, Operation};
use lwm2m_server::runtime::{Server, ServerEvent};

const ROLE: &str = "LWM2M_E2E_CRASH_ROLE";
const ENDPOINT: &str = "e2e-crash";

fn observe_battery() -> Operation {
    Operation::Observe {
        path: Path::resource(3, 0, 9),
        attributes: Attributes::default(),
        format: None,
    }
}

/// The child: a server that waits for the device, observes it, says so on
/// stdout, and waits to be killed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn server_child() {
    let (Ok(addr), Ok(dir)) = (
        std::env::var(format!("{ROLE}_ADDR")),
        std::env::var(format!("{ROLE}_DIR")),
    ) else {
        return; // not the child: nothing to do
    };
    let server = Server::start(ServerConfig::new(addr.parse().unwrap(), dir)).unwrap();
    println!("listening");
    let deadline = Instant::now() + Duration::from_secs(20);
    while server.registration(ENDPOINT).await.is_none() {
        assert!(Instant::now() < deadline, "device never registered");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let r = server
        .perform(ENDPOINT, &observe_battery(), Duration::from_secs(10))
        .await;
    assert!(
        matches!(
            r,
            Ok(DmResponse::Observed {
                sequence: Some(_),
                ..
            })
        ),
        "{r:?}"
    );
    println!("observed");
    tokio::time::sleep(Duration::from_secs(60)).await;
}

/// Reads the child's stdout until `want`, bounded in lines (the child's own
/// deadline bounds the time).
fn wait_line(lines: &mut impl Iterator<Item = std::io::Result<String>>, want: &str) {
    for line in lines.take(200) {
        // libtest may print "test server_child ... " on the same line first.
        if line.unwrap().trim_end().ends_with(want) {
            return;
        }
    }
    panic!("the child server never said {want:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_keeps_registration_and_observation() {
    if std::env::var(format!("{ROLE}_ADDR")).is_ok() {
        return; // the child runs only `server_child`
    }
    let dir = tempfile::tempdir().unwrap();
    let addr: SocketAddr = {
        let probe = UdpSocket::bind("127.0.0.1:0").unwrap();
        probe.local_addr().unwrap()
    };
    let mut child = Command::new(std::env::current_exe().unwrap())
        .args(["--exact", "server_child", "--nocapture", "--test-threads=1"])
        .env(format!("{ROLE}_ADDR"), addr.to_string())
        .env(format!("{ROLE}_DIR"), dir.path())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    wait_line(&mut lines, "listening");

    let device = Client::start(ClientConfig::new(addr, ENDPOINT))
        .await
        .unwrap();
    device
        .wait_registered(Duration::from_secs(10))
        .await
        .unwrap();
    tokio::task::spawn_blocking(move || wait_line(&mut lines, "observed"))
        .await
        .unwrap();

    child.kill().unwrap(); // SIGKILL
    child.wait().unwrap();

    let server = Server::start(ServerConfig::new(addr, dir.path())).unwrap();
    let mut events = server.subscribe();
    assert!(
        server.registration(ENDPOINT).await.is_some(),
        "registration survived SIGKILL"
    );
    device
        .set(Path::resource(3, 0, 9), Value::Integer(17))
        .await
        .unwrap();
    let packet = tokio::time::timeout(Duration::from_secs(10), async {
        loop {
            if let Ok(ServerEvent::Notification {
                endpoint, packet, ..
            }) = events.recv().await
            {
                assert_eq!(endpoint, ENDPOINT);
                return packet;
            }
        }
    })
    .await
    .expect("a notification after the restart");
    let n = server
        .read_notification(ENDPOINT, &observe_battery(), &packet)
        .await
        .unwrap();
    assert!(
        matches!(
            &n,
            DmResponse::Observed {
                node: Node::Resource(Resource::Single {
                    value: Value::Integer(17),
                    ..
                }),
                ..
            }
        ),
        "{n:?}"
    );
    server.shutdown().await;
}
