//! The audit file under rotation: a daemon with `logAuditMaxMb: 1` and `logAuditKeep: 2`
//! serves thousands of small warm reads, and what it leaves in `logDir` is checked file by
//! file and line by line, then accounted for against the requests made.
//!
//! Each warm read asks for [`READ_LEN`] bytes at its own offset inside the cached first
//! piece, so it leaves exactly two lines, a `fileread` and an `http:pread`, both carrying
//! that offset: a line names its request, and a line lost or written twice shows.
//!
//! The reads come in two rounds. The first writes about 2.5 MiB: two rotations and nothing
//! deleted yet, so every line is in the three files or counted as dropped. The second
//! writes about 1 MiB more, which must push the oldest file(s) of the first round out as
//! whole files; the lines they held, known from the first round, are the ones rotated away.
//! Neither round can lose its own lines to rotation: the second is well under the two
//! files' worth it would take.

use std::collections::HashSet;
use std::path::Path;

use dadi_p2p_integration::http::{self, Conn};

use super::audit::parse_audit;
use super::*;

/// `logAuditMaxMb: 1`.
const LIMIT: u64 = MIB;
const KEEP: usize = 2;
/// Bytes asked for by each warm read: the work is the request and its two lines.
const READ_LEN: u64 = 16;
/// Keep-alive connections the reads are spread over.
const CONNS: u64 = 4;
/// Audit bytes the rounds aim at. The first must land between two and three files' worth,
/// the two together above three; the margins (0.5 MiB) are far wider than the few bytes by
/// which a line may differ from the measured one.
const ROUND_ONE: u64 = 5 * MIB / 2;
const ROUND_TWO: u64 = MIB;
const DROPPED: &str = "dadi_p2p_audit_lines_dropped_total";
/// Longest wait for the writer to have flushed what it was handed.
const FLUSHED: Duration = Duration::from_secs(30);

/// The names the daemon uses, oldest first.
fn names() -> Vec<String> {
    let mut v: Vec<String> = (1..=KEEP).rev().map(|n| format!("audit.log.{n}")).collect();
    v.push("audit.log".into());
    v
}

/// The complete lines of every audit file present, oldest file first. Read in that order, a
/// rotation in between can make a line missed but never seen twice, so a count taken while
/// the writer runs is never above the truth.
fn complete_lines(dir: &Path) -> Vec<String> {
    let mut out = Vec::new();
    for name in names() {
        let text = std::fs::read_to_string(dir.join(name)).unwrap_or_default();
        let whole = text.split_inclusive('\n').filter(|l| l.ends_with('\n'));
        out.extend(whole.map(|l| l.trim_end().to_string()));
    }
    out
}

/// `(op, offset)` of the warm-read lines among `lines` whose offset is in `ids`; lines out of
/// shape (a partial last line while polling) are skipped here and failed by [`AuditDir`].
fn warm_keys(lines: &[String], ids: &std::ops::Range<u64>) -> Vec<(String, u64)> {
    let shape = regex::Regex::new(dadi_p2p::telemetry::AUDIT_LINE_PATTERN).unwrap();
    lines
        .iter()
        .filter_map(|l| shape.captures(l))
        .filter(|c| c["size"].parse() == Ok(READ_LEN))
        .filter_map(|c| {
            let offset: u64 = c["offset"].parse().ok()?;
            ids.contains(&offset).then(|| (c["op"].to_string(), offset))
        })
        .collect()
}

/// The audit files once the writer is idle, each checked: the only files in the directory
/// are the daemon's names, none over the limit, every line whole and in the strict shape,
/// and a rotated file full up to the first line of the next one.
struct AuditDir {
    /// `(name, lines)`, oldest first.
    files: Vec<(String, Vec<String>)>,
}

impl AuditDir {
    fn read(dir: &Path) -> AuditDir {
        let mut present: Vec<String> = std::fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        present.sort();
        let mut want = names();
        want.sort();
        assert_eq!(present, want, "files in the log directory");
        let mut files = Vec::new();
        let mut sizes = Vec::new();
        for name in names() {
            let text = std::fs::read_to_string(dir.join(&name)).unwrap();
            assert!(text.len() as u64 <= LIMIT, "{name} is {} bytes", text.len());
            assert!(text.ends_with('\n'), "{name} ends inside a line");
            // Panics on any line out of the strict shape.
            parse_audit(&text);
            sizes.push(text.len());
            files.push((name, text.lines().map(str::to_string).collect::<Vec<_>>()));
        }
        for (i, pair) in files.windows(2).enumerate() {
            let first = pair[1].1.first().expect("a newer file has a line");
            assert!(
                sizes[i] + first.len() + 1 > LIMIT as usize,
                "{} rotated at {} bytes though {first:?} fitted",
                pair[0].0,
                sizes[i]
            );
        }
        AuditDir { files }
    }

    /// The lines of the files from the `from`-th oldest on.
    fn lines_from(&self, from: usize) -> Vec<String> {
        self.files[from..]
            .iter()
            .flat_map(|f| f.1.clone())
            .collect()
    }
}

