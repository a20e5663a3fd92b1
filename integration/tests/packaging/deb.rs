//! The DEB from scripts/package: control fields, every file with its owner and mode, the
//! conffile, byte-identical shipped files and lintian's verdict. The maintainer scripts run
//! twice over: directly, and under `dpkg --root` installing, reinstalling, removing and
//! purging the package, both against a scratch root (`DPKG_ROOT`) with the commands that
//! would change the host (account, ownership, systemd state) replaced by recorders. Starting
//! the service happens only when systemd runs the host and never under `DPKG_ROOT`, so that
//! branch is checked for what it must not do.

use std::collections::BTreeMap;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;

use crate::common::{build_package, have, packaging, run, stdout, version};

fn build() -> (tempfile::TempDir, PathBuf) {
    let out = tempfile::tempdir().unwrap();
    let deb = build_package("deb", out.path());
    (out, deb)
}

/// `dpkg-deb --contents`: path → (mode string, owner).
fn contents(deb: &Path) -> BTreeMap<String, (String, String)> {
    stdout(Command::new("dpkg-deb").arg("--contents").arg(deb))
        .lines()
        .map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            let path = f[5].trim_start_matches('.').to_string();
            (path, (f[0].to_string(), f[1].to_string()))
        })
        .collect()
}

#[test]
fn deb_holds_every_file_with_its_mode() {
    let (_out, deb) = build();
    let arch = stdout(Command::new("dpkg").arg("--print-architecture"));
    assert_eq!(
        deb.file_name().unwrap().to_str().unwrap(),
        format!("dadi-p2p_{}-1_{}.deb", version(), arch.trim())
    );

    let field = |name: &str| {
        stdout(
            Command::new("dpkg-deb")
                .args(["--field"])
                .arg(&deb)
                .arg(name),
        )
        .trim()
        .to_string()
    };
    assert_eq!(field("Package"), "dadi-p2p");
    assert_eq!(field("Version"), format!("{}-1", version()));
    assert_eq!(field("Architecture"), arch.trim());
    let depends = field("Depends");
    assert!(depends.contains("adduser"), "{depends}");
    assert!(depends.contains("libc6 (>= "), "{depends}");
    let info = stdout(Command::new("dpkg-deb").arg("--info").arg(&deb));
    for script in ["postinst", "prerm", "postrm", "conffiles"] {
        assert!(info.contains(script), "{script} missing from\n{info}");
    }

    let files = contents(&deb);
    let expect = [
        ("/usr/bin/dadi-p2p", "-rwxr-xr-x"),
        ("/usr/bin/overlaybd-p2p", "-rwxr-xr-x"),
        ("/lib/systemd/system/dadi-p2p.service", "-rw-r--r--"),
        ("/etc/dadi-p2p/config.yaml", "-rw-r--r--"),
        ("/usr/share/doc/dadi-p2p/copyright", "-rw-r--r--"),
        ("/usr/share/doc/dadi-p2p/changelog.Debian.gz", "-rw-r--r--"),
        ("/usr/share/lintian/overrides/dadi-p2p", "-rw-r--r--"),
        ("/usr/share/man/man8/dadi-p2p.8.gz", "-rw-r--r--"),
        ("/usr/share/man/man8/overlaybd-p2p.8.gz", "-rw-r--r--"),
    ];
    for (path, mode) in expect {
        let (m, owner) = files
            .get(path)
            .unwrap_or_else(|| panic!("{path} missing: {files:?}"));
        assert_eq!((m.as_str(), owner.as_str()), (mode, "root/root"), "{path}");
    }
    for (path, (mode, owner)) in &files {
        assert_eq!(owner, "root/root", "{path}");
        assert!(
            mode.starts_with('d') || expect.iter().any(|(p, _)| p == path),
            "unexpected file {path}"
        );
    }

    // The shipped files are the repository's, byte for byte; binaries are stripped.
    let root = tempfile::tempdir().unwrap();
    run(Command::new("dpkg-deb")
        .arg("-x")
        .arg(&deb)
        .arg(root.path()));
    let same = |inside: &str, source: &str| {
        assert_eq!(
            std::fs::read(root.path().join(inside)).unwrap(),
            std::fs::read(packaging().join(source)).unwrap(),
            "{inside}"
        );
    };
    same("etc/dadi-p2p/config.yaml", "config/config.yaml");
    same(
        "lib/systemd/system/dadi-p2p.service",
        "systemd/dadi-p2p.service",
    );
    same("usr/share/doc/dadi-p2p/copyright", "deb/copyright");
    let sections = stdout(
        Command::new("objdump")
            .arg("-h")
            .arg(root.path().join("usr/bin/dadi-p2p")),
    );
    assert!(!sections.contains(".debug_info"), "dadi-p2p not stripped");
    // Manual pages come from the binaries' own --help.
    let man = std::fs::File::open(root.path().join("usr/share/man/man8/dadi-p2p.8.gz")).unwrap();
    let mut page = String::new();
    std::io::Read::read_to_string(&mut flate2::read::GzDecoder::new(man), &mut page).unwrap();
    assert!(page.starts_with(".TH DADI-P2P 8"), "{page}");
    assert!(page.contains("--cache-dir"), "{page}");

    let control = tempfile::tempdir().unwrap();
    run(Command::new("dpkg-deb")
        .arg("-e")
        .arg(&deb)
        .arg(control.path()));
    assert_eq!(
        std::fs::read_to_string(control.path().join("conffiles")).unwrap(),
        "/etc/dadi-p2p/config.yaml\n"
    );
    for script in ["postinst", "prerm", "postrm"] {
        let path = control.path().join(script);
        let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o755, "{script}");
        run(Command::new("sh").arg("-n").arg(&path));
    }
}

