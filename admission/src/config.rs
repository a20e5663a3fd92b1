//! Settings shared by the webhook and the secret controller, and their validation.
//!
//! Everything a cluster administrator can change lives in [`Settings`]; the binary fills it
//! from flags and environment and calls [`Settings::validate`] once at start, so a bad value
//! stops the process with the key and the value instead of surfacing per request.

use std::fmt;

/// Label (on the Pod or its namespace) that turns P2P on, as documented.
pub const DEFAULT_SELECTOR_KEY: &str = "k8s.aliyun.com/image-accelerate-mode";
/// Value of the selector label that turns P2P on.
pub const DEFAULT_SELECTOR_VALUE: &str = "p2p";
/// Label inserted after the first label of a registry host to name its P2P endpoint.
pub const DEFAULT_P2P_LABEL: &str = "distributed";
/// Port of the node-local P2P endpoint.
pub const DEFAULT_P2P_PORT: u16 = 65001;

/// Problems found in the settings at start.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ConfigError {
    #[error("{key}: invalid registry pattern {value:?}: {why}")]
    Pattern {
        key: &'static str,
        value: String,
        why: &'static str,
    },
    #[error("{key}: {value:?} is not allowed: {why}")]
    Value {
        key: &'static str,
        value: String,
        why: &'static str,
    },
}

/// A registry host pattern: `reg.example.com` (exact), `*.example.com` (any host ending in
/// `.example.com`) or `*` (every registry, public ones included, which [`Settings::warnings`]
/// points out). Matching ignores case and never looks at ports.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HostPattern {
    Any,
    Exact(String),
    Suffix(String),
}

impl HostPattern {
    pub fn parse(key: &'static str, raw: &str) -> Result<Self, ConfigError> {
        let bad = |why| ConfigError::Pattern {
            key,
            value: raw.to_string(),
            why,
        };
        let s = raw.trim().to_ascii_lowercase();
        if s == "*" {
            return Ok(Self::Any);
        }
        if s.contains(':') || s.contains('/') {
            return Err(bad("give a host name only, without port, scheme or path"));
        }
        let (suffix, host) = match s.strip_prefix("*.") {
            Some(rest) => (true, rest.to_string()),
            None => (false, s),
        };
        if host.is_empty() || host.contains('*') {
            return Err(bad("use `*`, `*.domain` or an exact host"));
        }
        let label_ok = |l: &str| {
            !l.is_empty()
                && l.len() <= 63
                && l.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
        };
        if !host.split('.').all(label_ok) {
            return Err(bad("host labels are letters, digits and `-`"));
        }
        Ok(if suffix {
            Self::Suffix(host)
        } else {
            Self::Exact(host)
        })
    }

    /// Whether `host` (already lowercased, without port) is covered by this pattern.
    pub fn matches(&self, host: &str) -> bool {
        match self {
            Self::Any => true,
            Self::Exact(h) => host == h,
            Self::Suffix(s) => host
                .strip_suffix(s.as_str())
                .and_then(|head| head.strip_suffix('.'))
                .is_some_and(|label| !label.is_empty()),
        }
    }
}

impl fmt::Display for HostPattern {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Any => f.write_str("*"),
            Self::Exact(h) => f.write_str(h),
            Self::Suffix(s) => write!(f, "*.{s}"),
        }
    }
}

/// How the P2P endpoint host is derived from an origin registry host.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Endpoint {
    pub label: String,
    pub port: u16,
}

impl Default for Endpoint {
    fn default() -> Self {
        Self {
            label: DEFAULT_P2P_LABEL.to_string(),
            port: DEFAULT_P2P_PORT,
        }
    }
}

/// Everything the webhook decides with. No registry is listed by default: which registries
/// the cluster owner may put behind the P2P endpoint is theirs to say, and until they do the
/// webhook rewrites nothing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Settings {
    pub selector_key: String,
    pub selector_value: String,
    pub registries: Vec<HostPattern>,
    pub endpoint: Endpoint,
}

