//! Built-in definitions of the core objects.
use super::ObjectDef;

pub fn definitions() -> Vec<ObjectDef> {
    Vec::new()
}
