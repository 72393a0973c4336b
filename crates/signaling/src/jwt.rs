//! Minimal RS256 JWT primitives shared by client assertions (signing) and inbound
//! notification tokens (verification). Only RS256 exists here: no `none`, no HMAC, so an
//! algorithm-confusion attack has nothing to confuse.

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use rsa::pkcs1v15::SigningKey;
use rsa::signature::{RandomizedSigner, SignatureEncoding};
use rsa::{RsaPrivateKey, RsaPublicKey};
use sha2::Sha256;

/// Longest token accepted, in bytes.
pub const MAX_TOKEN_LEN: usize = 16 * 1024;

/// Why a JWT could not be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum JwtError {
    /// Not three base64url parts, too long, or not JSON objects.
    #[error("malformed jwt")]
    Malformed,
    /// Signing failed.
    #[error("signing failed")]
    Signing,
}

/// The JOSE header fields this crate reads.
#[derive(Debug, Clone, Default, serde::Deserialize)]
pub struct JwtHeader {
    /// Algorithm.
    #[serde(default)]
    pub alg: Option<String>,
    /// Key id.
    #[serde(default)]
    pub kid: Option<String>,
    /// Certificate thumbprint.
    #[serde(default)]
    pub x5t: Option<String>,
    /// Type.
    #[serde(default)]
    pub typ: Option<String>,
}

/// A JWT split into its parts (not verified).
#[derive(Debug, Clone)]
pub struct UnverifiedJwt {
    /// Header.
    pub header: JwtHeader,
    /// Claims.
    pub claims: serde_json::Map<String, serde_json::Value>,
    /// `base64url(header) "." base64url(claims)`: the signed bytes.
    pub signing_input: String,
    /// Signature bytes.
    pub signature: Vec<u8>,
}

/// Base64url without padding.
pub fn b64url(bytes: &[u8]) -> String {
    URL_SAFE_NO_PAD.encode(bytes)
}

/// Decodes base64url, tolerating trailing padding.
pub fn b64url_decode(s: &str) -> Result<Vec<u8>, JwtError> {
    URL_SAFE_NO_PAD
        .decode(s.trim_end_matches('='))
        .map_err(|_| JwtError::Malformed)
}

/// Splits and decodes a compact JWT without checking anything but its shape.
///
/// # Errors
/// [`JwtError::Malformed`] for anything that is not `header.claims.signature` of JSON objects.
pub fn decode_unverified(token: &str) -> Result<UnverifiedJwt, JwtError> {
    let parts = split(token)?;
    let claims: serde_json::Map<String, serde_json::Value> =
        serde_json::from_slice(&parts.claims_json).map_err(|_| JwtError::Malformed)?;
    Ok(UnverifiedJwt {
        header: parts.header,
        claims,
        signing_input: parts.signing_input.to_owned(),
        signature: parts.signature,
    })
}

/// A compact JWT split without copying: the JOSE header read, the claims decoded but not
/// parsed (the caller reads only the claims it checks), the signing input borrowed.
#[derive(Debug)]
pub(crate) struct SplitJwt<'t> {
    /// Header.
    pub header: JwtHeader,
    /// Decoded claims JSON.
    pub claims_json: Vec<u8>,
    /// `base64url(header) "." base64url(claims)`, borrowed from the token.
    pub signing_input: &'t str,
    /// Signature bytes.
    pub signature: Vec<u8>,
}

/// Splits `token` into header, undecoded claims and signature without building a claims map
/// (size limit, three base64url parts, a JSON header); [`decode_unverified`] builds on it.
pub(crate) fn split(token: &str) -> Result<SplitJwt<'_>, JwtError> {
    if token.len() > MAX_TOKEN_LEN {
        return Err(JwtError::Malformed);
    }
    let mut parts = token.split('.');
    let (Some(h), Some(c), Some(s), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(JwtError::Malformed);
    };
    let header: JwtHeader =
        serde_json::from_slice(&b64url_decode(h)?).map_err(|_| JwtError::Malformed)?;
    let claims_json = b64url_decode(c)?;
    let signature = b64url_decode(s)?;
    Ok(SplitJwt {
        header,
        claims_json,
        signing_input: &token[..h.len() + 1 + c.len()],
        signature,
    })
}

