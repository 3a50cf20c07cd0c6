//! The server and a simulated device over loopback UDP, through the typed
//! device-management API: every operation of LwM2M Core §6 that the server
//! issues, in every content format the device offers, plus Send, queue mode
//! and a restart that keeps registrations and observations.
//!
//! The server runs in-process (`Server::start`, the code the binary runs):
//! the binary has no operator API yet to ask it for a Read. The binary's own
//! lifecycle (bound address, registration, SIGKILL and restart) is tested in
//! `server/tests/server_binary.rs`.

use std::future::Future;
use std::net::SocketAddr;
use std::time::Duration;

use lwm2m_client_sim::{
    Client, ClientEvent, ClientHandle, Config as ClientConfig, Operation as DeviceOp,
};
use lwm2m_objects::link::{AttributeValue, Attributes};
use lwm2m_objects::{ContentFormat, Node, Path, Resource, Value};
use lwm2m_server::config::ServerConfig;
use lwm2m_server::dm::{DmResponse, ExecuteArgs, Operation, SendData, WriteMode};
use lwm2m_server::runtime::{Server, ServerEvent, ServerHandle};
use tokio::sync::broadcast;

const STEP: Duration = Duration::from_secs(10);

async fn within<T>(what: &str, f: impl Future<Output = T>) -> T {
    tokio::time::timeout(STEP, f)
        .await
        .unwrap_or_else(|_| panic!("{what}: no answer within {STEP:?}"))
}

fn start_server(dir: &std::path::Path, addr: SocketAddr) -> ServerHandle {
    Server::start(ServerConfig::new(addr, dir)).expect("server starts")
}

async fn wait_event(
    events: &mut broadcast::Receiver<ServerEvent>,
    what: &str,
    mut pick: impl FnMut(&ServerEvent) -> bool,
) -> ServerEvent {
    within(what, async {
        loop {
            match events.recv().await {
                Ok(e) if pick(&e) => return e,
                Ok(_) | Err(broadcast::error::RecvError::Lagged(_)) => {}
                Err(e) => panic!("{what}: event stream ended: {e}"),
            }
        }
    })
    .await
}

async fn start_device(
    server: SocketAddr,
    name: &str,
    tune: impl FnOnce(&mut ClientConfig),
) -> ClientHandle {
    let mut config = ClientConfig::new(server, name);
    config.extra_objects = vec![9];
    tune(&mut config);
    let device = Client::start(config).await.expect("device starts");
    device
        .wait_registered(STEP)
        .await
        .expect("device registers");
    device
}

async fn perform(server: &ServerHandle, ep: &str, op: &Operation) -> DmResponse {
    within(&format!("{op:?}"), server.perform(ep, op, STEP))
        .await
        .unwrap_or_else(|e| panic!("{op:?} failed: {e}"))
}

