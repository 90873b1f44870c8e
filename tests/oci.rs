//! OCI images against real implementations: Debian's docker-registry (the distribution
//! registry) on 127.0.0.1 with no auth, htpasswd auth and token auth (tests/common/registry.rs),
//! skopeo as the peer client and umoci as the peer unpacker. Images built with umoci (three
//! layers: a deleted file, a whiteout, an opaque directory, a hard link across layers) and
//! pushed by skopeo are pulled by rmach and compared attribute by attribute with what
//! `umoci unpack` gives; images pushed or exported by rmach are copied by skopeo and unpacked
//! by umoci to the same tree. Tampered blobs, wrong sizes and a multi-architecture index are
//! cases. Needs root, docker-registry, skopeo, umoci, apache2-utils (htpasswd) and openssl.

mod common;
use common::run as common_run;

use common::oci::{
    manifest_of, rewrite_blob, rmach_with, same_tree, skopeo, store_image, tools, umoci_layout,
    umoci_unpack,
};
use common::registry::{write_auth_json, Auth, Registry, PASSWORD, USER};
use common::tar::RawTar;
use common::tree::FULL;
use common::{assert_success, sh, Env};

#[test]
fn skopeo_pushed_layers_unpack_as_umoci_does() {
    tools();
    let env = Env::new();
    let layout = umoci_layout(env.dir.path());
    let reg = Registry::start(env.dir.path(), Auth::None);
    let dest = format!("docker://{}/test/img:v1", reg.host());
    skopeo(&[
        "copy",
        "--dest-tls-verify=false",
        &format!("oci:{}:v1", layout.display()),
        &dest,
    ]);
    let reference = format!("{}/test/img:v1", reg.host());
    env.ok(&["pull-oci", &reference, "--tls-verify=false"]);
    let want = umoci_unpack(&format!("{}:v1", layout.display()), &env.path("U"));
    same_tree(&want, &env.store.join("img"));
    // The layer semantics themselves, not only agreement with umoci.
    let img = env.store.join("img");
    assert!(!img.join("etc/gone").exists() && !img.join("etc/motd").exists());
    assert!(!img.join("var/cache/old1").exists() && !img.join("var/cache/old2").exists());
    assert_eq!(
        std::fs::read(img.join("var/cache/fresh")).unwrap(),
        b"fresh\n"
    );
    assert!(!img.join("opt/keep/a").exists() && img.join("opt/keep/b").exists());
    use std::os::unix::fs::MetadataExt;
    let ino = |p: &str| std::fs::metadata(img.join(p)).unwrap().ino();
    assert_eq!(ino("usr/bin/hard2"), ino("usr/bin/tool"));
    assert!(!std::fs::read_dir(&img).unwrap().any(|e| e
        .unwrap()
        .file_name()
        .to_string_lossy()
        .starts_with(".wh.")));
    // The config is kept beside the image for run (and nspawn).
    let settings = std::fs::read_to_string(env.store.join("img.nspawn")).unwrap();
    assert!(
        settings.contains("Parameters=/bin/sh -c \"echo \\\"$GREETING\\\"\""),
        "{settings}"
    );
    assert!(
        settings.contains("Environment=GREETING=hello"),
        "{settings}"
    );
    assert!(settings.contains("WorkingDirectory=/srv") && settings.contains("User=1000"));

    // A second pull shares the cached blobs: the registry's copies can go and it still works
    // (all but the manifest, which is always asked for).
    let before = std::fs::read_dir(env.cache.join("oci/blobs/sha256"))
        .unwrap()
        .count();
    env.ok(&["pull-oci", &reference, "again", "--tls-verify=false"]);
    let after = std::fs::read_dir(env.cache.join("oci/blobs/sha256"))
        .unwrap()
        .count();
    assert_eq!(before, after);
    same_tree(&want, &env.store.join("again"));

    // Docker's schema 2 media types, as skopeo writes them with --format v2s2.
    let docker_ref = format!("{}/test/img:docker", reg.host());
    skopeo(&[
        "copy",
        "--format",
        "v2s2",
        "--dest-tls-verify=false",
        &format!("oci:{}:v1", layout.display()),
        &format!("docker://{docker_ref}"),
    ]);
    let manifest = manifest_of(&reg, "test/img:docker");
    assert_eq!(
        manifest["mediaType"],
        "application/vnd.docker.distribution.manifest.v2+json"
    );
    env.ok(&["pull-oci", &docker_ref, "docker", "--tls-verify=false"]);
    same_tree(&want, &env.store.join("docker"));

    // By digest (the registry's manifest digest, as skopeo reports it).
    let out = std::process::Command::new("skopeo")
        .args(["inspect", "--tls-verify=false", "--format", "{{.Digest}}"])
        .arg(format!("docker://{reference}"))
        .output()
        .unwrap();
    assert_success(&out, "skopeo inspect");
    let digest = String::from_utf8(out.stdout).unwrap().trim().to_string();
    let by_digest = format!("{}/test/img@{digest}", reg.host());
    env.ok(&["pull-oci", &by_digest, "pinned", "--tls-verify=false"]);
    same_tree(&want, &env.store.join("pinned"));

    // The same layout imported from disk, as a directory and as a tarball.
    env.ok(&["import-oci", layout.to_str().unwrap(), "from-dir"]);
    same_tree(&want, &env.store.join("from-dir"));
    let tarball = env.path("layout.tar");
    sh(&format!(
        "tar -C '{}' -cf '{}' .",
        layout.display(),
        tarball.display()
    ));
    env.ok(&["import-oci", tarball.to_str().unwrap(), "from-tar"]);
    same_tree(&want, &env.store.join("from-tar"));
    // And a docker save archive of it, written by skopeo.
    let docker = env.path("saved.tar");
    skopeo(&[
        "copy",
        &format!("oci:{}:v1", layout.display()),
        &format!("docker-archive:{}:test/img:v1", docker.display()),
    ]);
    env.ok(&["import-oci", docker.to_str().unwrap()]);
    same_tree(&want, &env.store.join("saved"));
}

