//! The `k8s.aliyun.com/p2p-config` annotation: what the webhook changed, so it can be undone.
//!
//! The annotation holds one JSON object. `images` pairs each rewritten container's original
//! reference with the new one, `pullSecrets` pairs each original pull secret with its P2P copy,
//! `endpoint` records the label and port used, and `skipped` lists listed images that were left
//! alone, with the reason. Undoing the webhook means setting each `image` back to `original`
//! and dropping the `p2p` secrets from `imagePullSecrets`.

use serde::{Deserialize, Serialize};

/// Annotation that marks an accelerated Pod, as documented.
pub const MODE_ANNOTATION: &str = "k8s.aliyun.com/image-accelerate-mode";
/// Value of [`MODE_ANNOTATION`].
pub const MODE_VALUE: &str = "p2p";
/// Annotation that records the rewrite.
pub const CONFIG_ANNOTATION: &str = "k8s.aliyun.com/p2p-config";
/// Version of the annotation's JSON layout.
pub const CONFIG_VERSION: u32 = 1;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct P2pConfig {
    pub version: u32,
    pub endpoint: EndpointRecord,
    #[serde(default)]
    pub images: Vec<ImageRecord>,
    #[serde(default)]
    pub pull_secrets: Vec<SecretRecord>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub skipped: Vec<SkippedImage>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EndpointRecord {
    pub label: String,
    pub port: u16,
}

/// One rewritten container; `kind` is the Pod spec list it lives in.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ImageRecord {
    pub kind: String,
    pub container: String,
    pub original: String,
    pub image: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SecretRecord {
    pub original: String,
    pub p2p: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SkippedImage {
    pub kind: String,
    pub container: String,
    pub image: String,
    pub reason: String,
}

/// Name of the P2P copy of pull secret `original`, as documented.
pub fn p2p_secret_name(original: &str) -> String {
    format!("acr-credential-{original}-p2p")
}

/// Whether `name` is itself a P2P copy, so it is not copied again.
pub fn is_p2p_secret_name(name: &str) -> bool {
    name.len() > "acr-credential--p2p".len()
        && name.starts_with("acr-credential-")
        && name.ends_with("-p2p")
}
