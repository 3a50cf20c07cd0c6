//! The device-management side of the client, without I/O: a CoAP request from
//! the server in, the response and follow-up actions out (LwM2M 1.2
//! Transport, "Operation to Method and URI Mapping"). Notifications are
//! produced by [`Core::poll_notifications`].

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::time::Instant;

use coap_lite::{CoapOption, MessageClass, Packet, RequestType, ResponseType};
use lwm2m_objects::format::Nodes;
use lwm2m_objects::link::{self, Attributes, DiscoverEntry, ObjectLink, RegistrationPayload};
use lwm2m_objects::{Codecs, ContentFormat, Model, Node, Path, Resource, Value, Version};

use crate::config::Config;
use crate::device::Device;
use crate::firmware::Firmware;
use crate::observe::{AttributeStore, Effective, Observation, Target};
use crate::store::{Actor, ObjectStore, OpError};

/// The objects every simulated device has, each with instance 0.
pub const HOSTED_OBJECTS: [u16; 6] = [0, 1, 3, 4, 5, 6];

/// Most observations one client keeps; a further Observe is refused with 5.03.
pub const MAX_OBSERVATIONS: usize = 256;

/// What the client must do after answering a request.
#[derive(Debug, Clone, PartialEq)]
pub enum Action {
    /// The object list changed (Create/Delete): send an Update with the payload.
    ObjectsChanged,
    /// Execute /3/0/4 or /3/0/5: restart and register again.
    Reboot,
    /// Execute /1/0/8 (Registration Update Trigger), or /1/0/1 or /1/0/7 written.
    TriggerUpdate,
}

/// Which DM operation a request was, for events and logs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Operation {
    Read,
    Discover,
    Write,
    WriteAttributes,
    Execute,
    Create,
    Delete,
    Observe,
    CancelObserve,
    ReadComposite,
    WriteComposite,
    ObserveComposite,
    CancelObserveComposite,
    Unknown,
}

/// The client's state that DM operations act on.
pub struct Core {
    pub config: Config,
    pub store: ObjectStore,
    pub device: Device,
    pub firmware: Firmware,
    pub attrs: AttributeStore,
    pub observations: Vec<Observation>,
    pub codecs: Codecs,
    seq: u32,
}

/// A notification ready to send.
#[derive(Debug, Clone)]
pub struct Notification {
    pub peer: SocketAddr,
    pub token: Vec<u8>,
    pub packet: Packet,
    pub confirmable: bool,
    /// The observation ended (its target is gone); this is its last message.
    pub last: bool,
}

fn code_of(e: &OpError) -> ResponseType {
    match e {
        OpError::NotFound(_) => ResponseType::NotFound,
        OpError::MethodNotAllowed(_) => ResponseType::MethodNotAllowed,
        OpError::BadRequest(_) => ResponseType::BadRequest,
        OpError::Unauthorized(_) => ResponseType::Unauthorized,
        OpError::NotAcceptable(_) => ResponseType::NotAcceptable,
        OpError::UnsupportedFormat(_) => ResponseType::UnsupportedContentFormat,
        OpError::Internal(_) => ResponseType::InternalServerError,
    }
}

/// Builds a response packet.
pub fn response(code: ResponseType, payload: Vec<u8>, format: Option<u16>) -> Packet {
    let mut p = Packet::new();
    p.header.code = MessageClass::Response(code);
    if let Some(cf) = format {
        p.add_option(CoapOption::ContentFormat, encode_uint(u32::from(cf)));
    }
    p.payload = payload;
    p
}

pub(crate) fn error_response(e: &OpError) -> Packet {
    response(code_of(e), e.to_string().into_bytes(), None)
}

/// CoAP uint option encoding: big-endian without leading zeros.
pub fn encode_uint(v: u32) -> Vec<u8> {
    let b = v.to_be_bytes();
    let skip = b.iter().take_while(|x| **x == 0).count();
    b[skip..].to_vec()
}

fn decode_uint(b: &[u8]) -> Option<u32> {
    if b.len() > 4 {
        return None;
    }
    Some(b.iter().fold(0u32, |acc, x| (acc << 8) | u32::from(*x)))
}

pub(crate) fn uint_option(p: &Packet, n: u16) -> Result<Option<u32>, OpError> {
    match p.get_first_option(CoapOption::from(n)) {
        None => Ok(None),
        Some(b) => decode_uint(b)
            .map(Some)
            .ok_or_else(|| OpError::BadRequest(format!("option {n} is not a uint"))),
    }
}

/// The Uri-Path of a request as an LwM2M path; non-numeric or out-of-range
/// segments name nothing this client has.
pub(crate) fn request_path(p: &Packet) -> Result<Path, OpError> {
    let mut ids = Vec::new();
    if let Some(segs) = p.get_option(CoapOption::UriPath) {
        for s in segs {
            if s.is_empty() {
                continue;
            }
            let id = std::str::from_utf8(s)
                .ok()
                .filter(|t| t.len() <= 5 && t.bytes().all(|c| c.is_ascii_digit()))
                .and_then(|t| t.parse::<u16>().ok())
                .ok_or(OpError::NotFound(Path::ROOT))?;
            ids.push(id);
        }
    }
    Path::from_ids(&ids).map_err(|e| OpError::BadRequest(e.to_string()))
}

