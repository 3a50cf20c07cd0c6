//! Firmware campaign scheduling (no I/O).
