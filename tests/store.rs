//! The store verbs driven through the binary: import-fs, clone, list, show, remove, rename,
//! read-only and clean, with their failure modes (names, missing and busy images, kill -9,
//! races). These tests need root (owners, devices, capabilities, loop-mounted btrfs).

mod common;

use std::os::unix::fs::PermissionsExt;
use std::process::Stdio;
use std::time::{Duration, Instant};

use common::tree::{assert_same, make_full_tree, snapshot, FULL};
use common::{sh, Env, Tmpfs};

#[test]
fn import_fs_and_clone_keep_every_attribute() {
    let env = Env::new();
    let src = env.path("src");
    make_full_tree(&src);
    env.ok(&["import-fs", src.to_str().unwrap(), "dev"]);
    assert_same(&src, &env.store.join("dev"), FULL);
    env.ok(&["clone", "dev", "copy"]);
    assert_same(&src, &env.store.join("copy"), FULL);
    // The fixture really has what the comparison claims to check.
    let snap = snapshot(&env.store.join("copy"));
    assert!(snap.entry("sparse").sparse);
    assert!(snap
        .entry("usr/bin/ping")
        .xattrs
        .contains_key(&b"security.capability"[..]));
    assert!(snap
        .entry("srv/acl")
        .xattrs
        .contains_key(&b"system.posix_acl_default"[..]));
    assert_eq!(snap.entry("usr/bin/suid").mode & 0o7777, 0o4755);
    // The hard-link group, whose first path is etc/tool-link2.
    assert_eq!(
        snap.link_group("etc/tool-link2"),
        Some(
            &[
                b"etc/tool-link2".to_vec(),
                b"usr/bin/tool".to_vec(),
                b"usr/bin/tool-link".to_vec()
            ][..]
        )
    );
    assert_eq!(snap.entry("dev/loop7").kind, "block");
}

#[test]
fn import_fs_takes_the_name_from_the_directory() {
    let env = Env::new();
    let src = env.empty_dir("debian-12.5");
    std::fs::write(src.join("f"), "x").unwrap();
    env.ok(&["import-fs", src.to_str().unwrap()]);
    assert_eq!(env.store_entries(), vec!["debian-12.5"]);
}

#[test]
fn import_fs_refuses_an_existing_name_unless_forced() {
    let env = Env::new();
    let (a, b) = (env.path("a"), env.path("b"));
    std::fs::create_dir(&a).unwrap();
    std::fs::create_dir(&b).unwrap();
    std::fs::write(a.join("which"), "a").unwrap();
    std::fs::write(b.join("which"), "b").unwrap();
    env.ok(&["import-fs", a.to_str().unwrap(), "dev"]);
    let err = env.fails(&["import-fs", b.to_str().unwrap(), "dev"], 1);
    assert!(
        err.contains("already exists") && err.contains("--force"),
        "{err}"
    );
    assert_eq!(
        std::fs::read_to_string(env.store.join("dev/which")).unwrap(),
        "a"
    );
    env.ok(&["import-fs", "--force", b.to_str().unwrap(), "dev"]);
    assert_eq!(
        std::fs::read_to_string(env.store.join("dev/which")).unwrap(),
        "b"
    );
    assert_eq!(env.store_entries(), vec!["dev"]);
    // A read-only image is not replaced even with --force.
    env.ok(&["read-only", "dev", "yes"]);
    let err = env.fails(&["import-fs", "--force", a.to_str().unwrap(), "dev"], 1);
    assert!(err.contains("read-only"), "{err}");
    env.ok(&["read-only", "dev", "no"]);
}

#[test]
fn import_fs_of_a_missing_directory_is_a_clear_error() {
    let env = Env::new();
    let err = env.fails(&["import-fs", "/nonexistent/tree", "dev"], 1);
    assert!(err.contains("/nonexistent/tree"), "{err}");
    let file = env.path("file");
    std::fs::write(&file, "x").unwrap();
    let err = env.fails(&["import-fs", file.to_str().unwrap(), "dev"], 1);
    assert!(err.contains("not a directory"), "{err}");
    assert!(env.store_entries().is_empty());
}

