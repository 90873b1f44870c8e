//! Images on disk: an OCI image layout (a directory with `oci-layout`, `index.json` and
//! `blobs/sha256/`), and a `docker save` archive unpacked to a directory (`manifest.json`
//! naming a config file and layer tars). Reading checks every blob against its descriptor;
//! writing produces a layout skopeo and umoci read.

use std::path::{Path, PathBuf};

use super::blobs::verify_file;
use super::digest::Digest;
use super::image::{Resolved, Source};
use super::spec::{self, Descriptor, ImageConfig, Manifest};
use super::{io_err, json, OciError, Result};

/// An OCI image layout directory.
pub(crate) struct Layout {
    dir: PathBuf,
}

impl Layout {
    pub(crate) fn open(dir: &Path) -> Result<Layout> {
        let marker = dir.join("oci-layout");
        let text = std::fs::read(&marker).map_err(io_err(&marker))?;
        let doc: serde_json::Value = json(&text, &marker.display().to_string())?;
        if doc["imageLayoutVersion"].as_str().is_none() {
            return Err(OciError::Invalid {
                what: marker.display().to_string(),
                reason: "no imageLayoutVersion".into(),
            });
        }
        Ok(Layout { dir: dir.into() })
    }

    /// The manifest (or index) `tag` names in index.json; without a tag, the only entry.
    pub(crate) fn top(&self, tag: Option<&str>) -> Result<Descriptor> {
        let path = self.dir.join("index.json");
        let bytes = std::fs::read(&path).map_err(io_err(&path))?;
        let what = path.display().to_string();
        let index: Manifest = json(&bytes, &what)?;
        let entries = index.manifests.unwrap_or_default();
        let tags: Vec<String> = entries
            .iter()
            .filter_map(|d| d.annotations.get(spec::REF_NAME).cloned())
            .collect();
        let found = match tag {
            Some(t) => entries
                .iter()
                .find(|d| d.annotations.get(spec::REF_NAME).map(String::as_str) == Some(t)),
            None if entries.len() == 1 => entries.first(),
            None => None,
        };
        found.cloned().ok_or_else(|| OciError::Invalid {
            what,
            reason: match tag {
                Some(t) => format!("no image tagged {t:?} (tags: {})", tags.join(", ")),
                None => format!(
                    "{} images; choose one with --tag (tags: {})",
                    entries.len(),
                    tags.join(", ")
                ),
            },
        })
    }

    fn blob_path(&self, digest: &Digest) -> PathBuf {
        self.dir.join("blobs/sha256").join(digest.hex())
    }
}

impl Source for Layout {
    fn manifest(&self, desc: &Descriptor) -> Result<Vec<u8>> {
        let path = self.blob(desc)?;
        std::fs::read(&path).map_err(io_err(&path))
    }

    fn blob(&self, desc: &Descriptor) -> Result<PathBuf> {
        let digest = Digest::parse(&desc.digest)?;
        let path = self.blob_path(&digest);
        verify_file(&path, &digest, Some(desc.size))?;
        Ok(path)
    }
}

/// A `docker save` archive unpacked to `dir` (the classic format: manifest.json, a config
/// JSON and one uncompressed tar per layer, each checked against the config's diff_ids).
pub(crate) fn docker_archive(dir: &Path) -> Result<Resolved> {
    let path = dir.join("manifest.json");
    let what = path.display().to_string();
    let bytes = std::fs::read(&path).map_err(io_err(&path))?;
    let entries: Vec<serde_json::Value> = json(&bytes, &what)?;
    let invalid = |reason: &str| OciError::Invalid {
        what: what.clone(),
        reason: reason.into(),
    };
    let entry = match entries.as_slice() {
        [one] => one,
        _ => return Err(invalid("rmach imports archives of exactly one image")),
    };
    let inside = |v: &serde_json::Value| -> Result<PathBuf> {
        let rel = v
            .as_str()
            .ok_or_else(|| invalid("a path is not a string"))?;
        if rel.split('/').any(|c| c == "..") || rel.starts_with('/') {
            return Err(invalid("a path leaves the archive"));
        }
        Ok(dir.join(rel))
    };
    let config_path = inside(&entry["Config"])?;
    let config_bytes = std::fs::read(&config_path).map_err(io_err(&config_path))?;
    let config: ImageConfig = json(&config_bytes, &config_path.display().to_string())?;
    let layer_paths = entry["Layers"]
        .as_array()
        .ok_or_else(|| invalid("no Layers"))?
        .iter()
        .map(inside)
        .collect::<Result<Vec<_>>>()?;
    if layer_paths.len() != config.rootfs.diff_ids.len() {
        return Err(invalid("the config's diff_ids do not match the layers"));
    }
    let mut layers = Vec::new();
    for (p, diff_id) in layer_paths.iter().zip(&config.rootfs.diff_ids) {
        let digest = Digest::parse(diff_id)?;
        verify_file(p, &digest, None)?;
        layers.push((p.clone(), digest.to_string()));
    }
    Ok(Resolved {
        config,
        config_digest: Digest::of(&config_bytes),
        layers,
    })
}

/// Writes an OCI layout in `dir` (created) holding one image: the blobs (paths and
/// descriptors) and the manifest, tagged `tag`.
pub(crate) fn write_layout(
    dir: &Path,
    blobs: &[(&Path, &Descriptor)],
    manifest: &[u8],
    tag: &str,
) -> Result<()> {
    let sha = dir.join("blobs/sha256");
    std::fs::create_dir_all(&sha).map_err(io_err(&sha))?;
    std::fs::write(dir.join("oci-layout"), spec::LAYOUT_VERSION).map_err(io_err(dir))?;
    for (path, desc) in blobs {
        let digest = Digest::parse(&desc.digest)?;
        let to = sha.join(digest.hex());
        std::fs::copy(path, &to).map_err(io_err(&to))?;
    }
    let digest = Digest::of(manifest);
    std::fs::write(sha.join(digest.hex()), manifest).map_err(io_err(&sha))?;
    let mut desc = Descriptor {
        media_type: spec::OCI_MANIFEST.into(),
        digest: digest.to_string(),
        size: manifest.len() as u64,
        platform: None,
        annotations: Default::default(),
    };
    desc.annotations.insert(spec::REF_NAME.into(), tag.into());
    let index = Manifest {
        schema_version: 2,
        media_type: Some(spec::OCI_INDEX.into()),
        config: None,
        layers: None,
        manifests: Some(vec![desc]),
        annotations: Default::default(),
    };
    let bytes = serde_json::to_vec(&index).map_err(|source| OciError::Json {
        what: "index.json".into(),
        source,
    })?;
    let path = dir.join("index.json");
    std::fs::write(&path, bytes).map_err(io_err(&path))
}