fn queries(p: &Packet) -> Result<Vec<String>, OpError> {
    p.get_option(CoapOption::UriQuery)
        .map(|qs| {
            qs.iter()
                .map(|q| {
                    String::from_utf8(q.clone())
                        .map_err(|_| OpError::BadRequest("query is not UTF-8".into()))
                })
                .collect()
        })
        .unwrap_or_else(|| Ok(Vec::new()))
}

/// Parses Execute arguments (LwM2M 1.2 Core, Execute Operation): a
/// comma-separated list of a digit, optionally `='text'` with no `'` or `\`
/// in the text.
pub fn parse_execute_args(payload: &[u8]) -> Result<Vec<(u8, Option<String>)>, OpError> {
    let text = std::str::from_utf8(payload)
        .map_err(|_| OpError::BadRequest("execute arguments are not UTF-8".into()))?;
    if text.is_empty() {
        return Ok(Vec::new());
    }
    let bad = |why: &str| OpError::BadRequest(format!("execute arguments: {why}"));
    let mut out = Vec::new();
    let mut rest = text;
    loop {
        let mut chars = rest.chars();
        let digit = chars
            .next()
            .and_then(|c| c.to_digit(10))
            .ok_or_else(|| bad("an argument must start with a digit"))?;
        rest = chars.as_str();
        let value = if let Some(r) = rest.strip_prefix("='") {
            let end = r.find('\'').ok_or_else(|| bad("unterminated value"))?;
            let v = &r[..end];
            if v.contains('\\') {
                return Err(bad("a value must not contain a backslash"));
            }
            rest = &r[end + 1..];
            Some(v.to_string())
        } else {
            None
        };
        out.push((digit as u8, value));
        if out.len() > 10 {
            return Err(bad("too many arguments"));
        }
        match rest.strip_prefix(',') {
            Some(r) => rest = r,
            None if rest.is_empty() => return Ok(out),
            None => return Err(bad("expected ','")),
        }
    }
}

/// Decodes a request payload: a format that cannot carry this payload is
/// 4.15, a payload that does not decode is 4.00 with the decoder's reason.
pub(crate) fn decode_payload(
    codecs: &Codecs,
    model: &dyn Model,
    format: ContentFormat,
    payload: &[u8],
    path: &Path,
) -> Result<Node, OpError> {
    codecs
        .decode(format, payload, path, model)
        .map_err(|e| match e {
            lwm2m_objects::DecodeError::UnknownFormat(c) => OpError::UnsupportedFormat(c),
            lwm2m_objects::DecodeError::Unsupported { .. } => {
                OpError::UnsupportedFormat(format.code())
            }
            e => OpError::BadRequest(e.to_string()),
        })
}

/// What one write puts into Package (/5/0/0) and Package URI (/5/0/1), so
/// that the firmware can refuse it before anything is stored and act on it
/// after.
#[derive(Debug, Default)]
struct FirmwareWrite {
    package: bool,
    uri: Option<String>,
}

impl FirmwareWrite {
    fn of(path: &Path, node: &Node) -> FirmwareWrite {
        if path.object_id() != Some(5) || path.instance_id() != Some(0) {
            return FirmwareWrite::default();
        }
        let text = |r: &Resource| match r {
            Resource::Single {
                value: Value::String(s),
                ..
            } => s.clone(),
            _ => String::new(),
        };
        match node {
            Node::Instance(inst) => FirmwareWrite {
                package: inst.resources.contains_key(&0),
                uri: inst.resources.get(&1).map(text),
            },
            Node::Resource(r) if path.resource_id() == Some(r.id()) => FirmwareWrite {
                package: r.id() == 0,
                uri: (r.id() == 1).then(|| text(r)),
            },
            _ => FirmwareWrite::default(),
        }
    }
}

fn is_single_value(node: &Node) -> bool {
    matches!(
        node,
        Node::Resource(Resource::Single { .. }) | Node::ResourceInstance { .. }
    )
}

fn composite_capable(f: ContentFormat) -> bool {
    matches!(
        f,
        ContentFormat::SenmlJson | ContentFormat::SenmlCbor | ContentFormat::Lwm2mCbor
    )
}

/// A device as it starts: its object tree with the initial values, its sensors, its
/// object 5.
fn initial(config: &Config) -> Result<(ObjectStore, Device, Firmware), OpError> {
    let mut hosted = HOSTED_OBJECTS.to_vec();
    hosted.extend(config.extra_objects.iter().copied());
    let mut store = ObjectStore::new(crate::store::core_model(), &hosted);
    let mut device = Device::new(config.profile.clone(), &config.endpoint);
    let uri = format!("coap://{}", config.server);
    // /1/0/7 lists the transport and queue mode (`UQ`), whatever `b=` says.
    let binding = if config.queue_mode { "UQ" } else { "U" };
    device.populate(
        &mut store,
        &uri,
        &config.endpoint,
        config.lifetime,
        config.short_server_id,
        binding,
    )?;
    let dtls_credentials = config.psk.is_some() || config.certificate.is_some();
    let mut firmware = Firmware::new(
        config.firmware.clone(),
        config.profile.update_time,
        dtls_credentials,
    );
    firmware.populate(&mut store)?;
    Ok((store, device, firmware))
}

