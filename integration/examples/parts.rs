//! Starts a registry holding one random blob, nginx as redirecting front and as caching
//! proxy, prints their URLs, and keeps them up for the given number of seconds (default 60)
//! so that a person can poke at them with curl. Everything stops when the time is up.
//!
//! `cargo run -p dadi-p2p-integration --example parts -- 120 [blob bytes]`

use std::time::Duration;

use dadi_p2p_integration::{build_image, Compression, LayerSpec, Nginx, Registry};

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let seconds: u64 = args.next().map_or(Ok(60), |s| s.parse())?;
    let size: u64 = args.next().map_or(Ok(64 << 20), |s| s.parse())?;
    let registry = Registry::start()?;
    let layout = tempfile::Builder::new().prefix("dadi-layout-").tempdir()?;
    let layer = LayerSpec {
        size,
        seed: 7,
        compression: Compression::None,
    };
    let image = build_image(layout.path(), "v1", &[layer])?;
    registry.push_image(&image, "demo")?;
    let digest = &image.layers[0].digest;
    let front = Nginx::redirecting_front(&registry)?;
    let cache = Nginx::caching_proxy(&registry, 2 * size + (64 << 20))?;
    println!("registry  {}", registry.blob_url("demo", digest));
    println!("front     {}", front.blob_url("demo", digest));
    println!("cache     {}", cache.blob_url("demo", digest));
    println!("storage   {}", registry.storage_root().display());
    println!("up for {seconds} s");
    tokio::time::sleep(Duration::from_secs(seconds)).await;
    Ok(())
}
