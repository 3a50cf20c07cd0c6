//! Shared by the tests that run the real `lwm2m-server` binary: start it, find its port,
//! and talk CoAP to it with hand-built packets over a std UDP socket.
#![allow(dead_code)]

use std::io::{BufRead, BufReader};
use std::net::{SocketAddr, UdpSocket};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use coap_lite::{CoapOption, MessageClass, MessageType, Packet, RequestType};

/// A running binary; killed on drop so a failing test leaves nothing behind.
pub struct Running {
    pub child: Child,
    pub addr: SocketAddr,
}

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Starts the binary on 127.0.0.1:0 with `data_dir` (and `config`, if given) and reads the
/// `listening coap=ADDR coaps=ADDR http=ADDR` line, waiting at most 20 s.
pub fn start(data_dir: &Path, config: Option<&Path>) -> Running {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_lwm2m-server"));
    cmd.arg("--coap")
        .arg("127.0.0.1:0")
        .arg("--coaps")
        .arg("127.0.0.1:0")
        .arg("--http")
        .arg("127.0.0.1:0")
        .arg("--data-dir")
        .arg(data_dir)
        .stdout(Stdio::piped())
        .env("RUST_LOG", "warn")
        .stderr(Stdio::inherit());
    if let Some(c) = config {
        cmd.arg("--config").arg(c);
    }
    let mut child = cmd.spawn().expect("spawn lwm2m-server");
    let stdout = child.stdout.take().expect("stdout");
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let mut line = String::new();
        let _ = BufReader::new(stdout).read_line(&mut line);
        let _ = tx.send(line);
    });
    let line = match rx.recv_timeout(Duration::from_secs(20)) {
        Ok(l) => l,
        Err(_) => {
            let _ = child.kill();
            panic!("lwm2m-server printed no address within 20 s");
        }
    };
    let addr = line
        .trim()
        .strip_prefix("listening coap=")
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|a| a.parse().ok())
        .unwrap_or_else(|| panic!("unexpected first line {line:?}"));
    Running { child, addr }
}

pub struct Client {
    pub socket: UdpSocket,
    pub server: SocketAddr,
    mid: u16,
}

impl Client {
    pub fn new(server: SocketAddr) -> Client {
        let socket = UdpSocket::bind("127.0.0.1:0").expect("bind");
        socket
            .set_read_timeout(Some(Duration::from_millis(300)))
            .expect("timeout");
        Client {
            socket,
            server,
            mid: 100,
        }
    }

    /// Sends a CON request and returns the response with the same message id, resending
    /// up to 10 times (3 s in all) as a CoAP client would.
    pub fn call(&mut self, mut p: Packet) -> Packet {
        self.mid = self.mid.wrapping_add(1);
        p.header.message_id = self.mid;
        p.header.set_type(MessageType::Confirmable);
        p.set_token(self.mid.to_be_bytes().to_vec());
        let bytes = p.to_bytes().expect("encode");
        let mut buf = [0u8; 2048];
        for _ in 0..10 {
            self.socket.send_to(&bytes, self.server).expect("send");
            let deadline = Instant::now() + Duration::from_millis(300);
            while Instant::now() < deadline {
                let Ok((n, _)) = self.socket.recv_from(&mut buf) else {
                    break;
                };
                if let Ok(r) = Packet::from_bytes(&buf[..n]) {
                    if r.header.message_id == self.mid
                        && r.header.get_type() == MessageType::Acknowledgement
                    {
                        return r;
                    }
                }
            }
        }
        panic!("no response from the server to message {}", self.mid);
    }

    /// Waits up to `within` for a request from the server.
    pub fn receive_request(&mut self, within: Duration) -> Option<Packet> {
        let deadline = Instant::now() + within;
        let mut buf = [0u8; 2048];
        while Instant::now() < deadline {
            let Ok((n, _)) = self.socket.recv_from(&mut buf) else {
                continue;
            };
            if let Ok(p) = Packet::from_bytes(&buf[..n]) {
                if matches!(p.header.code, MessageClass::Request(_)) {
                    return Some(p);
                }
            }
        }
        None
    }

    pub fn send_raw(&self, p: &Packet) {
        let bytes = p.to_bytes().expect("encode");
        self.socket.send_to(&bytes, self.server).expect("send");
    }
}

pub fn request(method: RequestType, path: &[&str], query: &[&str], payload: &[u8]) -> Packet {
    let mut p = Packet::new();
    p.header.code = MessageClass::Request(method);
    for s in path {
        p.add_option(CoapOption::UriPath, s.as_bytes().to_vec());
    }
    for q in query {
        p.add_option(CoapOption::UriQuery, q.as_bytes().to_vec());
    }
    p.payload = payload.to_vec();
    p
}

pub fn register(ep: &str, lt: u32, extra: &[&str]) -> Packet {
    let ep = format!("ep={ep}");
    let lt = format!("lt={lt}");
    let mut q = vec![ep.as_str(), lt.as_str(), "lwm2m=1.1"];
    q.extend_from_slice(extra);
    let mut p = request(RequestType::Post, &["rd"], &q, b"</1/0>,</3/0>");
    p.add_option(CoapOption::ContentFormat, vec![40]);
    p
}

/// The response code as "c.dd".
pub fn code(p: &Packet) -> String {
    let c = u8::from(p.header.code);
    format!("{}.{:02}", c >> 5, c & 0x1F)
}

pub fn location(p: &Packet) -> Vec<String> {
    p.get_option(CoapOption::LocationPath)
        .map(|l| {
            l.iter()
                .map(|v| String::from_utf8_lossy(v).into_owned())
                .collect()
        })
        .unwrap_or_default()
}
