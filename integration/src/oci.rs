//! OCI image layouts generated from seeded random data, and two ways into a registry: `skopeo
//! copy` (the real client path, manifest included) and a direct monolithic blob upload
//! (`POST` then one `PUT`), which is what the benchmark uses for its 1 GiB blob.
//!
//! A layer is a tar archive holding one file of random bytes. Uncompressed layers are written
//! at disk speed and hashed once (their diff_id is their digest); gzip layers use the fastest
//! level, since random data does not compress anyway and the point is a realistic media type.
//! The same seed always yields the same bytes, so tests can recompute expected content.

use std::fs::File;
use std::io::{self, BufWriter, Read, Write};
use std::path::{Path, PathBuf};
use std::process::Command;

use rand::rngs::SmallRng;
use rand::{RngCore, SeedableRng};
use serde_json::json;
use sha2::{Digest, Sha256};

use crate::process::run_command;
use crate::registry::Registry;
use crate::{HarnessError, Result};

const MEDIA_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
const MEDIA_CONFIG: &str = "application/vnd.oci.image.config.v1+json";
const MEDIA_LAYER_TAR: &str = "application/vnd.oci.image.layer.v1.tar";
const MEDIA_LAYER_GZIP: &str = "application/vnd.oci.image.layer.v1.tar+gzip";
/// Write buffer for layer files; large enough that a 1 GiB layer is a few thousand writes.
const WRITE_BUFFER: usize = 1 << 20;

/// How a layer is stored.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Compression {
    None,
    Gzip,
}

/// One layer to generate: `size` random bytes in a single file, from `seed`.
#[derive(Clone, Copy, Debug)]
pub struct LayerSpec {
    pub size: u64,
    pub seed: u64,
    pub compression: Compression,
}

/// A content-addressed blob: digest `sha256:<hex>`, size in bytes, media type.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BlobInfo {
    pub digest: String,
    pub size: u64,
    pub media_type: String,
}

/// A generated OCI image layout on disk.
#[derive(Clone, Debug)]
pub struct OciImage {
    /// The layout directory (holds `oci-layout`, `index.json`, `blobs/sha256/`).
    pub dir: PathBuf,
    pub tag: String,
    pub layers: Vec<BlobInfo>,
    pub config: BlobInfo,
    pub manifest: BlobInfo,
}

impl OciImage {
    /// The path of a blob of this layout.
    pub fn blob_path(&self, digest: &str) -> PathBuf {
        blob_path(&self.dir, digest)
    }
}

/// Writes an OCI image layout with `layers` into `dir` (created if missing), tagged `tag`.
pub fn build_image(dir: &Path, tag: &str, layers: &[LayerSpec]) -> Result<OciImage> {
    let blobs = dir.join("blobs/sha256");
    std::fs::create_dir_all(&blobs).map_err(|e| HarnessError::io("create layout", e))?;
    let mut infos = Vec::new();
    let mut diff_ids = Vec::new();
    for (index, spec) in layers.iter().enumerate() {
        let (info, diff_id) = write_layer(dir, index, spec)?;
        infos.push(info);
        diff_ids.push(diff_id);
    }
    let config = json!({
        "architecture": "amd64",
        "os": "linux",
        "config": {},
        "rootfs": { "type": "layers", "diff_ids": diff_ids },
    });
    let config = write_json_blob(dir, &config, MEDIA_CONFIG)?;
    let manifest = json!({
        "schemaVersion": 2,
        "mediaType": MEDIA_MANIFEST,
        "config": descriptor(&config),
        "layers": infos.iter().map(descriptor).collect::<Vec<_>>(),
    });
    let manifest = write_json_blob(dir, &manifest, MEDIA_MANIFEST)?;
    let mut index_entry = descriptor(&manifest);
    index_entry["annotations"] = json!({ "org.opencontainers.image.ref.name": tag });
    let index = json!({ "schemaVersion": 2, "manifests": [index_entry] });
    write_file(&dir.join("index.json"), index.to_string().as_bytes())?;
    write_file(
        &dir.join("oci-layout"),
        br#"{"imageLayoutVersion":"1.0.0"}"#,
    )?;
    Ok(OciImage {
        dir: dir.to_owned(),
        tag: tag.to_owned(),
        layers: infos,
        config,
        manifest,
    })
}

/// The random bytes a layer spec's file holds, for checking content end to end.
pub fn layer_file_bytes(spec: &LayerSpec) -> impl Read {
    SeededBytes::new(spec.seed, spec.size)
}

impl Registry {
    /// Pushes `image` to `<repo>:<tag>` with `skopeo copy`, using the registry's credentials.
    pub fn push_image(&self, image: &OciImage, repo: &str) -> Result<()> {
        let mut cmd = Command::new("skopeo");
        // Without --preserve-digests skopeo gzips uncompressed layers on the way.
        cmd.args([
            "copy",
            "--quiet",
            "--preserve-digests",
            "--dest-tls-verify=false",
        ]);
        if let Some(creds) = self.credentials() {
            cmd.arg("--dest-creds")
                .arg(format!("{}:{}", creds.user, creds.password));
        }
        cmd.arg(format!("oci:{}:{}", image.dir.display(), image.tag))
            .arg(format!("docker://{}/{repo}:{}", self.host(), image.tag));
        run_command(cmd, "skopeo").map(drop)
    }

