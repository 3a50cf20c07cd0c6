//! Fleet inventory (no I/O).
