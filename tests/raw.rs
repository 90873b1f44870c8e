//! Raw disk images: import-raw of every input format (raw, bare file systems, qcow2 v2/v3 with
//! deflate and zstd clusters, compressed with gzip, zstd, xz, bzip2, from a file or a pipe)
//! checked byte for byte against the source after export-raw, sparseness, qemu-img as the
//! peer, refusals and a hostile qcow2 corpus under a memory limit, and running each partition
//! layout with no loop device or mount left behind (also after SIGKILL). Needs root.

mod common;
use common::raw as common_raw;
use common::run as common_run;

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

use common::{assert_success, require, sh, Env};
use common_raw::*;

/// A small tree with a bit of everything, and a file system image of it.
fn tree_and_ext4(env: &Env) -> (PathBuf, PathBuf) {
    let tree = env.path("tree");
    sh(&format!(
        "mkdir -p {t}/etc {t}/d && echo hello > {t}/etc/hostname && \
         head -c 3000000 /dev/urandom > {t}/d/random && ln -s etc/hostname {t}/link",
        t = tree.display()
    ));
    let img = env.path("fs.img");
    mkfs("ext4", &tree, &img);
    (tree, img)
}

fn stored(env: &Env, name: &str) -> PathBuf {
    env.store.join(format!("{name}.raw"))
}

fn same_bytes(a: &Path, b: &Path) {
    let st = Command::new("cmp").arg(a).arg(b).status().unwrap();
    assert!(st.success(), "{} and {} differ", a.display(), b.display());
}

fn allocated(p: &Path) -> u64 {
    use std::os::unix::fs::MetadataExt;
    std::fs::metadata(p).unwrap().blocks() * 512
}

#[test]
fn every_input_format_imports_to_the_same_bytes() {
    for tool in ["qemu-img", "mkfs.ext4", "xz", "zstd", "gzip", "bzip2"] {
        require(tool);
    }
    let env = Env::new();
    let (_, img) = tree_and_ext4(&env);
    let d = env.dir.path().display().to_string();
    sh(&format!(
        "cd {d} && qemu-img convert -O qcow2 -o compat=0.10 fs.img v2.qcow2 && \
         qemu-img convert -O qcow2 fs.img v3.qcow2 && \
         qemu-img convert -c -O qcow2 fs.img deflate.qcow2 && \
         qemu-img convert -c -O qcow2 -o compression_type=zstd fs.img zstd.qcow2 && \
         xz -k -T1 deflate.qcow2 && gzip -k fs.img && zstd -q -k fs.img && bzip2 -k v3.qcow2"
    ));
    let inputs = [
        "fs.img",
        "v2.qcow2",
        "v3.qcow2",
        "deflate.qcow2",
        "zstd.qcow2",
        "deflate.qcow2.xz",
        "fs.img.gz",
        "fs.img.zst",
        "v3.qcow2.bz2",
    ];
    for (i, input) in inputs.iter().enumerate() {
        let name = format!("in{i}");
        env.ok(&["import-raw", env.path(input).to_str().unwrap(), &name]);
        same_bytes(&stored(&env, &name), &img);
        // Sparse: the 96 MiB file system holds ~3 MiB of data.
        assert!(
            allocated(&stored(&env, &name)) < 24 << 20,
            "{input}: {} bytes allocated",
            allocated(&stored(&env, &name))
        );
    }
    // Internal snapshots are ignored: the active image is read, not the snapshot's state.
    sh(&format!(
        "cd {d} && cp v3.qcow2 snap.qcow2 && qemu-img snapshot -c before snap.qcow2 && \
         qemu-io -c 'write -P 0x55 0 64k' snap.qcow2 >/dev/null && \
         cp fs.img expected.img && \
         head -c 65536 /dev/zero | tr '\\0' '\\125' | dd of=expected.img conv=notrunc status=none"
    ));
    env.ok(&[
        "import-raw",
        env.path("snap.qcow2").to_str().unwrap(),
        "snap",
    ]);
    same_bytes(&stored(&env, "snap"), &env.path("expected.img"));
    // From a pipe, with its SHA-256 checked.
    let packed = std::fs::read(env.path("deflate.qcow2.xz")).unwrap();
    let sum = Command::new("sha256sum")
        .arg(env.path("deflate.qcow2.xz"))
        .output()
        .unwrap();
    let sum = String::from_utf8_lossy(&sum.stdout)[..64].to_string();
    let out = env.run_input(&["import-raw", "-", "piped", "--sha256", &sum], &packed);
    assert_success(&out, "import-raw - piped --sha256");
    same_bytes(&stored(&env, "piped"), &img);
    let err = String::from_utf8_lossy(
        &env.run_input(
            &["import-raw", "-", "bad", "--sha256", &"0".repeat(64)],
            &packed,
        )
        .stderr,
    )
    .into_owned();
    assert!(err.contains("SHA-256"), "{err}");
    assert!(!stored(&env, "bad").exists());
    // A name from the file: suffixes dropped.
    env.ok(&["import-raw", env.path("deflate.qcow2.xz").to_str().unwrap()]);
    assert!(stored(&env, "deflate").exists());
}

