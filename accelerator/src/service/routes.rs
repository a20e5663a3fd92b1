//! Request routing and the accelerator endpoint itself.
//!
//! `GET|HEAD /accelerator/<url>` is what overlaybd's `p2pConfig.address` points at; the rest
//! of the target after the prefix, query string included, is the upstream blob URL. Answers
//! follow what overlaybd accepts: 206 with exactly the requested bytes for a Range, 200 with
//! the whole blob without one, and `bytes */<size>` on a 416.

use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Instant;

use bytes::Bytes;
use futures_util::{Stream, StreamExt};
use http::header::{
    ACCEPT_RANGES, AUTHORIZATION, CONTENT_LENGTH, CONTENT_RANGE, CONTENT_TYPE, RANGE,
};
use http::{Method, Request, Response, StatusCode};
use http_body_util::{BodyExt, StreamBody};
use hyper::body::{Frame, Incoming};

use super::error::{full, text, ApiError};
use super::{mirror, App, Body, Routes};
use crate::engine::{BodyStream, EngineError};
use crate::origin::HOP_HEADER;
use crate::range;
use crate::target::Target;
use crate::telemetry::{AuditOp, Kind, Telemetry};

const PREFIX: &str = "/accelerator/";

pub async fn handle(app: Arc<App>, routes: Routes, req: Request<Incoming>) -> Response<Body> {
    let started = Instant::now();
    let path = req.uri().path();
    let resp = match (routes, path) {
        (_, "/metrics") if app.metrics_here(routes) => {
            app.sync_cache_figures();
            let body = app.engine.telemetry().render();
            text(StatusCode::OK, Telemetry::CONTENT_TYPE, body)
        }
        (Routes::Service, "/healthz") => text(StatusCode::OK, "text/plain", "ok\n"),
        (Routes::Service, "/status") => status(&app),
        (Routes::Service, p) if p.starts_with(PREFIX) => {
            let url = upstream_url(&req);
            read(&app, req, Ok(url), started).await
        }
        (Routes::Service, p) if mirror::is_base(p) => {
            let mut resp = text(StatusCode::OK, "application/json", "{}");
            resp.headers_mut().insert(
                "docker-distribution-api-version",
                http::HeaderValue::from_static("registry/2.0"),
            );
            resp
        }
        (Routes::Service, p) if p.starts_with("/v2/") => {
            let url = mirror::upstream_url(&app.mirror, p, req.uri().query());
            read(&app, req, url, started).await
        }
        _ => ApiError::NotFound.into_response(),
    };
    // A streamed body is counted when it ends, so its duration runs to the last byte.
    if resp.extensions().get::<Streamed>().is_none() {
        let telemetry = app.engine.telemetry();
        telemetry.request_done(resp.status().as_u16(), started.elapsed());
        if routes == Routes::Service {
            telemetry.record(Kind::Http, 0, started.elapsed());
        }
    }
    resp
}

/// A blob read through either front (the accelerator endpoint, the mirror); a read that
/// fails is a `pread` operation too, with its audit line's size -1.
async fn read(
    app: &App,
    req: Request<Incoming>,
    url: Result<String, ApiError>,
    started: Instant,
) -> Response<Body> {
    let offset = requested_offset(&req);
    let shown = match &url {
        Ok(url) => crate::telemetry::redact_url(url),
        Err(_) => crate::telemetry::redact_url(req.uri().path()),
    };
    let result = match url {
        Ok(url) => accelerate(app, req, url, started).await,
        Err(e) => Err(e),
    };
    match result {
        Ok(resp) => resp,
        Err(e) => {
            tracing::debug!(status = e.status().as_u16(), error = %e, "request refused");
            let telemetry = app.engine.telemetry();
            let elapsed = started.elapsed();
            telemetry.record(Kind::Pread, 0, elapsed);
            telemetry.audit(AuditOp::HttpPread, &shown, offset, -1, elapsed);
            e.into_response()
        }
    }
}

/// Where the request's Range starts, for the audit line of a read that failed; 0 without
/// one or when it does not say.
fn requested_offset(req: &Request<Incoming>) -> u64 {
    req.headers()
        .get(RANGE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| range::parse(v).ok())
        .and_then(|spec| spec.first())
        .unwrap_or(0)
}

/// Marks a response whose body records the request itself (see [`Recorded`]).
#[derive(Clone, Copy)]
struct Streamed;

fn status(app: &App) -> Response<Body> {
    app.sync_cache_figures();
    let mut snapshot = app.engine.telemetry().snapshot();
    if let Some(peers) = app.engine.peers() {
        snapshot.peers = peers.status();
    }
    match serde_json::to_vec_pretty(&snapshot) {
        Ok(json) => text(StatusCode::OK, "application/json", json),
        Err(_) => text(
            StatusCode::INTERNAL_SERVER_ERROR,
            "text/plain",
            "status unavailable\n",
        ),
    }
}

/// The part of the request target after the prefix, with its query.
fn upstream_url(req: &Request<Incoming>) -> String {
    let path = req.uri().path();
    let rest = &path[PREFIX.len()..];
    match req.uri().query() {
        Some(q) => format!("{rest}?{q}"),
        None => rest.to_string(),
    }
}

