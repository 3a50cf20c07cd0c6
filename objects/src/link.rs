//! CoRE link format (RFC 6690) and the three LwM2M uses of it: the
//! Register/Update payload, Discover responses, and notification
//! attributes (as link parameters and as Write-Attributes queries).
//!
//! - [`parse_links`] / [`format_links`]: generic links with parameters.
//! - [`RegistrationPayload`]: the object list a client registers, tolerant of
//!   what real devices send (repeated or unquoted `ct`, no `</>` link).
//! - [`Attributes`]: `pmin`, `pmax`, `gt`, `lt`, `st`, `epmin`, `epmax`,
//!   `edge`, `con`, `hqmax` and the Discover-only `dim`, `ssid`, `uri`, `ver`.
//! - [`parse_discover`] / [`format_discover`]: Discover responses.
//!
//! The parser is bounded: at most [`MAX_LINKS`] links and [`MAX_PARAMS`]
//! parameters per link; the input length is the caller's to bound (the
//! CoAP layer limits payload size).

use std::fmt;

use crate::format::text::format_float;
use crate::model::Version;
use crate::path::{Path, PathError};

/// The most links [`parse_links`] accepts.
pub const MAX_LINKS: usize = 10_000;
/// The most parameters one link (or one Write-Attributes query) may carry.
pub const MAX_PARAMS: usize = 64;

/// One link: a target URI and its parameters in the order sent.
/// A parameter without `=` (`;obs`, `;pmin`) has no value.
#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub struct Link {
    pub target: String,
    pub params: Vec<(String, Option<String>)>,
}

impl Link {
    /// A link to `target` with no parameter.
    pub fn new(target: impl Into<String>) -> Link {
        Link {
            target: target.into(),
            params: Vec::new(),
        }
    }

    /// Adds a parameter; `None` makes a valueless one.
    pub fn with(mut self, name: impl Into<String>, value: Option<&str>) -> Link {
        self.params.push((name.into(), value.map(str::to_string)));
        self
    }

    /// The first parameter with this name: `Some(None)` when it has no value.
    pub fn param(&self, name: &str) -> Option<Option<&str>> {
        self.params
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_deref())
    }

    /// Every parameter with this name, in order (`ct` may be repeated).
    pub fn params_named<'a>(&'a self, name: &'a str) -> impl Iterator<Item = Option<&'a str>> + 'a {
        self.params
            .iter()
            .filter(move |(n, _)| n.as_str() == name)
            .map(|(_, v)| v.as_deref())
    }
}

impl fmt::Display for Link {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "<{}>", self.target)?;
        for (name, value) in &self.params {
            write!(f, ";{name}")?;
            if let Some(v) = value {
                if needs_quotes(name, v) {
                    f.write_str("=\"")?;
                    for c in v.chars() {
                        if c == '"' || c == '\\' {
                            f.write_str("\\")?;
                        }
                        write!(f, "{c}")?;
                    }
                    f.write_str("\"")?;
                } else {
                    write!(f, "={v}")?;
                }
            }
        }
        Ok(())
    }
}

/// RFC 6690 gives `rt`, `if`, `title` and `anchor` quoted-string values;
/// LwM2M's `uri` holds a URI with `:`; a `ct` list has spaces. Anything that
/// is not a plain token is quoted too.
fn needs_quotes(name: &str, value: &str) -> bool {
    matches!(name, "rt" | "if" | "title" | "anchor" | "uri")
        || value.is_empty()
        || !value.chars().all(is_ptoken_char)
}

/// RFC 6690 `ptokenchar`.
fn is_ptoken_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || "!#$%&'()*+-./:<=>?@[]^_`{|}~".contains(c)
}

/// RFC 5987 `attr-char`-like name characters (`parmname`).
fn is_name_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || "!#$&+-.^_`|~*".contains(c)
}