#[test]
fn rmach_pushed_and_exported_images_unpack_with_umoci() {
    tools();
    let env = Env::new();
    let image = store_image(&env, "src");
    let reg = Registry::start(env.dir.path(), Auth::None);
    for (format, tag) in [("gzip", "gz"), ("zstd", "zst")] {
        let reference = format!("{}/test/pushed:{tag}", reg.host());
        env.ok(&[
            "push-oci",
            "src",
            &reference,
            "--format",
            format,
            "--tls-verify=false",
        ]);
        let copy = env.path(&format!("copied-{tag}"));
        skopeo(&[
            "copy",
            "--src-tls-verify=false",
            &format!("docker://{reference}"),
            &format!("oci:{}:{tag}", copy.display()),
        ]);
        // rmach reads back what it pushed.
        env.ok(&[
            "pull-oci",
            &reference,
            &format!("back-{tag}"),
            "--tls-verify=false",
        ]);
        same_tree(&image, &env.store.join(format!("back-{tag}")));
        if format == "gzip" {
            // umoci 0.4 reads gzip layers only.
            let rootfs = umoci_unpack(&format!("{}:{tag}", copy.display()), &env.path("U-gz"));
            same_tree(&image, &rootfs);
        }
    }
    let exported = env.path("exported");
    env.ok(&["export-oci", "src", exported.to_str().unwrap()]);
    let rootfs = umoci_unpack(
        &format!("{}:latest", exported.display()),
        &env.path("U-exp"),
    );
    same_tree(&image, &rootfs);
    let archive = env.path("exported.tar");
    env.ok(&[
        "export-oci",
        "src",
        archive.to_str().unwrap(),
        "--tag",
        "t1",
    ]);
    let via = env.path("via-archive");
    skopeo(&[
        "copy",
        &format!("oci-archive:{}:t1", archive.display()),
        &format!("oci:{}:t1", via.display()),
    ]);
    let rootfs = umoci_unpack(&format!("{}:t1", via.display()), &env.path("U-arc"));
    same_tree(&image, &rootfs);
}

