//! Proves inbound notification tokens are verified strictly (one test per forged variant),
//! keys are fetched from OpenID metadata with a bounded refresh on unknown kids, and bodies
//! are bounded and parsed only after verification.

use crate::keys;
use axum::Router;
use axum::routing::get;
use mediabot_signaling::jwt;
use mediabot_signaling::notifications::*;
use rsa::traits::PublicKeyParts;
use serde_json::{Value, json};
use sha2::{Digest, Sha256};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

const APP: &str = "bot-app-id";
const NOW: u64 = 1_800_000_000;

fn now() -> SystemTime {
    UNIX_EPOCH + Duration::from_secs(NOW)
}

fn jwk(kid: &str, key: &rsa::RsaPrivateKey) -> Value {
    let pk = keys::public(key);
    json!({"kty": "RSA", "use": "sig", "kid": kid, "n": jwt::b64url(&pk.n().to_bytes_be()), "e": jwt::b64url(&pk.e().to_bytes_be())})
}

struct KeyService {
    base: String,
    fetches: Arc<AtomicUsize>,
    jwks: Arc<Mutex<Value>>,
}

async fn key_service() -> KeyService {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    let fetches = Arc::new(AtomicUsize::new(0));
    let jwks = Arc::new(Mutex::new(
        json!({"keys": [jwk("k1", keys::service_key())]}),
    ));
    let meta =
        json!({"issuer": "https://api.botframework.com", "jwks_uri": format!("{base}/keys")});
    let (f, j) = (fetches.clone(), jwks.clone());
    let app = Router::new()
        .route(
            "/.well-known/OpenIdConfiguration",
            get(move || async move { axum::Json(meta) }),
        )
        .route(
            "/keys",
            get(move || {
                let (f, j) = (f.clone(), j.clone());
                async move {
                    f.fetch_add(1, Ordering::SeqCst);
                    axum::Json(j.lock().unwrap().clone())
                }
            }),
        );
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    KeyService {
        base,
        fetches,
        jwks,
    }
}

fn verifier(ks: &KeyService, tweak: impl FnOnce(&mut VerifierConfig)) -> NotificationVerifier {
    let mut cfg = VerifierConfig::new(APP);
    cfg.openid_metadata_url = format!("{}/.well-known/OpenIdConfiguration", ks.base);
    tweak(&mut cfg);
    NotificationVerifier::new(cfg, reqwest::Client::new())
}

fn claims() -> Value {
    json!({
        "iss": "https://graph.microsoft.com",
        "aud": APP,
        "tid": "tenant-1",
        "nbf": NOW - 60,
        "iat": NOW - 60,
        "exp": NOW + 3600,
    })
}

fn mint(header: Value, claims: &Value, key: &rsa::RsaPrivateKey) -> String {
    jwt::sign_rs256(&header, claims, key).unwrap()
}

fn good_token() -> String {
    mint(
        json!({"alg": "RS256", "typ": "JWT", "kid": "k1"}),
        &claims(),
        keys::service_key(),
    )
}

fn body() -> Vec<u8> {
    json!({
        "@odata.type": "#microsoft.graph.commsNotifications",
        "value": [{
            "@odata.type": "#microsoft.graph.commsNotification",
            "changeType": "updated",
            "resourceUrl": "/communications/calls/c1",
            "resourceData": {"@odata.type": "#microsoft.graph.call", "state": "established"}
        }]
    })
    .to_string()
    .into_bytes()
}

async fn refused(v: &NotificationVerifier, token: &str) -> VerifyError {
    v.verify_at(Some(&format!("Bearer {token}")), &body(), now())
        .await
        .unwrap_err()
}

fn hmac_sha256(key: &[u8], msg: &[u8]) -> Vec<u8> {
    let mut k = if key.len() > 64 {
        Sha256::digest(key).to_vec()
    } else {
        key.to_vec()
    };
    k.resize(64, 0);
    let ipad: Vec<u8> = k.iter().map(|b| b ^ 0x36).collect();
    let opad: Vec<u8> = k.iter().map(|b| b ^ 0x5c).collect();
    let inner = Sha256::new()
        .chain_update(&ipad)
        .chain_update(msg)
        .finalize();
    Sha256::new()
        .chain_update(&opad)
        .chain_update(inner)
        .finalize()
        .to_vec()
}

