//! The dadi-p2p node daemon as a library: the binary in `main.rs` only wires it up.
pub mod telemetry;
