//! What the daemon does when things go wrong, end to end with real processes: redirects that
//! must not leak credentials, registry auth passed through, an origin that is down, silent,
//! failing, cut off or holding a piece back part-way, requests that must be refused before
//! anything is fetched, shutdown in the middle of a response, bad start-up configuration,
//! and TLS on the service port.
//!
//! Every test runs against loopback only; the link-local addresses named in the safety test
//! are refused by the daemon before it connects anywhere. Waits are bounded: requests carry
//! the harness's timeouts and polling loops give up after a fixed time.

mod common;
#[path = "failures/growing.rs"]
mod growing;
#[path = "failures/lifecycle.rs"]
mod lifecycle;
#[path = "failures/origin.rs"]
mod origin;
#[path = "failures/safety.rs"]
mod safety;
#[path = "failures/tls.rs"]
mod tls;

use std::path::{Path, PathBuf};
use std::time::Duration;

use dadi_p2p_integration::http::Response;
use dadi_p2p_integration::{Accelerator, Credentials, Registry, RegistryOptions};
use sha2::{Digest, Sha256};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

pub use common::blob_bytes;

/// The daemon of this build started with `yaml` as its config file.
pub fn start(yaml: &str) -> Accelerator {
    Accelerator::start(common::options().config_yaml(yaml)).unwrap()
}

pub fn sha256_hex(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

/// A registry (with basic auth when `auth` is given) holding one blob of `len` bytes in the
/// repository `app`; returns the registry, the blob's digest and its bytes.
pub async fn registry_with_blob(
    auth: Option<Credentials>,
    len: usize,
    seed: u64,
) -> (Registry, String, Vec<u8>) {
    let registry = Registry::start_with(RegistryOptions { auth }).unwrap();
    let bytes = blob_bytes(len, seed);
    let file = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(file.path(), &bytes).unwrap();
    let info = registry.upload_blob("app", file.path()).await.unwrap();
    assert_eq!(info.digest, format!("sha256:{}", sha256_hex(&bytes)));
    (registry, info.digest, bytes)
}

/// The reason in an error answer: exactly one non-empty line of text.
pub fn one_line_reason(r: &Response) -> String {
    let text = String::from_utf8_lossy(&r.body).into_owned();
    let lines: Vec<&str> = text.trim_end().lines().collect();
    assert_eq!(lines.len(), 1, "status {}: {text:?}", r.status);
    assert!(
        !lines[0].trim().is_empty(),
        "status {}: empty reason",
        r.status
    );
    lines[0].to_owned()
}

/// Piece files of blob `name` (`sha256-<hex>` or `url-<hex>`) in the cache, and any piece
/// still being written: everything but the blob's recorded size.
pub fn cached_pieces(cache_dir: &Path, name: &str) -> Vec<PathBuf> {
    let mut found = common::piece_files(&cache_dir.join("v1/blobs").join(name));
    found.retain(|p| p.file_name().is_some_and(|n| n != "size"));
    found.extend(common::piece_files(&cache_dir.join("v1/tmp")));
    found
}

/// Sends `request` as raw bytes to `127.0.0.1:port` and returns everything the server sent
/// until it closed the connection (or stopped sending for a while).
pub async fn raw_exchange(port: u16, request: &[u8]) -> String {
    let mut stream = tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .unwrap();
    // The server may answer and close before it has read all of an oversized request.
    let _ = stream.write_all(request).await;
    let mut out = Vec::new();
    let mut chunk = [0u8; 4096];
    loop {
        match tokio::time::timeout(Duration::from_secs(5), stream.read(&mut chunk)).await {
            Ok(Ok(n)) if n > 0 => out.extend_from_slice(&chunk[..n]),
            _ => break,
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// A child killed and reaped when the test ends, however it ends.
pub struct KillOnDrop(pub std::process::Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}
