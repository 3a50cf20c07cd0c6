//! The DM and Information Reporting operations a server sends, and the
//! CoAP request each becomes (LwM2M 1.2 Transport "Operation to Method and
//! URI Mapping"; spec-facts §3):
//!
//! | operation | method | options | body |
//! |---|---|---|---|
//! | Read | GET | Accept | |
//! | Discover | GET | Accept 40, `?depth=` (1.2) | |
//! | Write, replace | PUT | Content-Format | node |
//! | Write, partial update | POST | Content-Format | node |
//! | Write-Attributes | PUT | Uri-Query only | |
//! | Execute | POST | Content-Format 0 with arguments | arguments |
//! | Create | POST on /o | Content-Format | new instance |
//! | Delete | DELETE | | |
//! | Observe / cancel | GET | Observe 0 / 1, Accept, attributes as Uri-Query | |
//! | Read-Composite | FETCH on / | Content-Format, Accept | SenML path list |
//! | Write-Composite | iPATCH on / | Content-Format | nodes |
//! | Observe-Composite / cancel | FETCH on / | Observe 0 / 1, Content-Format, Accept | SenML path list |
//!
//! Every Uri-Path is prefixed with the device's alternate root path.
//! Requests are built without token and message id: the CoAP endpoint
//! assigns both when it sends.

use coap_lite::{CoapOption, MessageClass, MessageType, Packet, RequestType};
use lwm2m_objects::format::Nodes;
use lwm2m_objects::link::{Attributes, SECURITY_OBJECTS};
use lwm2m_objects::{Codecs, ContentFormat, Model, Node, Path, Resource, Version};

use super::context::DeviceContext;
use super::error::DmError;
use super::execute::ExecuteArgs;
use super::format_choice::{self, Shape};

/// The most paths one composite request may name.
pub const MAX_COMPOSITE_PATHS: usize = 256;

/// How a Write treats what is already there (LwM2M Core "Write Operation").
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum WriteMode {
    /// PUT: the instance or multiple resource is replaced as a whole.
    Replace,
    /// POST: the given resources are merged in; nothing is deleted.
    PartialUpdate,
}

/// One DM operation towards one device. `format: None` lets the device
/// context choose (see [`format_choice`]); `Some` overrides.
#[derive(Clone, Debug, PartialEq)]
pub enum Operation {
    Read {
        path: Path,
        format: Option<ContentFormat>,
    },
    Discover {
        path: Path,
        /// `?depth=0..3`, LwM2M 1.2 only.
        depth: Option<u8>,
    },
    Write {
        path: Path,
        node: Node,
        mode: WriteMode,
        format: Option<ContentFormat>,
    },
    WriteAttributes {
        path: Path,
        attributes: Attributes,
    },
    Execute {
        path: Path,
        args: ExecuteArgs,
    },
    /// Creates one instance of `object`; `instance: None` lets the device
    /// pick the id (TLV only, see [`format_choice::create_format`]).
    Create {
        object: u16,
        instance: Option<u16>,
        resources: Vec<Resource>,
        format: Option<ContentFormat>,
    },
    Delete {
        path: Path,
    },
    Observe {
        path: Path,
        attributes: Attributes,
        format: Option<ContentFormat>,
    },
    /// Active cancel: GET with Observe 1. RFC 7641 matches it to the
    /// observation by token, so the sender must give it the token of the
    /// original Observe.
    CancelObserve {
        path: Path,
        format: Option<ContentFormat>,
    },
    ReadComposite {
        paths: Vec<Path>,
        format: Option<ContentFormat>,
    },
    WriteComposite {
        nodes: Nodes,
        format: Option<ContentFormat>,
    },
    ObserveComposite {
        paths: Vec<Path>,
        /// Only pmin, pmax, epmin, epmax and con apply (Core 1.2).
        attributes: Attributes,
        format: Option<ContentFormat>,
    },
    /// Must list the same paths as the Observe-Composite it cancels.
    CancelObserveComposite {
        paths: Vec<Path>,
        format: Option<ContentFormat>,
    },
}

