//! The dadi-p2p node daemon as a library; `main.rs` only parses flags and wires it up.
//!
//! One read travels `service` (HTTP, URL and Range parsing, error mapping; the overlaybd
//! endpoint and the containerd mirror are its two fronts) → `engine` (pieces, single flight,
//! read-ahead, streaming) → `plan` (pure decisions) → the sources: `cache` on disk and
//! `origin` over HTTP. `telemetry` records what happens where it happens.

pub mod cache;
pub mod config;
pub mod daemon;
pub mod engine;
pub mod interfaces;
pub mod origin;
pub mod peer;
pub mod plan;
pub mod range;
pub mod service;
pub mod status_client;
pub mod target;
pub mod telemetry;
pub mod throttle;
