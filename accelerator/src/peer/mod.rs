//! Sharing pieces between nodes: who the peers are, which of them owns a piece, and the
//! protocol on `p2pPort` that moves a piece from its owner to a node that lacks it.
//!
//! Every node lists the same members (`peer.members`: addresses, or names such as a
//! headless Service's that resolve to every node, re-resolved every `peer.refreshSecs`).
//! `plan::owner` picks one owner per piece from that list; a node asks the owner for a
//! piece it lacks, and the owner answers from its cache or fetches the piece from the
//! origin first, once for all the nodes that ask. A request that came from a peer is never
//! passed to a third node, so a piece travels at most one hop between nodes and a
//! disagreement about the member list costs an extra origin fetch, never a loop.
//!
//! A peer that fails a request is left out of placement for `peer.downSecs`, so its pieces
//! go to the member that scores next; the reader that saw the failure gets the rest of its
//! piece from the origin. Every peer request carries the token from `peer.tokenFile`:
//! the peer port fetches from upstreams on a caller's behalf, and must not be an open proxy
//! to anyone who can reach it.
//!
//! Not yet: pieces received from a peer are checked only by the whole blob's sha256 (for
//! digest-keyed blobs) once every piece is cached; a peer holding the token is trusted to
//! send the bytes it was asked for.

pub mod client;
pub mod server;

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use http::HeaderValue;

use crate::cache::BlobId;
use crate::plan::{self, Member};
use crate::telemetry::PeerStatus;

/// Path prefix of the piece endpoint: `/peer/v1/pieces/<blob id>/<piece index>`.
pub const PIECES_PATH: &str = "/peer/v1/pieces/";
/// Longest wait for one member name to resolve.
const RESOLVE_TIMEOUT: Duration = Duration::from_secs(5);
/// The shared token.
pub const TOKEN_HEADER: &str = "x-dadi-peer-token";
/// The blob's upstream URL, for an owner that must fetch the piece from the origin.
pub const UPSTREAM_HEADER: &str = "x-dadi-upstream";
/// The blob's size as the asking node knows it.
pub const BLOB_SIZE_HEADER: &str = "x-dadi-blob-size";
/// The asking node's piece size: both nodes must cut blobs alike.
pub const PIECE_SIZE_HEADER: &str = "x-dadi-piece-size";

/// The members, this node's own addresses among them, and which members are left out.
pub struct Peers {
    configured: Vec<String>,
    members: RwLock<Arc<Vec<Member>>>,
    own: Vec<SocketAddr>,
    down: Mutex<HashMap<SocketAddr, Instant>>,
    down_for: Duration,
    token: Vec<u8>,
    traffic: Mutex<HashMap<IpAddr, Arc<Traffic>>>,
    pub client: client::PeerClient,
}

/// Bytes moved with one peer.
#[derive(Default)]
pub struct Traffic {
    pub received: AtomicU64,
    pub sent: AtomicU64,
}

impl Peers {
    /// `own` are the addresses other nodes reach this node's peer listener at.
    pub fn new(
        configured: Vec<String>,
        own: Vec<SocketAddr>,
        token: HeaderValue,
        down_for: Duration,
        read_timeout: Duration,
    ) -> Peers {
        Peers {
            configured,
            members: RwLock::new(Arc::new(Vec::new())),
            own,
            down: Mutex::new(HashMap::new()),
            down_for,
            client: client::PeerClient::new(token.clone(), read_timeout),
            token: token.as_bytes().to_vec(),
            traffic: Mutex::new(HashMap::new()),
        }
    }

    /// Resolves the configured members again; a name that does not resolve now keeps no
    /// addresses until it does, and a resolution that finds nobody keeps the last list.
    pub async fn refresh(&self) {
        let mut found: Vec<SocketAddr> = Vec::new();
        for entry in &self.configured {
            let lookup = tokio::net::lookup_host(entry.as_str());
            match tokio::time::timeout(RESOLVE_TIMEOUT, lookup).await {
                Ok(Ok(addrs)) => found.extend(addrs),
                Ok(Err(e)) => tracing::warn!(member = %entry, error = %e, "cannot resolve peer"),
                Err(_) => tracing::warn!(member = %entry, "peer name lookup timed out"),
            }
        }
        found.sort();
        found.dedup();
        if found.is_empty() {
            return;
        }
        let members: Vec<Member> = found.into_iter().map(Member::new).collect();
        let mut current = self.members.write().unwrap_or_else(|e| e.into_inner());
        if current.len() != members.len() || **current != members {
            tracing::info!(members = members.len(), "peer list updated");
            *current = Arc::new(members);
        }
    }