/// The object tree a device with this configuration starts with: what a parked device
/// keeps is its difference from this tree ([`crate::park`]).
pub(crate) fn initial_store(config: &Config) -> Result<ObjectStore, OpError> {
    initial(config).map(|(store, _, _)| store)
}

impl Core {
    pub fn new(config: Config) -> Result<Core, OpError> {
        let (store, device, firmware) = initial(&config)?;
        Ok(Core {
            config,
            store,
            device,
            firmware,
            attrs: AttributeStore::default(),
            observations: Vec::new(),
            codecs: Codecs::new(),
            seq: 0,
        })
    }

    /// The Register/Update payload: `</>;rt="oma.lwm2m";ct=...`, then the
    /// objects (never /0), with `ver=` for objects not at 1.0 (1.1+ only).
    pub fn registration_payload(&self) -> String {
        let mut payload = RegistrationPayload {
            content_formats: match self.config.version {
                v if v == Version::V1_0 => Vec::new(),
                v if v == Version::V1_1 => vec![60, 110, 112],
                _ => vec![60, 110, 112, 11544],
            },
            ..RegistrationPayload::default()
        };
        for (oid, instances) in self.store.layout() {
            if link::SECURITY_OBJECTS.contains(&oid) {
                continue;
            }
            let version = self
                .store
                .model()
                .object(oid)
                .map(|d| d.version)
                .filter(|v| *v != Version::V1_0 && self.config.version != Version::V1_0);
            if version.is_some() || instances.is_empty() {
                payload.objects.push(ObjectLink {
                    object: oid,
                    instance: None,
                    version,
                });
            }
            for i in instances {
                payload.objects.push(ObjectLink {
                    object: oid,
                    instance: Some(i),
                    version: None,
                });
            }
        }
        payload.format()
    }

    fn defaults(&self) -> Effective {
        let int = |r: u16| match self.store.value(&Path::resource(1, 0, r)) {
            Some(Value::Integer(v)) => u32::try_from(*v).unwrap_or(0),
            _ => 0,
        };
        Effective {
            pmin: int(2),
            pmax: int(3),
            con: self.config.confirmable_notifications,
            ..Effective::default()
        }
    }

    /// The last Observe sequence number sent: a parked device goes on from it, so that
    /// the server takes its notifications after the wake as newer (RFC 7641 §4.4).
    pub(crate) fn seq(&self) -> u32 {
        self.seq
    }

    pub(crate) fn set_seq(&mut self, seq: u32) {
        self.seq = seq & 0x00FF_FFFF;
    }

    fn next_seq(&mut self) -> u32 {
        self.seq = (self.seq + 1) & 0x00FF_FFFF;
        self.seq
    }

    /// Answers one request from the server.
    pub fn handle(
        &mut self,
        now: Instant,
        peer: SocketAddr,
        req: &Packet,
    ) -> (Packet, Operation, Vec<Action>) {
        let mut actions = Vec::new();
        let mut op = Operation::Unknown;
        let resp = match self.dispatch(now, peer, req, &mut actions, &mut op) {
            Ok(p) => p,
            Err(e) => {
                actions.clear();
                error_response(&e)
            }
        };
        (resp, op, actions)
    }