impl Operation {
    /// The operation's name, for errors and logs.
    pub fn name(&self) -> &'static str {
        match self {
            Operation::Read { .. } => "Read",
            Operation::Discover { .. } => "Discover",
            Operation::Write { .. } => "Write",
            Operation::WriteAttributes { .. } => "Write-Attributes",
            Operation::Execute { .. } => "Execute",
            Operation::Create { .. } => "Create",
            Operation::Delete { .. } => "Delete",
            Operation::Observe { .. } => "Observe",
            Operation::CancelObserve { .. } => "Cancel-Observe",
            Operation::ReadComposite { .. } => "Read-Composite",
            Operation::WriteComposite { .. } => "Write-Composite",
            Operation::ObserveComposite { .. } => "Observe-Composite",
            Operation::CancelObserveComposite { .. } => "Cancel-Observe-Composite",
        }
    }

    /// Whether the request establishes an observation (Observe 0), so the
    /// sender keeps the exchange open for notifications.
    pub fn is_observe(&self) -> bool {
        matches!(
            self,
            Operation::Observe { .. } | Operation::ObserveComposite { .. }
        )
    }

    /// The single path the operation targets; `/` for composite ones.
    pub fn path(&self) -> Path {
        match self {
            Operation::Read { path, .. }
            | Operation::Discover { path, .. }
            | Operation::Write { path, .. }
            | Operation::WriteAttributes { path, .. }
            | Operation::Execute { path, .. }
            | Operation::Delete { path }
            | Operation::Observe { path, .. }
            | Operation::CancelObserve { path, .. } => *path,
            Operation::Create { object, .. } => Path::object(*object),
            Operation::ReadComposite { .. }
            | Operation::WriteComposite { .. }
            | Operation::ObserveComposite { .. }
            | Operation::CancelObserveComposite { .. } => Path::ROOT,
        }
    }

    /// The format of the response payload this operation asks for (its
    /// Accept option); `None` when it asks for none.
    pub fn accept_format(
        &self,
        device: &DeviceContext,
        model: &dyn Model,
    ) -> Option<ContentFormat> {
        match self {
            Operation::Read { path, format }
            | Operation::Observe { path, format, .. }
            | Operation::CancelObserve { path, format } => Some(format.unwrap_or_else(|| {
                format_choice::node_format(device, Shape::of_target(path, model))
            })),
            Operation::Discover { .. } => Some(ContentFormat::LinkFormat),
            Operation::ReadComposite { format, .. }
            | Operation::ObserveComposite { format, .. }
            | Operation::CancelObserveComposite { format, .. } => {
                Some(format.unwrap_or_else(|| format_choice::composite_format(device)))
            }
            _ => None,
        }
    }

    /// Builds the CoAP request (confirmable, no token, no message id).
    /// Everything the specification forbids is refused here, before
    /// anything is sent.
    pub fn to_request(
        &self,
        device: &DeviceContext,
        codecs: &Codecs,
        model: &dyn Model,
    ) -> Result<Packet, DmError> {
        self.check_protected()?;
        let op = self.name();
        let accept = self.accept_format(device, model);
        let mut req = match self {
            Operation::Read { path, .. } => {
                check_depth(
                    op,
                    path,
                    1..=4,
                    "Read needs an object, instance, resource or resource instance",
                )?;
                request(RequestType::Get, device, path)
            }
            Operation::Discover { path, depth } => {
                check_depth(
                    op,
                    path,
                    1..=3,
                    "Discover targets an object, instance or resource",
                )?;
                let mut req = request(RequestType::Get, device, path);
                if let Some(d) = depth {
                    need_version(device, op, Version::V1_2)?;
                    if *d > 3 {
                        return Err(invalid(op, format!("depth {d} is not 0..=3")));
                    }
                    add_query(&mut req, &format!("depth={d}"));
                }
                req
            }
            Operation::Write {
                path,
                node,
                mode,
                format,
            } => write_request(device, codecs, model, path, node, *mode, *format)?,
            Operation::WriteAttributes { path, attributes } => {
                check_depth(
                    op,
                    path,
                    1..=4,
                    "attributes are set on an object, instance, resource or resource instance",
                )?;
                check_attributes(device, op, path, attributes)?;
                if attributes.is_empty() {
                    return Err(invalid(op, "no attribute given".to_string()));
                }
                let mut req = request(RequestType::Put, device, path);
                add_attribute_queries(&mut req, attributes);
                req
            }
            Operation::Execute { path, args } => {
                check_depth(op, path, 3..=3, "only a resource can be executed")?;
                let mut req = request(RequestType::Post, device, path);
                if !args.is_empty() {
                    set_content_format(&mut req, ContentFormat::Text);
                    req.payload = args.to_string().into_bytes();
                }
                req
            }
            Operation::Create {
                object,
                instance,
                resources,
                format,
            } => create_request(
                device, codecs, model, *object, *instance, resources, *format,
            )?,
            Operation::Delete { path } => {
                check_depth(
                    op,
                    path,
                    2..=4,
                    "Delete targets an instance or a resource instance",
                )?;
                if path.is_resource() {
                    return Err(DmError::InvalidTarget {
                        operation: op,
                        path: *path,
                        reason:
                            "a resource cannot be deleted, only an instance or a resource instance",
                    });
                }
                request(RequestType::Delete, device, path)
            }
            Operation::Observe {
                path, attributes, ..
            } => {
                check_depth(
                    op,
                    path,
                    1..=4,
                    "Observe needs an object, instance, resource or resource instance",
                )?;
                check_attributes(device, op, path, attributes)?;
                let mut req = request(RequestType::Get, device, path);
                req.set_observe_value(0);
                add_attribute_queries(&mut req, attributes);
                req
            }
            Operation::CancelObserve { path, .. } => {
                check_depth(
                    op,
                    path,
                    1..=4,
                    "Observe needs an object, instance, resource or resource instance",
                )?;
                let mut req = request(RequestType::Get, device, path);
                req.set_observe_value(1);
                req
            }
            Operation::ReadComposite { paths, .. }
            | Operation::CancelObserveComposite { paths, .. } => {
                let mut req = paths_request(device, codecs, op, paths, *self.override_format())?;
                if matches!(self, Operation::CancelObserveComposite { .. }) {
                    req.set_observe_value(1);
                }
                req
            }
            Operation::ObserveComposite {
                paths, attributes, ..
            } => {
                let mut req = paths_request(device, codecs, op, paths, *self.override_format())?;
                check_composite_attributes(attributes)?;
                req.set_observe_value(0);
                add_attribute_queries(&mut req, attributes);
                req
            }
            Operation::WriteComposite { nodes, format } => {
                need_version(device, op, Version::V1_1)?;
                check_composite_count(op, nodes.len())?;
                for (path, node) in nodes {
                    check_protected_path(path)?;
                    check_node_at(op, path, node)?;
                    if path.depth() < 3 {
                        return Err(DmError::InvalidTarget {
                            operation: op,
                            path: *path,
                            reason: "Write-Composite writes resources and resource instances",
                        });
                    }
                }
                let format = format.unwrap_or_else(|| format_choice::composite_format(device));
                format_choice::check_body_format(device, format, true)?;
                let body = codecs
                    .get(format.code())
                    .map_err(|_| unsupported(format))?
                    .encode_nodes(nodes, model)?;
                let mut req = request(RequestType::IPatch, device, &Path::ROOT);
                set_content_format(&mut req, format);
                req.payload = body;
                req
            }
        };
        if let Some(f) = accept {
            req.add_option(CoapOption::Accept, uint_option(f.code()));
        }
        Ok(req)
    }

    /// The per-request format of a composite path-list operation.
    fn override_format(&self) -> &Option<ContentFormat> {
        match self {
            Operation::ReadComposite { format, .. }
            | Operation::ObserveComposite { format, .. }
            | Operation::CancelObserveComposite { format, .. } => format,
            _ => &None,
        }
    }

    /// Every object the operation touches, checked against /0 and /21.
    fn check_protected(&self) -> Result<(), DmError> {
        match self {
            Operation::ReadComposite { paths, .. }
            | Operation::ObserveComposite { paths, .. }
            | Operation::CancelObserveComposite { paths, .. } => {
                paths.iter().try_for_each(check_protected_path)
            }
            Operation::WriteComposite { nodes, .. } => {
                nodes.keys().try_for_each(check_protected_path)
            }
            other => check_protected_path(&other.path()),
        }
    }
}

