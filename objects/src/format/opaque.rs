//! `application/octet-stream` (42): the raw bytes of one opaque value.

use super::{
    resource_type, single_node, single_value, Codec, ContentFormat, DecodeError, EncodeError,
};
use crate::model::{Model, ResourceType};
use crate::node::Node;
use crate::path::Path;
use crate::value::{TypeMismatch, Value};

const CF: ContentFormat = ContentFormat::Opaque;

pub struct OpaqueCodec;

impl Codec for OpaqueCodec {
    fn format(&self) -> ContentFormat {
        CF
    }

    fn encode(
        &self,
        _path: &Path,
        node: &Node,
        _model: &dyn Model,
    ) -> Result<Vec<u8>, EncodeError> {
        match single_value(CF, node)? {
            Value::Opaque(b) => Ok(b.clone()),
            v => Err(EncodeError::ValueType {
                format: CF,
                kind: v.kind(),
            }),
        }
    }

    fn decode(&self, bytes: &[u8], path: &Path, model: &dyn Model) -> Result<Node, DecodeError> {
        // Only an opaque resource can be carried; a known resource of another
        // type is the client's mistake, answered 4.15 upstream.
        match resource_type(model, path) {
            None | Some(ResourceType::Opaque) => {}
            Some(wanted) => {
                return Err(DecodeError::WrongType {
                    path: *path,
                    source: TypeMismatch {
                        found: "opaque",
                        wanted,
                    },
                })
            }
        }
        single_node(CF, path, model, Value::Opaque(bytes.to_vec()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::Registry;
    use crate::node::Resource;

    #[test]
    fn carries_opaque_only() {
        let reg = Registry::with_core();
        let pkg = Path::resource(5, 0, 0);
        let node = OpaqueCodec.decode(&[0, 0xff, 7], &pkg, &reg).unwrap();
        assert_eq!(
            node,
            Node::Resource(Resource::Single {
                id: 0,
                value: Value::Opaque(vec![0, 0xff, 7])
            })
        );
        assert_eq!(OpaqueCodec.encode(&pkg, &node, &reg).unwrap(), [0, 0xff, 7]);
        assert!(matches!(
            OpaqueCodec.decode(b"x", &Path::resource(3, 0, 0), &reg),
            Err(DecodeError::WrongType { .. })
        ));
        let s = Node::Resource(Resource::Single {
            id: 0,
            value: "x".into(),
        });
        assert!(OpaqueCodec.encode(&pkg, &s, &reg).is_err());
    }
}
