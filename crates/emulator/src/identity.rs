//! Identity: registered apps, the OAuth 2.0 v2.0 token endpoint (client credentials with a
//! secret or a signed client assertion), and access-token checks on Graph requests.
//!
//! Errors follow the Microsoft identity platform shape:
//! `{"error","error_description","error_codes":[..],"timestamp","trace_id","correlation_id"}`,
//! with `AADSTS` codes in the description.

use std::collections::HashMap;

use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use crate::jwt::{self, JwtError, KeySet};

/// The five `Calls.*` application permissions (ids from Microsoft's permission reference).
pub mod roles {
    /// Access media streams in a call as an app (`a7a681dc-756e-4909-b988-f160edc6655f`).
    pub const ACCESS_MEDIA: &str = "Calls.AccessMedia.All";
    /// Initiate outgoing 1:1 calls (`284383ee-7f6e-4e40-a2a8-e85dcb029101`).
    pub const INITIATE: &str = "Calls.Initiate.All";
    /// Initiate outgoing group calls (`4c277553-8a09-487b-8023-29ee378d8324`).
    pub const INITIATE_GROUP_CALL: &str = "Calls.InitiateGroupCall.All";
    /// Join group calls and meetings as an app (`f6b49018-60ab-4f81-83bd-22caeabfed2d`).
    pub const JOIN_GROUP_CALL: &str = "Calls.JoinGroupCall.All";
    /// Join group calls and meetings as a guest (`fd7ccf6b-3d28-418b-9701-cd10f5cd2fd4`).
    pub const JOIN_GROUP_CALL_AS_GUEST: &str = "Calls.JoinGroupCallAsGuest.All";
    /// All five, for a fully consented demo app.
    pub const ALL: [&str; 5] = [
        ACCESS_MEDIA,
        INITIATE,
        INITIATE_GROUP_CALL,
        JOIN_GROUP_CALL,
        JOIN_GROUP_CALL_AS_GUEST,
    ];
}

/// Audience of access tokens for Microsoft Graph.
pub const GRAPH_AUDIENCE: &str = "https://graph.microsoft.com";
/// Graph's well-known application id, also accepted as audience.
pub const GRAPH_APP_ID: &str = "00000003-0000-0000-c000-000000000000";
/// Lifetime of issued access tokens, as Microsoft's endpoint reports it (`expires_in`).
pub const ACCESS_TOKEN_LIFETIME_SECS: u64 = 3599;
/// `client_assertion_type` for a certificate credential (RFC 7523).
pub const JWT_BEARER_ASSERTION: &str = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer";

/// What to register: every field is optional except the roles (which may be empty).
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct AppConfig {
    /// Application (client) id; a random UUID when absent.
    pub client_id: Option<String>,
    /// Directory (tenant) id; the emulator's default tenant when absent.
    pub tenant_id: Option<String>,
    /// Display name used in the bot's identity in rosters.
    pub display_name: Option<String>,
    /// Client secret; a random one is generated when neither a secret nor a key is given.
    pub client_secret: Option<String>,
    /// RSA public key (SPKI or PKCS#1 PEM) for certificate client assertions.
    pub public_key_pem: Option<String>,
    /// Use one of the shipped development key pairs as this app's certificate credential
    /// (its private key is then returned in the registration, for tests and demos).
    pub dev_key: Option<usize>,
    /// Consented application permissions (the token's `roles`).
    pub roles: Vec<String>,
    /// The bot's calling webhook (where incoming-call notifications go).
    pub calling_webhook: Option<String>,
}

impl AppConfig {
    /// An app with the given roles and generated credentials.
    pub fn with_roles<I, S>(roles: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        Self {
            roles: roles.into_iter().map(Into::into).collect(),
            ..Self::default()
        }
    }

    /// Sets the client id.
    #[must_use]
    pub fn client_id(mut self, id: impl Into<String>) -> Self {
        self.client_id = Some(id.into());
        self
    }

    /// Sets the client secret.
    #[must_use]
    pub fn secret(mut self, secret: impl Into<String>) -> Self {
        self.client_secret = Some(secret.into());
        self
    }

