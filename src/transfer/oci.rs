//! import-oci, pull-oci, push-oci and export-oci over [`crate::oci`] and the store: an OCI
//! image layout or `docker save` archive (a tarball is unpacked to a temporary directory
//! first, as its blobs are read twice), resolved to one image; its layers unpacked into a
//! staged image, committed with its run settings (`NAME.nspawn`) beside it; and a stored
//! image built back into one layer, for a layout or a registry.

use std::path::{Path, PathBuf};

use super::TransferError;
use crate::archive::{self, Decoder, ExtractOptions};
use crate::oci::image::{self, Built, Resolved};
use crate::oci::layout::{self, Layout};
use crate::oci::settings::RunSettings;
use crate::store::{ImageKind, ImageName, LockPurpose, Store};

fn fs_err(op: &'static str, path: &Path) -> impl FnOnce(std::io::Error) -> TransferError {
    let path = path.to_path_buf();
    move |source| TransferError::Fs { op, path, source }
}

/// A directory removed when dropped (and on SIGINT, SIGTERM, SIGHUP).
pub(crate) struct TempDir(PathBuf);

impl TempDir {
    /// A new directory below `parent` (created when missing); `what` names it.
    pub(crate) fn new(parent: &Path, what: &str) -> Result<TempDir, TransferError> {
        std::fs::create_dir_all(parent).map_err(fs_err("create", parent))?;
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.subsec_nanos())
            .unwrap_or(0);
        let dir = parent.join(format!(".#rmach-{what}-{}-{nanos}", std::process::id()));
        std::fs::create_dir(&dir).map_err(fs_err("create", &dir))?;
        crate::sys::interrupt::remove_on_interrupt(&dir);
        Ok(TempDir(dir))
    }

    pub(crate) fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A layout or archive as a directory: the one given, or a tarball unpacked into a
/// temporary one (removed when this is dropped).
pub(crate) struct LayoutDir {
    dir: PathBuf,
    _unpacked: Option<TempDir>,
}

impl LayoutDir {
    pub(crate) fn path(&self) -> &Path {
        &self.dir
    }
}

/// Opens `path`: a directory as it is; anything else is a tarball, unpacked below `scratch`.
/// The first error is about `path` itself (it cannot be opened); the second, the unpacking.
pub(crate) fn open_layout(
    path: &Path,
    scratch: &Path,
) -> Result<Result<LayoutDir, TransferError>, TransferError> {
    let meta = std::fs::metadata(path).map_err(fs_err("open", path))?;
    if meta.is_dir() {
        return Ok(Ok(LayoutDir {
            dir: path.to_path_buf(),
            _unpacked: None,
        }));
    }
    let tmp = TempDir::new(scratch, "import")?;
    let file = std::fs::File::open(path).map_err(fs_err("open", path))?;
    Ok(unpack_tarball(file, tmp))
}

fn unpack_tarball(file: std::fs::File, tmp: TempDir) -> Result<LayoutDir, TransferError> {
    let mut decoder = Decoder::spawn(file, false).map_err(TransferError::Archive)?;
    // Blobs and JSON documents only: no owners, xattrs or ACLs to keep.
    let opts = ExtractOptions {
        chown: false,
        xattrs: false,
        acls: false,
        ..ExtractOptions::default()
    };
    archive::extract(&mut decoder, tmp.path(), &opts, None).map_err(TransferError::Archive)?;
    Ok(LayoutDir {
        dir: tmp.path().to_path_buf(),
        _unpacked: Some(tmp),
    })
}

/// What kind of OCI input a directory holds.
pub(crate) enum LayoutKind {
    /// `oci-layout` and `index.json`.
    Oci,
    /// `manifest.json`, as `docker save` writes.
    Docker,
}

pub(crate) fn layout_kind(dir: &Path) -> Option<LayoutKind> {
    if dir.join("oci-layout").exists() {
        Some(LayoutKind::Oci)
    } else if dir.join("manifest.json").exists() {
        Some(LayoutKind::Docker)
    } else {
        None
    }
}

/// The image a layout directory of `kind` holds: `tag` picks one of several in an OCI
/// layout, `arch` one of a multi-architecture index; `what` names it in errors.
pub(crate) fn resolve_layout(
    dir: &Path,
    kind: LayoutKind,
    tag: Option<&str>,
    arch: &str,
    what: &str,
) -> Result<Resolved, TransferError> {
    Ok(match kind {
        LayoutKind::Oci => {
            let layout = Layout::open(dir)?;
            let top = layout.top(tag)?;
            let bytes = image::Source::manifest(&layout, &top)?;
            image::resolve(&layout, bytes, Some(&top.media_type), arch, what)?
        }
        LayoutKind::Docker => layout::docker_archive(dir)?,
    })
}

