//! `application/vnd.oma.lwm2m+cbor` (11544), the LwM2M CBOR format of LwM2M 1.2.
//!
//! The payload is one CBOR map. A key is an id or an array of ids (a path
//! prefix); a value is a resource value or a nested map whose keys continue
//! the path. Any split of a path is equivalent: `{[3,0,0]: x}` is
//! `{3: {0: {0: x}}}` is `{[3,0]: {0: x}}`.
//!
//! **Decoding** accepts every split, definite and indefinite maps and
//! arrays. Top-level keys start at the object id, except in Write and
//! Create, where the specification lets them start below the request path.
//! The decoder cannot tell the operation, so it decides per value: a path
//! that does not start with the request path is retried with the request
//! path prepended (`{0: x}` at `/3/0` is `/3/0/0`). A full path always wins,
//! so `{3: {0: {1: x}}}` at `/3/0` is `/3/0/1`, never `/3/0/3/0/1`.
//!
//! Limits: a path never has more than 4 ids and maps nest at most 4 deep
//! ([`DecodeError::TooDeep`]); every id is `0..=65534`
//! ([`DecodeError::Path`]); the same path twice is
//! [`crate::node::TreeError::Duplicate`].
//!
//! **Encoding** uses the compact form of the specification's examples: the
//! path shared by the nodes becomes one top-level array key, and the rest
//! of the tree follows as nested maps keyed by single ids. Read `/3/0/6`
//! gives `{[3,0,6]: {0: 1, 1: 5}}`; a composite of `/3/0/0`, `/3/0/9` and
//! `/1/0/1` gives `{[3,0]: {0: .., 9: ..}, [1,0,1]: ..}`.

use minicbor::data::Type;
use minicbor::{Decoder, Encoder};

use super::cbor::{cbor_error, decode_value, encode_value};
use super::{is_multiple, typed, Codec, ContentFormat, DecodeError, EncodeError, Nodes};
use crate::model::Model;
use crate::node::{nodes_from_records, Instance, Node, Resource};
use crate::path::{Path, PathError, MAX_ID};
use crate::value::Value;

const CF: ContentFormat = ContentFormat::Lwm2mCbor;

/// The most ids a path has (`/o/i/r/ri`).
const MAX_PATH_IDS: usize = 4;

/// The deepest map nesting a valid payload needs: one map per id when every
/// key is a single id. Deeper nesting is refused before it is read.
const MAX_MAP_DEPTH: usize = 4;

/// The LwM2M CBOR codec. Carries single nodes and composite payloads; it
/// has no timestamps, so timestamped series are unsupported.
pub struct Lwm2mCborCodec;

impl Codec for Lwm2mCborCodec {
    fn format(&self) -> ContentFormat {
        CF
    }

    /// Encodes `node` as `{[path ids]: content}`.
    fn encode(&self, path: &Path, node: &Node, _model: &dyn Model) -> Result<Vec<u8>, EncodeError> {
        self.encode_composite([(path, node)])
    }

    /// Decodes the node at `path`, accepting keys relative to `path` (Write,
    /// Create) as described in the module documentation.
    fn decode(&self, bytes: &[u8], path: &Path, model: &dyn Model) -> Result<Node, DecodeError> {
        let records = read_records(bytes, Some(path))?;
        let typed_records = type_records(model, records)?;
        Ok(crate::node::node_from_records(
            path,
            typed_records,
            &is_multiple(model),
        )?)
    }

    /// Encodes nodes in path order; see [`Lwm2mCborCodec::encode_composite`]
    /// to keep another order.
    fn encode_nodes(&self, nodes: &Nodes, _model: &dyn Model) -> Result<Vec<u8>, EncodeError> {
        self.encode_composite(nodes)
    }

    fn decode_nodes(
        &self,
        bytes: &[u8],
        requested: Option<&[Path]>,
        model: &dyn Model,
    ) -> Result<Nodes, DecodeError> {
        let records = read_records(bytes, None)?;
        let typed_records = type_records(model, records)?;
        Ok(nodes_from_records(
            requested,
            typed_records,
            &is_multiple(model),
        )?)
    }
}

