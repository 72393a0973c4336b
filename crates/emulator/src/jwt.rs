//! RS256 JSON Web Tokens and the emulator's signing key sets (JWKS, rotation).
//!
//! Written from RFC 7515/7517/7518/7519: compact serialization, `alg` `RS256` only
//! (RSASSA-PKCS1-v1_5 with SHA-256). Verification refuses every other `alg`, so a `none` or
//! `HS256` token never passes.

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use rsa::pkcs1::DecodeRsaPublicKey;
use rsa::pkcs1v15::{Signature, SigningKey, VerifyingKey};
use rsa::pkcs8::{DecodePrivateKey, DecodePublicKey, EncodePublicKey};
use rsa::signature::{SignatureEncoding, Signer, Verifier};
use rsa::traits::PublicKeyParts;
use rsa::{RsaPrivateKey, RsaPublicKey};
use serde_json::{Map, Value, json};
use sha2::{Digest, Sha256};

/// Development signing keys shipped with the emulator (2048-bit RSA, PKCS#8 PEM).
///
/// They are public on purpose: the emulator is a test double, and generating 2048-bit keys in a
/// debug build takes several seconds each. Rotation walks this pool and then generates fresh keys.
const DEV_KEYS: [&str; 8] = [
    include_str!("../keys/dev-key-0.pem"),
    include_str!("../keys/dev-key-1.pem"),
    include_str!("../keys/dev-key-2.pem"),
    include_str!("../keys/dev-key-3.pem"),
    include_str!("../keys/dev-key-4.pem"),
    include_str!("../keys/dev-key-5.pem"),
    include_str!("../keys/dev-key-6.pem"),
    include_str!("../keys/dev-key-7.pem"),
];

/// Why a token was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum JwtError {
    /// Not three base64url parts, or a part is not valid JSON.
    #[error("malformed token: {0}")]
    Malformed(&'static str),
    /// `alg` is not RS256.
    #[error("unsupported algorithm {0:?}")]
    Algorithm(String),
    /// No key matches, or the signature does not verify.
    #[error("signature does not verify")]
    Signature,
    /// `exp` is in the past.
    #[error("token expired")]
    Expired,
    /// `nbf` is in the future.
    #[error("token not yet valid")]
    NotYetValid,
    /// A required claim is missing or has the wrong type.
    #[error("claim {0} missing or invalid")]
    Claim(&'static str),
}

/// A decoded, signature-checked token.
#[derive(Debug, Clone)]
pub struct VerifiedJwt {
    /// The JOSE header.
    pub header: Map<String, Value>,
    /// The claims set.
    pub claims: Map<String, Value>,
}

/// Base64url without padding (RFC 7515 section 2).
pub fn b64url(bytes: &[u8]) -> String {
    URL_SAFE_NO_PAD.encode(bytes)
}

/// Decodes base64url, tolerating padding.
pub fn b64url_decode(s: &str) -> Option<Vec<u8>> {
    URL_SAFE_NO_PAD.decode(s.trim_end_matches('=')).ok()
}

/// An RSA signing key with its key id.
#[derive(Clone)]
pub struct SigningKeyPair {
    kid: String,
    signer: SigningKey<Sha256>,
    public: RsaPublicKey,
}

impl std::fmt::Debug for SigningKeyPair {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SigningKeyPair")
            .field("kid", &self.kid)
            .finish_non_exhaustive()
    }
}

impl SigningKeyPair {
    /// Wraps a private key; the key id is the base64url SHA-256 thumbprint of its SPKI DER.
    pub fn new(private: RsaPrivateKey) -> Self {
        let public = private.to_public_key();
        let kid = thumbprint(&public);
        Self {
            kid,
            signer: SigningKey::<Sha256>::new(private),
            public,
        }
    }

    /// Parses a PKCS#8 PEM private key.
    ///
    /// # Errors
    /// [`JwtError::Malformed`] when the PEM is not an RSA PKCS#8 key.
    pub fn from_pkcs8_pem(pem: &str) -> Result<Self, JwtError> {
        RsaPrivateKey::from_pkcs8_pem(pem)
            .map(Self::new)
            .map_err(|_| JwtError::Malformed("not a PKCS#8 RSA private key"))
    }

    /// The key id published in the JWKS and put in the token header.
    pub fn kid(&self) -> &str {
        &self.kid
    }