fn resource_ids(node: &Node) -> Vec<u16> {
    match node {
        Node::Instance(i) => i.resources.keys().copied().collect(),
        other => panic!("expected an instance, got {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_operation_in_every_format() {
    let dir = tempfile::tempdir().unwrap();
    let server = start_server(dir.path(), "127.0.0.1:0".parse().unwrap());
    let mut events = server.subscribe();
    let ep = "e2e-dm";
    let device = start_device(server.coap_addr(), ep, |_| {}).await;
    wait_event(&mut events, "Registered", |e| {
        matches!(e, ServerEvent::Registered { .. })
    })
    .await;

    // Read every core object instance the device has, in every format.
    let formats = [
        None,
        Some(ContentFormat::Tlv),
        Some(ContentFormat::SenmlJson),
        Some(ContentFormat::SenmlCbor),
        Some(ContentFormat::Lwm2mCbor),
    ];
    for object in [1u16, 3, 4, 5, 6] {
        let path = Path::instance(object, 0);
        let local = device.read(path).await.expect("local read");
        for format in formats {
            let DmResponse::Node(node) =
                perform(&server, ep, &Operation::Read { path, format }).await
            else {
                panic!("read {path} returned no node");
            };
            assert_eq!(
                resource_ids(&node),
                resource_ids(&local),
                "{path} in {format:?}"
            );
        }
    }
    // Static values are equal to the device's own, whatever the format.
    for format in formats {
        let op = Operation::Read {
            path: Path::resource(3, 0, 0),
            format: format.or(Some(ContentFormat::Text)),
        };
        let got = perform(&server, ep, &op).await;
        let local = device.read(Path::resource(3, 0, 0)).await.unwrap();
        assert_eq!(got, DmResponse::Node(local), "{format:?}");
    }

    // Write, then read back from the device itself.
    let lifetime = Path::resource(1, 0, 1);
    let write = Operation::Write {
        path: lifetime,
        node: Node::Resource(Resource::Single {
            id: 1,
            value: Value::Integer(4321),
        }),
        mode: WriteMode::Replace,
        format: None,
    };
    assert_eq!(perform(&server, ep, &write).await, DmResponse::Changed);
    assert_eq!(
        device.read(lifetime).await.unwrap(),
        Node::Resource(Resource::Single {
            id: 1,
            value: Value::Integer(4321)
        })
    );

    // Discover lists the instance and its resources.
    let DmResponse::Discovered(entries) = perform(
        &server,
        ep,
        &Operation::Discover {
            path: Path::object(3),
            depth: None,
        },
    )
    .await
    else {
        panic!("discover");
    };
    assert!(entries.iter().any(|e| e.path == Path::instance(3, 0)));
    assert!(entries.iter().any(|e| e.path == Path::resource(3, 0, 0)));

    // Create and delete an instance of Software Management.
    let create = Operation::Create {
        object: 9,
        instance: Some(7),
        resources: vec![
            Resource::Single {
                id: 0,
                value: Value::from("app"),
            },
            Resource::Single {
                id: 1,
                value: Value::from("1.0.0"),
            },
        ],
        format: None,
    };
    assert!(matches!(
        perform(&server, ep, &create).await,
        DmResponse::Created { .. }
    ));
    assert!(device.read(Path::instance(9, 7)).await.is_ok());
    assert_eq!(
        perform(
            &server,
            ep,
            &Operation::Delete {
                path: Path::instance(9, 7)
            }
        )
        .await,
        DmResponse::Deleted
    );
    assert!(device.read(Path::instance(9, 7)).await.is_err());

    // Composite read and write.
    let paths = vec![Path::resource(3, 0, 0), Path::resource(1, 0, 1)];
    let DmResponse::Nodes(nodes) = perform(
        &server,
        ep,
        &Operation::ReadComposite {
            paths: paths.clone(),
            format: None,
        },
    )
    .await
    else {
        panic!("read-composite");
    };
    assert_eq!(nodes.keys().copied().collect::<Vec<_>>(), {
        let mut p = paths.clone();
        p.sort();
        p
    });
    let pmin = Path::resource(1, 0, 2);
    let write_composite = Operation::WriteComposite {
        nodes: [(
            pmin,
            Node::Resource(Resource::Single {
                id: 2,
                value: Value::Integer(7),
            }),
        )]
        .into(),
        format: None,
    };
    assert_eq!(
        perform(&server, ep, &write_composite).await,
        DmResponse::Changed
    );
    assert_eq!(
        device.read(pmin).await.unwrap(),
        Node::Resource(Resource::Single {
            id: 2,
            value: Value::Integer(7)
        })
    );

    // Firmware update by hand: a pushed package, Update execute, success.
    let push = Operation::Write {
        path: Path::resource(5, 0, 0),
        node: Node::Resource(Resource::Single {
            id: 0,
            value: Value::Opaque(lwm2m_client_sim::firmware::package::build(
                "2.0.0", b"image",
            )),
        }),
        mode: WriteMode::Replace,
        format: Some(ContentFormat::Opaque),
    };
    assert_eq!(perform(&server, ep, &push).await, DmResponse::Changed);
    wait_resource(&server, ep, Path::resource(5, 0, 3), 2).await; // Downloaded
    let update = Operation::Execute {
        path: Path::resource(5, 0, 2),
        args: ExecuteArgs::default(),
    };
    assert_eq!(perform(&server, ep, &update).await, DmResponse::Changed);
    wait_resource(&server, ep, Path::resource(5, 0, 5), 1).await; // Update Result: success
                                                                  // The device reboots into the new firmware and registers again.
    wait_event(&mut events, "Register after the update", |e| {
        matches!(
            e,
            ServerEvent::Registered {
                replaced: Some(_),
                ..
            }
        )
    })
    .await;

    // Observe with pmax=1: notifications keep coming and decode.
    let attributes = Attributes {
        pmax: Some(AttributeValue::Set(1)),
        ..Attributes::default()
    };
    let observe = Operation::Observe {
        path: Path::resource(3, 0, 13),
        attributes,
        format: None,
    };
    let (token, first) = within("observe", server.observe_with_token(ep, &observe, STEP))
        .await
        .unwrap();
    assert!(matches!(
        first,
        DmResponse::Observed {
            sequence: Some(_),
            ..
        }
    ));
    for _ in 0..2 {
        let ServerEvent::Notification { packet, .. } =
            wait_event(&mut events, "notification", |e| {
                matches!(e, ServerEvent::Notification { .. })
            })
            .await
        else {
            unreachable!()
        };
        let n = server
            .read_notification(ep, &observe, &packet)
            .await
            .unwrap();
        assert!(
            matches!(
                n,
                DmResponse::Observed {
                    sequence: Some(_),
                    ..
                }
            ),
            "{n:?}"
        );
    }

    // Active cancel (GET with Observe=1 on the same token): the device
    // handles it as a cancel of that observation and answers with the value.
    let mut device_events = device.subscribe();
    let cancel = Operation::CancelObserve {
        path: Path::resource(3, 0, 13),
        format: None,
    };
    let answer = within("cancel", server.cancel(ep, &token, &cancel))
        .await
        .unwrap();
    assert!(matches!(answer, DmResponse::Node(_)), "{answer:?}");
    within("device saw the cancel", async {
        loop {
            if let Ok(ClientEvent::Operation {
                operation: DeviceOp::CancelObserve,
                ..
            }) = device_events.recv().await
            {
                return;
            }
        }
    })
    .await;

    // Send from the device.
    device.send(vec![Path::resource(3, 0, 9)]).await.unwrap();
    let ServerEvent::SendReceived {
        content_format,
        payload,
        ..
    } = wait_event(&mut events, "send", |e| {
        matches!(e, ServerEvent::SendReceived { .. })
    })
    .await
    else {
        unreachable!()
    };
    match server.read_send(content_format, &payload).unwrap() {
        SendData::Nodes(nodes) => assert!(nodes
            .keys()
            .any(|p| p.starts_with(&Path::resource(3, 0, 9)))),
        SendData::Series { path, series } => {
            assert_eq!(path, Path::resource(3, 0, 9));
            assert_eq!(series.len(), 1);
        }
    }

    device.shutdown().await.unwrap();
    wait_event(&mut events, "Deregistered", |e| {
        matches!(e, ServerEvent::Deregistered { .. })
    })
    .await;
    server.shutdown().await;
}

/// Reads an integer resource until it has `want`, bounded in time.
async fn wait_resource(server: &ServerHandle, ep: &str, path: Path, want: i64) {
    let op = Operation::Read {
        path,
        format: Some(ContentFormat::Text),
    };
    for _ in 0..100 {
        if let DmResponse::Node(Node::Resource(Resource::Single {
            value: Value::Integer(v),
            ..
        })) = perform(server, ep, &op).await
        {
            if v == want {
                return;
            }
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("{path} never reached {want}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_for_a_sleeping_device_goes_out_when_it_wakes() {
    let dir = tempfile::tempdir().unwrap();
    // The server must know the device's awake window: it sends only inside it.
    let mut config = ServerConfig::new("127.0.0.1:0".parse().unwrap(), dir.path());
    config.registry.awake_window = Duration::from_millis(300);
    let server = Server::start(config).expect("server starts");
    let ep = "e2e-queue";
    let device = start_device(server.coap_addr(), ep, |c| {
        c.queue_mode = true;
        c.awake_window = Duration::from_millis(300);
        c.sleep_duration = Duration::from_secs(3600);
    })
    .await;
    let mut device_events = device.subscribe();
    within("device sleeps", async {
        loop {
            if let Ok(ClientEvent::Sleeping) = device_events.recv().await {
                return;
            }
        }
    })
    .await;
    // Asleep for the server too: the request is queued, not sent, and must
    // go out right after the device's Update.
    let read = {
        let server = server.clone();
        tokio::spawn(async move {
            server
                .perform(
                    ep,
                    &Operation::Read {
                        path: Path::resource(3, 0, 0),
                        format: None,
                    },
                    Duration::from_secs(30),
                )
                .await
        })
    };
    tokio::time::sleep(Duration::from_millis(200)).await;
    device.wake().await.unwrap();
    let got = within("queued read", read)
        .await
        .unwrap()
        .expect("read after wake");
    assert_eq!(
        got,
        DmResponse::Node(device.read(Path::resource(3, 0, 0)).await.unwrap())
    );
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restart_keeps_registrations_and_observations() {
    let dir = tempfile::tempdir().unwrap();
    let first = start_server(dir.path(), "127.0.0.1:0".parse().unwrap());
    let addr = first.coap_addr();
    let ep = "e2e-restart";
    let device = start_device(addr, ep, |_| {}).await;
    let observe = Operation::Observe {
        path: Path::resource(3, 0, 9),
        attributes: Attributes::default(),
        format: None,
    };
    let DmResponse::Observed {
        sequence: Some(_), ..
    } = perform(&first, ep, &observe).await
    else {
        panic!("observe");
    };
    first.shutdown().await;

    // Same port, same data directory: the device does not notice.
    let second = start_server(dir.path(), addr);
    let mut events = second.subscribe();
    assert!(
        second.registration(ep).await.is_some(),
        "registration survived the restart"
    );
    device
        .set(Path::resource(3, 0, 9), Value::Integer(42))
        .await
        .unwrap();
    let ServerEvent::Notification {
        endpoint, packet, ..
    } = wait_event(&mut events, "notification after restart", |e| {
        matches!(e, ServerEvent::Notification { .. })
    })
    .await
    else {
        unreachable!()
    };
    assert_eq!(endpoint, ep);
    let n = second
        .read_notification(ep, &observe, &packet)
        .await
        .unwrap();
    assert!(
        matches!(
            &n,
            DmResponse::Observed {
                node: Node::Resource(Resource::Single {
                    value: Value::Integer(42),
                    ..
                }),
                ..
            }
        ),
        "{n:?}"
    );
    second.shutdown().await;
}