#[test]
fn every_invalid_name_rule_is_refused_and_creates_nothing() {
    let env = Env::new();
    let src = env.empty_dir("src");
    let long = "x".repeat(65);
    let cases = [
        ("", "at least one"),
        (long.as_str(), "at most 64"),
        ("a/b", "only ASCII"),
        ("a b", "only ASCII"),
        ("ünï", "only ASCII"),
        ("web_01", "only ASCII"),
        (".hidden", "empty part"),
        ("trailing.", "empty part"),
        ("a..b", "empty part"),
        ("-dash", "starts or ends with '-'"),
        ("dash-", "starts or ends with '-'"),
        ("a-.b", "starts or ends with '-'"),
    ];
    for (name, rule) in cases {
        // `--` so that a name starting with '-' reaches the name check.
        let err = env.fails(&["import-fs", "--", src.to_str().unwrap(), name], 2);
        assert!(err.contains(rule), "{name:?}: {err}");
        let err = env.fails(&["show", "--", name], 2);
        assert!(err.contains(rule), "{name:?}: {err}");
    }
    assert!(env.store_entries().is_empty(), "{:?}", env.store_entries());
}

#[test]
fn list_and_show_describe_images() {
    let env = Env::new();
    let src = env.path("src");
    make_full_tree(&src);
    env.ok(&["import-fs", src.to_str().unwrap(), "dev"]);
    env.ok(&["clone", "--read-only", "dev", "frozen"]);
    let list: serde_json::Value = serde_json::from_str(&env.ok(&["list", "--json"])).unwrap();
    let list = list.as_array().unwrap();
    assert_eq!(list.len(), 2);
    assert_eq!(list[0]["name"], "dev");
    assert_eq!(list[0]["type"], "directory");
    assert_eq!(list[0]["read_only"], false);
    assert_eq!(list[0]["state"], "stopped");
    assert_eq!(list[1]["name"], "frozen");
    assert_eq!(list[1]["read_only"], true);
    // Usage counts the three links of usr/bin/tool once and the sparse file by its blocks.
    let usage = list[0]["usage"].as_u64().unwrap();
    assert!(usage > 1 << 20 && usage < 8 << 20, "usage {usage}");
    let show: serde_json::Value =
        serde_json::from_str(&env.ok(&["show", "dev", "--json"])).unwrap();
    assert_eq!(show["os_release"]["ID"], "fixture");
    assert_eq!(show["os_release"]["PRETTY_NAME"], "Fixture OS");
    assert!(show["created"].as_str().unwrap().ends_with('Z'));
    let text = env.ok(&["show", "dev"]);
    assert!(text.contains("OS: Fixture OS"), "{text}");
    let text = env.ok(&["list"]);
    assert!(
        text.lines().count() == 3 && text.contains("frozen") && text.contains(" ro "),
        "{text}"
    );
}

#[test]
fn show_reads_os_release_inside_the_image_only() {
    let env = Env::new();
    let src = env.path("src");
    std::fs::create_dir_all(src.join("etc")).unwrap();
    // An absolute symlink must resolve inside the image, not to the host's os-release.
    std::os::unix::fs::symlink("/usr/lib/os-release", src.join("etc/os-release")).unwrap();
    std::fs::create_dir_all(src.join("usr/lib")).unwrap();
    std::fs::write(src.join("usr/lib/os-release"), "ID=inside\n").unwrap();
    env.ok(&["import-fs", src.to_str().unwrap(), "img"]);
    let show: serde_json::Value =
        serde_json::from_str(&env.ok(&["show", "img", "--json"])).unwrap();
    assert_eq!(show["os_release"]["ID"], "inside");
    std::fs::remove_file(env.store.join("img/usr/lib/os-release")).unwrap();
    let show: serde_json::Value =
        serde_json::from_str(&env.ok(&["show", "img", "--json"])).unwrap();
    assert!(show["os_release"].is_null(), "{show}");
}

