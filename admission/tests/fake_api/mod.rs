//! An in-process stand-in for the few core API endpoints kube-rs calls for Secrets and
//! Namespaces: get, create, replace, delete, list and watch, with resource versions and
//! AlreadyExists/Conflict/NotFound statuses shaped like the API server's. Tests can make the
//! next writes fail, or let another writer act just before them, as a second replica would. It is a `tower`
//! service handed to `kube::Client::new`, or served over plain HTTP on 127.0.0.1 for the
//! binary, so the real client code (URLs, query strings, serialisation, watch stream
//! decoding) runs against it. Garbage collection of owned objects is not emulated.

#![allow(dead_code)] // Each test binary uses a different part.

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::net::SocketAddr;
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
/// (resource, namespace, name); namespace is empty for cluster-scoped objects.
type Key = (String, String, String);
/// Runs just before a create or replace of a Secret is applied.
type WriteHook = Box<dyn FnMut(&FakeApi) + Send>;

#[derive(Default)]
struct State {
    revision: u64,
    objects: BTreeMap<Key, Value>,
    watchers: Vec<(String, mpsc::UnboundedSender<Bytes>)>,
    reads: BTreeMap<String, usize>,
    failing_writes: usize,
    before_writes: Option<(usize, WriteHook)>,
}

#[derive(Clone)]
pub struct FakeApi {
    state: Arc<Mutex<State>>,
    changed: watch::Sender<u64>,
    watches: watch::Sender<BTreeMap<String, usize>>,
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

fn kind(resource: &str) -> &'static str {
    match resource {
        "secrets" => "Secret",
        "namespaces" => "Namespace",
        other => panic!("the stand-in has no {other}"),
    }
}

impl FakeApi {
    pub fn new() -> Self {
        Self {
            state: Arc::default(),
            changed: watch::channel(0).0,
            watches: watch::channel(BTreeMap::new()).0,
        }
    }

    pub fn client(&self) -> kube::Client {
        let me = self.clone();
        let svc = tower::service_fn(move |req: Request<kube::client::Body>| {
            let me = me.clone();
            async move {
                let (parts, body) = req.into_parts();
                let body = body.collect_bytes().await.unwrap_or_default();
                Ok::<_, Infallible>(me.handle(Request::from_parts(parts, body)).await)
            }
        });
        kube::Client::new(svc, "default")
    }

    /// Serves the stand-in over plain HTTP on 127.0.0.1 until the runtime stops.
    pub async fn serve_http(&self) -> SocketAddr {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let me = self.clone();
        tokio::spawn(async move {
            while let Ok((tcp, _)) = listener.accept().await {
                let me = me.clone();
                let svc = hyper::service::service_fn(move |req: Request<hyper::body::Incoming>| {
                    let me = me.clone();
                    async move {
                        let (parts, body) = req.into_parts();
                        let body = body
                            .collect()
                            .await
                            .map(|b| b.to_bytes())
                            .unwrap_or_default();
                        Ok::<_, Infallible>(me.handle(Request::from_parts(parts, body)).await)
                    }
                });
                tokio::spawn(
                    hyper::server::conn::http1::Builder::new()
                        .serve_connection(hyper_util::rt::TokioIo::new(tcp), svc),
                );
            }
        });
        addr
    }

    /// Stores a Secret as the API server would (uid, resourceVersion) and notifies watchers.
    pub fn put(&self, obj: Value) -> Value {
        self.store("secrets", obj)
    }

    pub fn put_namespace(&self, name: &str, labels: Value) -> Value {
        self.store(
            "namespaces",
            json!({"metadata": {"name": name, "labels": labels}}),
        )
    }

    /// Stores a Namespace without telling watchers, as if their watch lagged behind.
    pub fn put_namespace_unwatched(&self, name: &str, labels: Value) {
        let obj = json!({"apiVersion": "v1", "kind": "Namespace",
                         "metadata": {"name": name, "labels": labels, "resourceVersion": "1"}});
        let key = ("namespaces".to_string(), String::new(), name.to_string());
        self.state.lock().unwrap().objects.insert(key, obj);
    }

