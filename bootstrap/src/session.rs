//! One device's bootstrap dialogue, sans-IO: which request goes next, and what the
//! device's answers mean (LwM2M 1.1/1.2 Bootstrap Interface).
//!
//! The order: Bootstrap-Read of /1 when the configuration asks for a record of the
//! device's previous accounts; the deletes; Bootstrap-Discover of `/`, to learn which
//! instance ids are taken (the bootstrap-server account lives in /0 and must not be
//! overwritten; an account with the same Short Server ID is overwritten in place); one
//! Bootstrap-Write per Security and Server instance; Bootstrap-Finish.
//!
//! A device that does not know Bootstrap-Discover (LwM2M 1.0) answers it with an error;
//! the session then counts ids from 1 in /0 (the bootstrap account is most often /0/0)
//! and from 0 in /1.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::OnceLock;

use lwm2m_objects::link::parse_links;
use lwm2m_objects::{Codecs, ContentFormat, Instance, Node, Path, Registry, Resource, Value};

use crate::config::{BootstrapConfig, Security, ServerAccount};

/// A request to send to the device.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Outgoing {
    pub method: Method,
    pub path: Path,
    /// Accept option.
    pub accept: Option<u16>,
    /// Content-Format of `payload`.
    pub content_format: Option<u16>,
    pub payload: Vec<u8>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Method {
    Get,
    Put,
    Post,
    Delete,
}

/// What follows an answer.
#[derive(Debug, Clone, PartialEq)]
pub enum Next {
    Send(Outgoing),
    /// Bootstrap-Finish was acknowledged: the device holds its accounts.
    Finished,
    /// The dialogue ended without Finish; the text says at which step and why.
    Failed(String),
}

/// A server account the device had before, from Bootstrap-Read of /1.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct PreviousServer {
    pub instance: u16,
    pub short_server_id: Option<i64>,
    pub lifetime: Option<i64>,
    pub binding: Option<String>,
}

/// One request of the dialogue and the device's answer (`"2.04"`, or why none came).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct StepRecord {
    pub request: String,
    pub outcome: String,
}

/// What the dialogue did, for the operator.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Report {
    pub steps: Vec<StepRecord>,
    /// Present when the configuration asked for Bootstrap-Read of /1 and the device answered.
    pub previous_servers: Option<Vec<PreviousServer>>,
}

#[derive(Debug, Clone, PartialEq)]
enum Step {
    ReadServers,
    Delete(Path),
    Discover,
    Write(Path),
    Finish,
}

/// The core object model and the codecs, built once.
fn shared() -> &'static (Codecs, Registry) {
    static SHARED: OnceLock<(Codecs, Registry)> = OnceLock::new();
    SHARED.get_or_init(|| (Codecs::new(), Registry::with_core()))
}

/// A bootstrap dialogue in progress.
#[derive(Debug)]
pub struct Session {
    config: BootstrapConfig,
    format: ContentFormat,
    /// Steps still to send, in order; the front is in flight.
    steps: Vec<Step>,
    /// The instances to write, by path, once their ids are known.
    writes: BTreeMap<Path, Instance>,
    report: Report,
}

/// Content formats an instance may be written in, as the device prefers (`pct`).
pub fn write_format(preferred: Option<u16>) -> Option<ContentFormat> {
    match preferred.map(ContentFormat::from_code) {
        None => Some(ContentFormat::Tlv),
        Some(Some(
            f @ (ContentFormat::Tlv
            | ContentFormat::SenmlJson
            | ContentFormat::SenmlCbor
            | ContentFormat::Lwm2mCbor),
        )) => Some(f),
        Some(_) => None,
    }
}

impl Session {
    /// A session writing `config`, in `format` (see [`write_format`]); answers the first
    /// request.
    pub fn start(config: BootstrapConfig, format: ContentFormat) -> (Session, Outgoing) {
        let mut steps = Vec::new();
        if config.read_servers {
            steps.push(Step::ReadServers);
        }
        steps.extend(config.delete_paths().into_iter().map(Step::Delete));
        steps.push(Step::Discover);
        let s = Session {
            config,
            format,
            steps,
            writes: BTreeMap::new(),
            report: Report::default(),
        };
        let first = s.outgoing();
        (s, first)
    }

    pub fn endpoint(&self) -> &str {
        &self.config.endpoint
    }

    pub fn report(&self) -> &Report {
        &self.report
    }

    pub fn into_report(self) -> Report {
        self.report
    }