#[tokio::test]
async fn valid_token_is_accepted_and_body_parsed() {
    let ks = key_service().await;
    let v = verifier(&ks, |_| {});
    let ok = v
        .verify_at(Some(&format!("Bearer {}", good_token())), &body(), now())
        .await
        .unwrap();
    assert_eq!(ok.claims.tenant_id, "tenant-1");
    assert_eq!(ok.notifications.len(), 1);
    assert_eq!(ok.notifications[0].call_id(), Some("c1"));
    // The URI form of the tenant claim, an audience array and "bearer" in lower case.
    let mut c = claims();
    c.as_object_mut().unwrap().remove("tid");
    c["http://schemas.microsoft.com/identity/claims/tenantid"] = json!("tenant-2");
    c["aud"] = json!(["other", APP]);
    let t = mint(
        json!({"alg": "RS256", "kid": "k1"}),
        &c,
        keys::service_key(),
    );
    let ok = v
        .verify_at(Some(&format!("bearer {t}")), &body(), now())
        .await
        .unwrap();
    assert_eq!(ok.claims.tenant_id, "tenant-2");
    assert_eq!(v.stats().accepted, 2);
    assert_eq!(ks.fetches.load(Ordering::SeqCst), 1, "keys cached");
}

#[tokio::test]
async fn forged_none_alg() {
    let ks = key_service().await;
    let v = verifier(&ks, |_| {});
    let h = jwt::b64url(br#"{"alg":"none","kid":"k1"}"#);
    let c = jwt::b64url(claims().to_string().as_bytes());
    let e = refused(&v, &format!("{h}.{c}.")).await;
    assert_eq!(e, VerifyError::UnsupportedAlgorithm("none".into()));
    assert_eq!(e.http_status(), 401);
}

#[tokio::test]
async fn forged_hs256_with_the_public_key() {
    let ks = key_service().await;
    let v = verifier(&ks, |_| {});
    let h = jwt::b64url(br#"{"alg":"HS256","kid":"k1"}"#);
    let c = jwt::b64url(claims().to_string().as_bytes());
    let input = format!("{h}.{c}");
    let pk = keys::public(keys::service_key());
    let secret =
        rsa::pkcs8::EncodePublicKey::to_public_key_pem(&pk, rsa::pkcs8::LineEnding::LF).unwrap();
    let sig = hmac_sha256(secret.as_bytes(), input.as_bytes());
    let e = refused(&v, &format!("{input}.{}", jwt::b64url(&sig))).await;
    assert_eq!(e, VerifyError::UnsupportedAlgorithm("HS256".into()));
}

#[tokio::test]
async fn forged_wrong_audience() {
    let ks = key_service().await;
    let mut c = claims();
    c["aud"] = json!("someone-else");
    let t = mint(
        json!({"alg": "RS256", "kid": "k1"}),
        &c,
        keys::service_key(),
    );
    assert_eq!(
        refused(&verifier(&ks, |_| {}), &t).await,
        VerifyError::WrongAudience
    );
}

#[tokio::test]
async fn forged_wrong_issuer() {
    let ks = key_service().await;
    let mut c = claims();
    c["iss"] = json!("https://evil.example");
    let t = mint(
        json!({"alg": "RS256", "kid": "k1"}),
        &c,
        keys::service_key(),
    );
    assert_eq!(
        refused(&verifier(&ks, |_| {}), &t).await,
        VerifyError::WrongIssuer
    );
}

#[tokio::test]
async fn forged_expired() {
    let ks = key_service().await;
    let mut c = claims();
    c["exp"] = json!(NOW - 61); // beyond the 60 s skew
    let t = mint(
        json!({"alg": "RS256", "kid": "k1"}),
        &c,
        keys::service_key(),
    );
    assert_eq!(
        refused(&verifier(&ks, |_| {}), &t).await,
        VerifyError::Expired
    );
    // Inside the skew it is still accepted.
    c["exp"] = json!(NOW - 30);
    let t = mint(
        json!({"alg": "RS256", "kid": "k1"}),
        &c,
        keys::service_key(),
    );
    assert!(
        verifier(&ks, |_| {})
            .verify_at(Some(&format!("Bearer {t}")), &body(), now())
            .await
            .is_ok()
    );
}

#[tokio::test]
async fn forged_not_yet_valid() {
    let ks = key_service().await;
    let mut c = claims();
    c["nbf"] = json!(NOW + 600);
    let t = mint(
        json!({"alg": "RS256", "kid": "k1"}),
        &c,
        keys::service_key(),
    );
    assert_eq!(
        refused(&verifier(&ks, |_| {}), &t).await,
        VerifyError::NotYetValid
    );
}

#[tokio::test]
async fn forged_unknown_kid() {
    let ks = key_service().await;
    let t = mint(
        json!({"alg": "RS256", "kid": "k-unknown"}),
        &claims(),
        keys::other_key(),
    );
    assert_eq!(
        refused(&verifier(&ks, |_| {}), &t).await,
        VerifyError::UnknownKey
    );
}

#[tokio::test]
async fn forged_missing_tenant() {
    let ks = key_service().await;
    let mut c = claims();
    c.as_object_mut().unwrap().remove("tid");
    let t = mint(
        json!({"alg": "RS256", "kid": "k1"}),
        &c,
        keys::service_key(),
    );
    assert_eq!(
        refused(&verifier(&ks, |_| {}), &t).await,
        VerifyError::MissingTenant
    );
}

#[tokio::test]
async fn forged_tenant_not_allowed() {
    let ks = key_service().await;
    let v = verifier(&ks, |c| c.allowed_tenants = Some(vec!["tenant-9".into()]));
    let e = refused(&v, &good_token()).await;
    assert_eq!(e, VerifyError::TenantNotAllowed("tenant-1".into()));
    assert_eq!(e.http_status(), 403);
    assert_eq!(e.label(), "tenant_not_allowed");
}

#[tokio::test]
async fn forged_tampered_signature() {
    let ks = key_service().await;
    let v = verifier(&ks, |_| {});
    // Same header and signature, claims changed to another tenant.
    let good = good_token();
    let parts: Vec<&str> = good.split('.').collect();
    let mut c = claims();
    c["tid"] = json!("tenant-evil");
    let forged = format!(
        "{}.{}.{}",
        parts[0],
        jwt::b64url(c.to_string().as_bytes()),
        parts[2]
    );
    assert_eq!(refused(&v, &forged).await, VerifyError::BadSignature);
    // Signed by a key that is not the service's, under the service's kid.
    let t = mint(
        json!({"alg": "RS256", "kid": "k1"}),
        &claims(),
        keys::other_key(),
    );
    assert_eq!(refused(&v, &t).await, VerifyError::BadSignature);
}

#[tokio::test]
async fn missing_or_malformed_tokens_and_bodies() {
    let ks = key_service().await;
    let v = verifier(&ks, |c| c.max_body_bytes = 4096);
    assert_eq!(
        v.verify_at(None, &body(), now()).await.unwrap_err(),
        VerifyError::MissingToken
    );
    assert_eq!(
        v.verify_at(Some("Basic abc"), &body(), now())
            .await
            .unwrap_err(),
        VerifyError::MissingToken
    );
    assert_eq!(refused(&v, "a.b").await, VerifyError::MalformedToken);
    assert_eq!(
        refused(&v, "!!!.???.***").await,
        VerifyError::MalformedToken
    );
    let huge = vec![b'{'; 4097];
    let e = v
        .verify_at(Some(&format!("Bearer {}", good_token())), &huge, now())
        .await
        .unwrap_err();
    assert_eq!(e.http_status(), 413);
    let e = v
        .verify_at(
            Some(&format!("Bearer {}", good_token())),
            b"{not json",
            now(),
        )
        .await
        .unwrap_err();
    assert_eq!(e.http_status(), 400);
    let e = v
        .verify_at(
            Some(&format!("Bearer {}", good_token())),
            br#"{"value":[{"changeType":"updated"}]}"#,
            now(),
        )
        .await
        .unwrap_err();
    assert_eq!(e.http_status(), 400, "resourceUrl missing");
    // Unauthenticated bodies are never parsed: a malformed body with no token is a 401.
    assert_eq!(
        v.verify_at(None, b"{not json", now())
            .await
            .unwrap_err()
            .http_status(),
        401
    );
    assert!(v.stats().rejected >= 8);
}

#[tokio::test]
async fn unknown_kid_flood_fetches_keys_a_bounded_number_of_times() {
    let ks = key_service().await;
    let v = verifier(&ks, |_| {});
    for i in 0..50 {
        // The signature is never looked at for an unknown kid, so it need not be real.
        let h = jwt::b64url(
            json!({"alg": "RS256", "kid": format!("flood-{i}")})
                .to_string()
                .as_bytes(),
        );
        let t = format!(
            "{h}.{}.{}",
            jwt::b64url(claims().to_string().as_bytes()),
            jwt::b64url(&[7; 256])
        );
        assert_eq!(refused(&v, &t).await, VerifyError::UnknownKey);
    }
    assert_eq!(
        ks.fetches.load(Ordering::SeqCst),
        1,
        "one initial fetch, then rate limited"
    );
    assert_eq!(v.stats().key_fetches, 1);
}

#[tokio::test]
async fn rotated_key_is_picked_up_on_unknown_kid() {
    let ks = key_service().await;
    let v = verifier(&ks, |c| c.min_key_refresh_interval = Duration::ZERO);
    v.verify_at(Some(&format!("Bearer {}", good_token())), &body(), now())
        .await
        .unwrap();
    *ks.jwks.lock().unwrap() =
        json!({"keys": [jwk("k1", keys::service_key()), jwk("k2", keys::other_key())]});
    let t = mint(
        json!({"alg": "RS256", "kid": "k2"}),
        &claims(),
        keys::other_key(),
    );
    v.verify_at(Some(&format!("Bearer {t}")), &body(), now())
        .await
        .unwrap();
    assert_eq!(ks.fetches.load(Ordering::SeqCst), 2);
}

#[tokio::test]
async fn unreachable_metadata_is_503_and_bounded() {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    drop(listener);
    let mut cfg = VerifierConfig::new(APP);
    cfg.openid_metadata_url = format!("http://{addr}/.well-known/OpenIdConfiguration");
    let v = NotificationVerifier::new(cfg, reqwest::Client::new());
    for _ in 0..5 {
        let e = v
            .verify_at(Some(&format!("Bearer {}", good_token())), &body(), now())
            .await
            .unwrap_err();
        assert_eq!(e.http_status(), 503);
    }
    assert_eq!(
        v.stats().key_fetches,
        1,
        "failed fetches are rate limited too"
    );
}

#[test]
fn small_and_non_signing_keys_are_ignored() {
    let doc = json!({"keys": [
        {"kty": "RSA", "kid": "small", "n": jwt::b64url(&[0xff; 128]), "e": "AQAB"},
        {"kty": "EC", "kid": "ec", "crv": "P-256", "x": "a", "y": "b"},
        {"kty": "RSA", "kid": "enc", "use": "enc", "n": jwt::b64url(&[0xff; 256]), "e": "AQAB"},
        {"kty": "RSA", "kid": "rs512", "alg": "RS512", "n": jwt::b64url(&[0xff; 256]), "e": "AQAB"},
        {"kty": "RSA", "kid": "bad-b64", "n": "***", "e": "AQAB"},
    ]});
    assert!(KeySet::from_jwks(&doc).is_empty());
    assert!(KeySet::from_jwks(&json!({"keys": [jwk("k1", keys::service_key())]})).len() == 1);
}

#[tokio::test]
async fn null_or_odd_claims_are_refused_not_skipped() {
    let ks = key_service().await;
    let v = verifier(&ks, |_| {});
    let token_with = |edit: &dyn Fn(&mut Value)| {
        let mut c = claims();
        edit(&mut c);
        mint(
            json!({"alg": "RS256", "typ": "JWT", "kid": "k1"}),
            &c,
            keys::service_key(),
        )
    };
    // A present-but-null `nbf` is malformed, not absent.
    let t = token_with(&|c| c["nbf"] = Value::Null);
    assert_eq!(refused(&v, &t).await, VerifyError::MalformedToken);
    // A null `tid` is no tenant, even with the URI claim present.
    let t = token_with(&|c| {
        c["tid"] = Value::Null;
        c["http://schemas.microsoft.com/identity/claims/tenantid"] = json!("tenant-1");
    });
    assert_eq!(refused(&v, &t).await, VerifyError::MissingTenant);
    // The URI claim alone names the tenant.
    let t = token_with(&|c| {
        c.as_object_mut().unwrap().remove("tid");
        c["http://schemas.microsoft.com/identity/claims/tenantid"] = json!("tenant-1");
    });
    let ok = v
        .verify_at(Some(&format!("Bearer {t}")), &body(), now())
        .await
        .unwrap();
    assert_eq!(ok.claims.tenant_id, "tenant-1");
    // `aud` as an array containing the app id is accepted; a number is not.
    let t = token_with(&|c| c["aud"] = json!(["other", APP]));
    assert!(
        v.verify_at(Some(&format!("Bearer {t}")), &body(), now())
            .await
            .is_ok()
    );
    let t = token_with(&|c| c["aud"] = json!(5));
    assert_eq!(refused(&v, &t).await, VerifyError::WrongAudience);
    // Claims that are a JSON array, not an object, are malformed (even when signed).
    let t = mint(
        json!({"alg": "RS256", "typ": "JWT", "kid": "k1"}),
        &json!([1, 2, 3, 4, 5, 6]),
        keys::service_key(),
    );
    assert_eq!(refused(&v, &t).await, VerifyError::MalformedToken);
}
