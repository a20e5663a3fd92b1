//! Namespace labels for the selection decision.
//!
//! In the cluster a reflector keeps every namespace's labels in memory, so a review costs no
//! API call; a namespace the cache has not seen yet (created a moment ago) is fetched directly
//! with a short timeout. Tests pass a plain map instead.

use std::collections::BTreeMap;
use std::time::Duration;

use futures_util::future::BoxFuture;
use futures_util::StreamExt;
use k8s_openapi::api::core::v1::Namespace;
use kube::runtime::reflector::{self, ObjectRef, Store};
use kube::runtime::{watcher, WatchStreamExt};
use kube::Api;

pub type Labels = BTreeMap<String, String>;

/// Time allowed for a direct namespace read, well inside the webhook timeout.
pub const LOOKUP_TIMEOUT: Duration = Duration::from_secs(2);

/// Where the webhook gets a namespace's labels. `None` means unknown (treated as unlabelled).
pub trait NamespaceLabels: Send + Sync {
    fn labels<'a>(&'a self, namespace: &'a str) -> BoxFuture<'a, Option<Labels>>;
}

impl NamespaceLabels for BTreeMap<String, Labels> {
    fn labels<'a>(&'a self, namespace: &'a str) -> BoxFuture<'a, Option<Labels>> {
        let found = self.get(namespace).cloned();
        Box::pin(async move { found })
    }
}

/// Reflector-backed cache of namespaces, with a direct read as fallback.
#[derive(Clone)]
pub struct NamespaceCache {
    store: Store<Namespace>,
    api: Api<Namespace>,
}

impl NamespaceCache {
    /// Starts the namespace watch on the current runtime and returns the cache.
    pub fn start(client: kube::Client) -> Self {
        let api: Api<Namespace> = Api::all(client);
        let (store, writer) = reflector::store();
        let stream = reflector::reflector(writer, watcher(api.clone(), watcher::Config::default()))
            .default_backoff()
            .applied_objects();
        tokio::spawn(async move {
            futures_util::pin_mut!(stream);
            while let Some(event) = stream.next().await {
                if let Err(error) = event {
                    tracing::warn!(%error, "namespace watch");
                }
            }
        });
        Self { store, api }
    }
}

impl NamespaceLabels for NamespaceCache {
    fn labels<'a>(&'a self, namespace: &'a str) -> BoxFuture<'a, Option<Labels>> {
        Box::pin(async move {
            if let Some(ns) = self.store.get(&ObjectRef::new(namespace)) {
                return Some(ns.metadata.labels.clone().unwrap_or_default());
            }
            match tokio::time::timeout(LOOKUP_TIMEOUT, self.api.get_opt(namespace)).await {
                Ok(Ok(ns)) => ns.map(|ns| ns.metadata.labels.unwrap_or_default()),
                Ok(Err(error)) => {
                    tracing::warn!(namespace, %error, "namespace read failed");
                    None
                }
                Err(_) => {
                    tracing::warn!(namespace, "namespace read timed out");
                    None
                }
            }
        })
    }
}
