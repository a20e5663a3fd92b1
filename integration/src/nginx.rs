//! Debian's nginx, run as its own master process (`-c <conf> -p <prefix>`, `daemon off;`) with
//! every path (pid, temp, logs, cache) inside a temporary directory, in two roles:
//!
//! - a **redirecting front** for a registry: blob `GET`/`HEAD` answer 307 to a presigned-style
//!   storage URL on a second port (`/docker/registry/v2/blobs/sha256/<xx>/<hex>/data?
//!   X-Amz-Signature=<random>&X-Amz-Expires=300`), which nginx serves as static files from the
//!   registry's storage root with Range support; everything else is proxied to the registry.
//!   The signature is nginx's `$request_id`, so it changes on every redirect, as a real
//!   object store's would. Like an object store behind a registry, the storage port checks no
//!   credentials, and like S3 with a presigned URL it refuses (400) any request that carries
//!   an `Authorization` header, so a client that leaks registry credentials across the
//!   redirect fails; the registry behind the front still checks them for what it answers.
//! - a **caching proxy** for a registry (`proxy_cache` with the `slice` module), the setup an
//!   operator would pick without a P2P accelerator; the baseline of the benchmark.
//!
//! Both roles expose `GET /-/ready` answering 200, used as the readiness probe.
//!
//! `tcp_nopush` (on in Debian's stock nginx.conf) is left off: with it, 64 KiB answers from
//! cached slices on keep-alive connections stall about 40 ms each (the corked tail waits for a
//! delayed ACK), which would make the baseline look far worse than a tuned nginx.
//!
//! If the harness process dies without unwinding, the master gets its parent-death signal but
//! nginx's workers outlive it until killed by hand.

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use tempfile::TempDir;

use crate::process::{free_port, run_command, ProcessGuard};
use crate::registry::Registry;
use crate::{HarnessError, Result};

const READY_TIMEOUT: Duration = Duration::from_secs(20);
/// Slice size of the caching proxy: the unit nginx fetches from the registry and caches.
pub const CACHE_SLICE_BYTES: u64 = 1 << 20;

/// A running nginx; stopped and its directory deleted on drop.
pub struct Nginx {
    process: ProcessGuard,
    port: u16,
    storage_port: Option<u16>,
    dir: TempDir,
}

impl Nginx {
    /// A front that redirects blob reads to a storage URL and proxies the rest to `registry`.
    pub fn redirecting_front(registry: &Registry) -> Result<Self> {
        let port = free_port()?;
        let storage_port = free_port()?;
        let servers = format!(
            r#"
{head}    location ~ "^/v2/.+/blobs/sha256:(?<pre>[0-9a-f]{{2}})(?<rest>[0-9a-f]{{62}})$" {{
      return 307 "http://127.0.0.1:{storage_port}/docker/registry/v2/blobs/sha256/$pre/$pre$rest/data?X-Amz-Algorithm=AWS4-HMAC-SHA256&X-Amz-Expires=300&X-Amz-Signature=$request_id";
    }}
    location / {{
{proxy}
    }}
  }}
  server {{
    listen 127.0.0.1:{storage_port};
    root {storage};
    if ($http_authorization) {{ return 400 "presigned URLs take no Authorization\n"; }}
    location = /-/ready {{ return 200 "ok\n"; }}
    location /docker/registry/v2/blobs/ {{ }}
    location / {{ return 404; }}
  }}
"#,
            head = server_head(port),
            proxy = proxy_lines(),
            storage = registry.storage_root().display(),
        );
        Self::start(registry, port, Some(storage_port), "", &servers)
    }

    /// A caching proxy for `registry` holding up to `cache_bytes` in `1 MiB` slices.
    pub fn caching_proxy(registry: &Registry, cache_bytes: u64) -> Result<Self> {
        let port = free_port()?;
        let cache_mib = cache_bytes.div_ceil(1 << 20).max(16);
        let slice_kib = CACHE_SLICE_BYTES / 1024;
        let http_extra = format!(
            "  proxy_cache_path {{dir}}/cache levels=1:2 keys_zone=blobs:32m max_size={cache_mib}m \
             inactive=1d use_temp_path=off;\n"
        );
        let servers = format!(
            r#"
{head}    location ~ "^/v2/.+/blobs/sha256:[0-9a-f]{{64}}$" {{
      slice {slice_kib}k;
      proxy_cache blobs;
      proxy_cache_key $uri$slice_range;
      proxy_set_header Range $slice_range;
      proxy_cache_valid 200 206 1d;
      proxy_cache_lock on;
      proxy_ignore_headers Cache-Control Expires Set-Cookie;
      add_header X-Cache-Status $upstream_cache_status always;
{proxy}
    }}
    location / {{
{proxy}
    }}
  }}
