//! Shared by the HTTP API tests: run the real binary with its HTTP API, call routes by
//! their documented template (so the tests can check the OpenAPI document against what
//! they called), and read the server-sent event stream.
#![allow(dead_code)]

use std::collections::BTreeSet;
use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{mpsc as std_mpsc, Arc, Mutex};
use std::time::Duration;

use futures_util::StreamExt;
use reqwest::{Method, StatusCode};
use serde_json::Value;
use tokio::sync::mpsc;

pub const ADMIN: &str = "admin-token-for-tests-0001";
pub const READER: &str = "read-token-for-tests-00001";
/// Upper bound of any single wait in these tests.
pub const STEP: Duration = Duration::from_secs(20);

pub fn server_binary() -> PathBuf {
    binary("lwm2m-server")
}

/// A binary of the workspace, beside the test binaries.
pub fn binary(name: &str) -> PathBuf {
    let exe = std::env::current_exe().expect("test binary path");
    let bin = exe
        .parent()
        .and_then(Path::parent)
        .map(|dir| dir.join(name))
        .expect("target dir");
    assert!(
        bin.exists(),
        "{} is missing: run the tests with `cargo test --workspace`",
        bin.display()
    );
    bin
}

/// The running binary; killed on drop.
pub struct Running {
    pub child: Child,
    pub coap: SocketAddr,
    pub coaps: SocketAddr,
    pub http: SocketAddr,
    /// The bootstrap server's sockets, when it runs one.
    pub bootstrap: Option<SocketAddr>,
    pub bootstrap_coaps: Option<SocketAddr>,
    /// The second stdout line, when the server generated its token.
    pub token_file: Option<PathBuf>,
}

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Starts the binary on loopback with `args` after the addresses and data directory.
pub fn start(data_dir: &Path, args: &[&str], env: &[(&str, &str)]) -> Running {
    start_at("127.0.0.1:0", data_dir, args, env)
}

/// [`start`] with the CoAP socket on `coap` (to restart a server where its devices
/// expect it).
pub fn start_at(coap: &str, data_dir: &Path, args: &[&str], env: &[(&str, &str)]) -> Running {
    start_on(coap, "127.0.0.1:0", data_dir, args, env)
}

/// [`start`] with the CoAP and CoAPS sockets on the given addresses.
pub fn start_on(
    coap: &str,
    coaps: &str,
    data_dir: &Path,
    args: &[&str],
    env: &[(&str, &str)],
) -> Running {
    let mut cmd = Command::new(server_binary());
    cmd.args([
        "--coap",
        coap,
        "--coaps",
        coaps,
        "--http",
        "127.0.0.1:0",
        "--data-dir",
    ])
    .arg(data_dir)
    .args(args)
    .env("RUST_LOG", "warn")
    .env_remove("LWM2M_API_TOKEN")
    .env_remove("LWM2M_API_READ_TOKEN")
    .stdout(Stdio::piped())
    .stderr(Stdio::inherit());
    for (k, v) in env {
        cmd.env(k, v);
    }
    let (mut child, line, rx) = spawn(cmd, "lwm2m-server");
    let addrs = banner(&line);
    let addr = |k: &str| addrs.iter().find(|(n, _)| n == k).and_then(|(_, a)| *a);
    let (Some(coap), Some(coaps), Some(http)) = (addr("coap"), addr("coaps"), addr("http")) else {
        let _ = child.kill();
        panic!("unexpected first line {line:?}");
    };
    Running {
        child,
        coap,
        coaps,
        http,
        bootstrap: addr("bootstrap"),
        bootstrap_coaps: addr("bootstrap-coaps"),
        token_file: token_file(&rx),
    }
}

/// The `name=ADDR` pairs of a `listening ...` line (`None` for `off`).
pub fn banner(line: &str) -> Vec<(String, Option<SocketAddr>)> {
    line.trim()
        .strip_prefix("listening ")
        .unwrap_or("")
        .split(' ')
        .filter_map(|part| part.split_once('='))
        .map(|(k, v)| (k.to_string(), v.parse().ok()))
        .collect()
}

