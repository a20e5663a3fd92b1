//! The client for registries and object storage: the only place the daemon talks to the
//! origin.
//!
//! Connections are pooled and kept alive (hyper-util's pool, rustls with the ring provider).
//! The client's `Authorization` is passed through unchanged and dropped when a redirect
//! leaves the host, as a browser does, so a presigned storage URL never sees a registry
//! token. Every wait has a bound: connect, response headers, and each body chunk (an idle
//! timeout rather than a total one, so a slow but moving 10 GiB download is not cut off).
//! Connection errors and 5xx answers are retried with exponential backoff and jitter; a
//! body that breaks off mid-way is resumed from the byte reached instead of starting over.

mod connect;

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::header::{
    AUTHORIZATION, CONTENT_LENGTH, CONTENT_RANGE, LOCATION, RANGE, USER_AGENT, WWW_AUTHENTICATE,
};
use http::{HeaderValue, Request, StatusCode, Uri};
use http_body_util::{BodyExt, Empty};
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;

pub use connect::TlsSetupError;
use connect::{client_tls, PolicyResolver};

use crate::target::{Policy, TargetError};
use crate::telemetry::{redact_url, Telemetry};

/// Redirect hops followed, as many as overlaybd follows itself.
pub const MAX_REDIRECTS: usize = 8;
/// Most bytes read past what was wanted to keep an origin connection reusable.
const DRAIN_BUDGET: usize = 64 * 1024;
/// Header marking requests the daemon sends, so a request that comes back is seen as a loop.
pub const HOP_HEADER: &str = "x-dadi-p2p-hop";

