//! What the store keeps, and the binary form it keeps it in.
//!
//! Each record is one CBOR array whose first element is the record format version, followed
//! by the fields in a fixed order. A reader of version 1 ignores trailing elements it does not
//! know, so a later version may append fields without a migration; changing the meaning or
//! order of an existing field needs a new version number. CBOR (via `minicbor`, the crate the
//! codecs already use) rather than a Rust-specific serializer so the file stays readable by
//! any tool and does not change when a Rust type is refactored.

use std::net::SocketAddr;

use minicbor::{data::Type, Decoder, Encoder};

/// Current record format version written by this build.
pub const RECORD_VERSION: u32 = 1;

/// A device registration as it must survive a restart.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredRegistration {
    /// The registration id, the `{id}` of the `/rd/{id}` location handed to the device.
    pub id: String,
    pub endpoint: String,
    pub lifetime_s: u32,
    pub lwm2m_version: String,
    pub binding: String,
    pub queue_mode: bool,
    pub sms: Option<String>,
    pub root_path: String,
    /// The registration payload exactly as received, so that re-parsing after a restart
    /// yields what the live server saw.
    pub objects_link_format: String,
    pub peer: SocketAddr,
    pub registered_at_unix_ms: u64,
    pub last_update_unix_ms: u64,
    /// Made over DTLS: requests go to the device only through its DTLS session. False in
    /// records written before this field existed.
    pub secure: bool,
}

impl StoredRegistration {
    /// The instant (Unix ms) from which the registration is expired: its lifetime counts from
    /// the last Register or Update.
    pub fn expires_at_unix_ms(&self) -> u64 {
        self.last_update_unix_ms
            .saturating_add(u64::from(self.lifetime_s).saturating_mul(1000))
    }

    /// Expired once its lifetime has fully elapsed, i.e. at `expires_at` and later.
    pub fn is_expired(&self, now_unix_ms: u64) -> bool {
        self.expires_at_unix_ms() <= now_unix_ms
    }
}

/// An Update that changed a registration's time and perhaps its address, nothing else:
/// the common Update, which the store may keep apart from the record (see [`RedbStore`]'s
/// refresh log).
///
/// [`RedbStore`]: super::RedbStore
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredRefresh {
    pub id: String,
    pub last_update_unix_ms: u64,
    pub peer: SocketAddr,
}

impl StoredRegistration {
    /// Takes a refresh's time and address unless the record is newer (a full write after
    /// the refresh). At the same millisecond the refresh wins: both came from the device
    /// within one, so its address is the same either way.
    pub fn apply(&mut self, r: &StoredRefresh) {
        if r.last_update_unix_ms >= self.last_update_unix_ms {
            self.last_update_unix_ms = r.last_update_unix_ms;
            self.peer = r.peer;
        }
    }
}

/// An observation relation, kept so notifications arriving after a restart still match.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredObservation {
    /// The CoAP token (1..=8 bytes) the notifications carry.
    pub token: Vec<u8>,
    pub registration_id: String,
    pub endpoint: String,
    /// Observed paths in text form (`/3/0/1`); more than one only when `composite`.
    pub paths: Vec<String>,
    pub composite: bool,
    pub content_format: Option<u16>,
    pub created_at_unix_ms: u64,
    /// Observe option value of the newest notification accepted, for reordering checks.
    pub last_sequence: Option<u32>,
    /// The LwM2M paths observed (`/3/0/9`; several for a composite observation, whose
    /// request path is the root). Empty in records written before this field existed:
    /// readers fall back to `paths`.
    pub observed: Vec<String>,
}

/// A request waiting for a queue-mode device to wake up.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QueuedRequest {
    pub endpoint: String,
    /// Assigned by the store on enqueue; orders the requests of one endpoint.
    pub seq: u64,
    /// CoAP method code (1 GET, 2 POST, 3 PUT, 4 DELETE, 5 FETCH, 6 PATCH, 7 iPATCH).
    pub method: u8,
    pub uri_path: String,
    pub uri_query: Vec<String>,
    pub content_format: Option<u16>,
    pub accept: Option<u16>,
    pub observe: Option<u32>,
    pub payload: Vec<u8>,
    pub expires_at_unix_ms: u64,
    /// What the request is, for whoever waits for its result after a restart; `None` in
    /// records written before this field existed.
    pub tracking: Option<QueuedTracking>,
}

/// A device's DTLS credentials, as the operator set them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredSecurity {
    pub endpoint: String,
    /// The PSK identity the device presents (opaque bytes; most devices use text).
    pub psk_identity: Option<Vec<u8>>,
    pub psk_key: Option<Vec<u8>>,
    /// The device may authenticate with a certificate (whose CN is the endpoint) that
    /// chains to the server's trust store.
    pub x509: bool,
    pub updated_at_unix_ms: u64,
}

