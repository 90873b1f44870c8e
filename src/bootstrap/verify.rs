//! OpenPGP verification of Release files against a keyring, in-process with sequoia-openpgp
//! (pure-Rust crypto) under its standard policy. Only the text a good signature covers is
//! returned: nothing unsigned reaches the parser.

use std::io::Read;

use openpgp::cert::{Cert, CertParser};
use openpgp::parse::stream::{
    DetachedVerifierBuilder, MessageLayer, MessageStructure, VerificationHelper, VerifierBuilder,
};
use openpgp::parse::Parse;
use openpgp::policy::StandardPolicy;
use openpgp::KeyHandle;
use sequoia_openpgp as openpgp;

/// Why a keyring could not be read or a signature did not verify: sequoia's own error, kept as
/// the cause.
pub type VerifyError = Box<dyn std::error::Error + Send + Sync>;

/// Certificates read from a keyring file (binary or armored, one or many).
pub struct Keyring {
    certs: Vec<Cert>,
}

impl Keyring {
    pub fn from_bytes(bytes: &[u8]) -> Result<Keyring, VerifyError> {
        let mut certs = Vec::new();
        for cert in CertParser::from_bytes(bytes)? {
            certs.push(cert?);
        }
        if certs.is_empty() {
            return Err("holds no OpenPGP certificate".into());
        }
        Ok(Keyring { certs })
    }
}

struct Helper<'a> {
    keyring: &'a Keyring,
}

impl VerificationHelper for Helper<'_> {
    fn get_certs(&mut self, _ids: &[KeyHandle]) -> openpgp::Result<Vec<Cert>> {
        Ok(self.keyring.certs.clone())
    }

    fn check(&mut self, structure: MessageStructure) -> openpgp::Result<()> {
        let mut reason = String::from("no signature");
        for layer in structure.into_iter() {
            match layer {
                MessageLayer::SignatureGroup { results } => {
                    for r in results {
                        match r {
                            Ok(_) => return Ok(()),
                            Err(e) => reason = e.to_string(),
                        }
                    }
                }
                _ => return Err(openpgp::anyhow::anyhow!("unexpected message structure")),
            }
        }
        Err(openpgp::anyhow::anyhow!(reason))
    }
}

/// Verifies an InRelease file (a cleartext-signed message) and returns the signed text.
pub fn inline(keyring: &Keyring, signed: &[u8]) -> Result<Vec<u8>, VerifyError> {
    let policy = StandardPolicy::new();
    let mut verifier =
        VerifierBuilder::from_bytes(signed)?.with_policy(&policy, None, Helper { keyring })?;
    let mut text = Vec::new();
    verifier.read_to_end(&mut text)?;
    if !verifier.message_processed() {
        return Err("signature not fully processed".into());
    }
    Ok(text)
}

/// Verifies a Release file against its detached Release.gpg.
pub fn detached(keyring: &Keyring, data: &[u8], signature: &[u8]) -> Result<(), VerifyError> {
    let policy = StandardPolicy::new();
    let mut verifier = DetachedVerifierBuilder::from_bytes(signature)?.with_policy(
        &policy,
        None,
        Helper { keyring },
    )?;
    Ok(verifier.verify_bytes(data)?)
}
