//! Nodes sharing pieces, with real daemons on loopback in front of a real registry: each
//! daemon lists the same peer endpoints, every piece is fetched from the registry by its
//! owner only, and the others get it from that owner. The registry's own count of blob
//! bytes sent owes nothing to the daemons.

mod common;

use std::time::Duration;

use common::upstream::{Behaviour, HandUpstream};
use common::*;
use dadi_p2p::plan::{self, Member};
use dadi_p2p_integration::http::{self, range};
use dadi_p2p_integration::{free_port, Accelerator};

const TOKEN: &str = "peer-token-for-tests";

/// Request headers by name.
type Headers = Vec<(&'static str, String)>;

/// Daemons listing each other (and `extra` members) as peers, all with one token.
struct Cluster {
    nodes: Vec<Accelerator>,
    peer_ports: Vec<u16>,
    _dir: tempfile::TempDir,
}

impl Cluster {
    fn start(world: &World, n: usize, extra: &[String]) -> Cluster {
        Cluster::start_cut(world, n, extra, PIECE)
    }

    /// [`Cluster::start`] with pieces of `piece` bytes.
    fn start_cut(world: &World, n: usize, extra: &[String], piece: u64) -> Cluster {
        let dir = tempfile::tempdir().unwrap();
        let token = dir.path().join("token");
        std::fs::write(&token, format!("{TOKEN}\n")).unwrap();
        let peer_ports: Vec<u16> = (0..n).map(|_| free_port().unwrap()).collect();
        let mut members: Vec<String> = peer_ports
            .iter()
            .map(|p| format!("\"127.0.0.1:{p}\""))
            .collect();
        members.extend(extra.iter().map(|m| format!("\"{m}\"")));
        let nodes = peer_ports
            .iter()
            .map(|port| {
                world.start(&format!(
                    "cache:\n  capacity: {}\n  pieceSize: {piece}\nExporterConfig:\n  \
                     enable: true\n  standaloneExporterPort: false\nthrottleLimitMB: 0\n\
                     readAhead: 0\npeer:\n  listen: 127.0.0.1:{port}\n  members: [{}]\n  \
                     tokenFile: {}\n",
                    256 * MIB,
                    members.join(", "),
                    token.display()
                ))
            })
            .collect();
        Cluster {
            nodes,
            peer_ports,
            _dir: dir,
        }
    }

    /// The sum over the nodes of a `DADIP2P_Count` type.
    async fn count(&self, ty: &str) -> f64 {
        let mut sum = 0.0;
        for n in &self.nodes {
            assert!(downloads_settled(n, Duration::from_secs(10)).await);
            sum += metric(n, "DADIP2P_Count", &[("type", ty)]).await.unwrap();
        }
        sum
    }
}

/// Blob bytes the registry has sent, by its own metrics.
async fn registry_blob_bytes(world: &World) -> f64 {
    let url = format!("http://{}/metrics", world.registry.metrics_host());
    let text = String::from_utf8(http::get(&url, &[]).await.unwrap().body.to_vec()).unwrap();
    text.lines()
        .filter(|l| {
            l.starts_with("registry_http_response_size_bytes_sum{")
                && l.contains("handler=\"blob\"")
        })
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_piece_leaves_the_registry_once_for_the_whole_cluster() {
    let world = World::new();
    let cluster = Cluster::start(&world, 3, &[]);
    let (digest, bytes) = world.layer(0);
    let size = bytes.len() as f64;
    let before = registry_blob_bytes(&world).await;

    for node in &cluster.nodes {
        let url = node.accelerator_url(&world.blob_url(&digest));
        let whole = http::get(&url, &[]).await.unwrap();
        assert_eq!(whole.status, 200);
        assert!(
            whole.body[..] == bytes[..],
            "node {} served other bytes",
            node.port()
        );
    }

    // Each piece came from the registry once, to its owner; every node got the pieces it
    // does not own from their owners.
    assert_eq!(cluster.count("download").await, size);
    assert_eq!(cluster.count("peer").await, 2.0 * size);
    let mut from_peers = 0.0;
    for n in &cluster.nodes {
        let served = metric(n, "dadi_p2p_served_bytes_total", &[("source", "peer")]).await;
        from_peers += served.unwrap();
    }
    assert_eq!(
        from_peers,
        2.0 * size,
        "bytes served to readers that came from peers"
    );
    // The registry sent the blob once, plus a one-byte size answer to every node but the
    // first piece's owner when it was the first to read: its size request brought that
    // piece. An owner that had already fetched it for a peer asked for the size alone.
    let members: Vec<Member> = cluster
        .peer_ports
        .iter()
        .map(|p| Member::new(([127, 0, 0, 1], *p).into()))
        .collect();
    let first_owner = plan::owner(plan::piece_key(&digest.replace(':', "-"), 0), &members);
    let size_answers = if first_owner == Some(members[0].addr) {
        2.0
    } else {
        3.0
    };
    let sent = registry_blob_bytes(&world).await - before;
    assert_eq!(sent, size + size_answers);

    // A node that reads again has everything in its own cache.
    let node = &cluster.nodes[1];
    let url = node.accelerator_url(&world.blob_url(&digest));
    let again = http::get(&url, &[("range", &range(1000, 700_000))])
        .await
        .unwrap();
    assert!(again.body[..] == bytes[1000..=700_000]);
    assert_eq!(cluster.count("peer").await, 2.0 * size);
    // Bytes served to readers: each node's own readers only, not what went to peers.
    let mut served = 0.0;
    for n in &cluster.nodes {
        for source in ["cache", "peer", "origin"] {
            let bytes = metric(n, "dadi_p2p_served_bytes_total", &[("source", source)]).await;
            served += bytes.unwrap();
        }
    }
    assert_eq!(served, 3.0 * size + 699_001.0);
    let status = http::get(&format!("{}/status", node.base_url()), &[])
        .await
        .unwrap();
    let status: serde_json::Value = serde_json::from_slice(&status.body).unwrap();
    let peers = status["peers"].as_array().unwrap();
    assert_eq!(peers.len(), 2, "{status}");
    assert!(peers.iter().all(|p| p["up"] == true), "{status}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nodes_reading_at_once_still_take_each_piece_from_the_registry_once() {
    let world = World::new();
    let cluster = Cluster::start(&world, 3, &[]);
    let (digest, bytes) = world.layer(0);
    let size = bytes.len() as f64;
    let before = registry_blob_bytes(&world).await;
    let reads: Vec<_> = cluster
        .nodes
        .iter()
        .map(|node| {
            let url = node.accelerator_url(&world.blob_url(&digest));
            tokio::spawn(async move { http::get(&url, &[]).await.unwrap() })
        })
        .collect();
    for read in reads {
        let whole = read.await.unwrap();
        assert_eq!(whole.status, 200);
        assert!(whole.body[..] == bytes[..]);
    }
    assert_eq!(cluster.count("download").await, size);
    // One-byte size answers only: the first piece's owner asks for the size alone when a
    // peer's request started that piece first, else its size request brings the piece.
    let extra = registry_blob_bytes(&world).await - before - size;
    assert!(
        extra == 2.0 || extra == 3.0,
        "{extra} bytes beyond the blob"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_that_lists_only_roots_takes_every_piece_from_them() {
    let world = World::new();
    let roots = Cluster::start(&world, 2, &[]);
    // The agent lists the roots and not itself: it owns nothing and is never asked.
    let members: Vec<String> = roots
        .peer_ports
        .iter()
        .map(|p| format!("\"127.0.0.1:{p}\""))
        .collect();
    let agent = world.start(&config(&format!(
        "readAhead: 0\npeer:\n  listen: 127.0.0.1:{}\n  members: [{}]\n  tokenFile: {}\n",
        free_port().unwrap(),
        members.join(", "),
        roots._dir.path().join("token").display()
    )));
    let (digest, bytes) = world.layer(0);
    let whole = http::get(&agent.accelerator_url(&world.blob_url(&digest)), &[])
        .await
        .unwrap();
    assert!(whole.body[..] == bytes[..]);
    assert!(downloads_settled(&agent, Duration::from_secs(10)).await);
    let count = |ty: &'static str| {
        let agent = &agent;
        async move {
            metric(agent, "DADIP2P_Count", &[("type", ty)])
                .await
                .unwrap()
        }
    };
    assert_eq!(
        count("download").await,
        0.0,
        "the agent fetched from the origin"
    );
    assert_eq!(count("peer").await, bytes.len() as f64);
    assert_eq!(roots.count("download").await, bytes.len() as f64);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_peer_that_is_down_costs_an_origin_fetch_not_a_failed_read() {
    let world = World::new();
    // A member nothing listens on: the pieces it owns fail over to the origin.
    let gone = format!("127.0.0.1:{}", free_port().unwrap());
    let cluster = Cluster::start(&world, 2, std::slice::from_ref(&gone));
    let (digest, bytes) = world.layer(0);
    let node = &cluster.nodes[0];
    let url = node.accelerator_url(&world.blob_url(&digest));
    let whole = http::get(&url, &[]).await.unwrap();
    assert_eq!(whole.status, 200);
    assert!(whole.body[..] == bytes[..]);
    let status = http::get(&format!("{}/status", node.base_url()), &[])
        .await
        .unwrap();
    let status: serde_json::Value = serde_json::from_slice(&status.body).unwrap();
    let down: Vec<&serde_json::Value> = status["peers"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|p| p["up"] == false)
        .collect();
    assert_eq!(down.len(), 1, "{status}");
    assert_eq!(down[0]["address"], gone.as_str());
    // Every byte came once from the origin or a live peer.
    let moved = cluster.count("download").await + cluster.count("peer").await;
    assert!(moved >= bytes.len() as f64, "{moved}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_peer_port_refuses_what_a_peer_would_not_send() {
    let world = World::new();
    let cluster = Cluster::start(&world, 1, &[]);
    let (digest, bytes) = world.layer(0);
    let id = digest.replace(':', "-");
    let upstream = world.blob_url(&digest);
    let port = cluster.peer_ports[0];
    let ok: Headers = vec![
        ("x-dadi-peer-token", TOKEN.to_string()),
        ("x-dadi-upstream", upstream.clone()),
        ("x-dadi-blob-size", bytes.len().to_string()),
        ("x-dadi-piece-size", PIECE.to_string()),
    ];
    let ask = |path: String, headers: Headers| async move {
        let h: Vec<(&str, &str)> = headers.iter().map(|(k, v)| (*k, v.as_str())).collect();
        http::get(&format!("http://127.0.0.1:{port}{path}"), &h)
            .await
            .unwrap()
    };
    // The good headers with some changed; an empty value leaves the header out.
    let with = |changes: &[(&str, &str)]| -> Headers {
        ok.iter()
            .filter_map(|(k, v)| match changes.iter().find(|(ck, _)| ck == k) {
                Some((_, "")) => None,
                Some((_, changed)) => Some((*k, changed.to_string())),
                None => Some((*k, v.clone())),
            })
            .collect()
    };
    let good_path = format!("/peer/v1/pieces/{id}/1");

    let cases: Vec<(String, Headers, u16)> = vec![
        (good_path.clone(), with(&[("x-dadi-peer-token", "")]), 403),
        (
            good_path.clone(),
            with(&[("x-dadi-peer-token", "wrong")]),
            403,
        ),
        (format!("/peer/v1/pieces/{id}"), with(&[]), 400),
        (format!("/peer/v1/pieces/{id}/x"), with(&[]), 400),
        ("/elsewhere".into(), with(&[]), 404),
        ("/peer/v1/pieces/sha256-00/1".into(), with(&[]), 400),
        (
            good_path.clone(),
            with(&[("x-dadi-piece-size", "1048576")]),
            409,
        ),
        (good_path.clone(), with(&[("x-dadi-blob-size", "10")]), 409),
        (format!("/peer/v1/pieces/{id}/99"), with(&[]), 409),
        (
            good_path.clone(),
            with(&[(
                "x-dadi-upstream",
                "http://169.254.169.254/v2/x/blobs/sha256:00",
            )]),
            403,
        ),
    ];
    for (path, headers, status) in cases {
        let r = ask(path.clone(), headers).await;
        assert_eq!(
            r.status,
            status,
            "{path}: {}",
            String::from_utf8_lossy(&r.body)
        );
    }

    // Asked properly, the piece comes whole.
    let r = ask(good_path, with(&[])).await;
    assert_eq!(r.status, 200);
    assert!(r.body[..] == bytes[PIECE as usize..2 * PIECE as usize]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_owner_passes_a_piece_on_while_it_arrives_from_the_origin() {
    let world = World::new();
    // Pieces large enough that the owner writes each in several steps.
    let piece = MIB;
    let cluster = Cluster::start_cut(&world, 2, &[], piece);
    let data = std::sync::Arc::new(blob_bytes(16 * piece as usize, 53));
    // Every answer stops after its first 300 KiB until the test lets it go on.
    let gate = std::sync::Arc::new(tokio::sync::Semaphore::new(0));
    let upstream = HandUpstream::start(Behaviour::Hold {
        data: data.clone(),
        first: 300 * 1024,
        gate: gate.clone(),
    })
    .await;
    let blob = upstream.url("/layer.bin");
    let id =
        dadi_p2p::cache::BlobId::new(&dadi_p2p::target::Target::parse(&blob).unwrap().key.name())
            .unwrap();
    let members: Vec<Member> = cluster
        .peer_ports
        .iter()
        .map(|p| Member::new(([127, 0, 0, 1], *p).into()))
        .collect();
    let owned_by_second = (1..16)
        .find(|i| plan::owner(plan::piece_key(id.as_str(), *i), &members) == Some(members[1].addr))
        .expect("the second node owns one of 15 pieces");

    // The first node asks the second, which is still getting the piece from the origin:
    // the start of the piece reaches the reader before the rest exists anywhere.
    let reader = &cluster.nodes[0];
    let start = owned_by_second * piece;
    let r = http::get(
        &reader.accelerator_url(&blob),
        &[("range", &range(start, start + 999))],
    )
    .await
    .unwrap();
    assert_eq!(r.status, 206);
    assert!(r.body[..] == data[start as usize..start as usize + 1000]);
    gate.add_permits(64);
    for n in &cluster.nodes {
        assert!(downloads_settled(n, Duration::from_secs(10)).await);
    }
    assert_eq!(
        metric(reader, "DADIP2P_Count", &[("type", "peer")]).await,
        Some(piece as f64),
        "the piece came from its owner"
    );
}
