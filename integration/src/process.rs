//! A guard around one spawned child process, plus the free-port and readiness helpers.
//!
//! The child gets its own process group so that killing the group also ends whatever it forked
//! (nginx workers, for instance). Its stdout and stderr go to files in a directory the caller
//! owns, opened in append mode so that a restarted process keeps the earlier output. Drop kills
//! the group with SIGKILL and reaps the child; when the thread is panicking it first prints the
//! tail of both files, because that is the output a failing test needs. When the harness itself
//! is killed no destructor runs, so the child also gets Linux's parent-death signal (SIGKILL):
//! that signal fires when the *thread* that spawned the child ends, so start processes from a
//! thread that outlives them (a test's own thread, not a short-lived blocking-pool thread).
//!
//! Readiness is a blocking HTTP/1.0 probe over a plain `TcpStream` with short timeouts, polled
//! a bounded number of times, so it works from plain and async tests without a runtime.

use std::fs::{File, OpenOptions};
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::thread;
use std::time::{Duration, Instant};

use crate::{HarnessError, Result};

/// Pause between two readiness probes.
const PROBE_INTERVAL: Duration = Duration::from_millis(50);
/// Timeout of one probe's connect, write and read.
const PROBE_TIMEOUT: Duration = Duration::from_secs(2);
/// How much of each output file is shown in errors and on panic.
const LOG_TAIL_BYTES: u64 = 8 * 1024;
/// How long `terminate` waits after SIGTERM before it sends SIGKILL.
pub(crate) const TERMINATE_GRACE: Duration = Duration::from_secs(30);

/// Ports handed out by [`free_port`]: below Linux's default ephemeral range (32768 to
/// 60999), from which the kernel picks both `bind(:0)` ports and the source ports of
/// outgoing connections, so a port handed out here is not taken back by either meanwhile.
const FREE_PORTS: std::ops::Range<u16> = 20_000..32_000;
/// Ports tried before giving up.
const FREE_PORT_TRIES: usize = 200;

/// Lock files of the ports this process handed out, held until it exits.
static HELD_PORTS: std::sync::Mutex<Vec<File>> = std::sync::Mutex::new(Vec::new());

/// Returns a port on 127.0.0.1 that was free a moment ago and that no other process using
/// this function will hand out while this one runs.
///
/// Test processes run side by side, and each starts servers on ports it picked before the
/// server binds them: a lock file per port in the temp directory, held by the process that
/// picked it, keeps two of them from picking the same one. Another program may still take
/// the port before the caller binds it; that is rare enough that a start-up failure is the
/// right answer.
pub fn free_port() -> Result<u16> {
    use rand::{rngs::SmallRng, Rng, SeedableRng};
    use std::os::fd::AsRawFd;
    let dir = std::env::temp_dir().join("dadi-p2p-test-ports");
    std::fs::create_dir_all(&dir).map_err(|e| HarnessError::io("create port lock dir", e))?;
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    let seed = now.as_nanos() as u64 ^ (u64::from(std::process::id()) << 32);
    let mut rng = SmallRng::seed_from_u64(seed);
    for _ in 0..FREE_PORT_TRIES {
        let port = rng.random_range(FREE_PORTS);
        let lock = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(dir.join(port.to_string()))
            .map_err(|e| HarnessError::io("open port lock", e))?;
        // SAFETY: flock on a descriptor this function owns; no memory is involved.
        let locked = unsafe { libc::flock(lock.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) } == 0;
        if locked && TcpListener::bind(("127.0.0.1", port)).is_ok() {
            HELD_PORTS
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .push(lock);
            return Ok(port);
        }
    }
    Err(HarnessError::io(
        "find a free port",
        std::io::Error::new(
            std::io::ErrorKind::AddrInUse,
            format!("{FREE_PORT_TRIES} ports tried in {FREE_PORTS:?}"),
        ),
    ))
}

/// Polls `url` (plain http on loopback) until it answers 200, at most `timeout` long.
pub fn wait_ready(url: &str, timeout: Duration) -> Result<()> {
    poll_until_ready("endpoint", url, &[200], None, timeout, || Ok(()))
}

