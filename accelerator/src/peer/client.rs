//! Asking the owner of a piece for it: one plain-HTTP `GET` per piece, on kept-alive
//! connections, whose body is the piece's bytes and nothing else.

use std::time::Duration;

use bytes::Bytes;
use http::header::{AUTHORIZATION, CONTENT_LENGTH};
use http::{HeaderValue, Request, StatusCode};
use http_body_util::{BodyExt, Empty};
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;

use super::{BLOB_SIZE_HEADER, PIECES_PATH, PIECE_SIZE_HEADER, TOKEN_HEADER, UPSTREAM_HEADER};
use crate::engine::Blob;
use crate::origin::Sink;

/// Longest wait for a connection to a peer: peers are on the node network, so a slow
/// connect means a node that is down, and the origin is the faster way.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);

#[derive(Debug, thiserror::Error)]
pub enum PeerError {
    #[error("peer unreachable: {0}")]
    Unreachable(String),
    #[error("peer answered {0}")]
    Status(StatusCode),
    #[error("peer sent no bytes within the read timeout")]
    Timeout,
    #[error("peer answer: {0}")]
    Protocol(String),
    #[error("local write failed: {0}")]
    Sink(std::io::Error),
}

impl PeerError {
    /// An answer about the request rather than the peer: the origin's refusal relayed by
    /// the owner (401, 403 or 404 with a valid token is the origin's) or a 409 over sizes.
    pub fn is_refusal(&self) -> bool {
        matches!(self, PeerError::Status(s) if s.is_client_error())
    }
}

pub struct PeerClient {
    client: Client<HttpConnector, Empty<Bytes>>,
    token: HeaderValue,
    read_timeout: Duration,
}

impl PeerClient {
    pub fn new(token: HeaderValue, read_timeout: Duration) -> PeerClient {
        let mut http = HttpConnector::new();
        http.set_nodelay(true);
        http.set_connect_timeout(Some(CONNECT_TIMEOUT));
        let client = Client::builder(TokioExecutor::new())
            .pool_idle_timeout(Duration::from_secs(90))
            .pool_max_idle_per_host(16)
            .build(http);
        PeerClient {
            client,
            token,
            read_timeout,
        }
    }

    /// Fetches piece `index` of `blob` (`len` bytes) from `peer` into `sink`; returns how
    /// many bytes reached the sink, on error too, so the caller can resume elsewhere.
    pub async fn fetch<S: Sink>(
        &self,
        peer: std::net::SocketAddr,
        blob: &Blob,
        index: u64,
        len: u64,
        sink: &mut S,
    ) -> (u64, Result<(), PeerError>) {
        let mut done = 0u64;
        let result = self
            .fetch_into(peer, blob, index, len, sink, &mut done)
            .await;
        (done, result)
    }

    async fn fetch_into<S: Sink>(
        &self,
        peer: std::net::SocketAddr,
        blob: &Blob,
        index: u64,
        len: u64,
        sink: &mut S,
        done: &mut u64,
    ) -> Result<(), PeerError> {
        let uri = format!("http://{peer}{PIECES_PATH}{}/{index}", blob.id.as_str());
        let upstream = HeaderValue::from_str(&blob.target.uri.to_string())
            .map_err(|e| PeerError::Protocol(format!("upstream URL: {e}")))?;
        let mut req = Request::get(uri)
            .header(TOKEN_HEADER, self.token.clone())
            .header(UPSTREAM_HEADER, upstream)
            .header(BLOB_SIZE_HEADER, blob.layout.size)
            .header(PIECE_SIZE_HEADER, blob.layout.piece_size);
        if let Some(auth) = &blob.auth {
            req = req.header(AUTHORIZATION, auth.clone());
        }
        let req = req
            .body(Empty::new())
            .map_err(|e| PeerError::Protocol(e.to_string()))?;
        let resp = match tokio::time::timeout(self.read_timeout, self.client.request(req)).await {
            Err(_) => return Err(PeerError::Timeout),
            Ok(Err(e)) => return Err(PeerError::Unreachable(e.to_string())),
            Ok(Ok(resp)) => resp,
        };
        if resp.status() != StatusCode::OK {
            return Err(PeerError::Status(resp.status()));
        }
        let announced = resp
            .headers()
            .get(CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<u64>().ok());
        if announced != Some(len) {
            return Err(PeerError::Protocol(format!(
                "announced {announced:?} bytes for a piece of {len}"
            )));
        }
        let mut body = resp.into_body();
        while *done < len {
            let frame = match tokio::time::timeout(self.read_timeout, body.frame()).await {
                Err(_) => return Err(PeerError::Timeout),
                Ok(None) => return Err(PeerError::Unreachable("body ended early".into())),
                Ok(Some(Err(e))) => return Err(PeerError::Unreachable(e.to_string())),
                Ok(Some(Ok(frame))) => frame,
            };
            let Ok(data) = frame.into_data() else {
                continue;
            };
            let take = (len - *done).min(data.len() as u64) as usize;
            sink.write(&data[..take]).await.map_err(PeerError::Sink)?;
            *done += take as u64;
        }
        Ok(())
    }
}