#[test]
fn export_raw_round_trips_in_every_format() {
    require("qemu-img");
    let env = Env::new();
    let (_, img) = tree_and_ext4(&env);
    env.ok(&["import-raw", img.to_str().unwrap(), "disk"]);
    // Sparse file, exact bytes.
    let out = env.path("out.raw");
    env.ok(&["export-raw", "disk", out.to_str().unwrap()]);
    same_bytes(&out, &img);
    assert!(allocated(&out) < 24 << 20);
    // Standard output.
    let o = env.command().args(["export-raw", "disk"]).output().unwrap();
    assert!(o.status.success());
    assert_eq!(o.stdout, std::fs::read(&img).unwrap());
    // Compressed by suffix, checked with the compressors' own tools.
    for (file, undo) in [
        ("out.raw.zst", "zstd -dc"),
        ("out.raw.xz", "xz -dc"),
        ("out.raw.gz", "gzip -dc"),
        ("out.raw.bz2", "bzip2 -dc"),
    ] {
        let p = env.path(file);
        env.ok(&["export-raw", "disk", p.to_str().unwrap()]);
        sh(&format!(
            "{undo} '{}' | cmp - '{}'",
            p.display(),
            img.display()
        ));
    }
    // qcow2: qemu-img finds it consistent and equal; rmach reads it back to the same bytes.
    let q = env.path("out.qcow2");
    env.ok(&["export-raw", "disk", q.to_str().unwrap()]);
    sh(&format!(
        "qemu-img check -q '{q}' && qemu-img compare -q '{q}' '{i}'",
        q = q.display(),
        i = img.display()
    ));
    let q2 = env.path("forced.img");
    env.ok(&[
        "export-raw",
        "disk",
        q2.to_str().unwrap(),
        "--format",
        "qcow2",
    ]);
    sh(&format!(
        "qemu-img compare -q -f qcow2 '{}' '{}'",
        q2.display(),
        img.display()
    ));
    env.ok(&["import-raw", q.to_str().unwrap(), "back"]);
    same_bytes(&stored(&env, "back"), &img);
    // An existing output needs --force; a directory image is refused with a hint.
    let err = env.fails(&["export-raw", "disk", out.to_str().unwrap()], 1);
    assert!(err.contains("--force"), "{err}");
}

