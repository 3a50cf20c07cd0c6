//! The download task of a pull: fetches the package named by a Package URI
//! and hands it to the driver piece by piece, so that the state machine
//! writes each piece to the package buffer as it arrives.
//!
//! CoAP and CoAPS: one confirmable GET per Block2 block (RFC 7959 §2.4),
//! numbered at the device's block size, the first on each connection with
//! `Size2: 0`, all with one token (as Zephyr does, module-quirks 11), on a
//! socket of its own. The exchanges are run here rather than by the
//! `Endpoint`, which fetches the remaining blocks of a response itself:
//! asking for block k directly is what lets an interrupted download resume
//! where it stopped. A changed ETag means another package: start again at
//! block 0. CoAPS shakes hands with the device's own credentials.
//!
//! HTTP: one GET, resumed with `Range: bytes=N-` after a broken connection
//! or a pause; a 200 to a ranged request starts again from byte 0.
//!
//! Bounds: the package size (checked against Size2, Content-Length and every
//! byte received), [`FirmwareConfig::retries`] further tries of a block or
//! request and as many ETag changes, and the CoAP transmission parameters or
//! the HTTP timeouts for each try.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use coap_lite::{CoapOption, MessageClass, MessageType, Packet, RequestType, ResponseType};
use lwm2m_server::coap::block::{block_of, decode_uint, BlockOpt, MAX_NUM, OPT_BLOCK2};
use tokio::sync::mpsc;

use super::stats::Tally;
use super::{DownloadJob, FirmwareConfig, PackageUri, Protocol, UpdateResult};
use crate::config::{CertificateCredentials, Psk};
use crate::network::{LinkConditions, Shaper};
use crate::rng::Rng;
use crate::transport::{code_text, dtls_context, rng_seed, Link};

/// How long the host of a Package URI may take to resolve.
const RESOLVE_TIMEOUT: Duration = Duration::from_secs(10);

/// What a download needs besides its URI: the device's own settings.
#[derive(Debug, Clone)]
pub(crate) struct Settings {
    /// The device's local address; the download binds the same IP, port 0.
    pub bind: SocketAddr,
    pub coap: lwm2m_server::coap::Config,
    pub psk: Option<Psk>,
    pub certificate: Option<CertificateCredentials>,
    pub firmware: FirmwareConfig,
    /// The device's link conditions: a download's blocks cross the same network
    /// (and the same cell) as everything else the device sends and receives.
    pub link: Option<LinkConditions>,
}

/// What the task reports to the driver.
#[derive(Debug)]
pub(crate) enum Progress {
    /// Bytes at `offset` of the package; `num` is the Block2 number (CoAP).
    Block {
        attempt: u64,
        offset: usize,
        num: Option<u32>,
        data: Vec<u8>,
    },
    /// An HTTP GET went out, ranged from `from` when it is not 0.
    HttpGet {
        attempt: u64,
        from: usize,
    },
    /// The configured interruption began after `offset` bytes.
    Paused {
        attempt: u64,
        offset: usize,
    },
    Done {
        attempt: u64,
    },
    Failed {
        attempt: u64,
        result: UpdateResult,
        reason: String,
    },
}

/// Why a download gave up.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub(crate) enum DownloadError {
    #[error("cannot resolve {host}: {why}")]
    Resolve { host: String, why: String },
    #[error("the URI is not one an HTTP client takes: {0}")]
    Url(String),
    #[error("{0:?} downloads are not supported")]
    Unsupported(Protocol),
    #[error("coaps:// needs DTLS credentials, and the device has none")]
    NoCredentials,
    #[error("DTLS: {0}")]
    Dtls(String),
    #[error("socket: {0}")]
    Io(String),
    #[error("HTTP client: {0}")]
    Http(String),
    #[error("the package is {size} bytes, more than the {max} this device stores")]
    TooLarge { size: u64, max: usize },
    #[error("the server answered {0}")]
    Refused(String),
    #[error("gave up after {tries} tries: {last}")]
    GaveUp { tries: u32, last: String },
    #[error("the package kept changing (ETag) during the download")]
    Changing,
    /// The driver is gone: nobody to report to.
    #[error("the client stopped")]
    Stopped,
}

