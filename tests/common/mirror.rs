//! A hermetic Debian-style mirror for tests: tiny .debs built with dpkg-deb, Packages and
//! Packages.xz with by-hash copies, a Release signed (InRelease) with a key generated here by
//! sequoia, served on 127.0.0.1 by a small HTTP server that honours Range requests.

use std::io::{BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::Command;

use openpgp::cert::prelude::*;
use openpgp::policy::StandardPolicy;
use openpgp::serialize::stream::{Message, Signer};
use openpgp::serialize::Serialize;
use sequoia_openpgp as openpgp;
use sha2::{Digest, Sha256};

#[derive(Clone)]
pub struct Pkg {
    pub name: String,
    pub version: String,
    pub priority: String,
    pub depends: String,
    pub pre_depends: String,
    /// Paths (relative, like `usr/bin/x`) and contents; a content starting with `->` is a symlink.
    pub files: Vec<(String, String)>,
    /// `xz`, `zstd`, `gzip` or `none`.
    pub compression: String,
}

pub fn pkg(name: &str, priority: &str, depends: &str) -> Pkg {
    Pkg {
        name: name.into(),
        version: "1.0".into(),
        priority: priority.into(),
        depends: depends.into(),
        pre_depends: String::new(),
        files: vec![(format!("usr/share/doc/{name}/README"), format!("{name}\n"))],
        compression: "xz".into(),
    }
}

pub struct Mirror {
    pub root: PathBuf,
    pub url: String,
    pub keyring: PathBuf,
    pub other_keyring: PathBuf,
    pub suite: String,
    /// The Release text as signed, and the key that signed it.
    pub release: String,
    cert: Cert,
}

impl Mirror {
    /// Signs `edit`'s version of the Release text with the mirror's key and serves it in
    /// place of the current one (an attacker holding a validly signed file, or the archive
    /// moving on).
    pub fn resign(&self, edit: impl Fn(&str) -> String) {
        let release = edit(&self.release);
        let dists = self.root.join("dists").join(&self.suite);
        std::fs::write(dists.join("Release"), &release).unwrap();
        std::fs::write(dists.join("InRelease"), clearsign(&self.cert, &release)).unwrap();
    }
}

pub struct Spec<'a> {
    pub suite: &'a str,
    pub codename: &'a str,
    pub origin: &'a str,
    pub valid_until: Option<&'a str>,
    pub pkgs: Vec<Pkg>,
}

fn generate() -> Cert {
    CertBuilder::new()
        .add_userid("rmach test archive <test@invalid>")
        .add_signing_subkey()
        .generate()
        .unwrap()
        .0
}

fn write_keyring(cert: &Cert, path: &Path) {
    let mut out = Vec::new();
    cert.serialize(&mut out).unwrap();
    std::fs::write(path, out).unwrap();
}

fn sha256(data: &[u8]) -> String {
    hex::encode(Sha256::digest(data))
}

fn build_deb(pool: &Path, work: &Path, p: &Pkg) -> PathBuf {
    let root = work.join(format!("build-{}", p.name));
    std::fs::create_dir_all(root.join("DEBIAN")).unwrap();
    let mut control = format!(
        "Package: {}\nVersion: {}\nArchitecture: amd64\nMaintainer: Test <test@invalid>\nPriority: {}\nDescription: test package {}\n",
        p.name, p.version, p.priority, p.name
    );
    if !p.depends.is_empty() {
        control += &format!("Depends: {}\n", p.depends);
    }
    std::fs::write(root.join("DEBIAN/control"), control).unwrap();
    for (path, content) in &p.files {
        let dst = root.join(path);
        std::fs::create_dir_all(dst.parent().unwrap()).unwrap();
        match content.strip_prefix("->") {
            Some(target) => std::os::unix::fs::symlink(target, &dst).unwrap(),
            None => std::fs::write(&dst, content).unwrap(),
        }
    }
    let deb = pool.join(format!("{}_{}_amd64.deb", p.name, p.version));
    let out = Command::new("dpkg-deb")
        .arg("--root-owner-group")
        .arg(format!("-Z{}", p.compression))
        .arg("--build")
        .arg(&root)
        .arg(&deb)
        .output()
        .unwrap();
    super::assert_success(&out, "dpkg-deb --build");
    deb
}