impl Lwm2mCborCodec {
    /// Encodes several nodes keeping the order given, which a server uses
    /// to answer in the order of a Read-Composite request. Nodes under the
    /// same object instance share one `[o, i]` key, in order of first
    /// appearance; a node alone under its instance gets its full path as key.
    ///
    /// A node whose path lies at or below another node's path is refused
    /// ([`EncodeError::PathMismatch`]): the payload would name a value twice.
    pub fn encode_composite<'a>(
        &self,
        nodes: impl IntoIterator<Item = (&'a Path, &'a Node)>,
    ) -> Result<Vec<u8>, EncodeError> {
        let mut trie = Trie::default();
        for (path, node) in nodes {
            check_node_path(path, node)?;
            trie.insert(path, node)?;
        }
        let mut e = Encoder::new(Vec::new());
        write_top(&mut e, &trie)?;
        Ok(e.into_writer())
    }
}

// ---------------------------------------------------------------- decoding

/// Reads the payload into (path, untyped value) pairs in payload order.
/// With `base`, paths not under it are taken as relative to it.
fn read_records(bytes: &[u8], base: Option<&Path>) -> Result<Vec<(Path, Value)>, DecodeError> {
    let mut d = Decoder::new(bytes);
    let mut reader = Reader {
        base,
        records: Vec::new(),
    };
    match d.datatype().map_err(err)? {
        Type::Map | Type::MapIndef => reader.map(&mut d, &[], 1)?,
        other => {
            return Err(DecodeError::malformed(
                CF,
                format!("payload must be a CBOR map, found {other}"),
            ))
        }
    }
    if d.position() != bytes.len() {
        return Err(DecodeError::TrailingBytes {
            format: CF,
            extra: bytes.len() - d.position(),
        });
    }
    Ok(reader.records)
}

struct Reader<'p> {
    base: Option<&'p Path>,
    records: Vec<(Path, Value)>,
}

impl Reader<'_> {
    /// Reads one map whose keys continue `prefix`. `depth` is this map's
    /// nesting level (1 for the payload itself), bounded by MAX_MAP_DEPTH,
    /// which bounds the recursion.
    fn map(
        &mut self,
        d: &mut Decoder<'_>,
        prefix: &[u16],
        depth: usize,
    ) -> Result<(), DecodeError> {
        if depth > MAX_MAP_DEPTH {
            return Err(too_deep(MAX_MAP_DEPTH));
        }
        match d.map().map_err(err)? {
            Some(len) => {
                // No preallocation from `len`: each entry is read or the
                // input runs out, so a huge count only costs a Truncated.
                for _ in 0..len {
                    self.entry(d, prefix, depth)?;
                }
            }
            None => {
                while !at_break(d)? {
                    self.entry(d, prefix, depth)?;
                }
            }
        }
        Ok(())
    }

    fn entry(
        &mut self,
        d: &mut Decoder<'_>,
        prefix: &[u16],
        depth: usize,
    ) -> Result<(), DecodeError> {
        let mut ids = [0u16; MAX_PATH_IDS];
        for (slot, id) in ids.iter_mut().zip(prefix) {
            *slot = *id;
        }
        let len = read_key(d, &mut ids, prefix.len())?;
        let path_ids = ids.get(..len).unwrap_or(&[]);
        match d.datatype().map_err(err)? {
            Type::Map | Type::MapIndef => {
                if len == MAX_PATH_IDS {
                    // Any key inside would make a fifth id.
                    return Err(too_deep(MAX_PATH_IDS));
                }
                self.map(d, path_ids, depth + 1)
            }
            _ => {
                let value = decode_value(d, CF)?;
                let path = self.resolve(Path::from_ids(path_ids)?);
                self.records.push((path, value));
                Ok(())
            }
        }
    }

    /// A path outside the request path is read as relative to it (Write and
    /// Create). When the joined path would be too long, the path is kept as
    /// is and the tree builder reports it as outside the request.
    fn resolve(&self, path: Path) -> Path {
        let Some(base) = self.base else {
            return path;
        };
        if path.starts_with(base) {
            return path;
        }
        let mut joined = *base;
        for &id in path.ids() {
            match joined.child(id) {
                Ok(p) => joined = p,
                Err(_) => return path,
            }
        }
        joined
    }
}

