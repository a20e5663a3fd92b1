//! The RPM from scripts/package (Debian's rpmbuild): name and version, every file with its
//! mode, owner and config flag, and scriptlets that parse and create the account.

use std::collections::BTreeMap;
use std::process::Command;

use crate::common::{build_package, have, run, stdout, version};

#[test]
fn rpm_holds_every_file_with_its_mode() {
    if !have("rpmbuild", "the RPM build") {
        return;
    }
    let out = tempfile::tempdir().unwrap();
    let rpm = build_package("rpm", out.path());
    let q = |args: &[&str]| stdout(Command::new("rpm").arg("-qp").args(args).arg(&rpm));

    assert_eq!(
        q(&["--qf", "%{NAME} %{VERSION}-%{RELEASE}"]),
        format!("dadi-p2p {}-1", version())
    );
    let listed: Vec<String> = q(&["-l"]).lines().map(str::to_string).collect();
    // `--dump`: path size mtime digest mode owner group isconfig isdoc rdev symlink.
    let dump: BTreeMap<String, (String, String, String, String)> = q(&["--dump"])
        .lines()
        .map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            (
                f[0].to_string(),
                (
                    f[4].to_string(),
                    f[5].to_string(),
                    f[6].to_string(),
                    f[7].to_string(),
                ),
            )
        })
        .collect();
    let expect = [
        ("/usr/bin/dadi-p2p", "0100755", "root", "0"),
        ("/usr/bin/overlaybd-p2p", "0100755", "root", "0"),
        (
            "/usr/lib/systemd/system/dadi-p2p.service",
            "0100644",
            "root",
            "0",
        ),
        ("/etc/dadi-p2p", "040755", "root", "0"),
        ("/etc/dadi-p2p/config.yaml", "0100644", "root", "1"),
        ("/var/cache/dadi-p2p", "040750", "dadi-p2p", "0"),
        ("/var/log/dadi-p2p", "040750", "dadi-p2p", "0"),
        ("/usr/share/man/man8/dadi-p2p.8.gz", "0100644", "root", "0"),
        (
            "/usr/share/man/man8/overlaybd-p2p.8.gz",
            "0100644",
            "root",
            "0",
        ),
    ];
    assert_eq!(listed.len(), expect.len(), "{listed:?}");
    for (path, mode, owner, config) in expect {
        let (m, o, g, c) = dump
            .get(path)
            .unwrap_or_else(|| panic!("{path} missing: {listed:?}"));
        assert_eq!(
            (m.as_str(), o.as_str(), g.as_str(), c.as_str()),
            (mode, owner, owner, config),
            "{path}"
        );
    }
    let requires = q(&["--requires"]);
    assert!(requires.contains("libc.so.6"), "{requires}");

    // Each scriptlet is valid shell; the account exists before files are laid down.
    let scripts = q(&["--scripts"]);
    assert!(scripts.contains("useradd -r -g dadi-p2p"), "{scripts}");
    let mut parts = scripts.split("scriptlet (using /bin/sh):").skip(1);
    let mut count = 0;
    for body in parts.by_ref() {
        let body = body.rsplit_once('\n').map_or(body, |(b, _)| b);
        let check = tempfile::NamedTempFile::new().unwrap();
        std::fs::write(check.path(), body).unwrap();
        run(Command::new("sh").arg("-n").arg(check.path()));
        count += 1;
    }
    assert_eq!(count, 4, "pre, post, preun, postun:\n{scripts}");
}
