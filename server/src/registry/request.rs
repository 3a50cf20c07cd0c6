//! Turning a CoAP request on `/rd` into a typed Register, Update or
//! De-register, from plain inputs so that the CoAP layer, the fuzz target
//! and the tests all feed it the same way.
//!
//! Choices where the specification leaves room (each one where real
//! devices are):
//! - `lwm2m` absent: taken as 1.0. C12 makes it required, but 1.0 made it
//!   optional with default 1.0 and 1.0 devices omit it (Leshan does the
//!   same).
//! - `lt` absent: 86400 s, 1.0's default, whatever the version.
//! - `lt=0`: no expiry (/1/x/1 reads 0 as infinite).
//! - The enabler version is checked before anything else, so a client of
//!   a future version gets 4.12 and falls back even if the rest of its
//!   query means something we do not know.
//! - Parameter names the interface does not define are kept, not refused:
//!   1.2 added `pid`, and the next version may add more.
//! - A payload with a Content-Format other than 40 gets 4.15 (RFC 7252
//!   §5.10.3); no Content-Format at all is read as link format.
//! - Each Uri-Query option is one parameter (RFC 7252 §6.5); a `&`
//!   inside an option is data, not a separator.

use lwm2m_objects::link::RegistrationPayload;
use lwm2m_objects::Version;

use super::binding::Binding;
use super::error::{echo, RegistrationError};

/// LwM2M's link-format content format.
pub const LINK_FORMAT: u16 = 40;
/// Lifetime when a Register carries no `lt` (1.0 default).
pub const DEFAULT_LIFETIME_S: u32 = 86_400;
/// The newest enabler version accepted; a higher minor is refused with
/// 4.12, as is any other major.
pub const MAX_VERSION: Version = Version::V1_2;
/// Longest endpoint name, in bytes. Real names are IMEI URNs, well under
/// this; the cap bounds the endpoint index.
pub const MAX_ENDPOINT_LEN: usize = 255;
/// Most Uri-Query options read; a Register uses at most seven.
pub const MAX_QUERY_OPTIONS: usize = 32;
/// Longest `sms` value (an MSISDN is at most 15 digits).
pub const MAX_SMS_LEN: usize = 32;
/// Longest `pid` value.
pub const MAX_PID_LEN: usize = 255;
/// Largest Register/Update payload, after Block1 reassembly.
pub const MAX_PAYLOAD_LEN: usize = 64 * 1024;

/// The CoAP request methods the registration interface distinguishes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Method {
    Get,
    Post,
    Put,
    Delete,
    /// FETCH, PATCH, iPATCH or anything newer.
    Other,
}

/// A parsed request on `/rd`.
#[derive(Clone, Debug, PartialEq)]
pub enum RdRequest {
    Register(RegisterRequest),
    Update(UpdateRequest),
    Deregister { id: String },
}

/// A Register with every default applied.
#[derive(Clone, Debug, PartialEq)]
pub struct RegisterRequest {
    pub endpoint: String,
    /// Seconds; 0 means the registration does not expire.
    pub lifetime_s: u32,
    pub version: Version,
    pub binding: Binding,
    /// `Q` given, or a `Q` in the binding (1.0).
    pub queue_mode: bool,
    pub sms: Option<String>,
    /// 1.2 profile id, standing in for the object list.
    pub profile_id: Option<String>,
    pub objects: RegistrationPayload,
    /// Query parameters the interface does not define, in order.
    pub extra_params: Vec<(String, Option<String>)>,
}

/// An Update: only what the client sent. All `None` (Zephyr's bare
/// Update) just refreshes the lifetime.
#[derive(Clone, Debug, PartialEq, Default)]
pub struct UpdateRequest {
    pub id: String,
    pub lifetime_s: Option<u32>,
    pub binding: Option<Binding>,
    /// `Q` given: the client is in queue mode. Absent, queue mode follows
    /// `binding` when that is given and is otherwise unchanged.
    pub queue_flag: bool,
    pub sms: Option<String>,
    pub profile_id: Option<String>,
    /// A payload replaces the registered object list.
    pub objects: Option<RegistrationPayload>,
}

impl UpdateRequest {
    /// Queue mode after this Update, given the mode before it.
    pub fn queue_mode(&self, before: bool) -> bool {
        match (self.queue_flag, self.binding) {
            (true, _) => true,
            (false, Some(b)) => b.queue,
            (false, None) => before,
        }
    }
}

