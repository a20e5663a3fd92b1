//! The piece endpoint on `p2pPort`: `GET /peer/v1/pieces/<blob id>/<index>` with the shared
//! token, the blob's upstream URL, its size and the asking node's piece size. The answer is
//! the whole piece, from this node's cache or fetched from the origin first (never from a
//! third node). Everything a request says is checked as a client's request is: the upstream
//! goes through the same policy, and it must name the blob the path names.

use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Instant;

use bytes::Bytes;
use futures_util::StreamExt;
use http::header::{AUTHORIZATION, CONTENT_LENGTH, CONTENT_TYPE};
use http::{Method, Request, Response, StatusCode};
use http_body_util::{BodyExt, StreamBody};
use hyper::body::{Frame, Incoming};

use super::{BLOB_SIZE_HEADER, PIECES_PATH, PIECE_SIZE_HEADER, TOKEN_HEADER, UPSTREAM_HEADER};
use crate::cache::BlobId;
use crate::service::error::ApiError;
use crate::service::{App, Body};
use crate::target::Target;
use crate::telemetry::AuditOp;

/// Answers one request on the peer port.
pub async fn handle(app: Arc<App>, remote: SocketAddr, req: Request<Incoming>) -> Response<Body> {
    match answer(&app, remote, req).await {
        Ok(resp) => resp,
        Err(e) => {
            let status = e.status().as_u16();
            tracing::debug!(%remote, status, error = %e, "peer request refused");
            e.into_response()
        }
    }
}

async fn answer(
    app: &App,
    remote: SocketAddr,
    req: Request<Incoming>,
) -> Result<Response<Body>, ApiError> {
    let Some(peers) = app.engine.peers() else {
        return Err(ApiError::NotFound);
    };
    let token = req.headers().get(TOKEN_HEADER).map(|v| v.as_bytes());
    if !token.is_some_and(|t| peers.token_matches(t)) {
        return Err(ApiError::Forbidden("missing or wrong peer token".into()));
    }
    if req.method() != Method::GET {
        return Err(ApiError::Method);
    }
    let Some(rest) = req.uri().path().strip_prefix(PIECES_PATH) else {
        return Err(ApiError::NotFound);
    };
    let (id, index) = rest
        .split_once('/')
        .ok_or_else(|| bad("path must be /peer/v1/pieces/<blob>/<index>"))?;
    let id = BlobId::new(id).map_err(|_| bad("malformed blob id"))?;
    let index: u64 = index.parse().map_err(|_| bad("malformed piece index"))?;
    let header = |name: &str| req.headers().get(name).and_then(|v| v.to_str().ok());
    let number = |name: &str| header(name).and_then(|v| v.parse::<u64>().ok());
    let upstream = header(UPSTREAM_HEADER).ok_or_else(|| bad("missing upstream URL"))?;
    let target = Target::parse(upstream)?;
    app.policy.check_uri(&target.uri)?;
    if BlobId::new(&target.key.name()).ok().as_ref() != Some(&id) {
        return Err(bad("upstream URL names another blob"));
    }
    let size = number(BLOB_SIZE_HEADER).ok_or_else(|| bad("missing or malformed blob size"))?;
    let piece_size = number(PIECE_SIZE_HEADER).unwrap_or(0);
    let engine = &app.engine;
    if piece_size != engine.piece_size() {
        return Err(ApiError::Conflict(format!(
            "piece size {piece_size} differs from this node's {}",
            engine.piece_size()
        )));
    }
    if let Some(known) = engine.cache().blob_size(&id) {
        if known != size {
            return Err(ApiError::Conflict(format!(
                "blob size {size} differs from this node's {known}"
            )));
        }
    }
    if size == 0 || index >= size.div_ceil(piece_size) {
        return Err(ApiError::Conflict(format!(
            "piece {index} is past the end of a blob of {size} bytes"
        )));
    }
    let auth = req.headers().get(AUTHORIZATION).cloned();
    let blob = engine.peer_blob(target, id, auth, size);
    let (offset, len) = blob.layout.piece(index);
    let started = Instant::now();
    let mut body = engine.peer_piece(blob.clone(), index);
    // The first bytes come before the status line, so a piece that cannot be had is a
    // status the asking node sees, not a body that breaks off.
    let first = match body.next().await {
        Some(Ok(data)) => data,
        Some(Err(e)) => {
            engine.telemetry().audit(
                AuditOp::RpcPread,
                &blob.shown,
                offset,
                -1,
                started.elapsed(),
            );
            return Err(e.into());
        }
        None => Bytes::new(),
    };
    let traffic = peers.traffic(remote.ip());
    let telemetry = engine.telemetry().clone();
    let shown = blob.shown.clone();
    let mut sent = 0u64;
    let counted = futures_util::stream::once(async move { Ok(first) })
        .chain(body)
        .map(move |r| {
            if let Ok(data) = &r {
                sent += data.len() as u64;
                traffic.sent.fetch_add(data.len() as u64, Ordering::Relaxed);
                if sent == len {
                    telemetry.audit(
                        AuditOp::RpcPread,
                        &shown,
                        offset,
                        len as i64,
                        started.elapsed(),
                    );
                }
            }
            r.map(Frame::data)
        });
    Response::builder()
        .status(StatusCode::OK)
        .header(CONTENT_TYPE, "application/octet-stream")
        .header(CONTENT_LENGTH, len)
        .body(StreamBody::new(counted).boxed_unsync())
        .map_err(|e| bad(&format!("cannot build response: {e}")))
}

fn bad(reason: &str) -> ApiError {
    ApiError::BadRequest(reason.to_string())
}
