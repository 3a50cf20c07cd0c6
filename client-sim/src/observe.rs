//! Observations the server made and the notification rules (LwM2M 1.2 Core,
//! `<NOTIFICATION>` attributes): stored attributes per path with precedence
//! RI > R > OI > O, attributes of the Observe request on top, defaults from
//! the Server object, and the decision "(change condition and pmin passed) or
//! pmax expired".

use std::collections::HashMap;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use lwm2m_objects::link::{AttributeValue, Attributes};
use lwm2m_objects::{ContentFormat, Node, Path, Resource, Value};

/// The attributes in force for one observation.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct Effective {
    pub pmin: u32,
    pub pmax: u32,
    pub gt: Option<f64>,
    pub lt: Option<f64>,
    pub st: Option<f64>,
    pub con: bool,
}

impl Effective {
    /// Lays `a` over `self`: set values win, unset ones leave what is below.
    fn overlay(&mut self, a: &Attributes) {
        let get = |v: Option<AttributeValue<u32>>| v.and_then(|x| x.get());
        let getf = |v: Option<AttributeValue<f64>>| v.and_then(|x| x.get());
        if let Some(v) = get(a.pmin) {
            self.pmin = v;
        }
        if let Some(v) = get(a.pmax) {
            self.pmax = v;
        }
        if let Some(v) = getf(a.gt) {
            self.gt = Some(v);
        }
        if let Some(v) = getf(a.lt) {
            self.lt = Some(v);
        }
        if let Some(v) = getf(a.st) {
            self.st = Some(v);
        }
        if let Some(v) = a.con.and_then(|x| x.get()) {
            self.con = v;
        }
    }
}

/// Attributes written with Write-Attributes, by path.
#[derive(Debug, Clone, Default)]
pub struct AttributeStore {
    by_path: HashMap<Path, Attributes>,
}

/// Most paths attributes may be stored for; a server cannot grow the table
/// without bound.
pub const MAX_ATTRIBUTE_PATHS: usize = 4096;

impl AttributeStore {
    /// Merges a Write-Attributes into what is stored at `path`: set values
    /// replace, valueless ones remove. The merged set must still be valid
    /// (`lt < gt`, ...), else nothing changes.
    pub fn write(&mut self, path: &Path, a: &Attributes) -> Result<(), String> {
        let numeric_level = path.depth() >= 3;
        if !numeric_level
            && (a.gt.is_some() || a.lt.is_some() || a.st.is_some() || a.edge.is_some())
        {
            return Err("gt, lt, st and edge apply to resources only".into());
        }
        if !self.by_path.contains_key(path) && self.by_path.len() >= MAX_ATTRIBUTE_PATHS {
            return Err("too many paths with attributes".into());
        }
        let mut merged = self.by_path.get(path).cloned().unwrap_or_default();
        fn put<T: Copy>(dst: &mut Option<AttributeValue<T>>, src: Option<AttributeValue<T>>) {
            match src {
                Some(AttributeValue::Set(v)) => *dst = Some(AttributeValue::Set(v)),
                Some(AttributeValue::Unset) => *dst = None,
                None => {}
            }
        }
        put(&mut merged.pmin, a.pmin);
        put(&mut merged.pmax, a.pmax);
        put(&mut merged.gt, a.gt);
        put(&mut merged.lt, a.lt);
        put(&mut merged.st, a.st);
        put(&mut merged.epmin, a.epmin);
        put(&mut merged.epmax, a.epmax);
        put(&mut merged.edge, a.edge);
        put(&mut merged.con, a.con);
        put(&mut merged.hqmax, a.hqmax);
        merged.validate().map_err(|e| e.to_string())?;
        if merged.is_empty() {
            self.by_path.remove(path);
        } else {
            self.by_path.insert(*path, merged);
        }
        Ok(())
    }

    /// Whether no attributes are stored (a parked device then keeps none).
    pub fn is_empty(&self) -> bool {
        self.by_path.is_empty()
    }