    /// The public half.
    pub fn public(&self) -> &RsaPublicKey {
        &self.public
    }

    /// Signs `claims` as an RS256 compact JWS with `kid` and `x5t` in the header.
    pub fn sign(&self, claims: &Value) -> String {
        let header = json!({"typ": "JWT", "alg": "RS256", "kid": self.kid, "x5t": self.kid});
        let signing_input = format!(
            "{}.{}",
            b64url(header.to_string().as_bytes()),
            b64url(claims.to_string().as_bytes())
        );
        let sig = self.signer.sign(signing_input.as_bytes());
        format!("{signing_input}.{}", b64url(&sig.to_bytes()))
    }

    /// This key as a JWK (RFC 7517) with `use: sig`, `alg: RS256`.
    pub fn jwk(&self) -> Value {
        jwk(&self.kid, &self.public)
    }
}

/// The JWK of a public key.
pub fn jwk(kid: &str, public: &RsaPublicKey) -> Value {
    json!({
        "kty": "RSA",
        "use": "sig",
        "alg": "RS256",
        "kid": kid,
        "x5t": kid,
        "n": b64url(&public.n().to_bytes_be()),
        "e": b64url(&public.e().to_bytes_be()),
    })
}

/// Base64url SHA-256 of the key's SPKI DER, used as key id.
pub fn thumbprint(public: &RsaPublicKey) -> String {
    match public.to_public_key_der() {
        Ok(der) => b64url(&Sha256::digest(der.as_bytes())),
        // Encoding an in-memory RSA public key cannot fail; fall back to n's hash regardless.
        Err(_) => b64url(&Sha256::digest(public.n().to_bytes_be())),
    }
}

/// Parses an RSA public key from PEM: SPKI (`PUBLIC KEY`) or PKCS#1 (`RSA PUBLIC KEY`).
///
/// # Errors
/// [`JwtError::Malformed`] when neither form parses.
pub fn parse_public_key_pem(pem: &str) -> Result<RsaPublicKey, JwtError> {
    RsaPublicKey::from_public_key_pem(pem.trim())
        .or_else(|_| RsaPublicKey::from_pkcs1_pem(pem.trim()))
        .map_err(|_| JwtError::Malformed("not an RSA public key PEM"))
}

/// A decoded but unverified token: header, claims, signing input, signature bytes.
pub type DecodedJwt = (Map<String, Value>, Map<String, Value>, String, Vec<u8>);

/// Splits a compact JWS and decodes header and claims without checking the signature.
///
/// # Errors
/// [`JwtError::Malformed`] when the token is not three base64url JSON parts.
pub fn decode_unverified(token: &str) -> Result<DecodedJwt, JwtError> {
    if token.len() > 16 * 1024 {
        return Err(JwtError::Malformed("token too long"));
    }
    let mut parts = token.split('.');
    let (Some(h), Some(c), Some(s), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(JwtError::Malformed("expected three parts"));
    };
    let header = b64url_decode(h).ok_or(JwtError::Malformed("header is not base64url"))?;
    let claims = b64url_decode(c).ok_or(JwtError::Malformed("claims are not base64url"))?;
    let sig = b64url_decode(s).ok_or(JwtError::Malformed("signature is not base64url"))?;
    let header: Map<String, Value> = serde_json::from_slice(&header)
        .map_err(|_| JwtError::Malformed("header is not a JSON object"))?;
    let claims: Map<String, Value> = serde_json::from_slice(&claims)
        .map_err(|_| JwtError::Malformed("claims are not a JSON object"))?;
    Ok((header, claims, format!("{h}.{c}"), sig))
}

