//! The load generator of the benchmarks: many light devices, each a loopback address of
//! its own ([`crate::fleet::device_address`]) and one CoAP exchange at a time, with no
//! object tree and no task while idle, so that a million of them fit beside the server
//! on a small machine. A device binds a socket for an exchange and closes it after, as a
//! queue-mode device behind a NAT comes back from a new port. Retransmissions follow
//! RFC 7252 §4.2 with the default parameters (ACK_TIMEOUT 2 s, random factor 1.5, four
//! retransmissions), so a server that drops datagrams under load is seen to, as retries
//! and late answers, not hidden.
//!
//! The same generator drives the baselines (a UDP echo server, a bare requester), so a
//! ratio compares the server with the least any peer could do on the same machine.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use coap_lite::{CoapOption, MessageClass, MessageType, Packet, RequestType, ResponseType};
use tokio::net::UdpSocket;

use crate::fleet::device_address;

/// The largest datagram the generator reads.
const MAX_DATAGRAM: usize = 2048;

/// RFC 7252 §4.8 transmission parameters.
#[derive(Debug, Clone, Copy)]
pub struct Timing {
    pub ack_timeout: Duration,
    pub random_factor: f64,
    pub max_retransmit: u32,
}

impl Default for Timing {
    fn default() -> Timing {
        Timing {
            ack_timeout: Duration::from_secs(2),
            random_factor: 1.5,
            max_retransmit: 4,
        }
    }
}

/// One exchange that got its answer.
#[derive(Debug)]
pub struct Answered {
    pub response: Packet,
    pub retransmissions: u32,
}

/// Why an exchange got no answer.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Lost {
    #[error("no answer after every retransmission")]
    Timeout,
    #[error("socket: {0}")]
    Io(String),
}

