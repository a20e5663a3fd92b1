//! The Helm chart under packaging/helm/dadi-p2p. Debian has no `helm`, so the chart is
//! rendered here by a small substitution that implements exactly the template language the
//! chart uses: `{{ .Values.a.b }}`, `.Release.Name|Namespace|Service`,
//! `.Chart.Name|Version|AppVersion`, optionally as `required "message" .Values.a.b`, piped
//! through `quote`, `int64` or `toJson`, with Helm's output for each, and
//! `{{ if [not] .Values.a.b }}` … [`{{ else }}` …] `{{ end }}` with Go's truth rules. Any
//! other action fails the test, so the chart cannot drift into constructs this check does not
//! understand. A number of a million or more without `int64` fails too: Helm reads values as
//! floats and would print it as `4.294967296e+09`. A file that renders to nothing is left
//! out, as Helm leaves it out. `required` fails the rendering with its message, as Helm does,
//! when the value is null or an empty string.
//!
//! Rendered with its defaults, the chart must give the same objects as packaging/kubernetes
//! (less the Namespace, which `helm install --create-namespace` makes, and Helm's own labels);
//! with `admission.enabled` it adds the same objects as packaging/admission, and with
//! `peer.enabled` and an existing Secret the objects of packaging/kubernetes/peers replace
//! or join them.

use std::collections::BTreeMap;
use std::path::PathBuf;

use serde_json::{json, Value};

use crate::common::packaging;
use crate::config::{start_with, status};
use crate::kubernetes::{check_install, documents, plain_documents, yaml_files, NS};

fn chart() -> PathBuf {
    packaging().join("helm/dadi-p2p")
}

fn yaml_file(path: PathBuf) -> Value {
    let text = std::fs::read_to_string(&path).unwrap();
    let v: serde_yaml_ng::Value = serde_yaml_ng::from_str(&text).unwrap();
    serde_json::to_value(v).unwrap()
}

/// `over` merged into `base`, maps key by key, as `helm --set`/`-f` layer values.
fn merge(base: &mut Value, over: &Value) {
    match (base, over) {
        (Value::Object(b), Value::Object(o)) => {
            for (k, v) in o {
                merge(b.entry(k.clone()).or_insert(Value::Null), v);
            }
        }
        (b, o) => *b = o.clone(),
    }
}

/// A scalar as Go's `%v` prints what Helm read from YAML (numbers are float64 there).
fn plain(v: &Value, action: &str) -> String {
    match v {
        Value::String(s) => s.clone(),
        Value::Bool(b) => b.to_string(),
        Value::Number(n) => {
            let f = n.as_f64().unwrap();
            assert!(
                f.fract() == 0.0 && f.abs() < 1e6,
                "{{{{{action}}}}}: Helm prints {f} in e-notation; pipe it through int64"
            );
            (f as i64).to_string()
        }
        other => panic!("{{{{{action}}}}}: {other} is not a scalar"),
    }
}

/// The value at `path` (`.Values.a.b`, `.Release.Name`, …).
fn lookup<'a>(path: &str, ctx: &'a Value, action: &str) -> &'a Value {
    let known = ["Values", "Release", "Chart"];
    let mut v = ctx;
    let mut parts = path.strip_prefix('.').map(|p| p.split('.'));
    let parts = parts
        .as_mut()
        .filter(|_| known.iter().any(|k| path[1..].starts_with(k)))
        .unwrap_or_else(|| panic!("unsupported action {{{{{action}}}}}"));
    for part in parts {
        v = v
            .get(part)
            .unwrap_or_else(|| panic!("{{{{{action}}}}}: no {part}"));
    }
    v
}

/// Go template truth: false, 0, "", and empty lists and maps are false.
fn truthy(v: &Value) -> bool {
    match v {
        Value::Null => false,
        Value::Bool(b) => *b,
        Value::Number(n) => n.as_f64() != Some(0.0),
        Value::String(s) => !s.is_empty(),
        Value::Array(a) => !a.is_empty(),
        Value::Object(o) => !o.is_empty(),
    }
}

/// Helm's `required "message" .Values.a.b`: the value, or the message when the value is null
/// or an empty string.
fn required<'a>(stage: &str, ctx: &'a Value, action: &str) -> Result<&'a Value, String> {
    let (message, path) = stage
        .strip_prefix("required \"")
        .and_then(|rest| rest.split_once('"'))
        .unwrap_or_else(|| panic!("{{{{{action}}}}}: required takes a quoted message"));
    assert!(!message.contains('\\'), "{{{{{action}}}}}: needs escaping");
    match lookup(path.trim(), ctx, action) {
        Value::Null => Err(message.to_string()),
        Value::String(s) if s.is_empty() => Err(message.to_string()),
        v => Ok(v),
    }
}