    /// Sets the calling webhook.
    #[must_use]
    pub fn calling_webhook(mut self, url: impl Into<String>) -> Self {
        self.calling_webhook = Some(url.into());
        self
    }

    /// Registers a certificate credential from a shipped development key pair.
    #[must_use]
    pub fn dev_certificate(mut self, index: usize) -> Self {
        self.dev_key = Some(index);
        self
    }

    /// Sets the tenant.
    #[must_use]
    pub fn tenant(mut self, tenant: impl Into<String>) -> Self {
        self.tenant_id = Some(tenant.into());
        self
    }
}

/// A registered application as the emulator knows it (returned by registration).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct RegisteredApp {
    /// Application (client) id; the audience of notification JWTs.
    pub client_id: String,
    /// Tenant id; `tid` in tokens.
    pub tenant_id: String,
    /// Display name.
    pub display_name: String,
    /// The client secret, if the app has one.
    pub client_secret: Option<String>,
    /// The registered public key (PEM), if the app uses certificate assertions.
    pub public_key_pem: Option<String>,
    /// Thumbprint (base64url SHA-256 of the SPKI) of the registered key; put it in the
    /// assertion header as `kid` or `x5t#S256` (optional: all keys are tried otherwise).
    pub key_thumbprint: Option<String>,
    /// The private key (PKCS#8 PEM) when the emulator assigned a development key pair.
    pub private_key_pem: Option<String>,
    /// Consented roles.
    pub roles: Vec<String>,
    /// Calling webhook for incoming calls.
    pub calling_webhook: Option<String>,
    /// Service principal object id (`oid`/`sub` in tokens).
    pub service_principal_id: String,
}

/// Errors registering an app.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum RegisterError {
    /// An app with that client id exists.
    #[error("an app with client id {0} is already registered")]
    Duplicate(String),
    /// The public key PEM does not parse.
    #[error("public key: {0}")]
    Key(JwtError),
    /// A role is not one of the five `Calls.*` permissions.
    #[error("unknown role {0:?}")]
    UnknownRole(String),
}

/// The registry of apps plus the state the token endpoint needs.
#[derive(Debug, Default)]
pub struct Directory {
    apps: HashMap<String, RegisteredApp>,
    order: Vec<String>,
    /// `client:jti` of accepted assertions with their `exp`; expired ones are pruned.
    used_assertion_ids: HashMap<String, u64>,
}

impl Directory {
    /// Registers an app; `ids` produces random UUID strings.
    ///
    /// # Errors
    /// See [`RegisterError`].
    pub fn register(
        &mut self,
        cfg: AppConfig,
        default_tenant: &str,
        mut ids: impl FnMut() -> String,
    ) -> Result<RegisteredApp, RegisterError> {
        for r in &cfg.roles {
            if !roles::ALL.contains(&r.as_str()) {
                return Err(RegisterError::UnknownRole(r.clone()));
            }
        }
        let client_id = cfg.client_id.unwrap_or_else(&mut ids);
        if self.apps.contains_key(&client_id) {
            return Err(RegisterError::Duplicate(client_id));
        }
        let (public_key_pem, private_key_pem) = match (cfg.public_key_pem, cfg.dev_key) {
            (Some(p), _) => (Some(p), None),
            (None, Some(i)) => {
                let private = jwt::dev_private_key_pem(i);
                let pair =
                    jwt::SigningKeyPair::from_pkcs8_pem(private).map_err(RegisterError::Key)?;
                let public = rsa::pkcs8::EncodePublicKey::to_public_key_pem(
                    pair.public(),
                    rsa::pkcs8::LineEnding::LF,
                )
                .map_err(|_| RegisterError::Key(JwtError::Malformed("public key encoding")))?;
                (Some(public), Some(private.to_owned()))
            }
            (None, None) => (None, None),
        };
        let key_thumbprint = match &public_key_pem {
            Some(p) => Some(jwt::thumbprint(
                &jwt::parse_public_key_pem(p).map_err(RegisterError::Key)?,
            )),
            None => None,
        };
        let client_secret = match cfg.client_secret {
            Some(s) => Some(s),
            None if public_key_pem.is_none() => Some(format!("emu~{}", ids().replace('-', ""))),
            None => None,
        };
        let app = RegisteredApp {
            display_name: cfg.display_name.unwrap_or_else(|| {
                format!("bot-{}", client_id.chars().take(8).collect::<String>())
            }),
            client_id: client_id.clone(),
            tenant_id: cfg.tenant_id.unwrap_or_else(|| default_tenant.to_owned()),
            client_secret,
            public_key_pem,
            key_thumbprint,
            private_key_pem,
            roles: cfg.roles,
            calling_webhook: cfg.calling_webhook,
            service_principal_id: ids(),
        };
        self.order.push(client_id.clone());
        self.apps.insert(client_id, app.clone());
        Ok(app)
    }