/// The `api-token-file=` line that follows the addresses when a token was generated.
pub fn token_file(rx: &std_mpsc::Receiver<String>) -> Option<PathBuf> {
    rx.recv_timeout(Duration::from_millis(300))
        .ok()
        .and_then(|l| l.trim().strip_prefix("api-token-file=").map(PathBuf::from))
}

/// Spawns `cmd` with its stdout read line by line on a thread; answers the child, its
/// first line and the rest.
pub fn spawn(mut cmd: Command, name: &str) -> (Child, String, std_mpsc::Receiver<String>) {
    cmd.stdout(Stdio::piped());
    let mut child = cmd.spawn().unwrap_or_else(|e| panic!("spawn {name}: {e}"));
    let stdout = child.stdout.take().expect("stdout");
    let (tx, rx) = std_mpsc::channel();
    std::thread::spawn(move || {
        let mut reader = BufReader::new(stdout);
        loop {
            let mut line = String::new();
            match reader.read_line(&mut line) {
                Ok(0) | Err(_) => break,
                Ok(_) => {
                    if tx.send(line).is_err() {
                        break;
                    }
                }
            }
        }
    });
    match rx.recv_timeout(STEP) {
        Ok(line) => (child, line, rx),
        Err(_) => {
            let _ = child.kill();
            panic!("{name} printed no address within {STEP:?}");
        }
    }
}

