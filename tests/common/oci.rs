//! The peers of the OCI tests and what they share: skopeo and umoci run as a user would, a
//! three-layer umoci layout with whiteouts, an opaque directory and a hard link across layers,
//! a fixture image in the store, and JSON edits of layout blobs.

use std::path::{Path, PathBuf};
use std::process::Output;

use super::registry::Registry;
use super::tar::RawTar;
use super::tree::{assert_same, FULL};
use super::{assert_success, require, sh, Env};

pub fn tools() {
    for t in ["skopeo", "umoci", "docker-registry"] {
        require(t);
    }
}

/// rmach with extra environment variables.
pub fn rmach_with(env: &Env, args: &[&str], vars: &[(&str, &Path)]) -> Output {
    let mut cmd = env.command();
    cmd.args(args);
    for (k, v) in vars {
        cmd.env(k, v);
    }
    cmd.output().unwrap()
}

/// An OCI layout `L` under `dir` built with umoci, tagged v1, with three layers: a base
/// tree; a second that deletes etc/gone (umoci writes the whiteout) and changes and adds
/// files; a hand-made third with an opaque var/cache (its new file listed before the marker),
/// a whiteout for opt/keep/a and etc/motd, and usr/bin/hard2 hard-linked to the first layer's
/// usr/bin/tool. Returns the layout's path.
pub fn umoci_layout(dir: &Path) -> PathBuf {
    let l = dir.join("L");
    let b = dir.join("B");
    sh(&format!(
        "umoci init --layout '{l}' && umoci new --image '{l}:v1' && umoci unpack --image '{l}:v1' '{b}' >/dev/null
         cd '{b}/rootfs'
         mkdir -p etc usr/bin opt/keep var/cache/old2 data srv
         echo hello > etc/motd; echo bye > etc/gone
         printf '#!/bin/sh\\necho tool\\n' > usr/bin/tool; chmod 755 usr/bin/tool
         ln usr/bin/tool usr/bin/hard; ln -s tool usr/bin/link
         echo a > opt/keep/a; echo b > opt/keep/b; echo 1 > var/cache/old1; echo 2 > var/cache/old2/x
         head -c 300000 /dev/urandom > data/random; chown 1000:1001 data/random; chmod 640 data/random
         setfattr -n user.note -v hi data/random; mkfifo srv/fifo; mknod srv/null c 1 3
         cd / && umoci repack --image '{l}:v1' '{b}'
         cd '{b}/rootfs' && rm etc/gone && echo changed > etc/motd && echo new > srv/new
         cd / && umoci repack --image '{l}:v1' '{b}'",
        l = l.display(),
        b = b.display()
    ));
    let layer3 = RawTar::default()
        .file("var/cache/fresh", b"fresh\n")
        .file("var/cache/.wh..wh..opq", b"")
        .file("opt/keep/.wh.a", b"")
        .file("etc/.wh.motd", b"")
        .hardlink("usr/bin/hard2", "usr/bin/tool")
        .finish();
    let layer3_path = dir.join("layer3.tar");
    std::fs::write(&layer3_path, layer3).unwrap();
    sh(&format!(
        "umoci raw add-layer --image '{l}:v1' '{}'
         umoci config --image '{l}:v1' --config.cmd /bin/sh --config.cmd -c --config.cmd 'echo \"$GREETING\"' \
           --config.env GREETING=hello --config.workingdir /srv --config.user 1000",
        layer3_path.display(),
        l = l.display()
    ));
    l
}

/// `umoci unpack` of `image` (LAYOUT:TAG); returns the rootfs.
pub fn umoci_unpack(image: &str, bundle: &Path) -> PathBuf {
    sh(&format!(
        "umoci unpack --image '{image}' '{}' >/dev/null",
        bundle.display()
    ));
    bundle.join("rootfs")
}

pub fn skopeo(args: &[&str]) {
    let out = std::process::Command::new("skopeo")
        .args(args)
        .output()
        .unwrap();
    assert_success(&out, &format!("skopeo {args:?}"));
}

pub fn same_tree(a: &Path, b: &Path) {
    assert_same(a, b, FULL);
}

/// A small tree in the store made by import-fs, and its path.
pub fn store_image(env: &Env, name: &str) -> PathBuf {
    let src = env.path(&format!("{name}-src"));
    super::tar::make_fixture(&src, false);
    // umoci 0.4 writes holes out and drops empty xattr values: leave out what it cannot
    // carry, so that the comparison is about rmach.
    sh(&format!(
        "cd '{}' && rm sparse-tail-hole sparse-lead-hole && setfattr -x user.empty d/binary-xattrs",
        src.display()
    ));
    env.ok(&["import-fs", src.to_str().unwrap(), name]);
    env.store.join(name)
}

/// The manifest of `reference` as the registry serves it.
pub fn manifest_of(reg: &Registry, repo_tag: &str) -> serde_json::Value {
    let out = std::process::Command::new("skopeo")
        .args(["inspect", "--raw", "--tls-verify=false"])
        .arg(format!("docker://{}/{repo_tag}", reg.host()))
        .output()
        .unwrap();
    assert_success(&out, "skopeo inspect");
    serde_json::from_slice(&out.stdout).unwrap()
}

/// Rewrites the blob `digest` of layout `l` through `edit`, storing it under its new digest,
/// and returns that digest.
pub fn rewrite_blob(l: &Path, digest: &str, edit: impl FnOnce(&mut serde_json::Value)) -> String {
    let path = l
        .join("blobs/sha256")
        .join(digest.strip_prefix("sha256:").unwrap());
    let mut doc: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
    edit(&mut doc);
    let bytes = serde_json::to_vec(&doc).unwrap();
    use sha2::Digest;
    let hex = hex::encode(sha2::Sha256::digest(&bytes));
    std::fs::write(l.join("blobs/sha256").join(&hex), &bytes).unwrap();
    format!("sha256:{hex}")
}
