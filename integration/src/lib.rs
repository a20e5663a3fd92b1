//! Harness that starts real processes for tests and benchmarks.