#[derive(Debug, thiserror::Error)]
pub enum OriginError {
    /// The origin refused or lacks the blob; the client gets the same status.
    #[error("upstream answered {status}")]
    Status {
        status: StatusCode,
        www_authenticate: Option<HeaderValue>,
    },
    #[error("upstream unreachable: {0}")]
    Unreachable(String),
    /// No answer within the read timeout. Not asked again: a client such as overlaybd
    /// gives up after 30 s, so a second wait would outlast it.
    #[error("upstream timed out")]
    Timeout,
    /// A connection that could not be set up in time, or a body that stopped mid-way:
    /// asked again, resuming where the bytes stopped.
    #[error("upstream stalled: {0}")]
    Stalled(&'static str),
    #[error("{0}")]
    Forbidden(#[from] TargetError),
    #[error("upstream protocol error: {0}")]
    Protocol(String),
}

impl OriginError {
    fn retryable(&self) -> bool {
        match self {
            // 508 is another dadi-p2p daemon (or this one) refusing a loop: asking again
            // cannot help.
            OriginError::Status { status, .. } => {
                status.is_server_error() && *status != StatusCode::LOOP_DETECTED
            }
            OriginError::Unreachable(_) | OriginError::Stalled(_) => true,
            OriginError::Timeout | OriginError::Protocol(_) | OriginError::Forbidden(_) => false,
        }
    }
}

#[derive(Debug, Clone)]
pub struct OriginConfig {
    pub connect_timeout: Duration,
    pub read_timeout: Duration,
    pub retries: u32,
    pub ca_file: Option<std::path::PathBuf>,
    /// First backoff pause; doubled per attempt, with jitter.
    pub backoff: Duration,
}

/// An origin answer whose headers have arrived, for a read from the start of a blob.
pub struct Opened {
    resp: http::Response<hyper::body::Incoming>,
    /// The blob's total size, from the answer's headers.
    pub size: u64,
}

/// Where downloaded bytes go; the piece writer of the cache implements it.
pub trait Sink {
    fn write(
        &mut self,
        data: &[u8],
    ) -> impl std::future::Future<Output = std::io::Result<()>> + Send;
}

type HttpsClient =
    Client<hyper_rustls::HttpsConnector<HttpConnector<PolicyResolver>>, Empty<Bytes>>;

pub struct Origin {
    client: HttpsClient,
    cfg: OriginConfig,
    policy: Arc<Policy>,
    telemetry: Arc<Telemetry>,
    user_agent: HeaderValue,
}

impl Origin {
    pub fn new(
        cfg: OriginConfig,
        policy: Arc<Policy>,
        telemetry: Arc<Telemetry>,
    ) -> Result<Origin, TlsSetupError> {
        let mut http = HttpConnector::new_with_resolver(PolicyResolver {
            policy: policy.clone(),
        });
        http.enforce_http(false);
        http.set_nodelay(true);
        http.set_connect_timeout(Some(cfg.connect_timeout));
        let tls = client_tls(cfg.ca_file.as_deref())?;
        let https = hyper_rustls::HttpsConnectorBuilder::new()
            .with_tls_config(tls)
            .https_or_http()
            .enable_http1()
            .wrap_connector(http);
        let client = Client::builder(TokioExecutor::new())
            .pool_idle_timeout(Duration::from_secs(90))
            .pool_max_idle_per_host(64)
            .build(https);
        let user_agent = HeaderValue::from_static(concat!("dadi-p2p/", env!("CARGO_PKG_VERSION")));
        Ok(Origin {
            client,
            cfg,
            policy,
            telemetry,
            user_agent,
        })
    }

    /// Asks for the first `len` bytes of a blob: the answer's headers give the blob's size,
    /// and its body, read by [`Origin::fetch_opened`], is the blob's first piece. One request
    /// does what a `bytes=0-0` size probe followed by a download of the first piece would.
    pub async fn open_first(
        &self,
        uri: &Uri,
        auth: Option<&HeaderValue>,
        len: u64,
    ) -> Result<Opened, OriginError> {
        let mut attempt = 0;
        loop {
            match self.send(uri, auth, 0, Some(len.max(1) - 1)).await {
                Ok(resp) => {
                    let size = size_of(&resp)?;
                    return Ok(Opened { resp, size });
                }
                Err(e) if e.retryable() && attempt < self.cfg.retries => {
                    attempt += 1;
                    self.pause(attempt, &e).await;
                }
                Err(e) => return Err(e),
            }
        }
    }

    /// Downloads `start..start+len` into `sink`, resuming after breaks. Returns only once
    /// exactly `len` bytes were written; on error the sink holds a prefix to be discarded.
    pub async fn fetch<S: Sink>(
        &self,
        uri: &Uri,
        auth: Option<&HeaderValue>,
        start: u64,
        len: u64,
        sink: &mut S,
    ) -> Result<(), OriginError> {
        self.fetch_after(None, uri, auth, start, len, sink).await
    }

    /// Downloads the first `len` bytes of the blob `opened` answers for into `sink`, reading
    /// that answer first and resuming with new requests if it breaks off.
    pub async fn fetch_opened<S: Sink>(
        &self,
        opened: Opened,
        uri: &Uri,
        auth: Option<&HeaderValue>,
        len: u64,
        sink: &mut S,
    ) -> Result<(), OriginError> {
        self.fetch_after(Some(opened.resp), uri, auth, 0, len, sink)
            .await
    }

    async fn fetch_after<S: Sink>(
        &self,
        mut opened: Option<http::Response<hyper::body::Incoming>>,
        uri: &Uri,
        auth: Option<&HeaderValue>,
        start: u64,
        len: u64,
        sink: &mut S,
    ) -> Result<(), OriginError> {
        let mut done = 0u64;
        let mut attempt = 0;
        while done < len {
            let from = start + done;
            let want = len - done;
            let answer = match opened.take() {
                Some(resp) => Ok(resp),
                None => self.send(uri, auth, from, Some(start + len - 1)).await,
            };
            let result = match answer {
                Ok(resp) => self.copy_body(resp, from, want, &mut done, sink).await,
                Err(e) => Err(e),
            };
            match result {
                Ok(()) => {}
                Err(e) if e.retryable() && attempt < self.cfg.retries => {
                    attempt += 1;
                    self.pause(attempt, &e).await;
                }
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }

    async fn pause(&self, attempt: u32, error: &OriginError) {
        self.telemetry.origin_retry();
        let base = self.cfg.backoff.saturating_mul(1 << (attempt - 1).min(6));
        let jitter = rand::random_range(0..=base.as_millis() as u64 / 2 + 1);
        let pause = base + Duration::from_millis(jitter);
        tracing::warn!(attempt, error = %error, pause_ms = pause.as_millis() as u64, "retrying upstream");
        tokio::time::sleep(pause).await;
    }

    /// Streams the body of `resp`, which answers a request starting at `from`, into `sink`
    /// until `want` bytes arrived; `done` advances as bytes are accepted so a retry resumes.
    async fn copy_body<S: Sink>(
        &self,
        resp: http::Response<hyper::body::Incoming>,
        from: u64,
        want: u64,
        done: &mut u64,
        sink: &mut S,
    ) -> Result<(), OriginError> {
        let mut skip = match resp.status() {
            StatusCode::PARTIAL_CONTENT => {
                let (first, _, _) = parse_content_range(&resp)?;
                if first != from {
                    return Err(OriginError::Protocol(format!(
                        "asked for offset {from}, got {first}"
                    )));
                }
                0
            }
            // The origin ignored Range: the body starts at offset 0.
            _ => from,
        };
        let mut remaining = want;
        let mut body = resp.into_body();
        while remaining > 0 {
            let frame = match tokio::time::timeout(self.cfg.read_timeout, body.frame()).await {
                Err(_) => {
                    return Err(OriginError::Stalled(
                        "no body bytes within the read timeout",
                    ))
                }
                Ok(None) => {
                    return Err(OriginError::Unreachable("upstream body ended early".into()))
                }
                Ok(Some(Err(e))) => return Err(OriginError::Unreachable(format!("body: {e}"))),
                Ok(Some(Ok(frame))) => frame,
            };
            let Ok(mut data) = frame.into_data() else {
                continue;
            };
            if skip > 0 {
                let n = skip.min(data.len() as u64);
                skip -= n;
                data = data.slice(n as usize..);
            }
            let take = remaining.min(data.len() as u64) as usize;
            if take == 0 {
                continue;
            }
            sink.write(&data[..take])
                .await
                .map_err(|e| OriginError::Protocol(format!("local write failed: {e}")))?;
            remaining -= take as u64;
            *done += take as u64;
        }
        self.finish_body(body).await;
        Ok(())
    }

    /// Lets go of an open answer whose body nobody wants, keeping its connection if the
    /// rest is small.
    pub async fn discard(&self, opened: Opened) {
        self.finish_body(opened.resp.into_body()).await;
    }

    /// Reads a body's last frames, so its connection goes back to the pool instead of being
    /// closed. Only a small rest is read: anything more (an origin that ignored the Range)
    /// costs less as a new connection than as bytes nobody wants.
    async fn finish_body(&self, mut body: hyper::body::Incoming) {
        use hyper::body::Body as _;
        let mut budget = DRAIN_BUDGET;
        while !body.is_end_stream() && budget > 0 {
            match tokio::time::timeout(self.cfg.read_timeout, body.frame()).await {
                Ok(Some(Ok(frame))) => {
                    let n = frame.data_ref().map_or(0, |d| d.len());
                    budget = budget.saturating_sub(n.max(1));
                }
                _ => return,
            }
        }
    }

    /// One GET with a Range, following redirects; answers only 200 or 206.
    async fn send(
        &self,
        uri: &Uri,
        auth: Option<&HeaderValue>,
        first: u64,
        last: Option<u64>,
    ) -> Result<http::Response<hyper::body::Incoming>, OriginError> {
        let mut current = uri.clone();
        let mut auth = auth.cloned();
        let range = match last {
            Some(last) => format!("bytes={first}-{last}"),
            None => format!("bytes={first}-"),
        };
        for _ in 0..=MAX_REDIRECTS {
            self.policy.check_uri(&current)?;
            let mut req = Request::get(current.clone())
                .header(RANGE, &range)
                .header(USER_AGENT, self.user_agent.clone())
                .header(HOP_HEADER, "1");
            if let Some(a) = &auth {
                req = req.header(AUTHORIZATION, a.clone());
            }
            let req = req
                .body(Empty::new())
                .map_err(|e| OriginError::Protocol(format!("request: {e}")))?;
            let resp =
                match tokio::time::timeout(self.cfg.read_timeout, self.client.request(req)).await {
                    Err(_) => return Err(OriginError::Timeout),
                    Ok(Err(e)) => return Err(classify(&e)),
                    Ok(Ok(resp)) => resp,
                };
            let status = resp.status();
            if status.is_redirection() && status != StatusCode::NOT_MODIFIED {
                let next = redirect_target(&current, &resp)?;
                if next.authority() != current.authority() || next.scheme() != current.scheme() {
                    auth = None;
                }
                tracing::debug!(
                    from = %redact_url(&current.to_string()),
                    to = %redact_url(&next.to_string()),
                    "upstream redirect"
                );
                current = next;
                continue;
            }
            if status == StatusCode::OK || status == StatusCode::PARTIAL_CONTENT {
                return Ok(resp);
            }
            let www_authenticate = resp.headers().get(WWW_AUTHENTICATE).cloned();
            return Err(match status.as_u16() {
                401 | 403 | 404 | 410 | 429 => OriginError::Status {
                    status,
                    www_authenticate,
                },
                s if s >= 500 => OriginError::Status {
                    status,
                    www_authenticate: None,
                },
                _ => OriginError::Protocol(format!("upstream answered {status}")),
            });
        }
        Err(OriginError::Protocol("too many redirects".into()))
    }
}

fn classify(e: &hyper_util::client::legacy::Error) -> OriginError {
    let mut source: Option<&(dyn std::error::Error + 'static)> = std::error::Error::source(e);
    while let Some(s) = source {
        if let Some(io) = s.downcast_ref::<std::io::Error>() {
            if io.kind() == std::io::ErrorKind::TimedOut {
                return OriginError::Stalled("connect timed out");
            }
            if io.kind() == std::io::ErrorKind::PermissionDenied {
                return OriginError::Forbidden(TargetError::Forbidden(io.to_string()));
            }
        }
        if s.to_string().contains("timed out") {
            return OriginError::Stalled("connect timed out");
        }
        source = s.source();
    }
    let mut text = e.to_string();
    if let Some(s) = std::error::Error::source(e) {
        text = format!("{text}: {s}");
    }
    OriginError::Unreachable(text)
}

fn redirect_target(
    current: &Uri,
    resp: &http::Response<hyper::body::Incoming>,
) -> Result<Uri, OriginError> {
    let location = resp
        .headers()
        .get(LOCATION)
        .and_then(|v| v.to_str().ok())
        .ok_or_else(|| OriginError::Protocol("redirect without Location".into()))?;
    if location.starts_with("http://") || location.starts_with("https://") {
        return location
            .parse()
            .map_err(|_| OriginError::Protocol("redirect to an invalid URL".into()));
    }
    if location.starts_with("//") || !location.starts_with('/') {
        return Err(OriginError::Protocol(
            "unsupported relative redirect".into(),
        ));
    }
    let scheme = current.scheme_str().unwrap_or("https");
    let authority = current.authority().map(|a| a.as_str()).unwrap_or_default();
    format!("{scheme}://{authority}{location}")
        .parse()
        .map_err(|_| OriginError::Protocol("redirect to an invalid URL".into()))
}

/// `(first, last, total)` from a `Content-Range: bytes a-b/n` header.
fn parse_content_range<B>(
    resp: &http::Response<B>,
) -> Result<(u64, u64, Option<u64>), OriginError> {
    let bad = || OriginError::Protocol("malformed Content-Range from upstream".into());
    let value = resp
        .headers()
        .get(CONTENT_RANGE)
        .and_then(|v| v.to_str().ok())
        .ok_or_else(bad)?;
    let rest = value.trim().strip_prefix("bytes ").ok_or_else(bad)?;
    let (span, total) = rest.split_once('/').ok_or_else(bad)?;
    let (a, b) = span.split_once('-').ok_or_else(bad)?;
    let first: u64 = a.trim().parse().map_err(|_| bad())?;
    let last: u64 = b.trim().parse().map_err(|_| bad())?;
    let total = match total.trim() {
        "*" => None,
        t => Some(t.parse().map_err(|_| bad())?),
    };
    if last < first {
        return Err(bad());
    }
    Ok((first, last, total))
}

fn size_of<B>(resp: &http::Response<B>) -> Result<u64, OriginError> {
    if resp.status() == StatusCode::PARTIAL_CONTENT {
        if let (_, _, Some(total)) = parse_content_range(resp)? {
            return Ok(total);
        }
        return Err(OriginError::Protocol(
            "upstream did not tell the blob size".into(),
        ));
    }
    resp.headers()
        .get(CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse().ok())
        .ok_or_else(|| OriginError::Protocol("upstream did not tell the blob size".into()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn with_range(v: &str) -> http::Response<()> {
        http::Response::builder()
            .status(206)
            .header(CONTENT_RANGE, v)
            .body(())
            .unwrap()
    }

    proptest::proptest! {
        #[test]
        fn any_content_range_is_parsed_or_refused(v in "[ -~]{0,60}") {
            if let Ok((first, last, _)) = parse_content_range(&with_range(&v)) {
                proptest::prop_assert!(first <= last);
            }
        }
    }

    #[test]
    fn content_range_parsing() {
        assert_eq!(
            parse_content_range(&with_range("bytes 0-0/1234")).unwrap(),
            (0, 0, Some(1234))
        );
        assert_eq!(
            parse_content_range(&with_range("bytes 5-9/*")).unwrap(),
            (5, 9, None)
        );
        for bad in [
            "bytes 9-5/10",
            "items 0-1/2",
            "bytes 0-1",
            "bytes a-b/c",
            "",
        ] {
            assert!(parse_content_range(&with_range(bad)).is_err(), "{bad}");
        }
        assert_eq!(size_of(&with_range("bytes 0-0/77")).unwrap(), 77);
        assert!(size_of(&with_range("bytes 0-0/*")).is_err());
    }
}