#[test]
fn remove_and_rename_of_missing_or_busy_images_fail_cleanly() {
    let env = Env::new();
    let src = env.empty_dir("src");
    env.ok(&["import-fs", src.to_str().unwrap(), "dev"]);
    env.ok(&["import-fs", src.to_str().unwrap(), "other"]);
    let err = env.fails(&["remove", "ghost"], 1);
    assert!(err.contains("no image ghost"), "{err}");
    // One missing name among several removes nothing.
    env.fails(&["remove", "dev", "ghost"], 1);
    assert!(env.store.join("dev").is_dir());
    let err = env.fails(&["rename", "ghost", "x"], 1);
    assert!(err.contains("no image ghost"), "{err}");
    let err = env.fails(&["rename", "dev", "other"], 1);
    assert!(err.contains("already exists"), "{err}");

    let store = env.library_store();
    let lock = store
        .lock(
            &rmach::store::ImageName::parse("dev").unwrap(),
            rmach::store::LockPurpose::Export,
        )
        .unwrap();
    let pid = std::process::id();
    for args in [
        &["remove", "dev"][..],
        &["rename", "dev", "new"],
        &["clone", "dev", "c"],
        &["read-only", "dev", "yes"],
    ] {
        let err = env.fails(args, 1);
        assert!(
            err.contains(&format!("dev is being exported by PID {pid}")),
            "{args:?}: {err}"
        );
    }
    let list: serde_json::Value = serde_json::from_str(&env.ok(&["list", "--json"])).unwrap();
    assert_eq!(list[0]["lock"]["pid"], pid);
    drop(lock);
    env.ok(&["rename", "dev", "new"]);
    env.ok(&["remove", "new", "other"]);
    assert!(env.store_entries().is_empty());
}

#[test]
fn read_only_images_are_immutable_and_keep_the_flag_through_rename() {
    let env = Env::new();
    let src = env.empty_dir("src");
    env.ok(&["import-fs", "--read-only", src.to_str().unwrap(), "dev"]);
    assert_eq!(
        env.ok(&["show", "dev", "-p", "ReadOnly", "--value"]).trim(),
        "yes"
    );
    assert!(std::fs::write(env.store.join("dev/new-file"), "x").is_err());
    let err = env.fails(&["remove", "dev"], 1);
    assert!(
        err.contains("read-only") && err.contains("rmach read-only dev no"),
        "{err}"
    );
    env.ok(&["rename", "dev", "renamed"]);
    assert_eq!(
        env.ok(&["show", "renamed", "-p", "ReadOnly", "--value"])
            .trim(),
        "yes"
    );
    env.ok(&["read-only", "renamed", "no"]);
    std::fs::write(env.store.join("renamed/new-file"), "x").unwrap();
    env.ok(&["remove", "renamed"]);
}

#[test]
fn raw_images_are_listed_flagged_cloned_renamed_and_removed() {
    let env = Env::new();
    std::fs::create_dir_all(&env.store).unwrap();
    let raw = env.store.join("disk.raw");
    {
        use std::io::{Seek, SeekFrom, Write};
        let mut f = std::fs::File::create(&raw).unwrap();
        f.write_all(b"head").unwrap();
        f.seek(SeekFrom::Start(256 << 20)).unwrap();
        f.write_all(b"tail").unwrap();
    }
    let list: serde_json::Value = serde_json::from_str(&env.ok(&["list", "--json"])).unwrap();
    assert_eq!(list[0]["name"], "disk");
    assert_eq!(list[0]["type"], "raw");
    env.ok(&["read-only", "disk", "yes"]);
    assert_eq!(
        std::fs::metadata(&raw).unwrap().permissions().mode() & 0o222,
        0
    );
    // Onto itself: a usage error naming the mistake, not a lock held by rmach itself.
    let err = env.fails(&["clone", "disk", "disk"], 2);
    assert!(err.contains("onto itself"), "{err}");
    env.ok(&["clone", "disk", "disk2"]);
    let copy = env.store.join("disk2.raw");
    assert_eq!(std::fs::read(&copy).unwrap(), std::fs::read(&raw).unwrap());
    use std::os::unix::fs::MetadataExt;
    assert!(
        std::fs::metadata(&copy).unwrap().blocks() < 1024,
        "the copy kept its holes"
    );
    assert_eq!(
        env.ok(&["show", "disk2", "-p", "ReadOnly", "--value"])
            .trim(),
        "no"
    );
    env.ok(&["rename", "disk2", "disk3"]);
    env.ok(&["read-only", "disk", "no"]);
    env.ok(&["remove", "disk", "disk3"]);
    assert!(env.store_entries().is_empty());
}