/// Reads a key (an id or an array of ids) into `ids` after the first
/// `start` entries; returns the new path length.
fn read_key(
    d: &mut Decoder<'_>,
    ids: &mut [u16; MAX_PATH_IDS],
    start: usize,
) -> Result<usize, DecodeError> {
    let mut len = start;
    match d.datatype().map_err(err)? {
        Type::U8 | Type::U16 | Type::U32 | Type::U64 => push_id(ids, &mut len, read_id(d)?)?,
        Type::Array => {
            let n = d.array().map_err(err)?.unwrap_or(0);
            if n == 0 {
                return Err(DecodeError::malformed(CF, "a map key is an empty array"));
            }
            if n > (MAX_PATH_IDS - start) as u64 {
                return Err(too_deep(MAX_PATH_IDS));
            }
            for _ in 0..n {
                push_id(ids, &mut len, read_array_id(d)?)?;
            }
        }
        Type::ArrayIndef => {
            d.array().map_err(err)?;
            while !at_break(d)? {
                push_id(ids, &mut len, read_array_id(d)?)?;
            }
            if len == start {
                return Err(DecodeError::malformed(CF, "a map key is an empty array"));
            }
        }
        other => {
            return Err(DecodeError::malformed(
                CF,
                format!("a map key must be an id or an array of ids, found {other}"),
            ))
        }
    }
    Ok(len)
}

fn push_id(ids: &mut [u16; MAX_PATH_IDS], len: &mut usize, id: u16) -> Result<(), DecodeError> {
    let slot = ids.get_mut(*len).ok_or(too_deep(MAX_PATH_IDS))?;
    *slot = id;
    *len += 1;
    Ok(())
}

fn read_array_id(d: &mut Decoder<'_>) -> Result<u16, DecodeError> {
    match d.datatype().map_err(err)? {
        Type::U8 | Type::U16 | Type::U32 | Type::U64 => read_id(d),
        other => Err(DecodeError::malformed(
            CF,
            format!("a path array holds ids only, found {other}"),
        )),
    }
}

fn read_id(d: &mut Decoder<'_>) -> Result<u16, DecodeError> {
    let v = d.u64().map_err(err)?;
    match u16::try_from(v) {
        Ok(id) if id <= MAX_ID => Ok(id),
        _ => Err(PathError::OutOfRange(u32::try_from(v).unwrap_or(u32::MAX)).into()),
    }
}

/// True (and the break consumed) when an indefinite container ends here.
fn at_break(d: &mut Decoder<'_>) -> Result<bool, DecodeError> {
    if d.datatype().map_err(err)? == Type::Break {
        d.set_position(d.position() + 1);
        return Ok(true);
    }
    Ok(false)
}

fn type_records(
    model: &dyn Model,
    records: Vec<(Path, Value)>,
) -> Result<Vec<(Path, Value)>, DecodeError> {
    records
        .into_iter()
        .map(|(p, v)| Ok((p, typed(model, &p, v)?)))
        .collect()
}

fn err(e: minicbor::decode::Error) -> DecodeError {
    cbor_error(CF, e)
}

fn too_deep(limit: usize) -> DecodeError {
    DecodeError::TooDeep { format: CF, limit }
}

// ---------------------------------------------------------------- encoding

/// The nodes to encode, arranged by path, children in order of first
/// insertion. A trie node holds either a node's content or children.
#[derive(Default)]
struct Trie<'a> {
    node: Option<&'a Node>,
    children: Vec<(u16, Trie<'a>)>,
}

impl<'a> Trie<'a> {
    fn insert(&mut self, path: &Path, node: &'a Node) -> Result<(), EncodeError> {
        let overlap = || EncodeError::PathMismatch {
            path: *path,
            node_depth: node.depth(),
        };
        let mut at = self;
        for &id in path.ids() {
            if at.node.is_some() {
                return Err(overlap());
            }
            let i = match at.children.iter().position(|(c, _)| *c == id) {
                Some(i) => i,
                None => {
                    at.children.push((id, Trie::default()));
                    at.children.len() - 1
                }
            };
            at = match at.children.get_mut(i) {
                Some((_, t)) => t,
                None => return Err(overlap()),
            };
        }
        if at.node.is_some() || !at.children.is_empty() {
            return Err(overlap());
        }
        at.node = Some(node);
        Ok(())
    }

