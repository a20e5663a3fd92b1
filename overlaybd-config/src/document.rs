//! overlaybd.json as text plus what the tool needs to know about it.
//!
//! serde_json does the validation because it reports line and column, which
//! is what an operator needs to find a stray comma. The scanner then locates
//! the top-level members and the `p2pConfig` object in the same text.
//! Duplicate `p2pConfig`, `enable` or `address` keys are refused: parsers
//! disagree on which copy wins, so editing one of them could leave overlaybd
//! reading the other.

use serde_json::Value;
use thiserror::Error;

use crate::scan::{self, Member, ObjectSpan};

/// Top-level key the tool edits.
pub const P2P_KEY: &str = "p2pConfig";
/// Keys inside `p2pConfig` the tool owns; every other key is left alone.
pub const ENABLE_KEY: &str = "enable";
pub const ADDRESS_KEY: &str = "address";

/// Why the file's content cannot be edited safely.
#[derive(Debug, Error)]
pub enum DocumentError {
    #[error("file is not UTF-8 text")]
    NotUtf8,
    #[error("malformed JSON at line {line}, column {column}: {message}")]
    Malformed {
        line: usize,
        column: usize,
        message: String,
    },
    #[error("top-level JSON value is {0}, not an object")]
    NotAnObject(&'static str),
    #[error("\"p2pConfig\" is {0}, not an object")]
    P2pNotAnObject(&'static str),
    #[error("key {0:?} appears more than once; remove the duplicate first")]
    DuplicateKey(String),
    #[error("cannot locate members in the JSON text: {0}")]
    Scan(#[from] scan::ScanError),
}

/// Parsed view of the file: the original text, its value and key positions.
#[derive(Debug)]
pub struct Document {
    pub text: String,
    pub value: serde_json::Map<String, Value>,
    pub top: ObjectSpan,
    /// The `p2pConfig` member and its object, when present.
    pub p2p: Option<(Member, ObjectSpan)>,
}

/// `p2pConfig` as found in the file: the whole object (so scripts see keys
/// the tool does not own too), or `None` when absent.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
#[serde(transparent)]
pub struct P2pState(pub Option<serde_json::Map<String, Value>>);

impl P2pState {
    pub fn present(&self) -> bool {
        self.0.is_some()
    }

    pub fn enable(&self) -> Option<&Value> {
        self.0.as_ref()?.get(ENABLE_KEY)
    }

    pub fn address(&self) -> Option<&Value> {
        self.0.as_ref()?.get(ADDRESS_KEY)
    }

    /// Keys the tool does not own, in sorted order.
    pub fn other_keys(&self) -> Vec<&str> {
        self.0
            .iter()
            .flat_map(|m| m.keys())
            .map(String::as_str)
            .filter(|k| *k != ENABLE_KEY && *k != ADDRESS_KEY)
            .collect()
    }
}

impl Document {
    pub fn parse_bytes(bytes: &[u8]) -> Result<Self, DocumentError> {
        let text = std::str::from_utf8(bytes).map_err(|_| DocumentError::NotUtf8)?;
        Self::parse(text)
    }

    pub fn parse(text: &str) -> Result<Self, DocumentError> {
        let value: Value = serde_json::from_str(text).map_err(|e| DocumentError::Malformed {
            line: e.line(),
            column: e.column(),
            message: strip_position(&e.to_string()),
        })?;
        let Value::Object(value) = value else {
            return Err(DocumentError::NotAnObject(kind(&value)));
        };
        let top = scan::object_at(text, 0)?;
        let p2p = match unique(&top, P2P_KEY)? {
            None => None,
            Some(member) => {
                let v = &value[P2P_KEY];
                if !v.is_object() {
                    return Err(DocumentError::P2pNotAnObject(kind(v)));
                }
                let obj = scan::object_at(text, member.value.start)?;
                unique(&obj, ENABLE_KEY)?;
                unique(&obj, ADDRESS_KEY)?;
                Some((member.clone(), obj))
            }
        };
        Ok(Document {
            text: text.to_string(),
            value,
            top,
            p2p,
        })
    }

    pub fn state(&self) -> P2pState {
        P2pState(self.value.get(P2P_KEY).and_then(Value::as_object).cloned())
    }
}

fn unique<'a>(obj: &'a ObjectSpan, key: &str) -> Result<Option<&'a Member>, DocumentError> {
    if obj.count(key) > 1 {
        return Err(DocumentError::DuplicateKey(key.to_string()));
    }
    Ok(obj.get(key))
}

fn kind(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

/// serde_json appends " at line L column C"; the error prints those itself.
fn strip_position(message: &str) -> String {
    match message.rfind(" at line ") {
        Some(i) => message[..i].to_string(),
        None => message.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stray_comma_reports_line_and_column() {
        let err = Document::parse("{\n  \"a\": 1,\n}\n").unwrap_err();
        match err {
            DocumentError::Malformed { line, column, .. } => assert_eq!((line, column), (3, 1)),
            other => panic!("{other:?}"),
        }
        let msg = Document::parse("{\n  \"a\": 1,\n}\n")
            .unwrap_err()
            .to_string();
        assert!(
            msg.starts_with("malformed JSON at line 3, column 1: trailing comma"),
            "{msg}"
        );
    }

    #[test]
    fn non_objects_and_bad_p2p_are_refused() {
        assert!(matches!(
            Document::parse("[1, 2]"),
            Err(DocumentError::NotAnObject("an array"))
        ));
        assert!(matches!(
            Document::parse("{\"p2pConfig\": \"on\"}"),
            Err(DocumentError::P2pNotAnObject("a string"))
        ));
        assert!(matches!(
            Document::parse_bytes(b"{\"a\": \"\xff\"}"),
            Err(DocumentError::NotUtf8)
        ));
    }

    #[test]
    fn duplicates_of_owned_keys_are_refused() {
        for t in [
            r#"{"p2pConfig": {}, "p2pConfig": {}}"#,
            r#"{"p2pConfig": {"enable": true, "enable": false}}"#,
            r#"{"p2pConfig": {"address": "a", "address": "b"}}"#,
        ] {
            assert!(
                matches!(Document::parse(t), Err(DocumentError::DuplicateKey(_))),
                "{t}"
            );
        }
        // Duplicates the tool does not own are overlaybd's business.
        assert!(Document::parse(r#"{"x": 1, "x": 2, "p2pConfig": {"y": 1, "y": 2}}"#).is_ok());
    }

    #[test]
    fn state_reads_owned_values() {
        let d = Document::parse(r#"{"p2pConfig": {"enable": true, "other": 1}}"#).unwrap();
        let s = d.state();
        assert!(s.present());
        assert_eq!(s.enable(), Some(&Value::Bool(true)));
        assert_eq!(s.address(), None);
        assert_eq!(s.other_keys(), ["other"]);
        assert!(!Document::parse("{}").unwrap().state().present());
    }
}