/// Why a link-format text, a query or a registration payload is refused.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum LinkError {
    #[error("link format: expected {expected} at byte {offset}")]
    Syntax {
        offset: usize,
        expected: &'static str,
    },
    #[error("link format: '<' at byte {offset} has no matching '>'")]
    UnterminatedTarget { offset: usize },
    #[error("link format: quoted string at byte {offset} is not terminated")]
    UnterminatedQuote { offset: usize },
    #[error("more than {limit} links")]
    TooManyLinks { limit: usize },
    #[error("more than {limit} parameters in one link or query")]
    TooManyParams { limit: usize },
    #[error("{0}")]
    Attribute(#[from] AttributeError),
    #[error("link target: {0}")]
    Path(#[from] PathError),
    #[error("alternate root path {0:?} must be an absolute path without numeric segments")]
    RootPath(String),
    #[error("more than one link carries rt=\"oma.lwm2m\"")]
    DuplicateRoot,
    #[error("content format {0:?} is not a number 0..=65535")]
    ContentFormat(String),
}

/// Parses a link-format text (RFC 6690 `Link`). Whitespace around `,`,
/// `;` and `=` is tolerated, as some devices send `</1/0>, </3/0>`. An
/// empty text is no link.
pub fn parse_links(text: &str) -> Result<Vec<Link>, LinkError> {
    let mut c = Cursor { s: text, pos: 0 };
    let mut links = Vec::new();
    c.skip_ws();
    if c.at_end() {
        return Ok(links);
    }
    loop {
        if links.len() == MAX_LINKS {
            return Err(LinkError::TooManyLinks { limit: MAX_LINKS });
        }
        links.push(c.link()?);
        c.skip_ws();
        match c.bump() {
            None => return Ok(links),
            Some(',') => c.skip_ws(),
            Some(_) => {
                return Err(LinkError::Syntax {
                    offset: c.pos - 1,
                    expected: "',' or ';'",
                })
            }
        }
    }
}

/// Formats links as RFC 6690 text, quoting values that need it.
pub fn format_links(links: &[Link]) -> String {
    let mut out = String::new();
    for (i, l) in links.iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        out.push_str(&l.to_string());
    }
    out
}

struct Cursor<'a> {
    s: &'a str,
    pos: usize,
}

impl Cursor<'_> {
    fn peek(&self) -> Option<char> {
        self.s.get(self.pos..).and_then(|r| r.chars().next())
    }
    fn bump(&mut self) -> Option<char> {
        let c = self.peek()?;
        self.pos += c.len_utf8();
        Some(c)
    }
    fn at_end(&self) -> bool {
        self.pos >= self.s.len()
    }
    fn skip_ws(&mut self) {
        while self.peek().is_some_and(|c| c.is_ascii_whitespace()) {
            self.pos += 1;
        }
    }
    fn expect(&mut self, want: char, expected: &'static str) -> Result<(), LinkError> {
        if self.peek() == Some(want) {
            self.pos += 1;
            return Ok(());
        }
        Err(LinkError::Syntax {
            offset: self.pos,
            expected,
        })
    }

    fn link(&mut self) -> Result<Link, LinkError> {
        let start = self.pos;
        self.expect('<', "'<'")?;
        let rest = self.s.get(self.pos..).unwrap_or("");
        let end = rest
            .find('>')
            .ok_or(LinkError::UnterminatedTarget { offset: start })?;
        let target = rest.get(..end).unwrap_or("").to_string();
        self.pos += end + 1;
        let mut params = Vec::new();
        loop {
            self.skip_ws();
            if self.peek() != Some(';') {
                return Ok(Link { target, params });
            }
            self.pos += 1;
            if params.len() == MAX_PARAMS {
                return Err(LinkError::TooManyParams { limit: MAX_PARAMS });
            }
            params.push(self.param()?);
        }
    }

    fn param(&mut self) -> Result<(String, Option<String>), LinkError> {
        self.skip_ws();
        let start = self.pos;
        while self.peek().is_some_and(is_name_char) {
            self.pos += 1;
        }
        let name = self.s.get(start..self.pos).unwrap_or("").to_string();
        if name.is_empty() {
            return Err(LinkError::Syntax {
                offset: start,
                expected: "a parameter name",
            });
        }
        self.skip_ws();
        if self.peek() != Some('=') {
            return Ok((name, None));
        }
        self.pos += 1;
        self.skip_ws();
        let value = if self.peek() == Some('"') {
            self.quoted()?
        } else {
            self.token()?
        };
        Ok((name, Some(value)))
    }

    fn quoted(&mut self) -> Result<String, LinkError> {
        let start = self.pos;
        self.pos += 1;
        let mut out = String::new();
        loop {
            match self.bump() {
                None => return Err(LinkError::UnterminatedQuote { offset: start }),
                Some('"') => return Ok(out),
                Some('\\') => match self.bump() {
                    Some(c) => out.push(c),
                    None => return Err(LinkError::UnterminatedQuote { offset: start }),
                },
                Some(c) => out.push(c),
            }
        }
    }

    /// An unquoted value runs to the next `;` or `,`. Spaces inside are
    /// kept (an old client sends `ct=110 112`); a quote is refused.
    fn token(&mut self) -> Result<String, LinkError> {
        let start = self.pos;
        while let Some(c) = self.peek() {
            match c {
                ';' | ',' => break,
                '"' => {
                    return Err(LinkError::Syntax {
                        offset: self.pos,
                        expected: "';' or ',' (quote inside a token)",
                    })
                }
                _ => self.pos += c.len_utf8(),
            }
        }
        Ok(self.s.get(start..self.pos).unwrap_or("").trim().to_string())
    }
}

