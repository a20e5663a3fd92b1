//! Builds the JSONPatch for one selected Pod: new image references, annotations, pull secrets.
//!
//! Pure: it reads the Pod and the settings and returns a [`Plan`]; nothing here talks to the
//! API. A Pod with no rewritable image is not accelerated: when none of its images is listed it
//! gets no patch at all, and when listed images had to be left alone it gets only the
//! `p2p-config` annotation saying why. Patches are built against the object as sent, with `add` for missing parents,
//! because the API server applies them to exactly that object.

use std::collections::BTreeSet;

use k8s_openapi::api::core::v1::Pod;
use serde_json::{json, Value};

use crate::config::Settings;
use crate::image::{self, Outcome};
use crate::p2p_config::{
    is_p2p_secret_name, p2p_secret_name, EndpointRecord, ImageRecord, P2pConfig, SecretRecord,
    SkippedImage, CONFIG_ANNOTATION, CONFIG_VERSION, MODE_ANNOTATION, MODE_VALUE,
};

/// Longest object name the API accepts for a Secret.
const MAX_NAME_LEN: usize = 253;

/// What part of the Pod this admission may change.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Scope {
    /// A new Pod: every container list, annotations and pull secrets.
    Create,
    /// An update of the `ephemeralcontainers` subresource: only ephemeral containers whose
    /// names are not in `existing` (the API refuses changes to the ones already there).
    Ephemeral { existing: BTreeSet<String> },
}

/// The outcome for one Pod.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Plan {
    /// JSONPatch operations; empty when nothing changes.
    pub patch: Vec<Value>,
    /// Original pull secrets whose P2P copies the Pod now refers to.
    pub secrets: Vec<String>,
    /// Listed images left alone, with reasons, for warnings and the annotation.
    pub skipped: Vec<SkippedImage>,
    pub rewritten: usize,
}

fn escape(key: &str) -> String {
    key.replace('~', "~0").replace('/', "~1")
}

fn replace(path: String, value: &str) -> Value {
    json!({"op": "replace", "path": path, "value": value})
}

/// `(name, image)` of each container in one list.
type Named = Vec<(String, Option<String>)>;

/// Container lists in the order they appear in the Pod spec, as `(kind, [(name, image)])`.
fn containers(pod: &Pod) -> Vec<(&'static str, Named)> {
    let Some(spec) = pod.spec.as_ref() else {
        return Vec::new();
    };
    let pair = |name: &String, image: &Option<String>| (name.clone(), image.clone());
    vec![
        (
            "containers",
            spec.containers
                .iter()
                .map(|c| pair(&c.name, &c.image))
                .collect(),
        ),
        (
            "initContainers",
            spec.init_containers
                .iter()
                .flatten()
                .map(|c| pair(&c.name, &c.image))
                .collect(),
        ),
        (
            "ephemeralContainers",
            spec.ephemeral_containers
                .iter()
                .flatten()
                .map(|c| pair(&c.name, &c.image))
                .collect(),
        ),
    ]
}

/// The annotation a previous admission left, if it can be read.
fn previous_config(pod: &Pod) -> Option<P2pConfig> {
    pod.metadata
        .annotations
        .as_ref()
        .and_then(|a| a.get(CONFIG_ANNOTATION))
        .and_then(|s| serde_json::from_str(s).ok())
}

/// Previous records that still describe the Pod, so re-admission keeps the undo information.
fn previous_records(pod: &Pod, current: &[(&str, String, String)]) -> Vec<ImageRecord> {
    previous_config(pod)
        .map(|c| c.images)
        .unwrap_or_default()
        .into_iter()
        .filter(|r| {
            current
                .iter()
                .any(|(k, n, img)| *k == r.kind && *n == r.container && *img == r.image)
        })
        .collect()
}

