//! Every refusal: a clear message, its own exit status, and the file left
//! exactly as it was (bytes, mtime, inode, mode, and no new files beside it).

use std::fs::{self, File, OpenOptions};
use std::io;
use std::os::fd::AsRawFd;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::time::{Duration, Instant};

use crate::support::{fixture, Node};

/// Runs `args` and asserts a refusal with `code` whose stderr contains `needle`.
fn refused(node: &Node, args: &[&str], code: i32, needle: &str) {
    let before = node.snapshot();
    let run = node.run(args);
    assert_eq!(run.code, code, "{args:?}: {}", run.stderr);
    assert!(run.stderr.contains(needle), "{args:?}: {}", run.stderr);
    assert_eq!(node.snapshot(), before, "{args:?} changed the file");
}

#[test]
fn malformed_json_names_line_and_column() {
    let text =
        fixture("overlaybd-shipped.json").replacen("\"ioEngine\": 0,", "\"ioEngine\": 0,,", 1);
    let node = Node::with(&text);
    refused(
        &node,
        &["enable"],
        5,
        "malformed JSON at line 20, column 17",
    );
    refused(&node, &["status"], 5, "line 20, column 17");
}

#[test]
fn trailing_comma_is_refused() {
    let node = Node::with("{\n  \"p2pConfig\": {\"enable\": false},\n}\n");
    refused(&node, &["disable"], 5, "line 3, column 1");
}

#[test]
fn top_level_value_that_is_not_an_object() {
    for (text, what) in [("[]", "an array"), ("\"x\"", "a string"), ("null", "null")] {
        refused(&Node::with(text), &["enable"], 5, what);
    }
}

#[test]
fn p2p_that_is_not_an_object_and_duplicate_keys() {
    refused(
        &Node::with("{\"p2pConfig\": true}"),
        &["enable"],
        5,
        "not an object",
    );
    let dup = "{\"p2pConfig\": {\"enable\": false, \"enable\": false}}";
    refused(&Node::with(dup), &["enable"], 5, "more than once");
}

#[test]
fn address_without_scheme_or_with_bad_port() {
    let node = Node::with(&fixture("overlaybd-shipped.json"));
    refused(
        &node,
        &["enable", "--address", "localhost:19145/dadip2p"],
        3,
        "http:// or https://",
    );
    refused(
        &node,
        &["enable", "--address", "127.0.0.1:65001/accelerator"],
        3,
        "bypass",
    );
    refused(
        &node,
        &["enable", "--address", "http://127.0.0.1:port/accelerator"],
        3,
        "not a number",
    );
    refused(
        &node,
        &["enable", "--address", "http://127.0.0.1:99999/accelerator"],
        3,
        "1-65535",
    );
}

#[test]
fn read_only_mode_is_refused_even_for_root() {
    let node = Node::with(&fixture("overlaybd-shipped.json"));
    fs::set_permissions(&node.config, fs::Permissions::from_mode(0o444)).unwrap();
    refused(&node, &["enable"], 6, "read-only (mode 0444)");
    refused(&node, &["enable", "--dry-run"], 6, "read-only");
    // Nothing to change is not a refusal, even on a read-only file.
    let run = node.run(&["disable"]);
    assert_eq!(run.code, 0, "{}", run.stderr);
}

/// The inode flag `chattr +i` sets; libc does not export it.
const FS_IMMUTABLE_FL: libc::c_int = 0x10;

/// The file's inode flags (`lsattr`).
fn inode_flags(f: &File) -> io::Result<libc::c_int> {
    let mut flags: libc::c_int = 0;
    // SAFETY: the ioctl writes one int through a pointer to a live local, on
    // a descriptor owned by `f`.
    match unsafe { libc::ioctl(f.as_raw_fd(), libc::FS_IOC_GETFLAGS, &mut flags) } {
        0 => Ok(flags),
        _ => Err(io::Error::last_os_error()),
    }
}

fn set_inode_flags(f: &File, flags: libc::c_int) -> io::Result<()> {
    // SAFETY: the ioctl reads one int through a pointer to a live local, on a
    // descriptor owned by `f`.
    match unsafe { libc::ioctl(f.as_raw_fd(), libc::FS_IOC_SETFLAGS, &flags) } {
        0 => Ok(()),
        _ => Err(io::Error::last_os_error()),
    }
}

/// The errors of a filesystem that keeps no inode flags or not this one.
fn unsupported(e: &io::Error) -> bool {
    matches!(e.raw_os_error(), Some(libc::ENOTTY | libc::EOPNOTSUPP))
}

/// The immutable flag, set through the same ioctl `chattr +i` uses, so the
/// test does not depend on e2fsprogs being installed. Cleared on drop so the
/// temp dir can be removed.
struct Immutable(File);