/// A tree big enough that import-fs takes a while: 400 files of 512 KiB of random data.
fn big_tree(env: &Env) -> std::path::PathBuf {
    let src = env.path("big");
    sh(&format!(
        "mkdir -p {d}; head -c 524288 /dev/urandom > {d}/seed; for i in $(seq 400); do mkdir -p {d}/d$((i % 20)); cat {d}/seed > {d}/d$((i % 20))/f$i; echo $i >> {d}/d$((i % 20))/f$i; done",
        d = src.display()
    ));
    src
}

#[test]
fn kill_during_import_fs_leaves_no_image_and_clean_removes_the_rest() {
    let env = Env::new();
    let src = big_tree(&env);
    let mut child = env
        .command()
        .args(["import-fs", src.to_str().unwrap(), "dev"])
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    // Wait until the import is under way: its staging directory has appeared and holds data.
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let staging = env
            .store_entries()
            .into_iter()
            .find(|n| n.starts_with(".#rmach-dev."));
        if let Some(staging) = staging {
            if std::fs::read_dir(env.store.join(staging))
                .map(|d| d.count())
                .unwrap_or(0)
                > 2
            {
                break;
            }
        }
        assert!(Instant::now() < deadline, "the import never started");
        assert!(
            child.try_wait().unwrap().is_none(),
            "the import finished before it could be killed"
        );
        std::thread::sleep(Duration::from_millis(5));
    }
    child.kill().unwrap();
    child.wait().unwrap();
    assert!(!env.store.join("dev").exists());
    let list: serde_json::Value = serde_json::from_str(&env.ok(&["list", "--json"])).unwrap();
    assert_eq!(list.as_array().unwrap().len(), 0);
    let all: serde_json::Value =
        serde_json::from_str(&env.ok(&["list", "--all", "--json"])).unwrap();
    assert_eq!(all[0]["state"], "staging", "{all}");
    env.ok(&["clean"]);
    assert!(env.store_entries().is_empty(), "{:?}", env.store_entries());

    // Ctrl-C likewise; the next operation on the name also removes what it left.
    let mut child = env
        .command()
        .args(["import-fs", src.to_str().unwrap(), "dev"])
        .spawn()
        .unwrap();
    while !env
        .store_entries()
        .iter()
        .any(|n| n.starts_with(".#rmach-dev."))
    {
        std::thread::sleep(Duration::from_millis(2));
    }
    let pid = rustix::process::Pid::from_raw(child.id() as i32).unwrap();
    rustix::process::kill_process(pid, rustix::process::Signal::INT).unwrap();
    assert!(!child.wait().unwrap().success());
    assert!(!env.store.join("dev").exists());
    env.ok(&["import-fs", src.to_str().unwrap(), "dev"]);
    assert_eq!(env.store_entries(), vec!["dev"]);
    assert_same(&src, &env.store.join("dev"), FULL);
}

#[test]
fn racing_imports_of_one_name_have_exactly_one_winner() {
    let env = Env::new();
    let src = big_tree(&env);
    for _ in 0..3 {
        let children: Vec<_> = (0..4)
            .map(|_| {
                env.command()
                    .args(["import-fs", src.to_str().unwrap(), "dev"])
                    .stderr(Stdio::piped())
                    .spawn()
                    .unwrap()
            })
            .collect();
        let outputs: Vec<_> = children
            .into_iter()
            .map(|c| c.wait_with_output().unwrap())
            .collect();
        let winners = outputs.iter().filter(|o| o.status.success()).count();
        assert_eq!(winners, 1);
        for out in outputs.iter().filter(|o| !o.status.success()) {
            let err = String::from_utf8_lossy(&out.stderr);
            assert!(
                err.contains("is being imported by PID") || err.contains("already exists"),
                "{err}"
            );
        }
        assert_eq!(env.store_entries(), vec!["dev"]);
        assert_same(&src, &env.store.join("dev"), FULL);
        env.ok(&["remove", "dev"]);
    }
}

#[test]
fn quiet_success_prints_nothing() {
    let env = Env::new();
    let src = env.empty_dir("src");
    for args in [
        &["-q", "import-fs", src.to_str().unwrap(), "dev"][..],
        &["-q", "clone", "dev", "dev2"],
        &["-q", "rename", "dev2", "dev3"],
        &["-q", "read-only", "dev3", "yes"],
        &["-q", "read-only", "dev3", "no"],
        &["-q", "remove", "dev3"],
        &["-q", "clean", "--all"],
    ] {
        let out = env.run(args);
        assert!(out.status.success(), "{args:?}");
        assert!(
            out.stdout.is_empty() && out.stderr.is_empty(),
            "{args:?} printed something"
        );
    }
}

