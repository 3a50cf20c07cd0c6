//! What the DM layer needs to know about one device to address it and to
//! pick content formats: its enabler version, the formats it advertised on
//! its root link, and its alternate root path.

use lwm2m_objects::link::RegistrationPayload;
use lwm2m_objects::{ContentFormat, Version};

use crate::registry::Registration;

/// One device as the DM layer sees it; built from its registration.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DeviceContext {
    /// The `lwm2m=` version the device registered with.
    pub lwm2m_version: Version,
    /// The `ct` values of the root link (`</>;ct="110 112"`), in the
    /// device's order; empty when it advertised none.
    pub supported_formats: Vec<u16>,
    /// `/` or the alternate root path (`</lwm2m>;rt="oma.lwm2m"` gives
    /// `/lwm2m`), prefixed to every request path.
    pub root_path: String,
}

impl DeviceContext {
    /// A device at the plain root `/` that advertised no format.
    pub fn new(lwm2m_version: Version) -> DeviceContext {
        DeviceContext {
            lwm2m_version,
            supported_formats: Vec::new(),
            root_path: "/".to_string(),
        }
    }

    /// The context of a registered device.
    pub fn from_registration(registration: &Registration) -> DeviceContext {
        DeviceContext::from_payload(registration.version, &registration.objects)
    }

    /// The context from a version and a parsed Register payload.
    pub fn from_payload(version: Version, payload: &RegistrationPayload) -> DeviceContext {
        DeviceContext {
            lwm2m_version: version,
            supported_formats: payload.content_formats.clone(),
            root_path: payload.root_path.clone(),
        }
    }

    /// Sets the advertised formats.
    pub fn with_formats(mut self, formats: &[ContentFormat]) -> DeviceContext {
        self.supported_formats = formats.iter().map(|f| f.code()).collect();
        self
    }

    /// Sets the alternate root path.
    pub fn with_root_path(mut self, root_path: impl Into<String>) -> DeviceContext {
        self.root_path = root_path.into();
        self
    }

    /// Whether the device listed `format` in its root link's `ct`.
    pub fn advertises(&self, format: ContentFormat) -> bool {
        self.supported_formats.contains(&format.code())
    }

    /// The non-empty segments of the root path (`/lwm2m` gives `["lwm2m"]`,
    /// `/` gives none): the first Uri-Path options of every request.
    pub fn root_segments(&self) -> impl Iterator<Item = &str> {
        self.root_path.split('/').filter(|s| !s.is_empty())
    }

    /// At least LwM2M `major.minor`.
    pub fn at_least(&self, version: Version) -> bool {
        self.lwm2m_version >= version
    }
}