#[test]
fn refusals_leave_no_image() {
    require("qemu-img");
    let env = Env::new();
    let (_, img) = tree_and_ext4(&env);
    let d = env.dir.path().display().to_string();
    sh(&format!(
        "cd {d} && qemu-img create -q -f qcow2 -b fs.img -F raw backed.qcow2 && \
         qemu-img create -q -f qcow2 -o data_file=ext.data ext.qcow2 16M && \
         qemu-img create -q --object secret,id=s0,data=pw -f qcow2 \
           -o encrypt.format=luks,encrypt.key-secret=s0 enc.qcow2 16M && \
         qemu-img convert -c -O qcow2 fs.img cut.qcow2 && truncate -s 200000 cut.qcow2 && \
         tar cf some.tar -C {d} fs.img"
    ));
    let cases = [
        ("backed.qcow2", "backing file"),
        ("ext.qcow2", "external data file"),
        ("enc.qcow2", "encrypted"),
        ("cut.qcow2", "past the end of the file"),
        ("some.tar", "import-tar"),
    ];
    for (file, why) in cases {
        let err = env.fails(&["import-raw", env.path(file).to_str().unwrap(), "x"], 1);
        assert!(err.contains(why), "{file}: {err}");
    }
    let _ = img;
    let empty = env.path("empty");
    std::fs::write(&empty, b"").unwrap();
    let err = env.fails(&["import-raw", empty.to_str().unwrap(), "x"], 1);
    assert!(err.contains("empty"), "{err}");
    assert!(
        env.store_entries().is_empty(),
        "left behind: {:?}",
        env.store_entries()
    );
}

/// rmach under a 1 GiB address-space limit: an allocation driven by a hostile size fails
/// the run instead of passing unnoticed.
fn import_limited(env: &Env, file: &Path) -> Output {
    Command::new("prlimit")
        .arg("--as=1073741824")
        .arg("--")
        .arg(env!("CARGO_BIN_EXE_rmach"))
        .args(["import-raw"])
        .arg(file)
        .arg("hostile")
        .env("RMACH_STORE", &env.store)
        .env("RMACH_STATE_DIR", &env.state)
        .env("RMACH_CACHE_DIR", &env.cache)
        .stdin(Stdio::null())
        .output()
        .unwrap()
}

#[test]
fn hostile_qcow2_corpus_is_refused_with_bounded_memory() {
    const C: usize = 65536;
    let env = Env::new();
    // The well-formed base imports, so each refusal below is the edit's doing.
    let good = env.path("good.qcow2");
    std::fs::write(&good, qcow2_by_hand(|_| {})).unwrap();
    env.ok(&["import-raw", good.to_str().unwrap(), "good"]);
    let data = std::fs::read(stored(&env, "good")).unwrap();
    assert_eq!(data.len(), 1 << 20);
    assert!(data[..C].iter().all(|&b| b == 0xab) && data[C..].iter().all(|&b| b == 0));
    type Edit = Box<dyn Fn(&mut Vec<u8>)>;
    let corpus: Vec<(&str, Edit, &str)> = vec![
        (
            "huge L1 size",
            Box::new(|f| put(f, 36, &u32::MAX.to_be_bytes())),
            "L1",
        ),
        (
            "L1 past EOF",
            Box::new(|f| put(f, 40, &(1u64 << 40).to_be_bytes())),
            "past the end",
        ),
        (
            "data cluster past EOF",
            Box::new(|f| put(f, 3 * C, &((1u64 << 40) | 1 << 63).to_be_bytes())),
            "past the end",
        ),
        (
            "refcount block is the refcount table",
            Box::new(|f| put(f, 2 * C, &(2 * C as u64).to_be_bytes())),
            "overlaps",
        ),
        (
            "refcount block is the header",
            Box::new(|f| put(f, 2 * C, &0x1_0000_0000u64.to_be_bytes())),
            "past the end",
        ),
        (
            "header length over a cluster",
            Box::new(|f| put(f, 100, &(1u32 << 20).to_be_bytes())),
            "header says",
        ),
        (
            "virtual size beyond the L1 table",
            Box::new(|f| put(f, 24, &(1u64 << 60).to_be_bytes())),
            "virtual size",
        ),
        (
            "L2 table is the L1 table",
            Box::new(|f| put(f, C, &((C as u64) | 1 << 63).to_be_bytes())),
            "overlaps",
        ),
        (
            "data cluster is an L2 table",
            Box::new(|f| put(f, 3 * C, &((3 * C as u64) | 1 << 63).to_be_bytes())),
            "overlaps",
        ),
        (
            "one data cluster twice",
            Box::new(|f| put(f, 3 * C + 8, &((5 * C as u64) | 1 << 63).to_be_bytes())),
            "overlaps",
        ),
        (
            "unaligned data cluster",
            Box::new(|f| put(f, 3 * C, &((5 * C as u64 + 512) | 1 << 63).to_be_bytes())),
            "aligned",
        ),
        (
            "unknown incompatible feature",
            Box::new(|f| put(f, 72, &(1u64 << 20).to_be_bytes())),
            "incompatible",
        ),
        (
            "corrupt bit",
            Box::new(|f| put(f, 72, &2u64.to_be_bytes())),
            "corrupt",
        ),
        (
            "cluster bits 30",
            Box::new(|f| put(f, 20, &30u32.to_be_bytes())),
            "cluster_bits",
        ),
        (
            "garbage compressed cluster",
            Box::new(|f| put(f, 3 * C, &((5 * C as u64) | 1 << 62).to_be_bytes())),
            "decompress",
        ),
        (
            "header cut short",
            Box::new(|f| f.truncate(60)),
            "truncated",
        ),
        (
            "file cut inside the L2 table",
            Box::new(|f| f.truncate(3 * C + 100)),
            "past the end",
        ),
        (
            "reserved L1 bits",
            Box::new(|f| put(f, C, &((3 * C as u64) | 1 << 63 | 2).to_be_bytes())),
            "reserved",
        ),
    ];
    for (what, edit, why) in corpus {
        let file = env.path("hostile.qcow2");
        std::fs::write(&file, qcow2_by_hand(edit)).unwrap();
        let out = import_limited(&env, &file);
        let err = String::from_utf8_lossy(&out.stderr).into_owned();
        assert_eq!(out.status.code(), Some(1), "{what}: {err}");
        assert!(err.contains(why) && err.contains("qcow2"), "{what}: {err}");
        assert_eq!(err.trim_end().lines().count(), 1, "{what}: {err}");
        assert!(!stored(&env, "hostile").exists(), "{what}");
    }
    assert_eq!(env.store_entries(), vec!["good.raw".to_string()]);
}