fn auth_round_trip(auth: Auth) {
    tools();
    let env = Env::new();
    let layout = umoci_layout(env.dir.path());
    let reg = Registry::start(env.dir.path(), auth);
    let creds = format!("{USER}:{PASSWORD}");
    let reference = format!("{}/team/app:v1", reg.host());
    skopeo(&[
        "copy",
        "--dest-tls-verify=false",
        "--dest-creds",
        &creds,
        &format!("oci:{}:v1", layout.display()),
        &format!("docker://{reference}"),
    ]);
    let no_auth = env.path("no-auth.json");
    std::fs::write(&no_auth, "{}").unwrap();
    let out = rmach_with(
        &env,
        &["pull-oci", &reference, "--tls-verify=false"],
        &[("REGISTRY_AUTH_FILE", &no_auth), ("HOME", env.dir.path())],
    );
    let msg = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{msg}");
    assert!(
        msg.contains("access denied") && msg.trim_end().lines().count() == 1,
        "{msg}"
    );
    assert!(env.store_entries().iter().all(|e| e.ends_with(".lck")));

    let auth_file = env.path("auth.json");
    write_auth_json(&auth_file, &reg.host());
    let vars = [("REGISTRY_AUTH_FILE", auth_file.as_path())];
    assert_success(
        &rmach_with(&env, &["pull-oci", &reference, "--tls-verify=false"], &vars),
        "pull with credentials",
    );
    let want = umoci_unpack(&format!("{}:v1", layout.display()), &env.path("U"));
    same_tree(&want, &env.store.join("app"));
    // Docker's config file works as well.
    let docker_dir = env.path("docker");
    std::fs::create_dir_all(&docker_dir).unwrap();
    write_auth_json(&docker_dir.join("config.json"), &reg.host());
    assert_success(
        &rmach_with(
            &env,
            &["pull-oci", &reference, "app2", "--tls-verify=false"],
            &[("DOCKER_CONFIG", &docker_dir), ("HOME", env.dir.path())],
        ),
        "pull with docker's config",
    );
    // And pushing, then skopeo reading it back.
    let pushed = format!("{}/team/pushed:v2", reg.host());
    assert_success(
        &rmach_with(
            &env,
            &["push-oci", "app", &pushed, "--tls-verify=false"],
            &vars,
        ),
        "push with credentials",
    );
    let copy = env.path("copy");
    skopeo(&[
        "copy",
        "--src-tls-verify=false",
        "--src-creds",
        &creds,
        &format!("docker://{pushed}"),
        &format!("oci:{}:v2", copy.display()),
    ]);
    same_tree(
        &want,
        &umoci_unpack(&format!("{}:v2", copy.display()), &env.path("U2")),
    );
    if auth == Auth::Token {
        assert!(reg.tokens_issued() > 0, "the token server was used");
    }
}

#[test]
fn htpasswd_auth_with_credentials_from_auth_json() {
    auth_round_trip(Auth::Htpasswd);
}

#[test]
fn token_auth_with_credentials_from_auth_json() {
    auth_round_trip(Auth::Token);
}