/// One action's output; `Err` is a rendering failure Helm would report (from `required`).
fn eval(action: &str, ctx: &Value) -> Result<String, String> {
    let mut stages = action.split('|').map(str::trim);
    let first = stages.next().unwrap();
    let mut value = if first.starts_with("required ") {
        required(first, ctx, action)?.clone()
    } else {
        lookup(first, ctx, action).clone()
    };
    let mut text: Option<String> = None;
    for f in stages {
        match f {
            "quote" => {
                let s = text.take().unwrap_or_else(|| plain(&value, action));
                assert!(!s.contains(['"', '\\']), "{{{{{action}}}}}: needs escaping");
                text = Some(format!("\"{s}\""));
            }
            "int64" => {
                let n = value
                    .as_f64()
                    .unwrap_or_else(|| panic!("{action}: not a number"));
                assert_eq!(n.fract(), 0.0, "{action}");
                value = json!(n as i64);
                text = Some((n as i64).to_string());
            }
            "toJson" => text = Some(serde_json::to_string(&value).unwrap()),
            other => panic!("unsupported function {other} in {{{{{action}}}}}"),
        }
    }
    Ok(text.unwrap_or_else(|| plain(&value, action)))
}

/// An open `{{ if }}`.
struct Branch {
    /// Whether the branch being read (before or after `else`) is rendered, parents aside.
    shown: bool,
    in_else: bool,
}

fn render_text(template: &str, ctx: &Value) -> Result<String, String> {
    let mut out = String::new();
    let mut open: Vec<Branch> = Vec::new();
    let mut rest = template;
    while let Some(start) = rest.find("{{") {
        let on = open.iter().all(|b| b.shown);
        if on {
            out.push_str(&rest[..start]);
        }
        let len = rest[start..].find("}}").expect("unclosed action");
        let action = &rest[start + 2..start + len];
        assert!(
            action.starts_with(' ') && action.ends_with(' '),
            "{{{{{action}}}}}: whitespace trimming is not supported"
        );
        let action = action.trim();
        if let Some(cond) = action.strip_prefix("if ") {
            let cond = cond.trim();
            let (negate, path) = match cond.strip_prefix("not ") {
                Some(path) => (true, path.trim()),
                None => (false, cond),
            };
            assert!(
                path.starts_with(".Values."),
                "{{{{{action}}}}}: only values"
            );
            let shown = truthy(lookup(path, ctx, action)) != negate;
            open.push(Branch {
                shown,
                in_else: false,
            });
        } else if action == "else" {
            let branch = open.last_mut().expect("{{ else }} without {{ if }}");
            assert!(!branch.in_else, "a second {{{{ else }}}}");
            branch.shown = !branch.shown;
            branch.in_else = true;
        } else if action == "end" {
            open.pop().expect("{{ end }} without {{ if }}");
        } else if on {
            out.push_str(&eval(action, ctx)?);
        }
        rest = &rest[start + len + 2..];
    }
    assert!(open.is_empty(), "{{{{ if }}}} without {{{{ end }}}}");
    out.push_str(rest);
    Ok(out)
}

/// Every file of templates/ rendered with the chart's values under `overrides`, less the
/// files that render to nothing; `Err` names the file and says why, as Helm fails.
pub fn try_render(overrides: &Value) -> Result<BTreeMap<String, String>, String> {
    let mut values = yaml_file(chart().join("values.yaml"));
    merge(&mut values, overrides);
    let meta = yaml_file(chart().join("Chart.yaml"));
    let ctx = json!({
        "Values": values,
        "Release": {"Name": "dadi-p2p", "Namespace": NS, "Service": "Helm"},
        "Chart": {
            "Name": meta["name"], "Version": meta["version"], "AppVersion": meta["appVersion"]
        },
    });
    let mut out = BTreeMap::new();
    for entry in std::fs::read_dir(chart().join("templates")).unwrap() {
        let path = entry.unwrap().path();
        let name = path.file_name().unwrap().to_str().unwrap().to_string();
        let text = render_text(&std::fs::read_to_string(&path).unwrap(), &ctx)
            .map_err(|e| format!("{name}: {e}"))?;
        if !text.trim().is_empty() {
            out.insert(name, text);
        }
    }
    Ok(out)
}

pub fn render(overrides: &Value) -> BTreeMap<String, String> {
    try_render(overrides).unwrap_or_else(|e| panic!("rendering failed: {e}"))
}

pub fn render_default() -> BTreeMap<String, String> {
    render(&json!({}))
}

pub fn rendered_documents(files: &BTreeMap<String, String>) -> BTreeMap<String, Value> {
    documents(
        files
            .iter()
            .filter(|(n, _)| n.ends_with(".yaml"))
            .map(|(_, t)| t.as_str()),
    )
}

