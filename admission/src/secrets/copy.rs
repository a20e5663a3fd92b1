//! The P2P copy of one pull secret, and what to do about the copy already in the cluster.
//!
//! The copy carries the original's type and data with registry hosts rewritten, the
//! managed-by label, and an owner reference to the original so the API server deletes it with
//! the original. A Secret with the copy's name but without the label was made by someone else
//! (the documentation invites users to create it themselves) and is never touched.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, OwnerReference};
use k8s_openapi::ByteString;

use super::dockerconfig::{self, DockerConfigError};
use super::{DOCKER_CFG, DOCKER_CONFIG_JSON, MANAGED_BY_KEY, MANAGED_BY_VALUE};
use crate::config::Settings;
use crate::p2p_config::p2p_secret_name;

#[derive(Debug, thiserror::Error)]
pub enum CopyError {
    #[error("secret type {0:?} carries no registry credentials")]
    NotPullSecret(String),
    #[error("secret has no {0} key")]
    MissingKey(&'static str),
    #[error("secret has no uid yet")]
    NoUid,
    #[error(transparent)]
    Document(#[from] DockerConfigError),
}

/// What the controller should do for one original.
#[derive(Debug, Clone, PartialEq)]
pub enum Action {
    Create(Secret),
    /// Replace the managed copy; carries the existing `resourceVersion`.
    Replace(Secret),
    /// The original's type changed, which the API forbids changing in place; the copy must be
    /// deleted (by an operator: this binary may not delete Secrets) to be made again.
    TypeChanged,
    UpToDate,
    /// A Secret with the copy's name exists and is not managed here.
    NotOurs,
}

pub fn is_managed(secret: &Secret) -> bool {
    secret
        .metadata
        .labels
        .as_ref()
        .and_then(|l| l.get(MANAGED_BY_KEY))
        .is_some_and(|v| v == MANAGED_BY_VALUE)
}

/// The desired copy of `source`.
pub fn desired(source: &Secret, settings: &Settings) -> Result<Secret, CopyError> {
    let kind = source.type_.clone().unwrap_or_default();
    let key = match kind.as_str() {
        DOCKER_CONFIG_JSON => ".dockerconfigjson",
        DOCKER_CFG => ".dockercfg",
        _ => return Err(CopyError::NotPullSecret(kind)),
    };
    let mut data = source.data.clone().unwrap_or_default();
    let doc = data.get(key).ok_or(CopyError::MissingKey(key))?;
    let rewritten = if kind == DOCKER_CONFIG_JSON {
        dockerconfig::rewrite_config_json(&doc.0, settings)?
    } else {
        dockerconfig::rewrite_cfg(&doc.0, settings)?
    };
    data.insert(key.to_string(), ByteString(rewritten));
    let name = source.metadata.name.clone().unwrap_or_default();
    let uid = source.metadata.uid.clone().ok_or(CopyError::NoUid)?;
    Ok(Secret {
        metadata: ObjectMeta {
            name: Some(p2p_secret_name(&name)),
            namespace: source.metadata.namespace.clone(),
            labels: Some(BTreeMap::from([(
                MANAGED_BY_KEY.to_string(),
                MANAGED_BY_VALUE.to_string(),
            )])),
            owner_references: Some(vec![OwnerReference {
                api_version: "v1".into(),
                kind: "Secret".into(),
                name,
                uid,
                ..OwnerReference::default()
            }]),
            ..ObjectMeta::default()
        },
        type_: Some(kind),
        data: Some(data),
        ..Secret::default()
    })
}

/// Compares the desired copy with the one in the cluster.
pub fn decide(desired: Secret, existing: Option<&Secret>) -> Action {
    let Some(existing) = existing else {
        return Action::Create(desired);
    };
    if !is_managed(existing) {
        return Action::NotOurs;
    }
    if existing.type_ != desired.type_ {
        return Action::TypeChanged;
    }
    let same = existing.data == desired.data
        && existing.metadata.owner_references == desired.metadata.owner_references
        && existing
            .metadata
            .labels
            .as_ref()
            .and_then(|l| l.get(MANAGED_BY_KEY))
            == desired
                .metadata
                .labels
                .as_ref()
                .and_then(|l| l.get(MANAGED_BY_KEY));
    if same {
        return Action::UpToDate;
    }
    let mut replacement = desired;
    replacement.metadata.resource_version = existing.metadata.resource_version.clone();
    let mut labels = existing.metadata.labels.clone().unwrap_or_default();
    labels.extend(replacement.metadata.labels.take().unwrap_or_default());
    replacement.metadata.labels = Some(labels);
    replacement.metadata.annotations = existing.metadata.annotations.clone();
    Action::Replace(replacement)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn source(auths: &str) -> Secret {
        Secret {
            metadata: ObjectMeta {
                name: Some("test-registry".into()),
                namespace: Some("apps".into()),
                uid: Some("uid-1".into()),
                ..ObjectMeta::default()
            },
            type_: Some(DOCKER_CONFIG_JSON.into()),
            data: Some(BTreeMap::from([(
                ".dockerconfigjson".to_string(),
                ByteString(format!(r#"{{"auths":{auths}}}"#).into_bytes()),
            )])),
            ..Secret::default()
        }
    }

    fn listed() -> Settings {
        Settings {
            registries: Settings::parse_registries("*.example.com").unwrap(),
            ..Settings::default()
        }
    }

    #[test]
    fn copy_is_named_owned_and_rewritten() {
        let s = listed();
        let copy = desired(&source(r#"{"reg.example.com":{"auth":"dTpw"}}"#), &s).unwrap();
        assert_eq!(
            copy.metadata.name.as_deref(),
            Some("acr-credential-test-registry-p2p")
        );
        assert_eq!(copy.metadata.namespace.as_deref(), Some("apps"));
        let owner = &copy.metadata.owner_references.as_ref().unwrap()[0];
        assert_eq!(
            (owner.kind.as_str(), owner.name.as_str(), owner.uid.as_str()),
            ("Secret", "test-registry", "uid-1")
        );
        let doc = &copy.data.as_ref().unwrap()[".dockerconfigjson"].0;
        assert_eq!(
            std::str::from_utf8(doc).unwrap(),
            r#"{"auths":{"reg.distributed.example.com:65001":{"auth":"dTpw"}}}"#
        );
        assert!(is_managed(&copy));
    }

    #[test]
    fn existing_copies() {
        let s = listed();
        let want = desired(&source(r#"{"reg.example.com":{}}"#), &s).unwrap();
        assert!(matches!(decide(want.clone(), None), Action::Create(_)));
        assert_eq!(decide(want.clone(), Some(&want)), Action::UpToDate);
        let mut theirs = want.clone();
        theirs.metadata.labels = None;
        assert_eq!(decide(want.clone(), Some(&theirs)), Action::NotOurs);
        let mut stale = desired(&source(r#"{"old.example.com":{}}"#), &s).unwrap();
        stale.metadata.resource_version = Some("7".into());
        let Action::Replace(r) = decide(want.clone(), Some(&stale)) else {
            panic!()
        };
        assert_eq!(r.metadata.resource_version.as_deref(), Some("7"));
        assert_eq!(r.data, want.data);
        let mut retyped = want.clone();
        retyped.type_ = Some(DOCKER_CFG.into());
        assert_eq!(decide(want, Some(&retyped)), Action::TypeChanged);
    }

    #[test]
    fn other_secret_types_are_refused() {
        let mut s = source("{}");
        s.type_ = Some("Opaque".into());
        assert!(matches!(
            desired(&s, &Settings::default()),
            Err(CopyError::NotPullSecret(_))
        ));
    }
}