/// The description of a queued request that outlives its caller.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QueuedTracking {
    /// The id the API handed out (`GET /api/requests/{id}`), if any.
    pub request_id: Option<String>,
    /// The LwM2M operation, e.g. `Read`.
    pub operation: String,
    /// The LwM2M paths targeted (`/3/0/1`).
    pub paths: Vec<String>,
    pub created_at_unix_ms: u64,
}

impl QueuedRequest {
    pub fn is_expired(&self, now_unix_ms: u64) -> bool {
        self.expires_at_unix_ms <= now_unix_ms
    }
}

/// Why a stored record could not be decoded; the store wraps it with table and key.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RecordError {
    #[error("malformed CBOR: {0}")]
    Cbor(String),
    #[error("unsupported record version {0}")]
    Version(u32),
    #[error("record has {found} fields, at least {expected} expected")]
    TooShort { expected: u64, found: u64 },
    #[error("record is not a definite-length array")]
    NotAnArray,
    #[error("field {field}: {reason}")]
    Field { field: &'static str, reason: String },
}

impl From<minicbor::decode::Error> for RecordError {
    fn from(e: minicbor::decode::Error) -> Self {
        RecordError::Cbor(e.to_string())
    }
}

/// Writing into a `Vec` cannot fail; this keeps the infallible case out of callers' types.
fn finish(r: Result<(), minicbor::encode::Error<core::convert::Infallible>>) {
    // The writer is a Vec<u8>, whose write error type is Infallible.
    if let Err(e) = r {
        match e.into_write() {
            Some(never) => match never {},
            None => debug_assert!(false, "encoding into Vec failed"),
        }
    }
}

type EncResult = Result<(), minicbor::encode::Error<core::convert::Infallible>>;

fn enc_opt_u16(e: &mut Encoder<&mut Vec<u8>>, v: Option<u16>) -> EncResult {
    match v {
        Some(v) => e.u16(v)?,
        None => e.null()?,
    };
    Ok(())
}

fn enc_opt_u32(e: &mut Encoder<&mut Vec<u8>>, v: Option<u32>) -> EncResult {
    match v {
        Some(v) => e.u32(v)?,
        None => e.null()?,
    };
    Ok(())
}

fn enc_strs(e: &mut Encoder<&mut Vec<u8>>, v: &[String]) -> EncResult {
    e.array(v.len() as u64)?;
    for s in v {
        e.str(s)?;
    }
    Ok(())
}

/// Opens a record: checks the array header and version, returns the element count.
fn open_record(d: &mut Decoder<'_>, expected: u64) -> Result<u64, RecordError> {
    let len = d.array()?.ok_or(RecordError::NotAnArray)?;
    if len < 1 {
        return Err(RecordError::TooShort {
            expected,
            found: len,
        });
    }
    let version = d.u32()?;
    if version != RECORD_VERSION {
        return Err(RecordError::Version(version));
    }
    if len < expected {
        return Err(RecordError::TooShort {
            expected,
            found: len,
        });
    }
    Ok(len)
}

/// Skips fields appended by newer writers, then insists nothing follows the record.
fn close_record(d: &mut Decoder<'_>, len: u64, expected: u64) -> Result<(), RecordError> {
    for _ in expected..len {
        d.skip()?;
    }
    if d.position() != d.input().len() {
        return Err(RecordError::Cbor("trailing bytes after record".into()));
    }
    Ok(())
}

fn field<T>(name: &'static str, r: Result<T, minicbor::decode::Error>) -> Result<T, RecordError> {
    r.map_err(|e| RecordError::Field {
        field: name,
        reason: e.to_string(),
    })
}

fn dec_str(d: &mut Decoder<'_>, name: &'static str) -> Result<String, RecordError> {
    field(name, d.str()).map(str::to_owned)
}