    /// The device answered the request in flight with `code` and `payload`.
    pub fn on_response(&mut self, code: (u8, u8), payload: &[u8]) -> Next {
        let Some(step) = self.steps.first().cloned() else {
            return Next::Failed("an answer arrived after the dialogue ended".into());
        };
        self.record(&step, format!("{}.{:02}", code.0, code.1));
        let ok = code.0 == 2;
        match step {
            Step::ReadServers => {
                if ok {
                    self.report.previous_servers = Some(previous_servers(payload));
                }
            }
            Step::Delete(p) => {
                // 4.04: nothing there to delete, which is what was wanted.
                if !ok && code != (4, 4) {
                    return self.fail(format!("Bootstrap-Delete {p}"), code, payload);
                }
            }
            Step::Discover => {
                let taken = if ok { discovered(payload) } else { None };
                self.plan_writes(taken);
            }
            Step::Write(p) => {
                if !ok {
                    return self.fail(format!("Bootstrap-Write {p}"), code, payload);
                }
            }
            Step::Finish => {
                self.steps.clear();
                return if ok {
                    Next::Finished
                } else {
                    // 4.06: the device found the configuration inconsistent.
                    self.fail("Bootstrap-Finish".into(), code, payload)
                };
            }
        }
        self.steps.remove(0);
        Next::Send(self.outgoing())
    }

    /// The request in flight got no answer (`why`: timeout, reset, ...).
    pub fn on_failure(&mut self, why: &str) -> Next {
        match self.steps.first().cloned() {
            Some(step) => {
                self.record(&step, why.to_string());
                self.steps.clear();
                Next::Failed(format!("{}: no answer ({why})", describe(&step)))
            }
            None => Next::Failed(why.to_string()),
        }
    }

    fn fail(&mut self, what: String, code: (u8, u8), payload: &[u8]) -> Next {
        self.steps.clear();
        let diagnostic: String = String::from_utf8_lossy(payload).chars().take(200).collect();
        let mut text = format!("{what} answered {}.{:02}", code.0, code.1);
        if !diagnostic.is_empty() {
            text.push_str(&format!(": {diagnostic}"));
        }
        Next::Failed(text)
    }

    fn record(&mut self, step: &Step, outcome: String) {
        self.report.steps.push(StepRecord {
            request: describe(step),
            outcome,
        });
    }

    /// Picks the instance ids and queues the writes and Finish.
    fn plan_writes(&mut self, taken: Option<Taken>) {
        let fallback = taken.is_none();
        let taken = taken.unwrap_or_default();
        let mut used_security = taken.security.keys().copied().collect::<BTreeSet<_>>();
        let mut used_server = taken.server.keys().copied().collect::<BTreeSet<_>>();
        let mut security_writes = Vec::new();
        let mut server_writes = Vec::new();
        for account in &self.config.servers {
            let ssid = account.short_server_id;
            let sec_id = find_ssid(&taken.security, ssid)
                .unwrap_or_else(|| lowest_free(&mut used_security, u16::from(fallback)));
            let srv_id =
                find_ssid(&taken.server, ssid).unwrap_or_else(|| lowest_free(&mut used_server, 0));
            used_security.insert(sec_id);
            used_server.insert(srv_id);
            security_writes.push((
                Path::instance(0, sec_id),
                security_instance(sec_id, account),
            ));
            server_writes.push((Path::instance(1, srv_id), server_instance(srv_id, account)));
        }
        for (path, instance) in security_writes.into_iter().chain(server_writes) {
            self.steps.push(Step::Write(path));
            self.writes.insert(path, instance);
        }
        self.steps.push(Step::Finish);
    }

    fn outgoing(&self) -> Outgoing {
        let get = |path, accept| Outgoing {
            method: Method::Get,
            path,
            accept: Some(accept),
            content_format: None,
            payload: Vec::new(),
        };
        match self.steps.first() {
            Some(Step::ReadServers) => get(Path::object(1), ContentFormat::Tlv.code()),
            Some(Step::Discover) => get(Path::ROOT, ContentFormat::LinkFormat.code()),
            Some(Step::Delete(p)) => Outgoing {
                method: Method::Delete,
                path: *p,
                accept: None,
                content_format: None,
                payload: Vec::new(),
            },
            Some(Step::Write(p)) => {
                let (format, payload) = self.encode(*p);
                Outgoing {
                    method: Method::Put,
                    path: *p,
                    accept: None,
                    content_format: Some(format.code()),
                    payload,
                }
            }
            Some(Step::Finish) | None => Outgoing {
                method: Method::Post,
                path: Path::ROOT,
                accept: None,
                content_format: None,
                payload: Vec::new(),
            },
        }
    }

    /// The payload of a write, in the session's format; TLV if that format cannot carry
    /// it (TLV can carry every instance this crate builds).
    fn encode(&self, path: Path) -> (ContentFormat, Vec<u8>) {
        let (codecs, model) = shared();
        let node = Node::Instance(self.writes.get(&path).cloned().unwrap_or_default());
        match codecs.encode(self.format, &path, &node, model) {
            Ok(bytes) => (self.format, bytes),
            Err(_) => (
                ContentFormat::Tlv,
                codecs
                    .encode(ContentFormat::Tlv, &path, &node, model)
                    .unwrap_or_default(),
            ),
        }
    }
}