    fn store(&self, resource: &str, mut obj: Value) -> Value {
        let mut st = self.state.lock().unwrap();
        st.revision += 1;
        let rv = st.revision;
        let key = (
            resource.to_string(),
            obj["metadata"]["namespace"]
                .as_str()
                .unwrap_or_default()
                .to_string(),
            obj["metadata"]["name"].as_str().unwrap().to_string(),
        );
        let event = if let Some(old) = st.objects.get(&key) {
            obj["metadata"]["uid"] = old["metadata"]["uid"].clone();
            "MODIFIED"
        } else {
            obj["metadata"]["uid"] = json!(format!("uid-{}-{rv}", key.2));
            "ADDED"
        };
        obj["metadata"]["resourceVersion"] = json!(rv.to_string());
        obj["apiVersion"] = json!("v1");
        obj["kind"] = json!(kind(resource));
        st.objects.insert(key, obj.clone());
        Self::emit(&mut st, resource, event, &obj);
        drop(st);
        self.changed.send_replace(rv);
        obj
    }

    /// Stores a Secret without telling watchers, as if their watch missed the change.
    pub fn put_unwatched(&self, mut obj: Value) -> Value {
        let mut st = self.state.lock().unwrap();
        st.revision += 1;
        let key = (
            "secrets".to_string(),
            obj["metadata"]["namespace"].as_str().unwrap().to_string(),
            obj["metadata"]["name"].as_str().unwrap().to_string(),
        );
        let old = st.objects.get(&key).expect("an existing Secret");
        obj["metadata"]["uid"] = old["metadata"]["uid"].clone();
        obj["metadata"]["resourceVersion"] = json!(st.revision.to_string());
        obj["apiVersion"] = json!("v1");
        obj["kind"] = json!("Secret");
        st.objects.insert(key, obj.clone());
        obj
    }

    /// The next `n` creates or replaces of Secrets fail with 500.
    pub fn fail_writes(&self, n: usize) {
        self.state.lock().unwrap().failing_writes = n;
    }

    /// `hook` runs just before each of the next `n` creates or replaces of Secrets is applied.
    pub fn before_writes(&self, n: usize, hook: impl FnMut(&FakeApi) + Send + 'static) {
        self.state.lock().unwrap().before_writes = Some((n, Box::new(hook)));
    }

    /// Runs the write hook if one is due, and says whether this write should fail.
    fn on_write(&self, res: &str) -> bool {
        if res != "secrets" {
            return false;
        }
        let mut st = self.state.lock().unwrap();
        if st.failing_writes > 0 {
            st.failing_writes -= 1;
            return true;
        }
        let Some((n, mut hook)) = st.before_writes.take() else {
            return false;
        };
        drop(st);
        hook(self);
        if n > 1 {
            self.state.lock().unwrap().before_writes = Some((n - 1, hook));
        }
        false
    }

    pub fn remove(&self, ns: &str, name: &str) -> Option<Value> {
        self.delete(("secrets".into(), ns.into(), name.into()))
    }

    fn delete(&self, key: Key) -> Option<Value> {
        let mut st = self.state.lock().unwrap();
        let obj = st.objects.remove(&key)?;
        st.revision += 1;
        let rv = st.revision;
        Self::emit(&mut st, &key.0, "DELETED", &obj);
        drop(st);
        self.changed.send_replace(rv);
        Some(obj)
    }

    pub fn get(&self, ns: &str, name: &str) -> Option<Secret> {
        let st = self.state.lock().unwrap();
        let v = st
            .objects
            .get(&("secrets".into(), ns.into(), name.into()))?;
        Some(serde_json::from_value(v.clone()).unwrap())
    }

