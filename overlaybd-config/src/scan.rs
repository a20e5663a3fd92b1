//! Byte positions of the members of a JSON object, so an edit can replace or
//! insert exactly one span and leave every other byte of the file as it was.
//!
//! A parser that builds a value tree and prints it again loses key order,
//! spacing and number spelling; this scanner only records where things are.
//! It runs on text that serde_json has already accepted, so it stays small,
//! but it still returns an error instead of panicking on anything unexpected.
//! JSON's structural characters are all ASCII, so scanning bytes is safe for
//! UTF-8 text: a multi-byte character never contains `"`, `\\`, `{` or `,`.

use std::ops::Range;

use thiserror::Error;

/// The text did not have the shape the scanner expected at `offset`.
#[derive(Debug, Error, Clone, PartialEq, Eq)]
#[error("unexpected JSON structure at byte {offset}")]
pub struct ScanError {
    pub offset: usize,
}

/// One `"key": value` pair of an object.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Member {
    /// The decoded key (escapes resolved).
    pub key: String,
    /// Whitespace between the preceding `{` or `,` and the key's opening quote.
    pub prefix: Range<usize>,
    /// The key including its quotes.
    pub key_span: Range<usize>,
    /// Whitespace, colon and whitespace between the key and its value.
    pub colon: Range<usize>,
    /// The value, from its first to its last byte.
    pub value: Range<usize>,
}

/// An object's braces and members.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ObjectSpan {
    /// Index of `{`.
    pub open: usize,
    /// Index of `}`.
    pub close: usize,
    pub members: Vec<Member>,
}

impl ObjectSpan {
    /// Whitespace between the last member's value (or `{`) and `}`.
    pub fn tail(&self) -> Range<usize> {
        let start = self.members.last().map_or(self.open + 1, |m| m.value.end);
        start..self.close
    }

    /// The first member whose decoded key equals `key`.
    pub fn get(&self, key: &str) -> Option<&Member> {
        self.members.iter().find(|m| m.key == key)
    }

    /// How many members have the decoded key `key`.
    pub fn count(&self, key: &str) -> usize {
        self.members.iter().filter(|m| m.key == key).count()
    }
}

/// Scans the object whose `{` is the first non-whitespace byte at or after
/// `start`.
pub fn object_at(text: &str, start: usize) -> Result<ObjectSpan, ScanError> {
    let b = text.as_bytes();
    let open = skip_ws(b, start);
    expect(b, open, b'{')?;
    let mut members = Vec::new();
    let mut pos = open + 1;
    loop {
        let key_start = skip_ws(b, pos);
        if members.is_empty() && b.get(key_start) == Some(&b'}') {
            return Ok(ObjectSpan {
                open,
                close: key_start,
                members,
            });
        }
        let key_end = skip_string(b, key_start)?;
        let key: String = serde_json::from_str(&text[key_start..key_end])
            .map_err(|_| ScanError { offset: key_start })?;
        let colon_at = skip_ws(b, key_end);
        expect(b, colon_at, b':')?;
        let value_start = skip_ws(b, colon_at + 1);
        let value_end = skip_value(b, value_start)?;
        members.push(Member {
            key,
            prefix: pos..key_start,
            key_span: key_start..key_end,
            colon: key_end..value_start,
            value: value_start..value_end,
        });
        let next = skip_ws(b, value_end);
        match b.get(next) {
            Some(b',') => pos = next + 1,
            Some(b'}') => {
                return Ok(ObjectSpan {
                    open,
                    close: next,
                    members,
                })
            }
            _ => return Err(ScanError { offset: next }),
        }
    }
}

fn expect(b: &[u8], at: usize, want: u8) -> Result<(), ScanError> {
    if b.get(at) == Some(&want) {
        Ok(())
    } else {
        Err(ScanError { offset: at })
    }
}

fn skip_ws(b: &[u8], mut pos: usize) -> usize {
    while matches!(b.get(pos), Some(b' ' | b'\t' | b'\n' | b'\r')) {
        pos += 1;
    }
    pos
}