/// A cheap per-exchange random source (splitmix64 of a counter): message ids, tokens and
/// the retransmission jitter need variety, not secrecy.
fn random(seed: u64) -> u64 {
    static COUNTER: AtomicU64 = AtomicU64::new(0x9e37_79b9_7f4a_7c15);
    let mut z = COUNTER
        .fetch_add(0x9e37_79b9_7f4a_7c15, Ordering::Relaxed)
        .wrapping_add(seed);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// Gives a request its message id and token; answers the two.
fn stamp(request: &mut Packet, seed: u64) -> (u16, Vec<u8>) {
    let r = random(seed);
    let mid = r as u16;
    let token = (r >> 16).to_be_bytes()[4..].to_vec();
    request.header.message_id = mid;
    request.header.set_type(MessageType::Confirmable);
    request.set_token(token.clone());
    (mid, token)
}

/// Sends `request` (CON) from a socket on `socket` to `to` and waits for the answer: a
/// piggybacked or separate response with its token, or anything with its message id
/// (what an echo server sends back).
pub async fn exchange_on(
    socket: &UdpSocket,
    to: SocketAddr,
    mut request: Packet,
    timing: &Timing,
    seed: u64,
) -> Result<Answered, Lost> {
    let (mid, token) = stamp(&mut request, seed);
    let bytes = request
        .to_bytes()
        .map_err(|e| Lost::Io(format!("request does not encode: {e:?}")))?;
    let jitter = (random(seed) % 1000) as f64 / 1000.0 * (timing.random_factor - 1.0);
    let mut timeout = timing.ack_timeout.mul_f64(1.0 + jitter);
    let mut buf = [0u8; MAX_DATAGRAM];
    for attempt in 0..=timing.max_retransmit {
        socket
            .send_to(&bytes, to)
            .await
            .map_err(|e| Lost::Io(e.to_string()))?;
        let until = Instant::now() + timeout;
        loop {
            let left = until.saturating_duration_since(Instant::now());
            let Ok(got) = tokio::time::timeout(left, socket.recv_from(&mut buf)).await else {
                break;
            };
            let (n, from) = got.map_err(|e| Lost::Io(e.to_string()))?;
            if from != to {
                continue;
            }
            let Ok(p) = Packet::from_bytes(buf.get(..n).unwrap_or_default()) else {
                continue;
            };
            let empty_ack = p.header.code == MessageClass::Empty;
            if p.header.message_id == mid && empty_ack {
                // A separate response follows: wait for it on the same deadline.
                continue;
            }
            if p.get_token() == token.as_slice() || p.header.message_id == mid {
                if p.header.get_type() == MessageType::Confirmable && p.header.message_id != mid {
                    let mut ack = Packet::new();
                    ack.header.set_type(MessageType::Acknowledgement);
                    ack.header.message_id = p.header.message_id;
                    if let Ok(b) = ack.to_bytes() {
                        let _ = socket.send_to(&b, to).await;
                    }
                }
                return Ok(Answered {
                    response: p,
                    retransmissions: attempt,
                });
            }
        }
        timeout *= 2;
    }
    Err(Lost::Timeout)
}

/// One exchange from a fresh socket on device `i`'s address, closed after.
pub async fn exchange(
    i: usize,
    to: SocketAddr,
    request: Packet,
    timing: &Timing,
) -> Result<Answered, Lost> {
    let socket = UdpSocket::bind(SocketAddr::from((device_address(i), 0)))
        .await
        .map_err(|e| Lost::Io(e.to_string()))?;
    exchange_on(&socket, to, request, timing, i as u64).await
}

/// A Register (LwM2M 1.1) of endpoint `ep`: `POST /rd?ep=&lt=&lwm2m=1.1&b=U` (and `Q`
/// for queue mode) with a typical object list.
pub fn register_request(ep: &str, lifetime: u32, queue: bool) -> Packet {
    let mut p = Packet::new();
    p.header.code = MessageClass::Request(RequestType::Post);
    p.add_option(CoapOption::UriPath, b"rd".to_vec());
    let mut queries = vec![
        format!("ep={ep}"),
        format!("lt={lifetime}"),
        "lwm2m=1.1".to_string(),
        "b=U".to_string(),
    ];
    if queue {
        queries.push("Q".to_string());
    }
    for q in queries {
        p.add_option(CoapOption::UriQuery, q.into_bytes());
    }
    p.add_option(CoapOption::ContentFormat, vec![40]);
    p.payload = b"</1/0>,</3/0>,</4/0>,</5/0>,</6/0>".to_vec();
    p
}

/// An Update of the registration at `location` (`/rd/{id}`), without a payload.
pub fn update_request(location: &str) -> Packet {
    let mut p = Packet::new();
    p.header.code = MessageClass::Request(RequestType::Post);
    for seg in location.split('/').filter(|s| !s.is_empty()) {
        p.add_option(CoapOption::UriPath, seg.as_bytes().to_vec());
    }
    p
}

/// A GET of `/3/0/9`, what a bare requester sends the devices in the read baseline.
pub fn battery_read() -> Packet {
    let mut p = Packet::new();
    p.header.code = MessageClass::Request(RequestType::Get);
    for seg in ["3", "0", "9"] {
        p.add_option(CoapOption::UriPath, seg.as_bytes().to_vec());
    }
    p
}

/// The Location-Path of a 2.01 Created, as `/rd/...`.
pub fn location(p: &Packet) -> Option<String> {
    if p.header.code != MessageClass::Response(ResponseType::Created) {
        return None;
    }
    let segs = p.get_option(CoapOption::LocationPath)?;
    Some(
        segs.iter()
            .map(|s| format!("/{}", String::from_utf8_lossy(s)))
            .collect(),
    )
}

/// What one run of jobs did.
#[derive(Debug, Clone, Default)]
pub struct Outcome {
    pub done: usize,
    pub lost: usize,
    pub retransmissions: u64,
    pub elapsed: Duration,
    /// Each answered job's time from its scheduled start (open loop) or its start
    /// (closed loop) to its answer, in microseconds, sorted.
    pub latencies_us: Vec<u64>,
    /// When each answered job finished, microseconds from the start, sorted.
    pub completed_us: Vec<u64>,
}

impl Outcome {
    /// Jobs a second until 99% of them had finished. The last percent is left out: a
    /// datagram lost on loopback costs its job a 2-3 s retransmission timeout, which
    /// would otherwise decide a whole run's rate by one straggler.
    pub fn rate(&self) -> f64 {
        let n = ((self.done as f64) * 0.99).ceil() as usize;
        match n.checked_sub(1).and_then(|i| self.completed_us.get(i)) {
            Some(&t) => n as f64 / (t.max(1) as f64 / 1e6),
            None => 0.0,
        }
    }

    /// The `q` quantile (0..=1) of the latencies.
    pub fn quantile(&self, q: f64) -> Duration {
        if self.latencies_us.is_empty() {
            return Duration::ZERO;
        }
        let last = self.latencies_us.len() - 1;
        let at = ((last as f64) * q.clamp(0.0, 1.0)).round() as usize;
        Duration::from_micros(self.latencies_us.get(at).copied().unwrap_or(0))
    }
}

/// How jobs are paced.
#[derive(Debug, Clone, Copy)]
pub enum Pace {
    /// As fast as `window` jobs in flight allow (the maximum rate).
    Closed,
    /// Job `i` starts at `i / rate` seconds; its latency counts from then, so a server
    /// that falls behind is charged for the wait (no coordinated omission).
    Open { rate: f64 },
}

/// Runs jobs `0..count`, at most `window` at once, paced by `pace`; `progress` is called
/// about once a second with the jobs done so far.
pub async fn run<F, Fut>(
    count: usize,
    window: usize,
    pace: Pace,
    job: F,
    mut progress: impl FnMut(usize, Duration),
) -> Outcome
where
    F: Fn(usize) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Result<Answered, Lost>> + Send + 'static,
{
    let job = Arc::new(job);
    let next = Arc::new(AtomicUsize::new(0));
    let done = Arc::new(AtomicUsize::new(0));
    let start = Instant::now();
    let mut workers = Vec::new();
    for _ in 0..window.clamp(1, count.max(1)) {
        let (job, next, done) = (job.clone(), next.clone(), done.clone());
        workers.push(tokio::spawn(async move {
            let mut mine = Outcome::default();
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                if i >= count {
                    break;
                }
                let begin = match pace {
                    Pace::Closed => Instant::now(),
                    Pace::Open { rate } => {
                        let at = start + Duration::from_secs_f64(i as f64 / rate.max(1e-3));
                        tokio::time::sleep_until(at.into()).await;
                        at
                    }
                };
                match job(i).await {
                    Ok(a) => {
                        mine.done += 1;
                        mine.retransmissions += u64::from(a.retransmissions);
                        let us = u64::try_from(begin.elapsed().as_micros()).unwrap_or(u64::MAX);
                        mine.latencies_us.push(us);
                        let at = u64::try_from(start.elapsed().as_micros()).unwrap_or(u64::MAX);
                        mine.completed_us.push(at);
                    }
                    Err(_) => mine.lost += 1,
                }
                done.fetch_add(1, Ordering::Relaxed);
            }
            mine
        }));
    }
    let mut all = Outcome::default();
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    tick.tick().await;
    let mut joined = futures_join(workers);
    loop {
        tokio::select! {
            outcomes = &mut joined => {
                for o in outcomes {
                    all.done += o.done;
                    all.lost += o.lost;
                    all.retransmissions += o.retransmissions;
                    all.latencies_us.extend(o.latencies_us);
                    all.completed_us.extend(o.completed_us);
                }
                break;
            }
            _ = tick.tick() => progress(done.load(Ordering::Relaxed), start.elapsed()),
        }
    }
    all.elapsed = start.elapsed();
    all.latencies_us.sort_unstable();
    all.completed_us.sort_unstable();
    all
}