impl Immutable {
    /// `None` when the filesystem does not support the flag; any other
    /// failure (no `CAP_LINUX_IMMUTABLE`, say) fails the test.
    fn set(path: &Path) -> Option<Immutable> {
        let f = File::open(path).unwrap();
        let what = |step: &str, e: io::Error| -> Option<Immutable> {
            if unsupported(&e) {
                eprintln!(
                    "SKIPPED: the filesystem of {} does not support the immutable flag \
                     ({step}: {e}); the read-only mode test covers the refusal",
                    path.display()
                );
                return None;
            }
            panic!(
                "cannot set the immutable flag on {} ({step}: {e}); this test needs \
                 root (CAP_LINUX_IMMUTABLE)",
                path.display()
            );
        };
        let flags = match inode_flags(&f) {
            Ok(flags) => flags,
            Err(e) => return what("FS_IOC_GETFLAGS", e),
        };
        if let Err(e) = set_inode_flags(&f, flags | FS_IMMUTABLE_FL) {
            return what("FS_IOC_SETFLAGS", e);
        }
        let now = inode_flags(&f).unwrap();
        assert_ne!(now & FS_IMMUTABLE_FL, 0, "immutable flag did not stick");
        Some(Immutable(f))
    }
}

impl Drop for Immutable {
    fn drop(&mut self) {
        let cleared = inode_flags(&self.0)
            .and_then(|flags| set_inode_flags(&self.0, flags & !FS_IMMUTABLE_FL));
        if let Err(e) = cleared {
            eprintln!("could not clear the immutable flag; the temp dir stays: {e}");
        }
    }
}

#[test]
fn immutable_file_is_refused_when_the_filesystem_supports_it() {
    let node = Node::with(&fixture("overlaybd-shipped.json"));
    let Some(_immutable) = Immutable::set(&node.config) else {
        return;
    };
    // The kernel refuses even root, and even a dry run says so.
    assert!(OpenOptions::new().append(true).open(&node.config).is_err());
    refused(&node, &["enable"], 6, "not writable");
    refused(&node, &["enable", "--dry-run"], 6, "not writable");
}

#[test]
fn a_lock_held_too_long_is_refused_after_a_bounded_wait() {
    let node = Node::with(&fixture("overlaybd-shipped.json"));
    let dir = File::open(node.config.parent().unwrap()).unwrap();
    // SAFETY: flock on a descriptor owned by `dir`, which outlives the call.
    let held = unsafe { libc::flock(dir.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) };
    assert_eq!(held, 0, "{}", io::Error::last_os_error());
    let before = node.snapshot();
    let started = Instant::now();
    let run = node.run(&["enable", "--json"]);
    assert!(
        started.elapsed() >= Duration::from_secs(5),
        "waited 5s first"
    );
    assert_eq!(run.code, 10, "{}", run.stderr);
    assert!(
        run.stderr
            .contains("still locked by another process after 5s"),
        "{}",
        run.stderr
    );
    assert_eq!(run.json()["error"], "locked");
    assert_eq!(node.snapshot(), before);
    drop(dir);
    assert_eq!(
        node.run(&["enable"]).code,
        0,
        "released: the run goes ahead"
    );
}

#[test]
fn missing_file_without_create() {
    let node = Node::empty();
    for args in [&["enable"][..], &["disable"], &["status"]] {
        let run = node.run(args);
        assert_eq!(run.code, 4, "{args:?}");
        assert!(run.stderr.contains("file not found"), "{}", run.stderr);
        assert_eq!(run.stderr.contains("--create"), args[0] != "status");
        assert!(!node.config.exists());
    }
}

#[test]
fn json_errors_are_machine_readable() {
    let node = Node::with("{");
    let before = node.snapshot();
    let run = node.run(&["enable", "--json"]);
    assert_eq!(run.code, 5);
    let v = run.json();
    assert_eq!(v["ok"], false);
    assert_eq!(v["exit_code"], 5);
    assert_eq!(v["error"], "config_invalid");
    assert!(v["message"].as_str().unwrap().contains("line 1, column 1"));
    assert_eq!(node.snapshot(), before);
}

#[test]
fn usage_errors_exit_2() {
    let node = Node::with("{}");
    assert_eq!(node.run(&["enable", "--no-such-flag"]).code, 2);
    assert_eq!(node.run(&["frobnicate"]).code, 2);
}

#[test]
fn empty_and_non_utf8_files_are_invalid() {
    refused(&Node::with(""), &["enable"], 5, "line 1, column 0");
    let node = Node::with("");
    fs::write(&node.config, b"{\"userAgent\": \"\xff\"}").unwrap();
    refused(&node, &["enable"], 5, "not UTF-8");
}