    /// A registered app.
    pub fn app(&self, client_id: &str) -> Option<&RegisteredApp> {
        self.apps.get(client_id)
    }

    /// A registered app, mutable (to change roles or webhook).
    pub fn app_mut(&mut self, client_id: &str) -> Option<&mut RegisteredApp> {
        self.apps.get_mut(client_id)
    }

    /// All apps in registration order.
    pub fn apps(&self) -> Vec<RegisteredApp> {
        self.order
            .iter()
            .filter_map(|id| self.apps.get(id).cloned())
            .collect()
    }

    /// Whether any app lives in `tenant`.
    pub fn has_tenant(&self, tenant: &str) -> bool {
        self.apps
            .values()
            .any(|a| a.tenant_id.eq_ignore_ascii_case(tenant))
    }
}

/// A refused token request, rendered as the identity platform's error body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TokenError {
    /// HTTP status (400 or 401).
    pub status: u16,
    /// OAuth error code (`invalid_client`, `invalid_request`, ...).
    pub error: &'static str,
    /// AADSTS number.
    pub code: u32,
    /// Human-readable description (prefixed with `AADSTS<code>:`).
    pub description: String,
}

impl TokenError {
    fn new(status: u16, error: &'static str, code: u32, msg: impl Into<String>) -> Self {
        Self {
            status,
            error,
            code,
            description: format!("AADSTS{code}: {}", msg.into()),
        }
    }

    /// The JSON body.
    pub fn body(&self, timestamp: &str, trace_id: &str) -> Value {
        json!({
            "error": self.error,
            "error_description": format!("{} Trace ID: {trace_id} Timestamp: {timestamp}", self.description),
            "error_codes": [self.code],
            "timestamp": timestamp,
            "trace_id": trace_id,
            "correlation_id": trace_id,
        })
    }
}

/// What the token endpoint is given.
#[derive(Debug, Clone, Default)]
pub struct TokenRequest {
    /// The `{tenant}` path segment.
    pub tenant: String,
    /// Form fields (`application/x-www-form-urlencoded`).
    pub form: HashMap<String, String>,
    /// `client_id:client_secret` from an `Authorization: Basic` header, if present.
    pub basic: Option<(String, String)>,
    /// The token endpoint URL as the emulator serves it (expected assertion `aud`).
    pub token_url: String,
}

