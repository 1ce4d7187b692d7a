//! AMVM migration engines. See `ARCHITECTURE.md`.
