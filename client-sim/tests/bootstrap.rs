//! Client-initiated bootstrap against a scripted bootstrap server on
//! 127.0.0.1 (LwM2M 1.1/1.2 Bootstrap Interface): the Bootstrap-Request, the
//! server's Discover, Delete, Write, Read and Finish, the account the device
//! comes out with, and registering with it, as a library and as the binary.

mod support;

use std::io::BufRead;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use coap_lite::{Packet, RequestType, ResponseType};
use lwm2m_client_sim::bootstrap::{bootstrap, Account, BootstrapConfig, BootstrapError};
use lwm2m_client_sim::{Client, Psk};
use lwm2m_objects::link::parse_discover;
use lwm2m_objects::{Codecs, ContentFormat, Instance, Node, Path, Registry, Resource, Value};
use support::*;
use tokio::task::JoinHandle;

const T: Duration = Duration::from_secs(5);
const TLV: u16 = 11542;

fn config(server: &TestServer, ep: &str) -> BootstrapConfig {
    let mut c = BootstrapConfig::new(server.addr, ep);
    c.bind = "127.0.0.1:0".parse().unwrap();
    c.finish_timeout = Duration::from_secs(20);
    c
}

/// Runs a bootstrap in a task; returns it with its Bootstrap-Request.
async fn start(
    server: &mut TestServer,
    c: BootstrapConfig,
) -> (JoinHandle<Result<Account, BootstrapError>>, Seen) {
    let task = tokio::spawn(bootstrap(c));
    let request = server
        .wait_for(T, |s| s.path() == "/bs")
        .await
        .expect("Bootstrap-Request");
    (task, request)
}

async fn outcome(
    task: JoinHandle<Result<Account, BootstrapError>>,
) -> Result<Account, BootstrapError> {
    tokio::time::timeout(T, task)
        .await
        .expect("bootstrap ends")
        .expect("task")
}

fn single(id: u16, value: Value) -> Resource {
    Resource::Single { id, value }
}

fn security(iid: u16, uri: &str, psk: Option<&Psk>, ssid: i64) -> Instance {
    let (mode, identity, key) = match psk {
        Some(p) => (0, p.identity.clone(), p.key.clone()),
        None => (3, Vec::new(), Vec::new()),
    };
    Instance::new(iid)
        .with(single(0, Value::String(uri.into())))
        .with(single(1, Value::Boolean(false)))
        .with(single(2, Value::Integer(mode)))
        .with(single(3, Value::Opaque(identity)))
        .with(single(4, Value::Opaque(Vec::new())))
        .with(single(5, Value::Opaque(key)))
        .with(single(10, Value::Integer(ssid)))
}

fn server_account(iid: u16, ssid: i64, lifetime: i64, binding: &str) -> Instance {
    Instance::new(iid)
        .with(single(0, Value::Integer(ssid)))
        .with(single(1, Value::Integer(lifetime)))
        .with(single(6, Value::Boolean(true)))
        .with(single(7, Value::String(binding.into())))
}

/// A Bootstrap-Write of a whole instance, in TLV.
fn write(oid: u16, inst: Instance) -> Packet {
    let path = Path::instance(oid, inst.id);
    let body = Codecs::new()
        .encode(
            ContentFormat::Tlv,
            &path,
            &Node::Instance(inst),
            &Registry::with_core(),
        )
        .expect("TLV");
    with_payload(request(RequestType::Put, &path.to_string()), TLV, &body)
}

fn finish() -> Packet {
    request(RequestType::Post, "/bs")
}

fn discover(path: &str) -> Packet {
    with_accept(request(RequestType::Get, path), 40)
}

fn text(p: &Packet) -> String {
    String::from_utf8_lossy(&p.payload).into_owned()
}