/// Handles a client-credentials token request; returns the response body.
///
/// # Errors
/// [`TokenError`] mirroring the identity platform's refusals.
pub fn issue_token(
    dir: &mut Directory,
    keys: &KeySet,
    req: &TokenRequest,
    now_secs: u64,
    token_id: &str,
) -> Result<Value, TokenError> {
    let f = |k: &str| {
        req.form
            .get(k)
            .map(String::as_str)
            .filter(|v| !v.is_empty())
    };
    match f("grant_type") {
        Some("client_credentials") => {}
        Some(other) => {
            return Err(TokenError::new(
                400,
                "unsupported_grant_type",
                70003,
                format!(
                    "The app requested an unsupported grant type '{other}'. This emulator supports client_credentials only."
                ),
            ));
        }
        None => {
            return Err(TokenError::new(
                400,
                "invalid_request",
                900144,
                "The request body must contain the following parameter: 'grant_type'.",
            ));
        }
    }
    let (client_id, basic_secret) = match (&req.basic, f("client_id")) {
        (Some((id, secret)), _) => (id.as_str(), Some(secret.as_str())),
        (None, Some(id)) => (id, None),
        (None, None) => {
            return Err(TokenError::new(
                400,
                "invalid_request",
                900144,
                "The request body must contain the following parameter: 'client_id'.",
            ));
        }
    };
    let scope = f("scope").ok_or_else(|| {
        TokenError::new(
            400,
            "invalid_request",
            900144,
            "The request body must contain the following parameter: 'scope'.",
        )
    })?;
    let resource = scope.strip_suffix("/.default").ok_or_else(|| {
        TokenError::new(
            400,
            "invalid_scope",
            1_002_012,
            format!("The provided value for scope {scope} is not valid. Client credential flows must have a scope value with /.default suffixed to the resource identifier (application ID URI)."),
        )
    })?;
    let resource = resource.trim_end_matches('/');
    if resource != GRAPH_AUDIENCE && resource != GRAPH_APP_ID {
        return Err(TokenError::new(
            400,
            "invalid_resource",
            500_011,
            format!(
                "The resource principal named {resource} was not found in the tenant. This emulator issues tokens for Microsoft Graph only."
            ),
        ));
    }
    let tenant = req.tenant.to_ascii_lowercase();
    let multi = matches!(tenant.as_str(), "common" | "organizations" | "consumers");
    if multi {
        return Err(TokenError::new(
            400,
            "invalid_request",
            1_002_016,
            "Use a tenant-specific endpoint or configure the application to be multi-tenant: client credentials need a tenant id in the authority.",
        ));
    }
    if !dir.has_tenant(&tenant) {
        return Err(TokenError::new(
            400,
            "invalid_request",
            90002,
            format!(
                "Tenant '{}' not found. Check to make sure you have the correct tenant ID and are signing into the correct cloud.",
                req.tenant
            ),
        ));
    }
    let Some(app) = dir
        .app(client_id)
        .cloned()
        .filter(|a| a.tenant_id.eq_ignore_ascii_case(&tenant))
    else {
        return Err(TokenError::new(
            400,
            "unauthorized_client",
            700_016,
            format!(
                "Application with identifier '{client_id}' was not found in the directory '{}'.",
                req.tenant
            ),
        ));
    };
    let secret = basic_secret.or_else(|| f("client_secret"));
    let assertion = f("client_assertion");
    let appidacr = match (secret, assertion) {
        (Some(s), None) => {
            if app.client_secret.as_deref() != Some(s) {
                return Err(TokenError::new(
                    401,
                    "invalid_client",
                    7_000_215,
                    "Invalid client secret provided. Ensure the secret being sent in the request is the client secret value, not the client secret ID.",
                ));
            }
            "1"
        }
        (None, Some(a)) => {
            if f("client_assertion_type") != Some(JWT_BEARER_ASSERTION) {
                return Err(TokenError::new(
                    400,
                    "invalid_request",
                    700_023,
                    format!("client_assertion_type must be '{JWT_BEARER_ASSERTION}'."),
                ));
            }
            check_assertion(dir, &app, a, &req.token_url, now_secs)?;
            "2"
        }
        (Some(_), Some(_)) => {
            return Err(TokenError::new(
                400,
                "invalid_request",
                7_000_218,
                "Only one client credential may be sent: 'client_secret' or 'client_assertion'.",
            ));
        }
        (None, None) => {
            return Err(TokenError::new(
                401,
                "invalid_client",
                7_000_216,
                "'client_assertion', 'client_secret' or 'request' is required for the 'client_credentials' grant type.",
            ));
        }
    };
    let claims = json!({
        "aud": GRAPH_AUDIENCE,
        "iss": format!("https://sts.windows.net/{}/", app.tenant_id),
        "iat": now_secs,
        "nbf": now_secs,
        "exp": now_secs + ACCESS_TOKEN_LIFETIME_SECS,
        "appid": app.client_id,
        "app_displayname": app.display_name,
        "appidacr": appidacr,
        "idtyp": "app",
        "oid": app.service_principal_id,
        "sub": app.service_principal_id,
        "roles": app.roles,
        "tid": app.tenant_id,
        "uti": token_id,
        "ver": "1.0",
    });
    let token = keys.current().sign(&claims);
    Ok(json!({
        "token_type": "Bearer",
        "expires_in": ACCESS_TOKEN_LIFETIME_SECS,
        "ext_expires_in": ACCESS_TOKEN_LIFETIME_SECS,
        "access_token": token,
    }))
}

