//! OpenPGP keyrings and signatures, verified in-process with sequoia-openpgp (pure-Rust
//! crypto) under its standard policy. One verifier for the whole crate: bootstrap checks
//! Release files (inline InRelease or detached Release.gpg) with it, pulls check SHA256SUMS
//! (detached). Only the text a good signature covers is returned from an inline message, so
//! nothing unsigned reaches a parser. It does not fetch anything or choose a keyring.

use std::io::Read;
use std::path::{Path, PathBuf};

use sequoia_openpgp::cert::{Cert, CertParser};
use sequoia_openpgp::parse::stream::{
    DetachedVerifierBuilder, MessageLayer, MessageStructure, VerificationError, VerificationHelper,
    VerifierBuilder,
};
use sequoia_openpgp::parse::Parse;
use sequoia_openpgp::policy::StandardPolicy;
use sequoia_openpgp::KeyHandle;

/// sequoia's own error, kept as the cause.
pub(crate) type Cause = Box<dyn std::error::Error + Send + Sync>;

/// Why a keyring could not be loaded or a signature did not verify.
#[derive(Debug, thiserror::Error)]
pub enum OpenPgpError {
    #[error("cannot read keyring {path}")]
    ReadKeyring {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("keyring {path}: not a usable OpenPGP keyring")]
    Keyring {
        path: PathBuf,
        #[source]
        source: Cause,
    },
    #[error("keyring {path}: holds no OpenPGP certificate")]
    EmptyKeyring { path: PathBuf },
    #[error("not a readable OpenPGP signature or signed message")]
    Malformed {
        #[source]
        source: Cause,
    },
    #[error("no signature")]
    NoSignature,
    #[error("signed with key {issuer}, which the keyring does not hold")]
    MissingKey { issuer: String },
    #[error("signing key {key} is not valid under the standard policy")]
    BadKey {
        key: String,
        #[source]
        source: Cause,
    },
    #[error("the signature by key {key} does not match the data")]
    BadSignature {
        key: String,
        #[source]
        source: Cause,
    },
    #[error("malformed signature")]
    MalformedSignature {
        #[source]
        source: Cause,
    },
    #[error("the signature is not accepted")]
    Rejected {
        #[source]
        source: Cause,
    },
    #[error("the message holds more than a signature (encrypted or compressed layers)")]
    Structure,
    #[error("the signed message was not read to its end")]
    Incomplete,
}

/// Certificates read from a keyring file (binary or armored, one or many).
#[derive(Debug)]
pub(crate) struct Keyring {
    certs: Vec<Cert>,
}

impl Keyring {
    /// Reads the keyring file at `path`.
    pub(crate) fn read(path: &Path) -> Result<Keyring, OpenPgpError> {
        let bytes = std::fs::read(path).map_err(|source| OpenPgpError::ReadKeyring {
            path: path.into(),
            source,
        })?;
        Keyring::from_bytes(&bytes, path)
    }

    /// Parses a keyring's bytes; `origin` names it in errors.
    pub(crate) fn from_bytes(bytes: &[u8], origin: &Path) -> Result<Keyring, OpenPgpError> {
        let bad = |source: sequoia_openpgp::anyhow::Error| OpenPgpError::Keyring {
            path: origin.into(),
            source: source.into(),
        };
        let certs = CertParser::from_bytes(bytes)
            .map_err(bad)?
            .collect::<Result<Vec<Cert>, _>>()
            .map_err(bad)?;
        if certs.is_empty() {
            return Err(OpenPgpError::EmptyKeyring {
                path: origin.into(),
            });
        }
        Ok(Keyring { certs })
    }
}

/// Verifies a cleartext-signed message (an InRelease file) and returns the signed text.
pub(crate) fn verify_inline(keyring: &Keyring, signed: &[u8]) -> Result<Vec<u8>, OpenPgpError> {
    let (text, processed) = with_helper(keyring, |policy, helper| {
        let mut verifier =
            VerifierBuilder::from_bytes(signed)?.with_policy(policy, None, helper)?;
        let mut text = Vec::new();
        verifier.read_to_end(&mut text)?;
        Ok((text, verifier.message_processed()))
    })?;
    if !processed {
        return Err(OpenPgpError::Incomplete);
    }
    Ok(text)
}

/// Checks that `signature` (binary or armored) is a good signature over `data` by a key of
/// `keyring`.
pub(crate) fn verify_detached(
    keyring: &Keyring,
    data: &[u8],
    signature: &[u8],
) -> Result<(), OpenPgpError> {
    with_helper(keyring, |policy, helper| {
        DetachedVerifierBuilder::from_bytes(signature)?
            .with_policy(policy, None, helper)?
            .verify_bytes(data)
    })
}

/// Runs `verify` with the standard policy and a helper over `keyring`; when it fails, the
/// helper's account of why wins over sequoia's generic error.
fn with_helper<T>(
    keyring: &Keyring,
    verify: impl FnOnce(&StandardPolicy, Helper<'_>) -> sequoia_openpgp::Result<T>,
) -> Result<T, OpenPgpError> {
    let policy = StandardPolicy::new();
    let mut problem = None;
    let helper = Helper {
        keyring,
        problem: &mut problem,
    };
    verify(&policy, helper).map_err(|source| problem.unwrap_or_else(|| malformed(source)))
}

fn malformed(source: sequoia_openpgp::anyhow::Error) -> OpenPgpError {
    OpenPgpError::Malformed {
        source: source.into(),
    }
}

/// Hands sequoia the keyring and accepts the message when one signature is good; otherwise
/// it records why in `problem` (sequoia's verification errors borrow the message, so they are
/// turned into owned ones here).
struct Helper<'a> {
    keyring: &'a Keyring,
    problem: &'a mut Option<OpenPgpError>,
}

