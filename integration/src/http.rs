//! A small HTTP/1.1 client for tests and the benchmark: one keep-alive connection per `Conn`
//! on loopback, no TLS, no redirect following (tests want to see a 307 as it is).
//!
//! The load generator holds one `Conn` per simulated connection, which is exactly what "N
//! keep-alive connections" means; a pooled client would hide how many sockets are in use.
//! Every request, body included, runs under a timeout.

use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use bytes::Bytes;
use futures_util::TryStreamExt;
use http::header::{HeaderMap, HeaderName, HeaderValue, HOST};
use http::{Method, Request, StatusCode};
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, Empty, StreamBody};
use hyper::body::{Body as _, Frame, Incoming};
use hyper::client::conn::http1::{self, SendRequest};
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;

pub use crate::process::split_loopback_url;
use crate::{HarnessError, Result};

/// Upper bound for one request including its whole body.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(120);
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// A request body: empty for reads, a file stream for uploads.
pub type Body = BoxBody<Bytes, std::io::Error>;

/// A response with its body collected.
#[derive(Debug)]
pub struct Response {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub body: Bytes,
}

impl Response {
    /// A header's value as text, if present and visible ASCII.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }
}

/// The value of a `Range` header for the inclusive byte range `start..=end`.
pub fn range(start: u64, end: u64) -> String {
    format!("bytes={start}-{end}")
}

/// An empty request body.
pub fn empty() -> Body {
    Empty::new().map_err(|never| match never {}).boxed()
}

/// One keep-alive HTTP/1.1 connection to a loopback server.
pub struct Conn {
    sender: SendRequest<Body>,
    host: HeaderValue,
    addr: SocketAddr,
}

impl Conn {
    /// Connects to `addr` (must be loopback) and performs the HTTP/1.1 handshake.
    pub async fn connect(addr: SocketAddr) -> Result<Self> {
        let url = format!("http://{addr}/");
        if !addr.ip().is_loopback() {
            return Err(HarnessError::http(
                url,
                "only loopback addresses are allowed",
            ));
        }
        let stream = tokio::time::timeout(CONNECT_TIMEOUT, TcpStream::connect(addr))
            .await
            .map_err(|_| HarnessError::http(&url, "connect timed out"))?
            .map_err(|e| HarnessError::http(&url, e))?;
        stream
            .set_nodelay(true)
            .map_err(|e| HarnessError::http(&url, e))?;
        let (sender, connection) = http1::handshake(TokioIo::new(stream))
            .await
            .map_err(|e| HarnessError::http(&url, e))?;
        tokio::spawn(async move {
            if let Err(error) = connection.await {
                tracing::debug!(%error, "client connection ended");
            }
        });
        let host = HeaderValue::from_str(&addr.to_string()).expect("socket address is ASCII");
        Ok(Self { sender, host, addr })
    }

    /// The server address this connection talks to.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// `GET path` with extra headers; collects the body.
    pub async fn get(&mut self, path: &str, headers: &[(&str, &str)]) -> Result<Response> {
        self.request(Method::GET, path, headers, empty()).await
    }

    /// Sends one request and collects the response body.
    pub async fn request(
        &mut self,
        method: Method,
        path: &str,
        headers: &[(&str, &str)],
        body: Body,
    ) -> Result<Response> {
        let url = format!("http://{}{path}", self.addr);
        let fut = async {
            let response = self.send(method, path, headers, body).await?;
            let (parts, body) = response.into_parts();
            let body = body
                .collect()
                .await
                .map_err(|e| HarnessError::http(&url, e))?
                .to_bytes();
            Ok(Response {
                status: parts.status,
                headers: parts.headers,
                body,
            })
        };
        tokio::time::timeout(REQUEST_TIMEOUT, fut)
            .await
            .map_err(|_| HarnessError::http(&url, "request timed out"))?
    }

    /// `GET path`, counting the body bytes without keeping them: the benchmark's hot path.
    pub async fn get_counted(
        &mut self,
        path: &str,
        headers: &[(&str, &str)],
    ) -> Result<(StatusCode, u64)> {
        self.get_each(path, headers, |_| {}).await
    }

    /// `GET path`, handing each body chunk to `each` (e.g. a hasher); returns the status and
    /// the body length.
    pub async fn get_each(
        &mut self,
        path: &str,
        headers: &[(&str, &str)],
        mut each: impl FnMut(&[u8]),
    ) -> Result<(StatusCode, u64)> {
        let url = format!("http://{}{path}", self.addr);
        let fut = async {
            let response = self.send(Method::GET, path, headers, empty()).await?;
            let status = response.status();
            let mut body = response.into_body();
            let mut bytes = 0u64;
            while let Some(frame) = body.frame().await {
                let frame = frame.map_err(|e| HarnessError::http(&url, e))?;
                if let Some(data) = frame.data_ref() {
                    bytes += data.len() as u64;
                    each(data);
                }
            }
            Ok((status, bytes))
        };
        tokio::time::timeout(REQUEST_TIMEOUT, fut)
            .await
            .map_err(|_| HarnessError::http(&url, "request timed out"))?
    }