#[test]
fn tampered_blob_in_the_registry_is_refused() {
    tools();
    let env = Env::new();
    let layout = umoci_layout(env.dir.path());
    let reg = Registry::start(env.dir.path(), Auth::None);
    skopeo(&[
        "copy",
        "--dest-tls-verify=false",
        &format!("oci:{}:v1", layout.display()),
        &format!("docker://{}/test/img:v1", reg.host()),
    ]);
    let manifest = manifest_of(&reg, "test/img:v1");
    let digest = manifest["layers"][0]["digest"]
        .as_str()
        .unwrap()
        .to_string();
    // Same size, one byte changed: only the digest can tell.
    let file = reg.blob_file(&digest);
    let mut data = std::fs::read(&file).unwrap();
    let last = data.len() - 1;
    data[last] ^= 0xff;
    std::fs::write(&file, data).unwrap();
    let reference = format!("{}/test/img:v1", reg.host());
    let msg = env.fails(&["pull-oci", &reference, "--tls-verify=false"], 1);
    assert!(msg.contains(&digest) && msg.contains("digest"), "{msg}");
    assert!(env.store_entries().iter().all(|e| e.ends_with(".lck")));
    // (A pull that fails before the store exists creates none.)
    assert!(!env.store.exists() || env.ok(&["clean"]).trim().is_empty());
    // Nothing unverified entered the cache.
    let hex = digest.strip_prefix("sha256:").unwrap();
    let cached: Vec<String> = std::fs::read_dir(env.cache.join("oci/blobs/sha256"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert!(!cached.iter().any(|c| c.contains(hex)), "{cached:?}");
}

#[test]
fn wrong_digests_and_sizes_in_a_layout_are_refused() {
    tools();
    let env = Env::new();
    let layout = umoci_layout(env.dir.path());
    let index_path = layout.join("index.json");
    let index: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&index_path).unwrap()).unwrap();
    let manifest_digest = index["manifests"][0]["digest"]
        .as_str()
        .unwrap()
        .to_string();
    let l = layout.to_str().unwrap();
    let refused = |needle: &str| {
        let msg = env.fails(&["import-oci", l, "bad", "--force"], 1);
        assert!(msg.contains(needle), "{needle:?} not in {msg}");
        assert!(env.store_entries().iter().all(|e| e.ends_with(".lck")));
    };
    // A layer descriptor whose size is wrong.
    let bad = rewrite_blob(&layout, &manifest_digest, |m| {
        let size = m["layers"][1]["size"].as_u64().unwrap();
        m["layers"][1]["size"] = (size + 1).into();
    });
    let set_top = |digest: &str| {
        let mut idx = index.clone();
        let path = layout
            .join("blobs/sha256")
            .join(digest.strip_prefix("sha256:").unwrap());
        idx["manifests"][0]["digest"] = digest.into();
        idx["manifests"][0]["size"] = std::fs::metadata(path).unwrap().len().into();
        std::fs::write(&index_path, serde_json::to_vec(&idx).unwrap()).unwrap();
    };
    set_top(&bad);
    refused("bytes, expected");
    // A layer descriptor naming another digest (of a blob that exists: the config).
    let bad = rewrite_blob(&layout, &manifest_digest, |m| {
        m["layers"][1]["digest"] = m["layers"][0]["digest"].clone();
    });
    set_top(&bad);
    // The first layer's blob under the second's place: its diff_id no longer matches in
    // count, so rmach checks the size first; either way it must refuse.
    let msg = env.fails(&["import-oci", l, "bad", "--force"], 1);
    assert!(msg.contains("expected"), "{msg}");
    // A blob whose content was changed in place.
    set_top(&manifest_digest);
    let manifest: serde_json::Value = serde_json::from_slice(
        &std::fs::read(
            layout
                .join("blobs/sha256")
                .join(manifest_digest.strip_prefix("sha256:").unwrap()),
        )
        .unwrap(),
    )
    .unwrap();
    let layers = manifest["layers"].as_array().unwrap();
    let layer = layers.last().unwrap()["digest"].as_str().unwrap();
    let layer_path = layout
        .join("blobs/sha256")
        .join(layer.strip_prefix("sha256:").unwrap());
    let mut data = std::fs::read(&layer_path).unwrap();
    data[10] ^= 1;
    std::fs::write(&layer_path, data).unwrap();
    refused("digest is sha256:");
    // A blob that is a symlink to a device is not read (it would never end).
    std::fs::remove_file(&layer_path).unwrap();
    std::os::unix::fs::symlink("/dev/zero", &layer_path).unwrap();
    refused("not a regular file");
    // (A pull that fails before the store exists creates none.)
    assert!(!env.store.exists() || env.ok(&["clean"]).trim().is_empty());
}