/// Removes the labels Helm adds to every object, checking that each has them.
pub fn without_helm_labels(docs: &mut BTreeMap<String, Value>) {
    for (key, doc) in docs.iter_mut() {
        let labels = doc["metadata"]["labels"]
            .as_object_mut()
            .unwrap_or_else(|| panic!("{key} has no labels"));
        assert_eq!(
            labels.remove("app.kubernetes.io/managed-by"),
            Some(json!("Helm")),
            "{key}"
        );
        assert!(labels.remove("helm.sh/chart").is_some(), "{key}");
    }
}

/// The webhook's manifests under packaging/admission.
fn admission_documents() -> BTreeMap<String, Value> {
    let texts: Vec<String> = yaml_files(&packaging().join("admission"))
        .iter()
        .map(|f| std::fs::read_to_string(f).unwrap())
        .collect();
    documents(texts.iter().map(String::as_str))
}

#[test]
fn chart_defaults_render_the_plain_manifests() {
    let chart_meta = yaml_file(chart().join("Chart.yaml"));
    assert_eq!(chart_meta["apiVersion"], "v2");
    assert_eq!(chart_meta["appVersion"], crate::common::version());

    let files = render_default();
    assert!(files.contains_key("NOTES.txt"));
    assert!(
        !files.keys().any(|f| f.starts_with("admission")),
        "the webhook is off by default: {:?}",
        files.keys()
    );
    let mut rendered = rendered_documents(&files);
    without_helm_labels(&mut rendered);
    assert_same_as_plain(&rendered, plain_documents(), "packaging/kubernetes");
}

/// Checks that the chart rendered exactly the objects of a folder of plain manifests
/// (whose Namespace the chart leaves to Helm).
pub fn assert_same_as_plain(
    rendered: &BTreeMap<String, Value>,
    mut plain: BTreeMap<String, Value>,
    folder: &str,
) {
    plain.remove(&format!("Namespace/{NS}")).unwrap();
    assert_eq!(
        rendered.keys().collect::<Vec<_>>(),
        plain.keys().collect::<Vec<_>>()
    );
    for (key, doc) in &plain {
        assert_eq!(&rendered[key], doc, "{key} differs from {folder}");
    }
}

#[test]
fn chart_values_reach_the_objects_and_the_daemon() {
    let overrides = json!({
        "image": {"repository": "reg.example.com/dadi-p2p", "tag": "0.2.0"},
        "service": {"port": 65101},
        "exporter": {"enable": false, "port": 65103},
        "cache": {"capacity": 10737418240u64, "hostPath": "/data/dadi-p2p"},
        "upstream": {"allowHosts": ["reg.example.com", "*.example.org"]},
        "resources": {"limits": {"cpu": "2", "memory": "2Gi"}},
        "maxUnavailable": 1,
    });
    let docs = rendered_documents(&render(&overrides));
    let config_text = check_install(&docs, NS);
    let ds = &docs["DaemonSet/dadi-p2p"];
    let pod = &ds["spec"]["template"]["spec"];
    let c = &pod["containers"][0];
    assert_eq!(c["image"], "reg.example.com/dadi-p2p:0.2.0");
    assert_eq!(
        c["resources"]["limits"],
        json!({"cpu": "2", "memory": "2Gi"})
    );
    assert_eq!(
        c["resources"]["requests"],
        json!({"cpu": "1", "memory": "1Gi"})
    );
    assert_eq!(
        ds["spec"]["updateStrategy"]["rollingUpdate"]["maxUnavailable"],
        1
    );
    assert_eq!(
        pod["volumes"][1]["hostPath"]["path"], "/data/dadi-p2p",
        "{pod}"
    );
    let config: serde_yaml_ng::Value = serde_yaml_ng::from_str(&config_text).unwrap();
    assert_eq!(config["service"]["listen"], "127.0.0.1:65101");
    assert_eq!(config["ExporterConfig"]["enable"], false);
    assert_eq!(config["upstream"]["allowHosts"][1], "*.example.org");

    // The rendered config is one the daemon takes, with the capacity given.
    let (daemon, _) = start_with(&config_text);
    assert_eq!(status(&daemon)["cache"]["capacity"], 10737418240u64);
}

#[test]
fn chart_admission_renders_the_admission_manifests() {
    let files = render(&json!({"admission": {"enabled": true}}));
    assert!(files["NOTES.txt"].contains("dadi-p2p-admission"));
    let mut rendered = rendered_documents(&files);
    without_helm_labels(&mut rendered);
    let mut plain = admission_documents();
    plain.remove(&format!("Namespace/{NS}")).unwrap();
    for (key, doc) in &plain {
        assert_eq!(
            rendered.remove(key).as_ref(),
            Some(doc),
            "{key} differs from packaging/admission"
        );
    }
    // What is left is the node daemon's install, as without the webhook.
    let daemon = rendered_documents(&render_default());
    assert_eq!(
        rendered.keys().collect::<Vec<_>>(),
        daemon.keys().collect::<Vec<_>>()
    );
}

