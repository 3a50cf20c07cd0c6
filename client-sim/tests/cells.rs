//! Firmware downloads through a simulated cell (`lwm2m_client_sim::network`): devices in
//! one cell share its bandwidth, so two concurrent downloads each take about twice as
//! long as one alone, and a cell too slow for the devices' CoAP timing loses the blocks,
//! so that the download fails as it would in the field. The scripted LwM2M server of
//! `support` writes the Package URI; a CoAP server here serves the package block by
//! block. 127.0.0.1 only.

mod support;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use coap_lite::{CoapOption, MessageClass, Packet, RequestType, ResponseType};
use lwm2m_client_sim::firmware::package;
use lwm2m_client_sim::network::{Cell, LinkConditions};
use lwm2m_client_sim::{Client, ClientEvent, ClientHandle, Config, FwState};
use lwm2m_server::coap::block::{block_of, BlockOpt, OPT_BLOCK2};
use lwm2m_server::coap::{Endpoint, Event};
use support::*;
use tokio::net::UdpSocket;
use tokio::sync::broadcast;

/// Longest wait for any one step.
const T: Duration = Duration::from_secs(15);
const BLOCK: usize = 512;

/// Serves `body` at `/fw/pkg`, any Block2 block asked for, until the runtime ends.
async fn block_server(body: Vec<u8>) -> SocketAddr {
    let socket = UdpSocket::bind("127.0.0.1:0").await.expect("bind");
    let addr = socket.local_addr().expect("addr");
    tokio::spawn(async move {
        let mut ep = Endpoint::new(lwm2m_server::coap::Config::default(), 5);
        let mut buf = vec![0u8; 2048];
        loop {
            while let Some(ev) = ep.poll_event() {
                if let Event::Request { id, packet, .. } = ev {
                    let _ = ep.respond(Instant::now(), id, block_of_body(&packet, &body));
                }
            }
            while let Some(t) = ep.poll_transmit() {
                let _ = socket.send_to(&t.bytes, t.peer).await;
            }
            let wait = ep.poll_timeout().map_or(Duration::from_secs(1), |t| {
                t.saturating_duration_since(Instant::now())
            });
            match tokio::time::timeout(wait, socket.recv_from(&mut buf)).await {
                Ok(Ok((n, peer))) => ep.handle_datagram(Instant::now(), peer, &buf[..n]),
                Ok(Err(_)) => return,
                Err(_) => ep.handle_timeout(Instant::now()),
            }
        }
    });
    addr
}

fn block_of_body(request: &Packet, body: &[u8]) -> Packet {
    let mut resp = Packet::new();
    let asked = match block_of(request, OPT_BLOCK2) {
        Some(Ok(b)) => b,
        _ => BlockOpt {
            num: 0,
            more: false,
            szx: 5,
        },
    };
    let size = asked.size();
    let offset = asked.offset();
    if offset >= body.len() {
        resp.header.code = MessageClass::Response(ResponseType::BadOption);
        return resp;
    }
    let end = (offset + size).min(body.len());
    resp.header.code = MessageClass::Response(ResponseType::Content);
    resp.add_option(CoapOption::ETag, b"e1".to_vec());
    resp.add_option(
        CoapOption::Block2,
        BlockOpt {
            num: asked.num,
            more: end < body.len(),
            szx: asked.szx,
        }
        .encode(),
    );
    resp.payload = body[offset..end].to_vec();
    resp
}

fn config(server: SocketAddr, ep: &str, cell: &Arc<Cell>) -> Config {
    let mut c = Config::new(server, ep);
    c.bind = "127.0.0.1:0".parse().expect("addr");
    c.tick = Duration::from_secs(3600);
    c.coap.ack_timeout = Duration::from_millis(300);
    c.coap.max_retransmit = 1;
    c.firmware.block_size = BLOCK;
    c.firmware.retries = 1;
    c.firmware.retry_delay = Duration::from_millis(50);
    c.link = Some(LinkConditions {
        loss_up: 0.0,
        loss_down: 0.0,
        latency: (Duration::ZERO, Duration::ZERO),
        cell: Some(cell.clone()),
        seed: 1,
    });
    c
}

