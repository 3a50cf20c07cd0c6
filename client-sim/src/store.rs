//! The client's object tree, checked against the object model on every access.
//!
//! Values live as `lwm2m_objects` nodes; the definitions come from a
//! [`Registry`], so that a Write to a read-only resource, a value of the wrong
//! type or an Execute of a plain value is refused the way a real device refuses
//! it, from the model rather than from special cases.

use std::collections::BTreeMap;

use lwm2m_objects::{
    Instance, Model, Node, Object, Path, Registry, Resource, ResourceDef, ResourceType, Value,
};

/// Why an operation on the tree is refused; each maps to one CoAP code.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum OpError {
    #[error("{0} not found")]
    NotFound(Path),
    #[error("method not allowed: {0}")]
    MethodNotAllowed(String),
    #[error("bad request: {0}")]
    BadRequest(String),
    #[error("access to {0} is not authorized")]
    Unauthorized(Path),
    #[error("not acceptable: {0}")]
    NotAcceptable(String),
    #[error("unsupported content format {0}")]
    UnsupportedFormat(u16),
    #[error("internal error: {0}")]
    Internal(String),
}

/// Who asks: the server is held to the model's operations, the device itself
/// (sensors, state machines, the test API) is not, but both are type-checked.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Actor {
    Server,
    Device,
}

/// The core objects' model, built once per process: a fleet's devices share its
/// definitions (a clone copies a map of shared pointers, not the definitions).
pub fn core_model() -> Registry {
    static CORE: std::sync::LazyLock<Registry> = std::sync::LazyLock::new(Registry::with_core);
    CORE.clone()
}

/// The object tree with its model.
#[derive(Debug, Clone)]
pub struct ObjectStore {
    model: Registry,
    objects: BTreeMap<u16, Object>,
}

impl ObjectStore {
    /// An empty tree hosting `objects` (each must be known to the model).
    pub fn new(model: Registry, objects: &[u16]) -> ObjectStore {
        let objects = objects
            .iter()
            .filter(|o| model.object(**o).is_some())
            .map(|o| (*o, Object::new(*o)))
            .collect();
        ObjectStore { model, objects }
    }

    pub fn model(&self) -> &Registry {
        &self.model
    }

    /// Hosted object ids with their instance ids, for the registration payload.
    pub fn layout(&self) -> Vec<(u16, Vec<u16>)> {
        self.objects
            .values()
            .map(|o| (o.id, o.instances.keys().copied().collect()))
            .collect()
    }

    pub fn has_object(&self, oid: u16) -> bool {
        self.objects.contains_key(&oid)
    }

    /// Whether the node at `path` exists (executable resources exist when the
    /// model defines them and their instance exists).
    pub fn exists(&self, path: &Path) -> bool {
        match *path.ids() {
            [] => true,
            [o] => self.objects.contains_key(&o),
            [o, i] => self.instance(o, i).is_some(),
            [o, i, r] => {
                self.instance(o, i)
                    .is_some_and(|inst| inst.resources.contains_key(&r))
                    || (self.instance(o, i).is_some()
                        && self.def(o, r).is_some_and(|d| d.operations.executable()))
            }
            [o, i, r, ri] => matches!(
                self.instance(o, i).and_then(|x| x.resources.get(&r)),
                Some(Resource::Multiple { instances, .. }) if instances.contains_key(&ri)
            ),
            _ => false,
        }
    }

    pub fn def(&self, oid: u16, rid: u16) -> Option<&ResourceDef> {
        self.model.resource(oid, rid)
    }

    fn instance(&self, oid: u16, iid: u16) -> Option<&Instance> {
        self.objects.get(&oid).and_then(|o| o.instances.get(&iid))
    }

    /// The value of a single resource or resource instance, unchecked (device side).
    pub fn value(&self, path: &Path) -> Option<&Value> {
        let (o, i, r) = (path.object_id()?, path.instance_id()?, path.resource_id()?);
        match (
            self.instance(o, i)?.resources.get(&r)?,
            path.resource_instance_id(),
        ) {
            (Resource::Single { value, .. }, None) => Some(value),
            (Resource::Multiple { instances, .. }, Some(ri)) => instances.get(&ri),
            _ => None,
        }
    }

