//! pull-tar and pull-raw against a loopback HTTP server started by each test
//! (tests/common/http.rs): signed and unsigned checksum lists, FILE.sha256, tampered tarball,
//! tampered list, an unknown signing key, 404 and 500, a connection dropped half-way (resumed
//! with Range), redirects, proxies; raw and qcow2 disk images (qemu-img). Every failure leaves
//! no image and nothing after `clean`. Keys are made with GnuPG (gnupg) in the test; the
//! tarball is written by GNU tar and zstd. Needs root (owners, devices).

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;

use common::http::{Proxy, Route, Server};
use common::tree::{assert_same, make_full_tree, FULL};
use common::{assert_success, require, sh, Env};

/// A throw-away GnuPG home with one signing key; its agent is stopped on drop.
struct Gpg {
    home: PathBuf,
}

impl Gpg {
    fn new(dir: &Path, uid: &str) -> Gpg {
        require("gpg");
        let home = dir.join(format!("gnupg-{}", uid.replace(['@', ' ', '<', '>'], "")));
        std::fs::create_dir_all(&home).unwrap();
        sh(&format!(
            "chmod 700 '{h}'; gpg --homedir '{h}' --batch --quiet --passphrase '' \
             --quick-gen-key '{uid}' ed25519 sign never 2>/dev/null",
            h = home.display()
        ));
        Gpg { home }
    }

    /// The public key as a binary keyring file.
    fn export(&self, to: &Path) {
        sh(&format!(
            "gpg --homedir '{}' --batch --quiet --export > '{}'",
            self.home.display(),
            to.display()
        ));
    }

    /// A detached signature over `data`, binary or armored.
    fn sign(&self, data: &[u8], armor: bool) -> Vec<u8> {
        let input = self.home.join("to-sign");
        std::fs::write(&input, data).unwrap();
        let out = Command::new("gpg")
            .args([
                "--homedir",
                self.home.to_str().unwrap(),
                "--batch",
                "--quiet",
            ])
            .args(if armor { &["--armor"][..] } else { &[][..] })
            .args(["--detach-sign", "-o", "-", input.to_str().unwrap()])
            .output()
            .unwrap();
        assert_success(&out, "gpg --detach-sign");
        out.stdout
    }
}

impl Drop for Gpg {
    fn drop(&mut self) {
        let _ = Command::new("gpgconf")
            .args(["--homedir", self.home.to_str().unwrap(), "--kill", "all"])
            .status();
    }
}

/// A source tree and its tarball (GNU tar, zstd), and the SHA256SUMS line for it.
struct Fixture {
    src: PathBuf,
    tarball: Vec<u8>,
    sums: Vec<u8>,
}

fn fixture(env: &Env, file: &str) -> Fixture {
    let src = env.path("src");
    make_full_tree(&src);
    // Incompressible data, so that a connection dropped "half-way" is cut inside real data.
    sh(&format!(
        "head -c 3000000 /dev/urandom > '{}/srv/random'",
        src.display()
    ));
    let tarball = env.path(file);
    sh(&format!(
        "tar --xattrs --xattrs-include='*' --acls --sparse --format=posix -C '{}' -cf - . | zstd -q -T0 > '{}'",
        src.display(),
        tarball.display()
    ));
    let tarball = std::fs::read(&tarball).unwrap();
    let digest = sha256_hex(&tarball);
    let sums = format!("{}  other.tar\n{digest}  {file}\n", "0".repeat(64)).into_bytes();
    Fixture { src, tarball, sums }
}

fn sha256_hex(data: &[u8]) -> String {
    use sha2::Digest;
    hex::encode(sha2::Sha256::digest(data))
}

/// Requires `args` to fail with one line naming `needle`, leaving no image and nothing for
/// `clean` to find.
fn refused(env: &Env, args: &[&str], needle: &str) -> String {
    let msg = env.fails(args, 1);
    assert!(msg.contains(needle), "{needle:?} not in {msg:?}");
    assert!(
        env.store_entries().iter().all(|e| e.ends_with(".lck")),
        "leftovers: {:?}",
        env.store_entries()
    );
    let cleaned = env.ok(&["clean"]);
    assert!(cleaned.trim().is_empty(), "clean found {cleaned:?}");
    assert!(
        env.ok(&["list", "--all"]).lines().count() <= 1,
        "an image remains"
    );
    msg
}