/// Which token a call carries.
#[derive(Clone, Copy, Debug)]
pub enum Auth<'a> {
    None,
    Bearer(&'a str),
    /// A raw Authorization header value.
    Raw(&'a str),
}

/// A body.
pub enum Body {
    None,
    Json(Value),
    Text(String),
    Bytes(Vec<u8>),
    /// Raw bytes as `application/octet-stream` (a firmware package).
    Octets(Vec<u8>),
}

/// An HTTP client that remembers which documented routes it called.
#[derive(Clone)]
pub struct Api {
    pub base: String,
    pub http: reqwest::Client,
    pub called: Arc<Mutex<BTreeSet<(String, String)>>>,
}

impl Api {
    pub fn new(addr: SocketAddr) -> Api {
        Api {
            base: format!("http://{addr}"),
            http: reqwest::Client::builder()
                .timeout(Duration::from_secs(60))
                .build()
                .expect("client"),
            called: Arc::default(),
        }
    }

    /// Calls `template` (`/api/clients/{endpoint}/{path}`) with its parameters filled in,
    /// and `query` appended; answers the status and the body as JSON (`Value::String` of
    /// the text when it is not JSON).
    pub async fn call(
        &self,
        method: Method,
        template: &str,
        params: &[(&str, &str)],
        query: &str,
        body: Body,
        auth: Auth<'_>,
    ) -> (StatusCode, Value) {
        self.called
            .lock()
            .expect("lock")
            .insert((method.as_str().to_ascii_lowercase(), template.to_string()));
        let mut url = template.to_string();
        for (k, v) in params {
            url = url.replace(&format!("{{{k}}}"), v);
        }
        let url = if query.is_empty() {
            format!("{}{url}", self.base)
        } else {
            format!("{}{url}?{query}", self.base)
        };
        let mut req = self.http.request(method, &url);
        req = match auth {
            Auth::None => req,
            Auth::Bearer(t) => req.bearer_auth(t),
            Auth::Raw(v) => req.header("authorization", v),
        };
        req = match body {
            Body::None => req,
            Body::Json(v) => req.json(&v),
            Body::Text(t) => req.header("content-type", "text/plain").body(t),
            Body::Bytes(b) => req.header("content-type", "application/json").body(b),
            Body::Octets(b) => req
                .header("content-type", "application/octet-stream")
                .body(b),
        };
        let resp = req.send().await.unwrap_or_else(|e| panic!("{url}: {e}"));
        let status = resp.status();
        let text = resp.text().await.unwrap_or_default();
        let value = serde_json::from_str(&text).unwrap_or(Value::String(text));
        (status, value)
    }

    /// An admin call that must answer `expect`.
    pub async fn ok(
        &self,
        method: Method,
        template: &str,
        params: &[(&str, &str)],
        query: &str,
        body: Body,
        expect: StatusCode,
    ) -> Value {
        let (status, v) = self
            .call(
                method.clone(),
                template,
                params,
                query,
                body,
                Auth::Bearer(ADMIN),
            )
            .await;
        assert_eq!(
            status, expect,
            "{method} {template} {params:?} ?{query}: {v}"
        );
        v
    }

    /// Sets an endpoint's PSK credentials through the API (`key` in hex).
    pub async fn set_psk(&self, endpoint: &str, identity: &str, key: &str) -> Value {
        self.ok(
            Method::PUT,
            "/api/security/clients/{endpoint}",
            &[("endpoint", endpoint)],
            "",
            Body::Json(serde_json::json!({ "psk": { "identity": identity, "key": key } })),
            StatusCode::OK,
        )
        .await
    }

    /// Subscribes to `/api/events` (with `query`) and forwards each event as
    /// `(kind, data)`. Returns once the subscription is in place.
    pub async fn events(
        &self,
        query: &str,
        token: &str,
    ) -> mpsc::UnboundedReceiver<(String, Value)> {
        self.called
            .lock()
            .expect("lock")
            .insert(("get".into(), "/api/events".into()));
        let url = if query.is_empty() {
            format!("{}/api/events", self.base)
        } else {
            format!("{}/api/events?{query}", self.base)
        };
        let resp = reqwest::Client::new()
            .get(&url)
            .bearer_auth(token)
            .send()
            .await
            .expect("events");
        assert_eq!(resp.status(), StatusCode::OK);
        assert!(resp
            .headers()
            .get("content-type")
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v.starts_with("text/event-stream")));
        let (tx, rx) = mpsc::unbounded_channel();
        let (ready_tx, ready_rx) = tokio::sync::oneshot::channel();
        tokio::spawn(async move {
            let mut stream = resp.bytes_stream();
            let mut buf = String::new();
            let mut ready = Some(ready_tx);
            while let Some(Ok(chunk)) = stream.next().await {
                buf.push_str(&String::from_utf8_lossy(&chunk));
                while let Some(end) = buf.find("\n\n") {
                    let block: String = buf.drain(..end + 2).collect();
                    let (mut kind, mut data) = (String::new(), String::new());
                    for line in block.lines() {
                        if let Some(v) = line.strip_prefix("event:") {
                            kind = v.trim().to_string();
                        } else if let Some(v) = line.strip_prefix("data:") {
                            data.push_str(v.trim_start());
                        } else if line.starts_with(':') {
                            if let Some(r) = ready.take() {
                                let _ = r.send(());
                            }
                        }
                    }
                    if !kind.is_empty() {
                        let v = serde_json::from_str(&data).unwrap_or(Value::String(data));
                        if tx.send((kind, v)).is_err() {
                            return;
                        }
                    }
                }
            }
        });
        tokio::time::timeout(STEP, ready_rx)
            .await
            .expect("the event stream said it subscribed")
            .expect("subscribed");
        rx
    }
}

/// Waits for the next event of `kind` that `pick` accepts; others are skipped.
pub async fn wait_event(
    rx: &mut mpsc::UnboundedReceiver<(String, Value)>,
    kind: &str,
    mut pick: impl FnMut(&Value) -> bool,
) -> Value {
    tokio::time::timeout(STEP, async {
        loop {
            match rx.recv().await {
                Some((k, v)) if k == kind && pick(&v) => return v,
                Some(_) => {}
                None => panic!("event stream ended while waiting for {kind}"),
            }
        }
    })
    .await
    .unwrap_or_else(|_| panic!("no {kind} event within {STEP:?}"))
}
