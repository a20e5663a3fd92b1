//! Reading a Prometheus text exposition without a Prometheus server: the sum of one family's
//! samples that carry given labels, from a `/metrics` body fetched once.
//!
//! The benchmarks compare counters before and after a run (the registry's blob bytes, each
//! daemon's `DADIP2P_Count`), so one scrape at each end is enough and a scraping server would
//! only add its interval to the wait. Labels are parsed with their escapes, so a wanted
//! `type="peer"` matches that label and not `subtype="peer"` or a value containing it.

use std::collections::BTreeMap;

use crate::{HarnessError, Result, Sample};

/// One sample line as a [`Sample`] (its name under `__name__`, as Prometheus keeps it);
/// `None` for comments, blank lines and lines that do not parse.
fn sample(line: &str) -> Option<Sample> {
    let line = line.trim();
    if line.is_empty() || line.starts_with('#') {
        return None;
    }
    let name_end = line.find(['{', ' ', '\t']).unwrap_or(line.len());
    let (name, mut rest) = line.split_at(name_end);
    let mut labels = BTreeMap::new();
    if let Some(inner) = rest.strip_prefix('{') {
        rest = parse_labels(inner, &mut labels)?;
    }
    labels.insert("__name__".to_owned(), name.to_owned());
    // The value, then an optional timestamp.
    let value = rest.split_whitespace().next()?.parse().ok()?;
    Some(Sample { labels, value })
}

/// Parses `a="x",b="y\"z"}` (the part after `{`) into `labels`; returns the text after `}`.
fn parse_labels<'a>(mut text: &'a str, labels: &mut BTreeMap<String, String>) -> Option<&'a str> {
    loop {
        text = text.trim_start_matches([' ', ',']);
        if let Some(after) = text.strip_prefix('}') {
            return Some(after);
        }
        let eq = text.find('=')?;
        let name = text[..eq].trim();
        let quoted = text[eq + 1..].trim_start().strip_prefix('"')?;
        let mut chars = quoted.char_indices();
        let mut value = String::new();
        let end = loop {
            match chars.next()? {
                (i, '"') => break i,
                (_, '\\') => match chars.next()?.1 {
                    'n' => value.push('\n'),
                    other => value.push(other),
                },
                (_, c) => value.push(c),
            }
        };
        labels.insert(name.to_owned(), value);
        text = &quoted[end + 1..];
    }
}

/// The sum of the samples of series `name` whose labels include every `(label, value)` of
/// `labels`; 0 when there is none.
pub fn sum(text: &str, name: &str, labels: &[(&str, &str)]) -> f64 {
    text.lines()
        .filter_map(sample)
        .filter(|s| {
            s.labels.get("__name__").map(String::as_str) == Some(name)
                && labels
                    .iter()
                    .all(|(k, v)| s.labels.get(*k).map(String::as_str) == Some(*v))
        })
        .map(|s| s.value)
        .sum()
}

/// `GET url` of a loopback `/metrics` endpoint; its body as text.
pub async fn scrape(url: &str) -> Result<String> {
    let response = crate::http::get(url, &[]).await?;
    if response.status != http::StatusCode::OK {
        return Err(HarnessError::unexpected(
            url,
            format!("status {}", response.status),
        ));
    }
    String::from_utf8(response.body.to_vec())
        .map_err(|_| HarnessError::unexpected(url, "metrics are not UTF-8"))
}

#[cfg(test)]
mod tests {
    use super::sum;

    const REGISTRY: &str = "\
# HELP registry_http_response_size_bytes The HTTP response sizes in bytes.
# TYPE registry_http_response_size_bytes histogram
registry_http_response_size_bytes_bucket{handler=\"blob\",le=\"+Inf\"} 5
registry_http_response_size_bytes_sum{handler=\"blob\"} 2.68437505e+08
registry_http_response_size_bytes_count{handler=\"blob\"} 5
registry_http_response_size_bytes_sum{handler=\"blob_upload\"} 512
registry_http_response_size_bytes_sum{handler=\"base\"} 2
";

    #[test]
    fn sums_one_family_with_the_wanted_labels() {
        let blob = [("handler", "blob")];
        assert_eq!(
            sum(REGISTRY, "registry_http_response_size_bytes_sum", &blob),
            268_437_505.0
        );
        assert_eq!(
            sum(REGISTRY, "registry_http_response_size_bytes_sum", &[]),
            268_437_505.0 + 512.0 + 2.0
        );
        assert_eq!(
            sum(REGISTRY, "registry_http_response_size_bytes_count", &blob),
            5.0
        );
        assert_eq!(
            sum(REGISTRY, "registry_http_response_size_bytes", &blob),
            0.0
        );
        assert_eq!(sum("", "x", &[]), 0.0);
    }

    #[test]
    fn labels_match_whole_names_and_values_with_escapes() {
        let text = "\
DADIP2P_Count{node=\"127.0.0.1:1\",type=\"peer\",mode=\"agent\"} 4248808352.000000 7
DADIP2P_Count{node=\"127.0.0.1:1\",type=\"download\",mode=\"agent\"} 10.000000 7
DADIP2P_Count{node=\"a,\\\"type=\\\"peer\\\"\",subtype=\"peer\",type=\"pread\"} 1 7
plain 3
plain 4
broken{type=\"peer\" 9
";
        let peer = [("type", "peer")];
        assert_eq!(sum(text, "DADIP2P_Count", &peer), 4_248_808_352.0);
        assert_eq!(sum(text, "DADIP2P_Count", &[("type", "download")]), 10.0);
        assert_eq!(
            sum(text, "DADIP2P_Count", &[("node", "a,\"type=\"peer\"")]),
            1.0
        );
        assert_eq!(sum(text, "plain", &[]), 7.0);
        assert_eq!(sum(text, "plain", &peer), 0.0);
        assert_eq!(sum(text, "broken", &[]), 0.0);
    }
}
