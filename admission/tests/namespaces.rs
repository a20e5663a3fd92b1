//! The namespace label cache against the API stand-in: labels come from the watch without an
//! API call per review, and a namespace the watch has not delivered yet is read directly.

mod fake_api;

use dadi_p2p_admission::namespaces::{NamespaceCache, NamespaceLabels};
use fake_api::FakeApi;
use serde_json::json;
use std::collections::BTreeMap;

#[tokio::test]
async fn labels_from_the_watch_then_from_the_api() {
    let api = FakeApi::new();
    api.put_namespace(
        "apps",
        json!({"k8s.aliyun.com/image-accelerate-mode": "p2p"}),
    );
    api.put_namespace("plain", json!({}));
    let cache = NamespaceCache::start(api.client());
    // kube opens the watch only after the initial list has gone through the reflector.
    api.wait_for_watch("namespaces").await;

    let apps = cache.labels("apps").await.unwrap();
    assert_eq!(apps["k8s.aliyun.com/image-accelerate-mode"], "p2p");
    assert_eq!(cache.labels("plain").await, Some(BTreeMap::new()));
    assert_eq!(
        api.reads("/api/v1/namespaces/apps"),
        0,
        "served from the cache"
    );

    api.put_namespace_unwatched("fresh", json!({"team": "web"}));
    let fresh = cache.labels("fresh").await.unwrap();
    assert_eq!(fresh["team"], "web");
    assert_eq!(api.reads("/api/v1/namespaces/fresh"), 1);

    assert_eq!(cache.labels("missing").await, None);
    assert_eq!(api.reads("/api/v1/namespaces/missing"), 1);
}
