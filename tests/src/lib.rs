//! End-to-end tests across crates: the server binary and simulated devices
//!
//! Empty until its issue lands; the workspace lists it so the layout is
//! visible from the start.