fn check_protected_path(path: &Path) -> Result<(), DmError> {
    match path.object_id() {
        Some(o) if SECURITY_OBJECTS.contains(&o) => Err(DmError::ProtectedObject(o)),
        _ => Ok(()),
    }
}

fn invalid(operation: &'static str, reason: String) -> DmError {
    DmError::InvalidRequest { operation, reason }
}

fn unsupported(format: ContentFormat) -> DmError {
    DmError::FormatRefused {
        format,
        reason: "no codec for this format",
    }
}

fn check_depth(
    operation: &'static str,
    path: &Path,
    depths: std::ops::RangeInclusive<usize>,
    reason: &'static str,
) -> Result<(), DmError> {
    if depths.contains(&path.depth()) {
        Ok(())
    } else {
        Err(DmError::InvalidTarget {
            operation,
            path: *path,
            reason,
        })
    }
}

fn need_version(
    device: &DeviceContext,
    operation: &'static str,
    needed: Version,
) -> Result<(), DmError> {
    if device.at_least(needed) {
        Ok(())
    } else {
        Err(DmError::VersionTooOld {
            operation,
            needed,
            device: device.lwm2m_version,
        })
    }
}

fn check_composite_count(operation: &'static str, n: usize) -> Result<(), DmError> {
    if n == 0 {
        return Err(invalid(operation, "no path given".to_string()));
    }
    if n > MAX_COMPOSITE_PATHS {
        return Err(invalid(
            operation,
            format!("{n} paths exceed the limit of {MAX_COMPOSITE_PATHS}"),
        ));
    }
    Ok(())
}