    /// The other node that owns piece `index` of `blob`; `None` when this node owns it or
    /// there are no peers to ask.
    pub fn owner(&self, blob: &BlobId, index: u64) -> Option<SocketAddr> {
        let members = self
            .members
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone();
        if members.is_empty() {
            return None;
        }
        let now = Instant::now();
        let alive: Vec<Member> = {
            let down = self.down.lock().unwrap_or_else(|e| e.into_inner());
            members
                .iter()
                .filter(|m| down.get(&m.addr).is_none_or(|until| *until <= now))
                .copied()
                .collect()
        };
        let owner = plan::owner(plan::piece_key(blob.as_str(), index), &alive)?;
        (!self.own.contains(&owner)).then_some(owner)
    }

    /// Leaves `peer` out of placement for a while after it failed a request.
    pub fn failed(&self, peer: SocketAddr) {
        let until = Instant::now() + self.down_for;
        self.down
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(peer, until);
    }

    /// Whether `token` is the shared one, compared in constant time.
    pub fn token_matches(&self, token: &[u8]) -> bool {
        let want = self.token.as_slice();
        want.len() == token.len()
            && want
                .iter()
                .zip(token)
                .fold(0u8, |acc, (a, b)| acc | (a ^ b))
                == 0
    }

    /// The byte counters kept for the peer at `ip`.
    pub fn traffic(&self, ip: IpAddr) -> Arc<Traffic> {
        let mut t = self.traffic.lock().unwrap_or_else(|e| e.into_inner());
        t.entry(ip.to_canonical()).or_default().clone()
    }

    /// The members other than this node, with the bytes moved with each, for `/status`.
    pub fn status(&self) -> Vec<PeerStatus> {
        let members = self
            .members
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone();
        let now = Instant::now();
        let down = self.down.lock().unwrap_or_else(|e| e.into_inner()).clone();
        members
            .iter()
            .filter(|m| !self.own.contains(&m.addr))
            .map(|m| {
                let t = self.traffic(m.addr.ip());
                PeerStatus {
                    address: m.addr.to_string(),
                    bytes_received: t.received.load(Ordering::Relaxed),
                    bytes_sent: t.sent.load(Ordering::Relaxed),
                    up: down.get(&m.addr).is_none_or(|until| *until <= now),
                }
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn peers(own: &str) -> Peers {
        let configured = vec![
            "127.0.0.1:7001".to_string(),
            "127.0.0.1:7002".to_string(),
            "127.0.0.1:7003".to_string(),
        ];
        Peers::new(
            configured,
            vec![own.parse().unwrap()],
            HeaderValue::from_static("t0ken"),
            Duration::from_secs(60),
            Duration::from_secs(5),
        )
    }

    #[tokio::test]
    async fn own_pieces_have_no_owner_and_a_failed_peer_is_left_out() {
        let p = peers("127.0.0.1:7001");
        let blob = BlobId::new("sha256-aa").unwrap();
        assert_eq!(p.owner(&blob, 0), None, "no members until resolved");
        p.refresh().await;
        let owners: Vec<Option<SocketAddr>> = (0..60).map(|i| p.owner(&blob, i)).collect();
        assert!(
            owners.iter().any(Option::is_none),
            "this node owns some pieces"
        );
        let other: SocketAddr = "127.0.0.1:7002".parse().unwrap();
        assert!(owners.contains(&Some(other)));

        p.failed(other);
        for i in 0..60 {
            assert_ne!(p.owner(&blob, i), Some(other));
            if owners[i as usize] != Some(other) {
                assert_eq!(
                    p.owner(&blob, i),
                    owners[i as usize],
                    "only its pieces move"
                );
            }
        }
        let status = p.status();
        assert_eq!(status.len(), 2);
        assert!(status
            .iter()
            .any(|s| s.address == "127.0.0.1:7002" && !s.up));
    }

    #[test]
    fn the_token_must_match_exactly() {
        let p = peers("127.0.0.1:7001");
        assert!(p.token_matches(b"t0ken"));
        assert!(!p.token_matches(b"t0ke"));
        assert!(!p.token_matches(b"t0kem"));
        assert!(!p.token_matches(b""));
    }
}