// ------------------------------------------------------------ attributes

/// A notification attribute as written: set to a value, or valueless
/// (`?pmin`), which removes it at that level.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum AttributeValue<T> {
    Set(T),
    Unset,
}

impl<T: Copy> AttributeValue<T> {
    /// The value when set.
    pub fn get(&self) -> Option<T> {
        match self {
            AttributeValue::Set(v) => Some(*v),
            AttributeValue::Unset => None,
        }
    }
}

/// Why an attribute or a set of attributes is refused (the server answers
/// 4.00 to such a Write-Attributes).
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum AttributeError {
    #[error("attribute {name}: {value:?} is not a valid value")]
    Malformed { name: String, value: String },
    #[error("attribute {0} needs a value")]
    MissingValue(String),
    #[error("unknown attribute {0:?}")]
    Unknown(String),
    #[error("attribute {0} is given twice")]
    Duplicate(String),
    #[error("attribute {0} is read-only (Discover only) and cannot be written")]
    NotWritable(String),
    #[error("lt must be below gt")]
    LtNotBelowGt,
    #[error("lt + 2*st must be below gt")]
    StepTooLarge,
    #[error("st must not be negative")]
    NegativeStep,
    #[error("epmin must be below epmax")]
    EpminNotBelowEpmax,
}

/// Notification attributes (LwM2M 1.2 Core `<NOTIFICATION>` class) and the
/// attributes Discover reports. `None` means not mentioned.
///
/// `dim` (number of resource instances), `ssid` and `uri` (bootstrap
/// Discover of /0 instances) and `ver` (object version) appear only in
/// Discover responses; `other` keeps any further link parameter so a
/// Discover response survives a round trip.
#[derive(Clone, Debug, PartialEq, Default)]
pub struct Attributes {
    pub pmin: Option<AttributeValue<u32>>,
    pub pmax: Option<AttributeValue<u32>>,
    pub gt: Option<AttributeValue<f64>>,
    pub lt: Option<AttributeValue<f64>>,
    pub st: Option<AttributeValue<f64>>,
    pub epmin: Option<AttributeValue<u32>>,
    pub epmax: Option<AttributeValue<u32>>,
    pub edge: Option<AttributeValue<bool>>,
    pub con: Option<AttributeValue<bool>>,
    pub hqmax: Option<AttributeValue<u32>>,
    pub dim: Option<u16>,
    pub ssid: Option<u16>,
    pub uri: Option<String>,
    pub ver: Option<Version>,
    pub other: Vec<(String, Option<String>)>,
}

impl Attributes {
    /// Parses a Write-Attributes (or Observe) query: `pmin=10&pmax=60&gt=20.5`,
    /// a leading `?` allowed. A valueless attribute is
    /// [`AttributeValue::Unset`]. Unknown, repeated and Discover-only
    /// attributes are refused, and the result is [`validate`](Self::validate)d.
    pub fn parse_query(query: &str) -> Result<Attributes, LinkError> {
        let query = query.strip_prefix('?').unwrap_or(query);
        Attributes::from_query_params(query.split('&').filter(|s| !s.is_empty()))
    }