/// One running child process; killed and reaped on drop.
pub struct ProcessGuard {
    name: String,
    child: Child,
    stdout: PathBuf,
    stderr: PathBuf,
    reaped: Option<ExitStatus>,
}

impl ProcessGuard {
    /// Spawns `cmd` in a new process group, output appended to `<log_dir>/<name>.{out,err}`.
    pub fn spawn(name: &str, mut cmd: Command, log_dir: &Path) -> Result<Self> {
        let stdout = log_dir.join(format!("{name}.out"));
        let stderr = log_dir.join(format!("{name}.err"));
        let program = cmd.get_program().to_string_lossy().into_owned();
        cmd.stdin(Stdio::null())
            .stdout(append(&stdout)?)
            .stderr(append(&stderr)?)
            .process_group(0);
        // SAFETY: prctl is async-signal-safe and touches only the forked child.
        unsafe {
            cmd.pre_exec(|| {
                if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) == 0 {
                    Ok(())
                } else {
                    Err(std::io::Error::last_os_error())
                }
            });
        }
        let child = cmd
            .spawn()
            .map_err(|source| HarnessError::Spawn { program, source })?;
        tracing::debug!(name, pid = child.id(), "spawned");
        Ok(Self {
            name: name.to_owned(),
            child,
            stdout,
            stderr,
            reaped: None,
        })
    }

    /// The child's process id (also its process group id).
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// The name given at spawn, used in messages and log file names.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The tail of the child's stdout and stderr, for error messages.
    pub fn logs(&self) -> String {
        format!(
            "--- {} stdout ({})\n{}--- {} stderr ({})\n{}",
            self.name,
            self.stdout.display(),
            tail(&self.stdout),
            self.name,
            self.stderr.display(),
            tail(&self.stderr)
        )
    }

    /// Whether the child has exited, reaping it if so.
    pub fn try_wait(&mut self) -> Result<Option<ExitStatus>> {
        if let Some(status) = self.reaped {
            return Ok(Some(status));
        }
        let status = self
            .child
            .try_wait()
            .map_err(|e| HarnessError::io(format!("wait for {}", self.name), e))?;
        self.reaped = status;
        Ok(status)
    }

    /// Polls `url` until it answers one of `ok_statuses`; fails early if the child exits.
    pub fn wait_ready(
        &mut self,
        url: &str,
        ok_statuses: &[u16],
        authorization: Option<&str>,
        timeout: Duration,
    ) -> Result<()> {
        let name = self.name.clone();
        poll_until_ready(
            &name,
            url,
            ok_statuses,
            authorization,
            timeout,
            || match self.try_wait()? {
                Some(status) => Err(HarnessError::Exited {
                    name: self.name.clone(),
                    status,
                    logs: self.logs(),
                }),
                None => Ok(()),
            },
        )
        .map_err(|e| match e {
            HarnessError::NotReady {
                name,
                url,
                attempts,
                ..
            } => HarnessError::NotReady {
                name,
                url,
                attempts,
                logs: self.logs(),
            },
            other => other,
        })
    }

    /// Sends SIGKILL to the whole process group and reaps the child.
    pub fn kill(&mut self) -> ExitStatus {
        if let Some(status) = self.reaped {
            return status;
        }
        signal_group(self.pid(), libc::SIGKILL);
        let status = self.child.wait().unwrap_or_else(|_| killed_status());
        self.reaped = Some(status);
        status
    }

    /// Sends SIGTERM to the child, waits up to `grace`, then kills the group.
    ///
    /// Returns the exit status; a child that needed SIGKILL shows it in the status.
    pub fn terminate(&mut self, grace: Duration) -> Result<ExitStatus> {
        if let Some(status) = self.try_wait()? {
            return Ok(status);
        }
        // SAFETY: kill(2) with a pid we spawned and still own (not yet reaped).
        unsafe { libc::kill(self.pid() as libc::pid_t, libc::SIGTERM) };
        let deadline = Instant::now() + grace;
        while Instant::now() < deadline {
            if let Some(status) = self.try_wait()? {
                // Children the process left behind in its group go too.
                signal_group(self.pid(), libc::SIGKILL);
                return Ok(status);
            }
            thread::sleep(PROBE_INTERVAL);
        }
        tracing::warn!(name = %self.name, "no exit after SIGTERM, killing");
        Ok(self.kill())
    }
}

