//! LwM2M device-management server: CoAP/DTLS, registry, device management, campaigns

pub mod coap;
pub mod registry;
