//! `dadi-p2p-admission`: a mutating webhook that points selected Pods at the node's P2P
//! endpoint, and the controller that keeps the P2P copies of their pull secrets.
//!
//! Request path: [`server`] (HTTPS, with [`tls`] reloading the certificate) → [`review`]
//! (AdmissionReview wire format) → [`webhook`] (the decision) → [`select`] (Pod and
//! [`namespaces`] labels) and [`mutate`] (JSONPatch and the [`p2p_config`] annotation) over
//! [`image`] (reference rewriting). [`secrets`] runs beside it and talks to the API server.
//! [`cli`] and [`config`] hold the flags and the settings both share; [`metrics`] the counters served at `/metrics`.

pub mod cli;
pub mod config;
pub mod image;
pub mod metrics;
pub mod mutate;
pub mod namespaces;
pub mod p2p_config;
pub mod review;
pub mod secrets;
pub mod select;
pub mod server;
pub mod tls;
pub mod webhook;