/// Issues warm reads `ids` of `READ_LEN` bytes at offset `id`, over [`CONNS`] keep-alive
/// connections, checking every body against the blob.
async fn warm_reads(acc: &Accelerator, url: &str, blob: &[u8], ids: std::ops::Range<u64>) {
    let (addr, path) = http::split_loopback_url(&acc.accelerator_url(url)).unwrap();
    let conns = (0..CONNS).map(|c| {
        let path = path.clone();
        let ids = ids.clone();
        async move {
            let mut conn = Conn::connect(addr).await.unwrap();
            for id in ids.skip(c as usize).step_by(CONNS as usize) {
                let range = http::range(id, id + READ_LEN - 1);
                let resp = conn.get(&path, &[("Range", &range)]).await.unwrap();
                assert_eq!(resp.status, 206, "{range}");
                let want = &blob[id as usize..(id + READ_LEN) as usize];
                assert!(resp.body == want, "bytes {range} differ");
            }
        }
    });
    futures_util::future::join_all(conns).await;
}

/// The drop counter, which only ever grows.
async fn dropped(acc: &Accelerator) -> u64 {
    metric(acc, DROPPED, &[]).await.expect(DROPPED) as u64
}

/// Waits until every line of warm reads `ids` is in the files or counted in `dropped`.
async fn flushed(dir: &Path, ids: &std::ops::Range<u64>, dropped: u64) {
    let want = 2 * (ids.end - ids.start);
    let mut seen = 0;
    let done = eventually(FLUSHED, || {
        seen = warm_keys(&complete_lines(dir), ids).len() as u64;
        std::future::ready(seen + dropped >= want)
    })
    .await;
    assert!(done, "{seen} lines written and {dropped} dropped of {want}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn audit_file_rotates_by_size_keeps_two_and_accounts_for_every_line() {
    let world = World::new();
    let (digest, blob) = world.layer(0);
    let url = world.blob_url(&digest);
    let log_dir = tempfile::tempdir().unwrap();
    let dir = log_dir.path();
    let deploy = format!(
        "DeployConfig:\n  logAudit: true\n  logAuditMode: file\n  logDir: {}\n  \
         logAuditMaxMb: 1\n  logAuditKeep: {KEEP}\n",
        dir.display()
    );
    let yaml = obs_config("  enable: true\n  standaloneExporterPort: false\n", &deploy);
    let acc = world.start(&yaml);

    // The cold read caches the first piece; its lines come first in the first file. The
    // read can end just before its piece is committed, and the piece's `filewrite` line
    // comes with the commit.
    read_range(&acc, &url, 0, PIECE - 1).await;
    let is_pread = |l: &String| l.contains("|http:pread[");
    let cold_done = || {
        let lines = complete_lines(dir);
        let written = lines.iter().any(|l| l.contains("|filewrite["));
        std::future::ready(written && lines.iter().any(is_pread))
    };
    assert!(
        eventually(FLUSHED, cold_done).await,
        "the cold read's lines"
    );
    let setup = complete_lines(dir);
    let setup_dropped = dropped(&acc).await;
    // Measured here: 212 bytes for an `http:pread` line and 208 for a `fileread` with a
    // five-digit registry port, so 6,212 reads for the first round and 2,485 for the second.
    // A warm line differs from these by a few digits of offset, size and latency.
    let fileread = setup.iter().find(|l| l.contains("|fileread[")).unwrap();
    let per_read = (setup.iter().find(|l| is_pread(l)).unwrap().len() + fileread.len() + 2) as u64;
    let one = 0..ROUND_ONE.div_ceil(per_read);
    let two = one.end..one.end + ROUND_TWO.div_ceil(per_read);
    assert!(
        two.end + READ_LEN <= PIECE,
        "every read stays in the cached piece"
    );

    warm_reads(&acc, &url, &blob, one.clone()).await;
    let dropped_one = dropped(&acc).await - setup_dropped;
    flushed(dir, &one, dropped_one).await;
    let first = AuditDir::read(dir);
    let lines = first.lines_from(0);
    assert_eq!(
        lines[..setup.len()],
        setup[..],
        "the cold read's lines lead"
    );
    let keys = warm_keys(&lines, &one);
    assert_each_once(&keys);
    assert_eq!(
        lines.len(),
        setup.len() + keys.len(),
        "only the reads' lines"
    );
    assert_eq!(
        keys.len() as u64 + dropped_one,
        2 * one.end,
        "nothing rotated away yet"
    );

    warm_reads(&acc, &url, &blob, two.clone()).await;
    let dropped_all = dropped(&acc).await - setup_dropped;
    flushed(dir, &two, dropped_all - dropped_one).await;
    let now = AuditDir::read(dir).lines_from(0);
    // Rotation deleted whole files, oldest first: what is left of the first round leads.
    let gone = (1..=KEEP)
        .find(|&k| now.starts_with(&first.lines_from(k)))
        .expect("the oldest files of the first round were rotated away");
    let rotated = &lines[..lines.len() - first.lines_from(gone).len()];
    let all = 0..two.end;
    let rotated_keys = warm_keys(rotated, &all);
    assert_eq!(
        rotated.len() - rotated_keys.len(),
        setup.len(),
        "the cold read's lines went first"
    );
    let mut keys = warm_keys(&now, &all);
    keys.extend(rotated_keys);
    assert_each_once(&keys);
    // Every line the reads made is in a kept file, in a rotated-away one, or dropped.
    assert_eq!(
        (now.len() + rotated.len()) as u64 + dropped_all,
        setup.len() as u64 + 2 * two.end,
        "{} kept, {} rotated away, {dropped_all} dropped",
        now.len(),
        rotated.len()
    );
    let preads = keys.iter().filter(|k| k.0 == "http:pread").count() as u64;
    assert!(preads <= two.end && two.end <= preads + dropped_all);
}

fn assert_each_once(keys: &[(String, u64)]) {
    let unique: HashSet<_> = keys.iter().collect();
    assert_eq!(unique.len(), keys.len(), "a line written twice");
}
