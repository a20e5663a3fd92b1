//! `overlaybd-p2p`: switches overlaybd's P2P acceleration on and off by
//! editing `p2pConfig` in `/etc/overlaybd/overlaybd.json`, and reports
//! whether overlaybd would actually reach a healthy accelerator.
//!
//! The file is edited as text, not re-serialized: `scan` finds byte spans,
//! `layout` learns the file's whitespace, `edit` splices the few bytes that
//! change and checks the result, `file` writes it atomically, holding the
//! `lock` that serialises runs. `address` holds the rule that matters most
//! in practice: an address without a scheme makes overlaybd silently skip
//! the accelerator. `app` runs the
//! commands, `probe` does the status checks (with `tls` deciding what an
//! `https://` accelerator must present), `restart` restarts overlaybd and
//! `pending` remembers a restart still owed, `report` prints, and `exit`
//! names the exit statuses.

pub mod address;
pub mod app;
pub mod cli;
pub mod document;
pub mod edit;
pub mod exit;
pub mod file;
pub mod layout;
pub mod lock;
pub mod pending;
pub mod probe;
pub mod report;
pub mod restart;
pub mod scan;
pub mod tls;
