//! The webhook's own Prometheus counters, served at `GET /metrics`.
//!
//! Names follow the Prometheus conventions under the `dadi_p2p_admission_` prefix; the
//! `DADIP2P_*` family belongs to the node accelerator, not to this process.

use std::sync::Arc;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;
use tokio::sync::watch;

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct Outcome {
    pub outcome: String,
}

/// Cloning shares the counters.
#[derive(Clone)]
pub struct Metrics {
    registry: Arc<Registry>,
    reviews: Family<Outcome, Counter>,
    review_seconds: Histogram,
    images_rewritten: Counter,
    images_skipped: Counter,
    secret_copies: Family<Outcome, Counter>,
    secret_requests_dropped: Counter,
    cert_reloads: Family<Outcome, Counter>,
    /// Bumped on every counted outcome, so a caller can wait for a count instead of polling.
    changes: Arc<watch::Sender<u64>>,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    pub fn new() -> Self {
        let mut r = Registry::with_prefix("dadi_p2p_admission");
        let reviews = Family::<Outcome, Counter>::default();
        r.register(
            "reviews",
            "Admission reviews answered, by outcome",
            reviews.clone(),
        );
        // 0.5 ms to about 4 s: the API server gives up at the webhook timeout (5 s).
        let review_seconds = Histogram::new(exponential_buckets(0.0005, 2.0, 14));
        r.register(
            "review_seconds",
            "Time to answer one admission review",
            review_seconds.clone(),
        );
        let images_rewritten = Counter::default();
        r.register(
            "images_rewritten",
            "Container images pointed at the P2P endpoint",
            images_rewritten.clone(),
        );
        let images_skipped = Counter::default();
        r.register(
            "images_skipped",
            "Images of listed registries left alone because the endpoint cannot carry them",
            images_skipped.clone(),
        );
        let secret_copies = Family::<Outcome, Counter>::default();
        r.register(
            "secret_copies",
            "P2P pull secret reconciliations, by outcome",
            secret_copies.clone(),
        );
        let secret_requests_dropped = Counter::default();
        r.register(
            "secret_requests_dropped",
            "Pull secret copy requests dropped because too many were pending",
            secret_requests_dropped.clone(),
        );
        let cert_reloads = Family::<Outcome, Counter>::default();
        r.register(
            "certificate_reloads",
            "Serving certificate reloads from disk, by outcome",
            cert_reloads.clone(),
        );
        Self {
            registry: Arc::new(r),
            reviews,
            review_seconds,
            images_rewritten,
            images_skipped,
            secret_copies,
            secret_requests_dropped,
            cert_reloads,
            changes: Arc::new(watch::channel(0).0),
        }
    }

    fn inc(&self, family: &Family<Outcome, Counter>, outcome: &str) {
        family
            .get_or_create(&Outcome {
                outcome: outcome.to_string(),
            })
            .inc();
        self.changes.send_modify(|n| *n += 1);
    }

    /// A receiver that sees a change whenever an outcome is counted.
    pub fn subscribe(&self) -> watch::Receiver<u64> {
        self.changes.subscribe()
    }

    pub fn review(&self, outcome: &str) {
        self.inc(&self.reviews, outcome);
    }

    pub fn review_time(&self, elapsed: std::time::Duration) {
        self.review_seconds.observe(elapsed.as_secs_f64());
    }

    pub fn images(&self, rewritten: usize, skipped: usize) {
        self.images_rewritten.inc_by(rewritten as u64);
        self.images_skipped.inc_by(skipped as u64);
    }

    pub fn secret_copy(&self, outcome: &str) {
        self.inc(&self.secret_copies, outcome);
    }

    pub fn secret_request_dropped(&self) {
        self.secret_requests_dropped.inc();
        self.changes.send_modify(|n| *n += 1);
    }

    pub fn cert_reload(&self, outcome: &str) {
        self.inc(&self.cert_reloads, outcome);
    }

    /// The OpenMetrics text exposition.
    pub fn encode(&self) -> String {
        let mut out = String::new();
        prometheus_client::encoding::text::encode(&mut out, &self.registry)
            .expect("writing to a String cannot fail");
        out
    }
}
