//! Proves tokens are cached, refreshed before expiry with one fetch in flight, certificate
//! credentials send a valid signed assertion, and refused credentials are typed errors.

use crate::fake_graph::FakeGraph;
use crate::keys;
use mediabot_signaling::auth::{BotProfile, Clock, TokenProvider, permission_report};
use mediabot_signaling::{Credentials, GraphClient, GraphErrorKind, Permission, jwt};
use serde_json::json;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

#[derive(Debug)]
struct ManualClock(Mutex<SystemTime>);

impl Clock for ManualClock {
    fn now(&self) -> SystemTime {
        *self.0.lock().unwrap()
    }
}

fn provider(g: &FakeGraph, clock: Arc<ManualClock>) -> Arc<TokenProvider> {
    let cfg = g.config();
    let http = GraphClient::http_client(&cfg).unwrap();
    Arc::new(TokenProvider::with_clock(
        http,
        cfg,
        Credentials::secret("tenant-1", "app-1", "s3cret"),
        clock,
    ))
}

#[tokio::test]
async fn concurrent_callers_share_one_fetch_and_the_cache() {
    let g = FakeGraph::start().await;
    let clock = Arc::new(ManualClock(Mutex::new(
        SystemTime::UNIX_EPOCH + Duration::from_secs(1_000_000),
    )));
    let p = provider(&g, clock);
    let tasks: Vec<_> = (0..20)
        .map(|_| {
            let p = p.clone();
            tokio::spawn(async move { p.token().await.unwrap() })
        })
        .collect();
    for t in tasks {
        t.await.unwrap();
    }
    assert_eq!(g.token_count(), 1, "single flight");
    p.token().await.unwrap();
    assert_eq!(g.token_count(), 1, "cached");
    let form = g.shared.token_requests.lock().unwrap()[0].clone();
    let get = |k: &str| form.iter().find(|(n, _)| n == k).map(|(_, v)| v.clone());
    assert_eq!(get("grant_type").as_deref(), Some("client_credentials"));
    assert_eq!(get("client_id").as_deref(), Some("app-1"));
    assert_eq!(
        get("scope").as_deref(),
        Some("https://graph.microsoft.com/.default")
    );
    assert_eq!(get("client_secret").as_deref(), Some("s3cret"));
}

#[tokio::test]
async fn token_is_refreshed_before_it_expires() {
    let g = FakeGraph::start().await;
    let start = SystemTime::UNIX_EPOCH + Duration::from_secs(1_000_000);
    let clock = Arc::new(ManualClock(Mutex::new(start)));
    let p = provider(&g, clock.clone());
    let t1 = p.token().await.unwrap();
    assert_eq!(t1.expires_at, start + Duration::from_secs(3600));
    assert_eq!(
        t1.refresh_at,
        start + Duration::from_secs(3300),
        "5 min early"
    );
    *clock.0.lock().unwrap() = start + Duration::from_secs(3299);
    p.token().await.unwrap();
    assert_eq!(g.token_count(), 1);
    *clock.0.lock().unwrap() = start + Duration::from_secs(3301);
    let t2 = p.token().await.unwrap();
    assert_eq!(
        g.token_count(),
        2,
        "refreshed inside the margin, before expiry"
    );
    assert_ne!(t1.secret.expose(), t2.secret.expose());
    // A failed refresh while the old token is still valid keeps the old token.
    *clock.0.lock().unwrap() = start + Duration::from_secs(3301 + 3301);
    g.push_token(400, json!({"error": "invalid_request"}));
    let t3 = p.token().await.unwrap();
    assert_eq!(t3.secret.expose(), t2.secret.expose());
}

#[tokio::test]
async fn certificate_credentials_send_a_signed_client_assertion() {
    let g = FakeGraph::start().await;
    let key = keys::other_key();
    let thumb = "3A:B1:C2:D3:E4:F5:06:17:28:39:4A:5B:6C:7D:8E:9F:A0:B1:C2:D3";
    let creds = Credentials::certificate("tenant-1", "app-1", &keys::pem(key), thumb).unwrap();
    let client = GraphClient::new(g.config(), creds).unwrap();
    client.keep_alive("c1").await.unwrap();
    let form = g.shared.token_requests.lock().unwrap()[0].clone();
    let get = |k: &str| form.iter().find(|(n, _)| n == k).map(|(_, v)| v.clone());
    assert_eq!(
        get("client_assertion_type").as_deref(),
        Some("urn:ietf:params:oauth:client-assertion-type:jwt-bearer")
    );
    assert!(get("client_secret").is_none());
    let assertion = get("client_assertion").unwrap();
    let t = jwt::decode_unverified(&assertion).unwrap();
    assert_eq!(t.header.alg.as_deref(), Some("RS256"));
    let x5t = jwt::b64url_decode(t.header.x5t.as_deref().unwrap()).unwrap();
    assert_eq!(x5t[0], 0x3A);
    assert_eq!(x5t.len(), 20);
    assert_eq!(
        t.claims["aud"],
        format!("{}/tenant-1/oauth2/v2.0/token", g.authority())
    );
    assert_eq!(t.claims["iss"], "app-1");
    assert_eq!(t.claims["sub"], "app-1");
    assert!(t.claims["exp"].as_u64().unwrap() > t.claims["nbf"].as_u64().unwrap());
    assert!(jwt::verify_rs256(
        t.signing_input.as_bytes(),
        &t.signature,
        &keys::public(key)
    ));
    assert!(!jwt::verify_rs256(
        t.signing_input.as_bytes(),
        &t.signature,
        &keys::public(keys::service_key())
    ));
}

