//! Keeps the P2P copies in the cluster: creates them when the webhook asks, updates them when
//! the original changes.
//!
//! One task owns all state. It takes requests from the webhook (bounded queue) and events from
//! a watch of Secrets, and reconciles one original at a time: read the original and the copy,
//! [`decide`](super::copy::decide), write. A request for an original that does not exist yet
//! stays wanted, and the copy is made when the original appears; wanted originals whose
//! reconcile failed are retried every [`RETRY_EVERY`]. Two replicas may both write; a conflict
//! is harmless because the loser sees the winner's copy in its next event and finds it current.
//!
//! Wanted originals are kept in memory only, so after a restart a copy whose original was
//! created after its workload is made when the next Pod using it is admitted.

use std::collections::BTreeSet;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use futures_util::StreamExt;
use k8s_openapi::api::core::v1::Secret;
use kube::api::PostParams;
use kube::runtime::{watcher, WatchStreamExt};
use kube::{Api, Client};
use tokio::sync::mpsc;

use super::copy::{self, Action, CopyError};
use super::{DOCKER_CFG, DOCKER_CONFIG_JSON};
use crate::config::Settings;
use crate::metrics::Metrics;
use crate::p2p_config::p2p_secret_name;
use crate::webhook::SecretRef;

/// Time allowed for one API call.
pub const API_TIMEOUT: Duration = Duration::from_secs(10);
/// How often wanted originals are tried again.
pub const RETRY_EVERY: Duration = Duration::from_secs(60);
/// Most originals remembered as wanted at once.
pub const MAX_WANTED: usize = 10_000;

#[derive(Debug, thiserror::Error)]
pub enum SecretError {
    #[error("api: {0}")]
    Api(#[from] kube::Error),
    #[error("api call timed out")]
    Timeout,
    #[error(transparent)]
    Copy(#[from] CopyError),
}

/// What a reconcile did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reconciled {
    Created,
    Replaced,
    TypeChanged,
    UpToDate,
    NotOurs,
    SourceMissing,
}

impl Reconciled {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Created => "created",
            Self::Replaced => "updated",
            Self::TypeChanged => "type-changed",
            Self::UpToDate => "current",
            Self::NotOurs => "not-managed",
            Self::SourceMissing => "source-missing",
        }
    }
}

/// Which originals need attention; pure, driven by requests and watch events.
#[derive(Debug, Default)]
pub struct Tracker {
    wanted: BTreeSet<SecretRef>,
    copies: BTreeSet<SecretRef>,
}

fn secret_ref(s: &Secret) -> SecretRef {
    SecretRef {
        namespace: s.metadata.namespace.clone().unwrap_or_default(),
        name: s.metadata.name.clone().unwrap_or_default(),
    }
}

impl Tracker {
    /// Remembers that a Pod refers to the copy of `r`; false when the set is full.
    pub fn want(&mut self, r: SecretRef) -> bool {
        if self.wanted.len() >= MAX_WANTED && !self.wanted.contains(&r) {
            return false;
        }
        self.wanted.insert(r);
        true
    }

    pub fn done(&mut self, r: &SecretRef) {
        self.wanted.remove(r);
    }

    /// Whether a managed copy of `r` is known from the watch, which then keeps it current.
    pub fn has_copy(&self, r: &SecretRef) -> bool {
        self.copies.contains(&SecretRef {
            namespace: r.namespace.clone(),
            name: p2p_secret_name(&r.name),
        })
    }

    pub fn wanted(&self) -> Vec<SecretRef> {
        self.wanted.iter().cloned().collect()
    }

    /// A Secret was created or changed: the original to reconcile, if any.
    pub fn on_apply(&mut self, s: &Secret) -> Option<SecretRef> {
        let me = secret_ref(s);
        if copy::is_managed(s) {
            self.copies.insert(me.clone());
            let owner = s
                .metadata
                .owner_references
                .iter()
                .flatten()
                .find(|o| o.kind == "Secret")?;
            return Some(SecretRef {
                namespace: me.namespace,
                name: owner.name.clone(),
            });
        }
        let pull = matches!(s.type_.as_deref(), Some(DOCKER_CONFIG_JSON | DOCKER_CFG));
        let copy = SecretRef {
            namespace: me.namespace.clone(),
            name: p2p_secret_name(&me.name),
        };
        (pull && (self.wanted.contains(&me) || self.copies.contains(&copy))).then_some(me)
    }

    /// A Secret was deleted. Copies are removed with their original by the API server.
    pub fn on_delete(&mut self, s: &Secret) {
        let me = secret_ref(s);
        self.copies.remove(&me);
        self.wanted.remove(&me);
    }
}

async fn call<T>(f: impl Future<Output = kube::Result<T>>) -> Result<T, SecretError> {
    tokio::time::timeout(API_TIMEOUT, f)
        .await
        .map_err(|_| SecretError::Timeout)?
        .map_err(SecretError::from)
}

pub struct SecretController {
    client: Client,
    settings: Arc<Settings>,
    metrics: Metrics,
}

impl SecretController {
    pub fn new(client: Client, settings: Arc<Settings>, metrics: Metrics) -> Self {
        Self {
            client,
            settings,
            metrics,
        }
    }