/// Whether a request is Bootstrap-Finish, for the runtime (which sends it to `/bs`).
pub fn is_finish(o: &Outgoing) -> bool {
    o.method == Method::Post
}

fn describe(step: &Step) -> String {
    match step {
        Step::ReadServers => "Bootstrap-Read /1".into(),
        Step::Delete(p) => format!("Bootstrap-Delete {p}"),
        Step::Discover => "Bootstrap-Discover /".into(),
        Step::Write(p) => format!("Bootstrap-Write {p}"),
        Step::Finish => "Bootstrap-Finish".into(),
    }
}

/// Instance ids the device reported in /0 and /1, with the `ssid` of each where given.
#[derive(Debug, Default)]
struct Taken {
    security: BTreeMap<u16, Option<u16>>,
    server: BTreeMap<u16, Option<u16>>,
}

/// Reads a Bootstrap-Discover answer; `None` when it is not link format.
fn discovered(payload: &[u8]) -> Option<Taken> {
    let text = std::str::from_utf8(payload).ok()?;
    let links = parse_links(text).ok()?;
    let mut taken = Taken::default();
    for link in links {
        let Ok(path) = link.target.parse::<Path>() else {
            continue;
        };
        let (Some(object), Some(instance), 2) =
            (path.object_id(), path.instance_id(), path.depth())
        else {
            continue;
        };
        let ssid = link
            .param("ssid")
            .flatten()
            .and_then(|v| v.trim_matches('"').parse::<u16>().ok());
        match object {
            0 => {
                taken.security.insert(instance, ssid);
            }
            1 => {
                taken.server.insert(instance, ssid);
            }
            _ => {}
        }
    }
    Some(taken)
}

fn find_ssid(instances: &BTreeMap<u16, Option<u16>>, ssid: u16) -> Option<u16> {
    instances
        .iter()
        .find(|(_, s)| **s == Some(ssid))
        .map(|(id, _)| *id)
}

fn lowest_free(used: &mut BTreeSet<u16>, from: u16) -> u16 {
    // At most MAX_SERVERS + the device's instances are taken, so this ends quickly.
    let id = (from..=u16::MAX - 1)
        .find(|id| !used.contains(id))
        .unwrap_or(from);
    used.insert(id);
    id
}

fn single(id: u16, value: Value) -> Resource {
    Resource::Single { id, value }
}

/// Security (object 0) instance of one account.
fn security_instance(id: u16, a: &ServerAccount) -> Instance {
    let (identity, key) = match &a.security {
        Security::Psk(p) => (p.identity.clone(), p.key.clone()),
        Security::NoSec => (Vec::new(), Vec::new()),
    };
    Instance::new(id)
        .with(single(0, Value::String(a.uri.clone())))
        .with(single(1, Value::Boolean(false)))
        .with(single(2, Value::Integer(a.security.mode())))
        .with(single(3, Value::Opaque(identity)))
        .with(single(4, Value::Opaque(Vec::new())))
        .with(single(5, Value::Opaque(key)))
        .with(single(10, Value::Integer(a.short_server_id.into())))
}

/// Server (object 1) instance of one account.
fn server_instance(id: u16, a: &ServerAccount) -> Instance {
    let mut i = Instance::new(id)
        .with(single(0, Value::Integer(a.short_server_id.into())))
        .with(single(1, Value::Integer(a.lifetime.into())))
        .with(single(6, Value::Boolean(a.notification_storing)))
        .with(single(7, Value::String(a.binding.clone())));
    if let Some(p) = a.default_min_period {
        i = i.with(single(2, Value::Integer(p.into())));
    }
    if let Some(p) = a.default_max_period {
        i = i.with(single(3, Value::Integer(p.into())));
    }
    i
}

/// The accounts in a Bootstrap-Read answer of /1 (TLV); what does not decode is left out.
fn previous_servers(payload: &[u8]) -> Vec<PreviousServer> {
    let (codecs, model) = shared();
    let Ok(Node::Object(o)) = codecs.decode(ContentFormat::Tlv, payload, &Path::object(1), model)
    else {
        return Vec::new();
    };
    let int = |i: &Instance, r| match i.resources.get(&r) {
        Some(Resource::Single {
            value: Value::Integer(v),
            ..
        }) => Some(*v),
        Some(Resource::Single {
            value: Value::UnsignedInteger(v),
            ..
        }) => i64::try_from(*v).ok(),
        _ => None,
    };
    o.instances
        .values()
        .map(|i| PreviousServer {
            instance: i.id,
            short_server_id: int(i, 0),
            lifetime: int(i, 1),
            binding: match i.resources.get(&7) {
                Some(Resource::Single {
                    value: Value::String(s),
                    ..
                }) => Some(s.clone()),
                _ => None,
            },
        })
        .collect()
}

#[cfg(test)]
mod tests;