fn dec_opt<T>(
    d: &mut Decoder<'_>,
    name: &'static str,
    f: impl FnOnce(&mut Decoder<'_>) -> Result<T, minicbor::decode::Error>,
) -> Result<Option<T>, RecordError> {
    if field(name, d.datatype())? == Type::Null {
        field(name, d.null())?;
        Ok(None)
    } else {
        field(name, f(d)).map(Some)
    }
}

fn dec_strs(d: &mut Decoder<'_>, name: &'static str) -> Result<Vec<String>, RecordError> {
    let n = field(name, d.array())?.ok_or(RecordError::Field {
        field: name,
        reason: "indefinite-length array".into(),
    })?;
    // The count comes from the file; never preallocate from it.
    let mut out = Vec::new();
    for _ in 0..n {
        out.push(dec_str(d, name)?);
    }
    Ok(out)
}

/// The peer address as `[ip bytes, port]` (IPv4, 4 bytes) or `[ip bytes, port, flowinfo,
/// scope id]` (IPv6, 16 bytes): the text form would lose the flow label, and a link-local
/// peer needs its scope id to be reachable again.
struct PeerAddr(SocketAddr);

impl<C> minicbor::Encode<C> for PeerAddr {
    fn encode<W: minicbor::encode::Write>(
        &self,
        e: &mut Encoder<W>,
        _: &mut C,
    ) -> Result<(), minicbor::encode::Error<W::Error>> {
        match self.0 {
            SocketAddr::V4(a) => {
                e.array(2)?.bytes(&a.ip().octets())?.u16(a.port())?;
            }
            SocketAddr::V6(a) => {
                e.array(4)?
                    .bytes(&a.ip().octets())?
                    .u16(a.port())?
                    .u32(a.flowinfo())?
                    .u32(a.scope_id())?;
            }
        }
        Ok(())
    }
}

fn dec_peer(d: &mut Decoder<'_>) -> Result<SocketAddr, RecordError> {
    let bad = |reason: String| RecordError::Field {
        field: "peer",
        reason,
    };
    let len = field("peer", d.array())?;
    let ip = field("peer", d.bytes())?;
    let port = field("peer", d.u16())?;
    match (len, ip.len()) {
        (Some(2), 4) => {
            let mut o = [0u8; 4];
            o.copy_from_slice(ip);
            Ok(SocketAddr::from((o, port)))
        }
        (Some(4), 16) => {
            let mut o = [0u8; 16];
            o.copy_from_slice(ip);
            let flowinfo = field("peer", d.u32())?;
            let scope_id = field("peer", d.u32())?;
            Ok(SocketAddr::V6(std::net::SocketAddrV6::new(
                o.into(),
                port,
                flowinfo,
                scope_id,
            )))
        }
        (len, n) => Err(bad(format!(
            "{n}-byte address in an array of {len:?} elements"
        ))),
    }
}

/// Fields written now; records of earlier writers have at least `_MIN`.
const REGISTRATION_FIELDS: u64 = 14;
const REGISTRATION_FIELDS_MIN: u64 = 13;

pub fn encode_registration(r: &StoredRegistration) -> Vec<u8> {
    let mut buf = Vec::new();
    let mut e = Encoder::new(&mut buf);
    let res: EncResult = (|| {
        e.array(REGISTRATION_FIELDS)?
            .u32(RECORD_VERSION)?
            .str(&r.id)?
            .str(&r.endpoint)?
            .u32(r.lifetime_s)?
            .str(&r.lwm2m_version)?
            .str(&r.binding)?
            .bool(r.queue_mode)?;
        match &r.sms {
            Some(s) => e.str(s)?,
            None => e.null()?,
        };
        e.str(&r.root_path)?
            .str(&r.objects_link_format)?
            .encode_with(PeerAddr(r.peer), &mut ())?
            .u64(r.registered_at_unix_ms)?
            .u64(r.last_update_unix_ms)?
            .bool(r.secure)?;
        Ok(())
    })();
    finish(res);
    buf
}

pub fn decode_registration(bytes: &[u8]) -> Result<StoredRegistration, RecordError> {
    let mut d = Decoder::new(bytes);
    let len = open_record(&mut d, REGISTRATION_FIELDS_MIN)?;
    let id = dec_str(&mut d, "id")?;
    let endpoint = dec_str(&mut d, "endpoint")?;
    let lifetime_s = field("lifetime_s", d.u32())?;
    let lwm2m_version = dec_str(&mut d, "lwm2m_version")?;
    let binding = dec_str(&mut d, "binding")?;
    let queue_mode = field("queue_mode", d.bool())?;
    let sms = dec_opt(&mut d, "sms", |d| d.str().map(str::to_owned))?;
    let root_path = dec_str(&mut d, "root_path")?;
    let objects_link_format = dec_str(&mut d, "objects_link_format")?;
    let peer = dec_peer(&mut d)?;
    let registered_at_unix_ms = field("registered_at_unix_ms", d.u64())?;
    let last_update_unix_ms = field("last_update_unix_ms", d.u64())?;
    let secure = if len >= REGISTRATION_FIELDS {
        field("secure", d.bool())?
    } else {
        false
    };
    close_record(&mut d, len, REGISTRATION_FIELDS.min(len))?;
    Ok(StoredRegistration {
        id,
        endpoint,
        lifetime_s,
        lwm2m_version,
        binding,
        queue_mode,
        sms,
        root_path,
        objects_link_format,
        peer,
        registered_at_unix_ms,
        last_update_unix_ms,
        secure,
    })
}

const REFRESH_FIELDS: u64 = 4;

pub fn encode_refresh(r: &StoredRefresh) -> Vec<u8> {
    let mut buf = Vec::with_capacity(48);
    let mut e = Encoder::new(&mut buf);
    let res: EncResult = (|| {
        e.array(REFRESH_FIELDS)?
            .u32(RECORD_VERSION)?
            .str(&r.id)?
            .u64(r.last_update_unix_ms)?
            .encode_with(PeerAddr(r.peer), &mut ())?;
        Ok(())
    })();
    finish(res);
    buf
}

pub fn decode_refresh(bytes: &[u8]) -> Result<StoredRefresh, RecordError> {
    let mut d = Decoder::new(bytes);
    let len = open_record(&mut d, REFRESH_FIELDS)?;
    let id = dec_str(&mut d, "id")?;
    let last_update_unix_ms = field("last_update_unix_ms", d.u64())?;
    let peer = dec_peer(&mut d)?;
    close_record(&mut d, len, REFRESH_FIELDS)?;
    Ok(StoredRefresh {
        id,
        last_update_unix_ms,
        peer,
    })
}

/// Fields written now; records of earlier writers have at least `_MIN`.
const OBSERVATION_FIELDS: u64 = 10;
const OBSERVATION_FIELDS_MIN: u64 = 9;

pub fn encode_observation(o: &StoredObservation) -> Vec<u8> {
    let mut buf = Vec::new();
    let mut e = Encoder::new(&mut buf);
    let res: EncResult = (|| {
        e.array(OBSERVATION_FIELDS)?
            .u32(RECORD_VERSION)?
            .bytes(&o.token)?
            .str(&o.registration_id)?
            .str(&o.endpoint)?;
        enc_strs(&mut e, &o.paths)?;
        e.bool(o.composite)?;
        enc_opt_u16(&mut e, o.content_format)?;
        e.u64(o.created_at_unix_ms)?;
        enc_opt_u32(&mut e, o.last_sequence)?;
        enc_strs(&mut e, &o.observed)?;
        Ok(())
    })();
    finish(res);
    buf
}

pub fn decode_observation(bytes: &[u8]) -> Result<StoredObservation, RecordError> {
    let mut d = Decoder::new(bytes);
    let len = open_record(&mut d, OBSERVATION_FIELDS_MIN)?;
    let token = field("token", d.bytes())?.to_vec();
    let registration_id = dec_str(&mut d, "registration_id")?;
    let endpoint = dec_str(&mut d, "endpoint")?;
    let paths = dec_strs(&mut d, "paths")?;
    let composite = field("composite", d.bool())?;
    let content_format = dec_opt(&mut d, "content_format", |d| d.u16())?;
    let created_at_unix_ms = field("created_at_unix_ms", d.u64())?;
    let last_sequence = dec_opt(&mut d, "last_sequence", |d| d.u32())?;
    let observed = if len >= OBSERVATION_FIELDS {
        dec_strs(&mut d, "observed")?
    } else {
        Vec::new()
    };
    close_record(&mut d, len, OBSERVATION_FIELDS.min(len))?;
    Ok(StoredObservation {
        token,
        registration_id,
        endpoint,
        paths,
        composite,
        content_format,
        created_at_unix_ms,
        last_sequence,
        observed,
    })
}

/// Fields written now; records of earlier writers have at least `_MIN`.
const QUEUED_FIELDS: u64 = 12;
const QUEUED_FIELDS_MIN: u64 = 11;
const TRACKING_FIELDS: u64 = 4;

pub fn encode_queued(q: &QueuedRequest) -> Vec<u8> {
    let mut buf = Vec::new();
    let mut e = Encoder::new(&mut buf);
    let res: EncResult = (|| {
        e.array(QUEUED_FIELDS)?
            .u32(RECORD_VERSION)?
            .str(&q.endpoint)?
            .u64(q.seq)?
            .u8(q.method)?
            .str(&q.uri_path)?;
        enc_strs(&mut e, &q.uri_query)?;
        enc_opt_u16(&mut e, q.content_format)?;
        enc_opt_u16(&mut e, q.accept)?;
        enc_opt_u32(&mut e, q.observe)?;
        e.bytes(&q.payload)?.u64(q.expires_at_unix_ms)?;
        match &q.tracking {
            None => {
                e.null()?;
            }
            Some(t) => {
                e.array(TRACKING_FIELDS)?;
                match &t.request_id {
                    Some(id) => e.str(id)?,
                    None => e.null()?,
                };
                e.str(&t.operation)?;
                enc_strs(&mut e, &t.paths)?;
                e.u64(t.created_at_unix_ms)?;
            }
        }
        Ok(())
    })();
    finish(res);
    buf
}

pub fn decode_queued(bytes: &[u8]) -> Result<QueuedRequest, RecordError> {
    let mut d = Decoder::new(bytes);
    let len = open_record(&mut d, QUEUED_FIELDS_MIN)?;
    let endpoint = dec_str(&mut d, "endpoint")?;
    let seq = field("seq", d.u64())?;
    let method = field("method", d.u8())?;
    let uri_path = dec_str(&mut d, "uri_path")?;
    let uri_query = dec_strs(&mut d, "uri_query")?;
    let content_format = dec_opt(&mut d, "content_format", |d| d.u16())?;
    let accept = dec_opt(&mut d, "accept", |d| d.u16())?;
    let observe = dec_opt(&mut d, "observe", |d| d.u32())?;
    let payload = field("payload", d.bytes())?.to_vec();
    let expires_at_unix_ms = field("expires_at_unix_ms", d.u64())?;
    let tracking = if len >= QUEUED_FIELDS {
        dec_tracking(&mut d)?
    } else {
        None
    };
    close_record(&mut d, len, QUEUED_FIELDS.min(len))?;
    Ok(QueuedRequest {
        endpoint,
        seq,
        method,
        uri_path,
        uri_query,
        content_format,
        accept,
        observe,
        payload,
        expires_at_unix_ms,
        tracking,
    })
}

const SECURITY_FIELDS: u64 = 6;

pub fn encode_security(s: &StoredSecurity) -> Vec<u8> {
    let mut buf = Vec::new();
    let mut e = Encoder::new(&mut buf);
    let res: EncResult = (|| {
        e.array(SECURITY_FIELDS)?
            .u32(RECORD_VERSION)?
            .str(&s.endpoint)?;
        for b in [&s.psk_identity, &s.psk_key] {
            match b {
                Some(b) => e.bytes(b)?,
                None => e.null()?,
            };
        }
        e.u64(s.updated_at_unix_ms)?.bool(s.x509)?;
        Ok(())
    })();
    finish(res);
    buf
}

pub fn decode_security(bytes: &[u8]) -> Result<StoredSecurity, RecordError> {
    let mut d = Decoder::new(bytes);
    let len = open_record(&mut d, SECURITY_FIELDS)?;
    let endpoint = dec_str(&mut d, "endpoint")?;
    let psk_identity = dec_opt(&mut d, "psk_identity", |d| d.bytes().map(<[u8]>::to_vec))?;
    let psk_key = dec_opt(&mut d, "psk_key", |d| d.bytes().map(<[u8]>::to_vec))?;
    let updated_at_unix_ms = field("updated_at_unix_ms", d.u64())?;
    let x509 = field("x509", d.bool())?;
    close_record(&mut d, len, SECURITY_FIELDS)?;
    Ok(StoredSecurity {
        endpoint,
        psk_identity,
        psk_key,
        x509,
        updated_at_unix_ms,
    })
}

fn dec_tracking(d: &mut Decoder<'_>) -> Result<Option<QueuedTracking>, RecordError> {
    if field("tracking", d.datatype())? == Type::Null {
        field("tracking", d.null())?;
        return Ok(None);
    }
    if field("tracking", d.array())? != Some(TRACKING_FIELDS) {
        return Err(RecordError::Field {
            field: "tracking",
            reason: format!("not an array of {TRACKING_FIELDS}"),
        });
    }
    let request_id = dec_opt(d, "request_id", |d| d.str().map(str::to_owned))?;
    let operation = dec_str(d, "operation")?;
    let paths = dec_strs(d, "tracked_paths")?;
    let created_at_unix_ms = field("created_at_unix_ms", d.u64())?;
    Ok(Some(QueuedTracking {
        request_id,
        operation,
        paths,
        created_at_unix_ms,
    }))
}

#[cfg(test)]
pub(crate) mod samples {
    use super::*;

    pub fn registration(id: &str, endpoint: &str) -> StoredRegistration {
        StoredRegistration {
            id: id.into(),
            endpoint: endpoint.into(),
            lifetime_s: 86_400,
            lwm2m_version: "1.1".into(),
            binding: "UQ".into(),
            queue_mode: true,
            sms: Some("+15551234".into()),
            root_path: "/".into(),
            objects_link_format: "</>;rt=\"oma.lwm2m\";ct=11543,</1/0>,</3/0>".into(),
            peer: "[2001:db8::1]:56830".parse().expect("literal address"),
            registered_at_unix_ms: 1_700_000_000_000,
            last_update_unix_ms: 1_700_000_000_000,
            secure: true,
        }
    }

    pub fn observation(token: &[u8], registration_id: &str, endpoint: &str) -> StoredObservation {
        StoredObservation {
            token: token.to_vec(),
            registration_id: registration_id.into(),
            endpoint: endpoint.into(),
            paths: vec!["/".into()],
            composite: true,
            content_format: Some(112),
            created_at_unix_ms: 1_700_000_000_500,
            last_sequence: Some(7),
            observed: vec!["/3/0/9".into(), "/6/0".into()],
        }
    }

    pub fn security(endpoint: &str, identity: &str) -> StoredSecurity {
        StoredSecurity {
            endpoint: endpoint.into(),
            psk_identity: Some(identity.as_bytes().to_vec()),
            psk_key: Some((0u8..16).collect()),
            x509: false,
            updated_at_unix_ms: 1_700_000_000_000,
        }
    }

    pub fn queued(endpoint: &str, expires_at_unix_ms: u64) -> QueuedRequest {
        QueuedRequest {
            endpoint: endpoint.into(),
            seq: 0,
            method: 3,
            uri_path: "/5/0/1".into(),
            uri_query: vec!["pmin=10".into()],
            content_format: Some(0),
            accept: None,
            observe: None,
            payload: b"coap://fw.example/pkg".to_vec(),
            expires_at_unix_ms,
            tracking: Some(QueuedTracking {
                request_id: Some("0123456789abcdef01234567".into()),
                operation: "Write".into(),
                paths: vec!["/5/0/1".into()],
                created_at_unix_ms: 1_700_000_000_000,
            }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::samples::*;
    use super::*;

    #[test]
    fn registration_round_trips_with_and_without_options() {
        let mut r = registration("r1", "ep1");
        assert_eq!(decode_registration(&encode_registration(&r)), Ok(r.clone()));
        r.sms = None;
        r.peer = "192.0.2.7:5683".parse().expect("literal address");
        assert_eq!(decode_registration(&encode_registration(&r)), Ok(r));
    }

    #[test]
    fn observation_and_queued_round_trip() {
        let mut o = observation(&[1, 2, 3, 4, 5, 6, 7, 8], "r1", "ep1");
        assert_eq!(decode_observation(&encode_observation(&o)), Ok(o.clone()));
        o.content_format = None;
        o.last_sequence = None;
        o.paths.clear();
        assert_eq!(decode_observation(&encode_observation(&o)), Ok(o));
        let mut q = queued("ep1", 99);
        q.seq = u64::MAX;
        q.observe = Some(0);
        q.accept = Some(11542);
        assert_eq!(decode_queued(&encode_queued(&q)), Ok(q));
    }

    #[test]
    fn refresh_round_trips_and_applies_only_when_not_older() {
        let r = StoredRefresh {
            id: "r1".into(),
            last_update_unix_ms: 7_000,
            peer: "[2001:db8::1]:40000".parse().expect("literal address"),
        };
        let bytes = encode_refresh(&r);
        assert_eq!(decode_refresh(&bytes), Ok(r.clone()));
        for cut in 0..bytes.len() {
            assert!(decode_refresh(&bytes[..cut]).is_err(), "cut at {cut}");
        }
        let mut reg = registration("r1", "ep1");
        reg.last_update_unix_ms = 5_000;
        reg.apply(&r);
        assert_eq!((reg.last_update_unix_ms, reg.peer), (7_000, r.peer));
        let older = StoredRefresh {
            last_update_unix_ms: 6_000,
            peer: "192.0.2.9:1".parse().expect("literal address"),
            ..r.clone()
        };
        reg.apply(&older);
        assert_eq!((reg.last_update_unix_ms, reg.peer), (7_000, r.peer));
    }

    #[test]
    fn newer_writer_trailing_fields_are_ignored() {
        let o = observation(&[9], "r", "e");
        let mut bytes = encode_observation(&o);
        bytes[0] = 0x80 | (OBSERVATION_FIELDS as u8 + 1); // one more element
        bytes.push(0x18);
        bytes.push(42); // unsigned(42)
        assert_eq!(decode_observation(&bytes), Ok(o));
    }

    #[test]
    fn bad_records_are_errors_not_panics() {
        let good = encode_queued(&queued("ep", 1));
        assert!(decode_queued(&[]).is_err());
        assert!(matches!(decode_queued(&[0xa0]), Err(RecordError::Cbor(_))));
        let mut v2 = good.clone();
        v2[1] = 0x02;
        assert_eq!(decode_queued(&v2), Err(RecordError::Version(2)));
        // every truncation fails cleanly
        for cut in 0..good.len() {
            assert!(decode_queued(&good[..cut]).is_err(), "cut at {cut}");
        }
        let mut trailing = good.clone();
        trailing.push(0);
        assert!(decode_queued(&trailing).is_err());
        let mut short = encode_registration(&registration("r", "e"));
        short[0] = 0x83;
        assert!(matches!(
            decode_registration(&short),
            Err(RecordError::TooShort { .. })
        ));
        // an IPv4 address with IPv6 trailer fields: [h'c0000207', 5683, 0, 0]
        let mut r = registration("r", "e");
        r.peer = "192.0.2.7:5683".parse().expect("literal address");
        let mut bytes = encode_registration(&r);
        let v4 = [0x82, 0x44, 192, 0, 2, 7, 0x19, 0x16, 0x33];
        let at = bytes
            .windows(v4.len())
            .position(|w| w == v4)
            .expect("peer encoding present");
        bytes.splice(
            at..at + v4.len(),
            [0x84, 0x44, 192, 0, 2, 7, 0x19, 0x16, 0x33, 0, 0],
        );
        assert!(matches!(
            decode_registration(&bytes),
            Err(RecordError::Field { field: "peer", .. })
        ));
    }
}

#[cfg(test)]
mod properties {
    use super::*;
    use proptest::prelude::*;

    fn opt<T: std::fmt::Debug + Clone>(
        s: impl Strategy<Value = T>,
    ) -> impl Strategy<Value = Option<T>> {
        proptest::option::of(s)
    }

    fn any_registration() -> impl Strategy<Value = StoredRegistration> {
        (
            (
                ".{0,12}",
                ".{0,12}",
                any::<u32>(),
                ".{0,4}",
                "[UQST]{0,3}",
                any::<bool>(),
            ),
            (
                opt(".{0,8}"),
                ".{0,6}",
                ".{0,40}",
                any::<SocketAddr>(),
                any::<u64>(),
                any::<u64>(),
                any::<bool>(),
            ),
        )
            .prop_map(
                |(
                    (id, endpoint, lifetime_s, lwm2m_version, binding, queue_mode),
                    (sms, root_path, objects_link_format, peer, registered, updated, secure),
                )| StoredRegistration {
                    id,
                    endpoint,
                    lifetime_s,
                    lwm2m_version,
                    binding,
                    queue_mode,
                    sms,
                    root_path,
                    objects_link_format,
                    peer,
                    registered_at_unix_ms: registered,
                    last_update_unix_ms: updated,
                    secure,
                },
            )
    }

    fn any_observation() -> impl Strategy<Value = StoredObservation> {
        (
            proptest::collection::vec(any::<u8>(), 1..=8),
            ".{0,8}",
            ".{0,8}",
            proptest::collection::vec("/[0-9/]{0,10}", 0..4),
            any::<bool>(),
            opt(any::<u16>()),
            any::<u64>(),
            opt(any::<u32>()),
            proptest::collection::vec("/[0-9/]{0,10}", 0..4),
        )
            .prop_map(
                |(
                    token,
                    registration_id,
                    endpoint,
                    paths,
                    composite,
                    cf,
                    created,
                    seq,
                    observed,
                )| {
                    StoredObservation {
                        token,
                        registration_id,
                        endpoint,
                        paths,
                        composite,
                        content_format: cf,
                        created_at_unix_ms: created,
                        last_sequence: seq,
                        observed,
                    }
                },
            )
    }

    fn any_queued() -> impl Strategy<Value = QueuedRequest> {
        (
            (".{0,8}", any::<u64>(), any::<u8>(), ".{0,10}"),
            proptest::collection::vec(".{0,6}", 0..3),
            (opt(any::<u16>()), opt(any::<u16>()), opt(any::<u32>())),
            proptest::collection::vec(any::<u8>(), 0..64),
            any::<u64>(),
            opt((
                opt(".{0,8}"),
                ".{0,8}",
                proptest::collection::vec("/[0-9/]{0,10}", 0..3),
                any::<u64>(),
            )),
        )
            .prop_map(
                |(
                    (endpoint, seq, method, uri_path),
                    uri_query,
                    (cf, accept, observe),
                    payload,
                    exp,
                    tracking,
                )| {
                    QueuedRequest {
                        endpoint,
                        seq,
                        method,
                        uri_path,
                        uri_query,
                        content_format: cf,
                        accept,
                        observe,
                        payload,
                        expires_at_unix_ms: exp,
                        tracking: tracking.map(|(request_id, operation, paths, created)| {
                            QueuedTracking {
                                request_id,
                                operation,
                                paths,
                                created_at_unix_ms: created,
                            }
                        }),
                    }
                },
            )
    }

    proptest! {
        #[test]
        fn registrations_round_trip(r in any_registration()) {
            prop_assert_eq!(decode_registration(&encode_registration(&r)), Ok(r));
        }

        #[test]
        fn observations_round_trip(o in any_observation()) {
            prop_assert_eq!(decode_observation(&encode_observation(&o)), Ok(o));
        }

        #[test]
        fn security_round_trips(
            endpoint in ".{0,12}",
            psk_identity in opt(proptest::collection::vec(any::<u8>(), 0..32)),
            psk_key in opt(proptest::collection::vec(any::<u8>(), 0..64)),
            updated_at_unix_ms in any::<u64>(),
            x509 in any::<bool>(),
        ) {
            let s = StoredSecurity { endpoint, psk_identity, psk_key, x509, updated_at_unix_ms };
            prop_assert_eq!(decode_security(&encode_security(&s)), Ok(s));
        }

        #[test]
        fn queued_requests_round_trip(q in any_queued()) {
            prop_assert_eq!(decode_queued(&encode_queued(&q)), Ok(q));
        }

        /// A damaged file yields errors, never panics: arbitrary bytes, and valid records
        /// with one byte changed.
        #[test]
        fn decoders_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..128)) {
            let _ = decode_registration(&bytes);
            let _ = decode_observation(&bytes);
            let _ = decode_queued(&bytes);
            let _ = decode_refresh(&bytes);
        }

        #[test]
        fn flipped_bytes_never_panic(q in any_queued(), at in any::<usize>(), to in any::<u8>()) {
            let mut bytes = encode_queued(&q);
            let i = at % bytes.len();
            bytes[i] = to;
            let _ = decode_queued(&bytes);
            let _ = decode_registration(&bytes);
            let _ = decode_observation(&bytes);
            let _ = decode_refresh(&bytes);
        }
    }
}

#[cfg(test)]
mod golden {
    //! Byte-exact records: the file format is a promise to every database already written.
    //! Appending a field keeps version 1 (older readers skip it, newer ones accept records
    //! without it; the bytes of the first writer are kept here and must still read). Any
    //! other change bumps RECORD_VERSION and keeps a decoder for version 1.
    use super::samples::*;
    use super::*;

    use crate::hex::encode as hex;

    /// Bytes of the first writer, before `secure` was appended.
    const REGISTRATION_FIRST: &str =
        "8d01627231636570311a0001518063312e31625551f5692b3135353531323334612f78293c2f3e3b\
         72743d226f6d612e6c776d326d223b63743d31313534332c3c2f312f303e2c3c2f332f303e8450\
         20010db800000000000000000000000119ddfe00001b0000018bcfe568001b0000018bcfe56800";

    #[test]
    fn registration_v1() {
        let r = registration("r1", "ep1");
        assert_eq!(
            hex(&encode_registration(&r)),
            "8e01627231636570311a0001518063312e31625551f5692b3135353531323334612f78293c2f3e3b\
             72743d226f6d612e6c776d326d223b63743d31313534332c3c2f312f303e2c3c2f332f303e8450\
             20010db800000000000000000000000119ddfe00001b0000018bcfe568001b0000018bcfe56800f5"
        );
        let first = decode_registration(&unhex(REGISTRATION_FIRST)).expect("first writer");
        assert_eq!(first, StoredRegistration { secure: false, ..r });
    }

    /// Bytes of the first writer, before `observed` was appended.
    const OBSERVATION_FIRST: &str =
        "89014201026272316365703182662f332f302f39642f362f30f518701b0000018bcfe569f407";
    /// Bytes of the first writer, before `tracking` was appended.
    const QUEUED_FIRST: &str =
        "8b01636570310003662f352f302f318167706d696e3d313000f6f655636f61703a2f2f66772e6578\
             616d706c652f706b671863";

    fn unhex(s: &str) -> Vec<u8> {
        let s: String = s.split_whitespace().collect();
        crate::hex::decode(&s).expect("hex")
    }

    #[test]
    fn observation_v1() {
        let o = observation(&[1, 2], "r1", "ep1");
        assert_eq!(
            hex(&encode_observation(&o)),
            "8a014201026272316365703181612ff518701b0000018bcfe569f40782662f332f302f39642f362f30"
        );
        // What the first writer wrote still reads, with `observed` empty.
        let first = decode_observation(&unhex(OBSERVATION_FIRST)).expect("first writer");
        assert_eq!(first.paths, vec!["/3/0/9".to_string(), "/6/0".to_string()]);
        assert!(first.observed.is_empty());
        assert_eq!(first.last_sequence, o.last_sequence);
    }

    #[test]
    fn queued_request_v1() {
        let q = queued("ep1", 99);
        assert_eq!(
            hex(&encode_queued(&q)),
            "8c01636570310003662f352f302f318167706d696e3d313000f6f655636f61703a2f2f66772e6578\
             616d706c652f706b6718638478183031323334353637383961626364656630313233343536376557\
             7269746581662f352f302f311b0000018bcfe56800"
        );
        let first = decode_queued(&unhex(QUEUED_FIRST)).expect("first writer");
        assert_eq!(
            first,
            QueuedRequest {
                tracking: None,
                ..q
            }
        );
    }
}
