//! End-to-end tests of the built `overlaybd-p2p` binary, one test binary
//! with a module per concern.

mod accelerator;
mod edits;
mod generated;
mod pki;
mod refusals;
mod restart;
mod status;
mod status_tls;
mod support;
