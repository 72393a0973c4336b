//! Token endpoint: issuance per app and roles, every refusal, certificate assertions, metadata, JWKS, rotation.

use base64::Engine as _;
use mediabot_emulator::jwt::SigningKeyPair;
use mediabot_emulator::{AppConfig, roles};
use rsa::pkcs1v15::{Signature, VerifyingKey};
use rsa::signature::Verifier as _;
use rsa::{BigUint, RsaPublicKey};
use serde_json::{Value, json};
use sha2::Sha256;

use crate::common::{Env, env};

fn part(token: &str, i: usize) -> Value {
    let p = token.split('.').nth(i).unwrap();
    serde_json::from_slice(
        &base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(p)
            .unwrap(),
    )
    .unwrap()
}

/// Verifies an RS256 JWT against a JWKS using `rsa` directly (not the emulator's code).
pub fn verify_with_jwks(token: &str, jwks: &Value) -> Value {
    let header = part(token, 0);
    assert_eq!(header["alg"], "RS256");
    let kid = header["kid"].as_str().unwrap();
    let jwk = jwks["keys"]
        .as_array()
        .unwrap()
        .iter()
        .find(|k| k["kid"] == kid)
        .expect("kid in JWKS");
    let b = |s: &Value| {
        BigUint::from_bytes_be(
            &base64::engine::general_purpose::URL_SAFE_NO_PAD
                .decode(s.as_str().unwrap())
                .unwrap(),
        )
    };
    let key = RsaPublicKey::new(b(&jwk["n"]), b(&jwk["e"])).unwrap();
    let (input, sig) = token.rsplit_once('.').unwrap();
    let sig = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(sig)
        .unwrap();
    VerifyingKey::<Sha256>::new(key)
        .verify(
            input.as_bytes(),
            &Signature::try_from(sig.as_slice()).unwrap(),
        )
        .expect("signature verifies");
    part(token, 1)
}

async fn post_token(env: &Env, tenant: &str, form: &[(&str, &str)]) -> (u16, Value) {
    let r = env
        .http
        .post(env.emu.token_url(tenant))
        .form(form)
        .send()
        .await
        .unwrap();
    (r.status().as_u16(), r.json().await.unwrap())
}

#[tokio::test]
async fn tokens_carry_each_apps_claims_and_verify_with_jwks() {
    let env = env().await;
    let other = env
        .emu
        .register_app(AppConfig::with_roles([roles::JOIN_GROUP_CALL]).client_id("second-app"))
        .unwrap();
    let md: Value = env
        .http
        .get(env.emu.identity_metadata_url(&env.app.tenant_id))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(md["token_endpoint"], env.emu.token_url(&env.app.tenant_id));
    let jwks: Value = env
        .http
        .get(md["jwks_uri"].as_str().unwrap())
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    for (app, expected_roles) in [
        (&env.app, roles::ALL.to_vec()),
        (&other, vec![roles::JOIN_GROUP_CALL]),
    ] {
        let t = env.token_for(app).await;
        let claims = verify_with_jwks(&t, &jwks);
        assert_eq!(claims["aud"], "https://graph.microsoft.com");
        assert_eq!(claims["tid"], app.tenant_id.as_str());
        assert_eq!(claims["appid"], app.client_id.as_str());
        assert_eq!(claims["appidacr"], "1");
        assert_eq!(claims["roles"], json!(expected_roles));
        assert!(claims["exp"].as_u64().unwrap() > claims["iat"].as_u64().unwrap());
    }
}

#[tokio::test]
async fn token_refusals_match_the_identity_platform() {
    let env = env().await;
    let tid = env.app.tenant_id.clone();
    let id = env.app.client_id.clone();
    let secret = env.app.client_secret.clone().unwrap();
    let scope = "https://graph.microsoft.com/.default";
    let cases: Vec<(&str, Vec<(&str, &str)>, u16, &str, u64)> = vec![
        (
            "wrong secret",
            vec![
                ("grant_type", "client_credentials"),
                ("client_id", &id),
                ("client_secret", "nope"),
                ("scope", scope),
            ],
            401,
            "invalid_client",
            7_000_215,
        ),
        (
            "no credential",
            vec![
                ("grant_type", "client_credentials"),
                ("client_id", &id),
                ("scope", scope),
            ],
            401,
            "invalid_client",
            7_000_216,
        ),
        (
            "unknown app",
            vec![
                ("grant_type", "client_credentials"),
                ("client_id", "who"),
                ("client_secret", &secret),
                ("scope", scope),
            ],
            400,
            "unauthorized_client",
            700_016,
        ),
        (
            "bad scope",
            vec![
                ("grant_type", "client_credentials"),
                ("client_id", &id),
                ("client_secret", &secret),
                ("scope", "https://graph.microsoft.com"),
            ],
            400,
            "invalid_scope",
            1_002_012,
        ),
        (
            "bad grant",
            vec![
                ("grant_type", "password"),
                ("client_id", &id),
                ("client_secret", &secret),
                ("scope", scope),
            ],
            400,
            "unsupported_grant_type",
            70003,
        ),
        (
            "no grant",
            vec![
                ("client_id", &id),
                ("client_secret", &secret),
                ("scope", scope),
            ],
            400,
            "invalid_request",
            900_144,
        ),
    ];
    for (name, form, status, error, code) in cases {
        let (st, v) = post_token(&env, &tid, &form).await;
        assert_eq!(st, status, "{name}: {v}");
        assert_eq!(v["error"], error, "{name}");
        assert_eq!(v["error_codes"][0], code, "{name}");
        assert!(
            v["error_description"]
                .as_str()
                .unwrap()
                .starts_with(&format!("AADSTS{code}")),
            "{name}"
        );
    }
    let (st, v) = post_token(
        &env,
        "00000000-0000-0000-0000-000000000000",
        &[
            ("grant_type", "client_credentials"),
            ("client_id", &id),
            ("client_secret", &secret),
            ("scope", scope),
        ],
    )
    .await;
    assert_eq!((st, v["error_codes"][0].as_u64()), (400, Some(90002)));
    // client_secret_basic works too.
    let r = env
        .http
        .post(env.emu.token_url(&tid))
        .basic_auth(&id, Some(&secret))
        .form(&[("grant_type", "client_credentials"), ("scope", scope)])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
}

