//! The WHIP endpoint through `oneshot` (no sockets): statuses for good and bad tokens,
//! content types, body limits and offers; single use; expiry on an injected clock; DELETE.
#![allow(clippy::unwrap_used)]

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use axum::body::Body;
use axum::http::{Request, StatusCode, header};
use mediabot_media::transport::sdp::inspect_offer;
use mediabot_media::transport::server::{OpenedSession, SessionError};
use mediabot_media::transport::whip::{SessionBackend, WhipConfig, WhipState, router};
use mediabot_media::transport::{CallId, SessionId};
use tower::ServiceExt;

/// A backend that checks the offer like the real one and records opens/closes.
#[derive(Clone, Default)]
struct Fake {
    next: Arc<AtomicU64>,
    closed: Arc<Mutex<Vec<SessionId>>>,
}

impl SessionBackend for Fake {
    async fn open(&self, _call: CallId, offer: String) -> Result<OpenedSession, SessionError> {
        inspect_offer(&offer)?;
        let id = SessionId(0xabc0 + self.next.fetch_add(1, Ordering::SeqCst));
        Ok(OpenedSession {
            id,
            answer_sdp: "v=0\r\nanswer\r\n".into(),
        })
    }
    async fn close(&self, id: SessionId) -> bool {
        self.closed.lock().unwrap().push(id);
        true
    }
}

const OFFER: &str = "v=0\r\no=- 1 1 IN IP4 0.0.0.0\r\ns=-\r\nt=0 0\r\na=fingerprint:sha-256 AB\r\n\
m=audio 9 UDP/TLS/RTP/SAVPF 111\r\na=rtpmap:111 opus/48000/2\r\n";

struct Setup {
    state: WhipState<Fake>,
    fake: Fake,
    now: Arc<Mutex<SystemTime>>,
}

fn setup() -> Setup {
    let now = Arc::new(Mutex::new(
        SystemTime::UNIX_EPOCH + Duration::from_secs(1_800_000_000),
    ));
    let clock_now = Arc::clone(&now);
    let fake = Fake::default();
    let state = WhipState::with_clock(
        WhipConfig {
            public_base_url: "https://bot.example".into(),
            token_ttl: Duration::from_secs(60),
            max_body_bytes: 8 * 1024,
            ..Default::default()
        },
        fake.clone(),
        Arc::new(move || *clock_now.lock().unwrap()),
    );
    Setup { state, fake, now }
}

fn post(call: &str, token: Option<&str>, ctype: &str, body: impl Into<Body>) -> Request<Body> {
    let mut b = Request::post(format!("/whip/{call}")).header(header::CONTENT_TYPE, ctype);
    if let Some(t) = token {
        b = b.header(header::AUTHORIZATION, format!("Bearer {t}"));
    }
    b.body(body.into()).unwrap()
}

async fn send(s: &Setup, req: Request<Body>) -> axum::response::Response {
    router(s.state.clone()).oneshot(req).await.unwrap()
}

async fn body_text(r: axum::response::Response) -> String {
    let b = axum::body::to_bytes(r.into_body(), 1 << 20).await.unwrap();
    String::from_utf8(b.to_vec()).unwrap()
}

#[tokio::test]
async fn good_offer_gets_201_answer_and_location_then_delete() {
    let s = setup();
    let call = CallId::new("c1");
    let minted = s.state.mint_blob(&call);
    assert_eq!(minted.blob.whip, "https://bot.example/whip/c1");
    let token = minted.blob.token.clone();

    let r = send(&s, post("c1", Some(&token), "application/sdp", OFFER)).await;
    assert_eq!(r.status(), StatusCode::CREATED);
    assert_eq!(r.headers()[header::CONTENT_TYPE], "application/sdp");
    let location = r.headers()[header::LOCATION].to_str().unwrap().to_owned();
    assert_eq!(location, "/whip/c1/000000000000abc0");
    assert_eq!(body_text(r).await, "v=0\r\nanswer\r\n");
    assert_eq!(s.state.session_count(), 1);

    // Reuse of the same token: 403.
    let r = send(&s, post("c1", Some(&token), "application/sdp", OFFER)).await;
    assert_eq!(r.status(), StatusCode::FORBIDDEN);

    // DELETE without / with a wrong token, then with the right one.
    let del = |t: Option<&str>| {
        let mut b = Request::delete(&location);
        if let Some(t) = t {
            b = b.header(header::AUTHORIZATION, format!("Bearer {t}"));
        }
        b.body(Body::empty()).unwrap()
    };
    assert_eq!(send(&s, del(None)).await.status(), StatusCode::UNAUTHORIZED);
    assert_eq!(
        send(&s, del(Some("forged"))).await.status(),
        StatusCode::FORBIDDEN
    );
    assert_eq!(send(&s, del(Some(&token))).await.status(), StatusCode::OK);
    assert_eq!(*s.fake.closed.lock().unwrap(), vec![SessionId(0xabc0)]);
    assert_eq!(s.state.session_count(), 0);
    // Gone: 404 for its owner.
    assert_eq!(
        send(&s, del(Some(&token))).await.status(),
        StatusCode::NOT_FOUND
    );
}

