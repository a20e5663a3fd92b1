//! Many generated files in many layouts, edited through the library: the
//! scanner must agree with serde_json on every value, and nothing outside
//! the `p2pConfig` member (or the insertion point) may change. A fixed seed
//! keeps the run deterministic.

use overlaybd_p2p::document::Document;
use overlaybd_p2p::edit::{apply, Desired};
use overlaybd_p2p::layout::Style;

/// xorshift64: deterministic and dependency-free.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
    fn pick<'a>(&mut self, items: &[&'a str]) -> &'a str {
        items[self.below(items.len())]
    }
}

struct Layout {
    /// `None` for one-line objects.
    unit: Option<&'static str>,
    eol: &'static str,
    colon: &'static str,
    gap: &'static str,
}

impl Layout {
    fn random(rng: &mut Rng) -> Layout {
        Layout {
            unit: [Some("  "), Some("    "), Some("\t"), None][rng.below(4)],
            eol: ["\n", "\r\n"][rng.below(2)],
            colon: rng.pick(&[":", ": ", " : "]),
            gap: rng.pick(&["", " "]),
        }
    }

    fn object(&self, members: &[(String, String)], depth: usize) -> String {
        if members.is_empty() {
            return "{}".to_string();
        }
        let (open, close) = match self.unit {
            Some(u) => (
                format!("{}{}", self.eol, u.repeat(depth + 1)),
                format!("{}{}", self.eol, u.repeat(depth)),
            ),
            None => (self.gap.to_string(), self.gap.to_string()),
        };
        let body: Vec<String> = members
            .iter()
            .map(|(k, v)| format!("{open}{k}{}{v}", self.colon))
            .collect();
        format!("{{{}{close}}}", body.join(","))
    }
}

fn scalar(rng: &mut Rng) -> String {
    rng.pick(&[
        "0",
        "-1.5e+3",
        "60000000",
        "0.50",
        "true",
        "false",
        "null",
        r#""/var/log/overlaybd.log""#,
        r#""esc \" \\ \/ \u00e9 \n""#,
        r#""{not: [an, object]}""#,
        "\"h\u{e9}llo \u{2713}\"",
    ])
    .to_string()
}

fn value(rng: &mut Rng, layout: &Layout, depth: usize) -> String {
    match rng.below(if depth < 2 { 5 } else { 3 }) {
        0..=2 => scalar(rng),
        3 => format!("[{}, {}]", scalar(rng), scalar(rng)),
        _ => {
            let n = rng.below(3);
            let members: Vec<_> = (0..n)
                .map(|i| (format!("\"k{i}\""), value(rng, layout, depth + 1)))
                .collect();
            layout.object(&members, depth + 1)
        }
    }
}

fn p2p_object(rng: &mut Rng, layout: &Layout) -> String {
    let mut members = Vec::new();
    for key in ["\"enable\"", "\"address\"", "\"extra\"", "\"p2pConfig\""] {
        if rng.below(2) == 0 {
            members.push((key.to_string(), value(rng, layout, 2)));
        }
    }
    if rng.below(2) == 0 {
        members.reverse();
    }
    layout.object(&members, 1)
}

fn document(rng: &mut Rng) -> String {
    let layout = Layout::random(rng);
    let n = rng.below(6);
    let p2p_at = rng.below(n + 2); // == n + 1 means no p2pConfig
    let mut members = Vec::new();
    for i in 0..=n {
        if i == p2p_at {
            let key = rng.pick(&["\"p2pConfig\"", "\"p2p\\u0043onfig\""]);
            members.push((key.to_string(), p2p_object(rng, &layout)));
        }
        if i < n {
            members.push((format!("\"key{i}\""), value(rng, &layout, 0)));
        }
    }
    let lead = rng.pick(&["", " ", "\n"]);
    let trail = rng.pick(&["", "\n", "\r\n", "  \n"]);
    format!("{lead}{}{trail}", layout.object(&members, 0))
}

#[test]
fn generated_files_keep_every_byte_outside_the_edit() {
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
    let wants = [
        Desired {
            enable: true,
            address: Some("http://127.0.0.1:65001/accelerator".into()),
        },
        Desired {
            enable: false,
            address: None,
        },
    ];
    for round in 0..600 {
        let text = document(&mut rng);
        let doc = Document::parse(&text).unwrap_or_else(|e| panic!("{round}: {e}\n{text}"));
        for m in &doc.top.members {
            let v: serde_json::Value = serde_json::from_str(&text[m.value.clone()]).unwrap();
            assert_eq!(
                v, doc.value[&m.key],
                "{round}: scanner and serde_json disagree"
            );
        }
        let want = &wants[round % 2];
        let new = apply(&doc, want)
            .unwrap_or_else(|e| panic!("{round}: {e}\n{text}"))
            .text;

        let (start, end) = match (&doc.p2p, doc.top.members.last()) {
            (Some((member, _)), _) => (member.value.start, member.value.end),
            (None, Some(last)) => (last.value.end, last.value.end),
            (None, None) => (doc.top.open, doc.top.close + 1),
        };
        let tail = text.len() - end;
        assert_eq!(
            new[..start],
            text[..start],
            "{round}: prefix changed\n{text}\n{new}"
        );
        assert_eq!(
            new[new.len() - tail..],
            text[end..],
            "{round}: suffix changed\n{text}\n{new}"
        );

        let again = apply(&Document::parse(&new).unwrap(), want).unwrap().text;
        assert_eq!(again, new, "{round}: second edit changed the text");

        if !doc.top.members.is_empty() {
            let after = Document::parse(&new).unwrap();
            assert_eq!(
                Style::detect(&new, &after.top),
                Style::detect(&text, &doc.top),
                "{round}: layout changed\n{text}\n{new}"
            );
        }
    }
}
