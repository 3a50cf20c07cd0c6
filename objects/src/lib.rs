//! The LwM2M data model and content-format codecs shared by the server, the
//! bootstrap server and the simulated clients. No I/O, no async.
//!
//! - [`path`]: `/o/i/r/ri` paths with range checks.
//! - [`model`]: object and resource definitions, the built-in core objects and
//!   the OMA DDF XML loader.
//! - [`value`] and [`node`]: typed values and the object tree.
//! - [`mod@format`]: every LwM2M content format behind one registry, [`Codecs`].
//! - [`link`]: CoRE link format, LwM2M attributes and registration payloads.
//!
//! Decoders accept anything a peer can send and answer with a typed error;
//! none panics, recurses without bound or allocates more than a small
//! multiple of its input.

pub mod format;
pub mod link;
pub mod model;
pub mod node;
pub mod path;
pub mod value;

pub use format::{Codec, Codecs, ContentFormat, DecodeError, EncodeError};
pub use model::{Model, NoModel, ObjectDef, Registry, ResourceDef, ResourceType, Version};
pub use node::{Instance, Node, Object, Record, Resource, TimestampedNode};
pub use path::{Path, PathError};
pub use value::{ObjLnk, Value};