#[tokio::test]
async fn bad_tokens_are_401_or_403() {
    let s = setup();
    let c1 = CallId::new("c1");
    let token = s.state.mint_blob(&c1).blob.token;
    let other = s.state.mint_blob(&CallId::new("c2")).blob.token;

    let r = send(&s, post("c1", None, "application/sdp", OFFER)).await;
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
    assert_eq!(r.headers()[header::WWW_AUTHENTICATE], "Bearer");
    let r = send(
        &s,
        post("c1", Some("not-a-token"), "application/sdp", OFFER),
    )
    .await;
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
    let r = send(&s, post("c1", Some(&other), "application/sdp", OFFER)).await;
    assert_eq!(r.status(), StatusCode::FORBIDDEN, "token of another call");

    // Expiry on the injected clock.
    *s.now.lock().unwrap() += Duration::from_secs(61);
    let r = send(&s, post("c1", Some(&token), "application/sdp", OFFER)).await;
    assert_eq!(r.status(), StatusCode::FORBIDDEN, "expired");

    // Revoked when the call ends.
    let fresh = s.state.mint_blob(&c1).blob.token;
    s.state.end_call(&c1).await;
    let r = send(&s, post("c1", Some(&fresh), "application/sdp", OFFER)).await;
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
}

#[tokio::test]
async fn content_type_body_and_offer_checks() {
    let s = setup();
    let call = CallId::new("c1");
    let token = s.state.mint_blob(&call).blob.token;

    let r = send(&s, post("c1", Some(&token), "application/json", OFFER)).await;
    assert_eq!(r.status(), StatusCode::UNSUPPORTED_MEDIA_TYPE);
    let big = format!("{OFFER}{}", "a=x\r\n".repeat(4000));
    let r = send(&s, post("c1", Some(&token), "application/sdp", big)).await;
    assert_eq!(r.status(), StatusCode::PAYLOAD_TOO_LARGE);
    let r = send(&s, post("c1", Some(&token), "application/sdp", "garbage")).await;
    assert_eq!(r.status(), StatusCode::BAD_REQUEST);
    let video =
        "v=0\r\na=fingerprint:x\r\nm=video 9 UDP/TLS/RTP/SAVPF 96\r\na=rtpmap:96 VP8/90000\r\n";
    let r = send(&s, post("c1", Some(&token), "application/sdp", video)).await;
    assert_eq!(r.status(), StatusCode::UNPROCESSABLE_ENTITY);
    let pcmu =
        "v=0\r\na=fingerprint:x\r\nm=audio 9 UDP/TLS/RTP/SAVPF 0\r\na=rtpmap:0 PCMU/8000\r\n";
    let r = send(&s, post("c1", Some(&token), "application/sdp", pcmu)).await;
    assert_eq!(r.status(), StatusCode::UNPROCESSABLE_ENTITY);
    let r = send(
        &s,
        post("c1", Some(&token), "application/sdp", vec![0xffu8, 0xfe]),
    )
    .await;
    assert_eq!(r.status(), StatusCode::BAD_REQUEST);
    // Refused offers do not burn the token: a fixed offer still works once.
    let r = send(
        &s,
        post("c1", Some(&token), "application/sdp; charset=utf-8", OFFER),
    )
    .await;
    assert_eq!(r.status(), StatusCode::CREATED);
    // Trickle ICE is not supported.
    let patch = Request::patch("/whip/c1/000000000000abc0")
        .header(header::AUTHORIZATION, format!("Bearer {token}"))
        .header(header::CONTENT_TYPE, "application/trickle-ice-sdpfrag")
        .body(Body::empty())
        .unwrap();
    assert_eq!(
        send(&s, patch).await.status(),
        StatusCode::METHOD_NOT_ALLOWED
    );
}
