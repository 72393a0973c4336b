//! The cost of accepting one Graph notification, part by part, against the floor of the one
//! thing a verifier cannot skip: an RS256 signature check of the bearer token.
//!
//! Issue 7's webhook target is 5,000 verified notifications per second per core (200 µs each,
//! HTTP included). These benches show where a notification's CPU goes before HTTP:
//! - `rs256_floor`: bare RSA PKCS#1 v1.5 / SHA-256 verification of the token's signing input
//!   with `ring`, the same library the verifier uses (key components prepared once);
//! - `rs256_rsa_crate`: the same check with the pure-Rust `rsa` crate, which the verifier used
//!   before (kept to show why it changed);
//! - `verify_token`: the whole token check (decode, key lookup, signature, claims);
//! - `parse_body`: parsing a typical `commsNotifications` body (a roster of five participants);
//! - `verify_and_parse`: both, i.e. the notification's CPU cost without HTTP.
//!
//! Run: `cargo bench --bench webhook`. The paired line printed at the end is the ratio
//! `verify_and_parse / rs256_floor` measured in the same run (minimum of alternated blocks).

use std::hint::black_box;
use std::time::{Duration, Instant, SystemTime};

use criterion::{Criterion, criterion_group, criterion_main};
use mediabot_emulator::jwt::KeySet as EmulatorKeys;
use mediabot_signaling::jwt;
use mediabot_signaling::notifications::{KeySet, TokenRules, parse_notifications, verify_token};
use rsa::pkcs1v15::{Signature, VerifyingKey};
use rsa::signature::Verifier;
use rsa::traits::PublicKeyParts;
use serde_json::json;
use sha2::Sha256;

const APP: &str = "11111111-2222-3333-4444-555555555555";
const TENANT: &str = "aaaaaaaa-bbbb-cccc-dddd-eeeeeeeeeeee";
const ISSUER: &str = "https://graph.microsoft.com";

/// A signed token with the claims the emulator (like Graph) puts on notifications, the key set
/// that verifies it, and a typical body.
struct Fixture {
    token: String,
    keys: KeySet,
    issuers: Vec<String>,
    body: Vec<u8>,
    now: SystemTime,
}

fn fixture() -> Fixture {
    let signing = EmulatorKeys::from_dev_pool(0, 1, 7).expect("shipped dev key parses");
    let key = signing.current();
    let now = SystemTime::now();
    let unix = now
        .duration_since(SystemTime::UNIX_EPOCH)
        .expect("after 1970")
        .as_secs();
    let token = key.sign(&json!({
        "iss": ISSUER, "aud": APP, "tid": TENANT, "iat": unix, "nbf": unix - 60,
        "exp": unix + 3600, "appid": APP, "appidacr": "2",
    }));
    let mut keys = KeySet::default();
    keys.insert(key.kid(), key.public().clone());
    let participants: Vec<_> = (1..=5)
        .map(|i| {
            json!({
                "@odata.type": "#microsoft.graph.participant",
                "id": format!("p{i}"),
                "info": {"identity": {"user": {"id": format!("u{i}"), "displayName": format!("Speaker {i}")}}},
                "mediaStreams": [{"mediaType": "audio", "sourceId": format!("{}", 100 + i), "direction": "sendReceive", "serverMuted": false}],
                "isMuted": false, "isInLobby": false
            })
        })
        .collect();
    let body = json!({
        "@odata.type": "#microsoft.graph.commsNotifications",
        "value": [{
            "@odata.type": "#microsoft.graph.commsNotification",
            "changeType": "updated",
            "resourceUrl": "/communications/calls/491f0b00-ffff-4bc9-a43e-b226498ec22a/participants",
            "resourceData": participants,
        }]
    })
    .to_string()
    .into_bytes();
    Fixture {
        token,
        keys,
        issuers: vec![ISSUER.to_owned()],
        body,
        now,
    }
}

