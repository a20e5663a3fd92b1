//! `AdmissionReview` (`admission.k8s.io/v1`) decoding and encoding.
//!
//! Written by hand over `serde_json` rather than through kube's admission types: kube-core 5
//! serialises its response `patch` (`Vec<u8>`) as a JSON array of numbers, which the API
//! server cannot decode, while the API wants the base64 of the JSONPatch document (Go's
//! `[]byte` in JSON) with `patchType: JSONPatch`. The request `uid` is echoed even when the
//! rest of the review cannot be read.

use base64::Engine;
use k8s_openapi::api::core::v1::Pod;
use serde::Deserialize;
use serde_json::{json, Value};

pub const API_VERSION: &str = "admission.k8s.io/v1";
pub const KIND: &str = "AdmissionReview";

/// Why a review could not be read; becomes the warning returned with `allowed: true`.
#[derive(Debug, thiserror::Error)]
pub enum ReviewError {
    #[error("body is not JSON: {0}")]
    NotJson(#[source] serde_json::Error),
    #[error("not an {KIND} {API_VERSION}")]
    WrongKind,
    #[error("review has no request")]
    NoRequest,
    #[error("request is for {0}, not a Pod")]
    NotAPod(String),
    #[error("request carries no object")]
    NoObject,
    #[error("object is not a valid Pod: {0}")]
    BadPod(#[source] serde_json::Error),
}

/// The fields of an admission request this webhook uses.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Request {
    #[serde(default)]
    pub uid: String,
    #[serde(default)]
    pub kind: GroupVersionKind,
    #[serde(default)]
    pub sub_resource: Option<String>,
    #[serde(default)]
    pub operation: String,
    #[serde(default)]
    pub namespace: Option<String>,
    #[serde(default)]
    pub name: Option<String>,
    #[serde(default)]
    pub dry_run: Option<bool>,
    #[serde(default)]
    pub object: Option<Value>,
    #[serde(default)]
    pub old_object: Option<Value>,
}

#[derive(Debug, Clone, Default, Deserialize)]
pub struct GroupVersionKind {
    #[serde(default)]
    pub group: String,
    #[serde(default)]
    pub version: String,
    #[serde(default)]
    pub kind: String,
}

impl Request {
    pub fn dry_run(&self) -> bool {
        self.dry_run.unwrap_or(false)
    }

    /// The Pod in `object` (or `old_object` when `old` is set).
    pub fn pod(&self, old: bool) -> Result<Pod, ReviewError> {
        if !self.kind.group.is_empty() || self.kind.kind != "Pod" {
            return Err(ReviewError::NotAPod(format!(
                "{}/{} {}",
                self.kind.group, self.kind.version, self.kind.kind
            )));
        }
        let obj = if old { &self.old_object } else { &self.object };
        let obj = obj.as_ref().ok_or(ReviewError::NoObject)?;
        Pod::deserialize(obj).map_err(ReviewError::BadPod)
    }
}

/// Reads the envelope. On error the `uid`, if it could be found, is returned with it.
pub fn decode(body: &[u8]) -> Result<Request, (String, ReviewError)> {
    let v: Value =
        serde_json::from_slice(body).map_err(|e| (String::new(), ReviewError::NotJson(e)))?;
    let uid = v
        .pointer("/request/uid")
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_string();
    if v.get("apiVersion").and_then(Value::as_str) != Some(API_VERSION)
        || v.get("kind").and_then(Value::as_str) != Some(KIND)
    {
        return Err((uid, ReviewError::WrongKind));
    }
    let req = v
        .get("request")
        .ok_or((uid.clone(), ReviewError::NoRequest))?;
    Request::deserialize(req).map_err(|e| (uid, ReviewError::BadPod(e)))
}

/// An `allowed: true` review response, with the patch when there is one.
pub fn allow(uid: &str, patch: &[Value], warnings: &[String]) -> Vec<u8> {
    let mut response = json!({"uid": uid, "allowed": true});
    if !patch.is_empty() {
        let doc = serde_json::to_vec(patch).expect("JSON values serialise");
        response["patchType"] = json!("JSONPatch");
        response["patch"] = json!(base64::engine::general_purpose::STANDARD.encode(doc));
    }
    if !warnings.is_empty() {
        response["warnings"] = json!(warnings);
    }
    serde_json::to_vec(&json!({"apiVersion": API_VERSION, "kind": KIND, "response": response}))
        .expect("JSON values serialise")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn response_patch_is_base64_json_patch() {
        let ops = vec![json!({"op": "add", "path": "/a", "value": 1})];
        let out: Value = serde_json::from_slice(&allow("u1", &ops, &[])).unwrap();
        assert_eq!(out["apiVersion"], API_VERSION);
        assert_eq!(out["kind"], KIND);
        assert_eq!(out["response"]["uid"], "u1");
        assert_eq!(out["response"]["allowed"], true);
        assert_eq!(out["response"]["patchType"], "JSONPatch");
        let raw = base64::engine::general_purpose::STANDARD
            .decode(out["response"]["patch"].as_str().unwrap())
            .unwrap();
        assert_eq!(serde_json::from_slice::<Value>(&raw).unwrap(), json!(ops));
        assert!(out["response"].get("warnings").is_none());
    }

    #[test]
    fn no_patch_means_no_patch_fields() {
        let out: Value = serde_json::from_slice(&allow("u", &[], &["w".into()])).unwrap();
        assert!(out["response"].get("patch").is_none());
        assert!(out["response"].get("patchType").is_none());
        assert_eq!(out["response"]["warnings"], json!(["w"]));
    }

    #[test]
    fn decode_keeps_uid_on_errors() {
        let (uid, err) = decode(br#"{"apiVersion":"v1","request":{"uid":"x"}}"#).unwrap_err();
        assert_eq!(uid, "x");
        assert!(matches!(err, ReviewError::WrongKind));
        assert!(matches!(
            decode(b"\xff{").unwrap_err().1,
            ReviewError::NotJson(_)
        ));
    }
}