    /// As [`parse_query`](Self::parse_query), from CoAP Uri-Query options
    /// one by one.
    pub fn from_query_params<'a>(
        params: impl IntoIterator<Item = &'a str>,
    ) -> Result<Attributes, LinkError> {
        let params: Vec<&str> = params.into_iter().take(MAX_PARAMS + 1).collect();
        if params.len() > MAX_PARAMS {
            return Err(LinkError::TooManyParams { limit: MAX_PARAMS });
        }
        let mut a = Attributes::default();
        for p in params {
            let (name, value) = match p.split_once('=') {
                Some((n, v)) => (n, Some(v)),
                None => (p, None),
            };
            if matches!(name, "dim" | "ssid" | "uri" | "ver") {
                return Err(AttributeError::NotWritable(name.to_string()).into());
            }
            if !a.set(name, value)? {
                return Err(AttributeError::Unknown(name.chars().take(32).collect()).into());
            }
        }
        a.validate()?;
        Ok(a)
    }

    /// Reads the attributes among a link's parameters (a Discover entry).
    /// Numbers must be well formed; the relations between them are not
    /// checked, since a device reports what it holds (call
    /// [`validate`](Self::validate) to check). Unknown parameters go to
    /// `other`.
    pub fn from_link_params(params: &[(String, Option<String>)]) -> Result<Attributes, LinkError> {
        let mut a = Attributes::default();
        for (name, value) in params {
            if !a.set(name, value.as_deref())? {
                a.other.push((name.clone(), value.clone()));
            }
        }
        Ok(a)
    }

    /// Sets one attribute from its text; false when the name is unknown.
    fn set(&mut self, name: &str, value: Option<&str>) -> Result<bool, AttributeError> {
        match name {
            "pmin" => put(&mut self.pmin, name, value, parse_u32)?,
            "pmax" => put(&mut self.pmax, name, value, parse_u32)?,
            "gt" => put(&mut self.gt, name, value, parse_f64)?,
            "lt" => put(&mut self.lt, name, value, parse_f64)?,
            "st" => put(&mut self.st, name, value, parse_f64)?,
            "epmin" => put(&mut self.epmin, name, value, parse_u32)?,
            "epmax" => put(&mut self.epmax, name, value, parse_u32)?,
            "edge" => put(&mut self.edge, name, value, parse_bool)?,
            "con" => put(&mut self.con, name, value, parse_bool)?,
            "hqmax" => put(&mut self.hqmax, name, value, parse_u32)?,
            "dim" => put_plain(&mut self.dim, name, value, |v| {
                v.parse().ok().filter(|_| digits(v))
            })?,
            "ssid" => put_plain(&mut self.ssid, name, value, |v| {
                v.parse().ok().filter(|_| digits(v))
            })?,
            "uri" => put_plain(&mut self.uri, name, value, |v| Some(v.to_string()))?,
            "ver" => put_plain(&mut self.ver, name, value, |v| v.parse().ok())?,
            _ => return Ok(false),
        }
        Ok(true)
    }

    /// Checks the rules of LwM2M 1.2 Core: `lt < gt`, `lt + 2*st < gt`,
    /// `st >= 0`, `epmin < epmax`, considering only attributes set here.
    pub fn validate(&self) -> Result<(), AttributeError> {
        let get = |a: &Option<AttributeValue<f64>>| a.and_then(|v| v.get());
        let (gt, lt, st) = (get(&self.gt), get(&self.lt), get(&self.st));
        if st.is_some_and(|s| s < 0.0) {
            return Err(AttributeError::NegativeStep);
        }
        if let (Some(lt), Some(gt)) = (lt, gt) {
            if lt >= gt {
                return Err(AttributeError::LtNotBelowGt);
            }
            if st.is_some_and(|s| lt + 2.0 * s >= gt) {
                return Err(AttributeError::StepTooLarge);
            }
        }
        let epmin = self.epmin.and_then(|v| v.get());
        let epmax = self.epmax.and_then(|v| v.get());
        if let (Some(a), Some(b)) = (epmin, epmax) {
            if a >= b {
                return Err(AttributeError::EpminNotBelowEpmax);
            }
        }
        Ok(())
    }

    /// True when no attribute is mentioned.
    pub fn is_empty(&self) -> bool {
        self == &Attributes::default()
    }

    /// The attributes as link parameters, notification attributes first,
    /// then `dim`, `ssid`, `uri`, `ver` and the others.
    pub fn to_params(&self) -> Vec<(String, Option<String>)> {
        let mut out = Vec::new();
        let mut push = |name: &str, v: Option<Option<String>>| {
            if let Some(v) = v {
                out.push((name.to_string(), v));
            }
        };
        push("pmin", text_of(self.pmin, |v| v.to_string()));
        push("pmax", text_of(self.pmax, |v| v.to_string()));
        push("gt", text_of(self.gt, format_float));
        push("lt", text_of(self.lt, format_float));
        push("st", text_of(self.st, format_float));
        push("epmin", text_of(self.epmin, |v| v.to_string()));
        push("epmax", text_of(self.epmax, |v| v.to_string()));
        push("edge", text_of(self.edge, bool_text));
        push("con", text_of(self.con, bool_text));
        push("hqmax", text_of(self.hqmax, |v| v.to_string()));
        push("dim", self.dim.map(|v| Some(v.to_string())));
        push("ssid", self.ssid.map(|v| Some(v.to_string())));
        push("uri", self.uri.clone().map(Some));
        push("ver", self.ver.map(|v| Some(v.to_string())));
        out.extend(self.other.iter().cloned());
        out
    }

    /// The notification attributes as a query (`pmin=10&pmax=60&lt`), for
    /// a Write-Attributes request. Discover-only attributes and `other`
    /// are left out.
    pub fn to_query(&self) -> String {
        let writable = Attributes {
            dim: None,
            ssid: None,
            uri: None,
            ver: None,
            other: Vec::new(),
            ..self.clone()
        };
        let parts: Vec<String> = writable
            .to_params()
            .into_iter()
            .map(|(n, v)| match v {
                Some(v) => format!("{n}={v}"),
                None => n,
            })
            .collect();
        parts.join("&")
    }
}