/// Builds the mirror under `dir` and starts serving it.
pub fn build(dir: &Path, spec: Spec<'_>) -> Mirror {
    let root = dir.join("mirror");
    let pool = root.join("pool/main");
    std::fs::create_dir_all(&pool).unwrap();
    let mut packages = String::new();
    for p in &spec.pkgs {
        let deb = build_deb(&pool, dir, p);
        let data = std::fs::read(&deb).unwrap();
        let rel = deb.strip_prefix(&root).unwrap().display().to_string();
        packages += &format!(
            "Package: {}\nVersion: {}\nArchitecture: amd64\nPriority: {}\n",
            p.name, p.version, p.priority
        );
        if !p.depends.is_empty() {
            packages += &format!("Depends: {}\n", p.depends);
        }
        if !p.pre_depends.is_empty() {
            packages += &format!("Pre-Depends: {}\n", p.pre_depends);
        }
        packages += &format!(
            "Filename: {rel}\nSize: {}\nSHA256: {}\nDescription: test package {}\n multi-line\n\n",
            data.len(),
            sha256(&data),
            p.name
        );
    }
    let dists = root.join("dists").join(spec.suite);
    let bin = dists.join("main/binary-amd64");
    std::fs::create_dir_all(bin.join("by-hash/SHA256")).unwrap();
    let mut xz = Vec::new();
    liblzma::read::XzEncoder::new(packages.as_bytes(), 6)
        .read_to_end(&mut xz)
        .unwrap();
    let mut sums = String::new();
    for (name, data) in [("Packages", packages.as_bytes()), ("Packages.xz", &xz[..])] {
        std::fs::write(bin.join(name), data).unwrap();
        std::fs::write(bin.join("by-hash/SHA256").join(sha256(data)), data).unwrap();
        sums += &format!(
            " {} {} main/binary-amd64/{name}\n",
            sha256(data),
            data.len()
        );
    }
    let mut release = format!(
        "Origin: {}\nLabel: {}\nSuite: {}\nCodename: {}\nDate: Sat, 11 Jul 2026 10:16:37 UTC\n",
        spec.origin, spec.origin, spec.suite, spec.codename
    );
    if let Some(until) = spec.valid_until {
        release += &format!("Valid-Until: {until}\n");
    }
    release +=
        &format!("Acquire-By-Hash: yes\nArchitectures: amd64\nComponents: main\nSHA256:\n{sums}");
    std::fs::write(dists.join("Release"), &release).unwrap();
    let cert = generate();
    std::fs::write(dists.join("InRelease"), clearsign(&cert, &release)).unwrap();
    let keyring = dir.join("keyring.gpg");
    write_keyring(&cert, &keyring);
    let other_keyring = dir.join("other.gpg");
    write_keyring(&generate(), &other_keyring);
    let url = serve(root.clone());
    Mirror {
        root,
        url,
        keyring,
        other_keyring,
        suite: spec.suite.into(),
        release,
        cert,
    }
}

pub fn clearsign(cert: &Cert, text: &str) -> Vec<u8> {
    let policy = StandardPolicy::new();
    let keypair = cert
        .keys()
        .unencrypted_secret()
        .with_policy(&policy, None)
        .supported()
        .alive()
        .revoked(false)
        .for_signing()
        .next()
        .unwrap()
        .key()
        .clone()
        .into_keypair()
        .unwrap();
    let mut out = Vec::new();
    {
        let message = Message::new(&mut out);
        let mut signer = Signer::new(message, keypair)
            .unwrap()
            .cleartext()
            .build()
            .unwrap();
        signer.write_all(text.as_bytes()).unwrap();
        signer.finalize().unwrap();
    }
    out
}

/// Serves `root` on 127.0.0.1 for the life of the test process.
fn serve(root: PathBuf) -> String {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    std::thread::spawn(move || {
        for stream in listener.incoming().flatten() {
            let root = root.clone();
            std::thread::spawn(move || {
                let _ = handle(stream, &root);
            });
        }
    });
    url
}

fn handle(stream: TcpStream, root: &Path) -> std::io::Result<()> {
    let mut reader = BufReader::new(stream.try_clone()?);
    let mut stream = stream;
    // Keep-alive: one request after another on the connection, until the client closes it.
    while let Some(head) = super::http::read_head(&mut reader)? {
        let path = head.target.as_str();
        let from: u64 = head
            .header("range")
            .and_then(|r| r.strip_prefix("bytes="))
            .map_or(0, |v| v.trim_end_matches('-').parse().unwrap_or(0));
        let file = root.join(path.trim_start_matches('/'));
        match std::fs::read(&file) {
            Ok(data) if file.is_file() => {
                let from = (from as usize).min(data.len());
                let status = if from > 0 {
                    "206 Partial Content"
                } else {
                    "200 OK"
                };
                write!(
                    stream,
                    "HTTP/1.1 {status}\r\nContent-Length: {}\r\n\r\n",
                    data.len() - from
                )?;
                if path.contains("/slow") {
                    // A slow download, for tests that interrupt one: 16 KiB every 100 ms.
                    for chunk in data[from..].chunks(16 << 10) {
                        stream.write_all(chunk)?;
                        std::thread::sleep(std::time::Duration::from_millis(100));
                    }
                } else {
                    stream.write_all(&data[from..])?;
                }
            }
            _ => write!(
                stream,
                "HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n\r\n"
            )?,
        }
        stream.flush()?;
    }
    Ok(())
}
