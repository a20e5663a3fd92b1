//! Turns a parsed overlaybd.json into the same text with `p2pConfig` set as
//! asked, touching only the bytes of the values that change.
//!
//! An owned value that already has the wanted value is left byte-for-byte,
//! so a second `enable` produces identical text and the caller writes
//! nothing. Missing owned keys are appended after the last member of
//! `p2pConfig`; a missing `p2pConfig` is appended after the last top-level
//! member. Before the result is returned it is parsed again and compared
//! with the original: every key the tool does not own must have the same
//! value, and the owned keys must have the wanted ones.

use std::ops::Range;

use serde_json::{Map, Value};
use thiserror::Error;

use crate::document::{Document, DocumentError, ADDRESS_KEY, ENABLE_KEY, P2P_KEY};
use crate::layout::{json_string, line_indent, Style};

/// The p2pConfig values a command wants.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Desired {
    pub enable: bool,
    /// `None` keeps whatever address is there (or none).
    pub address: Option<String>,
}

/// The edited text did not come out as intended; nothing may be written.
#[derive(Debug, Error)]
pub enum EditError {
    #[error("edited text no longer parses: {0}")]
    Reparse(#[from] DocumentError),
    #[error("edited text does not hold the intended values: {0}")]
    Mismatch(&'static str),
}

struct Splice {
    range: Range<usize>,
    text: String,
}

/// Returns the edited document (its text equals the old one when nothing
/// needs changing).
pub fn apply(doc: &Document, want: &Desired) -> Result<Document, EditError> {
    let mut splices = plan(doc, want);
    splices.sort_by_key(|s| std::cmp::Reverse(s.range.start));
    let mut text = doc.text.clone();
    for s in splices {
        text.replace_range(s.range, &s.text);
    }
    verify(doc, Document::parse(&text)?, want)
}

fn plan(doc: &Document, want: &Desired) -> Vec<Splice> {
    let text = doc.text.as_str();
    let style = Style::detect(text, &doc.top);
    let enable_json = want.enable.to_string();
    let address_json = want.address.as_deref().map(json_string);

    let Some((member, obj)) = &doc.p2p else {
        let indent = match doc.top.members.last() {
            Some(last) => line_indent(text, last.key_span.start).to_string(),
            None => format!("{}{}", line_indent(text, doc.top.open), style.unit),
        };
        let inner = style.render_object(&indent, &owned_members(&enable_json, &address_json));
        return vec![match doc.top.members.last() {
            Some(last) => Splice {
                range: last.value.end..last.value.end,
                text: style.append_member(text, last, P2P_KEY, &inner),
            },
            None => Splice {
                range: doc.top.open..doc.top.close + 1,
                text: style.render_object(line_indent(text, doc.top.open), &[(P2P_KEY, inner)]),
            },
        }];
    };

    let Some(last) = obj.members.last() else {
        let indent = line_indent(text, member.key_span.start);
        return vec![Splice {
            range: member.value.clone(),
            text: style.render_object(indent, &owned_members(&enable_json, &address_json)),
        }];
    };

    let mut splices = Vec::new();
    let mut missing = String::new();
    let mut wanted = vec![(ENABLE_KEY, Value::Bool(want.enable), enable_json)];
    if let (Some(address), Some(json)) = (&want.address, address_json) {
        wanted.push((ADDRESS_KEY, Value::String(address.clone()), json));
    }
    for (key, value, json) in wanted {
        match obj.get(key) {
            Some(_) if doc.value[P2P_KEY][key] == value => {}
            Some(m) => splices.push(Splice {
                range: m.value.clone(),
                text: json,
            }),
            None => missing.push_str(&style.append_member(text, last, key, &json)),
        }
    }
    if !missing.is_empty() {
        splices.push(Splice {
            range: last.value.end..last.value.end,
            text: missing,
        });
    }
    splices
}

fn owned_members(enable_json: &str, address_json: &Option<String>) -> Vec<(&'static str, String)> {
    let mut members = vec![(ENABLE_KEY, enable_json.to_string())];
    if let Some(a) = address_json {
        members.push((ADDRESS_KEY, a.clone()));
    }
    members
}

fn verify(before: &Document, after: Document, want: &Desired) -> Result<Document, EditError> {
    let p2p = after
        .value
        .get(P2P_KEY)
        .and_then(Value::as_object)
        .ok_or(EditError::Mismatch("p2pConfig missing"))?;
    if p2p.get(ENABLE_KEY) != Some(&Value::Bool(want.enable)) {
        return Err(EditError::Mismatch("p2pConfig.enable"));
    }
    let old_p2p = before.value.get(P2P_KEY).and_then(Value::as_object);
    let expected_address = match &want.address {
        Some(a) => Some(Value::String(a.clone())),
        None => old_p2p.and_then(|o| o.get(ADDRESS_KEY)).cloned(),
    };
    if p2p.get(ADDRESS_KEY) != expected_address.as_ref() {
        return Err(EditError::Mismatch("p2pConfig.address"));
    }
    let empty = Map::new();
    if without(old_p2p.unwrap_or(&empty), &[ENABLE_KEY, ADDRESS_KEY])
        != without(p2p, &[ENABLE_KEY, ADDRESS_KEY])
    {
        return Err(EditError::Mismatch("other p2pConfig keys"));
    }
    if without(&before.value, &[P2P_KEY]) != without(&after.value, &[P2P_KEY]) {
        return Err(EditError::Mismatch("other top-level keys"));
    }
    Ok(after)
}

fn without<'a>(map: &'a Map<String, Value>, skip: &[&str]) -> Vec<(&'a String, &'a Value)> {
    map.iter()
        .filter(|(k, _)| !skip.contains(&k.as_str()))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn edit(text: &str, enable: bool, address: Option<&str>) -> String {
        let doc = Document::parse(text).unwrap();
        apply(
            &doc,
            &Desired {
                enable,
                address: address.map(str::to_string),
            },
        )
        .unwrap()
        .text
    }

    const A: &str = "http://127.0.0.1:65001/accelerator";

    #[test]
    fn replaces_only_the_values_that_differ() {
        let t = "{\"p2pConfig\": {\"enable\": false, \"address\": \"x:1/a\", \"k\": 1}}";
        assert_eq!(
            edit(t, true, Some(A)),
            format!("{{\"p2pConfig\": {{\"enable\": true, \"address\": \"{A}\", \"k\": 1}}}}")
        );
        let done = edit(t, true, Some(A));
        assert_eq!(edit(&done, true, Some(A)), done);
        assert_eq!(
            edit(t, false, None),
            t,
            "disable keeps the address and changes nothing else"
        );
    }

    #[test]
    fn non_boolean_enable_is_replaced() {
        let t = "{\"p2pConfig\": {\"enable\": \"true\"}}";
        assert_eq!(edit(t, true, None), "{\"p2pConfig\": {\"enable\": true}}");
    }

    #[test]
    fn missing_keys_are_appended_in_the_objects_style() {
        let t = "{\n\t\"p2pConfig\": {\n\t\t\"k\": 1\n\t}\n}\n";
        let added = format!(",\n\t\t\"enable\": true,\n\t\t\"address\": \"{A}\"");
        assert_eq!(
            edit(t, true, Some(A)),
            t.replacen("1", &format!("1{added}"), 1)
        );
    }

    #[test]
    fn empty_p2p_and_empty_file_objects_are_filled() {
        assert_eq!(
            edit("{\n  \"p2pConfig\": {}\n}", false, None),
            "{\n  \"p2pConfig\": {\n    \"enable\": false\n  }\n}"
        );
        let inner = format!("{{\n    \"enable\": true,\n    \"address\": \"{A}\"\n  }}");
        assert_eq!(
            edit("{}\n", true, Some(A)),
            format!("{{\n  \"p2pConfig\": {inner}\n}}\n")
        );
    }

    #[test]
    fn missing_p2p_is_appended_compact_and_crlf() {
        assert_eq!(
            edit("{\"a\":[1,{\"b\":2}]}", true, Some(A)),
            format!(
                "{{\"a\":[1,{{\"b\":2}}],\"p2pConfig\":{{\"enable\":true,\"address\":\"{A}\"}}}}"
            )
        );
        assert_eq!(
            edit("{\r\n  \"a\": 1\r\n}\r\n", false, None),
            "{\r\n  \"a\": 1,\r\n  \"p2pConfig\": {\r\n    \"enable\": false\r\n  }\r\n}\r\n"
        );
    }

    #[test]
    fn addresses_needing_escapes_round_trip() {
        let addr = "http://h:1/a\"b\\c";
        let out = edit("{}", true, Some(addr));
        let doc = Document::parse(&out).unwrap();
        assert_eq!(doc.value[P2P_KEY][ADDRESS_KEY], Value::String(addr.into()));
    }
}