fn text_of<T: Copy>(
    a: Option<AttributeValue<T>>,
    f: impl Fn(T) -> String,
) -> Option<Option<String>> {
    a.map(|v| v.get().map(&f))
}

fn bool_text(b: bool) -> String {
    if b { "1" } else { "0" }.to_string()
}

fn put<T>(
    slot: &mut Option<AttributeValue<T>>,
    name: &str,
    value: Option<&str>,
    parse: fn(&str) -> Option<T>,
) -> Result<(), AttributeError> {
    if slot.is_some() {
        return Err(AttributeError::Duplicate(name.to_string()));
    }
    *slot = Some(match value {
        None => AttributeValue::Unset,
        Some(v) => AttributeValue::Set(parse(v).ok_or_else(|| malformed(name, v))?),
    });
    Ok(())
}

fn put_plain<T>(
    slot: &mut Option<T>,
    name: &str,
    value: Option<&str>,
    parse: impl Fn(&str) -> Option<T>,
) -> Result<(), AttributeError> {
    if slot.is_some() {
        return Err(AttributeError::Duplicate(name.to_string()));
    }
    let v = value.ok_or_else(|| AttributeError::MissingValue(name.to_string()))?;
    *slot = Some(parse(v).ok_or_else(|| malformed(name, v))?);
    Ok(())
}

fn malformed(name: &str, value: &str) -> AttributeError {
    AttributeError::Malformed {
        name: name.to_string(),
        value: value.chars().take(32).collect(),
    }
}

fn digits(v: &str) -> bool {
    !v.is_empty() && v.len() <= 10 && v.bytes().all(|b| b.is_ascii_digit())
}

fn parse_u32(v: &str) -> Option<u32> {
    if !digits(v) {
        return None;
    }
    v.parse().ok()
}

/// A decimal number, as in the text format: no `inf`, `NaN` or hex.
fn parse_f64(v: &str) -> Option<f64> {
    let ok_chars = v
        .bytes()
        .all(|b| b.is_ascii_digit() || matches!(b, b'-' | b'+' | b'.' | b'e' | b'E'));
    if v.is_empty() || v.len() > 64 || !ok_chars || !v.bytes().any(|b| b.is_ascii_digit()) {
        return None;
    }
    v.parse::<f64>().ok().filter(|f| f.is_finite())
}

fn parse_bool(v: &str) -> Option<bool> {
    match v {
        "0" => Some(false),
        "1" => Some(true),
        _ => None,
    }
}

// ------------------------------------------------------------ registration

/// An object or object instance a client registers, with the object's
/// version when the link carries `ver`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ObjectLink {
    pub object: u16,
    pub instance: Option<u16>,
    pub version: Option<Version>,
}

/// The payload of a Register or Update request.
///
/// `root_path` is `/` or the alternate path a client announces with
/// `</lwm2m>;rt="oma.lwm2m"`; the server prefixes it to every DM request.
/// `content_formats` are the `ct` values of the root link. `objects` lists
/// the object and instance links in payload order, without the root
/// prefix.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RegistrationPayload {
    pub root_path: String,
    pub content_formats: Vec<u16>,
    pub objects: Vec<ObjectLink>,
}

