//! DKIM: every message leaving the relay (and every bounce) is signed rsa-sha256 with
//! relaxed/simple canonicalization; every message arriving from another server is verified.
//! The key is generated into `data_dir/dkim/` on first start and published as
//! `<selector>._domainkey.<domain>` (see `ferrymail dns`).
//!
//! The verdict — which signatures must pass, aligned with which domain — is the encryption
//! policy's; this module only reports which signatures verified.

use std::path::Path;

use base64::Engine;
use mail_auth::common::crypto::{RsaKey, Sha256};
use mail_auth::common::headers::HeaderWriter;
use mail_auth::dkim::{Canonicalization, DkimSigner, Done};
use mail_auth::{AuthenticatedMessage, DkimResult as VerifyResult, MessageAuthenticator};
use rsa::pkcs8::{DecodePrivateKey, EncodePrivateKey, EncodePublicKey, LineEnding};
use rustls_pki_types::pem::PemObject;

use crate::dns::Dns;
use crate::policy::DkimResult;

/// Signed, and listed twice to oversign: a header added later (or a second copy of one that
/// exists) breaks the signature instead of slipping in.
const SIGNED_HEADERS: [&str; 9] =
    ["From", "To", "Cc", "Subject", "Date", "Reply-To", "In-Reply-To", "References", "Autocrypt"];

#[derive(Debug, thiserror::Error)]
pub enum DkimError {
    #[error("DKIM key {path}: {reason}")]
    Key { path: String, reason: String },
}

pub struct Dkim {
    signer: DkimSigner<RsaKey<Sha256>, Done>,
    /// The DNS TXT record that publishes the public key.
    record: String,
    selector: String,
    verifier: MessageAuthenticator,
}

impl Dkim {
    /// Load the key for `selector` from `dir`, generating it on first start.
    pub fn load_or_generate(dir: &Path, domain: &str, selector: &str, dns: &Dns) -> Result<Dkim, DkimError> {
        let path = dir.join(format!("{selector}.key"));
        let failed = |reason: String| DkimError::Key { path: path.display().to_string(), reason };
        if !path.is_file() {
            generate_key(&path).map_err(failed)?;
            tracing::info!("generated a DKIM key for selector {selector} in {}", path.display());
        }
        let pem = std::fs::read_to_string(&path).map_err(|e| failed(e.to_string()))?;
        let private = rsa::RsaPrivateKey::from_pkcs8_pem(&pem).map_err(|e| failed(e.to_string()))?;
        let public = private.to_public_key().to_public_key_der().map_err(|e| failed(e.to_string()))?;
        let record = format!("v=DKIM1;k=rsa;p={}", base64::engine::general_purpose::STANDARD.encode(public.as_bytes()));
        let der = rustls_pki_types::PrivateKeyDer::from_pem_slice(pem.as_bytes()).map_err(|e| failed(e.to_string()))?;
        let key = RsaKey::<Sha256>::from_key_der(der).map_err(|e| failed(e.to_string()))?;
        let headers: Vec<&str> = SIGNED_HEADERS.iter().flat_map(|h| [*h, *h]).collect();
        let signer = DkimSigner::from_key(key)
            .domain(domain)
            .selector(selector)
            .headers(headers)
            .header_canonicalization(Canonicalization::Relaxed)
            .body_canonicalization(Canonicalization::Simple);
        Ok(Dkim { signer, record, selector: selector.to_string(), verifier: MessageAuthenticator(dns.resolver().clone()) })
    }

    /// The message with a `DKIM-Signature:` field in front. A message that cannot be signed
    /// (it has none of the signed fields) goes out as it is; receivers will refuse it.
    pub fn sign(&self, message: &[u8]) -> Vec<u8> {
        let mut signed = message.to_vec();
        self.sign_in_place(&mut signed);
        signed
    }

    /// The same, putting the field in front of the message where it lies (no copy of it).
    pub fn sign_in_place(&self, message: &mut Vec<u8>) {
        match self.signer.sign(message) {
            Ok(signature) => {
                message.splice(..0, signature.to_header().into_bytes());
            }
            Err(e) => tracing::warn!("cannot DKIM-sign a message: {e}"),
        }
    }