/// A registered device, its events and the address it registered from.
async fn start(
    server: &mut TestServer,
    c: Config,
) -> (ClientHandle, broadcast::Receiver<ClientEvent>, SocketAddr) {
    let ep = c.endpoint.clone();
    let h = Client::start(c).await.expect("start");
    let events = h.subscribe();
    let reg = server
        .wait_for(T, |s| {
            s.path() == "/rd" && s.queries().contains(&format!("ep={ep}"))
        })
        .await
        .expect("register request");
    h.wait_registered(T).await.expect("registered");
    (h, events, reg.peer)
}

/// Writes the Package URI, then waits for the download's end: how long it took, and
/// whether it ended in Downloaded.
async fn download(
    server: &TestServer,
    peer: SocketAddr,
    events: &mut broadcast::Receiver<ClientEvent>,
    uri: &str,
) -> (Duration, bool) {
    let t0 = Instant::now();
    let write = with_payload(request(RequestType::Put, "/5/0/1"), 0, uri.as_bytes());
    let answer = server.request(peer, write).await.expect("URI written");
    assert_eq!(code(&answer), ResponseType::Changed);
    let deadline = t0 + T;
    loop {
        let left = deadline
            .checked_duration_since(Instant::now())
            .expect("the download ended in time");
        match tokio::time::timeout(left, events.recv()).await {
            Ok(Ok(ClientEvent::FirmwareState { state, .. })) => match state {
                FwState::Downloaded => return (t0.elapsed(), true),
                FwState::Idle => return (t0.elapsed(), false),
                _ => {}
            },
            Ok(Ok(_)) | Ok(Err(broadcast::error::RecvError::Lagged(_))) => {}
            other => panic!("the download did not end: {other:?}"),
        }
    }
}

fn body(len: usize) -> Vec<u8> {
    (0..len).map(|i| (i * 13 % 251) as u8).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_downloads_in_one_cell_each_take_about_twice_as_long() {
    let mut server = TestServer::start().await;
    let addr = server.addr;
    // 12 KiB of package at 24 KB/s: half a second alone.
    let files = block_server(package::build("2.0.0", &body(12 * 1024))).await;
    let uri = format!("coap://{files}/fw/pkg");
    let bound = Duration::from_secs(2);

    let cell = Arc::new(Cell::new(1, Some(24_000), None, bound));
    let (alone, mut ev, peer) = start(&mut server, config(addr, "cell-a", &cell)).await;
    let (one, ok) = download(&server, peer, &mut ev, &uri).await;
    assert!(ok, "the download alone ended in Downloaded");
    alone.shutdown().await.expect("shutdown");

    let shared = Arc::new(Cell::new(2, Some(24_000), None, bound));
    let (a, mut ev_a, peer_a) = start(&mut server, config(addr, "cell-b", &shared)).await;
    let (b, mut ev_b, peer_b) = start(&mut server, config(addr, "cell-c", &shared)).await;
    let (first, second) = tokio::join!(
        download(&server, peer_a, &mut ev_a, &uri),
        download(&server, peer_b, &mut ev_b, &uri)
    );
    assert!(first.1 && second.1, "both downloads ended in Downloaded");
    for (took, _) in [first, second] {
        let ratio = took.as_secs_f64() / one.as_secs_f64();
        assert!(
            (1.6..=2.6).contains(&ratio),
            "alone {one:?}, sharing the cell {took:?}"
        );
    }
    assert!(
        one >= Duration::from_millis(450),
        "the cell set the pace: {one:?}"
    );
    assert_eq!(shared.counts().1, 0, "nothing waited past the bound");
    a.shutdown().await.expect("shutdown");
    b.shutdown().await.expect("shutdown");
}

#[tokio::test]
async fn blocks_later_than_the_bound_are_lost_and_the_download_fails() {
    let mut server = TestServer::start().await;
    let addr = server.addr;
    let files = block_server(package::build("2.0.0", &body(4 * 1024))).await;
    let uri = format!("coap://{files}/fw/pkg");
    // A 512-byte block needs half a second of this cell, more than the 300 ms allowed.
    let cell = Arc::new(Cell::new(3, Some(1000), None, Duration::from_millis(300)));
    let (h, mut ev, peer) = start(&mut server, config(addr, "cell-slow", &cell)).await;
    let (_, ok) = download(&server, peer, &mut ev, &uri).await;
    assert!(!ok, "the download failed");
    let (passed, dropped) = cell.counts();
    assert!(
        dropped >= 2,
        "every try of the first block was dropped: {passed} {dropped}"
    );
    h.shutdown().await.expect("shutdown");
}