#[test]
fn clean_all_removes_hidden_entries() {
    let env = Env::new();
    std::fs::create_dir_all(env.store.join(".hidden-image/etc")).unwrap();
    std::fs::create_dir_all(env.store.join("kept")).unwrap();
    let all: serde_json::Value =
        serde_json::from_str(&env.ok(&["list", "--all", "--json"])).unwrap();
    assert_eq!(all.as_array().unwrap().len(), 2);
    env.ok(&["clean"]);
    assert_eq!(env.store_entries(), vec![".hidden-image", "kept"]);
    env.ok(&["clean", "--all"]);
    assert_eq!(env.store_entries(), vec!["kept"]);
}

/// `list` and `show` read os-release only as a regular file: a FIFO there (which would block
/// an open forever) or a device node is skipped for usr/lib/os-release, and an `etc` that is a
/// symlink to the host's / resolves inside the image. Each call must return promptly.
#[test]
fn os_release_is_read_only_from_a_regular_file_inside_the_image() {
    let env = Env::new();
    let src = env.path("src");
    std::fs::create_dir_all(src.join("usr/lib")).unwrap();
    std::fs::write(src.join("usr/lib/os-release"), "ID=inside\n").unwrap();
    env.ok(&["import-fs", src.to_str().unwrap(), "img"]);
    let image = env.store.join("img");
    let show_id = || {
        let mut child = env
            .command()
            .args(["show", "img", "--json"])
            .stdout(Stdio::piped())
            .spawn()
            .unwrap();
        let deadline = Instant::now() + Duration::from_secs(10);
        while child.try_wait().unwrap().is_none() {
            if Instant::now() > deadline {
                let _ = child.kill();
                panic!("show blocked on etc/os-release");
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let out = child.wait_with_output().unwrap();
        let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        v["os_release"]["ID"]
            .as_str()
            .unwrap_or_default()
            .to_string()
    };
    std::fs::create_dir(image.join("etc")).unwrap();
    sh(&format!(
        "mkfifo {}",
        image.join("etc/os-release").display()
    ));
    assert_eq!(show_id(), "inside", "a FIFO is skipped");
    assert!(env.ok(&["list"]).contains("img"));
    std::fs::remove_file(image.join("etc/os-release")).unwrap();
    sh(&format!(
        "mknod {} c 1 5",
        image.join("etc/os-release").display()
    ));
    assert_eq!(show_id(), "inside", "a device node (zero) is skipped");
    std::fs::remove_dir_all(image.join("etc")).unwrap();
    std::os::unix::fs::symlink("/", image.join("etc")).unwrap();
    std::fs::remove_file(image.join("usr/lib/os-release")).unwrap();
    // The host has an /etc/os-release; the image's etc -> / must not reach it.
    assert_eq!(show_id(), "", "etc -> / resolved outside the image");
}

/// `clean` removes only directories and regular files named like staging entries: a symlink so
/// named is neither followed nor has its target's mode changed, and a FIFO is not opened.
#[test]
fn clean_never_follows_or_chmods_a_symlink() {
    let env = Env::new();
    std::fs::create_dir_all(&env.store).unwrap();
    let outside = env.path("outside");
    std::fs::create_dir(&outside).unwrap();
    std::fs::write(outside.join("precious"), "x").unwrap();
    std::fs::set_permissions(&outside, std::fs::Permissions::from_mode(0o500)).unwrap();
    let file = env.path("file");
    std::fs::write(&file, "x").unwrap();
    std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o444)).unwrap();
    std::os::unix::fs::symlink(&outside, env.store.join(".#rmach-a.0000000000000001")).unwrap();
    std::os::unix::fs::symlink(&file, env.store.join(".#rmach-b.0000000000000002.raw")).unwrap();
    sh(&format!(
        "mkfifo {}",
        env.store.join(".#rmach-c.0000000000000003.raw").display()
    ));
    std::fs::create_dir(env.store.join(".#rmach-d.0000000000000004")).unwrap();
    env.ok(&["clean", "--all"]);
    let mode = |p: &std::path::Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o7777;
    assert_eq!(mode(&outside), 0o500);
    assert_eq!(mode(&file), 0o444);
    assert!(outside.join("precious").exists());
    assert_eq!(
        env.store_entries(),
        [
            ".#rmach-a.0000000000000001",
            ".#rmach-b.0000000000000002.raw",
            ".#rmach-c.0000000000000003.raw"
        ],
        "the stale directory goes, the rest stays"
    );
    std::fs::set_permissions(&outside, std::fs::Permissions::from_mode(0o700)).unwrap();
}