    /// Uploads the file at `path` as one blob of `repo` with a monolithic `POST` + `PUT`.
    ///
    /// Hashes the file first (the digest goes into the `PUT` URL), then streams it.
    pub async fn upload_blob(&self, repo: &str, path: &Path) -> Result<BlobInfo> {
        let (digest, size) = hash_file(path)?;
        let auth = self.credentials().map(|c| c.basic_header());
        crate::http::upload_monolithic(&self.base_url(), repo, path, &digest, size, auth).await?;
        Ok(BlobInfo {
            digest,
            size,
            media_type: "application/octet-stream".into(),
        })
    }
}

/// `sha256:<hex>` and size of a file.
pub fn hash_file(path: &Path) -> Result<(String, u64)> {
    let mut file =
        File::open(path).map_err(|e| HarnessError::io(format!("open {}", path.display()), e))?;
    let mut hasher = HashingWriter::new(io::sink());
    io::copy(&mut file, &mut hasher).map_err(|e| HarnessError::io("hash file", e))?;
    Ok(hasher.finish())
}

fn write_layer(dir: &Path, index: usize, spec: &LayerSpec) -> Result<(BlobInfo, String)> {
    let tmp = dir.join(format!("blobs/layer-{index}.partial"));
    let file = File::create(&tmp).map_err(|e| HarnessError::io("create layer", e))?;
    let out = HashingWriter::new(BufWriter::with_capacity(WRITE_BUFFER, file));
    let io_err = |e| HarnessError::io("write layer", e);
    let (out, diff_id) = match spec.compression {
        Compression::None => {
            let out = write_tar(out, spec).map_err(io_err)?;
            let diff_id = format!("sha256:{}", hex::encode(out.hasher.clone().finalize()));
            (out, diff_id)
        }
        Compression::Gzip => {
            let gz = flate2::write::GzEncoder::new(out, flate2::Compression::fast());
            let tar_hasher = write_tar(HashingWriter::new(gz), spec).map_err(io_err)?;
            let (gz, diff_id) = tar_hasher.into_parts();
            (gz.finish().map_err(io_err)?, diff_id)
        }
    };
    let (inner, digest) = out.into_parts();
    let mut file = inner.into_inner().map_err(|e| io_err(e.into_error()))?;
    file.flush().map_err(io_err)?;
    let size = file.metadata().map_err(io_err)?.len();
    std::fs::rename(&tmp, blob_path(dir, &digest)).map_err(io_err)?;
    let media_type = match spec.compression {
        Compression::None => MEDIA_LAYER_TAR,
        Compression::Gzip => MEDIA_LAYER_GZIP,
    };
    let info = BlobInfo {
        digest,
        size,
        media_type: media_type.into(),
    };
    Ok((info, diff_id))
}

fn write_tar<W: Write>(out: W, spec: &LayerSpec) -> io::Result<W> {
    let mut builder = tar::Builder::new(out);
    let mut header = tar::Header::new_ustar();
    header.set_size(spec.size);
    header.set_mode(0o644);
    header.set_mtime(0);
    header.set_entry_type(tar::EntryType::Regular);
    builder.append_data(
        &mut header,
        format!("data-{}", spec.seed),
        SeededBytes::new(spec.seed, spec.size),
    )?;
    builder.into_inner()
}

fn write_json_blob(dir: &Path, value: &serde_json::Value, media_type: &str) -> Result<BlobInfo> {
    let bytes = serde_json::to_vec(value).expect("json values serialize");
    let digest = format!("sha256:{}", hex::encode(Sha256::digest(&bytes)));
    write_file(&blob_path(dir, &digest), &bytes)?;
    Ok(BlobInfo {
        digest,
        size: bytes.len() as u64,
        media_type: media_type.into(),
    })
}

fn descriptor(info: &BlobInfo) -> serde_json::Value {
    json!({ "mediaType": info.media_type, "digest": info.digest, "size": info.size })
}

fn blob_path(dir: &Path, digest: &str) -> PathBuf {
    let hex = digest.strip_prefix("sha256:").unwrap_or(digest);
    dir.join("blobs/sha256").join(hex)
}

fn write_file(path: &Path, bytes: &[u8]) -> Result<()> {
    std::fs::write(path, bytes)
        .map_err(|e| HarnessError::io(format!("write {}", path.display()), e))
}

/// A reader of `len` bytes from a seeded fast generator.
struct SeededBytes {
    rng: SmallRng,
    left: u64,
}

impl SeededBytes {
    fn new(seed: u64, len: u64) -> Self {
        Self {
            rng: SmallRng::seed_from_u64(seed),
            left: len,
        }
    }
}

impl Read for SeededBytes {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = buf.len().min(self.left.try_into().unwrap_or(usize::MAX));
        self.rng.fill_bytes(&mut buf[..n]);
        self.left -= n as u64;
        Ok(n)
    }
}

/// A writer that hashes everything passing through it.
struct HashingWriter<W> {
    inner: W,
    hasher: Sha256,
    written: u64,
}

impl<W> HashingWriter<W> {
    fn new(inner: W) -> Self {
        Self {
            inner,
            hasher: Sha256::new(),
            written: 0,
        }
    }

    fn into_parts(self) -> (W, String) {
        (
            self.inner,
            format!("sha256:{}", hex::encode(self.hasher.finalize())),
        )
    }

    fn finish(self) -> (String, u64) {
        let written = self.written;
        (self.into_parts().1, written)
    }
}

impl<W: Write> Write for HashingWriter<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.hasher.update(&buf[..n]);
        self.written += n as u64;
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}
