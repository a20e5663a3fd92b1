mod common;
use common::*;
use dadi_p2p_integration::http;
use std::time::Instant;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scratch() {
    let world = World::new();
    let (d0, _) = world.layer(0);
    let (d1, _) = world.layer(1);
    for _ in 0..3 {
        let acc = world.start("cache:\n  pieceSize: 2097152\n");
        for d in [&d0, &d1] {
            let url = acc.accelerator_url(&world.blob_url(d));
            let (addr, path) = http::split_loopback_url(&url).unwrap();
            let mut conn = http::Conn::connect(addr).await.unwrap();
            let t = Instant::now();
            let p = conn.get(&path, &[("range", "bytes=0-0")]).await.unwrap();
            let t1 = t.elapsed();
            let t = Instant::now();
            let r = conn
                .get(&path, &[("range", "bytes=0-65535")])
                .await
                .unwrap();
            eprintln!(
                "probe {:?} {} read {:?} {}",
                t1,
                p.status,
                t.elapsed(),
                r.status
            );
        }
    }
}