#[tokio::test]
async fn bootstrap_serves_discover_delete_write_read_and_finish() {
    let mut bs = TestServer::start_bootstrap(&["dev-bs"]).await;
    let mut c = config(&bs, "dev-bs");
    c.preferred_format = Some(TLV);
    let (task, req) = start(&mut bs, c).await;
    let q = req.queries();
    assert!(q.contains(&"ep=dev-bs".to_string()), "{q:?}");
    assert!(q.contains(&"pct=11542".to_string()), "{q:?}");
    let peer = req.peer;

    let r = bs.request(peer, discover("/")).await.unwrap();
    assert_eq!(code(&r), ResponseType::Content);
    assert_eq!(content_format(&r), Some(40));
    let links = text(&r);
    assert!(links.starts_with("</>;lwm2m=1.1,"), "{links}");
    for want in ["</0/0>", "</3/0>"] {
        assert!(links.contains(want), "{want} in {links}");
    }
    assert!(!links.contains("</1/"), "{links}");

    let r = bs
        .request(peer, request(RequestType::Delete, "/"))
        .await
        .unwrap();
    assert_eq!(code(&r), ResponseType::Deleted);
    let r = bs
        .request(peer, request(RequestType::Delete, "/0/0"))
        .await
        .unwrap();
    assert_eq!(
        code(&r),
        ResponseType::BadRequest,
        "the bootstrap account stays"
    );
    let links = text(&bs.request(peer, discover("/0")).await.unwrap());
    let entries = parse_discover(&links, "/").expect("link format");
    let instances: Vec<Path> = entries
        .iter()
        .map(|e| e.path)
        .filter(|p| p.is_instance())
        .collect();
    assert_eq!(instances, vec![Path::instance(0, 0)], "{links}");

    let psk = Psk {
        identity: b"dev-bs-dm".to_vec(),
        key: vec![0x11, 0x22, 0x33, 0x44, 0x55],
    };
    let uri = "coaps://127.0.0.1:5684";
    let r = bs
        .request(peer, write(0, security(1, uri, Some(&psk), 101)))
        .await
        .unwrap();
    assert_eq!(code(&r), ResponseType::Changed);
    // No Server instance for ssid 101 yet: not acceptable, and the device waits on.
    let r = bs.request(peer, finish()).await.unwrap();
    assert_eq!(code(&r), ResponseType::NotAcceptable);
    assert!(text(&r).contains("101"), "{}", text(&r));

    let r = bs
        .request(peer, write(1, server_account(0, 101, 77, "U")))
        .await
        .unwrap();
    assert_eq!(code(&r), ResponseType::Changed);
    let r = bs
        .request(peer, request(RequestType::Get, "/1"))
        .await
        .unwrap();
    assert_eq!(code(&r), ResponseType::Content);
    assert_eq!(content_format(&r), Some(TLV));
    let node = Codecs::new()
        .decode(
            ContentFormat::Tlv,
            &r.payload,
            &Path::object(1),
            &Registry::with_core(),
        )
        .expect("TLV");
    let Node::Object(o) = node else {
        panic!("not an object: {node:?}")
    };
    assert_eq!(
        o.instances.get(&0).and_then(|i| i.resources.get(&1)),
        Some(&single(1, Value::Integer(77)))
    );
    let r = bs
        .request(peer, request(RequestType::Get, "/0"))
        .await
        .unwrap();
    assert_eq!(code(&r), ResponseType::Unauthorized);

    let links = text(&bs.request(peer, discover("/")).await.unwrap());
    assert!(
        links.contains(r#"</0/1>;ssid=101;uri="coaps://127.0.0.1:5684""#),
        "{links}"
    );
    assert!(links.contains("</1/0>;ssid=101"), "{links}");

    let r = bs.request(peer, finish()).await.unwrap();
    assert_eq!(code(&r), ResponseType::Changed);
    let account = outcome(task).await.expect("account");
    assert_eq!(
        account,
        Account {
            uri: uri.into(),
            server: "127.0.0.1:5684".parse().unwrap(),
            secure: true,
            psk: Some(psk),
            short_server_id: 101,
            lifetime: Some(77),
            binding: Some("U".into()),
        }
    );
}

#[tokio::test]
async fn unknown_endpoint_is_refused() {
    let bs = TestServer::start_bootstrap(&["someone-else"]).await;
    let r = tokio::time::timeout(T, bootstrap(config(&bs, "dev-unknown")))
        .await
        .expect("answer in time");
    assert_eq!(
        r,
        Err(BootstrapError::Refused {
            code: ResponseType::BadRequest,
            diagnostic: "unknown endpoint".into(),
        })
    );
}

#[tokio::test]
async fn no_acceptable_finish_times_out_with_the_last_reason() {
    let mut bs = TestServer::start_bootstrap(&["dev-slow"]).await;
    let mut c = config(&bs, "dev-slow");
    c.finish_timeout = Duration::from_secs(2);
    let (task, req) = start(&mut bs, c).await;
    let r = bs.request(req.peer, finish()).await.unwrap();
    assert_eq!(code(&r), ResponseType::NotAcceptable);
    match outcome(task).await {
        Err(BootstrapError::Timeout {
            after,
            last_refusal: Some(why),
        }) => {
            assert_eq!(after, Duration::from_secs(2));
            assert!(why.contains("no LwM2M Server account"), "{why}");
        }
        other => panic!("want a timeout, got {other:?}"),
    }
}

#[tokio::test]
async fn bootstrapped_account_registers_with_its_lifetime_and_binding() {
    let mut dm = TestServer::start().await;
    let mut bs = TestServer::start_bootstrap(&["dev-then-reg"]).await;
    let c = config(&bs, "dev-then-reg");
    let (task, req) = start(&mut bs, c).await;
    let uri = format!("coap://{}", dm.addr);
    for p in [
        request(RequestType::Delete, "/"),
        write(0, security(3, &uri, None, 9)),
        write(1, server_account(2, 9, 45, "UQ")),
    ] {
        let r = bs.request(req.peer, p).await.unwrap();
        assert!(
            matches!(code(&r), ResponseType::Deleted | ResponseType::Changed),
            "{r:?}"
        );
    }
    assert_eq!(
        code(&bs.request(req.peer, finish()).await.unwrap()),
        ResponseType::Changed
    );
    let account = outcome(task).await.expect("account");
    assert_eq!((account.server, account.secure), (dm.addr, false));
    let mut c = account.config("dev-then-reg");
    c.bind = "127.0.0.1:0".parse().unwrap();
    let h = Client::start(c).await.expect("start");
    let reg = dm
        .wait_for(T, |s| s.path() == "/rd")
        .await
        .expect("Register");
    let q = reg.queries();
    for want in ["ep=dev-then-reg", "lt=45", "Q"] {
        assert!(q.contains(&want.to_string()), "{want} in {q:?}");
    }
    h.wait_registered(T).await.expect("registered");
    // The Short Server ID the bootstrap server chose is the device's own now.
    let ssid = h.read(Path::resource(1, 0, 0)).await.unwrap();
    assert_eq!(ssid, Node::Resource(single(0, Value::Integer(9))));
    h.shutdown().await.unwrap();
}

#[tokio::test]
async fn bootstrap_over_dtls_psk() {
    let identity = b"dev-dtls-bs".to_vec();
    let key = vec![7u8; 16];
    let mut bs = TestServer::start_with(Options {
        bootstrap: vec!["dev-dtls".into()],
        psk: Some((identity.clone(), key.clone())),
    })
    .await;
    let mut c = config(&bs, "dev-dtls");
    c.psk = Some(Psk { identity, key });
    let (task, req) = start(&mut bs, c).await;
    let uri = "coap://127.0.0.1:5683";
    for p in [
        write(0, security(1, uri, None, 3)),
        write(1, server_account(0, 3, 600, "U")),
    ] {
        assert_eq!(
            code(&bs.request(req.peer, p).await.unwrap()),
            ResponseType::Changed
        );
    }
    let links = text(&bs.request(req.peer, discover("/")).await.unwrap());
    assert!(
        links.contains(r#"</0/1>;ssid=3;uri="coap://127.0.0.1:5683""#),
        "{links}"
    );
    assert_eq!(
        code(&bs.request(req.peer, finish()).await.unwrap()),
        ResponseType::Changed
    );
    let account = outcome(task).await.expect("account");
    assert_eq!((account.uri.as_str(), account.lifetime), (uri, Some(600)));
}

/// Kills the child when a test fails before it could stop it.
struct Reap(Child);

impl Drop for Reap {
    fn drop(&mut self) {
        if matches!(self.0.try_wait(), Ok(None)) {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
}

#[tokio::test]
async fn binary_bootstraps_then_registers() {
    let mut dm = TestServer::start().await;
    let mut bs = TestServer::start_bootstrap(&["bin-bs"]).await;
    let mut child = Reap(
        Command::new(env!("CARGO_BIN_EXE_lwm2m-client-sim"))
            .args([
                "--bootstrap",
                &format!("coap://{}", bs.addr),
                "--endpoint",
                "bin-bs",
                "--lifetime",
                "30",
            ])
            .stdout(Stdio::piped())
            .spawn()
            .expect("spawn"),
    );
    let stdout = child.0.stdout.take().expect("stdout");
    // Read to the end, so that the binary never writes into a closed pipe; the
    // reader ends with the child.
    let (lines_tx, mut lines) = tokio::sync::mpsc::unbounded_channel();
    tokio::task::spawn_blocking(move || {
        for line in std::io::BufReader::new(stdout).lines() {
            let Ok(line) = line else { break };
            if lines_tx.send(line).is_err() {
                break;
            }
        }
    });
    let req = bs
        .wait_for(Duration::from_secs(10), |s| s.path() == "/bs")
        .await
        .expect("Bootstrap-Request");
    assert!(req.queries().contains(&"ep=bin-bs".to_string()));
    let uri = format!("coap://{}", dm.addr);
    for p in [
        write(0, security(1, &uri, None, 5)),
        write(1, server_account(0, 5, 99, "U")),
    ] {
        assert_eq!(
            code(&bs.request(req.peer, p).await.unwrap()),
            ResponseType::Changed
        );
    }
    assert_eq!(
        code(&bs.request(req.peer, finish()).await.unwrap()),
        ResponseType::Changed
    );
    let line = tokio::time::timeout(T, lines.recv())
        .await
        .expect("a line in time")
        .expect("a line");
    assert_eq!(line, format!("bootstrapped server={uri}"));
    let reg = dm
        .wait_for(T, |s| s.path() == "/rd")
        .await
        .expect("Register");
    let q = reg.queries();
    // The account's lifetime wins over --lifetime.
    for want in ["ep=bin-bs", "lt=99"] {
        assert!(q.contains(&want.to_string()), "{want} in {q:?}");
    }
    let status = Command::new("kill")
        .args(["-INT", &child.0.id().to_string()])
        .status()
        .expect("kill");
    assert!(status.success());
    let del = dm
        .wait_for(T, |s| s.method() == Some(RequestType::Delete))
        .await;
    assert!(del.is_some(), "no De-register after SIGINT");
    let exit = tokio::task::spawn_blocking(move || child.0.wait().map(|s| s.success()));
    let exit = tokio::time::timeout(T, exit).await.expect("exits").unwrap();
    assert!(exit.expect("wait"));
}

#[test]
fn binary_rejects_bad_bootstrap_arguments() {
    for (args, want) in [
        (
            vec![
                "--bootstrap",
                "coap://127.0.0.1:1",
                "--server",
                "coap://127.0.0.1:2",
            ],
            "exclude",
        ),
        (vec!["--bootstrap", "coaps://127.0.0.1:1"], "--psk-identity"),
        (vec!["--bootstrap", "udp://127.0.0.1:1"], "coap://"),
    ] {
        let out = Command::new(env!("CARGO_BIN_EXE_lwm2m-client-sim"))
            .args(&args)
            .args(["--endpoint", "e"])
            .output()
            .expect("run");
        assert_eq!(out.status.code(), Some(2), "{args:?}");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains(want), "{args:?}: {err}");
    }
}
