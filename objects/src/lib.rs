#![doc = include_str!("../README.md")]

pub mod format;
pub mod hex;
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