    /// Reads the node at `path`. The server sees only readable resources; a
    /// direct read of a non-readable one is 4.05.
    pub fn read(&self, path: &Path, actor: Actor) -> Result<Node, OpError> {
        let server = actor == Actor::Server;
        let readable =
            |o: u16, r: u16| !server || self.def(o, r).is_none_or(|d| d.operations.readable());
        let filter = |o: u16, inst: &Instance| Instance {
            id: inst.id,
            resources: inst
                .resources
                .iter()
                .filter(|(r, _)| readable(o, **r))
                .map(|(k, v)| (*k, v.clone()))
                .collect(),
        };
        match *path.ids() {
            [] => Err(OpError::MethodNotAllowed("read of the root".into())),
            [o] => {
                let obj = self.objects.get(&o).ok_or(OpError::NotFound(*path))?;
                Ok(Node::Object(Object {
                    id: o,
                    instances: obj
                        .instances
                        .values()
                        .map(|i| (i.id, filter(o, i)))
                        .collect(),
                }))
            }
            [o, i] => {
                let inst = self.instance(o, i).ok_or(OpError::NotFound(*path))?;
                Ok(Node::Instance(filter(o, inst)))
            }
            [o, i, r] | [o, i, r, _] => {
                let inst = self.instance(o, i).ok_or(OpError::NotFound(*path))?;
                let res = inst.resources.get(&r);
                if res.is_none() && !self.exists(path) {
                    return Err(OpError::NotFound(*path));
                }
                if !readable(o, r) || res.is_none() {
                    return Err(OpError::MethodNotAllowed(format!("{path} is not readable")));
                }
                let res = res.ok_or(OpError::NotFound(*path))?;
                match (path.resource_instance_id(), res) {
                    (None, r) => Ok(Node::Resource(r.clone())),
                    (Some(ri), Resource::Multiple { instances, .. }) => instances
                        .get(&ri)
                        .map(|v| Node::ResourceInstance {
                            id: ri,
                            value: v.clone(),
                        })
                        .ok_or(OpError::NotFound(*path)),
                    (Some(_), Resource::Single { .. }) => Err(OpError::NotFound(*path)),
                }
            }
            _ => Err(OpError::NotFound(*path)),
        }
    }

    /// Checks one value against the definition and converts it to the declared type.
    fn check_value(
        &self,
        oid: u16,
        rid: u16,
        value: Value,
        actor: Actor,
    ) -> Result<(&ResourceDef, Value), OpError> {
        let def = self.def(oid, rid).ok_or_else(|| {
            OpError::NotFound(Path::from_ids(&[oid, 0, rid]).unwrap_or(Path::ROOT))
        })?;
        if actor == Actor::Server && !def.operations.writable() {
            return Err(OpError::MethodNotAllowed(format!(
                "resource {oid}/x/{rid} ({}) is not writable",
                def.name
            )));
        }
        if def.kind == ResourceType::None {
            return Err(OpError::MethodNotAllowed(format!(
                "resource {oid}/x/{rid} is executable, not a value"
            )));
        }
        let v = value
            .coerce(def.kind)
            .map_err(|e| OpError::BadRequest(format!("{oid}/x/{rid}: {e}")))?;
        Ok((def, v))
    }

    /// Checks a resource against its definition, returning it with typed values.
    fn check_resource(&self, oid: u16, res: Resource, actor: Actor) -> Result<Resource, OpError> {
        match res {
            Resource::Single { id, value } => {
                let (def, value) = self.check_value(oid, id, value, actor)?;
                if def.multiple {
                    return Err(OpError::BadRequest(format!(
                        "resource {oid}/x/{id} is multiple; a single value was given"
                    )));
                }
                Ok(Resource::Single { id, value })
            }
            Resource::Multiple { id, instances } => {
                let mut out = BTreeMap::new();
                for (ri, v) in instances {
                    let (def, v) = self.check_value(oid, id, v, actor)?;
                    if !def.multiple {
                        return Err(OpError::BadRequest(format!(
                            "resource {oid}/x/{id} is single; instances were given"
                        )));
                    }
                    out.insert(ri, v);
                }
                Ok(Resource::Multiple { id, instances: out })
            }
        }
    }

