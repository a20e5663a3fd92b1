//! Harness that starts real processes for tests and benchmarks: Debian's `docker-registry`,
//! `nginx` (a redirecting front and a caching proxy), `prometheus`, and the `dadi-p2p` daemon.
//!
//! Every process runs in its own process group on a free loopback port with its own temporary
//! directory, writes its output to files there (shown when a start fails or a test panics), and
//! is killed and reaped when its guard drops. Start-up functions are blocking so they work in
//! plain and async tests alike; the HTTP client and load generator are async (tokio).
//! `bench` holds what the benchmark programs share; `metrics` reads a `/metrics` body.
//!
//! Network traffic from this crate only ever goes to loopback addresses (127.0.0.0/8).

mod accelerator;
pub mod bench;
mod error;
pub mod http;
pub mod load;
pub mod metrics;
mod nginx;
mod oci;
mod process;
mod prometheus;
mod registry;

pub use accelerator::{cpu_seconds, Accelerator, AcceleratorOptions};
pub use error::HarnessError;
pub use nginx::Nginx;
pub use oci::{
    build_image, hash_file, layer_file_bytes, BlobInfo, Compression, LayerSpec, OciImage,
};
pub use process::{free_port, wait_ready, ProcessGuard};
pub use prometheus::{Prometheus, Sample, ScrapeTarget};
pub use registry::{Credentials, Registry, RegistryOptions};

/// Result type of every fallible harness call.
pub type Result<T, E = HarnessError> = std::result::Result<T, E>;