/// A served signed fixture: tarball at /d/img.tar.zst, SHA256SUMS and SHA256SUMS.gpg beside
/// it, and the keyring path.
fn signed_setup(env: &Env, server: &Server) -> (Fixture, Gpg, PathBuf) {
    let fx = fixture(env, "img.tar.zst");
    let gpg = Gpg::new(env.dir.path(), "rmach test <signer@example.invalid>");
    let keyring = env.path("pubring.gpg");
    gpg.export(&keyring);
    server.set("/d/img.tar.zst", Route::File(fx.tarball.clone()));
    server.set("/d/SHA256SUMS", Route::File(fx.sums.clone()));
    server.set("/d/SHA256SUMS.gpg", Route::File(gpg.sign(&fx.sums, false)));
    (fx, gpg, keyring)
}

/// A test's store and loopback server, serving the signed fixture of [`signed_setup`].
/// Fields drop in order: the GnuPG agent is stopped before the store's directory goes.
struct Signed {
    gpg: Gpg,
    fx: Fixture,
    server: Server,
    keyring: PathBuf,
    env: Env,
}

impl Signed {
    fn new() -> Signed {
        let env = Env::new();
        let server = Server::start();
        let (fx, gpg, keyring) = signed_setup(&env, &server);
        Signed {
            gpg,
            fx,
            server,
            keyring,
            env,
        }
    }

    fn url(&self) -> String {
        self.server.url("/d/img.tar.zst")
    }

    fn keyring(&self) -> &str {
        self.keyring.to_str().unwrap()
    }

    /// `pull-tar URL --keyring K EXTRA...` succeeds and image `name` is the fixture's tree.
    fn pulls(&self, extra: &[&str], name: &str) {
        let url = self.url();
        let mut args = vec!["pull-tar", &url, "--keyring", self.keyring()];
        args.extend_from_slice(extra);
        pulls(&self.env, &args, &self.fx, name);
    }
}

/// A test's store and loopback server, serving the unsigned fixture at /img.tar.zst.
fn unsigned() -> (Env, Server, Fixture) {
    let env = Env::new();
    let server = Server::start();
    let fx = fixture(&env, "img.tar.zst");
    server.set("/img.tar.zst", Route::File(fx.tarball.clone()));
    (env, server, fx)
}

/// `args` succeed and image `name` holds the fixture's tree.
fn pulls(env: &Env, args: &[&str], fx: &Fixture, name: &str) {
    env.ok(args);
    assert_same(&fx.src, &env.store.join(name), FULL);
}

#[test]
fn signed_pull_imports_the_tree() {
    let t = Signed::new();
    let env = &t.env;
    t.pulls(&[], "img");
    // Streamed: the download was never written anywhere (no cache, nothing else in the store).
    assert!(!env.cache.exists(), "pull-tar wrote to the cache");
    assert!(env
        .store_entries()
        .iter()
        .all(|e| e == "img" || e.ends_with(".lck")));
    // The same again is refused without --force, and replaced with it; --read-only holds.
    let msg = env.fails(&["pull-tar", &t.url(), "--keyring", t.keyring()], 1);
    assert!(msg.contains("exists"), "{msg}");
    t.pulls(&["--force", "--read-only"], "img");
    let show: serde_json::Value =
        serde_json::from_str(&env.ok(&["show", "img", "--json"])).unwrap();
    assert_eq!(show["read_only"], true);
}

#[test]
fn armored_signature_and_explicit_name() {
    let t = Signed::new();
    t.server.remove("/d/SHA256SUMS.gpg");
    t.server.set(
        "/d/SHA256SUMS.asc",
        Route::File(t.gpg.sign(&t.fx.sums, true)),
    );
    t.pulls(&["web-1"], "web-1");
}