    /// Write (replace when `replace`, else partial update) of `node` at `path`.
    /// Every resource is checked before anything changes, so a refused write
    /// leaves the tree as it was.
    pub fn write(
        &mut self,
        path: &Path,
        node: Node,
        replace: bool,
        actor: Actor,
    ) -> Result<(), OpError> {
        if actor == Actor::Server && path.object_id() == Some(0) {
            return Err(OpError::Unauthorized(*path));
        }
        match (path.ids(), node) {
            (&[o, i], Node::Instance(inst)) => {
                if !self.exists(path) {
                    return Err(OpError::NotFound(*path));
                }
                let checked = inst
                    .resources
                    .into_values()
                    .map(|r| self.check_resource(o, r, actor))
                    .collect::<Result<Vec<_>, _>>()?;
                let target = self.instance_mut(o, i).ok_or(OpError::NotFound(*path))?;
                for r in checked {
                    merge_resource(target, r, replace);
                }
                Ok(())
            }
            (&[o, i, r], Node::Resource(res)) if res.id() == r => {
                if self.instance(o, i).is_none() {
                    return Err(OpError::NotFound(*path));
                }
                let res = self.check_resource(o, res, actor)?;
                if !replace && matches!(res, Resource::Single { .. }) {
                    return Err(OpError::MethodNotAllowed(
                        "partial update of a single resource".into(),
                    ));
                }
                let target = self.instance_mut(o, i).ok_or(OpError::NotFound(*path))?;
                merge_resource(target, res, replace);
                Ok(())
            }
            (&[o, i, r, ri], Node::ResourceInstance { id, value }) if id == ri => {
                if self.instance(o, i).is_none() {
                    return Err(OpError::NotFound(*path));
                }
                let (def, value) = self.check_value(o, r, value, actor)?;
                if !def.multiple {
                    return Err(OpError::NotFound(*path));
                }
                let target = self.instance_mut(o, i).ok_or(OpError::NotFound(*path))?;
                let one = Resource::Multiple {
                    id: r,
                    instances: BTreeMap::from([(ri, value)]),
                };
                merge_resource(target, one, false);
                Ok(())
            }
            (&[_], _) | (&[], _) => Err(OpError::MethodNotAllowed(
                "write on an object or the root".into(),
            )),
            (_, _) => Err(OpError::BadRequest(
                "payload does not match the target path".into(),
            )),
        }
    }

    fn instance_mut(&mut self, oid: u16, iid: u16) -> Option<&mut Instance> {
        self.objects
            .get_mut(&oid)
            .and_then(|o| o.instances.get_mut(&iid))
    }

    /// Sets one value from the device side (sensors, state machines, tests):
    /// type-checked, operations not enforced. Creates the resource if the
    /// model defines it and its instance exists.
    pub fn set(&mut self, path: &Path, value: Value) -> Result<(), OpError> {
        let node = match path.resource_instance_id() {
            Some(ri) => Node::ResourceInstance { id: ri, value },
            None => Node::Resource(Resource::Single {
                id: path.resource_id().ok_or(OpError::NotFound(*path))?,
                value,
            }),
        };
        self.write(path, node, true, Actor::Device)
    }

    /// Sets a whole multiple resource from the device side.
    pub fn set_multiple(
        &mut self,
        path: &Path,
        instances: BTreeMap<u16, Value>,
    ) -> Result<(), OpError> {
        let id = path.resource_id().ok_or(OpError::NotFound(*path))?;
        self.write(
            path,
            Node::Resource(Resource::Multiple { id, instances }),
            true,
            Actor::Device,
        )
    }

    /// Adds an empty instance (device side, or after a Create is checked).
    pub fn add_instance(&mut self, oid: u16, iid: u16) -> Result<(), OpError> {
        let obj = self
            .objects
            .get_mut(&oid)
            .ok_or(OpError::NotFound(Path::object(oid)))?;
        if obj.instances.contains_key(&iid) {
            return Err(OpError::BadRequest(format!("instance /{oid}/{iid} exists")));
        }
        obj.instances.insert(iid, Instance::new(iid));
        Ok(())
    }

