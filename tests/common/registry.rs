//! A real distribution registry (Debian's docker-registry) on 127.0.0.1 for the OCI tests,
//! with no auth, htpasswd (Basic) auth, or token auth. For token auth the test runs the token
//! server itself (std::net): it checks the client's Basic credentials and issues RS256 JWTs
//! (signed with `openssl dgst`, carrying the certificate in `x5c`) for exactly the scope asked;
//! the registry checks them against that certificate. Stopped (killed and reaped) on drop.

use std::io::{BufReader, Write};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use base64::Engine as _;

use super::http::read_head;
use super::{require, sh};

pub const USER: &str = "tester";
pub const PASSWORD: &str = "s3cret pass";

#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Auth {
    None,
    Htpasswd,
    Token,
}

pub struct Registry {
    pub port: u16,
    pub data: PathBuf,
    child: Child,
    token: Option<TokenServer>,
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

impl Registry {
    /// Starts a registry keeping its files under `dir`.
    pub fn start(dir: &Path, auth: Auth) -> Registry {
        Registry::start_with(dir, auth, false)
    }

    /// With `tls`, the registry speaks only HTTPS, with a self-signed certificate for
    /// 127.0.0.1.
    pub fn start_with(dir: &Path, auth: Auth, tls: bool) -> Registry {
        require("docker-registry");
        let data = dir.join("registry-data");
        std::fs::create_dir_all(&data).unwrap();
        let port = free_port();
        let mut token = None;
        let auth_yaml = match auth {
            Auth::None => String::new(),
            Auth::Htpasswd => {
                require("htpasswd");
                let file = dir.join("htpasswd");
                sh(&format!(
                    "htpasswd -Bbn '{USER}' '{PASSWORD}' > '{}'",
                    file.display()
                ));
                format!(
                    "auth:\n  htpasswd:\n    realm: rmach-test\n    path: {}\n",
                    file.display()
                )
            }
            Auth::Token => {
                let server = TokenServer::start(dir);
                let yaml = format!(
                    "auth:\n  token:\n    realm: http://127.0.0.1:{}/token\n    service: rmach-test-registry\n    issuer: rmach-test-issuer\n    rootcertbundle: {}\n",
                    server.port,
                    server.cert.display()
                );
                token = Some(server);
                yaml
            }
        };
        let tls_yaml = if tls {
            let (key, cert) = (dir.join("tls-key.pem"), dir.join("tls-cert.pem"));
            sh(&format!(
                "openssl req -x509 -newkey rsa:2048 -nodes -keyout '{}' -out '{}' -days 2 -subj /CN=127.0.0.1 -addext subjectAltName=IP:127.0.0.1 2>/dev/null",
                key.display(),
                cert.display()
            ));
            format!(
                "  tls:\n    certificate: {}\n    key: {}\n",
                cert.display(),
                key.display()
            )
        } else {
            String::new()
        };
        let config = dir.join("registry.yml");
        std::fs::write(
            &config,
            format!(
                "version: 0.1\nlog:\n  level: error\n  accesslog:\n    disabled: true\nstorage:\n  filesystem:\n    rootdirectory: {}\n  delete:\n    enabled: true\nhttp:\n  addr: 127.0.0.1:{port}\n{tls_yaml}{auth_yaml}",
                data.display()
            ),
        )
        .unwrap();
        let log = std::fs::File::create(dir.join("registry.log")).unwrap();
        let child = Command::new("docker-registry")
            .arg("serve")
            .arg(&config)
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .unwrap();
        let registry = Registry {
            port,
            data,
            child,
            token,
        };
        let deadline = Instant::now() + Duration::from_secs(20);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(
                Instant::now() < deadline,
                "the registry did not start: {}",
                std::fs::read_to_string(dir.join("registry.log")).unwrap_or_default()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        registry
    }

    /// `127.0.0.1:PORT`.
    pub fn host(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// Where the registry keeps the blob with digest `sha256:HEX`.
    pub fn blob_file(&self, digest: &str) -> PathBuf {
        let hex = digest.strip_prefix("sha256:").unwrap();
        self.data
            .join("docker/registry/v2/blobs/sha256")
            .join(&hex[..2])
            .join(hex)
            .join("data")
    }

    /// How many token requests the token server answered with a token.
    pub fn tokens_issued(&self) -> usize {
        self.token
            .as_ref()
            .map(|t| t.issued.load(Ordering::SeqCst))
            .unwrap_or(0)
    }
}

impl Drop for Registry {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// An auth.json (the format podman, skopeo and docker share) with the test credentials.
pub fn write_auth_json(path: &Path, host: &str) {
    let auth = base64::engine::general_purpose::STANDARD.encode(format!("{USER}:{PASSWORD}"));
    std::fs::write(
        path,
        format!("{{\"auths\": {{\"{host}\": {{\"auth\": \"{auth}\"}}}}}}"),
    )
    .unwrap();
}

struct TokenServer {
    port: u16,
    cert: PathBuf,
    stop: Arc<AtomicBool>,
    issued: Arc<std::sync::atomic::AtomicUsize>,
}

fn b64url(data: &[u8]) -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(data)
}

impl TokenServer {
    fn start(dir: &Path) -> TokenServer {
        require("openssl");
        let key = dir.join("token-key.pem");
        let cert = dir.join("token-cert.pem");
        sh(&format!(
            "openssl req -x509 -newkey rsa:2048 -nodes -keyout '{}' -out '{}' -days 2 -subj /CN=rmach-test-token 2>/dev/null",
            key.display(),
            cert.display()
        ));
        let der = Command::new("openssl")
            .args(["x509", "-outform", "DER", "-in"])
            .arg(&cert)
            .output()
            .unwrap()
            .stdout;
        let x5c = base64::engine::general_purpose::STANDARD.encode(der);
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let stop = Arc::new(AtomicBool::new(false));
        let issued = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let (s, n) = (stop.clone(), issued.clone());
        std::thread::spawn(move || {
            for conn in listener.incoming() {
                if s.load(Ordering::SeqCst) {
                    return;
                }
                let Ok(conn) = conn else { continue };
                let _ = answer(conn, &key, &x5c, &n);
            }
        });
        TokenServer {
            port,
            cert,
            stop,
            issued,
        }
    }
}

impl Drop for TokenServer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        let _ = std::net::TcpStream::connect(("127.0.0.1", self.port));
    }
}

fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' && i + 2 < bytes.len() {
            if let Ok(b) = u8::from_str_radix(&s[i + 1..i + 3], 16) {
                out.push(b);
                i += 3;
                continue;
            }
        }
        out.push(if bytes[i] == b'+' { b' ' } else { bytes[i] });
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn answer(
    conn: std::net::TcpStream,
    key: &Path,
    x5c: &str,
    issued: &std::sync::atomic::AtomicUsize,
) -> std::io::Result<()> {
    let Some(head) = read_head(&mut BufReader::new(conn.try_clone()?))? else {
        return Ok(());
    };
    let target = &head.target;
    let authorization = head.header("authorization");
    let mut out = conn;
    let want = format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode(format!("{USER}:{PASSWORD}"))
    );
    if authorization != Some(want.as_str()) {
        return write!(
            out,
            "HTTP/1.1 401 Unauthorized\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
        );
    }
    let query = target.split_once('?').map(|(_, q)| q).unwrap_or("");
    let mut access = Vec::new();
    for pair in query.split('&') {
        let Some(("scope", scope)) = pair.split_once('=') else {
            continue;
        };
        let scope = percent_decode(scope);
        let parts: Vec<&str> = scope.split(':').collect();
        if parts.len() == 3 {
            let actions: Vec<String> = parts[2].split(',').map(|a| format!("\"{a}\"")).collect();
            access.push(format!(
                "{{\"type\":\"{}\",\"name\":\"{}\",\"actions\":[{}]}}",
                parts[0],
                parts[1],
                actions.join(",")
            ));
        }
    }
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let header = format!("{{\"alg\":\"RS256\",\"typ\":\"JWT\",\"x5c\":[\"{x5c}\"]}}");
    let claims = format!(
        "{{\"iss\":\"rmach-test-issuer\",\"sub\":\"{USER}\",\"aud\":\"rmach-test-registry\",\"exp\":{},\"nbf\":{},\"iat\":{},\"jti\":\"{}-{}\",\"access\":[{}]}}",
        now + 600,
        now - 60,
        now,
        now,
        issued.load(Ordering::SeqCst),
        access.join(",")
    );
    let signing_input = format!(
        "{}.{}",
        b64url(header.as_bytes()),
        b64url(claims.as_bytes())
    );
    let mut child = Command::new("openssl")
        .args(["dgst", "-sha256", "-sign"])
        .arg(key)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()?;
    child
        .stdin
        .take()
        .unwrap()
        .write_all(signing_input.as_bytes())?;
    let signature = child.wait_with_output()?.stdout;
    let token = format!("{signing_input}.{}", b64url(&signature));
    issued.fetch_add(1, Ordering::SeqCst);
    let body = format!("{{\"token\":\"{token}\",\"expires_in\":600}}");
    write!(
        out,
        "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )
}
