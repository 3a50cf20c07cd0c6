//! Client-initiated bootstrap (LwM2M 1.1/1.2 Core, Bootstrap Interface;
//! Transport, Bootstrap Interface mapping): the device asks a bootstrap
//! server for its accounts with `POST /bs?ep=`, lets the server discover,
//! read, write and delete Security (/0) and Server (/1) instances, and on
//! Bootstrap-Finish checks that what it was given lets it register somewhere.
//!
//! The bootstrap state is kept apart from the [`ObjectStore`](crate::store)
//! of a running client: it only lives until Bootstrap-Finish, and what a
//! client needs of it afterwards is one [`Account`], from which
//! [`Account::config`] builds the client's [`Config`].
//!
//! ```no_run
//! # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
//! use lwm2m_client_sim::bootstrap::{bootstrap, BootstrapConfig};
//! use lwm2m_client_sim::Client;
//! let bs = BootstrapConfig::new("127.0.0.1:5783".parse()?, "dev-1");
//! let account = bootstrap(bs).await?;
//! let handle = Client::start(account.config("dev-1")).await?;
//! # Ok(()) }
//! ```
//!
//! Bounds: one peer (datagrams from any other address are dropped), at most
//! [`MAX_INSTANCES`] instances per object and [`MAX_RESOURCE_INSTANCES`] per
//! multiple resource, payloads as large as the CoAP endpoint reassembles, and
//! [`BootstrapConfig::finish_timeout`] from the server's 2.04 to an
//! acceptable Bootstrap-Finish.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use coap_lite::{MessageClass, Packet, RequestType, ResponseType};
use lwm2m_objects::link::{self, Attributes, DiscoverEntry};
use lwm2m_objects::{
    Codecs, ContentFormat, Instance, Model, Node, Object, Path, Registry, Resource, Value, Version,
};
use lwm2m_server::coap::{Endpoint, Event, FailReason};
use lwm2m_server::dtls::DtlsClient;

use crate::config::{Config, Psk, ServerUri};
use crate::ops::{
    decode_payload, error_response, request_path, response, uint_option, HOSTED_OBJECTS,
};
use crate::store::OpError;
use crate::transport::{request_packet, rng_seed, Link};

/// Most instances the Security or the Server object takes; a write past it
/// is refused with 4.00.
pub const MAX_INSTANCES: usize = 32;
/// Most resource instances one multiple resource of those objects takes.
pub const MAX_RESOURCE_INSTANCES: usize = 64;
/// How long a host name in a Server URI may take to resolve at
/// Bootstrap-Finish.
pub const RESOLVE_TIMEOUT: Duration = Duration::from_secs(10);
/// Longest diagnostic payload sent back, so that a long list of reasons
/// never needs a block-wise response.
const MAX_DIAGNOSTIC: usize = 512;

const SECURITY: u16 = 0;
const SERVER: u16 = 1;
const ACCESS_CONTROL: u16 = 2;
const DEVICE: u16 = 3;

/// What a device bootstraps with.
#[derive(Debug, Clone)]
pub struct BootstrapConfig {
    /// The bootstrap server's address.
    pub server: SocketAddr,
    /// Endpoint client name (`ep=`).
    pub endpoint: String,
    /// DTLS-PSK credentials for the bootstrap server; `None` speaks plain CoAP.
    pub psk: Option<Psk>,
    /// The content format the device would like the server to write in
    /// (`pct=`, LwM2M 1.1 and later).
    pub preferred_format: Option<u16>,
    /// How long after the server's 2.04 to the Bootstrap-Request the device
    /// waits for an acceptable Bootstrap-Finish: EXCHANGE_LIFETIME (247 s)
    /// by default, as the Transport specification suggests.
    pub finish_timeout: Duration,
    /// Enabler version the device reports in Bootstrap-Discover (`lwm2m=`).
    pub version: Version,
    /// CoAP transmission parameters.
    pub coap: lwm2m_server::coap::Config,
    /// Local address to bind; port 0 picks one.
    pub bind: SocketAddr,
}