#[test]
fn unsigned_sums_need_verify_checksum() {
    let t = Signed::new();
    t.server.remove("/d/SHA256SUMS.gpg");
    let url = t.url();
    refused(
        &t.env,
        &["pull-tar", &url, "--keyring", t.keyring()],
        "SHA256SUMS.gpg",
    );
    pulls(
        &t.env,
        &["pull-tar", &url, "--verify", "checksum"],
        &t.fx,
        "img",
    );
}

#[test]
fn per_file_sha256_when_there_is_no_sums_list() {
    let (env, server, fx) = unsigned();
    let url = server.url("/img.tar.zst");
    refused(
        &env,
        &["pull-tar", &url, "--verify=checksum"],
        "no checksum list",
    );
    server.set(
        "/img.tar.zst.sha256",
        Route::File(format!("{}  img.tar.zst\n", sha256_hex(&fx.tarball)).into_bytes()),
    );
    pulls(&env, &["pull-tar", &url, "--verify=checksum"], &fx, "img");
}

#[test]
fn verify_no_needs_no_sums() {
    let (env, server, fx) = unsigned();
    let url = server.url("/img.tar.zst");
    pulls(&env, &["pull-tar", &url, "--verify=no"], &fx, "img");
}

#[test]
fn tampered_tarball_leaves_nothing() {
    let t = Signed::new();
    let (env, server, fx) = (&t.env, &t.server, &t.fx);
    // A valid tarball that imports fine, but not the one the list names: the import runs to
    // its end before the digest is known, and must then be thrown away.
    let other = env.path("other.tar.zst");
    sh(&format!(
        "tar -C '{}' -cf - etc | zstd -q > '{}'",
        fx.src.display(),
        other.display()
    ));
    server.set(
        "/d/img.tar.zst",
        Route::File(std::fs::read(&other).unwrap()),
    );
    let url = t.url();
    let msg = refused(
        env,
        &["pull-tar", &url, "--keyring", t.keyring()],
        "SHA-256",
    );
    assert!(
        msg.contains(&url) && msg.contains("nothing was imported"),
        "{msg}"
    );
}

#[test]
fn tampered_sums_and_unknown_key_fail_the_signature() {
    let t = Signed::new();
    let (env, server, fx) = (&t.env, &t.server, &t.fx);
    let url = t.url();
    let k = t.keyring();
    let good_sums = fx.sums.clone();
    let mut evil = fx.sums.clone();
    evil[0] = if evil[0] == b'1' { b'2' } else { b'1' };
    server.set("/d/SHA256SUMS", Route::File(evil));
    refused(env, &["pull-tar", &url, "--keyring", k], "bad signature");

    server.set("/d/SHA256SUMS", Route::File(good_sums.clone()));
    let stranger = Gpg::new(env.dir.path(), "stranger <x@example.invalid>");
    server.set(
        "/d/SHA256SUMS.gpg",
        Route::File(stranger.sign(&good_sums, false)),
    );
    refused(env, &["pull-tar", &url, "--keyring", k], "bad signature");
    // A keyring that does not exist is named.
    refused(
        env,
        &["pull-tar", &url, "--keyring", "/nonexistent/ring.gpg"],
        "/nonexistent/ring.gpg",
    );
}

#[test]
fn sums_that_do_not_list_the_file() {
    let (env, server, _fx) = unsigned();
    server.set("/SHA256SUMS", Route::File(b"00  other\n".to_vec()));
    refused(
        &env,
        &["pull-tar", &server.url("/img.tar.zst"), "--verify=checksum"],
        "does not list img.tar.zst",
    );
}