impl DownloadError {
    fn result(&self) -> UpdateResult {
        match self {
            DownloadError::Resolve { .. } | DownloadError::Url(_) => UpdateResult::InvalidUri,
            DownloadError::Unsupported(_) | DownloadError::NoCredentials => {
                UpdateResult::UnsupportedProtocol
            }
            DownloadError::TooLarge { .. } => UpdateResult::NotEnoughFlash,
            _ => UpdateResult::ConnectionLost,
        }
    }
}

/// Runs one download to its end and reports it; aborting the task is how the
/// driver stops it.
pub(crate) async fn run(job: DownloadJob, settings: Arc<Settings>, tx: mpsc::Sender<Progress>) {
    let attempt = job.attempt;
    // Counted as failed unless it completes, also when the task is aborted.
    let cell = settings.link.as_ref().and_then(|l| l.cell.as_ref());
    let tally = settings
        .firmware
        .stats
        .as_ref()
        .map(|s| s.download(cell.map(|c| c.id())));
    let t = tally.as_ref();
    let outcome = match job.uri.protocol {
        Protocol::Coap | Protocol::Coaps => coap(&job, &settings, &tx, t).await,
        Protocol::Http | Protocol::Https => http(&job, &settings, &tx, t).await,
        p => Err(DownloadError::Unsupported(p)),
    };
    if let (Ok(()), Some(t)) = (&outcome, &tally) {
        t.complete();
    }
    drop(tally);
    let last = match outcome {
        Ok(()) => Progress::Done { attempt },
        Err(DownloadError::Stopped) => return,
        Err(e) => {
            tracing::debug!(error = %e, uri = %job.uri.text, "firmware download failed");
            Progress::Failed {
                attempt,
                result: e.result(),
                reason: e.to_string(),
            }
        }
    };
    let _ = tx.send(last).await;
}

async fn report(tx: &mpsc::Sender<Progress>, p: Progress) -> Result<(), DownloadError> {
    tx.send(p).await.map_err(|_| DownloadError::Stopped)
}

fn too_large(size: usize, f: &FirmwareConfig) -> Result<(), DownloadError> {
    if size > f.max_package_size {
        return Err(DownloadError::TooLarge {
            size: size as u64,
            max: f.max_package_size,
        });
    }
    Ok(())
}

async fn resolve(uri: &PackageUri) -> Result<SocketAddr, DownloadError> {
    let fail = |why: String| DownloadError::Resolve {
        host: uri.host.clone(),
        why,
    };
    tokio::time::timeout(RESOLVE_TIMEOUT, uri.resolve())
        .await
        .map_err(|_| fail("timed out".into()))?
        .map_err(|e| fail(e.to_string()))
}

/// One connection of a CoAP download: its socket (and DTLS session), the
/// token all its requests carry and the last message id used.
struct Connection {
    link: Link,
    token: Vec<u8>,
    mid: u16,
    /// No request has gone out yet: the next asks for the size.
    fresh: bool,
}

async fn connect(
    peer: SocketAddr,
    secure: bool,
    s: &Settings,
    rng: &mut Rng,
) -> Result<Connection, DownloadError> {
    let dtls = if secure {
        let ctx = dtls_context(s.psk.as_ref(), s.certificate.as_ref(), s.coap.ack_timeout)
            .map_err(|e| DownloadError::Dtls(e.to_string()))?
            .ok_or(DownloadError::NoCredentials)?;
        Some(
            ctx.connect()
                .map_err(|e| DownloadError::Dtls(e.to_string()))?,
        )
    } else {
        None
    };
    let bind = if s.bind.is_ipv4() == peer.is_ipv4() {
        SocketAddr::new(s.bind.ip(), 0)
    } else if peer.is_ipv4() {
        SocketAddr::from(([0, 0, 0, 0], 0))
    } else {
        SocketAddr::from(([0u16; 8], 0))
    };
    let mut link = Link::bind(bind, peer, dtls)
        .await
        .map_err(|e| DownloadError::Io(e.to_string()))?;
    // Each connection draws its own losses and delays.
    link.shape(Shaper::for_conditions(s.link.as_ref(), rng.next_u64()));
    // Starts the handshake at once rather than with the first request.
    link.flush_records().await;
    Ok(Connection {
        link,
        token: rng.next_u64().to_be_bytes().to_vec(),
        mid: rng.next_u64() as u16,
        fresh: true,
    })
}

