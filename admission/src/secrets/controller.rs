//! Keeps the P2P copies in the cluster: creates them when the webhook asks, updates them when
//! the original changes.
//!
//! One task owns all state and reconciles one original at a time, so the API server sees at
//! most one call from it at once. It takes requests from the webhook ([`Requests`]) and events
//! from a watch of Secrets; a reconcile reads the original and the copy,
//! [`decide`](super::copy::decide)s, and writes. A request for an original that does not exist
//! yet stays wanted, and the copy is made when the original appears. A reconcile that failed,
//! whatever started it, stays wanted and is tried again every [`Timing::retry`]. Every
//! [`Timing::resync`] each copy known from the watch is compared with its original once more,
//! so a change the watch missed, or a copy edited by hand, does not stay wrong.
//!
//! Every replica runs this controller (there is no leader election), so a write can meet
//! another replica's: AlreadyExists on create, Conflict on update. That is not a failure: the
//! copy is read again and compared, counted as current when it already matches, and otherwise
//! written again at once, up to [`ATTEMPTS`] times.
//!
//! Wanted originals are kept in memory only, so after a restart a copy whose original was
//! created after its workload is made when the next Pod using it is admitted.

use std::collections::{BTreeMap, BTreeSet};
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use futures_util::StreamExt;
use k8s_openapi::api::core::v1::Secret;
use kube::api::PostParams;
use kube::runtime::{watcher, WatchStreamExt};
use kube::{Api, Client};
use tokio::time::{interval_at, Instant, MissedTickBehavior};

use super::copy::{self, Action, CopyError};
use super::requests::{Requests, SecretRef};
use super::{DOCKER_CFG, DOCKER_CONFIG_JSON};
use crate::config::Settings;
use crate::metrics::Metrics;
use crate::p2p_config::p2p_secret_name;

/// Time allowed for one API call.
pub const API_TIMEOUT: Duration = Duration::from_secs(10);
/// How often wanted originals are tried again.
pub const RETRY_EVERY: Duration = Duration::from_secs(60);
/// How often every known copy is compared with its original, whether or not it changed.
pub const RESYNC_EVERY: Duration = Duration::from_secs(300);
/// Reconciles of one original in a row when each write meets another writer's.
pub const ATTEMPTS: usize = 3;
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

impl SecretError {
    /// Whether another writer created or changed the copy between our read and our write.
    fn written_meanwhile(&self) -> bool {
        matches!(self, Self::Api(kube::Error::Api(s)) if s.is_already_exists() || s.is_conflict())
    }
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

/// The controller's periods.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Timing {
    pub retry: Duration,
    pub resync: Duration,
}

impl Default for Timing {
    fn default() -> Self {
        Self {
            retry: RETRY_EVERY,
            resync: RESYNC_EVERY,
        }
    }
}

/// Which originals need attention; pure, driven by requests and watch events.
#[derive(Debug, Default)]
pub struct Tracker {
    wanted: BTreeSet<SecretRef>,
    /// Managed copies seen in the watch, with the name of the original that owns each.
    copies: BTreeMap<SecretRef, Option<String>>,
}

fn secret_ref(s: &Secret) -> SecretRef {
    SecretRef {
        namespace: s.metadata.namespace.clone().unwrap_or_default(),
        name: s.metadata.name.clone().unwrap_or_default(),
    }
}