    fn dispatch(
        &mut self,
        now: Instant,
        peer: SocketAddr,
        req: &Packet,
        actions: &mut Vec<Action>,
        op: &mut Operation,
    ) -> Result<Packet, OpError> {
        let MessageClass::Request(method) = req.header.code else {
            return Err(OpError::BadRequest("not a request".into()));
        };
        let path = request_path(req)?;
        let accept = uint_option(req, 17)?;
        let cf = uint_option(req, 12)?;
        let observe = match req.get_observe_value() {
            None => None,
            Some(Ok(v)) => Some(v),
            Some(Err(_)) => return Err(OpError::BadRequest("bad Observe option".into())),
        };
        if path.object_id() == Some(0) {
            return Err(OpError::Unauthorized(path));
        }
        match method {
            RequestType::Get if accept == Some(40) => {
                *op = Operation::Discover;
                self.discover(&path, &queries(req)?)
            }
            RequestType::Get => match observe {
                Some(0) => {
                    *op = Operation::Observe;
                    self.observe(now, peer, req, Target::Single(path), accept)
                }
                Some(1) => {
                    *op = Operation::CancelObserve;
                    self.cancel_observation(peer, req.get_token());
                    self.read(&path, accept)
                }
                _ => {
                    *op = Operation::Read;
                    self.read(&path, accept)
                }
            },
            RequestType::Fetch => {
                let format = self.payload_format(cf)?;
                let paths = self
                    .codecs
                    .get(format.code())
                    .and_then(|c| c.decode_paths(&req.payload))
                    .map_err(|e| match e {
                        lwm2m_objects::DecodeError::Unsupported { .. } => {
                            OpError::UnsupportedFormat(format.code())
                        }
                        e => OpError::BadRequest(e.to_string()),
                    })?;
                if paths.len() > 256 {
                    return Err(OpError::BadRequest("too many paths".into()));
                }
                let accept = accept.or(Some(u32::from(format.code())));
                match observe {
                    Some(0) => {
                        *op = Operation::ObserveComposite;
                        self.observe(now, peer, req, Target::Composite(paths), accept)
                    }
                    Some(1) => {
                        *op = Operation::CancelObserveComposite;
                        self.cancel_observation(peer, req.get_token());
                        self.read_composite(&paths, accept)
                    }
                    _ => {
                        *op = Operation::ReadComposite;
                        self.read_composite(&paths, accept)
                    }
                }
            }
            RequestType::Put if cf.is_none() && req.payload.is_empty() => {
                *op = Operation::WriteAttributes;
                self.write_attributes(&path, &queries(req)?)
            }
            RequestType::Put => {
                *op = Operation::Write;
                self.write(&path, cf, &req.payload, true, actions)
            }
            RequestType::Post => match path.depth() {
                1 => {
                    *op = Operation::Create;
                    self.create(&path, cf, &req.payload, actions)
                }
                2 => {
                    *op = Operation::Write;
                    self.write(&path, cf, &req.payload, false, actions)
                }
                3 if self
                    .store
                    .def(
                        path.object_id().unwrap_or(0),
                        path.resource_id().unwrap_or(0),
                    )
                    .is_some_and(|d| d.multiple)
                    && cf.is_some() =>
                {
                    *op = Operation::Write;
                    self.write(&path, cf, &req.payload, false, actions)
                }
                3 => {
                    *op = Operation::Execute;
                    self.execute(now, &path, &req.payload, actions)
                }
                _ => Err(OpError::MethodNotAllowed(format!("POST on {path}"))),
            },
            RequestType::IPatch if path.is_root() => {
                *op = Operation::WriteComposite;
                self.write_composite(cf, &req.payload, actions)
            }
            RequestType::IPatch if path.depth() == 2 => {
                *op = Operation::Write;
                self.write(&path, cf, &req.payload, false, actions)
            }
            RequestType::Delete => {
                *op = Operation::Delete;
                self.store.delete(&path, Actor::Server)?;
                self.attrs.remove_below(&path);
                if path.depth() == 2 {
                    actions.push(Action::ObjectsChanged);
                }
                Ok(response(ResponseType::Deleted, Vec::new(), None))
            }
            _ => Err(OpError::MethodNotAllowed(format!("{method:?} on {path}"))),
        }
    }

    /// The format of a request payload; a missing Content-Format means the
    /// default format (some servers omit it), an unknown one is 4.15.
    fn payload_format(&self, cf: Option<u32>) -> Result<ContentFormat, OpError> {
        match cf {
            None => Ok(self.config.default_format()),
            Some(c) => u16::try_from(c)
                .ok()
                .and_then(ContentFormat::from_code)
                .filter(|f| *f != ContentFormat::LinkFormat)
                .ok_or(OpError::UnsupportedFormat(
                    u16::try_from(c).unwrap_or(u16::MAX),
                )),
        }
    }

    /// The format of a response: the Accept if we can produce it (4.06
    /// otherwise), else the default.
    fn response_format(&self, accept: Option<u32>, node: &Node) -> Result<ContentFormat, OpError> {
        match accept {
            None if is_single_value(node)
                || self.config.default_format() != ContentFormat::Text =>
            {
                Ok(self.config.default_format())
            }
            None => Ok(self.config.default_format()),
            Some(a) => {
                let f = u16::try_from(a)
                    .ok()
                    .and_then(ContentFormat::from_code)
                    .filter(|f| *f != ContentFormat::LinkFormat)
                    .ok_or_else(|| OpError::NotAcceptable(format!("content format {a}")))?;
                let single_only = matches!(
                    f,
                    ContentFormat::Text | ContentFormat::Opaque | ContentFormat::Cbor
                );
                if single_only && !is_single_value(node) {
                    return Err(OpError::NotAcceptable(format!(
                        "{f} carries a single value only"
                    )));
                }
                Ok(f)
            }
        }
    }

    fn encode(&self, path: &Path, node: &Node, accept: Option<u32>) -> Result<Packet, OpError> {
        let f = self.response_format(accept, node)?;
        let bytes = self
            .codecs
            .encode(f, path, node, self.store.model())
            .map_err(|e| {
                if accept.is_some() {
                    OpError::NotAcceptable(e.to_string())
                } else {
                    OpError::Internal(e.to_string())
                }
            })?;
        Ok(response(ResponseType::Content, bytes, Some(f.code())))
    }