impl Default for Settings {
    fn default() -> Self {
        Self {
            selector_key: DEFAULT_SELECTOR_KEY.to_string(),
            selector_value: DEFAULT_SELECTOR_VALUE.to_string(),
            registries: Vec::new(),
            endpoint: Endpoint::default(),
        }
    }
}

impl Settings {
    /// Checks the values that patterns cannot check on their own.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let bad = |key, value: &str, why| {
            Err(ConfigError::Value {
                key,
                value: value.to_string(),
                why,
            })
        };
        if self.selector_key.is_empty() || self.selector_key.contains(char::is_whitespace) {
            return bad("selector-key", &self.selector_key, "a label key is needed");
        }
        if self.selector_value.len() > 63 {
            return bad(
                "selector-value",
                &self.selector_value,
                "at most 63 characters",
            );
        }
        let l = &self.endpoint.label;
        if l.is_empty() || l.len() > 63 || !l.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
        {
            return bad("p2p-label", l, "one DNS label: letters, digits and `-`");
        }
        if self.endpoint.port == 0 {
            return bad("p2p-port", "0", "a port from 1 to 65535");
        }
        Ok(())
    }

    /// Settings that are allowed but probably not what the administrator wants, one sentence
    /// each, logged at start.
    pub fn warnings(&self) -> Vec<&'static str> {
        let mut out = Vec::new();
        if self.registries.is_empty() {
            out.push("no registries configured (--registries): no image is rewritten");
        }
        if self.registries.contains(&HostPattern::Any) {
            out.push("registry pattern `*` puts public registries behind the P2P endpoint too");
        }
        out
    }

    /// Parses a comma-separated pattern list as given on the command line.
    pub fn parse_registries(raw: &str) -> Result<Vec<HostPattern>, ConfigError> {
        raw.split(',')
            .filter(|p| !p.trim().is_empty())
            .map(|p| HostPattern::parse("registries", p))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn patterns_match_hosts() {
        let p = HostPattern::parse("r", "*.Example.com").unwrap();
        assert!(p.matches("reg.example.com"));
        assert!(p.matches("a.b.example.com"));
        assert!(!p.matches("example.com"));
        assert!(!p.matches("badexample.com"));
        let e = HostPattern::parse("r", "reg.example.com").unwrap();
        assert!(e.matches("reg.example.com"));
        assert!(!e.matches("x.reg.example.com"));
        assert!(HostPattern::parse("r", "*").unwrap().matches("localhost"));
        assert!(
            !p.matches("xé.éxample.com"),
            "multi-byte hosts are compared, not sliced"
        );
        assert!(!p.matches(".example.com"));
    }

    #[test]
    fn bad_patterns_name_the_value() {
        for raw in ["reg:5000", "https://reg", "*.", "a.*.b", "re g.com", ""] {
            let err = HostPattern::parse("registries", raw).unwrap_err();
            assert!(err.to_string().contains("registries"), "{err}");
        }
    }

    #[test]
    fn validation_rejects_bad_settings() {
        assert_eq!(Settings::default().validate(), Ok(()));
        let mut s = Settings::default();
        s.endpoint.label = "dist.ributed".into();
        assert!(s.validate().unwrap_err().to_string().contains("p2p-label"));
        let mut s = Settings::default();
        s.endpoint.port = 0;
        assert!(s.validate().is_err());
    }

    #[test]
    fn no_registries_by_default_and_a_warning_about_it() {
        let s = Settings::default();
        assert!(s.registries.is_empty());
        assert_eq!(s.validate(), Ok(()));
        assert!(s.warnings().iter().any(|w| w.contains("no image")));
        let listed = Settings {
            registries: Settings::parse_registries("*.example.com").unwrap(),
            ..Settings::default()
        };
        assert!(listed.warnings().is_empty());
        let every = Settings {
            registries: Settings::parse_registries("*").unwrap(),
            ..Settings::default()
        };
        assert_eq!(every.warnings().len(), 1);
    }
}