#[test]
fn bad_certificate_inputs_are_refused() {
    assert!(Credentials::certificate("t", "a", "not a pem", &"ab".repeat(20)).is_err());
    assert!(Credentials::certificate("t", "a", &keys::pem(keys::other_key()), "abc").is_err());
    let c = Credentials::secret("t", "a", "hunter2");
    assert!(!format!("{c:?}").contains("hunter2"), "secrets never print");
}

#[tokio::test]
async fn refused_credentials_are_unauthorized() {
    let g = FakeGraph::start().await;
    g.push_token(401, json!({"error": "invalid_client", "error_description": "AADSTS7000215: Invalid client secret provided."}));
    let err = g.client().get_call("c1").await.unwrap_err();
    assert_eq!(err.kind(), &GraphErrorKind::Unauthorized);
    assert_eq!(err.code(), Some("invalid_client"));
    assert!(err.message().contains("AADSTS7000215"));
    assert!(g.requests().is_empty());
}

#[tokio::test]
async fn graph_401_fetches_a_new_token_once() {
    let g = FakeGraph::start().await;
    g.push(
        401,
        vec![],
        json!({"error": {"code": "InvalidAuthenticationToken", "message": "expired"}}),
    );
    g.client().keep_alive("c1").await.unwrap();
    assert_eq!(g.token_count(), 2);
    g.push(
        401,
        vec![],
        json!({"error": {"code": "InvalidAuthenticationToken", "message": "x"}}),
    );
    g.push(
        401,
        vec![],
        json!({"error": {"code": "InvalidAuthenticationToken", "message": "x"}}),
    );
    let err = g.client().keep_alive("c1").await.unwrap_err();
    assert_eq!(err.kind(), &GraphErrorKind::Unauthorized);
}

#[tokio::test]
async fn permission_report_from_the_token_roles() {
    let g = FakeGraph::start().await;
    g.set_roles(&[
        "Calls.JoinGroupCall.All",
        "Calls.AccessMedia.All",
        "OnlineMeetings.Read.All",
    ]);
    let client = g.client();
    let token = client.tokens().token().await.unwrap();
    assert_eq!(
        token.permissions(),
        vec![Permission::JoinGroupCall, Permission::AccessMedia]
    );
    let profile = BotProfile {
        answers_calls: true,
        joins_meetings: true,
        app_hosted_media: true,
        places_calls: true,
        ..BotProfile::default()
    };
    let report = permission_report(&profile, token.roles.as_deref().unwrap());
    assert_eq!(report.missing, vec![Permission::Initiate]);
    assert_eq!(client.permission_report(&profile).await.unwrap(), report);
    assert_eq!(
        report.other_roles,
        vec!["OnlineMeetings.Read.All".to_owned()]
    );
}

#[tokio::test]
async fn a_failed_refresh_is_shared_by_everyone_waiting_for_it() {
    let g = FakeGraph::start().await;
    for _ in 0..20 {
        g.push_token(
            401,
            json!({"error": "invalid_client", "error_description": "AADSTS7000215"}),
        );
    }
    let start = SystemTime::UNIX_EPOCH + Duration::from_secs(1_000_000);
    let p = provider(&g, Arc::new(ManualClock(Mutex::new(start))));
    let tasks: Vec<_> = (0..20)
        .map(|_| {
            let p = p.clone();
            tokio::spawn(async move { p.token().await })
        })
        .collect();
    let mut unauthorized = 0;
    for t in tasks {
        let e = t.await.unwrap().unwrap_err();
        assert_eq!(e.kind(), &GraphErrorKind::Unauthorized);
        unauthorized += 1;
    }
    // All 20 queued behind one fetch (current-thread runtime): they share its error.
    assert_eq!(unauthorized, 20);
    assert_eq!(g.token_count(), 1, "one fetch for 20 waiting callers");
    // A later call tries again.
    assert!(p.token().await.is_err());
    assert_eq!(g.token_count(), 2);
}