/// Verifies an RS256 token against candidate keys and checks `exp`/`nbf` at `now_secs`
/// with `skew_secs` tolerance.
///
/// `keys` pairs a key id with a key; when the header carries `kid`, `x5t` or `x5t#S256` only
/// keys with that id are tried.
///
/// # Errors
/// Any [`JwtError`].
pub fn verify_rs256(
    token: &str,
    keys: &[(String, RsaPublicKey)],
    now_secs: u64,
    skew_secs: u64,
) -> Result<VerifiedJwt, JwtError> {
    let (header, claims, signing_input, sig) = decode_unverified(token)?;
    match header.get("alg").and_then(Value::as_str) {
        Some("RS256") => {}
        Some(other) => return Err(JwtError::Algorithm(other.to_owned())),
        None => return Err(JwtError::Algorithm(String::new())),
    }
    let wanted = ["kid", "x5t#S256", "x5t"]
        .iter()
        .find_map(|k| header.get(*k).and_then(Value::as_str));
    let signature = Signature::try_from(sig.as_slice()).map_err(|_| JwtError::Signature)?;
    let ok = keys
        .iter()
        .filter(|(kid, _)| wanted.is_none_or(|w| w == kid))
        .any(|(_, key)| {
            VerifyingKey::<Sha256>::new(key.clone())
                .verify(signing_input.as_bytes(), &signature)
                .is_ok()
        });
    if !ok {
        return Err(JwtError::Signature);
    }
    if let Some(exp) = claims.get("exp") {
        let exp = exp.as_u64().ok_or(JwtError::Claim("exp"))?;
        if now_secs > exp.saturating_add(skew_secs) {
            return Err(JwtError::Expired);
        }
    }
    if let Some(nbf) = claims.get("nbf") {
        let nbf = nbf.as_u64().ok_or(JwtError::Claim("nbf"))?;
        if now_secs.saturating_add(skew_secs) < nbf {
            return Err(JwtError::NotYetValid);
        }
    }
    Ok(VerifiedJwt { header, claims })
}

/// A set of signing keys: one current key plus recently retired ones still published, so
/// tokens signed just before a rotation keep verifying.
#[derive(Debug)]
pub struct KeySet {
    current: SigningKeyPair,
    retired: Vec<SigningKeyPair>,
    retain: usize,
    next_dev_key: usize,
    generate_bits: usize,
    rng_seed: u64,
}

impl KeySet {
    /// A key set starting from the shipped development key at `first_dev_key`.
    ///
    /// `retain` is how many retired keys stay published after a rotation.
    ///
    /// # Errors
    /// [`JwtError::Malformed`] if the shipped key does not parse (a build defect).
    pub fn from_dev_pool(
        first_dev_key: usize,
        retain: usize,
        rng_seed: u64,
    ) -> Result<Self, JwtError> {
        let idx = first_dev_key % DEV_KEYS.len();
        let current = SigningKeyPair::from_pkcs8_pem(DEV_KEYS[idx])?;
        Ok(Self {
            current,
            retired: Vec::new(),
            retain,
            next_dev_key: first_dev_key + 2,
            generate_bits: 2048,
            rng_seed,
        })
    }

    /// The key new tokens are signed with.
    pub fn current(&self) -> &SigningKeyPair {
        &self.current
    }

    /// Every key to publish / accept: current first.
    pub fn all(&self) -> impl Iterator<Item = &SigningKeyPair> {
        std::iter::once(&self.current).chain(self.retired.iter())
    }

    /// `(kid, public key)` pairs for [`verify_rs256`].
    pub fn verification_keys(&self) -> Vec<(String, RsaPublicKey)> {
        self.all()
            .map(|k| (k.kid.clone(), k.public.clone()))
            .collect()
    }

    /// The JWKS document (`{"keys":[...]}`).
    pub fn jwks(&self) -> Value {
        json!({"keys": self.all().map(SigningKeyPair::jwk).collect::<Vec<_>>()})
    }

    /// Produces the next key for a rotation (may be slow when the dev pool is exhausted:
    /// it generates a 2048-bit key). Call outside any lock, then [`KeySet::install`].
    ///
    /// # Errors
    /// [`JwtError::Malformed`] if key generation fails.
    pub fn next_key(&self) -> Result<(SigningKeyPair, usize), JwtError> {
        // Even indices serve one key set and odd ones the other (each set starts on its own
        // parity), so the two sets never share a key.
        let idx = self.next_dev_key;
        if idx < DEV_KEYS.len() {
            return Ok((SigningKeyPair::from_pkcs8_pem(DEV_KEYS[idx])?, idx + 2));
        }
        let mut rng =
            ChaChaCompat::seeded(self.rng_seed ^ (idx as u64).wrapping_mul(0x9e37_79b9_7f4a_7c15));
        let key = RsaPrivateKey::new(&mut rng, self.generate_bits)
            .map_err(|_| JwtError::Malformed("key generation failed"))?;
        Ok((SigningKeyPair::new(key), idx + 2))
    }