#[test]
fn multi_arch_index_picks_the_architecture() {
    tools();
    let env = Env::new();
    let l = env.path("M");
    let b = env.path("B");
    sh(&format!(
        "umoci init --layout '{l}'
         for arch in amd64 arm64; do
           umoci new --image '{l}:'$arch && umoci unpack --image '{l}:'$arch '{b}'-$arch >/dev/null
           echo $arch > '{b}'-$arch/rootfs/arch && umoci repack --image '{l}:'$arch '{b}'-$arch
           umoci config --image '{l}:'$arch --architecture $arch
         done",
        l = l.display(),
        b = b.display()
    ));
    // An index over both, tagged "multi".
    let index_path = l.join("index.json");
    let mut index: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&index_path).unwrap()).unwrap();
    let mut entries = Vec::new();
    for e in index["manifests"].as_array().unwrap() {
        let arch = e["annotations"]["org.opencontainers.image.ref.name"].clone();
        let mut e = e.clone();
        e["platform"] = serde_json::json!({"architecture": arch, "os": "linux"});
        e.as_object_mut().unwrap().remove("annotations");
        entries.push(e);
    }
    let list = serde_json::to_vec(&serde_json::json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.index.v1+json",
        "manifests": entries,
    }))
    .unwrap();
    use sha2::Digest;
    let hex = hex::encode(sha2::Sha256::digest(&list));
    std::fs::write(l.join("blobs/sha256").join(&hex), &list).unwrap();
    index["manifests"]
        .as_array_mut()
        .unwrap()
        .push(serde_json::json!({
            "mediaType": "application/vnd.oci.image.index.v1+json",
            "digest": format!("sha256:{hex}"),
            "size": list.len(),
            "annotations": {"org.opencontainers.image.ref.name": "multi"},
        }));
    std::fs::write(&index_path, serde_json::to_vec(&index).unwrap()).unwrap();

    let reg = Registry::start(env.dir.path(), Auth::None);
    let reference = format!("{}/test/multi:1", reg.host());
    skopeo(&[
        "copy",
        "--all",
        "--dest-tls-verify=false",
        &format!("oci:{}:multi", l.display()),
        &format!("docker://{reference}"),
    ]);
    let host_arch = match std::env::consts::ARCH {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        other => other,
    };
    env.ok(&["pull-oci", &reference, "host", "--tls-verify=false"]);
    assert_eq!(
        std::fs::read_to_string(env.store.join("host/arch"))
            .unwrap()
            .trim(),
        host_arch
    );
    for arch in ["amd64", "arm64"] {
        env.ok(&[
            "pull-oci",
            &reference,
            arch,
            "--arch",
            arch,
            "--tls-verify=false",
        ]);
        assert_eq!(
            std::fs::read_to_string(env.store.join(arch).join("arch"))
                .unwrap()
                .trim(),
            arch
        );
    }
    let msg = env.fails(
        &[
            "pull-oci",
            &reference,
            "--arch",
            "s390x",
            "--tls-verify=false",
        ],
        1,
    );
    assert!(
        msg.contains("s390x") && msg.contains("amd64/linux, arm64/linux"),
        "{msg}"
    );
    // The layout itself, through import-oci.
    env.ok(&[
        "import-oci",
        l.to_str().unwrap(),
        "local",
        "--tag",
        "multi",
        "--arch",
        "arm64",
    ]);
    assert_eq!(
        std::fs::read_to_string(env.store.join("local/arch"))
            .unwrap()
            .trim(),
        "arm64"
    );
}

#[test]
fn run_uses_the_image_config() {
    tools();
    let env = Env::new();
    let l = env.path("R");
    let b = env.path("RB");
    sh(&format!(
        "umoci init --layout '{l}' && umoci new --image '{l}:v1' && umoci unpack --image '{l}:v1' '{b}' >/dev/null",
        l = l.display(),
        b = b.display()
    ));
    common_run::make_rootfs(&b.join("rootfs"));
    sh(&format!(
        "umoci repack --image '{l}:v1' '{b}'
         umoci config --image '{l}:v1' --config.entrypoint /bin/sh --config.cmd -c \
           --config.cmd 'echo \"$GREETING from $(pwd) as $(id -u)\"' \
           --config.env GREETING=hello --config.workingdir /home/user --config.user 1000",
        l = l.display(),
        b = b.display()
    ));
    env.ok(&["import-oci", l.to_str().unwrap(), "app"]);
    let out = env.ok(&["run", "app"]);
    assert_eq!(out.trim(), "hello from /home/user as 1000");
    // Options on the command line win over the config.
    let out = env.ok(&[
        "run",
        "app",
        "-E",
        "GREETING=bye",
        "--user",
        "0",
        "--chdir",
        "/",
    ]);
    assert_eq!(out.trim(), "bye from / as 0");
    let out = env.ok(&["run", "app", "--", "/bin/echo", "explicit"]);
    assert_eq!(out.trim(), "explicit");
    // A new image under the name (by a verb that knows nothing of the settings) does not
    // inherit them: the shell's default command runs instead of the old config's.
    let tree = env.path("plain");
    common_run::make_rootfs(&tree);
    env.ok(&["remove", "app"]);
    env.ok(&["import-fs", tree.to_str().unwrap(), "app"]);
    let out = env.ok(&["run", "app", "--", "/bin/sh", "-c", "echo \"[$GREETING]\""]);
    assert_eq!(out.trim(), "[]");
}