impl VerificationHelper for Helper<'_> {
    fn get_certs(&mut self, _ids: &[KeyHandle]) -> sequoia_openpgp::Result<Vec<Cert>> {
        Ok(self.keyring.certs.clone())
    }

    fn check(&mut self, structure: MessageStructure) -> sequoia_openpgp::Result<()> {
        let mut problem = OpenPgpError::NoSignature;
        for layer in structure.into_iter() {
            match layer {
                MessageLayer::SignatureGroup { results } => {
                    for result in results {
                        match result {
                            Ok(_) => return Ok(()),
                            Err(error) => problem = owned(error),
                        }
                    }
                }
                _ => problem = OpenPgpError::Structure,
            }
        }
        // sequoia needs an error to stop; the caller reports `problem` instead.
        let stop = sequoia_openpgp::anyhow::anyhow!("no good signature");
        *self.problem = Some(problem);
        Err(stop)
    }
}

fn owned(error: VerificationError<'_>) -> OpenPgpError {
    match error {
        VerificationError::MissingKey { sig } => OpenPgpError::MissingKey {
            issuer: sig
                .get_issuers()
                .first()
                .map_or_else(|| "(unnamed)".into(), |issuer| issuer.to_hex()),
        },
        VerificationError::UnboundKey { cert, error, .. } => OpenPgpError::BadKey {
            key: cert.fingerprint().to_hex(),
            source: error.into(),
        },
        VerificationError::BadKey { ka, error, .. } => OpenPgpError::BadKey {
            key: ka.key().fingerprint().to_hex(),
            source: error.into(),
        },
        VerificationError::BadSignature { ka, error, .. } => OpenPgpError::BadSignature {
            key: ka.key().fingerprint().to_hex(),
            source: error.into(),
        },
        VerificationError::MalformedSignature { error, .. } => OpenPgpError::MalformedSignature {
            source: error.into(),
        },
        // An unknown kind of signature, or a failure this sequoia does not name yet.
        other => OpenPgpError::Rejected {
            source: Box::new(sequoia_openpgp::Error::from(other)),
        },
    }
}

#[cfg(test)]
mod tests {
    use std::io::Write;

    use sequoia_openpgp::cert::CertBuilder;
    use sequoia_openpgp::serialize::stream::{Message, Signer};
    use sequoia_openpgp::serialize::Serialize;
    use sequoia_openpgp::types::KeyFlags;

    use super::*;

    /// A key whose primary signs, and the keyring of its public part.
    fn key(name: &str) -> (Cert, Keyring) {
        let (cert, _) = CertBuilder::new()
            .add_userid(name)
            .set_primary_key_flags(KeyFlags::empty().set_signing().set_certification())
            .generate()
            .unwrap();
        let mut public = Vec::new();
        cert.serialize(&mut public).unwrap();
        (cert, Keyring::from_bytes(&public, Path::new(name)).unwrap())
    }

    fn sign(cert: &Cert, data: &[u8], detached: bool) -> Vec<u8> {
        let secret = cert
            .primary_key()
            .key()
            .clone()
            .parts_into_secret()
            .unwrap();
        let mut out = Vec::new();
        let signer = Signer::new(Message::new(&mut out), secret.into_keypair().unwrap()).unwrap();
        let signer = if detached {
            signer.detached()
        } else {
            signer.cleartext()
        };
        let mut writer = signer.build().unwrap();
        writer.write_all(data).unwrap();
        writer.finalize().unwrap();
        out
    }

    #[test]
    fn good_signatures_verify_and_others_say_why_not() {
        let (cert, ring) = key("archive");
        let (_, other) = key("other");
        let data = b"Origin: Debian\nSuite: stable\n";

        let sig = sign(&cert, data, true);
        verify_detached(&ring, data, &sig).unwrap();
        let err = verify_detached(&ring, b"Origin: Evil\n", &sig).unwrap_err();
        assert!(matches!(err, OpenPgpError::BadSignature { .. }), "{err:?}");
        let err = verify_detached(&other, data, &sig).unwrap_err();
        assert!(matches!(err, OpenPgpError::MissingKey { .. }), "{err:?}");
        let err = verify_detached(&ring, data, b"not a signature").unwrap_err();
        assert!(matches!(err, OpenPgpError::Malformed { .. }), "{err:?}");

        let signed = sign(&cert, data, false);
        assert_eq!(verify_inline(&ring, &signed).unwrap(), data);
        let err = verify_inline(&other, &signed).unwrap_err();
        assert!(matches!(err, OpenPgpError::MissingKey { .. }), "{err:?}");
        let tampered = String::from_utf8(signed)
            .unwrap()
            .replace("Debian", "Evil!!");
        let err = verify_inline(&ring, tampered.as_bytes()).unwrap_err();
        assert!(matches!(err, OpenPgpError::BadSignature { .. }), "{err:?}");
    }

    #[test]
    fn keyrings_that_hold_no_certificate_are_refused() {
        let err = Keyring::from_bytes(b"", Path::new("empty.gpg")).unwrap_err();
        assert!(matches!(err, OpenPgpError::EmptyKeyring { .. }), "{err:?}");
        let err = Keyring::from_bytes(b"\x99garbage", Path::new("bad.gpg")).unwrap_err();
        assert!(matches!(err, OpenPgpError::Keyring { .. }), "{err:?}");
        let err = Keyring::read(Path::new("/nonexistent/key.gpg")).unwrap_err();
        assert!(matches!(err, OpenPgpError::ReadKeyring { .. }), "{err:?}");
        assert_eq!(err.to_string(), "cannot read keyring /nonexistent/key.gpg");
    }
}