#[test]
fn chart_admission_values_reach_the_objects() {
    let overrides = json!({
        "service": {"port": 65101},
        "admission": {
            "enabled": true,
            "image": {"repository": "reg.example.com/dadi-p2p-admission", "tag": "0.2.0"},
            "replicas": 3,
            "registries": "*.example.com,reg.example.org",
            "certManager": false,
        },
    });
    let docs = rendered_documents(&render(&overrides));
    let deploy = &docs["Deployment/dadi-p2p-admission"];
    assert_eq!(deploy["spec"]["replicas"], 3);
    let c = &deploy["spec"]["template"]["spec"]["containers"][0];
    assert_eq!(c["image"], "reg.example.com/dadi-p2p-admission:0.2.0");
    let env: BTreeMap<&str, &Value> = c["env"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| (e["name"].as_str().unwrap(), &e["value"]))
        .collect();
    assert_eq!(env["DADI_P2P_REGISTRIES"], "*.example.com,reg.example.org");
    assert_eq!(
        env["DADI_P2P_PORT"], "65101",
        "the webhook points at the daemon's port"
    );
    assert!(
        !docs
            .keys()
            .any(|k| k.starts_with("Issuer/") || k.starts_with("Certificate/")),
        "no cert-manager objects without cert-manager: {:?}",
        docs.keys()
    );
    assert!(docs.contains_key("MutatingWebhookConfiguration/dadi-p2p-admission"));
}

#[test]
fn renderer_refuses_what_it_does_not_implement() {
    let ctx = json!({"Values": {"n": 4294967296u64, "s": "x"}});
    for bad in [
        "{{ .Values.n }}",
        "{{- .Values.s }}",
        "{{ include \"x\" . }}",
        "{{ .Values.s | upper }}",
        "{{ .Values.missing }}",
        "{{ if .Values.s }}open",
        "{{ end }}",
        "{{ if .Release.Name }}x{{ end }}",
        "{{ else }}",
        "{{ if .Values.s }}a{{ else }}b{{ else }}c{{ end }}",
        "{{ if not .Release.Name }}x{{ end }}",
        "{{ if not (.Values.s) }}x{{ end }}",
        "{{ required .Values.s }}",
        "{{ required \"m\" .Values.missing }}",
        "{{ .Values.s | required \"m\" }}",
    ] {
        let caught = std::panic::catch_unwind(|| render_text(bad, &ctx));
        assert!(caught.is_err(), "{bad} rendered");
    }
    let ok = |text: &str, ctx: &Value| render_text(text, ctx).unwrap();
    assert_eq!(ok("{{ .Values.n | int64 }}", &ctx), "4294967296");
    assert_eq!(ok("{{ .Values.s | quote }}", &ctx), "\"x\"");
    let ctx = json!({"Values": {
        "t": true, "f": false, "zero": 0, "empty": "", "list": [1], "null": null, "s": "x"
    }});
    let text = "a{{ if .Values.t }}b{{ if .Values.f }}c{{ end }}{{ if .Values.list }}d{{ end }}\
                {{ end }}{{ if .Values.zero }}e{{ end }}{{ if .Values.empty }}f{{ end }}g";
    assert_eq!(ok(text, &ctx), "abdg");
    let text = "{{ if not .Values.f }}a{{ else }}b{{ end }}{{ if .Values.f }}c{{ else }}d{{ end }}\
                {{ if .Values.f }}{{ if .Values.t }}e{{ else }}f{{ end }}{{ else }}g{{ end }}\
                {{ if not .Values.s }}h{{ end }}";
    assert_eq!(ok(text, &ctx), "adg");

    // `required` passes a value through and fails the rendering with its message when the
    // value is empty or null, as Helm does.
    assert_eq!(
        ok("{{ required \"need s\" .Values.s | quote }}", &ctx),
        "\"x\""
    );
    assert_eq!(ok("{{ required \"m\" .Values.f }}", &ctx), "false");
    for missing in ["empty", "null"] {
        let text = format!("a{{{{ required \"need {missing}\" .Values.{missing} }}}}");
        assert_eq!(render_text(&text, &ctx), Err(format!("need {missing}")));
    }
    // Only where the branch is rendered.
    let text = "{{ if .Values.f }}{{ required \"m\" .Values.empty }}{{ end }}";
    assert_eq!(ok(text, &ctx), "");
}