impl Drop for ProcessGuard {
    fn drop(&mut self) {
        if thread::panicking() {
            eprintln!("{}", self.logs());
        }
        self.kill();
    }
}

/// Runs a short command to completion; returns its stdout, or its stderr in the error.
pub(crate) fn run_command(mut cmd: Command, program: &str) -> Result<Vec<u8>> {
    let out = cmd.output().map_err(|source| HarnessError::Spawn {
        program: program.into(),
        source,
    })?;
    if out.status.success() {
        Ok(out.stdout)
    } else {
        Err(HarnessError::Command {
            program: program.into(),
            status: out.status,
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        })
    }
}

fn signal_group(pgid: u32, signal: libc::c_int) {
    // SAFETY: kill(2) on the negative process group id of a group we created; a group that is
    // already gone yields ESRCH, which is fine.
    unsafe { libc::kill(-(pgid as libc::pid_t), signal) };
}

fn killed_status() -> ExitStatus {
    use std::os::unix::process::ExitStatusExt;
    ExitStatus::from_raw(libc::SIGKILL)
}

fn append(path: &Path) -> Result<File> {
    OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .map_err(|e| HarnessError::io(format!("open {}", path.display()), e))
}

fn tail(path: &Path) -> String {
    let Ok(mut file) = File::open(path) else {
        return String::from("(missing)\n");
    };
    let len = file.metadata().map(|m| m.len()).unwrap_or(0);
    let start = len.saturating_sub(LOG_TAIL_BYTES);
    let mut buf = Vec::new();
    use std::io::Seek;
    if file.seek(std::io::SeekFrom::Start(start)).is_err() || file.read_to_end(&mut buf).is_err() {
        return String::from("(unreadable)\n");
    }
    let mut text = String::from_utf8_lossy(&buf).into_owned();
    if !text.ends_with('\n') {
        text.push('\n');
    }
    text
}

fn poll_until_ready(
    name: &str,
    url: &str,
    ok_statuses: &[u16],
    authorization: Option<&str>,
    timeout: Duration,
    mut still_alive: impl FnMut() -> Result<()>,
) -> Result<()> {
    let max_attempts = (timeout.as_millis() / PROBE_INTERVAL.as_millis()).max(1) as u32;
    let deadline = Instant::now() + timeout;
    let mut attempts = 0;
    while attempts < max_attempts && Instant::now() < deadline {
        attempts += 1;
        still_alive()?;
        if let Ok(status) = probe(url, authorization) {
            if ok_statuses.contains(&status) {
                return Ok(());
            }
        }
        thread::sleep(PROBE_INTERVAL);
    }
    Err(HarnessError::NotReady {
        name: name.to_owned(),
        url: url.to_owned(),
        attempts,
        logs: String::new(),
    })
}

/// One blocking HTTP/1.0 GET; returns the status code.
pub(crate) fn probe(url: &str, authorization: Option<&str>) -> Result<u16> {
    let (addr, path) = split_loopback_url(url)?;
    let err = |e: std::io::Error| HarnessError::http(url, e);
    let mut stream = TcpStream::connect_timeout(&addr, PROBE_TIMEOUT).map_err(err)?;
    stream.set_read_timeout(Some(PROBE_TIMEOUT)).map_err(err)?;
    stream.set_write_timeout(Some(PROBE_TIMEOUT)).map_err(err)?;
    let auth = authorization
        .map(|a| format!("Authorization: {a}\r\n"))
        .unwrap_or_default();
    write!(stream, "GET {path} HTTP/1.0\r\nHost: {addr}\r\n{auth}\r\n").map_err(err)?;
    let mut head = [0u8; 32];
    let mut filled = 0;
    while filled < 12 {
        let n = stream.read(&mut head[filled..]).map_err(err)?;
        if n == 0 {
            break;
        }
        filled += n;
    }
    let line = String::from_utf8_lossy(&head[..filled]);
    line.split(' ')
        .nth(1)
        .and_then(|code| code.parse().ok())
        .ok_or_else(|| HarnessError::http(url, format!("bad status line {line:?}")))
}