/// Signs `header` and `claims` (JSON objects) with RS256 (PKCS#1 v1.5, SHA-256, blinded).
///
/// # Errors
/// [`JwtError::Signing`] if the key cannot sign.
pub fn sign_rs256(
    header: &serde_json::Value,
    claims: &serde_json::Value,
    key: &RsaPrivateKey,
) -> Result<String, JwtError> {
    let h = b64url(header.to_string().as_bytes());
    let c = b64url(claims.to_string().as_bytes());
    let input = format!("{h}.{c}");
    let signer = SigningKey::<Sha256>::new(key.clone());
    let sig = signer
        .try_sign_with_rng(&mut rsa::rand_core::OsRng, input.as_bytes())
        .map_err(|_| JwtError::Signing)?;
    Ok(format!("{input}.{}", b64url(&sig.to_bytes())))
}

/// An RS256 verification key with its derived material prepared once.
///
/// Verifying with a bare modulus and exponent (as [`verify_rs256`] does) re-derives the key's
/// Montgomery constants on every call, about a third of the check. A long-lived verifier that
/// checks every inbound notification with the same few keys prepares them once here: the
/// signature itself is still checked in full on every call.
#[derive(Clone)]
pub struct Rs256Key {
    parsed: std::sync::Arc<aws_lc_rs::signature::ParsedPublicKey>,
}

impl std::fmt::Debug for Rs256Key {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Rs256Key").finish_non_exhaustive()
    }
}

impl Rs256Key {
    /// Prepares `key`; `None` for keys under 2048 or over 8192 bits (never accepted) or keys
    /// the crypto library refuses.
    pub fn new(key: &RsaPublicKey) -> Option<Self> {
        use aws_lc_rs::encoding::AsDer as _;
        use rsa::traits::PublicKeyParts;
        let bits = key.n().bits();
        if !(2048..=8192).contains(&bits) {
            return None;
        }
        let n = key.n().to_bytes_be();
        let e = key.e().to_bytes_be();
        let der = aws_lc_rs::signature::RsaPublicKeyComponents { n: &n, e: &e }
            .as_der()
            .ok()?;
        let parsed = aws_lc_rs::signature::ParsedPublicKey::new(
            &aws_lc_rs::signature::RSA_PKCS1_2048_8192_SHA256,
            der.as_ref(),
        )
        .ok()?;
        Some(Self {
            parsed: std::sync::Arc::new(parsed),
        })
    }

    /// Checks an RS256 (RSASSA-PKCS1-v1_5, SHA-256) signature over `signing_input`.
    pub fn verify(&self, signing_input: &[u8], signature: &[u8]) -> bool {
        self.parsed.verify_sig(signing_input, signature).is_ok()
    }
}

/// Checks an RS256 signature over `signing_input`.
///
/// For repeated checks with the same key, [`Rs256Key`] is cheaper. The check runs in `ring` (RSASSA-PKCS1-v1_5 with SHA-256, moduli of 2048 to 8192 bits):
/// about ten times faster than the pure-Rust `rsa` crate's verification, which matters
/// because every inbound notification pays for one. Keys under 2048 bits never verify.
pub fn verify_rs256(signing_input: &[u8], signature: &[u8], key: &RsaPublicKey) -> bool {
    use rsa::traits::PublicKeyParts;
    let n = key.n().to_bytes_be();
    let e = key.e().to_bytes_be();
    ring::signature::RsaPublicKeyComponents { n: &n, e: &e }
        .verify(
            &ring::signature::RSA_PKCS1_2048_8192_SHA256,
            signing_input,
            signature,
        )
        .is_ok()
}