    /// Paths with attributes stored.
    pub fn len(&self) -> usize {
        self.by_path.len()
    }

    /// What is stored at exactly `path`.
    pub fn at(&self, path: &Path) -> Option<&Attributes> {
        self.by_path.get(path)
    }

    /// Forgets the attributes at and below `path` (its node was deleted).
    pub fn remove_below(&mut self, path: &Path) {
        self.by_path.retain(|p, _| !p.starts_with(path));
    }

    /// The attributes in force at `path`: defaults, then O, OI, R, RI levels.
    pub fn effective(&self, path: &Path, defaults: Effective) -> Effective {
        let mut e = defaults;
        for depth in 1..=path.depth() {
            if let Ok(prefix) = Path::from_ids(&path.ids()[..depth]) {
                if let Some(a) = self.by_path.get(&prefix) {
                    e.overlay(a);
                }
            }
        }
        e
    }
}

/// What an observation watches.
#[derive(Debug, Clone, PartialEq)]
pub enum Target {
    Single(Path),
    Composite(Vec<Path>),
}

/// One observation relation (RFC 7641), keyed by the server's token.
#[derive(Debug, Clone)]
pub struct Observation {
    pub token: Vec<u8>,
    pub peer: SocketAddr,
    pub target: Target,
    pub format: ContentFormat,
    /// Attributes given in the Observe request; they override stored ones.
    pub query: Attributes,
    pub last_sent: Instant,
    /// The value(s) last reported, to detect changes.
    pub last: Vec<Option<Node>>,
    pub seq: u32,
}

/// The number a node carries when it is one numeric value.
pub fn numeric(node: &Node) -> Option<f64> {
    let v = match node {
        Node::Resource(Resource::Single { value, .. }) | Node::ResourceInstance { value, .. } => {
            value
        }
        _ => return None,
    };
    match v {
        Value::Integer(i) | Value::Time(i) => Some(*i as f64),
        Value::UnsignedInteger(u) => Some(*u as f64),
        Value::Float(f) => Some(*f),
        _ => None,
    }
}

impl Observation {
    /// The attributes in force for this observation.
    pub fn effective(&self, stored: &AttributeStore, defaults: Effective) -> Effective {
        let mut e = match &self.target {
            Target::Single(p) => stored.effective(p, defaults),
            Target::Composite(_) => defaults,
        };
        e.overlay(&self.query);
        e
    }

    /// Whether to notify now, given the current value(s).
    pub fn due(&self, now: Instant, current: &[Option<Node>], e: &Effective) -> bool {
        let elapsed = now.saturating_duration_since(self.last_sent);
        let pmin = Duration::from_secs(u64::from(e.pmin));
        if e.pmax > 0 && e.pmax >= e.pmin && elapsed >= Duration::from_secs(u64::from(e.pmax)) {
            return true;
        }
        if elapsed < pmin {
            return false;
        }
        let thresholds = e.gt.is_some() || e.lt.is_some() || e.st.is_some();
        let nums = (
            self.last.first().and_then(|n| n.as_ref()).and_then(numeric),
            current.first().and_then(|n| n.as_ref()).and_then(numeric),
        );
        match (thresholds, nums, &self.target) {
            (true, (Some(old), Some(new)), Target::Single(_)) => {
                let crossed = |t: Option<f64>| t.is_some_and(|t| (old > t) != (new > t));
                crossed(e.gt) || crossed(e.lt) || e.st.is_some_and(|st| (new - old).abs() >= st)
            }
            _ => self.last.as_slice() != current,
        }
    }

    /// The earliest instant a notification could become due without a value
    /// change: when pmax expires.
    pub fn pmax_deadline(&self, e: &Effective) -> Option<Instant> {
        (e.pmax > 0 && e.pmax >= e.pmin)
            .then(|| self.last_sent + Duration::from_secs(u64::from(e.pmax)))
    }
}