    /// Makes `key` current; the old current key is retired (still published).
    pub fn install(&mut self, key: SigningKeyPair, next_dev_key: usize) {
        let old = std::mem::replace(&mut self.current, key);
        self.retired.insert(0, old);
        self.retired.truncate(self.retain);
        self.next_dev_key = next_dev_key;
    }
}

/// A rand_core 0.6 adapter over ChaCha20 from rand 0.9, because `rsa` 0.9 still speaks
/// rand_core 0.6.
pub struct ChaChaCompat(rand_chacha::ChaCha20Rng);

impl ChaChaCompat {
    /// A seeded generator (deterministic keys in tests).
    pub fn seeded(seed: u64) -> Self {
        use rand::SeedableRng as _;
        Self(rand_chacha::ChaCha20Rng::seed_from_u64(seed))
    }
}

impl rsa::rand_core::RngCore for ChaChaCompat {
    fn next_u32(&mut self) -> u32 {
        rand::RngCore::next_u32(&mut self.0)
    }
    fn next_u64(&mut self) -> u64 {
        rand::RngCore::next_u64(&mut self.0)
    }
    fn fill_bytes(&mut self, dest: &mut [u8]) {
        rand::RngCore::fill_bytes(&mut self.0, dest);
    }
    fn try_fill_bytes(&mut self, dest: &mut [u8]) -> Result<(), rsa::rand_core::Error> {
        rand::RngCore::fill_bytes(&mut self.0, dest);
        Ok(())
    }
}

impl rsa::rand_core::CryptoRng for ChaChaCompat {}

/// One of the shipped development private keys, by index (wraps around), as PEM.
///
/// Used to give certificate-credential apps a ready key pair in tests and demos.
pub fn dev_private_key_pem(index: usize) -> &'static str {
    DEV_KEYS[index % DEV_KEYS.len()]
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn sign_then_verify_and_refuse_tampering() {
        let set = KeySet::from_dev_pool(0, 1, 1).unwrap();
        let tok = set
            .current()
            .sign(&json!({"aud": "x", "exp": 2000, "nbf": 1000}));
        let keys = set.verification_keys();
        let v = verify_rs256(&tok, &keys, 1500, 0).unwrap();
        assert_eq!(v.claims["aud"], "x");
        assert_eq!(
            verify_rs256(&tok, &keys, 2100, 60).unwrap_err(),
            JwtError::Expired
        );
        assert_eq!(
            verify_rs256(&tok, &keys, 900, 60).unwrap_err(),
            JwtError::NotYetValid
        );
        let mut parts: Vec<&str> = tok.split('.').collect();
        let forged = b64url(br#"{"aud":"y","exp":2000}"#);
        parts[1] = &forged;
        assert_eq!(
            verify_rs256(&parts.join("."), &keys, 1500, 0).unwrap_err(),
            JwtError::Signature
        );
    }

    #[test]
    fn refuses_none_and_hs256() {
        let set = KeySet::from_dev_pool(0, 1, 1).unwrap();
        let keys = set.verification_keys();
        for alg in ["none", "HS256"] {
            let h = b64url(format!(r#"{{"alg":"{alg}"}}"#).as_bytes());
            let c = b64url(b"{}");
            let tok = format!("{h}.{c}.");
            assert!(matches!(
                verify_rs256(&tok, &keys, 0, 0),
                Err(JwtError::Algorithm(_))
            ));
        }
        assert!(matches!(
            verify_rs256("a.b", &keys, 0, 0),
            Err(JwtError::Malformed(_))
        ));
    }

    #[test]
    fn rotation_keeps_previous_key_published() {
        let mut set = KeySet::from_dev_pool(1, 1, 1).unwrap();
        let old = set.current().kid().to_owned();
        let (k, n) = set.next_key().unwrap();
        set.install(k, n);
        assert_ne!(set.current().kid(), old);
        let kids: Vec<_> = set.all().map(|k| k.kid().to_owned()).collect();
        assert!(kids.contains(&old));
        let (k, n) = set.next_key().unwrap();
        set.install(k, n);
        assert!(
            !set.all().any(|k| k.kid() == old),
            "retain=1 drops the oldest"
        );
    }
}
