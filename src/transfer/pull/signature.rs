//! Detached OpenPGP signatures over SHA256SUMS, verified in-process with sequoia-openpgp under
//! its standard policy. bootstrap has the same check for Release files but keeps it private to
//! that module (and transfer may not call bootstrap), so this is the small shared-shape twin.

use openpgp::cert::{Cert, CertParser};
use openpgp::parse::stream::{
    DetachedVerifierBuilder, MessageLayer, MessageStructure, VerificationHelper,
};
use openpgp::parse::Parse;
use openpgp::policy::StandardPolicy;
use openpgp::KeyHandle;
use sequoia_openpgp as openpgp;

/// Certificates read from a keyring file (binary or armored, one or many).
pub struct Keyring {
    certs: Vec<Cert>,
}

impl Keyring {
    pub fn from_bytes(bytes: &[u8]) -> Result<Keyring, String> {
        let mut certs = Vec::new();
        for cert in CertParser::from_bytes(bytes).map_err(|e| e.to_string())? {
            certs.push(cert.map_err(|e| e.to_string())?);
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

/// Checks that `signature` (binary or armored) is a good signature over `data` by a key of
/// `keyring`.
pub fn verify_detached(keyring: &Keyring, data: &[u8], signature: &[u8]) -> Result<(), String> {
    let policy = StandardPolicy::new();
    let mut verifier = DetachedVerifierBuilder::from_bytes(signature)
        .map_err(|e| e.to_string())?
        .with_policy(&policy, None, Helper { keyring })
        .map_err(|e| e.to_string())?;
    verifier.verify_bytes(data).map_err(|e| e.to_string())
}