    /// How many single-object reads `path` has served.
    pub fn reads(&self, path: &str) -> usize {
        self.state
            .lock()
            .unwrap()
            .reads
            .get(path)
            .copied()
            .unwrap_or(0)
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

    /// Waits (bounded) until a watch of `resource` is open, which kube opens after its
    /// initial list has been read.
    pub async fn wait_for_watch(&self, resource: &str) {
        let mut rx = self.watches.subscribe();
        tokio::time::timeout(
            std::time::Duration::from_secs(20),
            rx.wait_for(|w| w.get(resource).is_some_and(|n| *n > 0)),
        )
        .await
        .unwrap_or_else(|_| panic!("no watch of {resource} opened"))
        .unwrap();
    }

    fn emit(st: &mut State, resource: &str, kind: &str, obj: &Value) {
        let line = Bytes::from(format!("{}\n", json!({"type": kind, "object": obj})));
        st.watchers
            .retain(|(r, w)| r != resource || w.send(line.clone()).is_ok());
    }

    fn read(&self, key: &Key, path: &str) -> Response<Body> {
        let mut st = self.state.lock().unwrap();
        *st.reads.entry(path.to_string()).or_default() += 1;
        match st.objects.get(key) {
            Some(v) => full(StatusCode::OK, v.clone()),
            None => status(StatusCode::NOT_FOUND, "NotFound", "not found"),
        }
    }

    async fn handle(&self, req: Request<Bytes>) -> Response<Body> {
        let (parts, body) = req.into_parts();
        let path: Vec<&str> = parts.uri.path().trim_matches('/').split('/').collect();
        let query = parts.uri.query().unwrap_or_default();
        let key =
            |res: &str, ns: &str, name: &str| (res.to_string(), ns.to_string(), name.to_string());
        match (&parts.method, path.as_slice()) {
            (&Method::GET, ["api", "v1", res]) if query.contains("watch=true") => {
                kind(res);
                let (tx, rx) = mpsc::unbounded_channel();
                self.state
                    .lock()
                    .unwrap()
                    .watchers
                    .push((res.to_string(), tx));
                self.watches
                    .send_modify(|w| *w.entry(res.to_string()).or_default() += 1);
                let stream = futures_util::stream::unfold(rx, |mut rx| async move {
                    let line = rx.recv().await?;
                    Some((Ok::<_, Infallible>(Frame::data(line)), rx))
                });
                Response::builder()
                    .header("content-type", "application/json")
                    .body(BodyExt::boxed(StreamBody::new(stream)))
                    .unwrap()
            }
            (&Method::GET, ["api", "v1", res]) => {
                let st = self.state.lock().unwrap();
                let items: Vec<&Value> = st
                    .objects
                    .iter()
                    .filter(|(k, _)| k.0 == *res)
                    .map(|(_, v)| v)
                    .collect();
                full(
                    StatusCode::OK,
                    json!({"kind": format!("{}List", kind(res)), "apiVersion": "v1",
                           "metadata": {"resourceVersion": st.revision.to_string()}, "items": items}),
                )
            }
            (&Method::GET, ["api", "v1", "namespaces", name]) => {
                self.read(&key("namespaces", "", name), parts.uri.path())
            }
            (&Method::GET, ["api", "v1", "namespaces", ns, res, name]) => {
                self.read(&key(res, ns, name), parts.uri.path())
            }
            (&Method::POST, ["api", "v1", "namespaces", ns, res]) => {
                if self.on_write(res) {
                    return status(StatusCode::INTERNAL_SERVER_ERROR, "InternalError", "failed");
                }
                let mut obj: Value = serde_json::from_slice(&body).unwrap();
                obj["metadata"]["namespace"] = json!(ns);
                let name = obj["metadata"]["name"].as_str().unwrap().to_string();
                if self
                    .state
                    .lock()
                    .unwrap()
                    .objects
                    .contains_key(&key(res, ns, &name))
                {
                    return status(StatusCode::CONFLICT, "AlreadyExists", "already exists");
                }
                full(StatusCode::CREATED, self.store(res, obj))
            }
            (&Method::PUT, ["api", "v1", "namespaces", ns, res, name]) => {
                if self.on_write(res) {
                    return status(StatusCode::INTERNAL_SERVER_ERROR, "InternalError", "failed");
                }
                let mut obj: Value = serde_json::from_slice(&body).unwrap();
                obj["metadata"]["namespace"] = json!(ns);
                let current = self
                    .state
                    .lock()
                    .unwrap()
                    .objects
                    .get(&key(res, ns, name))
                    .cloned();
                let Some(current) = current else {
                    return status(StatusCode::NOT_FOUND, "NotFound", "not found");
                };
                if obj["metadata"]["resourceVersion"] != current["metadata"]["resourceVersion"] {
                    return status(StatusCode::CONFLICT, "Conflict", "object has been modified");
                }
                full(StatusCode::OK, self.store(res, obj))
            }
            (&Method::DELETE, ["api", "v1", "namespaces", ns, res, name]) => {
                match self.delete(key(res, ns, name)) {
                    Some(v) => full(StatusCode::OK, v),
                    None => status(StatusCode::NOT_FOUND, "NotFound", "not found"),
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
