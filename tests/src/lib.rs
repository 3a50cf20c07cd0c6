//! End-to-end tests across crates live in `tests/`: the server and simulated
//! devices talking CoAP over loopback UDP.
