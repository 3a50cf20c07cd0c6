//! Runs third-party LwM2M clients against the server
//!
//! Empty until its issue lands; the workspace lists it so the layout is
//! visible from the start.
