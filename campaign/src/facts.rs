//! What the server's inventory knows about a device that the rules depend on, and
//! the packed form the campaign keeps of it (three small numbers per device).

use serde::{Deserialize, Serialize};

/// Longest endpoint name accepted (LwM2M endpoint names are URNs of tens of bytes).
pub const MAX_ENDPOINT: usize = 256;
/// Longest cell id accepted.
pub const MAX_CELL_ID: usize = 64;

/// The facts the server fills from its inventory.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct DeviceFacts {
    pub endpoint: String,
    /// Serving cell; `None` when the device does not report one.
    pub cell: Option<String>,
    pub roaming: bool,
    /// The current bearer is Wi-Fi.
    pub bearer_is_wifi: bool,
    /// The device can use Wi-Fi at all.
    pub has_wifi: bool,
    /// Battery percentage, `None` when not reported.
    pub battery: Option<u8>,
    pub on_mains: bool,
    pub billing_suspended: bool,
    pub queue_mode: bool,
    /// `Some` while a queue-mode device is awake: until when.
    pub awake_until: Option<u64>,
    /// Registered (for a queue-mode device: reachable when it wakes).
    pub online: bool,
}

impl Default for DeviceFacts {
    fn default() -> Self {
        DeviceFacts {
            endpoint: String::new(),
            cell: None,
            roaming: false,
            bearer_is_wifi: false,
            has_wifi: false,
            battery: None,
            on_mains: false,
            billing_suspended: false,
            queue_mode: false,
            awake_until: None,
            online: true,
        }
    }
}

impl DeviceFacts {
    /// An online, always-reachable device with nothing special about it.
    pub fn new(endpoint: impl Into<String>) -> DeviceFacts {
        DeviceFacts {
            endpoint: endpoint.into(),
            ..DeviceFacts::default()
        }
    }

    pub fn validate(&self) -> Result<(), FactsError> {
        if self.endpoint.is_empty() || self.endpoint.len() > MAX_ENDPOINT {
            return Err(FactsError::Endpoint(
                self.endpoint.chars().take(64).collect(),
            ));
        }
        if let Some(c) = &self.cell {
            if c.is_empty() || c.len() > MAX_CELL_ID {
                return Err(FactsError::Cell {
                    endpoint: self.endpoint.clone(),
                    cell: c.chars().take(64).collect(),
                });
            }
        }
        if let Some(b) = self.battery {
            if b > 100 {
                return Err(FactsError::Battery {
                    endpoint: self.endpoint.clone(),
                    battery: b,
                });
            }
        }
        Ok(())
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FactsError {
    #[error("endpoint {0:?} is empty or longer than {MAX_ENDPOINT} bytes")]
    Endpoint(String),
    #[error("{endpoint}: cell id {cell:?} is empty or longer than {MAX_CELL_ID} bytes")]
    Cell { endpoint: String, cell: String },
    #[error("{endpoint}: battery {battery} is not a percentage")]
    Battery { endpoint: String, battery: u8 },
}

const ROAMING: u8 = 1;
const BEARER_WIFI: u8 = 2;
const HAS_WIFI: u8 = 4;
const MAINS: u8 = 8;
const SUSPENDED: u8 = 16;
const QUEUE_MODE: u8 = 32;
const ONLINE: u8 = 64;
const NO_BATTERY: u8 = u8::MAX;

/// The facts as the campaign keeps them: flags, battery and interned cell index,
/// serialized as a three-number array.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Packed(u8, u8, u32);

impl Packed {
    pub fn new(f: &DeviceFacts, cell: u32) -> Packed {
        let mut flags = 0;
        for (on, bit) in [
            (f.roaming, ROAMING),
            (f.bearer_is_wifi, BEARER_WIFI),
            (f.has_wifi, HAS_WIFI),
            (f.on_mains, MAINS),
            (f.billing_suspended, SUSPENDED),
            (f.queue_mode, QUEUE_MODE),
            (f.online, ONLINE),
        ] {
            if on {
                flags |= bit;
            }
        }
        Packed(flags, f.battery.unwrap_or(NO_BATTERY), cell)
    }

    fn has(&self, bit: u8) -> bool {
        self.0 & bit != 0
    }

    pub fn roaming(&self) -> bool {
        self.has(ROAMING)
    }
    pub fn bearer_is_wifi(&self) -> bool {
        self.has(BEARER_WIFI)
    }
    pub fn has_wifi(&self) -> bool {
        self.has(HAS_WIFI)
    }
    pub fn on_mains(&self) -> bool {
        self.has(MAINS)
    }
    pub fn suspended(&self) -> bool {
        self.has(SUSPENDED)
    }
    pub fn queue_mode(&self) -> bool {
        self.has(QUEUE_MODE)
    }
    pub fn online(&self) -> bool {
        self.has(ONLINE)
    }
    pub fn set_online(&mut self) {
        self.0 |= ONLINE;
    }
    pub fn battery(&self) -> Option<u8> {
        (self.1 <= 100).then_some(self.1)
    }
    pub fn cell(&self) -> u32 {
        self.2
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn packing_keeps_every_fact() {
        let f = DeviceFacts {
            roaming: true,
            bearer_is_wifi: false,
            has_wifi: true,
            battery: Some(42),
            on_mains: false,
            billing_suspended: true,
            queue_mode: true,
            online: false,
            ..DeviceFacts::new("ep")
        };
        let p = Packed::new(&f, 7);
        assert!(p.roaming() && !p.bearer_is_wifi() && p.has_wifi() && !p.on_mains());
        assert!(p.suspended() && p.queue_mode() && !p.online());
        assert_eq!(p.battery(), Some(42));
        assert_eq!(p.cell(), 7);
        let none = Packed::new(&DeviceFacts::new("ep"), 0);
        assert_eq!(none.battery(), None);
        assert!(none.online());
        assert_eq!(serde_json::to_string(&p).unwrap(), "[53,42,7]");
    }

    #[test]
    fn validation_bounds_the_strings_and_battery() {
        assert!(DeviceFacts::new("ep").validate().is_ok());
        assert!(matches!(
            DeviceFacts::new("").validate(),
            Err(FactsError::Endpoint(_))
        ));
        assert!(DeviceFacts::new("x".repeat(MAX_ENDPOINT + 1))
            .validate()
            .is_err());
        let mut f = DeviceFacts::new("ep");
        f.cell = Some(String::new());
        assert!(matches!(f.validate(), Err(FactsError::Cell { .. })));
        f.cell = Some("c".repeat(MAX_CELL_ID + 1));
        assert!(f.validate().is_err());
        f.cell = Some("262-01-1234".into());
        f.battery = Some(101);
        assert!(matches!(f.validate(), Err(FactsError::Battery { .. })));
    }

    #[test]
    fn facts_json_defaults_to_an_online_plain_device() {
        let f: DeviceFacts = serde_json::from_str(r#"{"endpoint":"a"}"#).unwrap();
        assert_eq!(f, DeviceFacts::new("a"));
    }
}
