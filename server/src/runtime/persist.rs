//! Between the live types (monotonic `Instant`s, `Packet`s, `Registration`s) and the
//! store's records (Unix milliseconds, plain fields). The store must speak wall-clock time
//! because an `Instant` means nothing to the next process.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use coap_lite::{CoapOption, MessageClass, Packet, RequestType};
use lwm2m_objects::link::RegistrationPayload;

use super::route::encode_uint;
use super::RequestLabel;
use crate::registry::{Binding, Registration, RegistrationExtras, Transport};
use crate::store::{QueuedRequest, QueuedTracking, StoredObservation, StoredRegistration};

/// Milliseconds since the Unix epoch now (0 for a clock set before 1970).
pub fn unix_now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
        .unwrap_or(0)
}

/// One reading of both clocks, to translate between them for the life of the process.
#[derive(Debug, Clone, Copy)]
pub struct Clock {
    instant: Instant,
    unix_ms: u64,
}

impl Clock {
    pub fn now() -> Clock {
        Clock {
            instant: Instant::now(),
            unix_ms: unix_now_ms(),
        }
    }

    pub fn unix_ms(&self, at: Instant) -> u64 {
        if at >= self.instant {
            let d = u64::try_from((at - self.instant).as_millis()).unwrap_or(u64::MAX);
            self.unix_ms.saturating_add(d)
        } else {
            let d = u64::try_from((self.instant - at).as_millis()).unwrap_or(u64::MAX);
            self.unix_ms.saturating_sub(d)
        }
    }

    /// `None` when the instant cannot be represented (before the monotonic clock's origin).
    pub fn instant(&self, unix_ms: u64) -> Option<Instant> {
        if unix_ms >= self.unix_ms {
            self.instant
                .checked_add(Duration::from_millis(unix_ms - self.unix_ms))
        } else {
            self.instant
                .checked_sub(Duration::from_millis(self.unix_ms - unix_ms))
        }
    }
}

/// The link-format text of the object lists stored last. Registrations share their object
/// lists (a fleet sends a handful of distinct ones), so each list is formatted once here
/// rather than on every Register and Update, where the formatting cost as much as a third
/// of a store insert.
#[derive(Debug, Default)]
pub struct FormattedObjects {
    recent: VecDeque<(Arc<RegistrationPayload>, String)>,
}

/// Lists kept formatted; a miss costs one formatting.
const FORMATTED_OBJECTS: usize = 8;

impl FormattedObjects {
    pub fn get(&mut self, objects: &Arc<RegistrationPayload>) -> String {
        if let Some((_, text)) = self.recent.iter().find(|(o, _)| Arc::ptr_eq(o, objects)) {
            return text.clone();
        }
        let text = objects.format();
        if self.recent.len() == FORMATTED_OBJECTS {
            self.recent.pop_front();
        }
        self.recent.push_back((objects.clone(), text.clone()));
        text
    }
}

pub fn to_stored(
    reg: &Registration,
    clock: &Clock,
    formatted: &mut FormattedObjects,
) -> StoredRegistration {
    StoredRegistration {
        id: reg.id.to_string(),
        endpoint: reg.endpoint.to_string(),
        lifetime_s: reg.lifetime_s,
        lwm2m_version: reg.version.to_string(),
        binding: reg.binding.to_string(),
        queue_mode: reg.queue_mode,
        sms: reg.sms().map(str::to_string),
        root_path: reg.objects.root_path.clone(),
        objects_link_format: formatted.get(&reg.objects),
        peer: reg.peer,
        registered_at_unix_ms: clock.unix_ms(reg.registered_at),
        last_update_unix_ms: clock.unix_ms(reg.refreshed_at),
        secure: reg.transport == Transport::Dtls,
    }
}

/// Why a stored registration could not be brought back.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RestoreError {
    #[error("field {0} does not parse")]
    Field(&'static str),
    #[error("its time lies before this machine's monotonic clock can express")]
    Time,
}

pub fn from_stored(s: &StoredRegistration, clock: &Clock) -> Result<Registration, RestoreError> {
    let version = s
        .lwm2m_version
        .parse()
        .map_err(|_| RestoreError::Field("lwm2m_version"))?;
    let binding = Binding::parse(&s.binding).map_err(|_| RestoreError::Field("binding"))?;
    let objects = std::sync::Arc::new(
        RegistrationPayload::parse(&s.objects_link_format)
            .map_err(|_| RestoreError::Field("objects_link_format"))?,
    );
    Ok(Registration {
        id: Arc::from(s.id.as_str()),
        endpoint: Arc::from(s.endpoint.as_str()),
        version,
        lifetime_s: s.lifetime_s,
        binding,
        queue_mode: s.queue_mode,
        // The profile id and unknown parameters are not kept by the store's record
        // version 1.
        extras: RegistrationExtras::boxed(s.sms.clone(), None, Vec::new()),
        objects,
        peer: s.peer,
        transport: if s.secure {
            Transport::Dtls
        } else {
            Transport::Udp
        },
        registered_at: clock
            .instant(s.registered_at_unix_ms)
            .ok_or(RestoreError::Time)?,
        refreshed_at: clock
            .instant(s.last_update_unix_ms)
            .ok_or(RestoreError::Time)?,
    })
}

