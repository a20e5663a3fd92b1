//! An in-process stand-in for the few Secret endpoints of the Kubernetes API that kube-rs
//! calls: get, create, replace, delete, list and watch, with resource versions and
//! AlreadyExists/Conflict/NotFound statuses shaped like the API server's. It is a `tower`
//! service handed to `kube::Client::new`, so the real client code (URLs, query strings,
//! serialisation, watch stream decoding) runs against it. Garbage collection of owned
//! objects is not emulated.

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use http::{Method, Request, Response, StatusCode};
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, Full, StreamBody};
use hyper::body::Frame;
use k8s_openapi::api::core::v1::Secret;
use serde_json::{json, Value};
use tokio::sync::{mpsc, watch};

type Body = BoxBody<Bytes, Infallible>;

#[derive(Default)]
struct State {
    revision: u64,
    secrets: BTreeMap<(String, String), Value>,
    watchers: Vec<mpsc::UnboundedSender<Bytes>>,
}

#[derive(Clone)]
pub struct FakeApi {
    state: Arc<Mutex<State>>,
    changed: watch::Sender<u64>,
    watches: watch::Sender<usize>,
}

fn full(status: StatusCode, v: Value) -> Response<Body> {
    Response::builder()
        .status(status)
        .header("content-type", "application/json")
        .body(Full::new(Bytes::from(v.to_string())).boxed())
        .unwrap()
}

fn status(code: StatusCode, reason: &str, message: &str) -> Response<Body> {
    full(
        code,
        json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
               "message": message, "reason": reason, "code": code.as_u16()}),
    )
}

impl FakeApi {
    pub fn new() -> Self {
        Self {
            state: Arc::default(),
            changed: watch::channel(0).0,
            watches: watch::channel(0).0,
        }
    }

    pub fn client(&self) -> kube::Client {
        let me = self.clone();
        let svc = tower::service_fn(move |req: Request<kube::client::Body>| {
            let me = me.clone();
            async move { Ok::<_, Infallible>(me.handle(req).await) }
        });
        kube::Client::new(svc, "default")
    }

    /// Stores `obj` as the API server would (uid, resourceVersion) and notifies watchers.
    pub fn put(&self, mut obj: Value) -> Value {
        let mut st = self.state.lock().unwrap();
        st.revision += 1;
        let rv = st.revision;
        let key = (
            obj["metadata"]["namespace"]
                .as_str()
                .unwrap_or_default()
                .to_string(),
            obj["metadata"]["name"].as_str().unwrap().to_string(),
        );
        let event = if let Some(old) = st.secrets.get(&key) {
            obj["metadata"]["uid"] = old["metadata"]["uid"].clone();
            "MODIFIED"
        } else {
            obj["metadata"]["uid"] = json!(format!("uid-{}-{rv}", key.1));
            "ADDED"
        };
        obj["metadata"]["resourceVersion"] = json!(rv.to_string());
        obj["apiVersion"] = json!("v1");
        obj["kind"] = json!("Secret");
        st.secrets.insert(key, obj.clone());
        Self::emit(&mut st, event, &obj);
        drop(st);
        self.changed.send_replace(rv);
        obj
    }

    pub fn remove(&self, ns: &str, name: &str) -> Option<Value> {
        let mut st = self.state.lock().unwrap();
        let obj = st.secrets.remove(&(ns.to_string(), name.to_string()))?;
        st.revision += 1;
        let rv = st.revision;
        Self::emit(&mut st, "DELETED", &obj);
        drop(st);
        self.changed.send_replace(rv);
        Some(obj)
    }

    pub fn get(&self, ns: &str, name: &str) -> Option<Secret> {
        let st = self.state.lock().unwrap();
        let v = st.secrets.get(&(ns.to_string(), name.to_string()))?;
        Some(serde_json::from_value(v.clone()).unwrap())
    }

    /// Waits (bounded) until `check` holds for the stored objects.
    pub async fn wait_until(&self, what: &str, check: impl Fn(&FakeApi) -> bool) {
        let mut rx = self.changed.subscribe();
        let wait = async {
            while !check(self) {
                rx.changed().await.unwrap();
            }
        };
        tokio::time::timeout(std::time::Duration::from_secs(20), wait)
            .await
            .unwrap_or_else(|_| panic!("never happened: {what}"));
    }

