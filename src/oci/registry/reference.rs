//! Image references: `HOST[:PORT]/REPO[:TAG][@sha256:HEX]`. The registry host is required
//! (rmach has no default registry), so the first component must look like one: it has a dot
//! or a port, or is `localhost`.

use super::super::digest::Digest;
use super::super::{OciError, Result};

#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Reference {
    pub(crate) registry: String,
    pub(crate) repository: String,
    pub(crate) tag: Option<String>,
    pub(crate) digest: Option<Digest>,
}

impl Reference {
    pub(crate) fn parse(text: &str) -> Result<Reference> {
        let bad = |reason: &str| OciError::BadReference {
            reference: text.to_string(),
            reason: reason.to_string(),
        };
        let text_no_scheme = text.strip_prefix("docker://").unwrap_or(text);
        let (rest, digest) = match text_no_scheme.split_once('@') {
            Some((r, d)) => (r, Some(Digest::parse(d)?)),
            None => (text_no_scheme, None),
        };
        let (registry, path) = rest
            .split_once('/')
            .ok_or_else(|| bad("it needs a registry: HOST[:PORT]/REPOSITORY[:TAG]"))?;
        if !(registry.contains('.') || registry.contains(':') || registry == "localhost") {
            return Err(bad(
                "the first component must be a registry host (with a dot or a port, or localhost)",
            ));
        }
        // A colon after the last slash starts the tag.
        let (repository, tag) = match path.rfind(':') {
            Some(i) if !path[i..].contains('/') => (&path[..i], Some(path[i + 1..].to_string())),
            _ => (path, None),
        };
        let component_ok = |c: &str| {
            !c.is_empty()
                && c.bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"._-".contains(&b))
        };
        if !repository.split('/').all(component_ok) {
            return Err(bad(
                "a repository is lowercase letters, digits, '.', '_', '-' and '/'",
            ));
        }
        if let Some(t) = &tag {
            let ok = !t.is_empty()
                && t.len() <= 128
                && t.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b));
            if !ok {
                return Err(bad("a tag is up to 128 letters, digits, '.', '_' and '-'"));
            }
        }
        Ok(Reference {
            registry: registry.to_string(),
            repository: repository.to_string(),
            tag,
            digest,
        })
    }

    /// What to ask the registry for: the digest, else the tag, else `latest`.
    pub(crate) fn target(&self) -> String {
        match (&self.digest, &self.tag) {
            (Some(d), _) => d.to_string(),
            (None, Some(t)) => t.clone(),
            (None, None) => "latest".into(),
        }
    }

    /// The last component of the repository, for a default image name.
    pub(crate) fn short_name(&self) -> &str {
        self.repository
            .rsplit('/')
            .next()
            .unwrap_or(&self.repository)
    }
}

impl std::fmt::Display for Reference {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.registry, self.repository)?;
        if let Some(t) = &self.tag {
            write!(f, ":{t}")?;
        }
        if let Some(d) = &self.digest {
            write!(f, "@{d}")?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_references() {
        let r = Reference::parse("127.0.0.1:5000/a/b:v1").unwrap();
        assert_eq!(
            (r.registry.as_str(), r.repository.as_str(), r.tag.as_deref()),
            ("127.0.0.1:5000", "a/b", Some("v1"))
        );
        assert_eq!(r.target(), "v1");
        let d = Digest::of(b"x");
        let r = Reference::parse(&format!("localhost/x@{d}")).unwrap();
        assert_eq!(r.target(), d.to_string());
        assert_eq!(
            Reference::parse("reg.example/x").unwrap().target(),
            "latest"
        );
        assert!(Reference::parse("debian:12").is_err());
        assert!(Reference::parse("library/debian").is_err());
        assert!(Reference::parse("h.x/UPPER").is_err());
        assert!(Reference::parse("h.x/a:b/c").is_err());
    }
}