    /// Brings the copy of `r` in line with the original.
    pub async fn reconcile(&self, r: &SecretRef) -> Result<Reconciled, SecretError> {
        let api: Api<Secret> = Api::namespaced(self.client.clone(), &r.namespace);
        let Some(source) = call(api.get_opt(&r.name)).await? else {
            return Ok(Reconciled::SourceMissing);
        };
        let want = copy::desired(&source, &self.settings)?;
        let name = p2p_secret_name(&r.name);
        let existing = call(api.get_opt(&name)).await?;
        let pp = PostParams::default();
        Ok(match copy::decide(want, existing.as_ref()) {
            Action::Create(s) => {
                call(api.create(&pp, &s)).await?;
                Reconciled::Created
            }
            Action::Replace(s) => {
                call(api.replace(&name, &pp, &s)).await?;
                Reconciled::Replaced
            }
            Action::TypeChanged => Reconciled::TypeChanged,
            Action::UpToDate => Reconciled::UpToDate,
            Action::NotOurs => Reconciled::NotOurs,
        })
    }

    async fn step(&self, tracker: &mut Tracker, r: SecretRef) {
        match self.reconcile(&r).await {
            Ok(done) => {
                self.metrics.secret_copy(done.as_str());
                if done != Reconciled::SourceMissing {
                    tracker.done(&r);
                }
                if done == Reconciled::TypeChanged {
                    tracing::warn!(namespace = %r.namespace, secret = %r.name, "original changed type; delete its p2p copy to have it made again");
                } else if matches!(done, Reconciled::Created | Reconciled::Replaced) {
                    tracing::info!(namespace = %r.namespace, secret = %r.name, result = done.as_str(), "p2p pull secret");
                } else {
                    tracing::debug!(namespace = %r.namespace, secret = %r.name, result = done.as_str(), "p2p pull secret");
                }
            }
            Err(SecretError::Copy(error)) => {
                self.metrics.secret_copy("unusable");
                tracker.done(&r);
                tracing::warn!(namespace = %r.namespace, secret = %r.name, %error, "pull secret not copied");
            }
            Err(error) => {
                self.metrics.secret_copy("failed");
                tracing::warn!(namespace = %r.namespace, secret = %r.name, %error, "pull secret copy failed; will retry");
            }
        }
    }

    /// Runs until `shutdown` resolves or the request queue closes.
    pub async fn run(
        self,
        mut requests: mpsc::Receiver<SecretRef>,
        shutdown: impl Future<Output = ()>,
    ) {
        let api: Api<Secret> = Api::all(self.client.clone());
        let events = watcher(api, watcher::Config::default()).default_backoff();
        futures_util::pin_mut!(events);
        tokio::pin!(shutdown);
        let mut retry = tokio::time::interval(RETRY_EVERY);
        retry.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut tracker = Tracker::default();
        loop {
            tokio::select! {
                r = requests.recv() => {
                    let Some(r) = r else { break };
                    // Every Pod of a workload asks for the same copy; one that exists is
                    // already followed through the watch.
                    if tracker.has_copy(&r) {
                        continue;
                    }
                    if !tracker.want(r.clone()) {
                        tracing::warn!(namespace = %r.namespace, secret = %r.name, "too many pending pull secrets");
                    }
                    self.step(&mut tracker, r).await;
                }
                ev = events.next() => match ev {
                    Some(Ok(watcher::Event::Apply(s) | watcher::Event::InitApply(s))) => {
                        if let Some(r) = tracker.on_apply(&s) {
                            self.step(&mut tracker, r).await;
                        }
                    }
                    Some(Ok(watcher::Event::Delete(s))) => tracker.on_delete(&s),
                    Some(Ok(watcher::Event::Init | watcher::Event::InitDone)) => {}
                    Some(Err(error)) => tracing::warn!(%error, "secret watch"),
                    None => break,
                },
                _ = retry.tick() => {
                    for r in tracker.wanted() {
                        self.step(&mut tracker, r).await;
                    }
                }
                () = &mut shutdown => break,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, OwnerReference};
    use std::collections::BTreeMap;

    fn secret(name: &str, kind: &str, managed_from: Option<&str>) -> Secret {
        Secret {
            metadata: ObjectMeta {
                name: Some(name.into()),
                namespace: Some("apps".into()),
                labels: managed_from.map(|_| {
                    BTreeMap::from([(
                        super::super::MANAGED_BY_KEY.into(),
                        super::super::MANAGED_BY_VALUE.into(),
                    )])
                }),
                owner_references: managed_from.map(|o| {
                    vec![OwnerReference {
                        kind: "Secret".into(),
                        name: o.into(),
                        ..OwnerReference::default()
                    }]
                }),
                ..ObjectMeta::default()
            },
            type_: Some(kind.into()),
            ..Secret::default()
        }
    }

    fn r(name: &str) -> SecretRef {
        SecretRef {
            namespace: "apps".into(),
            name: name.into(),
        }
    }

    #[test]
    fn originals_are_followed_once_wanted_or_copied() {
        let mut t = Tracker::default();
        let reg = secret("reg", DOCKER_CONFIG_JSON, None);
        assert_eq!(t.on_apply(&reg), None, "unknown originals are not copied");
        assert!(t.want(r("reg")));
        assert_eq!(t.on_apply(&reg), Some(r("reg")));
        t.done(&r("reg"));
        assert_eq!(t.on_apply(&reg), None);
        let copy = secret("acr-credential-reg-p2p", DOCKER_CONFIG_JSON, Some("reg"));
        assert_eq!(
            t.on_apply(&copy),
            Some(r("reg")),
            "a copy points at its original"
        );
        assert_eq!(
            t.on_apply(&reg),
            Some(r("reg")),
            "an original with a copy is followed"
        );
        t.on_delete(&copy);
        assert_eq!(t.on_apply(&reg), None);
        assert!(t.want(r("reg")));
        assert_eq!(t.on_apply(&secret("reg", "Opaque", None)), None);
    }
}
