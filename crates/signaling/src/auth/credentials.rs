//! App credentials: a client secret or a certificate (signed client assertion).

use crate::jwt;
use rsa::RsaPrivateKey;
use rsa::pkcs1::DecodeRsaPrivateKey;
use rsa::pkcs8::DecodePrivateKey;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// A string that never prints.
#[derive(Clone)]
pub struct Secret(String);

impl Secret {
    /// Wraps a secret.
    pub fn new(s: impl Into<String>) -> Self {
        Self(s.into())
    }

    /// The secret itself.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Secret(..)")
    }
}

/// Why credentials could not be built.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum CredentialsError {
    /// The PEM is neither PKCS#8 nor PKCS#1 RSA.
    #[error("private key is not an rsa pkcs#8 or pkcs#1 pem")]
    BadKey,
    /// The thumbprint is not 40 hex digits (SHA-1 of the certificate).
    #[error("certificate thumbprint must be 40 hex digits (sha-1)")]
    BadThumbprint,
}

#[derive(Clone)]
enum Kind {
    Secret(Secret),
    Certificate {
        key: Box<RsaPrivateKey>,
        x5t: String,
    },
}

/// Client-credentials identity of the bot: tenant, app (client) id, and a secret or
/// certificate.
#[derive(Clone)]
pub struct Credentials {
    /// Tenant id (or domain) tokens are requested from.
    pub tenant_id: String,
    /// Application (client) id; also the audience of inbound notification tokens.
    pub client_id: String,
    kind: Kind,
}

impl std::fmt::Debug for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let kind = match self.kind {
            Kind::Secret(_) => "secret",
            Kind::Certificate { .. } => "certificate",
        };
        f.debug_struct("Credentials")
            .field("tenant_id", &self.tenant_id)
            .field("client_id", &self.client_id)
            .field("kind", &kind)
            .finish()
    }
}

impl Credentials {
    /// Client secret credentials.
    pub fn secret(
        tenant_id: impl Into<String>,
        client_id: impl Into<String>,
        secret: impl Into<String>,
    ) -> Self {
        Self {
            tenant_id: tenant_id.into(),
            client_id: client_id.into(),
            kind: Kind::Secret(Secret::new(secret)),
        }
    }

    /// Certificate credentials: the RSA private key (PKCS#8 or PKCS#1 PEM) and the
    /// certificate's SHA-1 thumbprint in hex (as Azure shows it), sent as the `x5t` header.
    ///
    /// # Errors
    /// [`CredentialsError`] for an unreadable key or a malformed thumbprint.
    pub fn certificate(
        tenant_id: impl Into<String>,
        client_id: impl Into<String>,
        private_key_pem: &str,
        thumbprint_hex: &str,
    ) -> Result<Self, CredentialsError> {
        let key = RsaPrivateKey::from_pkcs8_pem(private_key_pem)
            .or_else(|_| RsaPrivateKey::from_pkcs1_pem(private_key_pem))
            .map_err(|_| CredentialsError::BadKey)?;
        let hex: String = thumbprint_hex
            .chars()
            .filter(|c| !matches!(c, ':' | ' '))
            .collect();
        if hex.len() != 40 {
            return Err(CredentialsError::BadThumbprint);
        }
        let bytes = (0..20)
            .map(|i| u8::from_str_radix(hex.get(2 * i..2 * i + 2).unwrap_or("zz"), 16))
            .collect::<Result<Vec<u8>, _>>()
            .map_err(|_| CredentialsError::BadThumbprint)?;
        Ok(Self {
            tenant_id: tenant_id.into(),
            client_id: client_id.into(),
            kind: Kind::Certificate {
                key: Box::new(key),
                x5t: jwt::b64url(&bytes),
            },
        })
    }

    /// True for certificate credentials.
    pub fn is_certificate(&self) -> bool {
        matches!(self.kind, Kind::Certificate { .. })
    }

    /// The form fields that prove the app's identity to `token_endpoint` at `now`.
    pub(crate) fn form_fields(
        &self,
        token_endpoint: &str,
        now: SystemTime,
    ) -> Result<Vec<(&'static str, String)>, jwt::JwtError> {
        match &self.kind {
            Kind::Secret(s) => Ok(vec![("client_secret", s.expose().to_owned())]),
            Kind::Certificate { key, x5t } => {
                let assertion = self.client_assertion(key, x5t, token_endpoint, now)?;
                Ok(vec![
                    (
                        "client_assertion_type",
                        "urn:ietf:params:oauth:client-assertion-type:jwt-bearer".to_owned(),
                    ),
                    ("client_assertion", assertion),
                ])
            }
        }
    }

    fn client_assertion(
        &self,
        key: &RsaPrivateKey,
        x5t: &str,
        token_endpoint: &str,
        now: SystemTime,
    ) -> Result<String, jwt::JwtError> {
        let iat = now
            .duration_since(UNIX_EPOCH)
            .unwrap_or(Duration::ZERO)
            .as_secs();
        let header = serde_json::json!({"alg": "RS256", "typ": "JWT", "x5t": x5t});
        let claims = serde_json::json!({
            "aud": token_endpoint,
            "iss": self.client_id,
            "sub": self.client_id,
            "jti": uuid::Uuid::new_v4().to_string(),
            "iat": iat,
            "nbf": iat,
            "exp": iat + 600,
        });
        jwt::sign_rs256(&header, &claims, key)
    }
}
