//! LwM2M device-management server: CoAP/DTLS, registry, device management, campaigns
//!
//! Empty until its issue lands; the workspace lists it so the layout is
//! visible from the start.

pub mod store;
