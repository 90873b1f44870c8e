//! From a manifest to a root filesystem: resolving an index to the manifest for an
//! architecture, fetching and checking the config and layers through a [`Source`] (a
//! registry or a layout), and applying the layers in order. And the other way: one layer
//! written from a tree, with its config and manifest.

use std::io::Write;
use std::path::{Path, PathBuf};

use super::blobs::BlobCache;
use super::digest::{Digest, HashingWriter};
use super::layers::apply_layer;
use super::spec::{self, Descriptor, ExecConfig, ImageConfig, Manifest, Platform, RootFs};
use super::{io_err, json, OciError, Result};
use crate::archive::{self, Compression, Encoder, WriteOptions};

/// Where manifests and blobs come from; every blob handed out has been checked. Blobs are
/// fetched from several threads at once.
pub(crate) trait Source: Sync {
    /// The manifest or index `desc` points to, checked against it.
    fn manifest(&self, desc: &Descriptor) -> Result<Vec<u8>>;
    /// A checked blob on disk.
    fn blob(&self, desc: &Descriptor) -> Result<PathBuf>;
}

/// An image ready to unpack: its config, and its layers (checked blob, label) in order.
pub(crate) struct Resolved {
    pub(crate) config: ImageConfig,
    pub(crate) config_digest: Digest,
    pub(crate) layers: Vec<(PathBuf, String)>,
}

/// The manifest for `arch`/linux in an index.
pub(crate) fn pick_platform(index: &Manifest, arch: &str, what: &str) -> Result<Descriptor> {
    let entries = index.manifests.as_deref().unwrap_or_default();
    let matches = |p: &Option<Platform>| {
        p.as_ref()
            .is_some_and(|p| p.architecture == arch && p.os == "linux")
    };
    entries
        .iter()
        .find(|d| matches(&d.platform))
        .cloned()
        .ok_or_else(|| OciError::NoPlatform {
            what: what.into(),
            arch: arch.into(),
            available: entries
                .iter()
                .filter_map(|d| d.platform.as_ref())
                .map(|p| format!("{}/{}", p.architecture, p.os))
                .collect::<Vec<_>>()
                .join(", "),
        })
}

/// Resolves the manifest (or index) `top_bytes` to a checked image.
pub(crate) fn resolve(
    source: &dyn Source,
    top_bytes: Vec<u8>,
    media_type: Option<&str>,
    arch: &str,
    what: &str,
) -> Result<Resolved> {
    let mut manifest: Manifest = json(&top_bytes, what)?;
    let mut media_type = media_type.map(str::to_string);
    // An index of indexes is allowed; a few levels are plenty.
    for _ in 0..4 {
        if !manifest.is_index(media_type.as_deref()) {
            break;
        }
        let desc = pick_platform(&manifest, arch, what)?;
        let bytes = source.manifest(&desc)?;
        manifest = json(&bytes, &desc.digest)?;
        media_type = Some(desc.media_type.clone());
    }
    let invalid = |reason: &str| OciError::Invalid {
        what: what.into(),
        reason: reason.into(),
    };
    let config_desc = manifest
        .config
        .as_ref()
        .ok_or_else(|| invalid("the manifest has no config"))?;
    let config_path = source.blob(config_desc)?;
    let config_bytes = std::fs::read(&config_path).map_err(io_err(&config_path))?;
    let config: ImageConfig = json(&config_bytes, &config_desc.digest)?;
    let layers = manifest.layers.unwrap_or_default();
    if layers.len() != config.rootfs.diff_ids.len() {
        return Err(invalid(
            "the config's diff_ids do not match the manifest's layers",
        ));
    }
    if layers
        .iter()
        .any(|d| d.media_type.contains("nondistributable") || d.media_type.contains("foreign"))
    {
        return Err(invalid(
            "foreign (non-distributable) layers are not supported",
        ));
    }
    let out = fetch_all(source, &layers)?;
    Ok(Resolved {
        config,
        config_digest: Digest::parse(&config_desc.digest)?,
        layers: out,
    })
}

/// Blobs fetched at once: a registry answers each request with some latency, and a few
/// concurrent downloads are what registry clients commonly use.
const PARALLEL_FETCHES: usize = 3;

/// The checked blobs of `layers`, in order, fetched a few at a time; the first failure wins.
fn fetch_all(source: &dyn Source, layers: &[Descriptor]) -> Result<Vec<(PathBuf, String)>> {
    let next = std::sync::atomic::AtomicUsize::new(0);
    let results: Vec<std::sync::Mutex<Option<Result<PathBuf>>>> =
        layers.iter().map(|_| std::sync::Mutex::new(None)).collect();
    let failed = std::sync::atomic::AtomicBool::new(false);
    std::thread::scope(|scope| {
        for _ in 0..PARALLEL_FETCHES.min(layers.len()) {
            scope.spawn(|| loop {
                if failed.load(std::sync::atomic::Ordering::Relaxed) {
                    return;
                }
                let i = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                let Some(desc) = layers.get(i) else { return };
                let result = source.blob(desc);
                if result.is_err() {
                    failed.store(true, std::sync::atomic::Ordering::Relaxed);
                }
                if let Ok(mut slot) = results[i].lock() {
                    *slot = Some(result);
                }
            });
        }
    });
    let mut out = Vec::new();
    let mut first_err = None;
    for (slot, desc) in results.into_iter().zip(layers) {
        match slot.into_inner().ok().flatten() {
            Some(Ok(path)) => out.push((path, desc.digest.clone())),
            Some(Err(e)) => {
                first_err.get_or_insert(e);
            }
            None => {}
        }
    }
    match first_err {
        Some(e) => Err(e),
        None if out.len() == layers.len() => Ok(out),
        None => Err(OciError::Invalid {
            what: "layers".into(),
            reason: "a download thread ended without a result".into(),
        }),
    }
}

