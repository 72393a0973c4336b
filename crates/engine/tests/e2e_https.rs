//! Proves HTTPS in-process: with `server.tls_cert` / `server.tls_key` (a self-signed certificate
//! made here) the engine serves its probes and the notification webhook over TLS on loopback to
//! a client that trusts that certificate, refuses plain HTTP on the port, and a bad certificate
//! or key file is a configuration error naming the key.
#![allow(clippy::unwrap_used)]

use std::sync::atomic::Ordering;
use std::time::Duration;

use mediabot::demo::start_local;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn webhook_and_probes_answer_over_tls() {
    let dir = std::env::temp_dir().join(format!("mediabot-https-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let ck =
        rcgen::generate_simple_self_signed(vec!["localhost".into(), "127.0.0.1".into()]).unwrap();
    let (cert, key) = (dir.join("cert.pem"), dir.join("key.pem"));
    std::fs::write(&cert, ck.cert.pem()).unwrap();
    std::fs::write(&key, ck.signing_key.serialize_pem()).unwrap();

    let (_emulator, engine) = start_local(&dir, |c| {
        c.server.tls_cert = Some(cert.clone());
        c.server.tls_key = Some(key.clone());
        c.server.behind_tls_proxy = false;
    })
    .await
    .unwrap();
    let port = engine.http_addr().port();
    let client = reqwest::Client::builder()
        .add_root_certificate(reqwest::Certificate::from_pem(ck.cert.pem().as_bytes()).unwrap())
        .timeout(Duration::from_secs(10))
        .build()
        .unwrap();
    let base = format!("https://localhost:{port}");
    let r = client.get(format!("{base}/healthz")).send().await.unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.text().await.unwrap(), "ok\n");
    // The webhook answers over TLS (and verifies: no token, 401).
    let r = client
        .post(format!("{base}/api/calls/notifications"))
        .body("{\"value\":[]}")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
    let r = client.get(format!("{base}/readyz")).send().await.unwrap();
    assert_eq!(r.status(), 200);
    // Plain HTTP on the TLS port gets no HTTP answer.
    let plain = reqwest::Client::builder()
        .timeout(Duration::from_secs(5))
        .build()
        .unwrap()
        .get(format!("http://127.0.0.1:{port}/healthz"))
        .send()
        .await;
    assert!(plain.is_err(), "plain http must not be served: {plain:?}");
    // A client that does not trust the certificate is refused by its own verifier.
    let untrusting = reqwest::Client::new()
        .get(format!("{base}/healthz"))
        .send()
        .await;
    assert!(untrusting.is_err());
    let tls = &engine.shared().tls_stats;
    assert!(tls.handshakes.load(Ordering::Relaxed) >= 1);
    assert!(tls.handshake_failures.load(Ordering::Relaxed) >= 1);
    // The advertised callback and WHIP URLs are https.
    assert!(
        mediabot::engine::callback_uri(engine.shared()).starts_with("https://"),
        "{}",
        mediabot::engine::callback_uri(engine.shared())
    );
    engine.shutdown(Duration::from_secs(1)).await;

    // Bad files: the error names the key.
    std::fs::write(dir.join("junk.pem"), "not pem").unwrap();
    for (c, k, want) in [
        (dir.join("missing.pem"), key.clone(), "server.tls_cert"),
        (dir.join("junk.pem"), key.clone(), "server.tls_cert"),
        (cert.clone(), dir.join("junk.pem"), "server.tls_key"),
        (cert.clone(), cert.clone(), "server.tls_key"),
    ] {
        let e = start_local(&dir, |cfg| {
            cfg.server.tls_cert = Some(c.clone());
            cfg.server.tls_key = Some(k.clone());
        })
        .await
        .unwrap_err()
        .to_string();
        assert!(e.contains(want), "{e}");
    }
    let _ = std::fs::remove_dir_all(&dir);
}