/// Why one exchange got no answer to use.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
enum ExchangeError {
    #[error("no answer")]
    Timeout,
    #[error("the server reset the request")]
    Reset,
    #[error("DTLS: {0}")]
    Dtls(String),
    #[error("socket: {0}")]
    Io(String),
}

fn empty_message(kind: MessageType, mid: u16) -> Vec<u8> {
    let t: u8 = match kind {
        MessageType::Acknowledgement => 2,
        _ => 3,
    };
    let [hi, lo] = mid.to_be_bytes();
    vec![0x40 | (t << 4), 0, hi, lo]
}

/// Whether a separate response is for the block at `offset`: with one token
/// for every block, a retransmitted answer for an earlier block must not be
/// taken for this one.
fn for_offset(p: &Packet, offset: usize) -> bool {
    match block_of(p, OPT_BLOCK2) {
        Some(Ok(b)) => b.offset() == offset,
        _ => true,
    }
}

/// One confirmable request and its response, piggybacked or separate
/// (RFC 7252 §4.2, §5.2.2), with the endpoint's transmission parameters.
async fn exchange(
    c: &mut Connection,
    mut request: Packet,
    offset: usize,
    params: &lwm2m_server::coap::Config,
    rng: &mut Rng,
    tally: Option<&Tally>,
) -> Result<Packet, ExchangeError> {
    c.mid = c.mid.wrapping_add(1);
    let mid = c.mid;
    request.header.set_type(MessageType::Confirmable);
    request.header.message_id = mid;
    request.set_token(c.token.clone());
    let bytes = request
        .to_bytes()
        .map_err(|e| ExchangeError::Io(e.to_string()))?;
    let factor = 1.0 + rng.unit() * (params.ack_random_factor - 1.0).max(0.0);
    let mut timeout = params.ack_timeout.mul_f64(factor);
    let mut next_at = Instant::now() + timeout;
    let mut retransmits = 0;
    // Set by an empty ACK: the answer comes separately, by then.
    let mut answer_by: Option<Instant> = None;
    c.link.send(&bytes).await;
    loop {
        if let Some(why) = c.link.dtls_failure() {
            return Err(ExchangeError::Dtls(why));
        }
        let now = Instant::now();
        let deadline = [Some(answer_by.unwrap_or(next_at)), c.link.poll_timeout(now)]
            .into_iter()
            .flatten()
            .min()
            .unwrap_or(next_at)
            .max(now);
        tokio::select! {
            r = c.link.recv() => {
                let messages = r.map_err(|e| ExchangeError::Io(e.to_string()))?;
                for m in messages {
                    if let Some(t) = tally {
                        t.received(m.len());
                    }
                    let Ok(p) = Packet::from_bytes(&m) else { continue };
                    let kind = p.header.get_type();
                    let ours = p.get_token() == c.token.as_slice();
                    match (kind, p.header.code) {
                        (MessageType::Acknowledgement, MessageClass::Empty)
                            if p.header.message_id == mid =>
                        {
                            answer_by.get_or_insert(Instant::now() + params.response_timeout);
                        }
                        (MessageType::Reset, _) if p.header.message_id == mid => {
                            return Err(ExchangeError::Reset);
                        }
                        (MessageType::Acknowledgement, MessageClass::Response(_))
                            if p.header.message_id == mid && ours =>
                        {
                            return Ok(p);
                        }
                        (MessageType::Confirmable | MessageType::NonConfirmable, MessageClass::Response(_)) => {
                            let confirmable = kind == MessageType::Confirmable;
                            if confirmable {
                                let reply = if ours { MessageType::Acknowledgement } else { MessageType::Reset };
                                c.link.send(&empty_message(reply, p.header.message_id)).await;
                            }
                            if ours && for_offset(&p, offset) {
                                return Ok(p);
                            }
                        }
                        (MessageType::Confirmable, MessageClass::Request(_)) => {
                            // Nothing is served on this socket.
                            c.link.send(&empty_message(MessageType::Reset, p.header.message_id)).await;
                        }
                        _ => {}
                    }
                }
                c.link.flush_records().await;
            }
            _ = tokio::time::sleep_until(deadline.into()) => {
                c.link.handle_timeout();
                c.link.flush_records().await;
                let now = Instant::now();
                match answer_by {
                    Some(t) if now >= t => return Err(ExchangeError::Timeout),
                    Some(_) => {}
                    None if now >= next_at => {
                        if retransmits >= params.max_retransmit {
                            return Err(ExchangeError::Timeout);
                        }
                        retransmits += 1;
                        timeout = timeout.saturating_mul(2);
                        next_at = now + timeout;
                        c.link.send(&bytes).await;
                    }
                    None => {}
                }
            }
        }
    }
}

