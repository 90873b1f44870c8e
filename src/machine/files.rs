//! Files into and out of a machine (`copy-to`, `copy-from`) and what it can be reached at.
//! Paths inside are resolved in the image's root with `openat2(RESOLVE_IN_ROOT)`, so neither
//! `..` nor a symlink in the machine (absolute or relative) can lead a copy out of it. The
//! image's own tree is used, running or not: what a running machine mounted over it (tmpfs,
//! binds, an ephemeral overlay) is not seen.

use std::os::fd::{AsRawFd, OwnedFd};
use std::path::{Component, Path, PathBuf};

use rustix::fs::{openat2, Mode, OFlags, ResolveFlags};

use super::{IoAt, MachineError, Result};

fn resolve() -> ResolveFlags {
    ResolveFlags::IN_ROOT | ResolveFlags::NO_MAGICLINKS
}

/// The path relative to the root, refusing anything that is not a plain absolute path.
fn inside(path: &Path) -> Result<(PathBuf, std::ffi::OsString)> {
    let outside = || MachineError::Outside { path: path.into() };
    if !path.is_absolute() {
        return Err(outside());
    }
    // `..` stays: RESOLVE_IN_ROOT keeps it inside, as the machine itself would see it.
    let leaf = match path.components().next_back() {
        Some(Component::Normal(l)) => l.to_os_string(),
        _ => return Err(outside()),
    };
    let parent = path.parent().unwrap_or(Path::new("/"));
    Ok((
        parent.strip_prefix("/").unwrap_or(parent).to_path_buf(),
        leaf,
    ))
}

fn open_in(root: &OwnedFd, rel: &Path, flags: OFlags, shown: &Path) -> Result<OwnedFd> {
    let rel = if rel.as_os_str().is_empty() {
        Path::new(".")
    } else {
        rel
    };
    openat2(root, rel, flags | OFlags::CLOEXEC, Mode::empty(), resolve()).at(shown)
}

fn fd_path(fd: &OwnedFd) -> PathBuf {
    PathBuf::from(format!("/proc/self/fd/{}", fd.as_raw_fd()))
}

fn open_root(root: &Path) -> Result<OwnedFd> {
    rustix::fs::open(
        root,
        OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC,
        Mode::empty(),
    )
    .at(root)
}

/// Copies host `src` (file or directory tree) to `dst` in the machine's `root`. A directory
/// must not exist yet; a file replaces a regular file (never a symlink) of that name.
pub(crate) fn copy_to(root: &Path, src: &Path, dst: &Path) -> Result<()> {
    let rootfd = open_root(root)?;
    let (parent_rel, leaf) = inside(dst)?;
    let parent = open_in(
        &rootfd,
        &parent_rel,
        OFlags::RDONLY | OFlags::DIRECTORY,
        dst,
    )?;
    let meta = std::fs::metadata(src).at(src)?;
    if meta.is_dir() {
        rustix::fs::mkdirat(&parent, &leaf, Mode::from_raw_mode(0o700)).at(dst)?;
        let target = fd_path(&parent).join(&leaf);
        crate::store::copy_tree(src, &target, None)?;
        return Ok(());
    }
    let mut from = std::fs::File::open(src).at(src)?;
    let flags =
        OFlags::WRONLY | OFlags::CREATE | OFlags::TRUNC | OFlags::NOFOLLOW | OFlags::CLOEXEC;
    let mode =
        Mode::from_raw_mode(std::os::unix::fs::PermissionsExt::mode(&meta.permissions()) & 0o7777);
    let fd = rustix::fs::openat(&parent, &leaf, flags, mode).at(dst)?;
    let mut to = std::fs::File::from(fd);
    std::io::copy(&mut from, &mut to).at(dst)?;
    to.set_permissions(meta.permissions()).at(dst)?;
    Ok(())
}

/// Copies `src` in the machine's `root` (file or directory tree) to host `dst`.
pub(crate) fn copy_from(root: &Path, src: &Path, dst: &Path) -> Result<()> {
    let rootfd = open_root(root)?;
    let (parent_rel, leaf) = inside(src)?;
    let fd = open_in(&rootfd, &parent_rel.join(&leaf), OFlags::RDONLY, src)?;
    let stat = rustix::fs::fstat(&fd).at(src)?;
    if rustix::fs::FileType::from_raw_mode(stat.st_mode) == rustix::fs::FileType::Directory {
        std::fs::create_dir(dst).at(dst)?;
        crate::store::copy_tree(&fd_path(&fd), dst, None)?;
        return Ok(());
    }
    let mut from = std::fs::File::from(fd);
    let mut to = std::fs::File::create(dst).at(dst)?;
    std::io::copy(&mut from, &mut to).at(dst)?;
    use std::os::unix::fs::PermissionsExt;
    to.set_permissions(std::fs::Permissions::from_mode(stat.st_mode & 0o7777))
        .at(dst)?;
    Ok(())
}

/// The machine's addresses but loopback, from its network namespace's view in /proc.
pub(crate) fn addresses(leader: u32) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    // fib_trie lists each local IPv4 address as a leaf followed by "/32 host LOCAL".
    let trie = std::fs::read_to_string(format!("/proc/{leader}/net/fib_trie")).unwrap_or_default();
    let mut last = None;
    for line in trie.lines() {
        let t = line.trim_start_matches([' ', '|', '+', '-', '`']).trim();
        if t.contains("/32 host LOCAL") {
            if let Some(a) = last.take() {
                if !out.contains(&a) && !a.starts_with("127.") {
                    out.push(a);
                }
            }
        } else if t.parse::<std::net::Ipv4Addr>().is_ok() {
            last = Some(t.to_string());
        }
    }
    let v6 = std::fs::read_to_string(format!("/proc/{leader}/net/if_inet6")).unwrap_or_default();
    for line in v6.lines() {
        let f: Vec<&str> = line.split_whitespace().collect();
        if f.len() == 6 && f[5] != "lo" {
            if let Ok(n) = u128::from_str_radix(f[0], 16) {
                out.push(std::net::Ipv6Addr::from(n).to_string());
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn symlinks_cannot_lead_out() {
        let root = tempfile::tempdir().unwrap();
        let host = tempfile::tempdir().unwrap();
        std::fs::write(host.path().join("secret"), "host").unwrap();
        std::os::unix::fs::symlink(host.path().join("secret"), root.path().join("link")).unwrap();
        std::os::unix::fs::symlink(host.path(), root.path().join("dir")).unwrap();
        // copy-from through an absolute symlink resolves inside the root: there is no such file.
        let out = host.path().join("got");
        assert!(copy_from(root.path(), Path::new("/link"), &out).is_err());
        assert!(!out.exists());
        // copy-to through a symlinked directory cannot write on the host either.
        let src = host.path().join("src");
        std::fs::write(&src, "data").unwrap();
        assert!(copy_to(root.path(), &src, Path::new("/dir/planted")).is_err());
        assert!(!host.path().join("planted").exists());
        std::fs::create_dir(root.path().join("etc")).unwrap();
        copy_to(root.path(), &src, Path::new("/etc/../etc/x")).unwrap();
        assert_eq!(
            std::fs::read_to_string(root.path().join("etc/x")).unwrap(),
            "data"
        );
        copy_from(root.path(), Path::new("/etc/x"), &out).unwrap();
        assert_eq!(std::fs::read_to_string(&out).unwrap(), "data");
        assert!(copy_to(root.path(), &src, Path::new("relative")).is_err());
    }
}