/// The node must be what lives at `path`: same depth, same last id.
fn check_node_at(operation: &'static str, path: &Path, node: &Node) -> Result<(), DmError> {
    if node.depth() == path.depth() && path.ids().last() == Some(&node.id()) {
        Ok(())
    } else {
        Err(DmError::InvalidTarget {
            operation,
            path: *path,
            reason: "the node's kind or id does not match the path",
        })
    }
}

/// Write-Attributes and Observe attributes: the Core's relations between
/// values, no Discover-only attribute, `gt`/`lt`/`st`/`edge` only on
/// resources and resource instances, the 1.2 attributes only for 1.2.
fn check_attributes(
    device: &DeviceContext,
    operation: &'static str,
    path: &Path,
    a: &Attributes,
) -> Result<(), DmError> {
    a.validate()?;
    if a.dim.is_some()
        || a.ssid.is_some()
        || a.uri.is_some()
        || a.ver.is_some()
        || !a.other.is_empty()
    {
        return Err(invalid(
            operation,
            "only notification attributes can be written (dim, ssid, uri, ver and others are Discover-only)".to_string(),
        ));
    }
    let value_attrs = a.gt.is_some() || a.lt.is_some() || a.st.is_some() || a.edge.is_some();
    if value_attrs && path.depth() < 3 {
        return Err(DmError::InvalidTarget {
            operation,
            path: *path,
            reason: "gt, lt, st and edge apply to resources and resource instances only",
        });
    }
    if (a.edge.is_some() || a.con.is_some() || a.hqmax.is_some()) && !device.at_least(Version::V1_2)
    {
        return Err(DmError::VersionTooOld {
            operation,
            needed: Version::V1_2,
            device: device.lwm2m_version,
        });
    }
    Ok(())
}

/// Observe-Composite takes pmin, pmax, epmin, epmax and con only.
fn check_composite_attributes(a: &Attributes) -> Result<(), DmError> {
    a.validate()?;
    let only_allowed = Attributes {
        pmin: a.pmin,
        pmax: a.pmax,
        epmin: a.epmin,
        epmax: a.epmax,
        con: a.con,
        ..Attributes::default()
    };
    if &only_allowed != a {
        return Err(invalid(
            "Observe-Composite",
            "only pmin, pmax, epmin, epmax and con apply to a composite observation".to_string(),
        ));
    }
    Ok(())
}

fn write_request(
    device: &DeviceContext,
    codecs: &Codecs,
    model: &dyn Model,
    path: &Path,
    node: &Node,
    mode: WriteMode,
    format: Option<ContentFormat>,
) -> Result<Packet, DmError> {
    let op = "Write";
    check_depth(
        op,
        path,
        2..=4,
        "Write targets an instance, resource or resource instance (POST on an object is Create)",
    )?;
    check_node_at(op, path, node)?;
    let method = match mode {
        WriteMode::Replace => RequestType::Put,
        WriteMode::PartialUpdate => {
            // Core: partial update of /o/i/r only for a multiple resource.
            let single = match (path.depth(), node) {
                (3, Node::Resource(Resource::Single { .. })) => true,
                (3, _) => path
                    .object_id()
                    .zip(path.resource_id())
                    .and_then(|(o, r)| model.resource(o, r))
                    .is_some_and(|d| !d.multiple),
                (4, _) => true,
                _ => false,
            };
            if single {
                return Err(DmError::InvalidTarget {
                    operation: op,
                    path: *path,
                    reason: "partial update targets an instance or a multiple resource",
                });
            }
            RequestType::Post
        }
    };
    let format = format.unwrap_or_else(|| format_choice::node_format(device, Shape::of_node(node)));
    format_choice::check_body_format(device, format, false)?;
    let body = codecs.encode(format, path, node, model)?;
    let mut req = request(method, device, path);
    set_content_format(&mut req, format);
    req.payload = body;
    Ok(req)
}