"#,
            head = server_head(port),
            proxy = proxy_lines(),
        );
        Self::start(registry, port, None, &http_extra, &servers)
    }

    fn start(
        registry: &Registry,
        port: u16,
        storage_port: Option<u16>,
        http_extra: &str,
        servers: &str,
    ) -> Result<Self> {
        let dir = tempfile::Builder::new()
            .prefix("dadi-nginx-")
            .tempdir()
            .map_err(|e| HarnessError::io("create nginx dir", e))?;
        let d = dir.path().display().to_string();
        let conf = format!(
            r#"daemon off;
worker_processes auto;
pid {d}/nginx.pid;
error_log {d}/error.log warn;
events {{ worker_connections 4096; }}
http {{
  access_log off;
  default_type application/octet-stream;
  sendfile on;
  tcp_nodelay on;
  keepalive_timeout 120s;
  keepalive_requests 1000000;
  client_body_temp_path {d}/client_body;
  proxy_temp_path {d}/proxy;
  fastcgi_temp_path {d}/fastcgi;
  uwsgi_temp_path {d}/uwsgi;
  scgi_temp_path {d}/scgi;
  upstream registry {{
    server 127.0.0.1:{registry_port};
    keepalive 64;
  }}
{http_extra}{servers}}}
"#,
            registry_port = registry.port(),
            http_extra = http_extra.replace("{dir}", &d),
        );
        let conf_path = dir.path().join("nginx.conf");
        std::fs::write(&conf_path, conf).map_err(|e| HarnessError::io("write nginx.conf", e))?;
        check_config(dir.path(), &conf_path)?;
        let mut cmd = Command::new("nginx");
        cmd.arg("-c").arg(&conf_path).arg("-p").arg(dir.path());
        let mut process = ProcessGuard::spawn("nginx", cmd, dir.path())?;
        for p in std::iter::once(port).chain(storage_port) {
            let url = format!("http://127.0.0.1:{p}/-/ready");
            process.wait_ready(&url, &[200], None, READY_TIMEOUT)?;
        }
        tracing::info!(port, ?storage_port, "nginx ready");
        Ok(Self {
            process,
            port,
            storage_port,
            dir,
        })
    }

    /// nginx's main port on 127.0.0.1.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// `http://127.0.0.1:<port>`: use it where the registry's base URL would go.
    pub fn base_url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// `http://127.0.0.1:<port>/v2/<repo>/blobs/<digest>` through this nginx.
    pub fn blob_url(&self, repo: &str, digest: &str) -> String {
        format!("{}/v2/{repo}/blobs/{digest}", self.base_url())
    }

    /// The storage server's base URL (redirecting front only).
    pub fn storage_base_url(&self) -> Option<String> {
        self.storage_port.map(|p| format!("http://127.0.0.1:{p}"))
    }

    /// The storage URL of a blob without a signature (redirecting front only): nginx's static
    /// file serving, the fastest server on this machine, used to measure the load generator.
    pub fn storage_blob_url(&self, digest: &str) -> Option<String> {
        let hex = digest.strip_prefix("sha256:").unwrap_or(digest);
        let prefix = hex.get(..2)?;
        self.storage_base_url()
            .map(|base| format!("{base}/docker/registry/v2/blobs/sha256/{prefix}/{hex}/data"))
    }

    /// The nginx master process, for its pid and logs.
    pub fn process(&mut self) -> &mut ProcessGuard {
        &mut self.process
    }

    /// nginx's temporary prefix directory (config, logs, cache).
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }
}

/// The opening of a server block on `port` with the readiness location.
fn server_head(port: u16) -> String {
    format!(
        "  server {{\n    listen 127.0.0.1:{port};\n    client_max_body_size 0;\n    \
         location = /-/ready {{ return 200 \"ok\\n\"; }}\n"
    )
}

fn proxy_lines() -> &'static str {
    "      proxy_pass http://registry;\n      proxy_http_version 1.1;\n      \
     proxy_set_header Connection \"\";\n      proxy_set_header Host $http_host;\n      \
     proxy_request_buffering off;\n      proxy_read_timeout 300s;"
}

/// `nginx -t` first, so a bad config is reported with nginx's own message.
fn check_config(prefix: &Path, conf: &Path) -> Result<()> {
    let mut cmd = Command::new("nginx");
    cmd.arg("-t")
        .arg("-q")
        .arg("-c")
        .arg(conf)
        .arg("-p")
        .arg(prefix);
    run_command(cmd, "nginx -t").map(drop)
}