    /// Waits (bounded) until at least one watch is open.
    pub async fn wait_for_watch(&self) {
        let mut rx = self.watches.subscribe();
        tokio::time::timeout(std::time::Duration::from_secs(20), rx.wait_for(|n| *n > 0))
            .await
            .expect("controller never started watching")
            .unwrap();
    }

    fn emit(st: &mut State, kind: &str, obj: &Value) {
        let line = Bytes::from(format!("{}\n", json!({"type": kind, "object": obj})));
        st.watchers.retain(|w| w.send(line.clone()).is_ok());
    }

    async fn handle(&self, req: Request<kube::client::Body>) -> Response<Body> {
        let (parts, body) = req.into_parts();
        let body = body.collect_bytes().await.unwrap_or_default();
        let path: Vec<&str> = parts.uri.path().trim_matches('/').split('/').collect();
        let query = parts.uri.query().unwrap_or_default();
        match (&parts.method, path.as_slice()) {
            (&Method::GET, ["api", "v1", "secrets"]) if query.contains("watch=true") => {
                let (tx, rx) = mpsc::unbounded_channel();
                self.state.lock().unwrap().watchers.push(tx);
                self.watches.send_modify(|n| *n += 1);
                let stream = futures_util::stream::unfold(rx, |mut rx| async move {
                    let line = rx.recv().await?;
                    Some((Ok::<_, Infallible>(Frame::data(line)), rx))
                });
                Response::builder()
                    .header("content-type", "application/json")
                    .body(BodyExt::boxed(StreamBody::new(stream)))
                    .unwrap()
            }
            (&Method::GET, ["api", "v1", "secrets"]) => {
                let st = self.state.lock().unwrap();
                let items: Vec<&Value> = st.secrets.values().collect();
                full(
                    StatusCode::OK,
                    json!({"kind": "SecretList", "apiVersion": "v1",
                           "metadata": {"resourceVersion": st.revision.to_string()}, "items": items}),
                )
            }
            (&Method::GET, ["api", "v1", "namespaces", ns, "secrets", name]) => {
                let st = self.state.lock().unwrap();
                match st.secrets.get(&(ns.to_string(), name.to_string())) {
                    Some(v) => full(StatusCode::OK, v.clone()),
                    None => status(StatusCode::NOT_FOUND, "NotFound", "secrets not found"),
                }
            }
            (&Method::POST, ["api", "v1", "namespaces", ns, "secrets"]) => {
                let mut obj: Value = serde_json::from_slice(&body).unwrap();
                obj["metadata"]["namespace"] = json!(ns);
                let name = obj["metadata"]["name"].as_str().unwrap().to_string();
                if self.get(ns, &name).is_some() {
                    return status(StatusCode::CONFLICT, "AlreadyExists", "already exists");
                }
                full(StatusCode::CREATED, self.put(obj))
            }
            (&Method::PUT, ["api", "v1", "namespaces", ns, "secrets", name]) => {
                let mut obj: Value = serde_json::from_slice(&body).unwrap();
                obj["metadata"]["namespace"] = json!(ns);
                let Some(current) = self.get(ns, name) else {
                    return status(StatusCode::NOT_FOUND, "NotFound", "secrets not found");
                };
                if obj["metadata"]["resourceVersion"].as_str()
                    != current.metadata.resource_version.as_deref()
                {
                    return status(StatusCode::CONFLICT, "Conflict", "object has been modified");
                }
                full(StatusCode::OK, self.put(obj))
            }
            (&Method::DELETE, ["api", "v1", "namespaces", ns, "secrets", name]) => {
                match self.remove(ns, name) {
                    Some(v) => full(StatusCode::OK, v),
                    None => status(StatusCode::NOT_FOUND, "NotFound", "secrets not found"),
                }
            }
            _ => status(
                StatusCode::NOT_FOUND,
                "NotFound",
                "no such endpoint in the stand-in",
            ),
        }
    }
}
