//! The server and a simulated device through a UDP relay on loopback that
//! drops a quarter of the datagrams, duplicates some and reorders others
//! (RFC 7252 §4: CoAP over an unreliable network). Every operation must
//! either complete or fail with a clear timeout, and nothing may be applied
//! twice: a Create applied twice would be answered 4.00 (the instance
//! exists), so every Create the device handled must have been answered 2.01 Created.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use lwm2m_client_sim::{Client, ClientEvent, Config as ClientConfig, Operation as DeviceOp};
use lwm2m_objects::{Resource, Value};
use lwm2m_server::coap::{Config as CoapConfig, FailReason};
use lwm2m_server::config::ServerConfig;
use lwm2m_server::dm::{DmResponse, Operation};
use lwm2m_server::runtime::{ManageError, RequestError, Server};
use tokio::net::UdpSocket;
use tokio::sync::Mutex;

/// A small deterministic generator, so that a failure can be replayed.
struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn chance(&mut self, percent: u64) -> bool {
        self.next() % 100 < percent
    }
}

/// Datagrams the relay dropped and duplicated, to prove the link was lossy.
static DROPPED: AtomicU64 = AtomicU64::new(0);
static DUPLICATED: AtomicU64 = AtomicU64::new(0);

/// Forwards datagrams between one device (whoever talks to `front` first)
/// and the server, dropping 25%, duplicating 10% and delaying up to 60 ms
/// (which reorders).
async fn relay(front: UdpSocket, server: SocketAddr, seed: u64) {
    let back = Arc::new(UdpSocket::bind("127.0.0.1:0").await.unwrap());
    let front = Arc::new(front);
    let rng = Arc::new(Mutex::new(Rng(seed)));
    let device: Arc<Mutex<Option<SocketAddr>>> = Arc::default();
    let forward = |to: Arc<UdpSocket>, dest: SocketAddr, data: Vec<u8>, rng: Arc<Mutex<Rng>>| async move {
        let (drop, dup, delay) = {
            let mut r = rng.lock().await;
            (r.chance(25), r.chance(10), r.next() % 60)
        };
        if drop {
            DROPPED.fetch_add(1, Ordering::Relaxed);
            return;
        }
        if dup {
            DUPLICATED.fetch_add(1, Ordering::Relaxed);
        }
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(delay)).await;
            let _ = to.send_to(&data, dest).await;
            if dup {
                let _ = to.send_to(&data, dest).await;
            }
        });
    };
    let up = {
        let (front, back, rng, device) = (front.clone(), back.clone(), rng.clone(), device.clone());
        async move {
            let mut buf = vec![0u8; 2048];
            while let Ok((n, from)) = front.recv_from(&mut buf).await {
                *device.lock().await = Some(from);
                forward(back.clone(), server, buf[..n].to_vec(), rng.clone()).await;
            }
        }
    };
    let down = async move {
        let mut buf = vec![0u8; 2048];
        while let Ok((n, _)) = back.recv_from(&mut buf).await {
            if let Some(d) = *device.lock().await {
                forward(front.clone(), d, buf[..n].to_vec(), rng.clone()).await;
            }
        }
    };
    tokio::join!(up, down);
}

fn fast_coap() -> CoapConfig {
    CoapConfig {
        ack_timeout: Duration::from_millis(100),
        response_timeout: Duration::from_secs(3),
        ..CoapConfig::default()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn operations_complete_or_time_out_and_none_is_applied_twice() {
    let dir = tempfile::tempdir().unwrap();
    let mut config = ServerConfig::new("127.0.0.1:0".parse().unwrap(), dir.path());
    config.coap = fast_coap();
    let server = Server::start(config).unwrap();
    let front = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let relay_addr = front.local_addr().unwrap();
    tokio::spawn(relay(front, server.coap_addr(), 0x5eed_cafe));

    let ep = "e2e-lossy";
    let mut dev_config = ClientConfig::new(relay_addr, ep);
    dev_config.coap = fast_coap();
    dev_config.extra_objects = vec![9];
    dev_config.registration_retry = Duration::from_millis(500);
    let device = Client::start(dev_config).await.unwrap();
    let mut device_events = device.subscribe();
    device
        .wait_registered(Duration::from_secs(30))
        .await
        .expect("registers through the lossy relay");

    const N: u16 = 30;
    let (mut created, mut timed_out) = (0, 0);
    for i in 0..N {
        let create = Operation::Create {
            object: 9,
            instance: Some(100 + i),
            resources: vec![
                Resource::Single {
                    id: 0,
                    value: Value::from("app"),
                },
                Resource::Single {
                    id: 1,
                    value: Value::from(format!("1.0.{i}")),
                },
            ],
            format: None,
        };
        let result = tokio::time::timeout(
            Duration::from_secs(30),
            server.perform(ep, &create, Duration::from_secs(20)),
        )
        .await
        .unwrap_or_else(|_| panic!("create {i} neither completed nor failed"));
        match result {
            Ok(DmResponse::Created { .. }) => created += 1,
            Err(ManageError::Request(RequestError::Failed(FailReason::Timeout))) => timed_out += 1,
            other => panic!("create {i}: {other:?}"),
        }
    }
    assert_eq!(created + timed_out, N);
    assert!(
        created >= N / 2,
        "only {created} of {N} creates went through 25% loss"
    );

    // Every Create the device handled was answered 2.01: none was applied twice.
    let mut handled = 0;
    while let Ok(e) = device_events.try_recv() {
        if let ClientEvent::Operation {
            operation: DeviceOp::Create,
            code,
            path,
            ..
        } = e
        {
            assert_eq!(
                code, "Created",
                "create on {path} answered {code}: applied twice?"
            );
            handled += 1;
        }
    }
    assert!(
        handled >= created,
        "device handled {handled} creates, server saw {created}"
    );
    assert!(handled <= N);
    let (dropped, duplicated) = (
        DROPPED.load(Ordering::Relaxed),
        DUPLICATED.load(Ordering::Relaxed),
    );
    eprintln!("{created} created, {timed_out} timed out; relay dropped {dropped}, duplicated {duplicated}");
    assert!(
        dropped >= 10 && duplicated >= 3,
        "the link was not lossy enough to test anything"
    );
    server.shutdown().await;
}