    async fn send(
        &mut self,
        method: Method,
        path: &str,
        headers: &[(&str, &str)],
        body: Body,
    ) -> Result<hyper::Response<Incoming>> {
        let url = format!("http://{}{path}", self.addr);
        let mut request = Request::builder()
            .method(method)
            .uri(path)
            .body(body)
            .map_err(|e| HarnessError::http(&url, e))?;
        let map = request.headers_mut();
        map.insert(HOST, self.host.clone());
        if let Some(len) = request.body().size_hint().exact() {
            if len > 0 {
                request
                    .headers_mut()
                    .insert(http::header::CONTENT_LENGTH, len.into());
            }
        }
        for (name, value) in headers {
            let name = HeaderName::try_from(*name).map_err(|e| HarnessError::http(&url, e))?;
            let value = HeaderValue::try_from(*value).map_err(|e| HarnessError::http(&url, e))?;
            request.headers_mut().insert(name, value);
        }
        self.sender
            .ready()
            .await
            .map_err(|e| HarnessError::http(&url, e))?;
        self.sender
            .send_request(request)
            .await
            .map_err(|e| HarnessError::http(&url, e))
    }
}

/// One-shot `GET url` on a fresh connection.
pub async fn get(url: &str, headers: &[(&str, &str)]) -> Result<Response> {
    let (addr, path) = split_loopback_url(url)?;
    Conn::connect(addr).await?.get(&path, headers).await
}

/// One-shot `HEAD url` on a fresh connection.
pub async fn head(url: &str, headers: &[(&str, &str)]) -> Result<Response> {
    let (addr, path) = split_loopback_url(url)?;
    Conn::connect(addr)
        .await?
        .request(Method::HEAD, &path, headers, empty())
        .await
}

/// The registry API's monolithic upload: `POST /v2/<repo>/blobs/uploads/`, then `PUT` the
/// whole file to the returned location with `?digest=`.
pub(crate) async fn upload_monolithic(
    base_url: &str,
    repo: &str,
    path: &Path,
    digest: &str,
    size: u64,
    authorization: Option<String>,
) -> Result<()> {
    let (addr, _) = split_loopback_url(base_url)?;
    let mut conn = Conn::connect(addr).await?;
    let mut headers: Vec<(&str, &str)> = Vec::new();
    if let Some(auth) = authorization.as_deref() {
        headers.push(("authorization", auth));
    }
    let start = format!("/v2/{repo}/blobs/uploads/");
    let started = conn
        .request(Method::POST, &start, &headers, empty())
        .await?;
    if started.status != StatusCode::ACCEPTED {
        return Err(HarnessError::unexpected(
            format!("POST {start}"),
            format!("status {}", started.status),
        ));
    }
    let location = started
        .header("location")
        .ok_or_else(|| HarnessError::unexpected(format!("POST {start}"), "no Location"))?;
    // The location is absolute (http://host/...) or a path; only its path and query are used.
    let location = match location.find("://") {
        Some(i) => location[i + 3..]
            .find('/')
            .map(|j| &location[i + 3 + j..])
            .unwrap_or("/"),
        None => location,
    };
    let sep = if location.contains('?') { '&' } else { '?' };
    let put_path = format!("{location}{sep}digest={digest}");

    let file = tokio::fs::File::open(path)
        .await
        .map_err(|e| HarnessError::io(format!("open {}", path.display()), e))?;
    let stream = tokio_util::io::ReaderStream::with_capacity(file, 1 << 20).map_ok(Frame::data);
    let body = SizedBody {
        inner: StreamBody::new(stream),
        size,
    }
    .boxed();
    let size_text = size.to_string();
    headers.push(("content-type", "application/octet-stream"));
    headers.push(("content-length", &size_text));
    let put = conn.request(Method::PUT, &put_path, &headers, body).await?;
    if put.status != StatusCode::CREATED {
        return Err(HarnessError::unexpected(
            "blob upload PUT",
            format!(
                "status {}: {}",
                put.status,
                String::from_utf8_lossy(&put.body)
            ),
        ));
    }
    Ok(())
}

/// A streaming body whose length is known up front, so hyper sends Content-Length.
struct SizedBody<B> {
    inner: B,
    size: u64,
}

impl<B> hyper::body::Body for SizedBody<B>
where
    B: hyper::body::Body + Unpin,
{
    type Data = B::Data;
    type Error = B::Error;

    fn poll_frame(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<std::result::Result<Frame<Self::Data>, Self::Error>>> {
        std::pin::Pin::new(&mut self.inner).poll_frame(cx)
    }

    fn size_hint(&self) -> hyper::body::SizeHint {
        hyper::body::SizeHint::with_exact(self.size)
    }
}
