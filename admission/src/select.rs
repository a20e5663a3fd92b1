//! Which Pods are accelerated: a pure decision over the Pod's and its namespace's labels.
//!
//! The Pod's own label wins when present, so a workload in a labelled namespace can opt out
//! by setting the selector key to any other value; without it, the namespace decides.

use std::collections::BTreeMap;

use crate::config::Settings;

/// Why a Pod was or was not selected; recorded in logs and metrics.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Selection {
    PodLabel,
    NamespaceLabel,
    PodOptedOut,
    NotLabelled,
}

impl Selection {
    pub fn accelerated(self) -> bool {
        matches!(self, Self::PodLabel | Self::NamespaceLabel)
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Self::PodLabel => "pod-label",
            Self::NamespaceLabel => "namespace-label",
            Self::PodOptedOut => "pod-opted-out",
            Self::NotLabelled => "not-labelled",
        }
    }
}

pub fn select(
    settings: &Settings,
    pod_labels: Option<&BTreeMap<String, String>>,
    namespace_labels: Option<&BTreeMap<String, String>>,
) -> Selection {
    let key = settings.selector_key.as_str();
    match pod_labels.and_then(|l| l.get(key)) {
        Some(v) if *v == settings.selector_value => return Selection::PodLabel,
        Some(_) => return Selection::PodOptedOut,
        None => {}
    }
    match namespace_labels.and_then(|l| l.get(key)) {
        Some(v) if *v == settings.selector_value => Selection::NamespaceLabel,
        _ => Selection::NotLabelled,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn labels(v: Option<&str>) -> BTreeMap<String, String> {
        let mut m = BTreeMap::from([("app".to_string(), "web".to_string())]);
        if let Some(v) = v {
            m.insert(
                crate::config::DEFAULT_SELECTOR_KEY.to_string(),
                v.to_string(),
            );
        }
        m
    }

    #[test]
    fn pod_and_namespace_labels() {
        let s = Settings::default();
        let on = labels(Some("p2p"));
        let off = labels(None);
        let other = labels(Some("none"));
        assert_eq!(select(&s, Some(&on), Some(&off)), Selection::PodLabel);
        assert_eq!(select(&s, Some(&off), Some(&on)), Selection::NamespaceLabel);
        assert_eq!(select(&s, Some(&on), Some(&on)), Selection::PodLabel);
        assert_eq!(select(&s, Some(&off), Some(&off)), Selection::NotLabelled);
        assert_eq!(select(&s, None, None), Selection::NotLabelled);
        assert_eq!(select(&s, Some(&other), Some(&on)), Selection::PodOptedOut);
        assert_eq!(select(&s, Some(&off), Some(&other)), Selection::NotLabelled);
    }

    #[test]
    fn key_and_value_are_configurable() {
        let s = Settings {
            selector_key: "example.com/p2p".into(),
            selector_value: "on".into(),
            ..Settings::default()
        };
        let m = BTreeMap::from([("example.com/p2p".to_string(), "on".to_string())]);
        assert_eq!(select(&s, Some(&m), None), Selection::PodLabel);
        assert_eq!(
            select(&s, Some(&labels(Some("p2p"))), None),
            Selection::NotLabelled
        );
    }
}
