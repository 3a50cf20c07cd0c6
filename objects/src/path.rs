//! LwM2M paths: `/`, `/o`, `/o/i`, `/o/i/r`, `/o/i/r/ri`.
//!
//! Every identifier is a 16-bit unsigned integer, but 65535 is reserved by the
//! specification (it marks "no instance" in TLV object links and is never a
//! valid id on the wire), so the parser accepts `0..=65534` only.

use std::fmt;
use std::str::FromStr;

/// The largest identifier a path may carry; 65535 is reserved.
pub const MAX_ID: u16 = 65534;

/// A path into the object tree, from the root down to a resource instance.
///
/// Ordering is the natural tree order (`/3 < /3/0 < /3/0/0 < /3/1`), which is the
/// order encoders emit entries in.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
pub struct Path {
    ids: [u16; 4],
    len: u8,
}

/// Why a string or an id list is not a valid LwM2M path.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PathError {
    #[error("path must start with '/'")]
    MissingLeadingSlash,
    #[error("path has more than 4 segments")]
    TooDeep,
    #[error("path segment {0:?} is empty")]
    EmptySegment(usize),
    #[error("path segment {0:?} is not a decimal number")]
    NotANumber(String),
    #[error("id {0} is out of range (0..=65534; 65535 is reserved)")]
    OutOfRange(u32),
}

impl Path {
    /// The root path `/`.
    pub const ROOT: Path = Path {
        ids: [0; 4],
        len: 0,
    };

    /// Builds a path from ids, checking count and range.
    pub fn from_ids(ids: &[u16]) -> Result<Path, PathError> {
        if ids.len() > 4 {
            return Err(PathError::TooDeep);
        }
        let mut p = Path::ROOT;
        for &id in ids {
            if id > MAX_ID {
                return Err(PathError::OutOfRange(id.into()));
            }
            p.ids[p.len as usize] = id;
            p.len += 1;
        }
        Ok(p)
    }

    /// `/o`
    pub fn object(o: u16) -> Path {
        Path {
            ids: [o, 0, 0, 0],
            len: 1,
        }
    }
    /// `/o/i`
    pub fn instance(o: u16, i: u16) -> Path {
        Path {
            ids: [o, i, 0, 0],
            len: 2,
        }
    }
    /// `/o/i/r`
    pub fn resource(o: u16, i: u16, r: u16) -> Path {
        Path {
            ids: [o, i, r, 0],
            len: 3,
        }
    }
    /// `/o/i/r/ri`
    pub fn resource_instance(o: u16, i: u16, r: u16, ri: u16) -> Path {
        Path {
            ids: [o, i, r, ri],
            len: 4,
        }
    }

    /// The ids from the object down; empty for the root.
    pub fn ids(&self) -> &[u16] {
        &self.ids[..self.len as usize]
    }
    /// Number of segments: 0 (root) to 4 (resource instance).
    pub fn depth(&self) -> usize {
        self.len as usize
    }
    pub fn is_root(&self) -> bool {
        self.len == 0
    }
    pub fn object_id(&self) -> Option<u16> {
        self.ids().first().copied()
    }
    pub fn instance_id(&self) -> Option<u16> {
        self.ids().get(1).copied()
    }
    pub fn resource_id(&self) -> Option<u16> {
        self.ids().get(2).copied()
    }
    pub fn resource_instance_id(&self) -> Option<u16> {
        self.ids().get(3).copied()
    }
    pub fn is_object(&self) -> bool {
        self.len == 1
    }
    pub fn is_instance(&self) -> bool {
        self.len == 2
    }
    pub fn is_resource(&self) -> bool {
        self.len == 3
    }
    pub fn is_resource_instance(&self) -> bool {
        self.len == 4
    }

    /// This path with one more segment.
    pub fn child(&self, id: u16) -> Result<Path, PathError> {
        if self.len == 4 {
            return Err(PathError::TooDeep);
        }
        if id > MAX_ID {
            return Err(PathError::OutOfRange(id.into()));
        }
        let mut p = *self;
        p.ids[p.len as usize] = id;
        p.len += 1;
        Ok(p)
    }

    /// The enclosing path, or `None` at the root.
    pub fn parent(&self) -> Option<Path> {
        if self.len == 0 {
            return None;
        }
        let mut p = *self;
        p.len -= 1;
        p.ids[p.len as usize] = 0;
        Some(p)
    }

    /// True when `self` is `other` or lies below it.
    pub fn starts_with(&self, other: &Path) -> bool {
        self.len >= other.len && self.ids[..other.len as usize] == other.ids[..other.len as usize]
    }