fn check_assertion(
    dir: &mut Directory,
    app: &RegisteredApp,
    assertion: &str,
    token_url: &str,
    now_secs: u64,
) -> Result<(), TokenError> {
    let bad = |code: u32, msg: &str| TokenError::new(401, "invalid_client", code, msg.to_owned());
    let Some(pem) = &app.public_key_pem else {
        return Err(bad(
            700_027,
            "Client assertion failed signature validation: the application has no registered certificate.",
        ));
    };
    let key = jwt::parse_public_key_pem(pem).map_err(|_| {
        bad(
            700_027,
            "Client assertion failed signature validation: the registered key is unusable.",
        )
    })?;
    // Entra ID matches the header's `x5t` against the certificate's SHA-1 thumbprint; the
    // emulator registers bare keys, so whatever id the header names, the app's key is tried.
    let (header, _, _, _) = jwt::decode_unverified(assertion)
        .map_err(|_| bad(50_027, "JWT token is invalid or malformed."))?;
    let named = ["kid", "x5t#S256", "x5t"]
        .iter()
        .find_map(|k| header.get(*k).and_then(Value::as_str))
        .map_or_else(
            || app.key_thumbprint.clone().unwrap_or_default(),
            str::to_owned,
        );
    let verified = match jwt::verify_rs256(assertion, &[(named, key)], now_secs, 300) {
        Ok(v) => v.claims,
        Err(JwtError::Signature) => {
            return Err(bad(
                700_027,
                "Client assertion failed signature validation.",
            ));
        }
        Err(JwtError::Expired | JwtError::NotYetValid) => {
            return Err(bad(
                700_024,
                "Client assertion is not within its valid time range.",
            ));
        }
        Err(JwtError::Algorithm(a)) => {
            return Err(bad(
                5_002_738,
                &format!(
                    "Invalid JWT token. '{a}' is not a supported signature algorithm; use RS256."
                ),
            ));
        }
        Err(_) => return Err(bad(50_027, "JWT token is invalid or malformed.")),
    };
    if verified.get("exp").and_then(Value::as_u64).is_none() {
        return Err(bad(
            50_027,
            "JWT token is invalid or malformed: 'exp' is required.",
        ));
    }
    let s = |k: &str| verified.get(k).and_then(Value::as_str);
    if s("iss") != Some(app.client_id.as_str()) || s("sub") != Some(app.client_id.as_str()) {
        return Err(bad(
            700_021,
            "Client assertion application identifier doesn't match 'client_id' parameter.",
        ));
    }
    let aud_ok = match verified.get("aud") {
        Some(Value::String(a)) => same_endpoint(a, token_url),
        Some(Value::Array(v)) => v
            .iter()
            .filter_map(Value::as_str)
            .any(|a| same_endpoint(a, token_url)),
        _ => false,
    };
    if !aud_ok {
        return Err(bad(
            700_212,
            &format!(
                "No matching federated identity record found: the assertion audience must be the token endpoint {token_url}."
            ),
        ));
    }
    let Some(jti) = s("jti") else {
        return Err(bad(
            50_027,
            "JWT token is invalid or malformed: 'jti' is required.",
        ));
    };
    let replay_key = format!("{}:{jti}", app.client_id);
    if dir.used_assertion_ids.contains_key(&replay_key) {
        return Err(bad(
            700_025,
            "Client assertion has already been used (jti replay).",
        ));
    }
    if dir.used_assertion_ids.len() >= 10_000 {
        // Only unexpired assertions can be replayed; forget the rest (bounded memory).
        dir.used_assertion_ids
            .retain(|_, exp| *exp + 300 >= now_secs);
    }
    let exp = verified
        .get("exp")
        .and_then(Value::as_u64)
        .unwrap_or(now_secs);
    dir.used_assertion_ids.insert(replay_key, exp);
    Ok(())
}