#[tokio::test]
async fn certificate_assertion_is_verified_and_single_use() {
    let env = env().await;
    let app = env
        .emu
        .register_app(AppConfig::with_roles([roles::ACCESS_MEDIA]).dev_certificate(6))
        .unwrap();
    assert!(app.client_secret.is_none());
    let key = SigningKeyPair::from_pkcs8_pem(app.private_key_pem.as_deref().unwrap()).unwrap();
    let wrong =
        SigningKeyPair::from_pkcs8_pem(mediabot_emulator::jwt::dev_private_key_pem(7)).unwrap();
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let aud = env.emu.token_url(&app.tenant_id);
    let claims = |jti: &str, aud: &str, exp: u64| json!({"aud": aud, "iss": app.client_id, "sub": app.client_id, "jti": jti, "nbf": now - 10, "exp": exp});
    let form = |a: &str| {
        vec![
            ("grant_type".to_owned(), "client_credentials".to_owned()),
            ("client_id".to_owned(), app.client_id.clone()),
            (
                "client_assertion_type".to_owned(),
                "urn:ietf:params:oauth:client-assertion-type:jwt-bearer".to_owned(),
            ),
            ("client_assertion".to_owned(), a.to_owned()),
            (
                "scope".to_owned(),
                "https://graph.microsoft.com/.default".to_owned(),
            ),
        ]
    };
    let send = |a: String| {
        let f = form(&a);
        let url = aud.clone();
        let http = env.http.clone();
        async move {
            let r = http.post(url).form(&f).send().await.unwrap();
            (r.status().as_u16(), r.json::<Value>().await.unwrap())
        }
    };
    let good = key.sign(&claims("j1", &aud, now + 300));
    let (st, v) = send(good.clone()).await;
    assert_eq!(st, 200, "{v}");
    let tok = v["access_token"].as_str().unwrap();
    assert_eq!(part(tok, 1)["appidacr"], "2");
    assert_eq!(part(tok, 1)["roles"], json!([roles::ACCESS_MEDIA]));
    let (st, v) = send(good).await;
    assert_eq!(
        (st, v["error_codes"][0].as_u64()),
        (401, Some(700_025)),
        "replayed jti"
    );
    let (st, v) = send(wrong.sign(&claims("j2", &aud, now + 300))).await;
    assert_eq!(
        (st, v["error_codes"][0].as_u64()),
        (401, Some(700_027)),
        "other key"
    );
    let (st, v) = send(key.sign(&claims("j3", "https://elsewhere/token", now + 300))).await;
    assert_eq!(
        (st, v["error_codes"][0].as_u64()),
        (401, Some(700_212)),
        "wrong aud"
    );
    let (st, v) = send(key.sign(&claims("j4", &aud, now - 1000))).await;
    assert_eq!(
        (st, v["error_codes"][0].as_u64()),
        (401, Some(700_024)),
        "expired"
    );
}

#[tokio::test]
async fn token_key_rotation_keeps_old_tokens_valid_and_publishes_both() {
    let env = env().await;
    let before = env.token().await;
    let old_kid = part(&before, 0)["kid"].as_str().unwrap().to_owned();
    let (st, v) = env
        .ctl("POST", "/keys/rotate", Some(json!({"set": "tokens"})))
        .await;
    assert_eq!(st, 200);
    let new_kid = v["kid"].as_str().unwrap().to_owned();
    assert_ne!(new_kid, old_kid);
    let after = env.token().await;
    assert_eq!(part(&after, 0)["kid"], new_kid.as_str());
    let jwks: Value = env
        .http
        .get(format!(
            "{}/{}/discovery/v2.0/keys",
            env.emu.base_url(),
            env.app.tenant_id
        ))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let kids: Vec<&str> = jwks["keys"]
        .as_array()
        .unwrap()
        .iter()
        .map(|k| k["kid"].as_str().unwrap())
        .collect();
    assert!(kids.contains(&old_kid.as_str()) && kids.contains(&new_kid.as_str()));
    let id = env.established_call().await;
    let (st, _, _) = env
        .graph_as(&before, "GET", &format!("/communications/calls/{id}"), None)
        .await;
    assert_eq!(st, 200, "a token signed before rotation is still accepted");
}
