//! HTTPS front: `POST /mutate`, `GET /healthz`, `GET /metrics`.
//!
//! One accept loop, a permit taken before each accept so a flood of connections waits in the
//! kernel backlog instead of in memory, a bounded TLS handshake and body read, and a graceful
//! drain on shutdown. Errors never reach the client beyond a one-line reason.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{header, Method, Request, Response, StatusCode};
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::GracefulShutdown;
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tokio_rustls::TlsAcceptor;

use crate::metrics::Metrics;
use crate::webhook::Webhook;

/// Largest review body accepted; the API server caps objects well below this.
pub const MAX_BODY: usize = 8 << 20;
/// Connections served at once.
pub const MAX_CONNECTIONS: usize = 512;
/// Time allowed for a TLS handshake or for reading a request body.
pub const IO_TIMEOUT: Duration = Duration::from_secs(10);
/// Time open connections get to finish after shutdown starts.
pub const DRAIN_TIMEOUT: Duration = Duration::from_secs(10);

/// What the routes need.
pub struct App {
    pub webhook: Webhook,
    pub metrics: Metrics,
}

type Body = Full<Bytes>;

fn text(status: StatusCode, body: &str) -> Response<Body> {
    Response::builder()
        .status(status)
        .header(header::CONTENT_TYPE, "text/plain; charset=utf-8")
        .body(Full::new(Bytes::from(format!("{body}\n"))))
        .expect("static response parts are valid")
}

/// Routes one request.
pub async fn route(app: &App, req: Request<Incoming>) -> Response<Body> {
    match (req.method(), req.uri().path()) {
        (&Method::POST, "/mutate") => {
            let body = Limited::new(req.into_body(), MAX_BODY);
            let bytes = match tokio::time::timeout(IO_TIMEOUT, body.collect()).await {
                Ok(Ok(b)) => b.to_bytes(),
                Ok(Err(e)) if e.is::<http_body_util::LengthLimitError>() => {
                    return text(StatusCode::PAYLOAD_TOO_LARGE, "review body too large")
                }
                Ok(Err(_)) => return text(StatusCode::BAD_REQUEST, "could not read body"),
                Err(_) => return text(StatusCode::REQUEST_TIMEOUT, "body read timed out"),
            };
            let started = std::time::Instant::now();
            let out = app.webhook.review(&bytes).await;
            app.metrics.review_time(started.elapsed());
            Response::builder()
                .header(header::CONTENT_TYPE, "application/json")
                .body(Full::new(Bytes::from(out)))
                .expect("static response parts are valid")
        }
        (&Method::GET, "/healthz") => text(StatusCode::OK, "ok"),
        (&Method::GET, "/metrics") => Response::builder()
            .header(
                header::CONTENT_TYPE,
                "application/openmetrics-text; version=1.0.0; charset=utf-8",
            )
            .body(Full::new(Bytes::from(app.metrics.encode())))
            .expect("static response parts are valid"),
        (_, "/mutate" | "/healthz" | "/metrics") => {
            text(StatusCode::METHOD_NOT_ALLOWED, "method not allowed")
        }
        _ => text(StatusCode::NOT_FOUND, "not found"),
    }
}

/// Serves until `shutdown` resolves, then drains open connections for up to [`DRAIN_TIMEOUT`].
pub async fn serve(
    listener: TcpListener,
    tls: Arc<rustls::ServerConfig>,
    app: Arc<App>,
    shutdown: impl Future<Output = ()>,
) {
    let acceptor = TlsAcceptor::from(tls);
    let permits = Arc::new(Semaphore::new(MAX_CONNECTIONS));
    let graceful = GracefulShutdown::new();
    let builder = auto::Builder::new(TokioExecutor::new());
    tokio::pin!(shutdown);
    loop {
        let permit = tokio::select! {
            p = permits.clone().acquire_owned() => p.expect("semaphore is never closed"),
            () = &mut shutdown => break,
        };
        let (tcp, peer) = tokio::select! {
            r = listener.accept() => match r {
                Ok(c) => c,
                Err(error) => {
                    tracing::warn!(%error, "accept failed");
                    continue;
                }
            },
            () = &mut shutdown => break,
        };
        let (app, acceptor, builder) = (app.clone(), acceptor.clone(), builder.clone());
        let watcher = graceful.watcher();
        tokio::spawn(async move {
            let _permit = permit;
            let tls = match tokio::time::timeout(IO_TIMEOUT, acceptor.accept(tcp)).await {
                Ok(Ok(s)) => s,
                Ok(Err(error)) => {
                    tracing::debug!(%peer, %error, "TLS handshake failed");
                    return;
                }
                Err(_) => {
                    tracing::debug!(%peer, "TLS handshake timed out");
                    return;
                }
            };
            let service = hyper::service::service_fn(move |req| {
                let app = app.clone();
                async move { Ok::<_, std::convert::Infallible>(route(&app, req).await) }
            });
            let conn = builder.serve_connection(TokioIo::new(tls), service);
            if let Err(error) = watcher.watch(conn).await {
                tracing::debug!(%peer, %error, "connection ended with an error");
            }
        });
    }
    tracing::info!("draining connections");
    if tokio::time::timeout(DRAIN_TIMEOUT, graceful.shutdown())
        .await
        .is_err()
    {
        tracing::warn!("connections still open after the drain timeout");
    }
}