#[test]
fn lintian_finds_no_errors() {
    if !have("lintian", "the lintian check") {
        return;
    }
    let (_out, deb) = build();
    let out = Command::new("lintian")
        .args(["--tag-display-limit", "0"])
        .arg(&deb)
        .output()
        .unwrap();
    let report = String::from_utf8_lossy(&out.stdout);
    let errors: Vec<&str> = report.lines().filter(|l| l.starts_with("E:")).collect();
    for warning in report.lines().filter(|l| l.starts_with("W:")) {
        println!("lintian {warning}");
    }
    assert!(errors.is_empty(), "lintian errors:\n{}", errors.join("\n"));
    assert!(
        out.status.success(),
        "lintian failed: {report}{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

const RECORDER: &str = r#"#!/bin/sh
echo "$(basename "$0") $*" >> "$STUB_LOG"
case "$(basename "$0") $1" in
  "getent passwd") exit "${STUB_USER_MISSING:-0}" ;;
  "deb-systemd-helper --quiet") exit "${STUB_WAS_DISABLED:-0}" ;;
esac
exit 0
"#;

/// The maintainer scripts of the built package, run with `DPKG_ROOT` and recorders for the
/// commands that would change the host.
struct Scripts {
    control: tempfile::TempDir,
    stubs: tempfile::TempDir,
    root: tempfile::TempDir,
}

impl Scripts {
    fn new(deb: &Path) -> Self {
        let control = tempfile::tempdir().unwrap();
        run(Command::new("dpkg-deb")
            .arg("-e")
            .arg(deb)
            .arg(control.path()));
        let stubs = tempfile::tempdir().unwrap();
        for tool in [
            "getent",
            "adduser",
            "chown",
            "deb-systemd-helper",
            "deb-systemd-invoke",
            "systemctl",
        ] {
            let path = stubs.path().join(tool);
            std::fs::write(&path, RECORDER).unwrap();
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
        }
        Scripts {
            control,
            stubs,
            root: tempfile::tempdir().unwrap(),
        }
    }

    /// Runs one script; the commands it called, one per line.
    fn run(&self, script: &str, args: &[&str], env: &[(&str, &str)]) -> Vec<String> {
        let log = self.stubs.path().join("log");
        let _ = std::fs::remove_file(&log);
        let path = format!("{}:/usr/bin:/bin", self.stubs.path().display());
        run(Command::new("sh")
            .arg(self.control.path().join(script))
            .args(args)
            .env("PATH", path)
            .env("DPKG_ROOT", self.root.path())
            .env("STUB_LOG", &log)
            .envs(env.iter().copied()));
        std::fs::read_to_string(&log)
            .unwrap_or_default()
            .lines()
            .map(str::to_string)
            .collect()
    }

    fn dir(&self, path: &str) -> PathBuf {
        self.root.path().join(path.trim_start_matches('/'))
    }
}