/// [`probe_root`] made into a bare ext4 disk and imported as `name`; the root's path.
fn probe_disk_imported(env: &Env, name: &str) -> PathBuf {
    let root = probe_root(env, "root");
    let img = env.path("ext4.img");
    mkfs("ext4", &root, &img);
    env.ok(&["import-raw", img.to_str().unwrap(), name]);
    root
}

/// A probe root with mount points for every partition and an os-release.
fn probe_root(env: &Env, name: &str) -> PathBuf {
    let root = env.path(name);
    common_run::make_rootfs(&root);
    for d in ["home", "srv", "efi", "boot", "var"] {
        std::fs::create_dir_all(root.join(d)).unwrap();
    }
    std::fs::write(
        root.join("etc/os-release"),
        "ID=rawprobe\nPRETTY_NAME=\"Raw Probe\"\n",
    )
    .unwrap();
    std::fs::write(root.join("etc/marker"), name).unwrap();
    root
}

fn run_in(env: &Env, name: &str, opts: &[&str], script: &str) -> (i32, String, String) {
    let mut args = vec!["run"];
    args.extend_from_slice(opts);
    args.extend_from_slice(&[name, "--", "/bin/sh", "-c", script]);
    let o = env.run(&args);
    (
        o.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&o.stdout).into_owned(),
        String::from_utf8_lossy(&o.stderr).into_owned(),
    )
}

