//! The admission handler: one review in, one review out, never an error.
//!
//! Every path answers `allowed: true`: the webhook only ever adds acceleration, so a request
//! it cannot read, a namespace it cannot look up or a Pod it does not select is let through
//! unchanged (with a warning where the user should know). Pull secret copies are requested
//! from the secret controller through [`Requests`] and never awaited, as creation is
//! asynchronous; dry-run requests get the patch but request nothing.

use std::collections::BTreeSet;
use std::sync::Arc;

use serde_json::Value;
use tracing::Instrument;

use crate::config::Settings;
use crate::metrics::Metrics;
use crate::mutate::{self, Scope};
use crate::namespaces::NamespaceLabels;
use crate::p2p_config::{MODE_ANNOTATION, MODE_VALUE};
use crate::review::{self, Request, ReviewError};
use crate::secrets::requests::{Queued, Requests};
use crate::select;

pub use crate::secrets::requests::SecretRef;

/// What the handler decided for one request, before encoding.
#[derive(Debug, Default, PartialEq)]
pub struct Decision {
    pub patch: Vec<Value>,
    pub warnings: Vec<String>,
    pub secrets: Vec<SecretRef>,
    pub outcome: &'static str,
}

pub struct Webhook {
    settings: Arc<Settings>,
    namespaces: Arc<dyn NamespaceLabels>,
    secrets: Option<Arc<Requests>>,
    metrics: Metrics,
}

impl Webhook {
    pub fn new(
        settings: Arc<Settings>,
        namespaces: Arc<dyn NamespaceLabels>,
        secrets: Option<Arc<Requests>>,
        metrics: Metrics,
    ) -> Self {
        Self {
            settings,
            namespaces,
            secrets,
            metrics,
        }
    }

    /// Answers one `AdmissionReview` body.
    pub async fn review(&self, body: &[u8]) -> Vec<u8> {
        let (uid, decision) = match review::decode(body) {
            Ok(req) => {
                let span = tracing::debug_span!("review", uid = %req.uid, op = %req.operation);
                let decision = match self.decide(&req).instrument(span).await {
                    Ok(d) => d,
                    Err(e) => unreadable(&req.uid, e),
                };
                (req.uid, decision)
            }
            Err((uid, e)) => {
                let d = unreadable(&uid, e);
                (uid, d)
            }
        };
        self.metrics.review(decision.outcome);
        for s in &decision.secrets {
            let Some(requests) = &self.secrets else { break };
            match requests.push(s.clone()) {
                Queued::Added | Queued::AlreadyPending => {}
                Queued::Full => {
                    self.metrics.secret_request_dropped();
                    tracing::warn!(namespace = %s.namespace, secret = %s.name, "too many pull secrets pending; request dropped")
                }
                Queued::Closed => {
                    tracing::warn!(namespace = %s.namespace, secret = %s.name, "secret controller stopped")
                }
            }
        }
        review::allow(&uid, &decision.patch, &decision.warnings)
    }

    /// The decision for a decoded request; errors mean the Pod could not be read.
    pub async fn decide(&self, req: &Request) -> Result<Decision, ReviewError> {
        let scope = match (req.operation.as_str(), req.sub_resource.as_deref()) {
            ("CREATE", None | Some("")) => Scope::Create,
            ("UPDATE", Some("ephemeralcontainers")) => Scope::Ephemeral {
                existing: ephemeral_names(&req.pod(true)?),
            },
            _ => return Ok(outcome("ignored")),
        };
        let pod = req.pod(false)?;
        let namespace = req
            .namespace
            .clone()
            .or_else(|| pod.metadata.namespace.clone())
            .unwrap_or_default();
        let pod_name = pod
            .metadata
            .name
            .clone()
            .filter(|n| !n.is_empty())
            .or_else(|| pod.metadata.generate_name.clone())
            .unwrap_or_default();
        // The Pod's own label decides alone when present; only otherwise is the namespace read.
        let pod_labelled = pod
            .metadata
            .labels
            .as_ref()
            .is_some_and(|l| l.contains_key(&self.settings.selector_key));
        let ns_labels = match pod_labelled {
            true => None,
            false => self.namespaces.labels(&namespace).await,
        };
        let selection = select::select(
            &self.settings,
            pod.metadata.labels.as_ref(),
            ns_labels.as_ref(),
        );
        if !selection.accelerated() {
            tracing::debug!(%namespace, pod = %pod_name, why = selection.as_str(), "not selected");
            return Ok(outcome("not-selected"));
        }
        if let Scope::Ephemeral { .. } = scope {
            let marked = pod
                .metadata
                .annotations
                .as_ref()
                .and_then(|a| a.get(MODE_ANNOTATION));
            if marked.map(String::as_str) != Some(MODE_VALUE) {
                return Ok(outcome("not-selected"));
            }
        }
        let plan = mutate::plan(&pod, &scope, &self.settings);
        self.metrics.images(plan.rewritten, plan.skipped.len());
        let warnings = plan
            .skipped
            .iter()
            .map(|s| format!("image {} not accelerated: {}", s.image, s.reason))
            .collect();
        if plan.patch.is_empty() {
            return Ok(Decision {
                warnings,
                ..outcome("unchanged")
            });
        }
        if plan.rewritten == 0 {
            tracing::info!(%namespace, pod = %pod_name, skipped = plan.skipped.len(), "pod not accelerated: listed images left alone");
            return Ok(Decision {
                patch: plan.patch,
                warnings,
                ..outcome("skipped")
            });
        }
        let dry_run = req.dry_run();
        tracing::info!(
            %namespace,
            pod = %pod_name,
            why = selection.as_str(),
            rewritten = plan.rewritten,
            skipped = plan.skipped.len(),
            dry_run,
            "pod accelerated"
        );
        let secrets = if dry_run {
            Vec::new()
        } else {
            plan.secrets
                .iter()
                .map(|name| SecretRef {
                    namespace: namespace.clone(),
                    name: name.clone(),
                })
                .collect()
        };
        Ok(Decision {
            patch: plan.patch,
            warnings,
            secrets,
            outcome: if dry_run { "dry-run" } else { "mutated" },
        })
    }
}

fn outcome(outcome: &'static str) -> Decision {
    Decision {
        outcome,
        ..Decision::default()
    }
}

fn unreadable(uid: &str, error: ReviewError) -> Decision {
    tracing::warn!(uid, %error, "admission review not understood; allowed unchanged");
    Decision {
        warnings: vec![format!(
            "dadi-p2p-admission left the object unchanged: {error}"
        )],
        ..outcome("invalid")
    }
}

fn ephemeral_names(pod: &k8s_openapi::api::core::v1::Pod) -> BTreeSet<String> {
    pod.spec
        .iter()
        .flat_map(|s| s.ephemeral_containers.iter().flatten())
        .map(|c| c.name.clone())
        .collect()
}