    /// The signatures of `message` and whether each verified: the first
    /// [`MAX_VERIFIED_SIGNATURES`] of them (the most recently added), the rest ignored. Each
    /// one costs a DNS lookup and a pass over the body: a sender cannot make the relay do
    /// that a thousand times for one message. Hashes the whole message: call it off the
    /// threads that serve sessions.
    pub async fn verify(&self, message: &[u8]) -> Vec<DkimResult> {
        let trimmed = without_extra_signatures(message);
        let message = trimmed.as_deref().unwrap_or(message);
        let Some(parsed) = AuthenticatedMessage::parse(message) else { return Vec::new() };
        self.verifier
            .verify_dkim(&parsed)
            .await
            .iter()
            .filter_map(|output| {
                let signature = output.signature()?;
                Some(DkimResult {
                    domain: signature.d.to_ascii_lowercase(),
                    selector: signature.s.clone(),
                    pass: matches!(output.result(), VerifyResult::Pass),
                })
            })
            .collect()
    }

    /// `v=DKIM1;k=rsa;p=...` for `<selector>._domainkey.<domain>`.
    pub fn dns_record(&self) -> &str {
        &self.record
    }

    pub fn selector(&self) -> &str {
        &self.selector
    }
}

/// DKIM signatures of one message that are verified.
pub const MAX_VERIFIED_SIGNATURES: usize = 5;

/// `message` without the DKIM-Signature fields after the first [`MAX_VERIFIED_SIGNATURES`],
/// or `None` when it has no more than that.
fn without_extra_signatures(message: &[u8]) -> Option<Vec<u8>> {
    use crate::message::header::{field_name, split_header};
    let (fields, body) = split_header(message);
    let is_signature = |field: &std::ops::Range<usize>| field_name(&message[field.clone()]).eq_ignore_ascii_case(b"DKIM-Signature");
    if fields.iter().filter(|f| is_signature(f)).count() <= MAX_VERIFIED_SIGNATURES {
        return None;
    }
    let mut kept = Vec::with_capacity(message.len());
    let mut signatures = 0;
    for field in fields {
        if is_signature(&field) {
            signatures += 1;
            if signatures > MAX_VERIFIED_SIGNATURES {
                continue;
            }
        }
        kept.extend_from_slice(&message[field]);
    }
    kept.extend_from_slice(&message[body..]);
    Some(kept)
}

/// A new key at `path` (in `data_dir/dkim/`), readable by the owner of the data dir only:
/// `ferrymail dns` run as root before the relay's first start must not leave a key the
/// relay's user cannot read.
fn generate_key(path: &Path) -> Result<(), String> {
    use std::os::unix::fs::{DirBuilderExt, MetadataExt, OpenOptionsExt};
    let key = rsa::RsaPrivateKey::new(&mut rsa::rand_core::OsRng, 2048).map_err(|e| e.to_string())?;
    let pem = key.to_pkcs8_pem(LineEnding::LF).map_err(|e| e.to_string())?;
    let dir = path.parent().ok_or("no directory")?;
    std::fs::DirBuilder::new().recursive(true).mode(0o700).create(dir).map_err(|e| e.to_string())?;
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true).mode(0o600);
    let mut file = options.open(path).map_err(|e| e.to_string())?;
    std::io::Write::write_all(&mut file, pem.as_bytes()).map_err(|e| e.to_string())?;
    if let Some(owner) = dir.parent().and_then(|data_dir| std::fs::metadata(data_dir).ok()) {
        for made in [dir, path] {
            let mine = std::fs::metadata(made).map(|m| m.uid() == owner.uid()).unwrap_or(true);
            if !mine {
                std::os::unix::fs::chown(made, Some(owner.uid()), Some(owner.gid())).map_err(|e| e.to_string())?;
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_first_signatures_are_looked_at() {
        let few = b"DKIM-Signature: a\r\nFrom: x\r\n\r\nbody".to_vec();
        assert_eq!(without_extra_signatures(&few), None);
        let many: Vec<u8> = [
            (0..8).map(|i| format!("DKIM-Signature: v=1; n={i}\r\n ;folded\r\n")).collect::<String>().into_bytes(),
            b"From: x\r\n\r\nbody".to_vec(),
        ]
        .concat();
        let kept = String::from_utf8(without_extra_signatures(&many).unwrap()).unwrap();
        assert_eq!(kept.matches("DKIM-Signature").count(), MAX_VERIFIED_SIGNATURES);
        assert!(kept.contains("n=0") && kept.contains("n=4") && !kept.contains("n=5"), "{kept}");
        assert!(kept.ends_with("From: x\r\n\r\nbody"));
    }
}