#[test]
fn every_layout_runs_and_leaves_no_loop_device() {
    for tool in [
        "sgdisk",
        "sfdisk",
        "mkfs.btrfs",
        "mkfs.xfs",
        "mksquashfs",
        "mkfs.erofs",
        "mkfs.vfat",
    ] {
        require(tool);
    }
    let env = Env::new();
    let root = probe_root(&env, "root");
    // Bare file systems.
    for fs in ["ext4", "btrfs", "xfs", "squashfs", "erofs"] {
        let img = env.path(&format!("{fs}.img"));
        mkfs(fs, &root, &img);
        let name = format!("bare-{fs}");
        env.ok(&["import-raw", img.to_str().unwrap(), &name]);
        let (code, out, err) = run_in(&env, &name, &[], "cat /etc/marker; grep ' / ' /proc/mounts");
        assert_eq!(code, 0, "{fs}: {err}");
        assert!(out.starts_with("root"), "{fs}: {out}");
        assert_no_loops(&stored(&env, &name));
    }
    // MBR and GPT with one Linux partition.
    let ext4 = env.path("ext4.img");
    mbr_disk(&env.path("mbr.img"), &ext4);
    gpt_disk(&env.path("gpt1.img"), &[(LINUX, &ext4)]);
    for disk in ["mbr", "gpt1"] {
        env.ok(&[
            "import-raw",
            env.path(&format!("{disk}.img")).to_str().unwrap(),
            disk,
        ]);
        let (code, out, err) = run_in(&env, disk, &[], "cat /etc/marker");
        assert_eq!((code, out.as_str()), (0, "root"), "{disk}: {err}");
        assert_no_loops(&stored(&env, disk));
    }
    // Discoverable partitions: root, /home, /srv and the ESP, each its own file system.
    let home = env.path("hometree");
    std::fs::create_dir_all(home.join("user")).unwrap();
    std::fs::write(home.join("user/file"), "from home").unwrap();
    let srv = env.path("srvtree");
    std::fs::create_dir_all(&srv).unwrap();
    std::fs::write(srv.join("file"), "from srv").unwrap();
    mkfs("ext4", &home, &env.path("home.img"));
    mkfs("erofs", &srv, &env.path("srv.img"));
    mkfs("vfat", &srv, &env.path("esp.img"));
    gpt_disk(
        &env.path("dps.img"),
        &[
            (ESP, &env.path("esp.img")),
            (ROOT_X86_64, &ext4),
            (HOME, &env.path("home.img")),
            (SRV, &env.path("srv.img")),
        ],
    );
    env.ok(&["import-raw", env.path("dps.img").to_str().unwrap(), "dps"]);
    let (code, out, err) = run_in(
        &env,
        "dps",
        &[],
        "cat /etc/marker /home/user/file /srv/file; echo; grep -E ' /(home|srv|efi) ' /proc/mounts | while read d m f r; do echo \"$m $f\"; done",
    );
    assert_eq!(code, 0, "{err}");
    // The ESP is mounted where the kernel has vfat, and skipped with a warning where not.
    let vfat = std::fs::read_to_string("/proc/filesystems")
        .unwrap()
        .contains("\tvfat\n");
    let esp = if vfat { "/efi vfat\n" } else { "" };
    assert_eq!(
        out,
        format!("rootfrom homefrom srv\n{esp}/srv erofs\n/home ext4\n"),
        "{err}"
    );
    assert_eq!(!vfat, err.contains("no vfat file system"), "{err}");
    // The image's os-release, read from inside the disk.
    let shown = env.ok(&["show", "dps"]);
    assert!(shown.contains("OS: Raw Probe"), "{shown}");
    assert_no_loops(&stored(&env, "dps"));
    // A verity partition is refused by name, not half-honoured.
    gpt_disk(
        &env.path("verity.img"),
        &[
            (ROOT_X86_64, &ext4),
            (ROOT_VERITY_X86_64, &env.path("srv.img")),
        ],
    );
    env.ok(&[
        "import-raw",
        env.path("verity.img").to_str().unwrap(),
        "verity",
    ]);
    let (code, _, err) = run_in(&env, "verity", &[], "true");
    assert_eq!(code, 1);
    assert!(err.contains("verity"), "{err}");
    // Nothing mounted stays visible on the host.
    let mounts = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
    assert!(!mounts.contains(env.state.to_str().unwrap()), "{mounts}");
}

