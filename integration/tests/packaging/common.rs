//! Paths of the repository and of the binaries under test, and running external tools with
//! their output shown when they fail.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

pub fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .to_path_buf()
}

pub fn packaging() -> PathBuf {
    repo().join("packaging")
}

/// `target/debug`: the test executable lives in `target/debug/deps`.
pub fn bin_dir() -> PathBuf {
    let exe = std::env::current_exe().unwrap();
    let dir = exe.parent().unwrap().parent().unwrap().to_path_buf();
    for b in ["dadi-p2p", "overlaybd-p2p"] {
        assert!(
            dir.join(b).is_file(),
            "{} missing: build it first (`cargo build -p dadi-p2p -p overlaybd-p2p`)",
            dir.join(b).display()
        );
    }
    dir
}

pub fn daemon_bin() -> PathBuf {
    bin_dir().join("dadi-p2p")
}

/// Whether `tool` is on PATH; prints why a check is skipped when it is not.
pub fn have(tool: &str, skipped: &str) -> bool {
    let found = std::env::var_os("PATH")
        .map(|p| std::env::split_paths(&p).any(|d| d.join(tool).is_file()))
        .unwrap_or(false);
    if !found {
        println!("note: {tool} not installed, {skipped} skipped (scripts/deps installs it)");
    }
    found
}

/// Runs the command and returns its output; panics with stdout and stderr when it fails.
pub fn run(cmd: &mut Command) -> Output {
    let out = cmd
        .output()
        .unwrap_or_else(|e| panic!("cannot run {cmd:?}: {e}"));
    assert!(
        out.status.success(),
        "{cmd:?} failed ({}):\n{}{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

pub fn stdout(cmd: &mut Command) -> String {
    String::from_utf8(run(cmd).stdout).unwrap()
}

/// `scripts/package <kind>` from the debug binaries into `out`; the package's path.
pub fn build_package(kind: &str, out: &Path) -> PathBuf {
    let printed = stdout(
        Command::new(repo().join("scripts/package"))
            .arg(kind)
            .arg("--bin-dir")
            .arg(bin_dir())
            .arg("--out")
            .arg(out)
            .args(["--compress", "gzip"]),
    );
    let path = PathBuf::from(printed.trim());
    assert!(path.is_file(), "scripts/package printed {printed:?}");
    assert_eq!(path.parent().unwrap(), out);
    path
}

/// The workspace version, as the packages must carry it.
pub fn version() -> String {
    let text = std::fs::read_to_string(repo().join("Cargo.toml")).unwrap();
    let section = text.split("[workspace.package]").nth(1).unwrap();
    let line = section.lines().find(|l| l.starts_with("version")).unwrap();
    line.split('"').nth(1).unwrap().to_string()
}
