//! Named exit statuses, so a configuration-management run can tell a bad
//! address from a broken file from a failed restart without parsing text.
//!
//! The numbers are part of the interface: they are listed in `--help` and in
//! the crate README, and only ever added to, never renumbered. 2 is the
//! argument parser's code for usage errors; a flag value that parses but
//! cannot be used (an unreadable `--cacert`) is reported with it too.

use serde::Serialize;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Exit {
    /// Done, or nothing to do; for `status`: P2P off, or on and working.
    Ok = 0,
    /// Any other failure, e.g. the file cannot be read.
    Failure = 1,
    /// Unknown command or flag or a bad flag value such as `--timeout 0`
    /// (reported by the argument parser), or a `--cacert` file that cannot
    /// be read or holds no usable certificate.
    Usage = 2,
    /// `--address` is not a usable accelerator address.
    InvalidAddress = 3,
    /// The file does not exist and `--create` was not given.
    ConfigMissing = 4,
    /// Malformed JSON, top level not an object, p2pConfig not an object,
    /// duplicate owned keys, or not UTF-8.
    ConfigInvalid = 5,
    /// The file or its directory cannot be written.
    NotWritable = 6,
    /// Writing failed midway or the file changed meanwhile; file unchanged.
    WriteFailed = 7,
    /// overlaybd could not be restarted after a write, or when retrying a
    /// pending restart; the restart stays pending.
    RestartFailed = 8,
    /// `status`: P2P is on but overlaybd would not get a healthy accelerator.
    AcceleratorUnavailable = 9,
    /// Another process held the directory lock for longer than a run waits;
    /// file unchanged.
    Locked = 10,
    /// The new file is in place but syncing its directory failed, so it may
    /// not survive a crash; overlaybd was not restarted.
    NotDurable = 11,
}

impl Exit {
    pub fn code(self) -> i32 {
        self as i32
    }
}

/// The table shown after `--help`.
pub const HELP_TABLE: &str = "\
Exit status:
  0  done, or nothing to change; status: P2P off, or on and healthy
  1  other failure (e.g. the file cannot be read)
  2  usage error (unknown command or flag, --timeout not 1-3600, unusable --cacert)
  3  invalid --address (needs http:// or https://, numeric port)
  4  config file missing (pass --create)
  5  config file invalid (malformed JSON, not an object, duplicate keys)
  6  config file not writable (read-only mode, filesystem or permissions)
  7  write failed; the file is unchanged
  8  restart of overlaybd failed (after a write or a pending one); still pending
  9  status: P2P on but the accelerator is unreachable or unhealthy (TLS included)
 10  another process held the lock on the config's directory too long; file unchanged
 11  file updated but not confirmed on disk (directory sync failed); not restarted";

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn help_table_lists_every_code_once_in_order() {
        let all = [
            Exit::Ok,
            Exit::Failure,
            Exit::Usage,
            Exit::InvalidAddress,
            Exit::ConfigMissing,
            Exit::ConfigInvalid,
            Exit::NotWritable,
            Exit::WriteFailed,
            Exit::RestartFailed,
            Exit::AcceleratorUnavailable,
            Exit::Locked,
            Exit::NotDurable,
        ];
        let listed: Vec<i32> = HELP_TABLE
            .lines()
            .skip(1)
            .map(|l| l.split_whitespace().next().unwrap().parse().unwrap())
            .collect();
        let codes: Vec<i32> = all.iter().map(|e| e.code()).collect();
        assert_eq!(listed, codes);
        assert_eq!(codes, (0..12).collect::<Vec<_>>());
    }
}
