//! The shipped packaging under packaging/: the default config starts the real daemon, the DEB
//! and RPM built by scripts/package hold every file with its mode, the maintainer scripts do
//! what they say, the systemd unit verifies, the Kubernetes manifests are valid typed objects
//! that agree with each other, with the peer protocol off (as shipped) and on, and the Helm
//! chart renders the same objects.
//!
//! Packages are built from the debug binaries cargo built for the tests (`target/debug`), never
//! with a release build here. Tools a developer may lack (`rpmbuild`, `lintian`,
//! `systemd-analyze`) are skipped with a printed note; scripts/deps installs them.

mod common;
mod config;
mod deb;
mod helm;
mod kubernetes;
mod peers;
mod rpm;
mod systemd;
