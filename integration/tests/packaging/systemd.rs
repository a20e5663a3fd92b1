//! The systemd unit: `systemd-analyze verify` reports nothing, and the offline security
//! analysis rates its exposure as low. Both run against a scratch root holding the host's
//! system units (the unit's dependencies), the unit, and an executable at its ExecStart path:
//! verify checks that path only for being executable. The unit also has to agree with the
//! shipped config: the directories it may write, and a stop timeout above the drain.

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::{Command, Output};

use crate::common::{have, packaging};

/// Highest accepted `systemd-analyze security` exposure, in tenths (2.0 on its 0–10 scale).
const MAX_EXPOSURE: u32 = 20;

fn scratch_root(unit_text: &str) -> tempfile::TempDir {
    let root = tempfile::tempdir().unwrap();
    let units = root.path().join("usr/lib/systemd/system");
    std::fs::create_dir_all(&units).unwrap();
    let host = Path::new("/usr/lib/systemd/system");
    for entry in std::fs::read_dir(host).unwrap() {
        let entry = entry.unwrap();
        let meta = std::fs::symlink_metadata(entry.path()).unwrap();
        let to = units.join(entry.file_name());
        if meta.file_type().is_symlink() {
            let target = std::fs::read_link(entry.path()).unwrap();
            std::os::unix::fs::symlink(target, to).unwrap();
        } else if meta.is_file() {
            std::fs::copy(entry.path(), to).unwrap();
        }
    }
    std::fs::write(units.join("dadi-p2p.service"), unit_text).unwrap();
    let bin = root.path().join("usr/bin/dadi-p2p");
    std::fs::create_dir_all(bin.parent().unwrap()).unwrap();
    std::fs::write(&bin, "#!/bin/sh\n").unwrap();
    std::fs::set_permissions(&bin, std::fs::Permissions::from_mode(0o755)).unwrap();
    root
}

fn analyze(root: &Path, args: &[&str]) -> Output {
    Command::new("systemd-analyze")
        .args(args)
        .arg(format!("--root={}", root.display()))
        .arg("dadi-p2p.service")
        .output()
        .unwrap()
}

fn unit() -> String {
    std::fs::read_to_string(packaging().join("systemd/dadi-p2p.service")).unwrap()
}

#[test]
fn unit_verifies_clean() {
    if !have("systemd-analyze", "systemd-analyze verify") {
        return;
    }
    let root = scratch_root(&unit());
    let out = analyze(root.path(), &["verify"]);
    let said = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        out.status.success() && said.trim().is_empty(),
        "systemd-analyze verify found problems in dadi-p2p.service:\n{said}"
    );

    // It does report a misspelt key, which it accepts with exit status 0.
    let broken = scratch_root(&unit().replace("Restart=on-failure", "Restrat=on-failure"));
    let out = analyze(broken.path(), &["verify"]);
    assert!(String::from_utf8_lossy(&out.stderr).contains("Restrat"));
}

#[test]
fn unit_exposure_is_low() {
    if !have("systemd-analyze", "systemd-analyze security") {
        return;
    }
    let root = scratch_root(&unit());
    let threshold = format!("--threshold={MAX_EXPOSURE}");
    let out = analyze(root.path(), &["security", "--offline=yes", &threshold]);
    let text = String::from_utf8_lossy(&out.stdout);
    let overall = text
        .lines()
        .find(|l| l.contains("Overall exposure level"))
        .unwrap_or_else(|| panic!("no overall level in:\n{text}"));
    println!("{}", overall.trim());
    assert!(
        out.status.success(),
        "exposure above {MAX_EXPOSURE}/100: {overall}\n{text}"
    );
}

/// `Key=value` lines of the unit; a key given twice keeps every value.
fn settings(text: &str) -> Vec<(String, String)> {
    text.lines()
        .filter(|l| !l.starts_with('#') && !l.starts_with('['))
        .filter_map(|l| l.split_once('='))
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

#[test]
fn unit_agrees_with_the_shipped_config() {
    let unit = unit();
    let set = settings(&unit);
    let one = |key: &str| {
        let values: Vec<&String> = set
            .iter()
            .filter(|(k, _)| k == key)
            .map(|(_, v)| v)
            .collect();
        assert_eq!(values.len(), 1, "{key}: {values:?}");
        values[0].clone()
    };
    let config_text = std::fs::read_to_string(packaging().join("config/config.yaml")).unwrap();
    let config: serde_yaml_ng::Value = serde_yaml_ng::from_str(&config_text).unwrap();

    assert_eq!(
        one("ExecStart"),
        "/usr/bin/dadi-p2p --config /etc/dadi-p2p/config.yaml"
    );
    assert_eq!(one("Restart"), "on-failure");
    assert_eq!(one("ProtectSystem"), "strict");
    assert_eq!(one("NoNewPrivileges"), "yes");
    assert_eq!(one("PrivateTmp"), "yes");
    assert!(one("LimitNOFILE").parse::<u64>().unwrap() >= 65_536);

    // The daemon may write where its config points, and nowhere else.
    let writable: Vec<String> = one("ReadWritePaths")
        .split_whitespace()
        .map(str::to_string)
        .collect();
    let cache_dir = config["cache"]["dir"].as_str().unwrap().to_string();
    let log_dir = config["DeployConfig"]["logDir"]
        .as_str()
        .unwrap()
        .to_string();
    assert_eq!(writable, [cache_dir.clone(), log_dir.clone()]);
    assert_eq!(format!("/var/cache/{}", one("CacheDirectory")), cache_dir);
    assert_eq!(format!("/var/log/{}", one("LogsDirectory")), log_dir);

    // SIGKILL only after the drain has had its time.
    let stop = one("TimeoutStopSec");
    let stop_ms = stop.strip_suffix('s').unwrap().parse::<u64>().unwrap() * 1000;
    let grace_ms = config["service"]["graceMs"].as_u64().unwrap();
    assert!(
        stop_ms > grace_ms,
        "TimeoutStopSec={stop} vs graceMs {grace_ms}"
    );
}