#[test]
fn maintainer_scripts_create_enable_and_purge() {
    let (_out, deb) = build();
    let s = Scripts::new(&deb);

    // First install: account, directories owned by it, unit enabled, nothing started.
    let calls = s.run("postinst", &["configure"], &[("STUB_USER_MISSING", "2")]);
    let adduser = calls.iter().find(|c| c.starts_with("adduser ")).unwrap();
    assert!(adduser.contains("--system") && adduser.ends_with(" dadi-p2p"));
    for dir in ["/var/cache/dadi-p2p", "/var/log/dadi-p2p"] {
        let meta = std::fs::metadata(s.dir(dir)).unwrap();
        assert!(meta.is_dir());
        assert_eq!(meta.permissions().mode() & 0o777, 0o750, "{dir}");
        let chown = format!("chown dadi-p2p:dadi-p2p {}", s.dir(dir).display());
        assert!(calls.contains(&chown), "{calls:?}");
    }
    assert!(calls.contains(&"deb-systemd-helper enable dadi-p2p.service".to_string()));
    assert!(
        !calls
            .iter()
            .any(|c| c.starts_with("systemctl") || c.starts_with("deb-systemd-invoke")),
        "started a service inside DPKG_ROOT: {calls:?}"
    );

    // Upgrade of a node where the administrator disabled the unit: the account exists, the
    // choice is kept.
    let calls = s.run(
        "postinst",
        &["configure", "0.0.9-1"],
        &[("STUB_WAS_DISABLED", "1")],
    );
    assert!(!calls.iter().any(|c| c.starts_with("adduser")), "{calls:?}");
    assert!(calls.contains(&"deb-systemd-helper update-state dadi-p2p.service".to_string()));
    assert!(!calls.iter().any(|c| c.contains(" enable ")), "{calls:?}");

    // Removal keeps data; the unit is masked so a leftover link cannot start a missing binary.
    assert!(s.run("prerm", &["remove"], &[]).is_empty());
    let calls = s.run("postrm", &["remove"], &[]);
    assert_eq!(calls, ["deb-systemd-helper mask dadi-p2p.service"]);
    assert!(s.dir("/var/cache/dadi-p2p").is_dir());

    // Purge deletes the cache and the logs and forgets the unit.
    let calls = s.run("postrm", &["purge"], &[]);
    assert!(calls.contains(&"deb-systemd-helper purge dadi-p2p.service".to_string()));
    assert!(!s.dir("/var/cache/dadi-p2p").exists());
    assert!(!s.dir("/var/log/dadi-p2p").exists());
}

/// `dpkg` itself, on a scratch root: the maintainer scripts run without chroot with
/// `DPKG_ROOT` set (`--force-script-chrootless`), dependencies are not installed there.
fn dpkg(s: &Scripts, args: &[&str]) -> Vec<String> {
    let log = s.stubs.path().join("log");
    let _ = std::fs::remove_file(&log);
    let path = format!(
        "{}:{}",
        s.stubs.path().display(),
        std::env::var("PATH").unwrap()
    );
    run(Command::new("dpkg")
        .arg(format!("--root={}", s.root.path().display()))
        .args([
            "--force-script-chrootless",
            "--force-depends",
            "--force-not-root",
            "--log=/dev/null",
        ])
        .args(args)
        .env("PATH", path)
        .env("STUB_LOG", &log)
        .env("STUB_USER_MISSING", "2"));
    std::fs::read_to_string(&log)
        .unwrap_or_default()
        .lines()
        .map(str::to_string)
        .collect()
}

#[test]
fn dpkg_keeps_an_edited_conffile_and_purges_everything() {
    let (_out, deb) = build();
    let s = Scripts::new(&deb);
    for dir in ["var/lib/dpkg/info", "var/lib/dpkg/updates"] {
        std::fs::create_dir_all(s.root.path().join(dir)).unwrap();
    }
    for file in ["var/lib/dpkg/status", "var/lib/dpkg/available"] {
        std::fs::write(s.root.path().join(file), "").unwrap();
    }
    let deb = deb.to_str().unwrap();

    let calls = dpkg(&s, &["--install", deb]);
    // Everything the scripts touched is inside the scratch root; only then may purge run.
    let chowns: Vec<&String> = calls.iter().filter(|c| c.starts_with("chown")).collect();
    assert_eq!(chowns.len(), 2, "{calls:?}");
    for c in chowns {
        assert!(
            c.contains(s.root.path().to_str().unwrap()),
            "outside the root: {c}"
        );
    }
    assert!(s.dir("/usr/bin/dadi-p2p").is_file());
    assert!(s.dir("/var/cache/dadi-p2p").is_dir());

    // An administrator's edit survives a reinstall of the package.
    let config = s.dir("/etc/dadi-p2p/config.yaml");
    let edited = std::fs::read_to_string(&config).unwrap() + "# edited on this node\n";
    std::fs::write(&config, &edited).unwrap();
    dpkg(&s, &["--force-confold", "--install", deb]);
    assert_eq!(std::fs::read_to_string(&config).unwrap(), edited);

    // Remove keeps the conffile and the cache; purge takes both.
    dpkg(&s, &["--remove", "dadi-p2p"]);
    assert!(!s.dir("/usr/bin/dadi-p2p").exists());
    assert!(config.is_file());
    assert!(s.dir("/var/cache/dadi-p2p").is_dir());
    dpkg(&s, &["--purge", "dadi-p2p"]);
    for gone in ["/etc/dadi-p2p", "/var/cache/dadi-p2p", "/var/log/dadi-p2p"] {
        assert!(!s.dir(gone).exists(), "{gone} left after purge");
    }
}