    /// Create: a new instance of a multi-instance object from the server's
    /// payload. Read-only values are ignored (LwM2M 1.2 Core, Create
    /// Operation); an id already in use is refused. Returns the new id.
    pub fn create(&mut self, oid: u16, iid: Option<u16>, inst: Instance) -> Result<u16, OpError> {
        let path = Path::object(oid);
        if oid == 0 {
            return Err(OpError::Unauthorized(path));
        }
        let def = self.model.object(oid).ok_or(OpError::NotFound(path))?;
        let multiple = def.multiple;
        let obj = self.objects.get(&oid).ok_or(OpError::NotFound(path))?;
        if !multiple && !obj.instances.is_empty() {
            return Err(OpError::MethodNotAllowed(format!(
                "object {oid} is single-instance and has its instance"
            )));
        }
        let iid = match iid {
            Some(i) if obj.instances.contains_key(&i) => {
                return Err(OpError::BadRequest(format!("instance /{oid}/{i} exists")))
            }
            Some(i) => i,
            None => (0..=lwm2m_objects::path::MAX_ID)
                .find(|i| !obj.instances.contains_key(i))
                .ok_or_else(|| OpError::BadRequest("no free instance id".into()))?,
        };
        let mut checked = Vec::new();
        for r in inst.resources.into_values() {
            let rid = r.id();
            match self.def(oid, rid) {
                Some(d) if !d.operations.writable() && d.kind != ResourceType::None => continue,
                _ => checked.push(self.check_resource(oid, r, Actor::Server)?),
            }
        }
        self.add_instance(oid, iid)?;
        let target = self.instance_mut(oid, iid).ok_or(OpError::NotFound(path))?;
        for r in checked {
            merge_resource(target, r, true);
        }
        Ok(iid)
    }

    /// Delete of an instance or a resource instance.
    pub fn delete(&mut self, path: &Path, actor: Actor) -> Result<(), OpError> {
        if actor == Actor::Server && path.object_id() == Some(0) {
            return Err(OpError::Unauthorized(*path));
        }
        if !self.exists(path) {
            return Err(OpError::NotFound(*path));
        }
        match *path.ids() {
            [o, i] => {
                let mandatory_single = self
                    .model
                    .object(o)
                    .is_some_and(|d| d.mandatory && !d.multiple);
                if actor == Actor::Server && (mandatory_single || o == 1) {
                    return Err(OpError::MethodNotAllowed(format!(
                        "instance {path} cannot be deleted"
                    )));
                }
                if let Some(obj) = self.objects.get_mut(&o) {
                    obj.instances.remove(&i);
                }
                Ok(())
            }
            [o, i, r, ri] => {
                if let Some(Resource::Multiple { instances, .. }) = self
                    .instance_mut(o, i)
                    .and_then(|x| x.resources.get_mut(&r))
                {
                    instances.remove(&ri);
                }
                Ok(())
            }
            _ => Err(OpError::MethodNotAllowed(format!("delete of {path}"))),
        }
    }

    /// Checks that `path` names an executable resource of an existing instance.
    pub fn check_execute(&self, path: &Path) -> Result<(), OpError> {
        if path.object_id() == Some(0) {
            return Err(OpError::Unauthorized(*path));
        }
        let (Some(o), Some(i), Some(r), None) = (
            path.object_id(),
            path.instance_id(),
            path.resource_id(),
            path.resource_instance_id(),
        ) else {
            return Err(OpError::MethodNotAllowed(format!(
                "execute needs /o/i/r, got {path}"
            )));
        };
        if self.instance(o, i).is_none() {
            return Err(OpError::NotFound(*path));
        }
        match self.def(o, r) {
            Some(d) if d.operations.executable() => Ok(()),
            Some(_) => Err(OpError::MethodNotAllowed(format!(
                "{path} is not executable"
            ))),
            None => Err(OpError::NotFound(*path)),
        }
    }
}

/// Puts `res` into `inst`: replace swaps the resource (and all of its
/// instances); partial update merges resource instances.
fn merge_resource(inst: &mut Instance, res: Resource, replace: bool) {
    let id = res.id();
    match (inst.resources.get_mut(&id), res, replace) {
        (
            Some(Resource::Multiple { instances: old, .. }),
            Resource::Multiple { instances: new, .. },
            false,
        ) => old.extend(new),
        (_, res, _) => {
            inst.resources.insert(id, res);
        }
    }
}
