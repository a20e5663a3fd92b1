//! The file's own whitespace habits, so inserted members look like their
//! neighbours: one member per line with the file's indent unit (spaces or
//! tabs, CRLF or LF), or everything on one line with the file's spacing.
//!
//! Only new text is rendered with these habits; existing bytes are never
//! reformatted. With nothing to copy from (an empty `{}`), the layout
//! overlaybd ships is used: one member per line, two spaces, `": "`.

use crate::scan::{Member, ObjectSpan};

const DEFAULT_UNIT: &str = "  ";
const DEFAULT_COLON: &str = ": ";

/// Whitespace to use for members the tool adds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Style {
    /// Between a key and its value, e.g. `": "` or `":"`.
    pub colon: String,
    /// Line ending, `"\n"` or `"\r\n"`.
    pub eol: String,
    /// One level of indentation, e.g. two spaces or a tab.
    pub unit: String,
    /// Set when the file keeps objects on one line.
    pub inline: Option<Inline>,
}

/// Spacing of a one-line object such as `{ "a": 1, "b": 2 }`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Inline {
    /// After `{`.
    pub open: String,
    /// After each `,`.
    pub sep: String,
    /// Before `}`.
    pub close: String,
}

impl Style {
    /// Learns the style from the top-level object's members.
    pub fn detect(text: &str, top: &ObjectSpan) -> Style {
        let (Some(first), Some(last)) = (top.members.first(), top.members.last()) else {
            return Style::shipped();
        };
        let prefix = &text[last.prefix.clone()];
        let colon = text[last.colon.clone()].to_string();
        if !prefix.contains('\n') {
            return Style {
                colon,
                eol: "\n".to_string(),
                unit: DEFAULT_UNIT.to_string(),
                inline: Some(Inline {
                    open: text[first.prefix.clone()].to_string(),
                    sep: prefix.to_string(),
                    close: text[top.tail()].to_string(),
                }),
            };
        }
        let outer = line_indent(text, top.open);
        let inner = line_indent(text, last.key_span.start);
        let unit = inner.strip_prefix(outer).unwrap_or(inner);
        Style {
            colon,
            eol: eol_of(prefix).to_string(),
            unit: unit.to_string(),
            inline: None,
        }
    }

    fn shipped() -> Style {
        Style {
            colon: DEFAULT_COLON.to_string(),
            eol: "\n".to_string(),
            unit: DEFAULT_UNIT.to_string(),
            inline: None,
        }
    }

    /// Renders a new object whose opening brace sits on a line indented by
    /// `indent`. `members` are `(key, value)` with the value already JSON.
    pub fn render_object(&self, indent: &str, members: &[(&str, String)]) -> String {
        let (open, sep, close) = match &self.inline {
            Some(i) => (i.open.clone(), i.sep.clone(), i.close.clone()),
            None => {
                let member = format!("{}{indent}{}", self.eol, self.unit);
                (member.clone(), member, format!("{}{indent}", self.eol))
            }
        };
        let mut out = String::from("{");
        for (n, (key, value)) in members.iter().enumerate() {
            if n > 0 {
                out.push(',');
            }
            out.push_str(if n == 0 { &open } else { &sep });
            out.push_str(&json_string(key));
            out.push_str(&self.colon);
            out.push_str(value);
        }
        out.push_str(&close);
        out.push('}');
        out
    }

    /// Text to insert right after `last`'s value to add one more member to
    /// the same object, spaced like `last`.
    pub fn append_member(&self, text: &str, last: &Member, key: &str, value: &str) -> String {
        let prefix = &text[last.prefix.clone()];
        let prefix = match prefix.rfind('\n') {
            Some(i) => format!("{}{}", eol_of(prefix), &prefix[i + 1..]),
            None => prefix.to_string(),
        };
        let colon = &text[last.colon.clone()];
        format!(",{prefix}{}{colon}{value}", json_string(key))
    }
}

/// Leading spaces and tabs of the line containing byte `pos`.
pub fn line_indent(text: &str, pos: usize) -> &str {
    let start = text[..pos].rfind('\n').map_or(0, |i| i + 1);
    let line = &text[start..];
    let end = line.find(|c| c != ' ' && c != '\t').unwrap_or(line.len());
    &line[..end]
}

fn eol_of(ws: &str) -> &'static str {
    if ws.contains("\r\n") {
        "\r\n"
    } else {
        "\n"
    }
}

/// JSON spelling of a string; serializing a `&str` cannot fail.
pub fn json_string(s: &str) -> String {
    serde_json::to_string(s).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::scan::object_at;

    fn style(t: &str) -> Style {
        Style::detect(t, &object_at(t, 0).unwrap())
    }

    #[test]
    fn detects_spaces_tabs_crlf_and_inline() {
        let s = style("{\n    \"a\": 1,\n    \"b\": 2\n}\n");
        assert_eq!(
            (s.unit.as_str(), s.colon.as_str(), s.inline),
            ("    ", ": ", None)
        );
        let s = style("{\r\n\t\"a\" : 1\r\n}");
        assert_eq!((s.unit.as_str(), s.eol.as_str()), ("\t", "\r\n"));
        assert_eq!(s.colon, " : ");
        let s = style("{\"a\":1,\"b\":2}");
        assert_eq!(s.colon, ":");
        let i = s.inline.unwrap();
        assert_eq!(
            (i.open.as_str(), i.sep.as_str(), i.close.as_str()),
            ("", "", "")
        );
        let s = style("{ \"a\": 1, \"b\": 2 }");
        let i = s.inline.unwrap();
        assert_eq!(
            (i.open.as_str(), i.sep.as_str(), i.close.as_str()),
            (" ", " ", " ")
        );
    }

    #[test]
    fn unit_is_relative_to_the_indent_of_the_opening_brace() {
        let s = style("  {\n      \"a\": 1\n  }");
        assert_eq!(s.unit, "    ");
    }

    #[test]
    fn empty_object_uses_shipped_layout() {
        assert_eq!(style("{}"), Style::shipped());
    }

    #[test]
    fn renders_lines_and_inline() {
        let s = style("{\n\t\"a\": 1\n}");
        let members = [
            ("enable", "true".to_string()),
            ("address", "\"x\"".to_string()),
        ];
        assert_eq!(
            s.render_object("\t", &members),
            "{\n\t\t\"enable\": true,\n\t\t\"address\": \"x\"\n\t}"
        );
        let s = style("{ \"a\":1, \"b\":2 }");
        assert_eq!(
            s.render_object("", &members),
            "{ \"enable\":true, \"address\":\"x\" }"
        );
    }

    #[test]
    fn append_copies_spacing_without_blank_lines() {
        let t = "{\n  \"a\": 1,\n\n  \"b\"  :  2\n}";
        let o = object_at(t, 0).unwrap();
        let s = style(t);
        let last = o.members.last().unwrap();
        assert_eq!(s.append_member(t, last, "c", "3"), ",\n  \"c\"  :  3");
    }

    #[test]
    fn line_indent_stops_at_content() {
        assert_eq!(line_indent("{\n \t \"a\": 1}", 5), " \t ");
        assert_eq!(line_indent("{}", 0), "");
    }
}