#[test]
fn global_options_and_environment_choose_the_store() {
    let env = Env::new();
    let src = env.empty_dir("src");
    let other = env.path("other-store");
    let out = env
        .command()
        .args([
            "--store",
            other.to_str().unwrap(),
            "import-fs",
            src.to_str().unwrap(),
            "dev",
        ])
        .output()
        .unwrap();
    assert!(out.status.success());
    assert!(other.join("dev").is_dir());
    assert!(!env.store.join("dev").exists());
    assert!(env.state.join("locks").is_dir());
    assert!(
        !env.state.join("locks/dev.lock").exists(),
        "a released lock leaves no file"
    );
}

#[test]
fn on_btrfs_images_are_subvolumes_and_clones_are_snapshots() {
    let scratch = Env::new();
    let fs = common::LoopFs::new(&scratch, "mkfs.btrfs -q", "300M");
    let env = Env::with_store_in(Some(&fs.mount));
    let src = env.path("src");
    make_full_tree(&src);
    env.ok(&["import-fs", src.to_str().unwrap(), "dev"]);
    let show: serde_json::Value =
        serde_json::from_str(&env.ok(&["show", "dev", "--json"])).unwrap();
    assert_eq!(show["type"], "subvolume");
    assert_same(&src, &env.store.join("dev"), FULL);
    env.ok(&["clone", "--read-only", "dev", "snap"]);
    let show: serde_json::Value =
        serde_json::from_str(&env.ok(&["show", "snap", "--json"])).unwrap();
    assert_eq!(show["type"], "subvolume");
    assert_eq!(show["read_only"], true);
    assert_same(&src, &env.store.join("snap"), FULL);
    let out = std::process::Command::new("btrfs")
        .args([
            "property",
            "get",
            env.store.join("snap").to_str().unwrap(),
            "ro",
        ])
        .output()
        .unwrap();
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "ro=true");
    env.ok(&["read-only", "snap", "no"]);
    env.ok(&["rename", "snap", "snap2"]);
    env.ok(&["remove", "dev", "snap2"]);
    assert!(env.store_entries().is_empty(), "{:?}", env.store_entries());
}

#[test]
fn completions_are_generated_for_each_shell() {
    let env = Env::new();
    for shell in ["bash", "zsh", "fish"] {
        let script = env.ok(&["completions", shell]);
        assert!(
            script.contains("import-tar") && script.contains("read-only"),
            "{shell}"
        );
    }
    env.fails(&["completions", "tcsh"], 2);
}

#[test]
fn usage_errors_exit_2_without_a_panic() {
    let env = Env::new();
    env.fails(&["no-such-verb"], 2);
    env.fails(&["rename", "only-one"], 2);
    env.fails(&["read-only", "dev", "maybe"], 2);
    let out = env.run(&["--help"]);
    assert!(out.status.success());
}

#[test]
fn a_full_disk_fails_cleanly_and_leaves_nothing() {
    let scratch = Env::new();
    let src = big_tree(&scratch);
    let small = tempfile::tempdir().unwrap();
    let _tmpfs = Tmpfs::mount(small.path(), "16m");
    let env = Env::with_store_in(Some(small.path()));
    let err = env.fails(&["import-fs", src.to_str().unwrap(), "dev"], 1);
    assert!(err.contains("No space left on device"), "{err}");
    assert!(
        err.contains(&format!("the store {} is full", env.store.display())),
        "said as import-tar says it: {err}"
    );
    assert!(!err.contains("os error"), "{err}");
    assert!(env.store_entries().is_empty(), "{:?}", env.store_entries());
}