#[test]
fn tls_registry_with_a_self_signed_certificate() {
    tools();
    let env = Env::new();
    let image = store_image(&env, "src");
    let reg = Registry::start_with(env.dir.path(), Auth::None, true);
    let reference = format!("{}/test/tls:v1", reg.host());
    // Verification on (the default): the unknown issuer is refused at once, and named.
    let msg = env.fails(&["push-oci", "src", &reference], 1);
    assert!(
        msg.contains("TLS") && msg.contains(&format!("https://{}", reg.host())),
        "{msg}"
    );
    env.ok(&["push-oci", "src", &reference, "--tls-verify=false"]);
    let msg = env.fails(&["pull-oci", &reference, "tls"], 1);
    assert!(
        msg.contains("TLS") && msg.contains("--tls-verify=false"),
        "{msg}"
    );
    assert!(env
        .store_entries()
        .iter()
        .all(|e| e.ends_with(".lck") || e == "src"));
    // Off: HTTPS without verification (the registry speaks nothing else), and skopeo agrees.
    env.ok(&["pull-oci", &reference, "tls", "--tls-verify=false"]);
    same_tree(&image, &env.store.join("tls"));
    let copy = env.path("copy");
    skopeo(&[
        "copy",
        "--src-tls-verify=false",
        &format!("docker://{reference}"),
        &format!("oci:{}:v1", copy.display()),
    ]);
    same_tree(
        &image,
        &umoci_unpack(&format!("{}:v1", copy.display()), &env.path("U")),
    );
}

#[test]
fn whiteouts_through_symlinks_stay_inside_the_image() {
    tools();
    let env = Env::new();
    // Outside the image, where a whiteout resolved on the host would land: the store's parent.
    let sentinel = env.path("sentinel");
    std::fs::write(&sentinel, b"keep me\n").unwrap();
    std::fs::create_dir_all(env.path("sentinel-dir/sub")).unwrap();
    let l = env.path("H");
    sh(&format!(
        "umoci init --layout '{l}' && umoci new --image '{l}:v1'",
        l = l.display()
    ));
    let lower = RawTar::default()
        .dir("a", 0o755)
        .symlink("escape", "/")
        .symlink("up", "../..")
        .file("victim", b"in the image\n")
        .file("a/sentinel", b"in the image too\n")
        .finish();
    let upper = RawTar::default()
        .file("escape/.wh.victim", b"")
        .file("up/.wh.sentinel", b"")
        .file("up/.wh.sentinel-dir", b"")
        .file("up/a/.wh..wh..opq", b"")
        .finish();
    for (i, layer) in [lower, upper].iter().enumerate() {
        let path = env.path(&format!("hostile-{i}.tar"));
        std::fs::write(&path, layer).unwrap();
        sh(&format!(
            "umoci raw add-layer --image '{}:v1' '{}'",
            l.display(),
            path.display()
        ));
    }
    env.ok(&["import-oci", l.to_str().unwrap(), "hostile"]);
    assert_eq!(std::fs::read(&sentinel).unwrap(), b"keep me\n");
    assert!(env.path("sentinel-dir/sub").is_dir());
    let img = env.store.join("hostile");
    // Resolved inside the image: /victim went, a/ was emptied.
    assert!(!img.join("victim").exists());
    assert!(!img.join("a/sentinel").exists() && img.join("a").is_dir());
    // Everything as umoci has it, but for the root directory's mtime, which these layers do
    // not give (no "./" member): umoci leaves it at 0, rmach at the time of the last change.
    let want = umoci_unpack(&format!("{}:v1", l.display()), &env.path("U"));
    let diffs: Vec<String> = common::tree::differences(
        &common::tree::snapshot(&want),
        &common::tree::snapshot(&img),
        FULL,
    )
    .into_iter()
    .filter(|d| !d.starts_with(":\n"))
    .collect();
    assert!(diffs.is_empty(), "{}", diffs.join("\n"));
}
