//! Rewrites the registry hosts of a `.dockerconfigjson` (`{"auths": {...}}`) or legacy
//! `.dockercfg` (the bare map) document to their P2P endpoints.
//!
//! Keys may be a host, `host:port`, a URL (`https://host/v1/`) or a host with a repository
//! path; the kubelet matches them against the image's host including its port, so a rewritten
//! key is the P2P host with port, followed by the original repository path if there was one.
//! Keys are rewritten by the same host rule as images, so credentials for Docker Hub (under
//! any of its names) or any host the rule leaves alone are never copied under a new name.
//! Entries for hosts that are not rewritten are kept as they are, and every other field of the
//! document is preserved.

use serde_json::{Map, Value};

use crate::config::Settings;
use crate::image::{self, Outcome};

#[derive(Debug, thiserror::Error)]
pub enum DockerConfigError {
    #[error("credential document is not JSON: {0}")]
    NotJson(#[from] serde_json::Error),
    #[error("credential document has no `auths` object")]
    NoAuths,
}

/// The P2P key for one credential key, or `None` if that registry is not rewritten.
pub fn rewrite_key(key: &str, settings: &Settings) -> Option<String> {
    let bare = key
        .strip_prefix("https://")
        .or_else(|| key.strip_prefix("http://"))
        .unwrap_or(key);
    let (host, path) = match bare.split_once('/') {
        Some((h, p)) => (h, p.trim_end_matches('/')),
        None => (bare, ""),
    };
    let Outcome::Rewritten(p2p) =
        image::rewrite_host(host, &settings.registries, &settings.endpoint)
    else {
        return None;
    };
    Some(if path.is_empty() {
        p2p
    } else {
        format!("{p2p}/{path}")
    })
}

fn rewrite_map(map: &Map<String, Value>, settings: &Settings) -> Map<String, Value> {
    map.iter()
        .map(|(k, v)| {
            (
                rewrite_key(k, settings).unwrap_or_else(|| k.clone()),
                v.clone(),
            )
        })
        .collect()
}

/// Rewrites a `.dockerconfigjson` document.
pub fn rewrite_config_json(raw: &[u8], settings: &Settings) -> Result<Vec<u8>, DockerConfigError> {
    let mut doc: Value = serde_json::from_slice(raw)?;
    let auths = doc
        .get("auths")
        .and_then(Value::as_object)
        .ok_or(DockerConfigError::NoAuths)?;
    doc["auths"] = Value::Object(rewrite_map(auths, settings));
    Ok(serde_json::to_vec(&doc)?)
}

/// Rewrites a legacy `.dockercfg` document.
pub fn rewrite_cfg(raw: &[u8], settings: &Settings) -> Result<Vec<u8>, DockerConfigError> {
    let doc: Value = serde_json::from_slice(raw)?;
    let map = doc.as_object().ok_or(DockerConfigError::NoAuths)?;
    Ok(serde_json::to_vec(&Value::Object(rewrite_map(
        map, settings,
    )))?)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::HostPattern;
    use serde_json::json;

    fn every_registry() -> Settings {
        Settings {
            registries: vec![HostPattern::Any],
            ..Settings::default()
        }
    }

    #[test]
    fn keys_become_p2p_hosts() {
        let s = every_registry();
        let k = |key| rewrite_key(key, &s);
        assert_eq!(
            k("test-registry-vpc.cn-hangzhou.cr.aliyuncs.com").as_deref(),
            Some("test-registry-vpc.distributed.cn-hangzhou.cr.aliyuncs.com:65001")
        );
        assert_eq!(
            k("https://reg.example.com").as_deref(),
            Some("reg.distributed.example.com:65001")
        );
        assert_eq!(
            k("reg.example.com/team/app").as_deref(),
            Some("reg.distributed.example.com:65001/team/app")
        );
        assert_eq!(k("reg.example.com:5000"), None);
        assert_eq!(k("reg.distributed.example.com:65001"), None);
        assert_eq!(k("localhost"), None);
    }

    #[test]
    fn credentials_never_move_into_another_domain() {
        let s = every_registry();
        for key in [
            "https://index.docker.io/v1/",
            "index.docker.io",
            "registry-1.docker.io",
            "docker.io",
            "quay.io",
            "https://ghcr.io",
        ] {
            assert_eq!(rewrite_key(key, &s), None, "{key}");
        }
        let doc = json!({"auths": {"https://index.docker.io/v1/": {"auth": "dTpw"}}});
        let raw = serde_json::to_vec(&doc).unwrap();
        let out = rewrite_config_json(&raw, &s).unwrap();
        assert_eq!(serde_json::from_slice::<Value>(&out).unwrap(), doc);
    }

    #[test]
    fn nothing_is_rewritten_without_registries() {
        let s = Settings::default();
        assert!(s.registries.is_empty());
        assert_eq!(rewrite_key("reg.example.com", &s), None);
    }

    #[test]
    fn documents_keep_everything_else() {
        let s = Settings {
            registries: vec![HostPattern::parse("r", "*.example.com").unwrap()],
            ..Settings::default()
        };
        let doc = json!({
            "auths": {
                "reg.example.com": {"auth": "dTpw", "username": "u"},
                "other.org": {"auth": "eDp5"},
            },
            "credsStore": "x",
        });
        let out = rewrite_config_json(&serde_json::to_vec(&doc).unwrap(), &s).unwrap();
        let out: Value = serde_json::from_slice(&out).unwrap();
        assert_eq!(
            out,
            json!({
                "auths": {
                    "reg.distributed.example.com:65001": {"auth": "dTpw", "username": "u"},
                    "other.org": {"auth": "eDp5"},
                },
                "credsStore": "x",
            })
        );
        let cfg = rewrite_cfg(br#"{"reg.example.com":{"auth":"dTpw"}}"#, &s).unwrap();
        assert_eq!(
            serde_json::from_slice::<Value>(&cfg).unwrap(),
            json!({"reg.distributed.example.com:65001": {"auth": "dTpw"}})
        );
        assert!(rewrite_config_json(b"{}", &s).is_err());
        assert!(rewrite_config_json(b"nope", &s).is_err());
    }
}
