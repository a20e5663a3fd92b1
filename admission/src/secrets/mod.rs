//! P2P copies of image pull secrets: `acr-credential-<name>-p2p` beside each original.
//!
//! [`dockerconfig`] rewrites registry hosts in the credential document, [`copy`] decides the
//! copy's content and what to do with an existing one (pure), [`requests`] carries the
//! webhook's requests, and [`controller`] applies those decisions through the API server and
//! follows changes to the originals.

pub mod controller;
pub mod copy;
pub mod dockerconfig;
pub mod requests;

/// Label on every copy this binary manages; copies without it are the user's own.
pub const MANAGED_BY_KEY: &str = "app.kubernetes.io/managed-by";
/// Value of [`MANAGED_BY_KEY`].
pub const MANAGED_BY_VALUE: &str = "dadi-p2p-admission";

/// Secret types that carry registry credentials.
pub const DOCKER_CONFIG_JSON: &str = "kubernetes.io/dockerconfigjson";
pub const DOCKER_CFG: &str = "kubernetes.io/dockercfg";