    fn read(&self, path: &Path, accept: Option<u32>) -> Result<Packet, OpError> {
        let node = self.store.read(path, Actor::Server)?;
        self.encode(path, &node, accept)
    }

    fn read_nodes(&self, paths: &[Path]) -> Nodes {
        paths
            .iter()
            .filter_map(|p| self.store.read(p, Actor::Server).ok().map(|n| (*p, n)))
            .collect()
    }

    fn composite_format(&self, accept: Option<u32>) -> Result<ContentFormat, OpError> {
        let f = match accept {
            Some(a) => u16::try_from(a)
                .ok()
                .and_then(ContentFormat::from_code)
                .ok_or_else(|| OpError::NotAcceptable(format!("content format {a}")))?,
            None => self.config.default_format(),
        };
        if composite_capable(f) {
            Ok(f)
        } else if accept.is_some() {
            Err(OpError::NotAcceptable(format!(
                "{f} cannot carry a composite"
            )))
        } else {
            Ok(ContentFormat::SenmlCbor)
        }
    }

    fn read_composite(&self, paths: &[Path], accept: Option<u32>) -> Result<Packet, OpError> {
        let f = self.composite_format(accept)?;
        let nodes = self.read_nodes(paths);
        let bytes = self
            .codecs
            .get(f.code())
            .map_err(|e| OpError::NotAcceptable(e.to_string()))?
            .encode_nodes(&nodes, self.store.model())
            .map_err(|e| OpError::NotAcceptable(e.to_string()))?;
        Ok(response(ResponseType::Content, bytes, Some(f.code())))
    }

    fn decode(&self, cf: Option<u32>, payload: &[u8], path: &Path) -> Result<Node, OpError> {
        let f = self.payload_format(cf)?;
        decode_payload(&self.codecs, self.store.model(), f, payload, path)
    }

    fn write(
        &mut self,
        path: &Path,
        cf: Option<u32>,
        payload: &[u8],
        replace: bool,
        actions: &mut Vec<Action>,
    ) -> Result<Packet, OpError> {
        if path.depth() < 2 {
            return Err(OpError::MethodNotAllowed(format!("write on {path}")));
        }
        if !self.store.exists(&Path::instance(
            path.object_id().unwrap_or(0),
            path.instance_id().unwrap_or(0),
        )) {
            return Err(OpError::NotFound(*path));
        }
        let node = self.decode(cf, payload, path)?;
        let fw = FirmwareWrite::of(path, &node);
        self.firmware.check_write(fw.package, fw.uri.as_deref())?;
        self.store.write(path, node, replace, Actor::Server)?;
        self.after_write(path, fw, actions);
        Ok(response(ResponseType::Changed, Vec::new(), None))
    }

    /// Side effects of written values: firmware downloads, lifetime and
    /// binding changes.
    fn after_write(&mut self, path: &Path, fw: FirmwareWrite, actions: &mut Vec<Action>) {
        let touches = |r: u16| path.depth() == 2 || path.resource_id() == Some(r);
        match path.object_id() {
            Some(5) => {
                if fw.package {
                    let package = Path::resource(5, 0, 0);
                    let bytes = match self.store.value(&package) {
                        Some(Value::Opaque(b)) => b.clone(),
                        _ => Vec::new(),
                    };
                    // The image lives in the firmware's buffer only: the tree
                    // is cloned by composite writes.
                    let _ = self.store.set(&package, Value::Opaque(Vec::new()));
                    self.firmware.on_package_write(&mut self.store, bytes);
                }
                if let Some(uri) = fw.uri {
                    self.firmware.on_uri_write(&mut self.store, &uri);
                }
            }
            Some(1) if touches(1) || touches(7) => {
                if let Some(Value::Integer(lt)) = self.store.value(&Path::resource(1, 0, 1)) {
                    if let Ok(lt) = u32::try_from(*lt) {
                        self.config.lifetime = lt;
                    }
                }
                actions.push(Action::TriggerUpdate);
            }
            _ => {}
        }
    }

    fn write_composite(
        &mut self,
        cf: Option<u32>,
        payload: &[u8],
        actions: &mut Vec<Action>,
    ) -> Result<Packet, OpError> {
        let f = self.payload_format(cf)?;
        if !composite_capable(f) {
            return Err(OpError::UnsupportedFormat(f.code()));
        }
        let nodes = self
            .codecs
            .get(f.code())
            .and_then(|c| c.decode_nodes(payload, None, self.store.model()))
            .map_err(|e| OpError::BadRequest(e.to_string()))?;
        let mut firmware_writes = Vec::with_capacity(nodes.len());
        for (p, n) in &nodes {
            let fw = FirmwareWrite::of(p, n);
            self.firmware.check_write(fw.package, fw.uri.as_deref())?;
            firmware_writes.push(fw);
        }
        // Check all first on a copy, so that a refused write changes nothing.
        let mut trial = self.store.clone();
        for (p, n) in &nodes {
            trial.write(p, n.clone(), true, Actor::Server)?;
        }
        self.store = trial;
        for (p, fw) in nodes.keys().zip(firmware_writes) {
            self.after_write(p, fw, actions);
        }
        Ok(response(ResponseType::Changed, Vec::new(), None))
    }