impl BootstrapConfig {
    pub fn new(server: SocketAddr, endpoint: impl Into<String>) -> BootstrapConfig {
        let coap = lwm2m_server::coap::Config::default();
        BootstrapConfig {
            server,
            endpoint: endpoint.into(),
            psk: None,
            preferred_format: None,
            finish_timeout: coap.exchange_lifetime,
            version: Version::V1_1,
            coap,
            bind: if server.is_ipv4() {
                SocketAddr::from(([0, 0, 0, 0], 0))
            } else {
                SocketAddr::from(([0u16; 8], 0))
            },
        }
    }

    /// The bootstrap server's own URI, as the device's Security instance /0/0
    /// holds it.
    fn server_uri(&self) -> String {
        ServerUri {
            secure: self.psk.is_some(),
            host: self.server.ip().to_string(),
            port: self.server.port(),
        }
        .to_string()
    }
}

/// The LwM2M Server account a bootstrap left the device with: the first
/// non-bootstrap Security instance that has a matching Server instance.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Account {
    /// The Server URI as written in /0/x/0.
    pub uri: String,
    /// Where the URI points (a host name is resolved at Bootstrap-Finish).
    pub server: SocketAddr,
    /// `coaps://`: the client speaks DTLS to `server`.
    pub secure: bool,
    /// Identity (/0/x/3) and key (/0/x/5) of a PSK-mode account.
    pub psk: Option<Psk>,
    pub short_server_id: u16,
    /// /1/y/1, when the server set a positive one.
    pub lifetime: Option<u32>,
    /// /1/y/7.
    pub binding: Option<String>,
}

impl Account {
    /// A client configuration that registers with this account: its server,
    /// credentials, Short Server ID and lifetime, and queue mode when the
    /// binding asks for it (`UQ`, or `Q` in 1.1 and later). Everything else
    /// is [`Config::new`]'s default, for the caller to adjust.
    pub fn config(&self, endpoint: impl Into<String>) -> Config {
        let mut c = Config::new(self.server, endpoint);
        c.psk = self.psk.clone();
        c.short_server_id = self.short_server_id;
        if let Some(lt) = self.lifetime {
            c.lifetime = lt;
        }
        c.queue_mode = self.binding.as_deref().is_some_and(|b| b.contains('Q'));
        c
    }
}

/// Why a bootstrap failed.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum BootstrapError {
    #[error("socket: {0}")]
    Io(String),
    #[error("DTLS: {0}")]
    Dtls(String),
    #[error("CoAP: {0}")]
    Coap(String),
    /// The server answered the Bootstrap-Request with an error; `diagnostic`
    /// is its payload as text.
    #[error("the bootstrap server refused the Bootstrap-Request with {}: {diagnostic}", MessageClass::Response(*code))]
    Refused {
        code: ResponseType,
        diagnostic: String,
    },
    /// The server answered the Bootstrap-Request with neither 2.04 nor an error.
    #[error("the bootstrap server answered the Bootstrap-Request with {0}")]
    Unexpected(String),
    #[error("no answer to the Bootstrap-Request: {0:?}")]
    NoResponse(FailReason),
    /// No acceptable Bootstrap-Finish in time; `last_refusal` is why the last
    /// Bootstrap-Finish got 4.06, if one came.
    #[error("no acceptable Bootstrap-Finish within {after:?}{}", last_refusal.as_ref().map(|r| format!(" (last refused: {r})")).unwrap_or_default())]
    Timeout {
        after: Duration,
        last_refusal: Option<String>,
    },
}