/// Parses a request whose first Uri-Path segment is `rd`.
///
/// `uri_query` holds each Uri-Query option as received (`"ep=foo"`,
/// `"Q"`); `payload` is the whole (reassembled) body.
pub fn parse_request(
    method: Method,
    uri_path: &[String],
    uri_query: &[String],
    payload: &[u8],
    content_format: Option<u16>,
) -> Result<RdRequest, RegistrationError> {
    match uri_path {
        [rd] if rd == "rd" => match method {
            Method::Post => {
                parse_register(uri_query, payload, content_format).map(RdRequest::Register)
            }
            _ => Err(method_not_allowed("/rd", "POST")),
        },
        [rd, id] if rd == "rd" => match method {
            Method::Post => {
                parse_update(id, uri_query, payload, content_format).map(RdRequest::Update)
            }
            Method::Delete => Ok(RdRequest::Deregister { id: id.clone() }),
            _ => Err(method_not_allowed("/rd/{location}", "POST or DELETE")),
        },
        _ => Err(RegistrationError::not_found(
            "no such resource under the registration interface",
        )),
    }
}

fn method_not_allowed(what: &str, allowed: &str) -> RegistrationError {
    RegistrationError::new(
        RegistrationError::METHOD_NOT_ALLOWED,
        format!("{what} accepts {allowed} only"),
    )
}

/// The query as (name, value) pairs, refusing too many options, empty
/// names and a name given twice.
fn split_query(uri_query: &[String]) -> Result<Vec<(&str, Option<&str>)>, RegistrationError> {
    if uri_query.len() > MAX_QUERY_OPTIONS {
        return Err(RegistrationError::bad_request(format!(
            "more than {MAX_QUERY_OPTIONS} query parameters"
        )));
    }
    let mut out: Vec<(&str, Option<&str>)> = Vec::with_capacity(uri_query.len());
    for q in uri_query {
        let (name, value) = match q.split_once('=') {
            Some((n, v)) => (n, Some(v)),
            None => (q.as_str(), None),
        };
        if name.is_empty() {
            return Err(RegistrationError::bad_request(format!(
                "query parameter {} has no name",
                echo(q)
            )));
        }
        if out.iter().any(|(n, _)| *n == name) {
            return Err(RegistrationError::bad_request(format!(
                "query parameter {} is given twice",
                echo(name)
            )));
        }
        out.push((name, value));
    }
    Ok(out)
}

fn required<'a>(name: &str, value: Option<&'a str>) -> Result<&'a str, RegistrationError> {
    value.ok_or_else(|| RegistrationError::bad_request(format!("parameter {name} needs a value")))
}

fn parse_lifetime(value: Option<&str>) -> Result<u32, RegistrationError> {
    let v = required("lt", value)?;
    let ok = !v.is_empty() && v.len() <= 10 && v.bytes().all(|b| b.is_ascii_digit());
    ok.then(|| v.parse::<u32>().ok()).flatten().ok_or_else(|| {
        RegistrationError::bad_request(format!(
            "lifetime lt={} is not a number of seconds 0..=4294967295",
            echo(v)
        ))
    })
}

fn parse_version(value: Option<&str>) -> Result<Version, RegistrationError> {
    let v = required("lwm2m", value)?;
    let version: Version = v.parse().map_err(|_| {
        RegistrationError::bad_request(format!(
            "enabler version lwm2m={} is not major.minor",
            echo(v)
        ))
    })?;
    if version.major != MAX_VERSION.major || version.minor > MAX_VERSION.minor {
        return Err(RegistrationError::new(
            RegistrationError::PRECONDITION_FAILED,
            format!("LwM2M version {version} is not supported; this server supports 1.0 to {MAX_VERSION}"),
        ));
    }
    Ok(version)
}

fn parse_queue_flag(value: Option<&str>) -> Result<bool, RegistrationError> {
    match value {
        None => Ok(true),
        Some(v) => Err(RegistrationError::bad_request(format!(
            "queue mode Q takes no value, got Q={}",
            echo(v)
        ))),
    }
}

/// A bounded text parameter with no control characters.
fn parse_text(name: &str, value: Option<&str>, max: usize) -> Result<String, RegistrationError> {
    let v = required(name, value)?;
    if v.is_empty() {
        return Err(RegistrationError::bad_request(format!(
            "parameter {name} is empty"
        )));
    }
    if v.len() > max {
        return Err(RegistrationError::bad_request(format!(
            "parameter {name} is longer than {max} bytes"
        )));
    }
    if v.chars().any(char::is_control) {
        return Err(RegistrationError::bad_request(format!(
            "parameter {name}={} contains control characters",
            echo(v)
        )));
    }
    Ok(v.to_string())
}