/// The comment in NAME.nspawn that ties it to one image directory: its inode number and
/// birth time, which a rename keeps and a new image under the same name does not have.
const IDENTITY: &str = "# rmach-image-identity: ";

fn identity(path: &Path) -> Option<String> {
    use rustix::fs::{statx, AtFlags, StatxFlags, CWD};
    let st = statx(
        CWD,
        path,
        AtFlags::SYMLINK_NOFOLLOW,
        StatxFlags::INO | StatxFlags::BTIME,
    )
    .ok()?;
    let born = if st.stx_mask & StatxFlags::BTIME.bits() != 0 {
        format!("{}.{:09}", st.stx_btime.tv_sec, st.stx_btime.tv_nsec)
    } else {
        "-".into()
    };
    Some(format!("{} {born}", st.stx_ino))
}

/// How an OCI image becomes a stored one.
pub(crate) struct OciImport<'a> {
    pub(crate) name: &'a ImageName,
    /// Where it came from, recorded in its settings.
    pub(crate) origin: &'a str,
    pub(crate) purpose: LockPurpose,
    pub(crate) force: bool,
    pub(crate) read_only: bool,
}

/// Unpacks `image` into a new store image and writes its settings beside it; the members
/// unpacked.
pub(crate) fn unpack_into_store(
    store: &Store,
    image: &Resolved,
    req: &OciImport<'_>,
) -> Result<u64, TransferError> {
    let staging = store.create(req.name, req.purpose, ImageKind::Directory, req.force)?;
    let members = image::unpack(image, staging.path())?;
    let settings = RunSettings::from_config(&image.config.config);
    let target = store.nspawn_settings_path(req.name);
    let tmp = store.temp_path(req.name, "settings");
    let text = format!(
        "{}{IDENTITY}{}\n",
        settings.to_nspawn(req.origin),
        identity(staging.path()).unwrap_or_default()
    );
    let written = std::fs::write(&tmp, text)
        .map_err(fs_err("write", &tmp))
        .and_then(|()| staging.commit(req.read_only).map_err(TransferError::Commit))
        .and_then(|()| std::fs::rename(&tmp, &target).map_err(fs_err("write", &target)));
    if written.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    written.map(|()| members)
}

/// The run settings recorded for image `name` when it was imported, if they are still its
/// own: settings left behind by an image that was removed or replaced (by a verb that does
/// not know about them) must not apply to the image now under the name.
pub(crate) fn recorded_settings(store: &Store, name: &ImageName) -> Option<RunSettings> {
    let text = std::fs::read_to_string(store.nspawn_settings_path(name)).ok()?;
    let recorded = text.lines().find_map(|l| l.strip_prefix(IDENTITY));
    let current = store.image(name).ok().and_then(|i| identity(i.path()));
    if recorded.is_none() || recorded != current.as_deref() {
        return None;
    }
    Some(RunSettings::from_nspawn(&text))
}

/// Writes `built` as an OCI layout at `path` (a new directory, or with a `.tar` suffix a
/// tarball of one), tagged `tag`; it appears only when complete.
pub(crate) fn write_layout(
    path: &Path,
    built: &Built,
    tag: &str,
    warn: &mut dyn FnMut(String),
) -> Result<(), TransferError> {
    let parent = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    };
    let tmp = TempDir::new(&parent, "export-oci")?;
    let blobs = [
        (built.layer.0.as_path(), &built.layer.1),
        (built.config.0.as_path(), &built.config.1),
    ];
    let is_tar = path.extension().is_some_and(|e| e == "tar");
    let layout_dir = if is_tar {
        tmp.path().join("layout")
    } else {
        tmp.path().to_path_buf()
    };
    layout::write_layout(&layout_dir, &blobs, &built.manifest, tag)?;
    if !is_tar {
        return std::fs::rename(tmp.path(), path)
            .map_err(fs_err("rename the finished output to", path));
    }
    let tar_tmp = tmp.path().join("layout.tar");
    let mut file = std::fs::File::create(&tar_tmp).map_err(fs_err("create", &tar_tmp))?;
    archive::write_tree(
        &layout_dir,
        &mut file,
        &archive::WriteOptions::default(),
        warn,
        None,
    )
    .map_err(TransferError::Archive)?;
    file.sync_all().map_err(fs_err("write", &tar_tmp))?;
    std::fs::rename(&tar_tmp, path).map_err(fs_err("rename the finished output to", path))
}