/// A GET of block `num` of size 2^(szx+4) of the package.
fn block_request(uri: &PackageUri, num: u32, szx: u8, ask_size: bool) -> Packet {
    let mut p = Packet::new();
    p.header.code = MessageClass::Request(RequestType::Get);
    for seg in &uri.path {
        p.add_option(CoapOption::UriPath, seg.clone());
    }
    for q in &uri.query {
        p.add_option(CoapOption::UriQuery, q.clone());
    }
    p.add_option(
        CoapOption::Block2,
        BlockOpt {
            num,
            more: false,
            szx,
        }
        .encode(),
    );
    if ask_size {
        // Size2 0 asks for the total size (RFC 7959 §4); zero is the empty uint.
        p.add_option(CoapOption::Size2, Vec::new());
    }
    p
}

/// Counts a failed try; past the configured retries the download gives up.
fn count_failure(failures: &mut u32, f: &FirmwareConfig, why: String) -> Result<(), DownloadError> {
    *failures += 1;
    tracing::debug!(tries = *failures, reason = %why, "firmware download try failed");
    if *failures > f.retries {
        return Err(DownloadError::GaveUp {
            tries: *failures,
            last: why,
        });
    }
    Ok(())
}

async fn coap(
    job: &DownloadJob,
    s: &Settings,
    tx: &mpsc::Sender<Progress>,
    tally: Option<&Tally>,
) -> Result<(), DownloadError> {
    let f = &s.firmware;
    let attempt = job.attempt;
    let secure = job.uri.protocol == Protocol::Coaps;
    if secure && s.psk.is_none() && s.certificate.is_none() {
        return Err(DownloadError::NoCredentials);
    }
    let peer = resolve(&job.uri).await?;
    let mut rng = Rng::raw(rng_seed());
    let mut conn = connect(peer, secure, s, &mut rng).await?;
    let mut szx = f.block_szx();
    let mut offset = 0usize;
    // The ETag of the first answer (which may have had none).
    let mut etag: Option<Option<Vec<u8>>> = None;
    let (mut failures, mut changes, mut blocks) = (0u32, 0u32, 0u32);
    let mut paused = false;
    loop {
        if !paused && f.interrupt_after_blocks.is_some_and(|k| blocks >= k) {
            paused = true;
            report(tx, Progress::Paused { attempt, offset }).await?;
            conn.link.close().await;
            drop(conn);
            tokio::time::sleep(f.interrupt_for).await;
            conn = connect(peer, secure, s, &mut rng).await?;
        }
        let num = u32::try_from(offset >> (u32::from(szx) + 4))
            .ok()
            .filter(|n| *n <= MAX_NUM)
            .ok_or(DownloadError::TooLarge {
                size: offset as u64,
                max: f.max_package_size,
            })?;
        let request = block_request(&job.uri, num, szx, conn.fresh);
        conn.fresh = false;
        let resp = match exchange(&mut conn, request, offset, &s.coap, &mut rng, tally).await {
            Ok(p) => p,
            Err(e) => {
                count_failure(&mut failures, f, format!("block {num}: {e}"))?;
                // A new socket (and session), as a device does after a timeout.
                conn.link.close().await;
                conn = connect(peer, secure, s, &mut rng).await?;
                continue;
            }
        };
        match resp.header.code {
            MessageClass::Response(ResponseType::Content) => {}
            MessageClass::Response(r) if u8::from(resp.header.code) >= 0xa0 => {
                count_failure(&mut failures, f, format!("block {num}: {r:?}"))?;
                tokio::time::sleep(f.retry_delay).await;
                continue;
            }
            _ => return Err(DownloadError::Refused(code_text(&resp))),
        }
        let tag = resp.get_first_option(CoapOption::ETag).map(|t| t.to_vec());
        match &etag {
            None => etag = Some(tag),
            Some(t) if *t == tag => {}
            Some(_) => {
                changes += 1;
                if changes > f.retries {
                    return Err(DownloadError::Changing);
                }
                tracing::debug!("package ETag changed; starting again at block 0");
                etag = Some(tag);
                if offset > 0 {
                    offset = 0;
                    continue;
                }
            }
        }
        if let Some(size) = resp
            .get_first_option(CoapOption::Size2)
            .and_then(|v| decode_uint(v))
        {
            too_large(size as usize, f)?;
        }
        let (got, more) = match block_of(&resp, OPT_BLOCK2) {
            // The whole package in one answer.
            None if offset == 0 => (
                BlockOpt {
                    num: 0,
                    more: false,
                    szx,
                },
                false,
            ),
            Some(Ok(b))
                if b.offset() == offset
                    && b.szx <= szx
                    && (!b.more || resp.payload.len() == b.size()) =>
            {
                (b, b.more)
            }
            other => {
                count_failure(
                    &mut failures,
                    f,
                    format!("asked for block {num} and got {other:?}"),
                )?;
                continue;
            }
        };
        // The server may choose smaller blocks (RFC 7959 §2.4); the offset still holds.
        szx = got.szx;
        let len = resp.payload.len();
        too_large(offset.saturating_add(len), f)?;
        report(
            tx,
            Progress::Block {
                attempt,
                offset,
                num: Some(got.num),
                data: resp.payload,
            },
        )
        .await?;
        offset += len;
        blocks = blocks.saturating_add(1);
        failures = 0;
        if !more {
            conn.link.close().await;
            return Ok(());
        }
        if !f.block_delay.is_zero() {
            tokio::time::sleep(f.block_delay).await;
        }
    }
}

