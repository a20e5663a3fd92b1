//! The one place where failures become HTTP answers.
//!
//! Every error reaches the client as a status and a one-line plain-text reason; internal
//! paths and error chains stay in the log. Upstream refusals keep their status (overlaybd
//! maps 401/403 to EPERM, 404 to ENOENT and 429 to EBUSY), as does a 508 from a daemon
//! that saw a loop; an unreachable upstream is 502 and a slow one 504.

use bytes::Bytes;
use http::header::{ALLOW, CONTENT_RANGE, CONTENT_TYPE, WWW_AUTHENTICATE};
use http::{HeaderValue, Response, StatusCode};
use http_body_util::BodyExt;

use super::Body;
use crate::engine::EngineError;
use crate::range::RangeError;
use crate::target::TargetError;

#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error("{0}")]
    BadRequest(String),
    #[error("method not allowed: use GET or HEAD")]
    Method,
    #[error("not found")]
    NotFound,
    #[error("range not satisfiable")]
    Unsatisfiable { size: u64 },
    #[error("request loop: this request came from a dadi-p2p daemon")]
    Loop,
    /// A peer request without the shared token.
    #[error("{0}")]
    Forbidden(String),
    /// A peer request about a blob this node sees otherwise (its size, the piece size).
    #[error("{0}")]
    Conflict(String),
    #[error(transparent)]
    Engine(#[from] EngineError),
}

impl From<TargetError> for ApiError {
    fn from(e: TargetError) -> Self {
        match e {
            TargetError::Malformed(m) => ApiError::BadRequest(m.to_string()),
            TargetError::Forbidden(m) => {
                ApiError::Engine(EngineError::Forbidden(format!("upstream not allowed: {m}")))
            }
        }
    }
}

impl ApiError {
    pub fn from_range(e: RangeError, size: u64) -> ApiError {
        match e {
            RangeError::Unsatisfiable => ApiError::Unsatisfiable { size },
            other => ApiError::BadRequest(other.to_string()),
        }
    }

    pub fn status(&self) -> StatusCode {
        match self {
            ApiError::BadRequest(_) => StatusCode::BAD_REQUEST,
            ApiError::Method => StatusCode::METHOD_NOT_ALLOWED,
            ApiError::NotFound => StatusCode::NOT_FOUND,
            ApiError::Unsatisfiable { .. } => StatusCode::RANGE_NOT_SATISFIABLE,
            ApiError::Loop => StatusCode::LOOP_DETECTED,
            ApiError::Forbidden(_) => StatusCode::FORBIDDEN,
            ApiError::Conflict(_) => StatusCode::CONFLICT,
            ApiError::Engine(e) => match e {
                EngineError::UpstreamStatus { status, .. }
                    if status.is_client_error() || *status == StatusCode::LOOP_DETECTED =>
                {
                    *status
                }
                EngineError::UpstreamStatus { .. }
                | EngineError::UpstreamDown(_)
                | EngineError::UpstreamProtocol(_) => StatusCode::BAD_GATEWAY,
                EngineError::UpstreamTimeout => StatusCode::GATEWAY_TIMEOUT,
                EngineError::Forbidden(_) => StatusCode::FORBIDDEN,
                EngineError::CacheFull => StatusCode::SERVICE_UNAVAILABLE,
                EngineError::Cache(_) => StatusCode::INTERNAL_SERVER_ERROR,
            },
        }
    }

    /// The reason shown to the client: one line, no internals.
    fn reason(&self) -> String {
        match self {
            ApiError::Engine(EngineError::Cache(_)) => "local cache error".to_string(),
            ApiError::Engine(EngineError::UpstreamDown(_)) => "upstream unreachable".to_string(),
            other => other
                .to_string()
                .lines()
                .next()
                .unwrap_or_default()
                .to_string(),
        }
    }

    pub fn into_response(self) -> Response<Body> {
        let status = self.status();
        let mut resp = Response::builder()
            .status(status)
            .header(CONTENT_TYPE, "text/plain; charset=utf-8");
        match &self {
            ApiError::Method => resp = resp.header(ALLOW, "GET, HEAD"),
            ApiError::Unsatisfiable { size } => {
                resp = resp.header(CONTENT_RANGE, format!("bytes */{size}"))
            }
            ApiError::Engine(EngineError::UpstreamStatus {
                www_authenticate: Some(v),
                ..
            }) => resp = resp.header(WWW_AUTHENTICATE, v.clone()),
            _ => {}
        }
        let body = format!("{}\n", self.reason());
        resp.body(full(body)).unwrap_or_else(|_| {
            let mut r = Response::new(full("internal error\n"));
            *r.status_mut() = StatusCode::INTERNAL_SERVER_ERROR;
            r
        })
    }
}

pub fn full(data: impl Into<Bytes>) -> Body {
    http_body_util::Full::new(data.into())
        .map_err(|never| match never {})
        .boxed_unsync()
}

pub fn text(
    status: StatusCode,
    content_type: &'static str,
    body: impl Into<Bytes>,
) -> Response<Body> {
    let mut resp = Response::new(full(body));
    *resp.status_mut() = status;
    resp.headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static(content_type));
    resp
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statuses() {
        let up = |s: u16| {
            ApiError::Engine(EngineError::UpstreamStatus {
                status: StatusCode::from_u16(s).unwrap(),
                www_authenticate: None,
            })
        };
        for s in [401, 403, 404, 429] {
            assert_eq!(up(s).status().as_u16(), s);
        }
        assert_eq!(up(503).status(), StatusCode::BAD_GATEWAY);
        assert_eq!(up(508).status(), StatusCode::LOOP_DETECTED);
        assert_eq!(
            ApiError::Engine(EngineError::UpstreamTimeout).status(),
            StatusCode::GATEWAY_TIMEOUT
        );
        assert_eq!(
            ApiError::Engine(EngineError::UpstreamDown("x".into())).status(),
            StatusCode::BAD_GATEWAY
        );
        let r = ApiError::Unsatisfiable { size: 10 }.into_response();
        assert_eq!(r.status(), 416);
        assert_eq!(r.headers()[CONTENT_RANGE], "bytes */10");
        let r = ApiError::Method.into_response();
        assert_eq!(r.headers()[ALLOW], "GET, HEAD");
    }

    #[test]
    fn internal_details_stay_out_of_the_reason() {
        let e = ApiError::Engine(EngineError::Cache(
            "open /var/cache/dadi-p2p/x: denied".into(),
        ));
        assert_eq!(e.reason(), "local cache error");
    }
}
