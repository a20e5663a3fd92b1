//! The registry mirror with the real client: Debian's containerd, given the daemon as a
//! mirror host in `hosts.toml`, fetches an image's blobs through it, and a second containerd
//! with an empty store gets them again from the daemon's cache.

mod common;

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use common::*;
use dadi_p2p_integration::ProcessGuard;

/// containerd on a socket in its own temp dir, beside any system one.
struct Containerd {
    _process: ProcessGuard,
    dir: tempfile::TempDir,
}

impl Containerd {
    fn start() -> Containerd {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path().display();
        let config = format!(
            "version = 2\nroot = \"{d}/root\"\nstate = \"{d}/state\"\n\
             [grpc]\n  address = \"{d}/containerd.sock\"\n\
             [plugins.\"io.containerd.grpc.v1.cri\"]\n  disable_tcp_service = true\n"
        );
        std::fs::write(dir.path().join("config.toml"), config).unwrap();
        let mut cmd = Command::new("containerd");
        cmd.arg("--config").arg(dir.path().join("config.toml"));
        let process = ProcessGuard::spawn("containerd", cmd, dir.path()).unwrap();
        let ctd = Containerd {
            _process: process,
            dir,
        };
        let deadline = std::time::Instant::now() + Duration::from_secs(30);
        while !ctd.ctr(&["version"]).status.success() {
            assert!(
                std::time::Instant::now() < deadline,
                "containerd did not start"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
        ctd
    }

    /// `ctr content fetch` through the hosts directory; the fetch must succeed.
    fn fetch(&self, hosts: &str, reference: &str) -> std::process::Output {
        let args = [
            "content",
            "fetch",
            "--plain-http",
            "--hosts-dir",
            hosts,
            reference,
        ];
        let out = self.ctr(&args);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(out.status.success(), "ctr content fetch failed: {stderr}");
        out
    }

    fn ctr(&self, args: &[&str]) -> std::process::Output {
        Command::new("ctr")
            .arg("-a")
            .arg(self.dir.path().join("containerd.sock"))
            .args(args)
            .output()
            .unwrap()
    }
}

/// A hosts directory that sends pulls of `registry` to `mirror` first.
fn hosts_dir(dir: &Path, registry: &str, mirror: &str) {
    let host_dir = dir.join(registry);
    std::fs::create_dir_all(&host_dir).unwrap();
    let toml = format!(
        "server = \"http://{registry}\"\n[host.\"{mirror}\"]\n  capabilities = [\"pull\"]\n"
    );
    std::fs::write(host_dir.join("hosts.toml"), toml).unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn containerd_pulls_blobs_through_the_mirror_and_then_from_its_cache() {
    let world = World::new();
    let registry = world.registry.host();
    let acc = world.start(&config(&format!(
        "mirror:\n  plainHttpHosts: [\"{registry}\"]\nreadAhead: 0\n"
    )));
    let ctd = Containerd::start();
    let hosts = tempfile::tempdir().unwrap();
    hosts_dir(hosts.path(), &registry, &acc.base_url());
    let reference = format!("{registry}/app:v1");
    let hosts_arg = hosts.path().to_str().unwrap();

    ctd.fetch(hosts_arg, &reference);
    let blobs: u64 =
        world.image.layers.iter().map(|l| l.size).sum::<u64>() + world.image.config.size;
    let served = metric(&acc, "DADIP2P_Count", &[("type", "pread")])
        .await
        .unwrap();
    assert_eq!(
        served, blobs as f64,
        "every layer and the config come through the mirror"
    );
    let downloaded = metric(&acc, "DADIP2P_Count", &[("type", "download")])
        .await
        .unwrap();
    assert_eq!(downloaded, blobs as f64);

    // A second containerd with an empty store: its fetch is answered from the daemon's cache.
    let ctd = Containerd::start();
    let out = ctd.fetch(hosts_arg, &reference);
    let served = metric(&acc, "DADIP2P_Count", &[("type", "pread")])
        .await
        .unwrap();
    assert_eq!(
        served,
        2.0 * blobs as f64,
        "ctr: {}\n{}\ndaemon: {}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr),
        acc.logs()
    );
    let downloaded = metric(&acc, "DADIP2P_Count", &[("type", "download")])
        .await
        .unwrap();
    assert_eq!(
        downloaded, blobs as f64,
        "the second pull needed nothing from the registry"
    );

    // containerd checked every blob against its digest: the bytes are the registry's.
    let mut digests: Vec<&str> = world
        .image
        .layers
        .iter()
        .map(|l| l.digest.as_str())
        .collect();
    digests.push(world.image.config.digest.as_str());
    let listed = ctd.ctr(&["content", "ls", "-q"]);
    let listed = String::from_utf8_lossy(&listed.stdout);
    for digest in digests {
        assert!(listed.contains(digest), "{digest} missing from containerd");
    }
}