    /// Follows single-child links from here: the ids of the chain and the
    /// trie where it ends (at a node or at a fork).
    fn chain(&self, first: u16) -> (Vec<u16>, &Trie<'a>) {
        let mut ids = vec![first];
        let mut at = self;
        while at.node.is_none() {
            match at.children.as_slice() {
                [(id, next)] => {
                    ids.push(*id);
                    at = next;
                }
                _ => break,
            }
        }
        (ids, at)
    }
}

/// The payload map: one array key per chain from the root.
fn write_top(e: &mut Encoder<Vec<u8>>, root: &Trie<'_>) -> Result<(), EncodeError> {
    cw(e.map(root.children.len() as u64))?;
    for (id, child) in &root.children {
        let (ids, end) = child.chain(*id);
        cw(e.array(ids.len() as u64))?;
        for id in ids {
            cw(e.u16(id))?;
        }
        write_trie_value(e, end)?;
    }
    Ok(())
}

/// Below the top level a chain of one id is a plain id key, a longer chain
/// an array key.
fn write_trie_value(e: &mut Encoder<Vec<u8>>, t: &Trie<'_>) -> Result<(), EncodeError> {
    if let Some(node) = t.node {
        return write_node(e, node);
    }
    cw(e.map(t.children.len() as u64))?;
    for (id, child) in &t.children {
        let (ids, end) = child.chain(*id);
        if let [single] = ids.as_slice() {
            cw(e.u16(*single))?;
        } else {
            cw(e.array(ids.len() as u64))?;
            for id in ids {
                cw(e.u16(id))?;
            }
        }
        write_trie_value(e, end)?;
    }
    Ok(())
}

/// A node's content: a value, or maps keyed by the ids below it.
fn write_node(e: &mut Encoder<Vec<u8>>, node: &Node) -> Result<(), EncodeError> {
    match node {
        Node::Object(o) => {
            cw(e.map(o.instances.len() as u64))?;
            for (&iid, inst) in &o.instances {
                write_id(e, iid)?;
                write_instance(e, inst)?;
            }
            Ok(())
        }
        Node::Instance(i) => write_instance(e, i),
        Node::Resource(r) => write_resource(e, r),
        Node::ResourceInstance { value, .. } => cw(encode_value(e, value)),
    }
}

fn write_instance(e: &mut Encoder<Vec<u8>>, inst: &Instance) -> Result<(), EncodeError> {
    cw(e.map(inst.resources.len() as u64))?;
    for (&rid, r) in &inst.resources {
        write_id(e, rid)?;
        write_resource(e, r)?;
    }
    Ok(())
}

fn write_resource(e: &mut Encoder<Vec<u8>>, r: &Resource) -> Result<(), EncodeError> {
    match r {
        Resource::Single { value, .. } => cw(encode_value(e, value)),
        Resource::Multiple { instances, .. } => {
            cw(e.map(instances.len() as u64))?;
            for (&ri, v) in instances {
                write_id(e, ri)?;
                cw(encode_value(e, v))?;
            }
            Ok(())
        }
    }
}

/// Ids come from the caller's tree; 65535 would produce a payload no
/// decoder accepts.
fn write_id(e: &mut Encoder<Vec<u8>>, id: u16) -> Result<(), EncodeError> {
    if id > MAX_ID {
        return Err(PathError::OutOfRange(id.into()).into());
    }
    cw(e.u16(id))
}

/// A node belongs at a path of its own depth whose last id is its id.
fn check_node_path(path: &Path, node: &Node) -> Result<(), EncodeError> {
    if path.depth() != node.depth() || path.ids().last() != Some(&node.id()) {
        return Err(EncodeError::PathMismatch {
            path: *path,
            node_depth: node.depth(),
        });
    }
    Ok(())
}

/// Writing into a `Vec` cannot fail on I/O; any error is reported as such.
fn cw<T>(r: Result<T, super::cbor::WriteError>) -> Result<(), EncodeError> {
    r.map(|_| ()).map_err(|e| EncodeError::Cbor(e.to_string()))
}

#[cfg(test)]
mod tests;