/// Whether a stored registration has run out, grace included, at `now_unix_ms`.
pub fn expired(s: &StoredRegistration, grace: Duration, now_unix_ms: u64) -> bool {
    let grace_ms = u64::try_from(grace.as_millis()).unwrap_or(u64::MAX);
    s.lifetime_s != 0 && s.expires_at_unix_ms().saturating_add(grace_ms) <= now_unix_ms
}

fn text_options(p: &Packet, o: CoapOption) -> Vec<String> {
    p.get_option(o)
        .map(|l| {
            l.iter()
                .map(|v| String::from_utf8_lossy(v).into_owned())
                .collect()
        })
        .unwrap_or_default()
}

fn uint(p: &Packet, o: CoapOption) -> Option<u32> {
    p.get_first_option(o)
        .and_then(|v| (v.len() <= 4).then(|| v.iter().fold(0u32, |a, b| (a << 8) | u32::from(*b))))
}

/// The request as the store keeps it. Only the options a device-management request uses
/// (Uri-Path, Uri-Query, Content-Format, Accept, Observe) survive; others are dropped.
pub fn to_queued(
    endpoint: &str,
    p: &Packet,
    expires_at_unix_ms: u64,
    tracking: Option<QueuedTracking>,
) -> QueuedRequest {
    let method = match p.header.code {
        MessageClass::Request(r) => u8::from(MessageClass::Request(r)),
        _ => 0,
    };
    let path = text_options(p, CoapOption::UriPath);
    QueuedRequest {
        endpoint: endpoint.to_string(),
        seq: 0,
        method,
        uri_path: format!("/{}", path.join("/")),
        uri_query: text_options(p, CoapOption::UriQuery),
        content_format: uint(p, CoapOption::ContentFormat).and_then(|v| u16::try_from(v).ok()),
        accept: uint(p, CoapOption::Accept).and_then(|v| u16::try_from(v).ok()),
        observe: uint(p, CoapOption::Observe),
        payload: p.payload.clone(),
        expires_at_unix_ms,
        tracking,
    }
}

/// What the store keeps of a request's label.
pub fn to_tracking(label: &RequestLabel, created_at_unix_ms: u64) -> QueuedTracking {
    QueuedTracking {
        request_id: label.request_id.clone(),
        operation: label.operation.clone(),
        paths: label.paths.iter().map(ToString::to_string).collect(),
        created_at_unix_ms,
    }
}

/// The label of a request restored from the store; a path that does not parse (a damaged
/// record) is left out rather than failing the request.
pub fn from_tracking(t: Option<&QueuedTracking>) -> RequestLabel {
    match t {
        None => RequestLabel::default(),
        Some(t) => RequestLabel {
            operation: t.operation.clone(),
            paths: parse_paths(&t.paths),
            request_id: t.request_id.clone(),
        },
    }
}

pub fn parse_paths(texts: &[String]) -> Vec<lwm2m_objects::Path> {
    texts.iter().filter_map(|p| p.parse().ok()).collect()
}

/// Whether a request is one of the composite operations (FETCH or iPATCH on the root).
pub fn is_composite(p: &Packet) -> bool {
    matches!(
        p.header.code,
        MessageClass::Request(RequestType::Fetch | RequestType::IPatch)
    )
}

/// Rebuilds the request packet of a stored queued request.
pub fn from_queued(q: &QueuedRequest) -> Packet {
    let mut p = Packet::new();
    p.header.code = match MessageClass::from(q.method) {
        c @ MessageClass::Request(_) => c,
        _ => MessageClass::Request(RequestType::Get),
    };
    add_path(&mut p, &q.uri_path);
    for s in &q.uri_query {
        p.add_option(CoapOption::UriQuery, s.as_bytes().to_vec());
    }
    if let Some(cf) = q.content_format {
        p.add_option(CoapOption::ContentFormat, encode_uint(cf.into()));
    }
    if let Some(a) = q.accept {
        p.add_option(CoapOption::Accept, encode_uint(a.into()));
    }
    if let Some(o) = q.observe {
        p.add_option(CoapOption::Observe, encode_uint(o));
    }
    p.payload = q.payload.clone();
    p
}