impl Default for RegistrationPayload {
    fn default() -> RegistrationPayload {
        RegistrationPayload {
            root_path: "/".to_string(),
            content_formats: Vec::new(),
            objects: Vec::new(),
        }
    }
}

/// The object ids a client should never list: Security (0) and OSCORE (21).
pub const SECURITY_OBJECTS: [u16; 2] = [0, 21];

impl RegistrationPayload {
    /// Parses a Register/Update payload, tolerating what devices send:
    /// - `ct` repeated (`</>;ct=110;ct=112`), unquoted, a quoted
    ///   space-separated list, or absent; the values are merged in order
    ///   without duplicates;
    /// - no `</>` link at all (root `/`, no formats);
    /// - unknown parameters and links that are not object paths (ignored);
    /// - unknown objects (kept);
    /// - object links deeper than `/o/i` (ignored: the specification lists
    ///   only `/o` and `/o/i`);
    /// - `/0` and `/21` (kept; see [`lists_security_objects`](Self::lists_security_objects));
    /// - the same link twice (kept once).
    ///
    /// Refused: syntax errors, an alternate root path with a numeric or
    /// empty segment, two root links with `rt="oma.lwm2m"`, a `ct` that is
    /// not a number, an id out of range, a malformed `ver`.
    pub fn parse(text: &str) -> Result<RegistrationPayload, LinkError> {
        let links = parse_links(text)?;
        let mut out = RegistrationPayload::default();
        let root_link = find_root(&links)?;
        if let Some(l) = root_link {
            out.root_path = normalize_root(&l.target)?;
            out.content_formats = content_formats(l)?;
        }
        for l in &links {
            if root_link.is_some_and(|r| std::ptr::eq(r, l)) {
                continue;
            }
            let Some(path) = object_path(&out.root_path, &l.target)? else {
                continue;
            };
            let version = match (path.depth(), l.param("ver")) {
                (1, Some(Some(v))) => Some(
                    v.parse()
                        .map_err(|_| LinkError::Attribute(malformed("ver", v)))?,
                ),
                _ => None,
            };
            let entry = match *path.ids() {
                [o] => ObjectLink {
                    object: o,
                    instance: None,
                    version,
                },
                [o, i] => ObjectLink {
                    object: o,
                    instance: Some(i),
                    version: None,
                },
                _ => continue,
            };
            if !out.objects.contains(&entry) {
                out.objects.push(entry);
            }
        }
        Ok(out)
    }

    /// Formats the payload as a client sends it:
    /// `</>;rt="oma.lwm2m";ct="110 112",</1>;ver=1.1,</1/0>,</3/0>`.
    /// The root link is always written (some servers reject payloads
    /// without `rt`); `ct` is omitted when the list is empty.
    pub fn format(&self) -> String {
        let mut root = Link::new(self.root_path.clone()).with("rt", Some("oma.lwm2m"));
        if !self.content_formats.is_empty() {
            let cts: Vec<String> = self.content_formats.iter().map(u16::to_string).collect();
            root = root.with("ct", Some(cts.join(" ").as_str()));
        }
        let prefix = self.root_path.trim_end_matches('/');
        let mut links = vec![root];
        for o in &self.objects {
            let target = match o.instance {
                Some(i) => format!("{prefix}/{}/{i}", o.object),
                None => format!("{prefix}/{}", o.object),
            };
            let mut l = Link::new(target);
            if let (None, Some(v)) = (o.instance, o.version) {
                l = l.with("ver", Some(v.to_string().as_str()));
            }
            links.push(l);
        }
        format_links(&links)
    }

    /// The object's version as registered (`</3>;ver=1.1`), if given.
    pub fn object_version(&self, object: u16) -> Option<Version> {
        self.objects
            .iter()
            .find(|o| o.object == object && o.instance.is_none())
            .and_then(|o| o.version)
    }

    /// The registered instance ids of an object.
    pub fn instances(&self, object: u16) -> impl Iterator<Item = u16> + '_ {
        self.objects
            .iter()
            .filter(move |o| o.object == object)
            .filter_map(|o| o.instance)
    }

    /// The Security (0) and OSCORE (21) objects the client listed, which
    /// the specification says it must not; a server may log this.
    pub fn lists_security_objects(&self) -> Vec<u16> {
        let mut ids: Vec<u16> = self
            .objects
            .iter()
            .map(|o| o.object)
            .filter(|o| SECURITY_OBJECTS.contains(o))
            .collect();
        ids.dedup();
        ids
    }
}