fn create_request(
    device: &DeviceContext,
    codecs: &Codecs,
    model: &dyn Model,
    object: u16,
    instance: Option<u16>,
    resources: &[Resource],
    format: Option<ContentFormat>,
) -> Result<Packet, DmError> {
    let op = "Create";
    let path = Path::from_ids(&[object]).map_err(|e| invalid(op, e.to_string()))?;
    if let Some(i) = instance {
        Path::from_ids(&[object, i]).map_err(|e| invalid(op, e.to_string()))?;
    }
    let mut inst = lwm2m_objects::Instance::new(instance.unwrap_or(0));
    for r in resources {
        if inst.resources.insert(r.id(), r.clone()).is_some() {
            return Err(invalid(op, format!("resource {} is given twice", r.id())));
        }
    }
    let format = format.unwrap_or_else(|| format_choice::create_format(device, instance.is_some()));
    format_choice::check_body_format(device, format, false)?;
    let body = match (instance, format) {
        // Bare resources: the device picks the id.
        (None, ContentFormat::Tlv) => {
            let ipath = Path::instance(object, 0);
            codecs.encode(format, &ipath, &lwm2m_objects::Node::Instance(inst), model)?
        }
        (None, _) => {
            return Err(DmError::FormatRefused {
                format,
                reason: "only TLV can create an instance without an id; give an instance id",
            })
        }
        (Some(_), ContentFormat::Text | ContentFormat::Opaque | ContentFormat::Cbor) => {
            return Err(DmError::FormatRefused {
                format,
                reason: "Create carries an instance: use TLV, SenML or LwM2M CBOR",
            })
        }
        (Some(_), _) => {
            let node = Node::Object(lwm2m_objects::Object::new(object).with(inst));
            codecs.encode(format, &path, &node, model)?
        }
    };
    let mut req = request(RequestType::Post, device, &path);
    set_content_format(&mut req, format);
    req.payload = body;
    Ok(req)
}

/// FETCH on `/` with a SenML list of paths (Read-/Observe-Composite).
fn paths_request(
    device: &DeviceContext,
    codecs: &Codecs,
    op: &'static str,
    paths: &[Path],
    format: Option<ContentFormat>,
) -> Result<Packet, DmError> {
    need_version(device, op, Version::V1_1)?;
    check_composite_count(op, paths.len())?;
    if let Some(p) = paths.iter().find(|p| p.is_root()) {
        return Err(DmError::InvalidTarget {
            operation: op,
            path: *p,
            reason: "the root is not a readable path",
        });
    }
    // The body is a path list, which only SenML carries; an override
    // naming LwM2M CBOR applies to the Accept only.
    let body_format = match format {
        Some(f @ (ContentFormat::SenmlJson | ContentFormat::SenmlCbor)) => f,
        Some(f) => {
            format_choice::check_body_format(device, f, true)?;
            format_choice::paths_format(device)
        }
        None => format_choice::paths_format(device),
    };
    format_choice::check_paths_format(body_format)?;
    let body = codecs
        .get(body_format.code())
        .map_err(|_| unsupported(body_format))?
        .encode_paths(paths)?;
    let mut req = request(RequestType::Fetch, device, &Path::ROOT);
    set_content_format(&mut req, body_format);
    req.payload = body;
    Ok(req)
}

/// A confirmable request with the Uri-Path of `path` under the device's root.
fn request(method: RequestType, device: &DeviceContext, path: &Path) -> Packet {
    let mut p = Packet::new();
    p.header.set_type(MessageType::Confirmable);
    p.header.code = MessageClass::Request(method);
    for seg in device.root_segments() {
        p.add_option(CoapOption::UriPath, seg.as_bytes().to_vec());
    }
    for id in path.ids() {
        p.add_option(CoapOption::UriPath, id.to_string().into_bytes());
    }
    p
}

/// A CoAP uint option value: big-endian, no leading zero bytes.
pub(crate) fn uint_option(v: u16) -> Vec<u8> {
    let b = v.to_be_bytes();
    match v {
        0 => Vec::new(),
        1..=255 => vec![b[1]],
        _ => b.to_vec(),
    }
}

fn set_content_format(p: &mut Packet, f: ContentFormat) {
    p.clear_option(CoapOption::ContentFormat);
    p.add_option(CoapOption::ContentFormat, uint_option(f.code()));
}

fn add_query(p: &mut Packet, q: &str) {
    p.add_option(CoapOption::UriQuery, q.as_bytes().to_vec());
}

/// One Uri-Query option per attribute (`pmin=10`, `pmax=60`, `lt`).
fn add_attribute_queries(p: &mut Packet, a: &Attributes) {
    let q = a.to_query();
    for part in q.split('&').filter(|s| !s.is_empty()) {
        add_query(p, part);
    }
}
