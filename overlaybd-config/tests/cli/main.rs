//! End-to-end tests of the built `overlaybd-p2p` binary, one test binary
//! with a module per concern.

mod edits;
mod generated;
mod refusals;
mod restart;
mod status;
mod support;
