//! The registry mirror for containerd: `GET|HEAD /v2/<name>/blobs/sha256:<hex>?ns=<registry>`.
//!
//! containerd, given this daemon as a mirror host with the `pull` capability in its
//! `hosts.toml`, asks it for content by digest and names the registry the image belongs to
//! in the `ns` query parameter. Blobs are answered from the same piece cache and engine as
//! overlaybd's reads, keyed by digest, so a layer fetched once serves both. Everything else
//! (manifests, tags, uploads) gets a 404, on which containerd goes on to the registry itself:
//! manifests are small and are what a registry must answer with authority.

use super::error::ApiError;
use crate::config::MirrorConfig;

/// The registry whose host name stands for Docker Hub, and where its API really lives.
const DOCKER_HUB: (&str, &str) = ("docker.io", "registry-1.docker.io");

/// True for the API version check, `GET /v2/`.
pub fn is_base(path: &str) -> bool {
    path == "/v2/" || path == "/v2"
}

/// The upstream blob URL a mirror request stands for.
pub fn upstream_url(
    cfg: &MirrorConfig,
    path: &str,
    query: Option<&str>,
) -> Result<String, ApiError> {
    let rest = path.strip_prefix("/v2/").ok_or(ApiError::NotFound)?;
    let (name, digest) = rest.rsplit_once("/blobs/").ok_or(ApiError::NotFound)?;
    let hex = digest.strip_prefix("sha256:").ok_or(ApiError::NotFound)?;
    if hex.len() != 64
        || !hex
            .bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
    {
        return Err(ApiError::BadRequest(
            "digest must be sha256:<64 lower-case hex>".into(),
        ));
    }
    if !valid_name(name) {
        return Err(ApiError::BadRequest("malformed repository name".into()));
    }
    let ns = query
        .into_iter()
        .flat_map(|q| q.split('&'))
        .find_map(|pair| pair.strip_prefix("ns="))
        .map(|v| v.replace("%3A", ":").replace("%3a", ":"))
        .ok_or_else(|| ApiError::BadRequest("mirror requests need ?ns=<registry host>".into()))?;
    if !valid_host(&ns) {
        return Err(ApiError::BadRequest("malformed ns registry host".into()));
    }
    let host = if ns == DOCKER_HUB.0 {
        DOCKER_HUB.1
    } else {
        ns.as_str()
    };
    let scheme = if cfg
        .plain_http_hosts
        .iter()
        .any(|h| h.eq_ignore_ascii_case(&ns))
    {
        "http"
    } else {
        "https"
    };
    Ok(format!("{scheme}://{host}/v2/{name}/blobs/sha256:{hex}"))
}

/// Repository names as the distribution spec allows them: lower-case path components.
fn valid_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 255
        && name.split('/').all(|c| {
            !c.is_empty()
                && c.bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"._-".contains(&b))
                && c != "."
                && c != ".."
        })
}

/// `host` or `host:port`, nothing that could change where the URL points.
fn valid_host(ns: &str) -> bool {
    !ns.is_empty()
        && ns.len() <= 253
        && ns
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b".-:[]".contains(&b))
}

#[cfg(test)]
mod tests {
    use super::*;

    const HEX: &str = "8a446d3fa7a4c8026b3e7d59f163faec1efdc1c6863a1b98cec4e6cb8a0bcc73";

    fn url(path: &str, query: Option<&str>) -> Result<String, ApiError> {
        let cfg = MirrorConfig {
            plain_http_hosts: vec!["127.0.0.1:5000".into()],
        };
        upstream_url(&cfg, path, query)
    }

    #[test]
    fn blob_requests_map_to_the_registry_named_by_ns() {
        let p = format!("/v2/ns/app/blobs/sha256:{HEX}");
        assert_eq!(
            url(&p, Some("ns=reg.example.com")).unwrap(),
            format!("https://reg.example.com/v2/ns/app/blobs/sha256:{HEX}")
        );
        assert_eq!(
            url(&p, Some("ns=127.0.0.1%3A5000")).unwrap(),
            format!("http://127.0.0.1:5000/v2/ns/app/blobs/sha256:{HEX}")
        );
        assert_eq!(
            url(
                &format!("/v2/library/nginx/blobs/sha256:{HEX}"),
                Some("ns=docker.io")
            )
            .unwrap(),
            format!("https://registry-1.docker.io/v2/library/nginx/blobs/sha256:{HEX}")
        );
    }

    proptest::proptest! {
        #[test]
        fn any_path_and_query_are_answered_without_panic(
            path in "/v2/[a-zA-Z0-9/:._%-]{0,120}",
            query in "[a-zA-Z0-9=&%:._/@-]{0,60}",
        ) {
            if let Ok(u) = url(&path, Some(&query)) {
                // Whatever was asked, the URL points at a registry's blob endpoint.
                proptest::prop_assert!(u.starts_with("http://") || u.starts_with("https://"));
                let rest = u.split_once("://").map(|(_, r)| r).unwrap_or_default();
                proptest::prop_assert!(!rest.split('/').next().unwrap_or_default().contains('@'));
                proptest::prop_assert!(u.contains("/blobs/sha256:"));
            }
        }
    }

    #[test]
    fn everything_else_is_refused() {
        let blob = format!("/v2/app/blobs/sha256:{HEX}");
        assert!(matches!(
            url(&format!("/v2/app/manifests/sha256:{HEX}"), Some("ns=r")),
            Err(ApiError::NotFound)
        ));
        assert!(matches!(url(&blob, None), Err(ApiError::BadRequest(_))));
        assert!(matches!(
            url(&blob, Some("ns=evil.com/x")),
            Err(ApiError::BadRequest(_))
        ));
        assert!(matches!(
            url(&blob, Some("ns=user@evil.com")),
            Err(ApiError::BadRequest(_))
        ));
        assert!(matches!(
            url("/v2/app/blobs/sha256:abc", Some("ns=r")),
            Err(ApiError::BadRequest(_))
        ));
        assert!(matches!(
            url(&format!("/v2/../x/blobs/sha256:{HEX}"), Some("ns=r")),
            Err(ApiError::BadRequest(_))
        ));
        assert!(matches!(
            url(&format!("/v2/App/blobs/sha256:{HEX}"), Some("ns=r")),
            Err(ApiError::BadRequest(_))
        ));
        assert!(is_base("/v2/") && is_base("/v2") && !is_base("/v2/x"));
    }
}