    /// Parses a path that may lack the leading slash and may end in one
    /// (`3/0/`), as found in SenML and LwM2M JSON base names.
    pub fn parse_lenient(s: &str) -> Result<Path, PathError> {
        let s = s.strip_prefix('/').unwrap_or(s);
        let s = s.strip_suffix('/').unwrap_or(s);
        if s.is_empty() {
            return Ok(Path::ROOT);
        }
        parse_segments(s)
    }
}

fn parse_segments(s: &str) -> Result<Path, PathError> {
    let mut p = Path::ROOT;
    for (i, seg) in s.split('/').enumerate() {
        if p.len == 4 {
            return Err(PathError::TooDeep);
        }
        p = p.child(parse_id(seg, i)?)?;
    }
    Ok(p)
}

fn parse_id(seg: &str, index: usize) -> Result<u16, PathError> {
    if seg.is_empty() {
        return Err(PathError::EmptySegment(index));
    }
    // Leading '+' or whitespace are accepted by u32::from_str; an id is digits only.
    if seg.len() > 5 || !seg.bytes().all(|b| b.is_ascii_digit()) {
        return Err(PathError::NotANumber(seg.chars().take(16).collect()));
    }
    let v: u32 = seg
        .parse()
        .map_err(|_| PathError::NotANumber(seg.to_string()))?;
    if v > MAX_ID as u32 {
        return Err(PathError::OutOfRange(v));
    }
    Ok(v as u16)
}

impl FromStr for Path {
    type Err = PathError;

    /// Strict form: a leading `/`, no trailing `/` except for the root `/`.
    fn from_str(s: &str) -> Result<Path, PathError> {
        let rest = s.strip_prefix('/').ok_or(PathError::MissingLeadingSlash)?;
        if rest.is_empty() {
            return Ok(Path::ROOT);
        }
        parse_segments(rest)
    }
}

impl fmt::Display for Path {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.len == 0 {
            return f.write_str("/");
        }
        for id in self.ids() {
            write!(f, "/{id}")?;
        }
        Ok(())
    }
}

impl fmt::Debug for Path {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Path({self})")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_every_depth() {
        assert_eq!("/".parse::<Path>().unwrap(), Path::ROOT);
        assert_eq!("/3".parse::<Path>().unwrap(), Path::object(3));
        assert_eq!("/3/0".parse::<Path>().unwrap(), Path::instance(3, 0));
        assert_eq!("/3/0/7".parse::<Path>().unwrap(), Path::resource(3, 0, 7));
        assert_eq!(
            "/3/0/7/1".parse::<Path>().unwrap(),
            Path::resource_instance(3, 0, 7, 1)
        );
        assert_eq!(
            "/65534/65534".parse::<Path>().unwrap().ids(),
            &[65534, 65534]
        );
    }

    #[test]
    fn prints_what_it_parses() {
        for s in ["/", "/0", "/3/0", "/5/0/1", "/3/0/7/65534"] {
            assert_eq!(s.parse::<Path>().unwrap().to_string(), s);
        }
    }

    #[test]
    fn rejects_malformed() {
        use PathError::*;
        let bad: &[(&str, PathError)] = &[
            ("", MissingLeadingSlash),
            ("3/0", MissingLeadingSlash),
            ("/3/", EmptySegment(1)),
            ("//3", EmptySegment(0)),
            ("/3/0/1/2/3", TooDeep),
            ("/65535", OutOfRange(65535)),
            ("/99999", OutOfRange(99999)),
            ("/+3", NotANumber("+3".into())),
            ("/3a", NotANumber("3a".into())),
            ("/-1", NotANumber("-1".into())),
            ("/123456", NotANumber("123456".into())),
        ];
        for (s, e) in bad {
            assert_eq!(s.parse::<Path>().as_ref(), Err(e), "{s:?}");
        }
    }

    #[test]
    fn lenient_accepts_base_names() {
        assert_eq!(Path::parse_lenient("/3/0/").unwrap(), Path::instance(3, 0));
        assert_eq!(
            Path::parse_lenient("3/0/1").unwrap(),
            Path::resource(3, 0, 1)
        );
        assert_eq!(Path::parse_lenient("").unwrap(), Path::ROOT);
        assert!(Path::parse_lenient("/3//").is_err());
    }

    #[test]
    fn tree_order_and_relations() {
        let a = Path::object(3);
        let b = Path::instance(3, 0);
        let c = Path::resource(3, 0, 0);
        let d = Path::instance(3, 1);
        assert!(a < b && b < c && c < d);
        assert!(c.starts_with(&a) && c.starts_with(&b) && !c.starts_with(&d));
        assert_eq!(c.parent(), Some(b));
        assert_eq!(Path::ROOT.parent(), None);
        assert_eq!(
            Path::resource_instance(1, 2, 3, 4).child(5),
            Err(PathError::TooDeep)
        );
        assert_eq!(b.child(65535), Err(PathError::OutOfRange(65535)));
    }
}
