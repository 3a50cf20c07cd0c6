//! LwM2M client library and fleet simulator
//!
//! Empty until its issue lands; the workspace lists it so the layout is
//! visible from the start.