/// Applies the layers of `image` in order onto the empty directory `root`.
pub(crate) fn unpack(image: &Resolved, root: &Path) -> Result<u64> {
    let mut members = 0;
    for (i, (blob, label)) in image.layers.iter().enumerate() {
        members += apply_layer(root, blob, label, i == 0)?.members;
    }
    Ok(members)
}

/// An image built from a tree: its blobs in the cache and its manifest.
pub(crate) struct Built {
    pub(crate) manifest: Vec<u8>,
    pub(crate) layer: (PathBuf, Descriptor),
    pub(crate) config: (PathBuf, Descriptor),
}

/// Writes the tree at `root` as one layer (gzip or zstd) with a config carrying `exec`, into
/// the blob cache, and makes the manifest. `warn` hears about what the tar writer skipped.
pub(crate) fn build(
    root: &Path,
    cache: &BlobCache,
    compression: Compression,
    exec: ExecConfig,
    warn: &mut dyn FnMut(String),
) -> Result<Built> {
    let tmp = cache.path(&Digest::of(b"")).with_file_name(format!(
        ".tmp-layer-{}-{:?}",
        std::process::id(),
        std::time::SystemTime::now()
    ));
    let result = write_layer(root, &tmp, compression, warn);
    let (compressed, diff_id, size) = match result {
        Ok(v) => v,
        Err(e) => {
            let _ = std::fs::remove_file(&tmp);
            return Err(e);
        }
    };
    let layer_path = cache.path(&compressed);
    std::fs::rename(&tmp, &layer_path).map_err(io_err(&layer_path))?;
    let layer = Descriptor {
        media_type: match compression {
            Compression::Zstd => spec::OCI_LAYER_ZSTD.into(),
            _ => spec::OCI_LAYER_GZIP.into(),
        },
        digest: compressed.to_string(),
        size,
        platform: None,
        annotations: Default::default(),
    };
    let config = ImageConfig {
        architecture: Some(spec::host_arch().into()),
        os: Some("linux".into()),
        created: None,
        config: exec,
        rootfs: RootFs {
            kind: "layers".into(),
            diff_ids: vec![diff_id.to_string()],
        },
    };
    let config_bytes = serde_json::to_vec(&config).map_err(|source| OciError::Json {
        what: "the image config".into(),
        source,
    })?;
    let config_digest = cache.put_bytes(&config_bytes)?;
    let config_desc = Descriptor {
        media_type: spec::OCI_CONFIG.into(),
        digest: config_digest.to_string(),
        size: config_bytes.len() as u64,
        platform: None,
        annotations: Default::default(),
    };
    let manifest = Manifest {
        schema_version: 2,
        media_type: Some(spec::OCI_MANIFEST.into()),
        config: Some(config_desc.clone()),
        layers: Some(vec![layer.clone()]),
        manifests: None,
        annotations: Default::default(),
    };
    let manifest = serde_json::to_vec(&manifest).map_err(|source| OciError::Json {
        what: "the manifest".into(),
        source,
    })?;
    Ok(Built {
        manifest,
        layer: (layer_path, layer),
        config: (cache.path(&config_digest), config_desc),
    })
}

/// The tree as a compressed tar at `to`: (compressed digest, uncompressed digest, size).
fn write_layer(
    root: &Path,
    to: &Path,
    compression: Compression,
    warn: &mut dyn FnMut(String),
) -> Result<(Digest, Digest, u64)> {
    let file = std::fs::File::create(to).map_err(io_err(to))?;
    let outer = HashingWriter::new(std::io::BufWriter::with_capacity(1 << 20, file));
    let encoder = Encoder::new(outer, compression, None, 0).map_err(|e| layer_err(to, e))?;
    let mut inner = HashingWriter::new(encoder);
    archive::write_tree(root, &mut inner, &WriteOptions::default(), warn, None)
        .map_err(|e| layer_err(to, e))?;
    inner.flush().map_err(io_err(to))?;
    let diff_id = Digest::from_hash(inner.hash);
    let mut outer = inner.inner.finish().map_err(|e| layer_err(to, e))?;
    outer.flush().map_err(io_err(to))?;
    let file = outer
        .inner
        .into_inner()
        .map_err(|e| io_err(to)(e.into_error()))?;
    file.sync_all().map_err(io_err(to))?;
    Ok((Digest::from_hash(outer.hash), diff_id, outer.count))
}

fn layer_err(to: &Path, source: crate::archive::ArchiveError) -> OciError {
    OciError::Layer {
        digest: to.display().to_string(),
        source,
    }
}