/// Waits for every worker; a worker that panicked counts nothing.
fn futures_join(
    workers: Vec<tokio::task::JoinHandle<Outcome>>,
) -> std::pin::Pin<Box<dyn Future<Output = Vec<Outcome>> + Send>> {
    Box::pin(async move {
        let mut out = Vec::with_capacity(workers.len());
        for w in workers {
            if let Ok(o) = w.await {
                out.push(o);
            }
        }
        out
    })
}

/// A trivial UDP echo server, the baseline of the request-rate benchmark: every datagram
/// goes back to its sender unchanged. Blocking, on the calling thread, until the socket
/// fails.
pub fn echo_serve(socket: std::net::UdpSocket) -> std::io::Result<()> {
    let mut buf = [0u8; MAX_DATAGRAM];
    loop {
        let (n, from) = socket.recv_from(&mut buf)?;
        socket.send_to(buf.get(..n).unwrap_or_default(), from)?;
    }
}

/// A device that stays awake on its own socket and answers every confirmable GET with
/// 2.05 and a battery level as text, the way a device answers a Read of `/3/0/9`; it
/// registers first (binding `U`, no queue mode). The read benchmarks drive these.
pub struct AnsweringDevice {
    pub endpoint: String,
    pub address: SocketAddr,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for AnsweringDevice {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl AnsweringDevice {
    /// Registers device `i` as `ep` with the server at `server` (if any: a device for a
    /// bare requester needs no server) and starts answering.
    pub async fn start(
        i: usize,
        ep: String,
        server: Option<SocketAddr>,
        timing: &Timing,
    ) -> Result<AnsweringDevice, Lost> {
        let socket = UdpSocket::bind(SocketAddr::from((device_address(i), 0)))
            .await
            .map_err(|e| Lost::Io(e.to_string()))?;
        if let Some(server) = server {
            let a = exchange_on(
                &socket,
                server,
                register_request(&ep, 3600, false),
                timing,
                i as u64,
            )
            .await?;
            if location(&a.response).is_none() {
                return Err(Lost::Io(format!(
                    "register refused: {:?}",
                    a.response.header.code
                )));
            }
        }
        let address = socket.local_addr().map_err(|e| Lost::Io(e.to_string()))?;
        let task = tokio::spawn(async move {
            let mut buf = [0u8; MAX_DATAGRAM];
            // Ends when the device is dropped (the task is aborted) or the socket fails.
            while let Ok((n, from)) = socket.recv_from(&mut buf).await {
                let Ok(req) = Packet::from_bytes(buf.get(..n).unwrap_or_default()) else {
                    continue;
                };
                if req.header.get_type() != MessageType::Confirmable
                    || req.header.code != MessageClass::Request(RequestType::Get)
                {
                    continue;
                }
                let mut rsp = Packet::new();
                rsp.header.set_type(MessageType::Acknowledgement);
                rsp.header.message_id = req.header.message_id;
                rsp.header.code = MessageClass::Response(ResponseType::Content);
                rsp.set_token(req.get_token().to_vec());
                rsp.add_option(CoapOption::ContentFormat, vec![0]);
                rsp.payload = b"87".to_vec();
                if let Ok(b) = rsp.to_bytes() {
                    let _ = socket.send_to(&b, from).await;
                }
            }
        });
        Ok(AnsweringDevice {
            endpoint: ep,
            address,
            task,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_register_request_carries_what_a_lwm2m_1_1_device_sends() {
        let p = register_request("dev-1", 300, true);
        let queries: Vec<String> = p
            .get_option(CoapOption::UriQuery)
            .expect("queries")
            .iter()
            .map(|q| String::from_utf8_lossy(q).into_owned())
            .collect();
        assert_eq!(queries, ["ep=dev-1", "lt=300", "lwm2m=1.1", "b=U", "Q"]);
        assert_eq!(p.header.code, MessageClass::Request(RequestType::Post));
        assert!(p.payload.starts_with(b"</1/0>"));
    }

    #[test]
    fn quantiles_come_from_the_sorted_latencies() {
        let o = Outcome {
            latencies_us: (1..=100).collect(),
            ..Outcome::default()
        };
        assert_eq!(o.quantile(0.5), Duration::from_micros(51));
        assert_eq!(o.quantile(0.99), Duration::from_micros(99));
        assert_eq!(Outcome::default().quantile(0.5), Duration::ZERO);
    }

    /// The generator against its own echo server and an answering device, on loopback:
    /// what the baselines of every benchmark stand on.
    #[tokio::test]
    async fn the_generator_gets_answers_from_an_echo_server_and_a_device() {
        let echo = std::net::UdpSocket::bind("127.0.0.1:0").expect("bind");
        let echo_addr = echo.local_addr().expect("addr");
        std::thread::spawn(move || echo_serve(echo));
        let timing = Timing::default();
        let o = run(
            200,
            16,
            Pace::Closed,
            move |i| async move {
                exchange(
                    i,
                    echo_addr,
                    register_request("e", 60, false),
                    &Timing::default(),
                )
                .await
            },
            |_, _| {},
        )
        .await;
        assert_eq!((o.done, o.lost), (200, 0));
        let device = AnsweringDevice::start(7, "d".into(), None, &timing)
            .await
            .expect("device");
        let to = device.address;
        let a = exchange(8, to, battery_read(), &timing)
            .await
            .expect("answer");
        assert_eq!(a.response.payload, b"87");
        assert_eq!(
            a.response.header.code,
            MessageClass::Response(ResponseType::Content)
        );
    }
}