#[test]
fn http_errors_name_url_and_status() {
    let env = Env::new();
    let server = Server::start();
    let url = server.url("/missing/img.tar");
    let msg = refused(&env, &["pull-tar", &url, "--verify=no"], "404");
    assert!(msg.contains(&url), "{msg}");
    server.set("/broken.tar", Route::Status(500));
    let url = server.url("/broken.tar");
    let msg = refused(&env, &["pull-tar", &url, "--verify=no"], "HTTP 500");
    assert!(msg.contains(&url), "{msg}");
    // Nothing listens on port 1: connection refused, named with the URL.
    let msg = refused(
        &env,
        &["pull-tar", "http://127.0.0.1:1/x.tar", "--verify=no"],
        "http://127.0.0.1:1/x.tar",
    );
    assert!(msg.to_lowercase().contains("refused"), "{msg}");
    // TLS to a plain-HTTP server (which answers the ClientHello with a 400 page) fails at
    // once, and says TLS.
    let plain = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let tls = format!("https://{}/x.tar", plain.local_addr().unwrap());
    std::thread::spawn(move || {
        for conn in plain.incoming().take(5) {
            let mut conn = conn.unwrap();
            let _ = std::io::Write::write_all(&mut conn, b"HTTP/1.0 400 Bad Request\r\n\r\n");
        }
    });
    let msg = refused(&env, &["pull-tar", &tls, "--verify=no"], "TLS");
    assert!(msg.contains(&tls), "{msg}");
    // A URL that names no file is a usage problem caught before any request.
    let msg = env.fails(&["pull-tar", &server.url("/dir/"), "--verify=no"], 1);
    assert!(msg.contains("names no file"), "{msg}");
}

#[test]
fn dropped_connection_is_resumed() {
    let t = Signed::new();
    let (server, fx) = (&t.server, &t.fx);
    let third = fx.tarball.len() / 3;
    server.set(
        "/d/img.tar.zst",
        Route::DropAfter {
            data: fx.tarball.clone(),
            after: third,
            times: 2,
        },
    );
    t.pulls(&[], "img");
    let ranges: Vec<String> = server
        .requests()
        .into_iter()
        .filter(|r| r.path == "/d/img.tar.zst")
        .filter_map(|r| r.range)
        .collect();
    assert_eq!(
        ranges,
        vec![format!("bytes={third}-"), format!("bytes={}-", 2 * third)],
        "each retry asks for the rest"
    );
}

#[test]
fn a_server_ignoring_range_is_resumed_by_skipping() {
    let (env, server, fx) = unsigned();
    server.set(
        "/img.tar.zst",
        Route::DropIgnoringRange {
            data: fx.tarball.clone(),
            after: fx.tarball.len() / 2,
            times: 1,
        },
    );
    server.set(
        "/img.tar.zst.sha256",
        Route::File(sha256_hex(&fx.tarball).into_bytes()),
    );
    let url = server.url("/img.tar.zst");
    pulls(&env, &["pull-tar", &url, "--verify=checksum"], &fx, "img");
    assert_eq!(
        server
            .requests()
            .iter()
            .filter(|r| r.path == "/img.tar.zst")
            .count(),
        2
    );
}

#[test]
fn a_connection_that_keeps_dropping_fails_cleanly() {
    let (env, server, fx) = unsigned();
    server.set(
        "/img.tar.zst",
        Route::DropAfter {
            data: fx.tarball.clone(),
            after: 0,
            times: usize::MAX,
        },
    );
    refused(
        &env,
        &["pull-tar", &server.url("/img.tar.zst"), "--verify=no"],
        "gave up",
    );
}

#[test]
fn redirects_are_followed() {
    let t = Signed::new();
    let server = &t.server;
    let real = t.fx.tarball.clone();
    server.set("/d/img.tar.zst", Route::Redirect("/store/blob-1".into()));
    server.set(
        "/store/blob-1",
        Route::Redirect(server.url("/store/blob-2")),
    );
    server.set("/store/blob-2", Route::File(real));
    t.pulls(&[], "img");
}

