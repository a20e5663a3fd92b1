//! A throw-away "node" for running the built `overlaybd-p2p`: a temp dir
//! with the config file and a `bin/` dir that is the whole `PATH`, so the
//! tool can only ever reach the fake `systemctl`/`service` a test put there
//! and never restarts a real service.

use std::fs;
use std::io::Read;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::thread;
use std::time::Duration;

use tempfile::TempDir;

pub const DEFAULT_ADDRESS: &str = "http://127.0.0.1:65001/accelerator";

/// Longest a run may take: a run that hangs fails its test instead of
/// stalling the suite.
const RUN_LIMIT: Duration = Duration::from_secs(60);

pub fn fixture(name: &str) -> String {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(name);
    fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

pub struct Node {
    dir: TempDir,
    pub config: PathBuf,
    bin: PathBuf,
}

pub struct Run {
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
}

impl Run {
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_str(&self.stdout)
            .unwrap_or_else(|e| panic!("stdout is not JSON ({e}): {}", self.stdout))
    }
}

/// What must not change when the tool refuses or has nothing to do.
#[derive(Debug, PartialEq, Eq)]
pub struct Snapshot {
    bytes: Vec<u8>,
    mtime: (i64, i64),
    ino: u64,
    mode: u32,
    entries: Vec<String>,
}

impl Node {
    /// A node whose config file holds `content`.
    pub fn with(content: &str) -> Node {
        let node = Node::empty();
        fs::write(&node.config, content).unwrap();
        node
    }

    /// A node without a config file (its directory exists).
    pub fn empty() -> Node {
        let dir = tempfile::tempdir().unwrap();
        let bin = dir.path().join("bin");
        fs::create_dir(&bin).unwrap();
        let etc = dir.path().join("etc/overlaybd");
        fs::create_dir_all(&etc).unwrap();
        Node {
            config: etc.join("overlaybd.json"),
            dir,
            bin,
        }
    }

    /// Runs the tool on this node; a run still going after [`RUN_LIMIT`] is
    /// killed and fails the test.
    pub fn run(&self, args: &[&str]) -> Run {
        let child = Command::new(env!("CARGO_BIN_EXE_overlaybd-p2p"))
            .args(args)
            .arg("--config")
            .arg(&self.config)
            .env_clear()
            .env("PATH", &self.bin)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let pid = child.id();
        let (done, wait) = mpsc::channel();
        thread::spawn(move || done.send(child.wait_with_output()));
        let out = match wait.recv_timeout(RUN_LIMIT) {
            Ok(out) => out.unwrap(),
            Err(_) => {
                // SAFETY: a plain signal to the child spawned above, which is
                // still running and so not reaped, barring an exit just now.
                unsafe { libc::kill(pid as libc::pid_t, libc::SIGKILL) };
                let out = wait.recv().unwrap().unwrap();
                let mut stderr = String::new();
                out.stderr.as_slice().read_to_string(&mut stderr).unwrap();
                panic!("{args:?} still running after {RUN_LIMIT:?}, killed: {stderr}");
            }
        };
        Run {
            code: out.status.code().expect("exited normally"),
            stdout: String::from_utf8(out.stdout).unwrap(),
            stderr: String::from_utf8(out.stderr).unwrap(),
        }
    }

    /// Writes `content` to `name` in the node's directory (beside `etc/`).
    pub fn file(&self, name: &str, content: &str) -> PathBuf {
        let path = self.dir.path().join(name);
        fs::write(&path, content).unwrap();
        path
    }

    pub fn read(&self) -> String {
        fs::read_to_string(&self.config).unwrap()
    }

    pub fn backup(&self) -> PathBuf {
        let mut p = self.config.clone().into_os_string();
        p.push(".bak");
        p.into()
    }

    /// The restart-pending marker beside the config file.
    pub fn marker(&self) -> PathBuf {
        let mut p = self.config.clone().into_os_string();
        p.push(".restart-pending");
        p.into()
    }

    /// Installs a fake command that records its arguments and exits `code`.
    pub fn fake(&self, name: &str, code: i32) {
        let log = self.dir.path().join(format!("calls-{name}"));
        let script = format!(
            "#!/bin/sh\necho \"$*\" >> '{}'\nexit {code}\n",
            log.display()
        );
        let path = self.bin.join(name);
        fs::write(&path, script).unwrap();
        fs::set_permissions(&path, fs::Permissions::from_mode(0o755)).unwrap();
    }

    /// The argument lines a fake command was called with.
    pub fn calls(&self, name: &str) -> Vec<String> {
        fs::read_to_string(self.dir.path().join(format!("calls-{name}")))
            .map(|s| s.lines().map(str::to_string).collect())
            .unwrap_or_default()
    }

    pub fn snapshot(&self) -> Snapshot {
        let m = fs::metadata(&self.config).unwrap();
        let dir = self.config.parent().unwrap();
        let mut entries: Vec<String> = fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        entries.sort();
        Snapshot {
            bytes: fs::read(&self.config).unwrap(),
            mtime: (m.mtime(), m.mtime_nsec()),
            ino: m.ino(),
            mode: m.mode(),
            entries,
        }
    }
}

/// The lines joined with `\n`, with a final `\n`.
pub fn lines(lines: &[&str]) -> String {
    lines.iter().map(|l| format!("{l}\n")).collect()
}

/// `text` with exactly one occurrence of `from` replaced by `to`.
pub fn replace_once(text: &str, from: &str, to: &str) -> String {
    assert_eq!(text.matches(from).count(), 1, "{from:?} must occur once");
    text.replacen(from, to, 1)
}

/// A loopback port that refuses connections for as long as this lives: the
/// socket is bound but never listens, so no other test can take the port.
pub struct ClosedPort {
    _fd: std::os::fd::OwnedFd,
    pub port: u16,
}

impl ClosedPort {
    pub fn new() -> ClosedPort {
        use std::os::fd::FromRawFd;
        // SAFETY: plain socket calls on a descriptor this function owns; the
        // address structs are fully initialised and their sizes passed.
        unsafe {
            let fd = libc::socket(libc::AF_INET, libc::SOCK_STREAM, 0);
            assert!(fd >= 0, "socket: {}", std::io::Error::last_os_error());
            let owned = std::os::fd::OwnedFd::from_raw_fd(fd);
            let mut addr: libc::sockaddr_in = std::mem::zeroed();
            addr.sin_family = libc::AF_INET as libc::sa_family_t;
            addr.sin_addr.s_addr = u32::from(std::net::Ipv4Addr::LOCALHOST).to_be();
            let len = std::mem::size_of::<libc::sockaddr_in>() as libc::socklen_t;
            let rc = libc::bind(fd, (&raw const addr).cast(), len);
            assert_eq!(rc, 0, "bind: {}", std::io::Error::last_os_error());
            let mut len = len;
            let rc = libc::getsockname(fd, (&raw mut addr).cast(), &mut len);
            assert_eq!(rc, 0, "getsockname: {}", std::io::Error::last_os_error());
            ClosedPort {
                _fd: owned,
                port: u16::from_be(addr.sin_port),
            }
        }
    }
}