    fn write_attributes(&mut self, path: &Path, qs: &[String]) -> Result<Packet, OpError> {
        if path.is_root() {
            return Err(OpError::MethodNotAllowed("attributes on the root".into()));
        }
        if !self.store.exists(path) {
            return Err(OpError::NotFound(*path));
        }
        let a = Attributes::from_query_params(qs.iter().map(String::as_str))
            .map_err(|e| OpError::BadRequest(e.to_string()))?;
        self.attrs.write(path, &a).map_err(OpError::BadRequest)?;
        Ok(response(ResponseType::Changed, Vec::new(), None))
    }

    fn execute(
        &mut self,
        now: Instant,
        path: &Path,
        payload: &[u8],
        actions: &mut Vec<Action>,
    ) -> Result<Packet, OpError> {
        self.store.check_execute(path)?;
        let _args = parse_execute_args(payload)?;
        match (path.object_id(), path.resource_id()) {
            (Some(3), Some(4 | 5)) => actions.push(Action::Reboot),
            (Some(3), Some(12)) => {
                self.store.set_multiple(
                    &Path::resource(3, 0, 11),
                    BTreeMap::from([(0, Value::Integer(0))]),
                )?;
            }
            (Some(5), Some(2)) => self.firmware.start_update(&mut self.store, now)?,
            (Some(5), Some(10)) => self.firmware.cancel(&mut self.store)?,
            (Some(1), Some(8)) => actions.push(Action::TriggerUpdate),
            _ => {}
        }
        Ok(response(ResponseType::Changed, Vec::new(), None))
    }

    fn create(
        &mut self,
        path: &Path,
        cf: Option<u32>,
        payload: &[u8],
        actions: &mut Vec<Action>,
    ) -> Result<Packet, OpError> {
        let oid = path.object_id().ok_or(OpError::NotFound(*path))?;
        if !self.store.has_object(oid) {
            return Err(OpError::NotFound(*path));
        }
        // The payload names the new instance (`/o/i/...`) or holds bare resources.
        let (iid, inst) = match self.decode(cf, payload, path) {
            Ok(Node::Object(o)) if o.instances.len() == 1 => {
                let (i, inst) = o
                    .instances
                    .into_iter()
                    .next()
                    .ok_or_else(|| OpError::BadRequest("no instance".into()))?;
                (Some(i), inst)
            }
            Ok(Node::Object(o)) if o.instances.is_empty() => (None, Default::default()),
            Ok(_) => return Err(OpError::BadRequest("create needs one instance".into())),
            Err(first) => {
                // TLV without an instance wrapper: resources of a new instance.
                let probe = Path::instance(oid, 0);
                match self.decode(cf, payload, &probe) {
                    Ok(Node::Instance(inst)) => (None, inst),
                    _ => return Err(first),
                }
            }
        };
        let iid = self.store.create(oid, iid, inst)?;
        actions.push(Action::ObjectsChanged);
        let mut p = response(ResponseType::Created, Vec::new(), None);
        p.add_option(CoapOption::LocationPath, oid.to_string().into_bytes());
        p.add_option(CoapOption::LocationPath, iid.to_string().into_bytes());
        Ok(p)
    }

    fn discover(&self, path: &Path, qs: &[String]) -> Result<Packet, OpError> {
        if path.is_root() || path.depth() > 3 {
            return Err(OpError::MethodNotAllowed(format!("discover on {path}")));
        }
        if !self.store.exists(path) {
            return Err(OpError::NotFound(*path));
        }
        let depth = qs
            .iter()
            .find_map(|q| q.strip_prefix("depth="))
            .map(|d| d.parse::<usize>().ok().filter(|d| *d <= 3))
            .map(|d| d.ok_or_else(|| OpError::BadRequest("depth must be 0..3".into())))
            .transpose()?;
        let max_depth = match depth {
            Some(d) => path.depth() + d,
            None if path.depth() == 1 => 3,
            None => 3,
        };
        let mut entries = Vec::new();
        let attrs = |p: &Path| self.attrs.at(p).cloned().unwrap_or_default();
        let oid = path.object_id().unwrap_or(0);
        if path.depth() == 1 {
            let mut a = attrs(path);
            a.ver = self
                .store
                .model()
                .object(oid)
                .map(|d| d.version)
                .filter(|v| *v != Version::V1_0);
            entries.push(DiscoverEntry {
                path: *path,
                attributes: a,
            });
        }
        let node = self.store.read(path, Actor::Device)?;
        let instances: Vec<lwm2m_objects::Instance> = match node {
            Node::Object(o) => o.instances.into_values().collect(),
            Node::Instance(i) => vec![i],
            Node::Resource(r) => {
                let mut i = lwm2m_objects::Instance::new(path.instance_id().unwrap_or(0));
                i.resources.insert(r.id(), r);
                vec![i]
            }
            Node::ResourceInstance { .. } => Vec::new(),
        };
        for inst in instances {
            let ip = Path::instance(oid, inst.id);
            if max_depth >= 2 && path.depth() <= 2 {
                entries.push(DiscoverEntry {
                    path: ip,
                    attributes: attrs(&ip),
                });
            }
            if max_depth < 3 {
                continue;
            }
            let mut rids: Vec<u16> = inst.resources.keys().copied().collect();
            if path.depth() <= 2 {
                if let Some(def) = self.store.model().object(oid) {
                    rids.extend(
                        def.resources
                            .values()
                            .filter(|d| d.operations.executable())
                            .map(|d| d.id),
                    );
                }
            }
            rids.sort_unstable();
            rids.dedup();
            for rid in rids {
                let rp = Path::resource(oid, inst.id, rid);
                if path.depth() == 3 && rp != *path {
                    continue;
                }
                let mut a = attrs(&rp);
                if let Some(Resource::Multiple { instances, .. }) = inst.resources.get(&rid) {
                    a.dim = u16::try_from(instances.len()).ok();
                }
                entries.push(DiscoverEntry {
                    path: rp,
                    attributes: a,
                });
            }
        }
        Ok(response(
            ResponseType::Content,
            link::format_discover(&entries).into_bytes(),
            Some(ContentFormat::LinkFormat.code()),
        ))
    }