/// The payload's object list, or `None` for an empty payload.
fn parse_payload(
    payload: &[u8],
    content_format: Option<u16>,
) -> Result<Option<RegistrationPayload>, RegistrationError> {
    if payload.is_empty() {
        return Ok(None);
    }
    if let Some(cf) = content_format.filter(|cf| *cf != LINK_FORMAT) {
        return Err(RegistrationError::new(
            RegistrationError::UNSUPPORTED_CONTENT_FORMAT,
            format!("the object list must be link format (40), not content format {cf}"),
        ));
    }
    if payload.len() > MAX_PAYLOAD_LEN {
        return Err(RegistrationError::new(
            RegistrationError::ENTITY_TOO_LARGE,
            format!("object list larger than {MAX_PAYLOAD_LEN} bytes"),
        ));
    }
    let text = std::str::from_utf8(payload)
        .map_err(|_| RegistrationError::bad_request("object list is not UTF-8 text"))?;
    let mut objects = RegistrationPayload::parse(text)
        .map_err(|e| RegistrationError::bad_request(format!("object list: {e}")))?;
    // Kept for the registration's life: without the room the parser grew into.
    objects.objects.shrink_to_fit();
    objects.content_formats.shrink_to_fit();
    Ok(Some(objects))
}

fn parse_register(
    uri_query: &[String],
    payload: &[u8],
    content_format: Option<u16>,
) -> Result<RegisterRequest, RegistrationError> {
    let query = split_query(uri_query)?;
    // First, so that a client of another version can fall back (see the
    // module doc).
    let version = match query.iter().find(|(n, _)| *n == "lwm2m") {
        Some((_, v)) => parse_version(*v)?,
        None => Version::V1_0,
    };
    let mut endpoint = None;
    let mut lifetime_s = DEFAULT_LIFETIME_S;
    let mut binding = Binding::default();
    let mut queue_flag = false;
    let mut sms = None;
    let mut profile_id = None;
    let mut extra_params = Vec::new();
    for (name, value) in query {
        match name {
            "lwm2m" => {}
            "ep" => endpoint = Some(parse_text("ep", value, MAX_ENDPOINT_LEN)?),
            "lt" => lifetime_s = parse_lifetime(value)?,
            "b" => binding = Binding::parse(required("b", value)?)?,
            "Q" => queue_flag = parse_queue_flag(value)?,
            "sms" => sms = Some(parse_text("sms", value, MAX_SMS_LEN)?),
            "pid" => profile_id = Some(parse_text("pid", value, MAX_PID_LEN)?),
            other => extra_params.push((other.to_string(), value.map(str::to_string))),
        }
    }
    let endpoint =
        endpoint.ok_or_else(|| RegistrationError::bad_request("endpoint name ep is missing"))?;
    let objects = parse_payload(payload, content_format)?.unwrap_or_default();
    Ok(RegisterRequest {
        endpoint,
        lifetime_s,
        version,
        binding,
        queue_mode: queue_flag || binding.queue,
        sms,
        profile_id,
        objects,
        extra_params,
    })
}

/// Parameters an Update does not define (`ep`, `lwm2m`, others) are
/// ignored: the registration's endpoint and version are fixed at Register.
fn parse_update(
    id: &str,
    uri_query: &[String],
    payload: &[u8],
    content_format: Option<u16>,
) -> Result<UpdateRequest, RegistrationError> {
    let query = split_query(uri_query)?;
    let mut u = UpdateRequest {
        id: id.to_string(),
        ..UpdateRequest::default()
    };
    for (name, value) in query {
        match name {
            "lt" => u.lifetime_s = Some(parse_lifetime(value)?),
            "b" => u.binding = Some(Binding::parse(required("b", value)?)?),
            "Q" => u.queue_flag = parse_queue_flag(value)?,
            "sms" => u.sms = Some(parse_text("sms", value, MAX_SMS_LEN)?),
            "pid" => u.profile_id = Some(parse_text("pid", value, MAX_PID_LEN)?),
            _ => {}
        }
    }
    u.objects = parse_payload(payload, content_format)?;
    Ok(u)
}