fn same_endpoint(a: &str, b: &str) -> bool {
    a.trim_end_matches('/')
        .eq_ignore_ascii_case(b.trim_end_matches('/'))
}

/// Who called Graph, from a verified access token.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Principal {
    /// `appid`.
    pub app_id: String,
    /// `tid`.
    pub tenant_id: String,
    /// `roles`.
    pub roles: Vec<String>,
    /// `exp` (epoch seconds).
    pub expires_at: u64,
}

impl Principal {
    /// Whether the token grants `role`.
    pub fn has(&self, role: &str) -> bool {
        self.roles.iter().any(|r| r == role)
    }
}

/// Why a Graph request's bearer token was refused (401).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum AuthError {
    /// No `Authorization: Bearer` header.
    #[error("Access token is empty.")]
    Missing,
    /// Bad signature, malformed, wrong audience...
    #[error("Access token validation failure. {0}")]
    Invalid(String),
    /// Past `exp`.
    #[error("Lifetime validation failed, the token is expired.")]
    Expired,
}

/// Checks a Graph request's `Authorization` header against the identity key set and the
/// directory (the app must be registered).
///
/// # Errors
/// [`AuthError`].
pub fn authenticate(
    authorization: Option<&str>,
    keys: &KeySet,
    dir: &Directory,
    now_secs: u64,
) -> Result<Principal, AuthError> {
    let p = verify_access_token(authorization, keys, now_secs)?;
    if dir.app(&p.app_id).is_none() {
        return Err(AuthError::Invalid("application not registered".into()));
    }
    Ok(p)
}

/// The bearer token of an `Authorization` header.
pub fn bearer(authorization: Option<&str>) -> Option<&str> {
    authorization
        .and_then(|h| {
            h.strip_prefix("Bearer ")
                .or_else(|| h.strip_prefix("bearer "))
        })
        .map(str::trim)
        .filter(|t| !t.is_empty())
}

/// Verifies an access token's signature, lifetime and audience (no directory lookup).
///
/// # Errors
/// [`AuthError`].
pub fn verify_access_token(
    authorization: Option<&str>,
    keys: &KeySet,
    now_secs: u64,
) -> Result<Principal, AuthError> {
    let token = bearer(authorization).ok_or(AuthError::Missing)?;
    let v = jwt::verify_rs256(token, &keys.verification_keys(), now_secs, 300).map_err(
        |e| match e {
            JwtError::Expired => AuthError::Expired,
            other => AuthError::Invalid(other.to_string()),
        },
    )?;
    let s = |k: &str| v.claims.get(k).and_then(Value::as_str);
    match s("aud") {
        Some(GRAPH_AUDIENCE | GRAPH_APP_ID) => {}
        _ => return Err(AuthError::Invalid("Invalid audience.".into())),
    }
    let app_id = s("appid")
        .ok_or_else(|| AuthError::Invalid("missing appid".into()))?
        .to_owned();
    let tenant_id = s("tid")
        .ok_or_else(|| AuthError::Invalid("missing tid".into()))?
        .to_owned();
    let roles = v
        .claims
        .get("roles")
        .and_then(Value::as_array)
        .map(|a| {
            a.iter()
                .filter_map(Value::as_str)
                .map(str::to_owned)
                .collect()
        })
        .unwrap_or_default();
    let expires_at = v
        .claims
        .get("exp")
        .and_then(Value::as_u64)
        .unwrap_or(now_secs);
    Ok(Principal {
        app_id,
        tenant_id,
        roles,
        expires_at,
    })
}