/// The first byte and the total of a `Content-Range: bytes a-b/c` header.
fn content_range(v: &str) -> Option<(usize, Option<usize>)> {
    let (range, total) = v.trim().strip_prefix("bytes ")?.split_once('/')?;
    let (first, _) = range.split_once('-')?;
    let total = match total {
        "*" => None,
        t => Some(t.parse().ok()?),
    };
    Some((first.parse().ok()?, total))
}

async fn http(
    job: &DownloadJob,
    s: &Settings,
    tx: &mpsc::Sender<Progress>,
    tally: Option<&Tally>,
) -> Result<(), DownloadError> {
    use reqwest::header::{CONTENT_RANGE, ETAG, RANGE};
    let f = &s.firmware;
    let attempt = job.attempt;
    let url = reqwest::Url::parse(&job.uri.text).map_err(|e| DownloadError::Url(e.to_string()))?;
    let mut builder = reqwest::Client::builder()
        .no_proxy()
        .connect_timeout(f.http_timeout)
        .read_timeout(f.http_timeout);
    if let Some(pem) = &f.https_ca_pem {
        for cert in reqwest::Certificate::from_pem_bundle(pem)
            .map_err(|e| DownloadError::Http(format!("https_ca_pem: {e}")))?
        {
            builder = builder.add_root_certificate(cert);
        }
    }
    let client = builder
        .build()
        .map_err(|e| DownloadError::Http(e.to_string()))?;
    let block = 1usize << (u32::from(f.block_szx()) + 4);
    let mut pause_at = f
        .interrupt_after_blocks
        .map(|k| (k as usize).saturating_mul(block));
    let mut offset = 0usize;
    let mut total: Option<usize> = None;
    let mut etag: Option<Option<String>> = None;
    let (mut failures, mut changes) = (0u32, 0u32);
    'requests: loop {
        let mut req = client.get(url.clone());
        if offset > 0 {
            req = req.header(RANGE, format!("bytes={offset}-"));
        }
        report(
            tx,
            Progress::HttpGet {
                attempt,
                from: offset,
            },
        )
        .await?;
        let mut resp = match req.send().await {
            Ok(r) => r,
            Err(e) => {
                count_failure(&mut failures, f, e.to_string())?;
                tokio::time::sleep(f.retry_delay).await;
                continue;
            }
        };
        let status = resp.status().as_u16();
        match status {
            200 => {
                // A full answer, also to a ranged request: start from byte 0.
                offset = 0;
                total = resp.content_length().and_then(|l| usize::try_from(l).ok());
            }
            206 => {
                let range = resp
                    .headers()
                    .get(CONTENT_RANGE)
                    .and_then(|v| v.to_str().ok())
                    .and_then(content_range);
                match range {
                    Some((first, t)) if first == offset => total = t.or(total),
                    _ => {
                        count_failure(&mut failures, f, "a 206 for another range".into())?;
                        offset = 0;
                        continue;
                    }
                }
            }
            416 if offset > 0 && total == Some(offset) => return Ok(()),
            500..=599 => {
                count_failure(&mut failures, f, format!("HTTP {status}"))?;
                tokio::time::sleep(f.retry_delay).await;
                continue;
            }
            _ => return Err(DownloadError::Refused(format!("HTTP {status}"))),
        }
        let tag = resp
            .headers()
            .get(ETAG)
            .and_then(|v| v.to_str().ok())
            .map(str::to_string);
        match &etag {
            None => etag = Some(tag),
            Some(t) if *t == tag => {}
            Some(_) => {
                changes += 1;
                if changes > f.retries {
                    return Err(DownloadError::Changing);
                }
                etag = Some(tag);
                if offset > 0 {
                    offset = 0;
                    continue;
                }
            }
        }
        if let Some(t) = total {
            too_large(t, f)?;
        }
        loop {
            let chunk = match resp.chunk().await {
                Ok(Some(c)) => c,
                Ok(None) => break,
                Err(e) => {
                    count_failure(&mut failures, f, e.to_string())?;
                    continue 'requests;
                }
            };
            if let Some(t) = tally {
                t.received(chunk.len());
            }
            let mut data = &chunk[..];
            too_large(offset.saturating_add(data.len()), f)?;
            let pause_now = pause_at.is_some_and(|at| offset.saturating_add(data.len()) >= at);
            if let (true, Some(at)) = (pause_now, pause_at) {
                data = &data[..at.saturating_sub(offset).min(data.len())];
            }
            if !data.is_empty() {
                report(
                    tx,
                    Progress::Block {
                        attempt,
                        offset,
                        num: None,
                        data: data.to_vec(),
                    },
                )
                .await?;
                offset += data.len();
                failures = 0;
            }
            if pause_now {
                pause_at = None;
                drop(resp);
                report(tx, Progress::Paused { attempt, offset }).await?;
                tokio::time::sleep(f.interrupt_for).await;
                continue 'requests;
            }
            if !f.block_delay.is_zero() {
                tokio::time::sleep(f.block_delay).await;
            }
        }
        if total.is_some_and(|t| offset < t) {
            count_failure(
                &mut failures,
                f,
                format!("connection closed at byte {offset}"),
            )?;
            continue;
        }
        return Ok(());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn content_ranges_parse() {
        assert_eq!(content_range("bytes 100-199/1000"), Some((100, Some(1000))));
        assert_eq!(content_range("bytes 5-9/*"), Some((5, None)));
        assert_eq!(content_range("items 5-9/10"), None);
        assert_eq!(content_range("bytes x-9/10"), None);
    }

    #[test]
    fn block_requests_carry_path_block2_and_size2() {
        let uri: PackageUri = "coap://127.0.0.1/fw/t1?v=2".parse().unwrap();
        let p = block_request(&uri, 3, 5, true);
        let path: Vec<_> = p
            .get_option(CoapOption::UriPath)
            .unwrap()
            .iter()
            .cloned()
            .collect();
        assert_eq!(path, vec![b"fw".to_vec(), b"t1".to_vec()]);
        let b = block_of(&p, OPT_BLOCK2).unwrap().unwrap();
        assert_eq!((b.num, b.more, b.szx), (3, false, 5));
        assert_eq!(p.get_first_option(CoapOption::Size2), Some(&Vec::new()));
        assert!(block_request(&uri, 4, 5, false)
            .get_first_option(CoapOption::Size2)
            .is_none());
    }
}