#[test]
fn proxies_come_from_the_environment() {
    let (env, server, fx) = unsigned();
    let proxy = Proxy::start();
    let url = server.url("/img.tar.zst");
    // `args` through the proxy in http_proxy, with NO_PROXY as given.
    let pull = |args: &[&str], no_proxy: Option<&str>| {
        let mut cmd = env.command();
        cmd.args(args).env("http_proxy", proxy.url());
        match no_proxy {
            Some(hosts) => cmd.env("NO_PROXY", hosts),
            None => cmd.env_remove("NO_PROXY").env_remove("no_proxy"),
        };
        let out = cmd.output().unwrap();
        assert_success(&out, &format!("rmach {args:?} through the proxy"));
    };
    pull(&["pull-tar", &url, "--verify=no"], None);
    assert_same(&fx.src, &env.store.join("img"), FULL);
    let target = format!("CONNECT 127.0.0.1:{} HTTP/1.1", server.port);
    assert_eq!(
        proxy.request_lines(),
        vec![target],
        "the download went through the proxy"
    );
    // NO_PROXY names the host: the proxy is not used.
    pull(
        &["pull-tar", &url, "direct", "--verify=no"],
        Some("127.0.0.1"),
    );
    assert_eq!(proxy.request_lines().len(), 1);
}

/// A 24 MiB disk image with data scattered through it (and holes), as raw bytes.
fn disk_image(env: &Env) -> (PathBuf, Vec<u8>) {
    let path = env.path("disk.raw");
    sh(&format!(
        "truncate -s 24M '{p}' && head -c 1000000 /dev/urandom | dd of='{p}' bs=1M seek=2 conv=notrunc status=none \
         && printf end | dd of='{p}' bs=1 seek=25165821 conv=notrunc status=none",
        p = path.display()
    ));
    let bytes = std::fs::read(&path).unwrap();
    (path, bytes)
}

#[test]
fn pull_raw_of_compressed_raw_and_qcow2() {
    require("qemu-img");
    let env = Env::new();
    let server = Server::start();
    let (raw, bytes) = disk_image(&env);
    let zst = env.path("disk.raw.zst");
    let qcow2 = env.path("vm.qcow2");
    sh(&format!(
        "zstd -q '{}' -o '{}' && qemu-img convert -f raw -O qcow2 '{}' '{}'",
        raw.display(),
        zst.display(),
        raw.display(),
        qcow2.display()
    ));
    let zst = std::fs::read(&zst).unwrap();
    let qcow2 = std::fs::read(&qcow2).unwrap();
    let gpg = Gpg::new(env.dir.path(), "rmach raw <raw@example.invalid>");
    let keyring = env.path("pubring.gpg");
    gpg.export(&keyring);
    let sums = format!(
        "{}  disk.raw.zst\n{}  vm.qcow2\n",
        sha256_hex(&zst),
        sha256_hex(&qcow2)
    )
    .into_bytes();
    server.set("/i/disk.raw.zst", Route::File(zst.clone()));
    server.set("/i/vm.qcow2", Route::File(qcow2));
    server.set("/i/SHA256SUMS", Route::File(sums.clone()));
    server.set("/i/SHA256SUMS.gpg", Route::File(gpg.sign(&sums, false)));
    let k = keyring.to_str().unwrap();
    env.ok(&["pull-raw", &server.url("/i/disk.raw.zst"), "--keyring", k]);
    assert_eq!(std::fs::read(env.store.join("disk.raw")).unwrap(), bytes);
    env.ok(&["pull-raw", &server.url("/i/vm.qcow2"), "--keyring", k]);
    assert_eq!(std::fs::read(env.store.join("vm.raw")).unwrap(), bytes);
    // A dropped connection is resumed here too.
    server.set(
        "/i/disk.raw.zst",
        Route::DropAfter {
            data: zst.clone(),
            after: zst.len() / 2,
            times: 1,
        },
    );
    env.ok(&[
        "pull-raw",
        &server.url("/i/disk.raw.zst"),
        "again",
        "--keyring",
        k,
    ]);
    assert_eq!(std::fs::read(env.store.join("again.raw")).unwrap(), bytes);
    // Another file under the name: refused after the whole download, nothing kept.
    let mut other = zst.clone();
    other.extend_from_slice(&zst);
    server.set("/i/disk.raw.zst", Route::File(other));
    let before = env.store_entries();
    let msg = env.fails(
        &[
            "pull-raw",
            &server.url("/i/disk.raw.zst"),
            "bad",
            "--keyring",
            k,
        ],
        1,
    );
    assert!(msg.contains("SHA-256"), "{msg}");
    assert_eq!(env.store_entries(), before);
}
