//! The systemd unit: `systemd-analyze verify` reports nothing, and the offline security
//! analysis rates its exposure as low. Both run against a scratch root holding the host's
//! system units (the unit's dependencies), the unit, and an executable at its ExecStart path:
//! verify checks that path only for being executable.

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