impl Fixture {
    fn rules(&self) -> TokenRules<'_> {
        TokenRules {
            audience: APP,
            issuers: &self.issuers,
            tenants: None,
            skew: Duration::from_secs(300),
        }
    }

    /// The bare signature check in `ring`: the floor.
    fn floor(&self, key: &Components, input: &[u8], sig: &[u8]) -> bool {
        ring::signature::RsaPublicKeyComponents {
            n: &key.0,
            e: &key.1,
        }
        .verify(&ring::signature::RSA_PKCS1_2048_8192_SHA256, input, sig)
        .is_ok()
    }

    fn verify_and_parse(&self) -> usize {
        let claims = verify_token(&self.token, &self.keys, &self.rules(), self.now);
        let parsed = parse_notifications(&self.body);
        usize::from(claims.is_ok()) + parsed.map_or(0, |n| n.len())
    }
}

/// An RSA public key's modulus and exponent, big-endian.
struct Components(Vec<u8>, Vec<u8>);

/// The signing input and signature of a compact JWT, for the floor.
fn split(token: &str) -> (Vec<u8>, Vec<u8>) {
    let (input, sig) = token.rsplit_once('.').expect("compact JWT");
    let sig = jwt::b64url_decode(sig).expect("base64url signature");
    (input.as_bytes().to_vec(), sig)
}

/// The dev signing key's public half, as `ring` components and as an `rsa` verifier.
fn public_key() -> (Components, VerifyingKey<Sha256>) {
    let signing = EmulatorKeys::from_dev_pool(0, 1, 7).expect("shipped dev key parses");
    let public = signing.current().public().clone();
    (
        Components(public.n().to_bytes_be(), public.e().to_bytes_be()),
        VerifyingKey::<Sha256>::new(public),
    )
}

fn bench_webhook(c: &mut Criterion) {
    let f = fixture();
    assert_eq!(f.verify_and_parse(), 2, "fixture must verify and parse");
    let (input, sig) = split(&f.token);
    let (key, rsa_verifier) = public_key();
    let rsa_sig = Signature::try_from(sig.as_slice()).expect("signature bytes");
    assert!(f.floor(&key, &input, &sig), "floor must verify");
    assert!(
        rsa_verifier.verify(&input, &rsa_sig).is_ok(),
        "rsa crate must verify"
    );

    let mut group = c.benchmark_group("webhook");
    group.bench_function("rs256_floor", |b| {
        b.iter(|| black_box(f.floor(&key, black_box(&input), &sig)))
    });
    group.bench_function("rs256_rsa_crate", |b| {
        b.iter(|| black_box(rsa_verifier.verify(black_box(&input), &rsa_sig).is_ok()))
    });
    group.bench_function("verify_token", |b| {
        b.iter(|| {
            black_box(verify_token(
                black_box(&f.token),
                &f.keys,
                &f.rules(),
                f.now,
            ))
        })
    });
    group.bench_function("parse_body", |b| {
        b.iter(|| black_box(parse_notifications(black_box(&f.body))))
    });
    group.bench_function("verify_and_parse", |b| {
        b.iter(|| black_box(f.verify_and_parse()))
    });
    group.finish();
}

/// Alternates blocks of floor and full checks; the minimum block of each is its cost without
/// preemption, so the ratio holds on a busy machine.
fn paired_ratio(_c: &mut Criterion) {
    // Listing benchmarks (`--list`, as test runners do) must print only their names.
    if std::env::args().any(|a| a == "--list") {
        return;
    }
    let f = fixture();
    let (input, sig) = split(&f.token);
    let (key, _) = public_key();
    let (mut best_floor, mut best_full) = (Duration::MAX, Duration::MAX);
    for _ in 0..40 {
        let t0 = Instant::now();
        for _ in 0..20 {
            black_box(f.floor(&key, &input, &sig));
        }
        best_floor = best_floor.min(t0.elapsed());
        let t0 = Instant::now();
        for _ in 0..20 {
            black_box(f.verify_and_parse());
        }
        best_full = best_full.min(t0.elapsed());
    }
    let (fl, fu) = (
        best_floor.as_secs_f64() / 20.0,
        best_full.as_secs_f64() / 20.0,
    );
    println!(
        "paired/webhook: rs256 floor {:.1} us, verify+parse {:.1} us, ratio {:.3}, \
         {:.0} notifications/s per core before HTTP",
        fl * 1e6,
        fu * 1e6,
        fu / fl,
        1.0 / fu
    );
}

criterion_group!(benches, bench_webhook, paired_ratio);
criterion_main!(benches);