    fn current(&self, target: &Target) -> Vec<Option<Node>> {
        match target {
            Target::Single(p) => vec![self.store.read(p, Actor::Server).ok()],
            Target::Composite(ps) => ps
                .iter()
                .map(|p| self.store.read(p, Actor::Server).ok())
                .collect(),
        }
    }

    fn observe(
        &mut self,
        now: Instant,
        peer: SocketAddr,
        req: &Packet,
        target: Target,
        accept: Option<u32>,
    ) -> Result<Packet, OpError> {
        let query = Attributes::from_query_params(queries(req)?.iter().map(String::as_str))
            .map_err(|e| OpError::BadRequest(e.to_string()))?;
        let mut resp = match &target {
            Target::Single(p) => self.read(p, accept)?,
            Target::Composite(ps) => self.read_composite(ps, accept)?,
        };
        let format = uint_option(&resp, 12)?
            .and_then(|c| u16::try_from(c).ok())
            .and_then(ContentFormat::from_code)
            .unwrap_or(self.config.default_format());
        let token = req.get_token().to_vec();
        self.observations
            .retain(|o| !(o.token == token && o.peer == peer));
        if self.observations.len() >= MAX_OBSERVATIONS {
            return Err(OpError::Internal("too many observations".into()));
        }
        let last = self.current(&target);
        let seq = self.next_seq();
        resp.set_observe_value(seq);
        self.observations.push(Observation {
            token,
            peer,
            target,
            format,
            query,
            last_sent: now,
            last,
            seq,
        });
        Ok(resp)
    }

    /// Ends the observation with this token (Observe=1, or an RST to a notification).
    pub fn cancel_observation(&mut self, peer: SocketAddr, token: &[u8]) -> bool {
        let before = self.observations.len();
        self.observations
            .retain(|o| !(o.token == token && (o.peer == peer || peer.port() == 0)));
        before != self.observations.len()
    }

    /// Drops every observation (a new registration starts afresh).
    pub fn clear_observations(&mut self) {
        self.observations.clear();
    }