/// Answers a blob read of `url` for either front: the accelerator endpoint or the mirror.
async fn accelerate(
    app: &App,
    req: Request<Incoming>,
    url: String,
    started: Instant,
) -> Result<Response<Body>, ApiError> {
    let head = match *req.method() {
        Method::GET => false,
        Method::HEAD => true,
        _ => return Err(ApiError::Method),
    };
    if req.headers().contains_key(HOP_HEADER) {
        return Err(ApiError::Loop);
    }
    let target = Target::parse(&url)?;
    app.policy.check_uri(&target.uri)?;
    let spec = match req.headers().get(RANGE) {
        None => None,
        Some(v) => {
            let v = v
                .to_str()
                .map_err(|_| ApiError::BadRequest("malformed Range header".into()))?;
            Some(range::parse(v).map_err(|e| ApiError::BadRequest(e.to_string()))?)
        }
    };
    let auth = req.headers().get(AUTHORIZATION).cloned();
    let engine = &app.engine;
    // Where the reader starts, when that is known before the size: a GET without Range
    // starts at 0, a HEAD reads nothing.
    let start = match (head, spec) {
        (true, _) => None,
        (false, None) => Some(0),
        (false, Some(spec)) => spec.first(),
    };
    let blob = engine.open(target, auth, start).await?;
    let size = blob.layout.size;
    let (status, span) = match spec {
        Some(spec) => (
            StatusCode::PARTIAL_CONTENT,
            Some(
                spec.resolve(size)
                    .map_err(|e| ApiError::from_range(e, size))?,
            ),
        ),
        None if size == 0 => (StatusCode::OK, None),
        None => (
            StatusCode::OK,
            Some(range::Span {
                start: 0,
                end: size - 1,
            }),
        ),
    };
    let len = span.map(|s| s.len()).unwrap_or(0);
    let mut resp = Response::builder()
        .status(status)
        .header(CONTENT_TYPE, "application/octet-stream")
        .header(ACCEPT_RANGES, "bytes")
        .header(CONTENT_LENGTH, len);
    if let (StatusCode::PARTIAL_CONTENT, Some(s)) = (status, span) {
        resp = resp.header(
            CONTENT_RANGE,
            format!("bytes {}-{}/{}", s.start, s.end, size),
        );
    }
    if let Some(hex) = blob.target.key.digest() {
        resp = resp.header("docker-content-digest", format!("sha256:{hex}"));
    }
    let body = match span {
        Some(span) if !head => {
            resp = resp.extension(Streamed);
            let mut recorded = Recorded {
                status: status.as_u16(),
                inner: engine.read(blob.clone(), span),
                telemetry: engine.telemetry().clone(),
                pathname: blob.shown.clone(),
                offset: span.start,
                want: len,
                sent: 0,
                started,
                recorded: false,
            };
            // The first chunk is awaited before the status line goes out, so a first piece
            // that cannot be had (origin down, slow or refusing) gets its 502, 504 or 4xx
            // instead of a 200/206 that breaks off. A later piece can only cut the body.
            let first = match recorded.next().await {
                Some(Ok(data)) => data,
                Some(Err(e)) => {
                    // The error answer is counted and audited like any other failed read.
                    recorded.recorded = true;
                    return Err(e.into());
                }
                None => Bytes::new(),
            };
            let first = futures_util::stream::once(async move { Ok(Frame::data(first)) });
            StreamBody::new(first.chain(recorded.map(|r| r.map(Frame::data)))).boxed_unsync()
        }
        _ => {
            let telemetry = engine.telemetry();
            let elapsed = started.elapsed();
            telemetry.record(Kind::Pread, 0, elapsed);
            let offset = span.map(|s| s.start).unwrap_or(0);
            telemetry.audit(AuditOp::HttpPread, &blob.shown, offset, 0, elapsed);
            full(Bytes::new())
        }
    };
    resp.body(body)
        .map_err(|e| ApiError::BadRequest(format!("cannot build response: {e}")))
}

/// Records a served body: its bytes as each chunk is handed over, and when it ends,
/// completely or not, the request (status class and time to the last byte), one
/// `http:pread` audit line with the bytes asked for (negative when the body broke off) and
/// the time since the request. A complete body is recorded as its last chunk is handed
/// over, before the client can have it, so a client that has read its bytes finds them
/// already counted.
struct Recorded {
    /// Status to count the request under when the body ends.
    status: u16,
    inner: BodyStream,
    telemetry: Arc<Telemetry>,
    pathname: String,
    offset: u64,
    want: u64,
    sent: u64,
    started: Instant,
    recorded: bool,
}

impl Recorded {
    fn finish(&mut self) {
        if std::mem::replace(&mut self.recorded, true) {
            return;
        }
        let elapsed = self.started.elapsed();
        let size = if self.sent == self.want {
            self.want as i64
        } else {
            -1
        };
        self.telemetry.request_done(self.status, elapsed);
        self.telemetry.end(Kind::Http, elapsed);
        self.telemetry.end(Kind::Pread, elapsed);
        self.telemetry.audit(
            AuditOp::HttpPread,
            &self.pathname,
            self.offset,
            size,
            elapsed,
        );
    }
}

impl Stream for Recorded {
    type Item = Result<Bytes, EngineError>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let next = self.inner.poll_next_unpin(cx);
        if let Poll::Ready(Some(Ok(data))) = &next {
            let n = data.len() as u64;
            self.sent += n;
            self.telemetry.progress(Kind::Pread, n);
            self.telemetry.progress(Kind::Http, n);
            if self.sent == self.want {
                self.finish();
            }
        }
        next
    }
}

impl Drop for Recorded {
    fn drop(&mut self) {
        self.finish();
    }
}