/// Returns the index just past the closing quote of the string at `pos`.
fn skip_string(b: &[u8], pos: usize) -> Result<usize, ScanError> {
    expect(b, pos, b'"')?;
    let mut i = pos + 1;
    while let Some(&c) = b.get(i) {
        match c {
            b'\\' => i += 2,
            b'"' => return Ok(i + 1),
            _ => i += 1,
        }
    }
    Err(ScanError { offset: pos })
}

/// Returns the index just past the value starting at `pos`.
fn skip_value(b: &[u8], pos: usize) -> Result<usize, ScanError> {
    match b.get(pos) {
        Some(b'"') => skip_string(b, pos),
        Some(b'{' | b'[') => skip_container(b, pos),
        Some(c) if c.is_ascii_alphanumeric() || *c == b'-' => {
            let mut i = pos;
            while matches!(b.get(i), Some(c) if c.is_ascii_alphanumeric() || b"+-.".contains(c)) {
                i += 1;
            }
            Ok(i)
        }
        _ => Err(ScanError { offset: pos }),
    }
}

/// Skips a nested object or array by counting brackets outside strings.
fn skip_container(b: &[u8], pos: usize) -> Result<usize, ScanError> {
    let mut depth = 0usize;
    let mut i = pos;
    while let Some(&c) = b.get(i) {
        match c {
            b'"' => {
                i = skip_string(b, i)?;
                continue;
            }
            b'{' | b'[' => depth += 1,
            b'}' | b']' => {
                depth -= 1;
                if depth == 0 {
                    return Ok(i + 1);
                }
            }
            _ => {}
        }
        i += 1;
    }
    Err(ScanError { offset: pos })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn slice<'a>(t: &'a str, r: &Range<usize>) -> &'a str {
        &t[r.clone()]
    }

    #[test]
    fn members_and_spans() {
        let t = "{\n  \"a\": 1,\n  \"b\" :{\"x\": [1, \"]}\"]},\"c\":\"q\\\"}\"\n}\n";
        let o = object_at(t, 0).unwrap();
        assert_eq!(o.open, 0);
        assert_eq!(&t[o.close..], "}\n");
        let keys: Vec<_> = o.members.iter().map(|m| m.key.as_str()).collect();
        assert_eq!(keys, ["a", "b", "c"]);
        let [a, b, c] = &o.members[..] else { panic!() };
        assert_eq!(slice(t, &a.prefix), "\n  ");
        assert_eq!(slice(t, &a.colon), ": ");
        assert_eq!(slice(t, &a.value), "1");
        assert_eq!(slice(t, &b.colon), " :");
        assert_eq!(slice(t, &b.value), "{\"x\": [1, \"]}\"]}");
        assert_eq!(slice(t, &c.prefix), "");
        assert_eq!(slice(t, &c.value), "\"q\\\"}\"");
        assert_eq!(slice(t, &o.tail()), "\n");
    }

    #[test]
    fn escaped_keys_are_decoded_and_empty_objects_scanned() {
        let t = r#" { "p2p\u0043onfig" : { } } "#;
        let o = object_at(t, 0).unwrap();
        assert_eq!(o.members[0].key, "p2pConfig");
        let inner = object_at(t, o.members[0].value.start).unwrap();
        assert!(inner.members.is_empty());
        assert_eq!(slice(t, &inner.tail()), " ");
        assert_eq!(o.count("p2pConfig"), 1);
        assert!(o.get("other").is_none());
    }

    #[test]
    fn numbers_literals_and_unicode() {
        let t = "{\"n\":-1.5e+3,\"t\":true,\"z\":null,\"u\":\"h\u{e9}\u{1F600}\"}";
        let o = object_at(t, 0).unwrap();
        let values: Vec<_> = o.members.iter().map(|m| slice(t, &m.value)).collect();
        assert_eq!(values, ["-1.5e+3", "true", "null", "\"h\u{e9}\u{1F600}\""]);
    }

    #[test]
    fn truncated_text_is_an_error_not_a_panic() {
        for t in [
            "{",
            "{\"a\"",
            "{\"a\":",
            "{\"a\":[1,",
            "{\"a\":\"x",
            "[1]",
            "{\"a\":1 \"b\":2}",
        ] {
            assert!(object_at(t, 0).is_err(), "{t}");
        }
    }
}