impl Tracker {
    /// Remembers that the copy of `r` is needed; false when the set is full.
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
        self.copies.contains_key(&SecretRef {
            namespace: r.namespace.clone(),
            name: p2p_secret_name(&r.name),
        })
    }

    pub fn wanted(&self) -> Vec<SecretRef> {
        self.wanted.iter().cloned().collect()
    }

    /// The originals of every managed copy known from the watch.
    pub fn copied(&self) -> Vec<SecretRef> {
        let originals: BTreeSet<SecretRef> = self
            .copies
            .iter()
            .filter_map(|(copy, owner)| {
                Some(SecretRef {
                    namespace: copy.namespace.clone(),
                    name: owner.clone()?,
                })
            })
            .collect();
        originals.into_iter().collect()
    }

    /// A Secret was created or changed: the original to reconcile, if any.
    pub fn on_apply(&mut self, s: &Secret) -> Option<SecretRef> {
        let me = secret_ref(s);
        if copy::is_managed(s) {
            let owner = s
                .metadata
                .owner_references
                .iter()
                .flatten()
                .find(|o| o.kind == "Secret")
                .map(|o| o.name.clone());
            self.copies.insert(me.clone(), owner.clone());
            return Some(SecretRef {
                namespace: me.namespace,
                name: owner?,
            });
        }
        let pull = matches!(s.type_.as_deref(), Some(DOCKER_CONFIG_JSON | DOCKER_CFG));
        let copy = SecretRef {
            namespace: me.namespace.clone(),
            name: p2p_secret_name(&me.name),
        };
        (pull && (self.wanted.contains(&me) || self.copies.contains_key(&copy))).then_some(me)
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
    timing: Timing,
}

impl SecretController {
    pub fn new(client: Client, settings: Arc<Settings>, metrics: Metrics) -> Self {
        Self {
            client,
            settings,
            metrics,
            timing: Timing::default(),
        }
    }

    pub fn with_timing(mut self, timing: Timing) -> Self {
        self.timing = timing;
        self
    }

    /// Brings the copy of `r` in line with the original. A write that meets another writer's
    /// is followed by a fresh read and comparison, up to [`ATTEMPTS`] in all.
    pub async fn reconcile(&self, r: &SecretRef) -> Result<Reconciled, SecretError> {
        let mut attempt = 1;
        loop {
            match self.reconcile_once(r).await {
                Err(e) if e.written_meanwhile() && attempt < ATTEMPTS => {
                    tracing::debug!(namespace = %r.namespace, secret = %r.name, attempt, "p2p copy written meanwhile; reading it again");
                    attempt += 1;
                }
                done => return done,
            }
        }
    }

    async fn reconcile_once(&self, r: &SecretRef) -> Result<Reconciled, SecretError> {
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
                if tracker.want(r.clone()) {
                    tracing::warn!(namespace = %r.namespace, secret = %r.name, %error, "pull secret copy failed; will retry");
                } else {
                    tracing::warn!(namespace = %r.namespace, secret = %r.name, %error, "pull secret copy failed; too many pending to retry");
                }
            }
        }
    }

    /// Runs until `shutdown` resolves, or until `requests` is closed and every request taken.
    pub async fn run(self, requests: Arc<Requests>, shutdown: impl Future<Output = ()>) {
        let api: Api<Secret> = Api::all(self.client.clone());
        let events = watcher(api, watcher::Config::default()).default_backoff();
        futures_util::pin_mut!(events);
        tokio::pin!(shutdown);
        let start = Instant::now();
        let mut retry = interval_at(start + self.timing.retry, self.timing.retry);
        retry.set_missed_tick_behavior(MissedTickBehavior::Delay);
        let mut resync = interval_at(start + self.timing.resync, self.timing.resync);
        resync.set_missed_tick_behavior(MissedTickBehavior::Delay);
        let mut tracker = Tracker::default();
        loop {
            tokio::select! {
                batch = requests.next() => {
                    let Some(batch) = batch else { break };
                    for r in batch {
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
                _ = resync.tick() => {
                    let copied = tracker.copied();
                    tracing::debug!(copies = copied.len(), "p2p pull secrets resync");
                    for r in copied {
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
        assert!(t.has_copy(&r("reg")));
        assert_eq!(t.copied(), [r("reg")], "and compared again at each resync");
        t.on_delete(&copy);
        assert_eq!(t.on_apply(&reg), None);
        assert!(t.copied().is_empty());
        assert!(t.want(r("reg")));
        assert_eq!(t.on_apply(&secret("reg", "Opaque", None)), None);
    }
}
