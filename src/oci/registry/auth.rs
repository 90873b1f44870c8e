//! Registry credentials and the answer to a 401 challenge.
//!
//! Credentials are read, first match wins, from `$REGISTRY_AUTH_FILE`,
//! `$XDG_RUNTIME_DIR/containers/auth.json`, `~/.config/containers/auth.json` (what podman and
//! skopeo write) and `$DOCKER_CONFIG/config.json` or `~/.docker/config.json` (docker's); each
//! holds `{"auths": {"HOST[:PORT]": {"auth": base64("user:password")}}}`.

use std::path::PathBuf;

use base64::Engine as _;

use super::super::{OciError, Result};
use super::{basic, transport_err};
use crate::http::HttpError;

#[derive(Clone)]
pub(crate) struct Credentials {
    pub(crate) user: String,
    pub(crate) password: String,
}

impl std::fmt::Debug for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Credentials({}, ***)", self.user)
    }
}

fn auth_files() -> Vec<PathBuf> {
    let env = |k: &str| {
        std::env::var_os(k)
            .filter(|v| !v.is_empty())
            .map(PathBuf::from)
    };
    let mut files = Vec::new();
    files.extend(env("REGISTRY_AUTH_FILE"));
    files.extend(env("XDG_RUNTIME_DIR").map(|d| d.join("containers/auth.json")));
    let home = env("HOME");
    files.extend(
        home.as_ref()
            .map(|h| h.join(".config/containers/auth.json")),
    );
    match env("DOCKER_CONFIG") {
        Some(d) => files.push(d.join("config.json")),
        None => files.extend(home.map(|h| h.join(".docker/config.json"))),
    }
    files
}

/// The credentials stored for `registry` (`host[:port]`), if any.
pub(crate) fn credentials_for(registry: &str) -> Option<Credentials> {
    for file in auth_files() {
        let Ok(bytes) = std::fs::read(&file) else {
            continue;
        };
        let Ok(doc) = serde_json::from_slice::<serde_json::Value>(&bytes) else {
            continue;
        };
        let Some(auths) = doc["auths"].as_object() else {
            continue;
        };
        for (key, entry) in auths {
            let host = key
                .trim_start_matches("https://")
                .trim_start_matches("http://")
                .split('/')
                .next()
                .unwrap_or("");
            if host != registry {
                continue;
            }
            let Some(encoded) = entry["auth"].as_str() else {
                continue;
            };
            let Ok(decoded) = base64::engine::general_purpose::STANDARD.decode(encoded) else {
                continue;
            };
            let text = String::from_utf8_lossy(&decoded);
            if let Some((user, password)) = text.split_once(':') {
                return Some(Credentials {
                    user: user.into(),
                    password: password.into(),
                });
            }
        }
    }
    None
}

/// The scheme and parameters of a `WWW-Authenticate` header.
fn parse_challenge(header: &str) -> (String, Vec<(String, String)>) {
    let (scheme, rest) = header.trim().split_once(' ').unwrap_or((header.trim(), ""));
    let mut params = Vec::new();
    let mut chars = rest.chars().peekable();
    loop {
        while chars.peek().is_some_and(|c| *c == ',' || c.is_whitespace()) {
            chars.next();
        }
        let key: String = chars.by_ref().take_while(|c| *c != '=').collect();
        if key.is_empty() {
            break;
        }
        let mut value = String::new();
        if chars.peek() == Some(&'"') {
            chars.next();
            while let Some(c) = chars.next() {
                match c {
                    '"' => break,
                    '\\' => value.extend(chars.next()),
                    c => value.push(c),
                }
            }
        } else {
            value = chars.by_ref().take_while(|c| *c != ',').collect();
        }
        params.push((key.trim().to_ascii_lowercase(), value));
    }
    (scheme.to_ascii_lowercase(), params)
}

fn query_escape(s: &str) -> String {
    let mut out = String::new();
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-_.~:,/".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// The Authorization header that answers `challenge` for `url`.
pub(super) fn answer(
    agent: &ureq::Agent,
    url: &str,
    challenge: &str,
    scope: &str,
    credentials: Option<&Credentials>,
) -> Result<String> {
    let denied = || OciError::Denied {
        url: url.to_string(),
        status: 401,
    };
    let (scheme, params) = parse_challenge(challenge);
    let param = |k: &str| params.iter().find(|(n, _)| n == k).map(|(_, v)| v.clone());
    match scheme.as_str() {
        "basic" => credentials.map(basic).ok_or_else(denied),
        "bearer" => {
            let realm = param("realm").ok_or_else(denied)?;
            let mut token_url = format!("{realm}?");
            if let Some(service) = param("service") {
                token_url.push_str(&format!("service={}&", query_escape(&service)));
            }
            let scope = param("scope").unwrap_or_else(|| scope.to_string());
            token_url.push_str(&format!("scope={}", query_escape(&scope)));
            let mut req = agent.get(&token_url);
            if let Some(c) = credentials {
                req = req.header("Authorization", basic(c));
            }
            let resp = req
                .call()
                .map_err(|e| transport_err(HttpError::transport(&token_url, e)))?;
            let status = resp.status().as_u16();
            if status != 200 {
                return Err(OciError::Denied {
                    url: token_url,
                    status,
                });
            }
            let body = crate::http::read_body(resp, &token_url, 1 << 20)?;
            let doc: serde_json::Value = super::super::json(&body, &token_url)?;
            let token = doc["token"]
                .as_str()
                .or(doc["access_token"].as_str())
                .ok_or_else(|| OciError::Invalid {
                    what: token_url.clone(),
                    reason: "the token answer has no token".into(),
                })?;
            Ok(format!("Bearer {token}"))
        }
        _ => Err(denied()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_challenges() {
        let (s, p) = parse_challenge(
            r#"Bearer realm="http://127.0.0.1:9/token",service="reg",scope="repository:a/b:pull,push""#,
        );
        assert_eq!(s, "bearer");
        assert_eq!(p[0], ("realm".into(), "http://127.0.0.1:9/token".into()));
        assert_eq!(p[2], ("scope".into(), "repository:a/b:pull,push".into()));
        let (s, p) = parse_challenge(r#"Basic realm="Registry Realm""#);
        assert_eq!((s.as_str(), p[0].1.as_str()), ("basic", "Registry Realm"));
    }
}
