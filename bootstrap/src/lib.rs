//! LwM2M bootstrap server
//!
//! Empty until its issue lands; the workspace lists it so the layout is
//! visible from the start.