/// Bootstraps: sends the Bootstrap-Request, serves the server's requests,
/// and returns the account once a Bootstrap-Finish leaves a usable one.
///
/// After the 2.04 to Bootstrap-Finish the socket stays open in the
/// background for as long as the server may retransmit its Finish (the
/// CoAP MAX_TRANSMIT_SPAN), so that a lost ACK is answered again rather than
/// leaving the server thinking the bootstrap failed.
pub async fn bootstrap(cfg: BootstrapConfig) -> Result<Account, BootstrapError> {
    let dtls = cfg
        .psk
        .as_ref()
        .map(|p| DtlsClient::psk(&p.identity, &p.key, None, cfg.coap.ack_timeout))
        .transpose()
        .map_err(|e| BootstrapError::Dtls(e.to_string()))?;
    let mut link = Link::bind(cfg.bind, cfg.server, dtls)
        .await
        .map_err(|e| BootstrapError::Io(e.to_string()))?;
    let mut endpoint = Endpoint::new(cfg.coap.clone(), rng_seed());
    let mut state = BootstrapState::new(&cfg.server_uri(), cfg.psk.as_ref(), cfg.version);
    let mut queries = vec![format!("ep={}", cfg.endpoint)];
    if let Some(pct) = cfg.preferred_format {
        queries.push(format!("pct={pct}"));
    }
    let request = endpoint
        .send_request(
            Instant::now(),
            cfg.server,
            request_packet(RequestType::Post, "/bs", &queries),
            true,
        )
        .map_err(|e| BootstrapError::Coap(e.to_string()))?;
    // Set by the 2.04; also by the first request of the server, whose ACK to
    // our request may have been lost while it already got on with its work.
    let mut finish_by: Option<Instant> = None;
    let mut last_refusal = None;
    loop {
        link.flush(&mut endpoint).await;
        if let Some(why) = link.dtls_failure() {
            return Err(BootstrapError::Dtls(why));
        }
        while let Some(ev) = endpoint.poll_event() {
            let now = Instant::now();
            match ev {
                Event::Response {
                    request_id, packet, ..
                } if request_id == request => match packet.header.code {
                    MessageClass::Response(ResponseType::Changed) => {
                        finish_by.get_or_insert(now + cfg.finish_timeout);
                    }
                    MessageClass::Response(code) if u8::from(packet.header.code) >= 0x80 => {
                        return Err(BootstrapError::Refused {
                            code,
                            diagnostic: diagnostic_text(&packet.payload),
                        });
                    }
                    other => return Err(BootstrapError::Unexpected(other.to_string())),
                },
                // Once the server has spoken to us it has our request: wait for its Finish.
                Event::RequestFailed { request_id, reason }
                    if request_id == request && finish_by.is_none() =>
                {
                    return Err(BootstrapError::NoResponse(reason));
                }
                Event::Request { id, packet, .. } => {
                    finish_by.get_or_insert(now + cfg.finish_timeout);
                    let answer = match state.handle(&packet) {
                        Reply::Answer(p) => p,
                        Reply::Finish(draft) => match resolve(draft).await {
                            Ok(account) => {
                                let ok = response(ResponseType::Changed, Vec::new(), None);
                                if let Err(e) = endpoint.respond(Instant::now(), id, ok) {
                                    return Err(BootstrapError::Coap(e.to_string()));
                                }
                                endpoint.cancel(Instant::now(), request);
                                link.flush(&mut endpoint).await;
                                linger(link, endpoint, transmit_span(&cfg.coap));
                                return Ok(account);
                            }
                            Err(why) => {
                                tracing::debug!(reason = %why, "Bootstrap-Finish not acceptable");
                                let payload = diagnostic_bytes(&why);
                                last_refusal = Some(why);
                                response(ResponseType::NotAcceptable, payload, None)
                            }
                        },
                    };
                    if let Err(e) = endpoint.respond(now, id, answer) {
                        tracing::warn!(error = %e, "bootstrap response not sent");
                    }
                }
                _ => {}
            }
        }
        link.flush(&mut endpoint).await;
        let now = Instant::now();
        if finish_by.is_some_and(|t| t <= now) {
            return Err(BootstrapError::Timeout {
                after: cfg.finish_timeout,
                last_refusal,
            });
        }
        let deadline = [endpoint.poll_timeout(), link.poll_timeout(now), finish_by]
            .into_iter()
            .flatten()
            .min()
            .unwrap_or(now + Duration::from_secs(3600))
            .max(now);
        tokio::select! {
            r = link.recv() => match r {
                Ok(messages) => {
                    let peer = link.peer();
                    for m in messages {
                        endpoint.handle_datagram(Instant::now(), peer, &m);
                    }
                }
                Err(e) => {
                    tracing::debug!(error = %e, "receive failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            },
            _ = tokio::time::sleep_until(deadline.into()) => {}
        }
        endpoint.handle_timeout(Instant::now());
        link.handle_timeout();
    }
}

/// How long a peer keeps retransmitting a confirmable message (RFC 7252
/// MAX_TRANSMIT_SPAN).
fn transmit_span(c: &lwm2m_server::coap::Config) -> Duration {
    let tries = 2u32.saturating_pow(c.max_retransmit.min(16)) - 1;
    c.ack_timeout.mul_f64(c.ack_random_factor.max(1.0)) * tries
}

/// Keeps answering retransmissions of the Bootstrap-Finish (the endpoint
/// replays its 2.04) for `span`, then closes the DTLS session. A request that
/// is new comes too late: the bootstrap is over.
fn linger(mut link: Link, mut endpoint: Endpoint, span: Duration) {
    tokio::spawn(async move {
        let until = Instant::now() + span;
        loop {
            while let Some(ev) = endpoint.poll_event() {
                if let Event::Request { id, .. } = ev {
                    let late = response(
                        ResponseType::MethodNotAllowed,
                        b"bootstrap is finished".to_vec(),
                        None,
                    );
                    let _ = endpoint.respond(Instant::now(), id, late);
                }
            }
            link.flush(&mut endpoint).await;
            let now = Instant::now();
            if now >= until || link.dtls_failure().is_some() {
                break;
            }
            let deadline = [endpoint.poll_timeout(), link.poll_timeout(now), Some(until)]
                .into_iter()
                .flatten()
                .min()
                .unwrap_or(until)
                .max(now);
            tokio::select! {
                r = link.recv() => match r {
                    Ok(messages) => {
                        let peer = link.peer();
                        for m in messages {
                            endpoint.handle_datagram(Instant::now(), peer, &m);
                        }
                    }
                    Err(_) => tokio::time::sleep(Duration::from_millis(50)).await,
                },
                _ = tokio::time::sleep_until(deadline.into()) => {}
            }
            endpoint.handle_timeout(Instant::now());
            link.handle_timeout();
        }
        link.close().await;
    });
}

/// An error payload as text, cut to a sane length.
fn diagnostic_text(payload: &[u8]) -> String {
    String::from_utf8_lossy(&payload[..payload.len().min(MAX_DIAGNOSTIC)]).into_owned()
}

/// A diagnostic as a payload, cut at a character boundary.
fn diagnostic_bytes(text: &str) -> Vec<u8> {
    let mut end = text.len().min(MAX_DIAGNOSTIC);
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    text.as_bytes()[..end].to_vec()
}

/// A consistent account found at Bootstrap-Finish, before its host is
/// resolved.
#[derive(Debug, Clone, PartialEq)]
struct Draft {
    uri: String,
    target: ServerUri,
    psk: Option<Psk>,
    short_server_id: u16,
    lifetime: Option<u32>,
    binding: Option<String>,
}

/// The account of a draft, or why there is none.
async fn resolve(draft: Result<Draft, String>) -> Result<Account, String> {
    let d = draft?;
    let server = match d.target.ip_addr() {
        Some(a) => a,
        None => tokio::time::timeout(RESOLVE_TIMEOUT, d.target.resolve())
            .await
            .map_err(|_| format!("looking up {} timed out", d.target.host))?
            .map_err(|e| format!("cannot resolve {}: {e}", d.target.host))?,
    };
    Ok(Account {
        uri: d.uri,
        server,
        secure: d.target.secure,
        psk: d.psk,
        short_server_id: d.short_server_id,
        lifetime: d.lifetime,
        binding: d.binding,
    })
}

/// What a request from the bootstrap server asks of the driver.
#[derive(Debug)]
enum Reply {
    Answer(Packet),
    /// Bootstrap-Finish: the account it leaves, or why there is none (4.06).
    Finish(Result<Draft, String>),
}

/// The bootstrap-writable part of the device, sans-IO: requests in,
/// responses out.
struct BootstrapState {
    model: Registry,
    codecs: Codecs,
    version: Version,
    security: Object,
    server: Object,
}

fn single(id: u16, value: Value) -> Resource {
    Resource::Single { id, value }
}

fn value(i: &Instance, r: u16) -> Option<&Value> {
    match i.resources.get(&r) {
        Some(Resource::Single { value, .. }) => Some(value),
        _ => None,
    }
}

fn integer(i: &Instance, r: u16) -> Option<i64> {
    match value(i, r)? {
        Value::Integer(v) => Some(*v),
        Value::UnsignedInteger(u) => i64::try_from(*u).ok(),
        _ => None,
    }
}

fn text(i: &Instance, r: u16) -> Option<&str> {
    match value(i, r)? {
        Value::String(s) => Some(s),
        _ => None,
    }
}

fn opaque(i: &Instance, r: u16) -> Option<&[u8]> {
    match value(i, r)? {
        Value::Opaque(b) => Some(b),
        _ => None,
    }
}

/// A Security instance of a bootstrap server (/0/x/1 true), which
/// Bootstrap-Delete spares.
fn is_bootstrap_account(i: &Instance) -> bool {
    matches!(value(i, 1), Some(Value::Boolean(true)))
}

fn short_server_id(v: Option<i64>) -> Option<u16> {
    v.and_then(|v| u16::try_from(v).ok())
        .filter(|v| (1..=65534).contains(v))
}

fn is_finish_path(req: &Packet) -> bool {
    matches!(
        req.get_option(coap_lite::CoapOption::UriPath),
        Some(segs) if segs.len() == 1 && segs.front().is_some_and(|s| s == b"bs")
    )
}

impl BootstrapState {
    /// The factory state: only the bootstrap server's own account, /0/0.
    fn new(bootstrap_uri: &str, psk: Option<&Psk>, version: Version) -> BootstrapState {
        let (mode, identity, key) = match psk {
            Some(p) => (0, p.identity.clone(), p.key.clone()),
            None => (3, Vec::new(), Vec::new()),
        };
        let account = Instance::new(0)
            .with(single(0, Value::String(bootstrap_uri.into())))
            .with(single(1, Value::Boolean(true)))
            .with(single(2, Value::Integer(mode)))
            .with(single(3, Value::Opaque(identity)))
            .with(single(4, Value::Opaque(Vec::new())))
            .with(single(5, Value::Opaque(key)));
        BootstrapState {
            model: crate::store::core_model(),
            codecs: Codecs::new(),
            version,
            security: Object::new(SECURITY).with(account),
            server: Object::new(SERVER),
        }
    }

    fn handle(&mut self, req: &Packet) -> Reply {
        self.dispatch(req)
            .unwrap_or_else(|e| Reply::Answer(error_response(&e)))
    }

    fn dispatch(&mut self, req: &Packet) -> Result<Reply, OpError> {
        let MessageClass::Request(method) = req.header.code else {
            return Err(OpError::BadRequest("not a request".into()));
        };
        if is_finish_path(req) {
            return match method {
                RequestType::Post => Ok(Reply::Finish(self.check())),
                _ => Err(OpError::MethodNotAllowed(
                    "/bs takes POST only (Bootstrap-Finish)".into(),
                )),
            };
        }
        let path = request_path(req)?;
        let accept = uint_option(req, 17)?;
        let cf = uint_option(req, 12)?;
        let answer = match method {
            RequestType::Get if accept == Some(u32::from(ContentFormat::LinkFormat.code())) => {
                self.discover(&path)?
            }
            RequestType::Get => self.read(&path, accept)?,
            RequestType::Put => self.write(&path, cf, &req.payload)?,
            RequestType::Delete => self.delete(&path)?,
            m => {
                return Err(OpError::MethodNotAllowed(format!(
                    "{m:?} is not an operation of the Bootstrap Interface"
                )))
            }
        };
        Ok(Reply::Answer(answer))
    }

    fn object_mut(&mut self, oid: u16) -> &mut Object {
        if oid == SECURITY {
            &mut self.security
        } else {
            &mut self.server
        }
    }

    /// Bootstrap-Discover: the objects and instances, with `ssid` and `uri` of
    /// the LwM2M Server accounts.
    fn discover(&self, path: &Path) -> Result<Packet, OpError> {
        let objects: Vec<u16> = match *path.ids() {
            [] => HOSTED_OBJECTS.to_vec(),
            [o] if HOSTED_OBJECTS.contains(&o) => vec![o],
            [o] => return Err(OpError::NotFound(Path::object(o))),
            _ => {
                return Err(OpError::BadRequest(
                    "Bootstrap-Discover targets the root or an object".into(),
                ))
            }
        };
        let mut entries = vec![DiscoverEntry {
            path: Path::ROOT,
            attributes: Attributes {
                other: vec![("lwm2m".into(), Some(self.version.to_string()))],
                ..Attributes::default()
            },
        }];
        for oid in objects {
            let ver = self
                .model
                .object(oid)
                .map(|d| d.version)
                .filter(|v| *v != Version::V1_0);
            let instances: Vec<(u16, Attributes)> = match oid {
                SECURITY => self
                    .security
                    .instances
                    .values()
                    .map(|i| {
                        let mut a = Attributes::default();
                        if !is_bootstrap_account(i) {
                            a.ssid = short_server_id(integer(i, 10));
                            a.uri = text(i, 0).map(str::to_string);
                        }
                        (i.id, a)
                    })
                    .collect(),
                SERVER => self
                    .server
                    .instances
                    .values()
                    .map(|i| {
                        let a = Attributes {
                            ssid: short_server_id(integer(i, 0)),
                            ..Attributes::default()
                        };
                        (i.id, a)
                    })
                    .collect(),
                _ => vec![(0, Attributes::default())],
            };
            if ver.is_some() || instances.is_empty() {
                entries.push(DiscoverEntry {
                    path: Path::object(oid),
                    attributes: Attributes {
                        ver,
                        ..Attributes::default()
                    },
                });
            }
            for (iid, attributes) in instances {
                entries.push(DiscoverEntry {
                    path: Path::instance(oid, iid),
                    attributes,
                });
            }
        }
        Ok(response(
            ResponseType::Content,
            link::format_discover(&entries).into_bytes(),
            Some(ContentFormat::LinkFormat.code()),
        ))
    }

    /// Bootstrap-Read: the Server object only; Security holds secrets, and
    /// Access Control instances are not kept.
    fn read(&self, path: &Path, accept: Option<u32>) -> Result<Packet, OpError> {
        let node = match *path.ids() {
            [SECURITY, ..] => return Err(OpError::Unauthorized(*path)),
            [SERVER] => Node::Object(self.server.clone()),
            [SERVER, iid] => self
                .server
                .instances
                .get(&iid)
                .cloned()
                .map(Node::Instance)
                .ok_or(OpError::NotFound(*path))?,
            [ACCESS_CONTROL] => Node::Object(Object::new(ACCESS_CONTROL)),
            [ACCESS_CONTROL, _] => return Err(OpError::NotFound(*path)),
            [] | [_] | [_, _] => {
                return Err(OpError::BadRequest(
                    "Bootstrap-Read targets the Server or Access Control object".into(),
                ))
            }
            _ => {
                return Err(OpError::BadRequest(
                    "Bootstrap-Read targets an object or an object instance".into(),
                ))
            }
        };
        let format = match accept {
            None => ContentFormat::Tlv,
            Some(a) => u16::try_from(a)
                .ok()
                .and_then(ContentFormat::from_code)
                .filter(|f| {
                    !matches!(
                        f,
                        ContentFormat::LinkFormat
                            | ContentFormat::Text
                            | ContentFormat::Opaque
                            | ContentFormat::Cbor
                    )
                })
                .ok_or_else(|| OpError::NotAcceptable(format!("content format {a}")))?,
        };
        let bytes = self
            .codecs
            .encode(format, path, &node, &self.model)
            .map_err(|e| OpError::NotAcceptable(e.to_string()))?;
        Ok(response(ResponseType::Content, bytes, Some(format.code())))
    }

    /// Bootstrap-Write: creates or replaces instances (or one resource) of
    /// Security and Server, whatever ACLs say; accepts and drops writes to
    /// other objects, which this device does not let a bootstrap change.
    fn write(&mut self, path: &Path, cf: Option<u32>, payload: &[u8]) -> Result<Packet, OpError> {
        let changed = || response(ResponseType::Changed, Vec::new(), None);
        let oid = match path.object_id() {
            None => {
                return Err(OpError::MethodNotAllowed(
                    "Bootstrap-Write targets an object, an instance or a resource".into(),
                ))
            }
            Some(o @ (SECURITY | SERVER)) => o,
            Some(_) => return Ok(changed()),
        };
        if cf.is_none() && payload.is_empty() {
            return Err(OpError::BadRequest(
                "Bootstrap-Write without a payload".into(),
            ));
        }
        let format = match cf {
            // Some servers omit it; TLV is what every LwM2M version speaks.
            None => ContentFormat::Tlv,
            Some(c) => u16::try_from(c)
                .ok()
                .and_then(ContentFormat::from_code)
                .filter(|f| *f != ContentFormat::LinkFormat)
                .ok_or(OpError::UnsupportedFormat(
                    u16::try_from(c).unwrap_or(u16::MAX),
                ))?,
        };
        let node = decode_payload(&self.codecs, &self.model, format, payload, path)?;
        let rid = path.resource_id();
        let is_multiple = |r: u16| self.model.resource(oid, r).is_some_and(|d| d.multiple);
        let multiple_rid = rid.filter(|r| is_multiple(*r));
        let object = self.object_mut(oid);
        let room = |object: &Object, new: &[u16]| {
            let added = new
                .iter()
                .filter(|i| !object.instances.contains_key(i))
                .count();
            if object.instances.len() + added > MAX_INSTANCES {
                Err(OpError::BadRequest(format!(
                    "/{oid} holds at most {MAX_INSTANCES} instances"
                )))
            } else {
                Ok(())
            }
        };
        match node {
            Node::Object(o) => {
                let ids: Vec<u16> = o.instances.keys().copied().collect();
                room(object, &ids)?;
                object.instances.extend(o.instances);
            }
            Node::Instance(i) => {
                room(object, &[i.id])?;
                object.instances.insert(i.id, i);
            }
            Node::Resource(r) => {
                let iid = path.instance_id().unwrap_or_default();
                room(object, &[iid])?;
                object
                    .instances
                    .entry(iid)
                    .or_insert_with(|| Instance::new(iid))
                    .resources
                    .insert(r.id(), r);
            }
            Node::ResourceInstance { id, value } => {
                let (iid, rid) = match (path.instance_id(), multiple_rid) {
                    (Some(i), Some(r)) => (i, r),
                    _ => {
                        return Err(OpError::BadRequest(format!(
                            "{} is not a multiple resource",
                            path.parent().unwrap_or(*path)
                        )))
                    }
                };
                room(object, &[iid])?;
                let inst = object
                    .instances
                    .entry(iid)
                    .or_insert_with(|| Instance::new(iid));
                let resource = inst
                    .resources
                    .entry(rid)
                    .or_insert_with(|| Resource::Multiple {
                        id: rid,
                        instances: BTreeMap::new(),
                    });
                if let Resource::Single { .. } = resource {
                    *resource = Resource::Multiple {
                        id: rid,
                        instances: BTreeMap::new(),
                    };
                }
                if let Resource::Multiple { instances, .. } = resource {
                    if !instances.contains_key(&id) && instances.len() >= MAX_RESOURCE_INSTANCES {
                        return Err(OpError::BadRequest(format!(
                            "a resource holds at most {MAX_RESOURCE_INSTANCES} instances"
                        )));
                    }
                    instances.insert(id, value);
                }
            }
        }
        Ok(changed())
    }

    /// Bootstrap-Delete: spares the bootstrap server's own account and the
    /// Device object.
    fn delete(&mut self, path: &Path) -> Result<Packet, OpError> {
        match *path.ids() {
            [] | [SECURITY] => {
                self.security
                    .instances
                    .retain(|_, i| is_bootstrap_account(i));
                if path.is_root() {
                    self.server.instances.clear();
                }
            }
            [SERVER] => self.server.instances.clear(),
            [SECURITY, iid] => {
                if self
                    .security
                    .instances
                    .get(&iid)
                    .is_some_and(is_bootstrap_account)
                {
                    return Err(OpError::BadRequest(format!(
                        "/0/{iid} is the Bootstrap-Server account"
                    )));
                }
                self.security.instances.remove(&iid);
            }
            [SERVER, iid] => {
                self.server.instances.remove(&iid);
            }
            [DEVICE] | [DEVICE, _] => {
                return Err(OpError::BadRequest(
                    "the Device object cannot be deleted".into(),
                ))
            }
            // Nothing else is kept, so nothing else is left to delete.
            [_] | [_, _] => {}
            _ => {
                return Err(OpError::BadRequest(
                    "Bootstrap-Delete targets an object or an object instance".into(),
                ))
            }
        }
        Ok(response(ResponseType::Deleted, Vec::new(), None))
    }

    /// Bootstrap-Finish's consistency check: the first LwM2M Server account
    /// that is complete, or every reason why none is.
    fn check(&self) -> Result<Draft, String> {
        let mut reasons = Vec::new();
        for (iid, sec) in &self.security.instances {
            if is_bootstrap_account(sec) {
                continue;
            }
            match self.account(sec) {
                Ok(d) => return Ok(d),
                Err(why) => reasons.push(format!("/0/{iid}: {why}")),
            }
        }
        if reasons.is_empty() {
            Err("no LwM2M Server account: only Bootstrap-Server accounts in /0".into())
        } else {
            Err(reasons.join("; "))
        }
    }

    fn account(&self, sec: &Instance) -> Result<Draft, String> {
        let uri = text(sec, 0).ok_or("no LwM2M Server URI (/0/x/0)")?;
        let target: ServerUri = uri
            .parse()
            .map_err(|e| format!("Server URI {uri:?}: {e}"))?;
        let ssid =
            short_server_id(integer(sec, 10)).ok_or("no Short Server ID (/0/x/10) in 1..65534")?;
        let psk = match integer(sec, 2).ok_or("no Security Mode (/0/x/2)")? {
            0 => {
                let identity = opaque(sec, 3)
                    .filter(|b| !b.is_empty())
                    .ok_or("PSK mode without an identity (/0/x/3)")?;
                let key = opaque(sec, 5)
                    .filter(|b| !b.is_empty())
                    .ok_or("PSK mode without a key (/0/x/5)")?;
                // What OpenSSL's PSK callback can hand over.
                if identity.len() > 128 || key.len() > 256 {
                    return Err("PSK identity or key too long for DTLS".into());
                }
                if !target.secure {
                    return Err("PSK mode with a coap:// URI".into());
                }
                Some(Psk {
                    identity: identity.to_vec(),
                    key: key.to_vec(),
                })
            }
            3 if target.secure => return Err("NoSec mode with a coaps:// URI".into()),
            3 => None,
            m @ 1..=2 | m @ 4 => {
                return Err(format!(
                    "Security Mode {m} is not supported by this client (PSK or NoSec)"
                ))
            }
            m => return Err(format!("Security Mode {m} is not defined")),
        };
        let server = self
            .server
            .instances
            .values()
            .find(|s| short_server_id(integer(s, 0)) == Some(ssid))
            .ok_or_else(|| format!("no Server instance in /1 with Short Server ID {ssid}"))?;
        Ok(Draft {
            uri: uri.to_string(),
            target,
            psk,
            short_server_id: ssid,
            lifetime: integer(server, 1)
                .and_then(|v| u32::try_from(v).ok())
                .filter(|v| *v > 0),
            binding: text(server, 7).map(str::to_string),
        })
    }
}

#[cfg(test)]
mod tests;