fn add_path(p: &mut Packet, path: &str) {
    for seg in path.split('/').filter(|s| !s.is_empty()) {
        p.add_option(CoapOption::UriPath, seg.as_bytes().to_vec());
    }
}

/// The record of an established observation.
pub fn to_observation(
    token: &[u8],
    reg: &Registration,
    request: &Packet,
    observed: &[lwm2m_objects::Path],
    response: &Packet,
    now_unix_ms: u64,
) -> StoredObservation {
    let path = text_options(request, CoapOption::UriPath);
    let composite = is_composite(request);
    StoredObservation {
        token: token.to_vec(),
        registration_id: reg.id.to_string(),
        endpoint: reg.endpoint.to_string(),
        paths: vec![format!("/{}", path.join("/"))],
        composite,
        content_format: uint(response, CoapOption::ContentFormat)
            .and_then(|v| u16::try_from(v).ok()),
        created_at_unix_ms: now_unix_ms,
        last_sequence: response.get_observe_value().and_then(Result::ok),
        observed: observed.iter().map(ToString::to_string).collect(),
    }
}

/// The request to keep as the template of a restored observation (a GET of its first path
/// with Observe=0; it is sent again only to fetch blocks of a block-wise notification).
pub fn observation_template(o: &StoredObservation) -> Packet {
    let mut p = Packet::new();
    p.header.code = MessageClass::Request(if o.composite {
        RequestType::Fetch
    } else {
        RequestType::Get
    });
    if let Some(path) = o.paths.first() {
        add_path(&mut p, path);
    }
    p.set_observe_value(0);
    p
}

#[cfg(test)]
mod tests {
    use super::*;
    use lwm2m_objects::Version;

    #[test]
    fn registration_round_trips_through_the_record() {
        let clock = Clock::now();
        let now = Instant::now();
        let reg = Registration {
            id: "abc".into(),
            endpoint: "ep".into(),
            version: Version::V1_1,
            lifetime_s: 60,
            binding: Binding::parse("UQ").expect("binding"),
            queue_mode: true,
            extras: RegistrationExtras::boxed(Some("123".into()), None, Vec::new()),
            objects: std::sync::Arc::new(
                RegistrationPayload::parse("</1/0>,</3/0>").expect("payload"),
            ),
            peer: "127.0.0.1:5000".parse().expect("addr"),
            transport: Transport::Dtls,
            registered_at: now,
            refreshed_at: now + Duration::from_secs(5),
        };
        let back = from_stored(
            &to_stored(&reg, &clock, &mut FormattedObjects::default()),
            &clock,
        )
        .expect("restore");
        assert_eq!(back.objects, reg.objects);
        assert_eq!(back.transport, Transport::Dtls);
        assert_eq!(
            (&*back.id, back.version, back.binding, back.queue_mode),
            ("abc", reg.version, reg.binding, true)
        );
        let drift = |a: Instant, b: Instant| a.max(b) - a.min(b);
        assert!(drift(back.refreshed_at, reg.refreshed_at) < Duration::from_millis(2));
        assert!(drift(back.registered_at, reg.registered_at) < Duration::from_millis(2));
    }

    #[test]
    fn queued_request_round_trips() {
        let mut p = Packet::new();
        p.header.code = MessageClass::Request(RequestType::Put);
        add_path(&mut p, "/3/0/1");
        p.add_option(CoapOption::UriQuery, b"pmin=5".to_vec());
        p.add_option(CoapOption::ContentFormat, encode_uint(11542));
        p.payload = vec![1, 2, 3];
        let q = to_queued("ep", &p, 99, None);
        assert_eq!(q.uri_path, "/3/0/1");
        assert_eq!(q.content_format, Some(11542));
        let back = from_queued(&q);
        assert_eq!(back.header.code, p.header.code);
        assert_eq!(back.payload, p.payload);
        assert_eq!(
            back.get_option(CoapOption::UriPath),
            p.get_option(CoapOption::UriPath)
        );
        assert_eq!(to_queued("ep", &back, 99, None), q);
    }

    #[test]
    fn expiry_counts_the_grace() {
        let s = StoredRegistration {
            id: "a".into(),
            endpoint: "e".into(),
            lifetime_s: 10,
            lwm2m_version: "1.1".into(),
            binding: "U".into(),
            queue_mode: false,
            sms: None,
            root_path: "/".into(),
            objects_link_format: String::new(),
            peer: "127.0.0.1:1".parse().expect("addr"),
            registered_at_unix_ms: 0,
            last_update_unix_ms: 1000,
            secure: false,
        };
        assert!(!expired(&s, Duration::from_secs(5), 15_999));
        assert!(expired(&s, Duration::from_secs(5), 16_000));
        let forever = StoredRegistration { lifetime_s: 0, ..s };
        assert!(!expired(&forever, Duration::ZERO, u64::MAX));
    }
}