/// Decides the patch for `pod`, which the caller has already selected.
pub fn plan(pod: &Pod, scope: &Scope, settings: &Settings) -> Plan {
    let mut out = Plan::default();
    let mut records = Vec::new();
    let mut already = Vec::new();
    for (kind, list) in containers(pod) {
        for (i, (name, img)) in list.into_iter().enumerate() {
            if let Scope::Ephemeral { existing } = scope {
                if kind != "ephemeralContainers" || existing.contains(&name) {
                    continue;
                }
            }
            let Some(img) = img else { continue };
            match image::rewrite(&img, &settings.registries, &settings.endpoint) {
                Outcome::Rewritten(new) => {
                    out.patch
                        .push(replace(format!("/spec/{kind}/{i}/image"), &new));
                    records.push(ImageRecord {
                        kind: kind.to_string(),
                        container: name,
                        original: img,
                        image: new,
                    });
                }
                Outcome::AlreadyP2p => already.push((kind, name, img)),
                Outcome::NotListed => {}
                Outcome::Unsupported(why) => out.skipped.push(SkippedImage {
                    kind: kind.to_string(),
                    container: name,
                    image: img,
                    reason: why.to_string(),
                }),
            }
        }
    }
    out.rewritten = records.len();
    if *scope != Scope::Create {
        return out;
    }
    if records.is_empty() {
        // Not accelerated. A first admission whose listed images were all left alone still
        // records why in the annotation; the Pod gets neither the mode annotation nor pull
        // secrets, and a Pod accelerated earlier keeps its record as it is.
        if already.is_empty() && !out.skipped.is_empty() {
            let config = P2pConfig {
                version: CONFIG_VERSION,
                endpoint: endpoint_record(settings),
                images: Vec::new(),
                pull_secrets: Vec::new(),
                skipped: out.skipped.clone(),
            };
            if previous_config(pod).as_ref() != Some(&config) {
                out.patch
                    .extend(annotate(pod, &[(CONFIG_ANNOTATION, &to_json(&config))]));
            }
        }
        return out;
    }

    let mut pull_secrets = Vec::new();
    let existing: Vec<String> = pod
        .spec
        .as_ref()
        .and_then(|s| s.image_pull_secrets.as_ref())
        .map(|v| v.iter().map(|r| r.name.clone()).collect())
        .unwrap_or_default();
    let mut added = Vec::new();
    for name in &existing {
        if name.is_empty() || is_p2p_secret_name(name) {
            continue;
        }
        let copy = p2p_secret_name(name);
        if copy.len() > MAX_NAME_LEN {
            tracing::warn!(secret = %name, "pull secret name too long for a P2P copy");
            continue;
        }
        if !existing.contains(&copy) && !added.contains(&copy) {
            added.push(copy.clone());
        }
        out.secrets.push(name.clone());
        pull_secrets.push(SecretRecord {
            original: name.clone(),
            p2p: copy,
        });
    }
    // The originals are listed already, so the copies are appended after them.
    out.patch.extend(
        added.iter().map(
            |n| json!({"op": "add", "path": "/spec/imagePullSecrets/-", "value": {"name": n}}),
        ),
    );

    let mut images = previous_records(pod, &already);
    images.extend(records);
    let config = P2pConfig {
        version: CONFIG_VERSION,
        endpoint: endpoint_record(settings),
        images,
        pull_secrets,
        skipped: out.skipped.clone(),
    };
    out.patch.extend(annotate(
        pod,
        &[
            (MODE_ANNOTATION, MODE_VALUE),
            (CONFIG_ANNOTATION, &to_json(&config)),
        ],
    ));
    out
}

fn endpoint_record(settings: &Settings) -> EndpointRecord {
    EndpointRecord {
        label: settings.endpoint.label.clone(),
        port: settings.endpoint.port,
    }
}

fn to_json(config: &P2pConfig) -> String {
    serde_json::to_string(config).expect("plain structs serialise")
}

/// Operations that set the annotations, creating the map when the Pod has none.
fn annotate(pod: &Pod, pairs: &[(&str, &str)]) -> Vec<Value> {
    if pod.metadata.annotations.is_none() {
        let map: serde_json::Map<String, Value> = pairs
            .iter()
            .map(|(k, v)| (k.to_string(), Value::from(*v)))
            .collect();
        return vec![json!({"op": "add", "path": "/metadata/annotations", "value": map})];
    }
    pairs
        .iter()
        .map(|(k, v)| {
            json!({
                "op": "add",
                "path": format!("/metadata/annotations/{}", escape(k)),
                "value": v,
            })
        })
        .collect()
}