#[test]
fn run_options_read_only_ephemeral_and_writes() {
    let env = Env::new();
    let root = probe_disk_imported(&env, "opts");
    // Writes reach the disk image and persist.
    let (code, _, err) = run_in(&env, "opts", &[], "echo written > /etc/new");
    assert_eq!(code, 0, "{err}");
    let (code, out, err) = run_in(
        &env,
        "opts",
        &["--hostname", "rawhost", "-E", "K=v"],
        "cat /etc/new; hostname; echo $K",
    );
    assert_eq!((code, out.as_str()), (0, "written\nrawhost\nv\n"), "{err}");
    // --ephemeral: changes vanish.
    let (code, _, err) = run_in(&env, "opts", &["-x"], "echo gone > /etc/new");
    assert_eq!(code, 0, "{err}");
    let (_, out, _) = run_in(&env, "opts", &[], "cat /etc/new");
    assert_eq!(out, "written\n");
    // --read-only, and a read-only image, refuse writes.
    let (code, _, _) = run_in(&env, "opts", &["--read-only"], "echo x > /etc/new");
    assert_ne!(code, 0);
    env.ok(&["read-only", "opts", "yes"]);
    let (code, _, err) = run_in(&env, "opts", &[], "echo x > /etc/new");
    assert_ne!(code, 0, "{err}");
    let bind = format!("{}:/srv", root.join("etc").display());
    let (code, out, err) = run_in(
        &env,
        "opts",
        &["--private-users", "pick", "--bind-ro", &bind],
        "cat /etc/marker; cat /srv/marker && echo ' bound'",
    );
    assert_eq!((code, out.as_str()), (0, "rootroot bound\n"), "{err}");
    // The payload's status comes back.
    let (code, _, _) = run_in(&env, "opts", &[], "exit 7");
    assert_eq!(code, 7);
    assert_no_loops(&stored(&env, "opts"));
}

#[test]
fn sigkill_leaves_no_loop_device_or_mount() {
    let env = Env::new();
    probe_disk_imported(&env, "killed");
    let file = stored(&env, "killed");
    // SIGKILL of the payload: rmach reports 128+9 and cleans up.
    let (code, _, _) = run_in(&env, "killed", &[], "kill -9 $$");
    assert_eq!(code, 137);
    assert_no_loops(&file);
    // SIGKILL of rmach itself while the machine runs: the machine is killed after it (as a
    // supervisor would), and the kernel then drops the namespace, its mounts and the loop device.
    let mut child = env
        .command()
        .args(["run", "killed", "--", "/bin/sleep", "300"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    while loops_on(&file).trim().is_empty() {
        assert!(std::time::Instant::now() < deadline, "never attached");
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    std::thread::sleep(std::time::Duration::from_millis(300));
    let pid = child.id();
    let descendants = descendants(pid);
    sh(&format!("kill -9 {pid}"));
    let _ = child.wait();
    for p in descendants {
        let _ = Command::new("kill").args(["-9", &p.to_string()]).status();
    }
    assert_no_loops(&file);
    // A killed rmach cannot remove its lock files (nor can a killed nspawn): clean does.
    env.ok(&["clean"]);
}

/// Every process below `pid`.
fn descendants(pid: u32) -> Vec<u32> {
    let mut all = Vec::new();
    let mut todo = vec![pid];
    while let Some(p) = todo.pop() {
        let kids =
            std::fs::read_to_string(format!("/proc/{p}/task/{p}/children")).unwrap_or_default();
        for k in kids.split_whitespace().filter_map(|k| k.parse().ok()) {
            all.push(k);
            todo.push(k);
        }
    }
    all
}

#[test]
fn clone_of_a_raw_image_is_a_reflink_on_btrfs() {
    let scratch = Env::new();
    let btrfs = common::LoopFs::new(&scratch, "mkfs.btrfs -q", "400M");
    let env = Env::with_store_in(Some(&btrfs.mount));
    let (_, img) = tree_and_ext4(&scratch);
    env.ok(&["import-raw", img.to_str().unwrap(), "orig"]);
    env.ok(&["clone", "orig", "copy"]);
    same_bytes(&stored(&env, "copy"), &img);
    // Every extent of the clone is shared with the original: nothing exclusive.
    let du = Command::new("btrfs")
        .args(["filesystem", "du", "-s", "--raw"])
        .arg(stored(&env, "copy"))
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&du.stdout).into_owned();
    let exclusive: u64 = text
        .lines()
        .nth(1)
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|n| n.parse().ok())
        .unwrap_or(u64::MAX);
    assert_eq!(exclusive, 0, "{text}");
    drop(env);
}