/// The root link: the one with `rt="oma.lwm2m"`, else a `</>` link.
fn find_root(links: &[Link]) -> Result<Option<&Link>, LinkError> {
    let is_lwm2m = |l: &&Link| {
        l.params_named("rt")
            .any(|v| v.is_some_and(|v| v.split_whitespace().any(|t| t == "oma.lwm2m")))
    };
    let mut tagged = links.iter().filter(is_lwm2m);
    match (tagged.next(), tagged.next()) {
        (Some(_), Some(_)) => Err(LinkError::DuplicateRoot),
        (Some(l), None) => Ok(Some(l)),
        (None, _) => Ok(links.iter().find(|l| l.target == "/")),
    }
}

/// `/` or `/seg[/seg..]` with no empty and no all-digit segment; a trailing
/// slash is dropped.
fn normalize_root(target: &str) -> Result<String, LinkError> {
    let bad = || LinkError::RootPath(target.chars().take(64).collect());
    let rest = target.strip_prefix('/').ok_or_else(bad)?;
    let rest = rest.strip_suffix('/').unwrap_or(rest);
    if rest.is_empty() {
        return Ok("/".to_string());
    }
    for seg in rest.split('/') {
        if seg.is_empty() || seg.bytes().all(|b| b.is_ascii_digit()) {
            return Err(bad());
        }
    }
    Ok(format!("/{rest}"))
}

fn content_formats(root: &Link) -> Result<Vec<u16>, LinkError> {
    let mut out = Vec::new();
    for v in root.params_named("ct").flatten() {
        for t in v.split_whitespace() {
            let ct: u16 = if digits(t) { t.parse().ok() } else { None }
                .ok_or_else(|| LinkError::ContentFormat(t.chars().take(16).collect()))?;
            if !out.contains(&ct) {
                out.push(ct);
            }
        }
    }
    Ok(out)
}

/// The LwM2M path of a link target under the root path. `None` for a
/// target that is not an object path (not under the root, or with a
/// non-numeric first segment); an error for a numeric path that is invalid
/// (`/65535`, `/1/x`).
fn object_path(root: &str, target: &str) -> Result<Option<Path>, LinkError> {
    let rel = if root == "/" {
        target
    } else {
        match target.strip_prefix(root) {
            Some(r) if r.starts_with('/') => r,
            _ => return Ok(None),
        }
    };
    let first = rel
        .strip_prefix('/')
        .and_then(|r| r.split('/').next())
        .unwrap_or("");
    if first.is_empty() || !first.bytes().all(|b| b.is_ascii_digit()) {
        return Ok(None);
    }
    Ok(Some(rel.parse()?))
}

// ------------------------------------------------------------ discover

/// One entry of a Discover response: a path and what the client reports
/// for it.
#[derive(Clone, Debug, PartialEq, Default)]
pub struct DiscoverEntry {
    pub path: Path,
    pub attributes: Attributes,
}

/// Parses a Discover response (`</3>;ver=1.1,</3/0>;pmin=10,</3/0/7>;dim=8`).
/// `root_path` is the client's alternate path (`/` for most clients); it is
/// stripped from targets. Every target must be a path (a Bootstrap-Discover
/// root link `</>;lwm2m=1.1` gives the root path, its `lwm2m` parameter in
/// `other`).
pub fn parse_discover(text: &str, root_path: &str) -> Result<Vec<DiscoverEntry>, LinkError> {
    let root = normalize_root(root_path)?;
    let prefix = root.trim_end_matches('/');
    parse_links(text)?
        .iter()
        .map(|l| {
            let rel = match l.target.strip_prefix(prefix) {
                Some("") => "/",
                Some(r) => r,
                None => l.target.as_str(),
            };
            Ok(DiscoverEntry {
                path: rel.parse()?,
                attributes: Attributes::from_link_params(&l.params)?,
            })
        })
        .collect()
}

/// Formats a Discover response, as a client answers.
pub fn format_discover(entries: &[DiscoverEntry]) -> String {
    let links: Vec<Link> = entries
        .iter()
        .map(|e| Link {
            target: e.path.to_string(),
            params: e.attributes.to_params(),
        })
        .collect();
    format_links(&links)
}

#[cfg(test)]
mod tests;