    /// Notifications that are due now.
    pub fn poll_notifications(&mut self, now: Instant) -> Vec<Notification> {
        let defaults = self.defaults();
        let mut out = Vec::new();
        let mut ended = Vec::new();
        let mut observations = std::mem::take(&mut self.observations);
        for (idx, o) in observations.iter_mut().enumerate() {
            let current = self.current(&o.target);
            if let Target::Single(p) = &o.target {
                if current.first().is_some_and(|c| c.is_none()) {
                    let e = OpError::NotFound(*p);
                    out.push(Notification {
                        peer: o.peer,
                        token: o.token.clone(),
                        packet: error_response(&e),
                        confirmable: true,
                        last: true,
                    });
                    ended.push(idx);
                    continue;
                }
            }
            let e = o.effective(&self.attrs, defaults);
            if !o.due(now, &current, &e) {
                continue;
            }
            let encoded = match &o.target {
                Target::Single(p) => current
                    .first()
                    .and_then(|c| c.as_ref())
                    .ok_or(OpError::NotFound(*p))
                    .and_then(|n| {
                        self.codecs
                            .encode(o.format, p, n, self.store.model())
                            .map_err(|e| OpError::Internal(e.to_string()))
                    }),
                Target::Composite(ps) => {
                    let nodes = self.read_nodes(ps);
                    self.codecs
                        .get(o.format.code())
                        .map_err(|e| OpError::Internal(e.to_string()))
                        .and_then(|c| {
                            c.encode_nodes(&nodes, self.store.model())
                                .map_err(|e| OpError::Internal(e.to_string()))
                        })
                }
            };
            let Ok(bytes) = encoded else {
                continue;
            };
            self.seq = (self.seq + 1) & 0x00FF_FFFF;
            o.seq = self.seq;
            o.last = current;
            o.last_sent = now;
            let mut packet = response(ResponseType::Content, bytes, Some(o.format.code()));
            packet.set_observe_value(o.seq);
            out.push(Notification {
                peer: o.peer,
                token: o.token.clone(),
                packet,
                confirmable: e.con,
                last: false,
            });
        }
        for idx in ended.into_iter().rev() {
            observations.remove(idx);
        }
        self.observations = observations;
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn core() -> Core {
        let mut c = Config::new("127.0.0.1:5683".parse().unwrap(), "unit");
        c.extra_objects = vec![9];
        Core::new(c).expect("initial values fit the model")
    }

    fn req(method: RequestType, path: &str) -> Packet {
        let mut p = Packet::new();
        p.header.code = MessageClass::Request(method);
        for s in path.split('/').filter(|s| !s.is_empty()) {
            p.add_option(CoapOption::UriPath, s.as_bytes().to_vec());
        }
        p
    }

    fn code(p: &Packet) -> ResponseType {
        match p.header.code {
            MessageClass::Response(r) => r,
            _ => ResponseType::UnKnown,
        }
    }

    const PEER: &str = "127.0.0.1:5683";

    #[test]
    fn execute_arguments_follow_the_grammar() {
        assert_eq!(parse_execute_args(b"").unwrap(), vec![]);
        assert_eq!(parse_execute_args(b"5").unwrap(), vec![(5, None)]);
        assert_eq!(
            parse_execute_args(b"2='10.3',7").unwrap(),
            vec![(2, Some("10.3".into())), (7, None)]
        );
        for bad in [
            &b"a"[..],
            b"12",
            b"1=",
            b"1='x",
            b"1='a\\b'",
            b"1,",
            b",1",
            b"1='x'y",
            b"\xff",
        ] {
            assert!(parse_execute_args(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn active_cancel_ends_the_observation() {
        let mut c = core();
        let now = Instant::now();
        let peer = PEER.parse().unwrap();
        let mut o = req(RequestType::Get, "/3/0/9");
        o.set_token(vec![1, 2, 3]);
        o.set_observe_value(0);
        let (resp, op, _) = c.handle(now, peer, &o);
        assert_eq!(
            (code(&resp), op),
            (ResponseType::Content, Operation::Observe)
        );
        assert_eq!(c.observations.len(), 1);
        let mut cancel = o.clone();
        cancel.set_observe_value(1);
        let (resp, op, _) = c.handle(now, peer, &cancel);
        assert_eq!(
            (code(&resp), op),
            (ResponseType::Content, Operation::CancelObserve)
        );
        assert!(c.observations.is_empty());
    }

    #[test]
    fn deleted_target_ends_observation_with_4_04() {
        let mut c = core();
        let now = Instant::now();
        let peer = PEER.parse().unwrap();
        let mut create = req(RequestType::Post, "/9");
        create.add_option(CoapOption::ContentFormat, encode_uint(110));
        create.payload = br#"[{"bn":"/9/0/","n":"8","vb":false}]"#.to_vec();
        assert_eq!(code(&c.handle(now, peer, &create).0), ResponseType::Created);
        let mut o = req(RequestType::Get, "/9/0");
        o.set_token(vec![9]);
        o.set_observe_value(0);
        assert_eq!(code(&c.handle(now, peer, &o).0), ResponseType::Content);
        let del = req(RequestType::Delete, "/9/0");
        assert_eq!(code(&c.handle(now, peer, &del).0), ResponseType::Deleted);
        let notes = c.poll_notifications(now + Duration::from_millis(10));
        assert_eq!(notes.len(), 1);
        assert!(notes[0].last);
        assert_eq!(code(&notes[0].packet), ResponseType::NotFound);
        assert!(c.observations.is_empty());
    }

    #[test]
    fn writes_on_security_and_object_level_are_refused() {
        let mut c = core();
        let now = Instant::now();
        let peer = PEER.parse().unwrap();
        let mut w = req(RequestType::Put, "/0/0/0");
        w.add_option(CoapOption::ContentFormat, encode_uint(0));
        w.payload = b"coap://evil".to_vec();
        assert_eq!(code(&c.handle(now, peer, &w).0), ResponseType::Unauthorized);
        let mut w = req(RequestType::Put, "/3");
        w.add_option(CoapOption::ContentFormat, encode_uint(110));
        w.payload = b"[]".to_vec();
        assert_eq!(
            code(&c.handle(now, peer, &w).0),
            ResponseType::MethodNotAllowed
        );
        // A non-numeric segment names nothing.
        let r = req(RequestType::Get, "/3/zero");
        assert_eq!(code(&c.handle(now, peer, &r).0), ResponseType::NotFound);
    }
}