/// Splits `http://127.x.y.z:port/path` into a socket address and a path; refuses anything else.
pub fn split_loopback_url(url: &str) -> Result<(SocketAddr, String)> {
    let uri: http::Uri = url.parse().map_err(|e| HarnessError::http(url, e))?;
    if uri.scheme_str() != Some("http") {
        return Err(HarnessError::http(url, "only http:// is supported"));
    }
    let authority = uri
        .authority()
        .ok_or_else(|| HarnessError::http(url, "no host"))?;
    let addr: SocketAddr = authority
        .as_str()
        .parse()
        .map_err(|_| HarnessError::http(url, "host must be an IP:port"))?;
    if !addr.ip().is_loopback() {
        return Err(HarnessError::http(
            url,
            "only loopback addresses are allowed",
        ));
    }
    let path = uri
        .path_and_query()
        .map(|p| p.as_str().to_owned())
        .unwrap_or_else(|| "/".to_owned());
    Ok((addr, path))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn free_ports_are_handed_out_once_and_locked_against_other_takers() {
        let ports: Vec<u16> = (0..50).map(|_| free_port().unwrap()).collect();
        let mut unique = ports.clone();
        unique.sort_unstable();
        unique.dedup();
        assert_eq!(unique.len(), ports.len(), "{ports:?}");
        assert!(ports.iter().all(|p| FREE_PORTS.contains(p)));
        // Another taker (another open of the lock file) cannot lock a port handed out.
        use std::os::fd::AsRawFd;
        let path = std::env::temp_dir()
            .join("dadi-p2p-test-ports")
            .join(ports[0].to_string());
        let other = File::open(path).unwrap();
        // SAFETY: flock on a descriptor this test owns.
        let got = unsafe { libc::flock(other.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) };
        assert_ne!(got, 0, "a handed-out port's lock was free");
    }

    #[test]
    fn splits_loopback_urls_and_refuses_others() {
        let (addr, path) = split_loopback_url("http://127.0.0.1:8080/v2/?a=b").unwrap();
        assert_eq!(addr.port(), 8080);
        assert_eq!(path, "/v2/?a=b");
        assert!(split_loopback_url("http://10.0.0.1:80/").is_err());
        assert!(split_loopback_url("https://127.0.0.1:80/").is_err());
        assert!(split_loopback_url("http://localhost:80/").is_err());
    }

    #[test]
    fn guard_kills_its_process_group_on_drop() {
        let dir = tempfile::tempdir().unwrap();
        let mut cmd = Command::new("sh");
        cmd.args(["-c", "sleep 300 & echo $! > child.pid; wait"])
            .current_dir(dir.path());
        let guard = ProcessGuard::spawn("sleeper", cmd, dir.path()).unwrap();
        let pid_file = dir.path().join("child.pid");
        for _ in 0..200 {
            if std::fs::read_to_string(&pid_file).is_ok_and(|s| s.ends_with('\n')) {
                break;
            }
            thread::sleep(Duration::from_millis(10));
        }
        let grandchild: i32 = std::fs::read_to_string(&pid_file)
            .unwrap()
            .trim()
            .parse()
            .unwrap();
        drop(guard);
        // The grandchild is reaped by init shortly after SIGKILL; poll a bounded number of times.
        let mut gone = false;
        for _ in 0..200 {
            let state = std::fs::read_to_string(format!("/proc/{grandchild}/stat"));
            if state.map_or(true, |s| s.contains(") Z ")) {
                gone = true;
                break;
            }
            thread::sleep(Duration::from_millis(10));
        }
        assert!(gone, "grandchild {grandchild} survived the guard");
    }

    #[test]
    fn not_ready_error_names_the_url() {
        let port = free_port().unwrap();
        let url = format!("http://127.0.0.1:{port}/healthz");
        let err = wait_ready(&url, Duration::from_millis(120)).unwrap_err();
        assert!(matches!(err, HarnessError::NotReady { attempts, .. } if attempts <= 3));
        assert!(err.to_string().contains(&url));
    }
}
