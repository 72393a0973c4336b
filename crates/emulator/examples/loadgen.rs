//! A small load run: N bots' calls against one in-process emulator over loopback.
//!
//! `cargo run -p mediabot-emulator --example loadgen -- [calls] [concurrency]`
//!
//! Creates `calls` 1:1 calls with app-hosted media (at most `concurrency` requests in flight),
//! waits until every call is established and its roster delivered, hangs all up, then prints
//! create-call latency, notification delivery latency and throughput.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use anyhow::Context as _;
use axum::Router;
use axum::http::StatusCode;
use axum::routing::post;
use mediabot_emulator::{AppConfig, Emulator, Outcome, Timing, roles};
use serde_json::{Value, json};

fn pct(v: &mut [f64], p: f64) -> f64 {
    if v.is_empty() {
        return 0.0;
    }
    v.sort_by(f64::total_cmp);
    let i = ((v.len() - 1) as f64 * p).round() as usize;
    v[i]
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let mut args = std::env::args().skip(1);
    let calls: usize = args.next().map(|a| a.parse()).transpose()?.unwrap_or(200);
    let concurrency: usize = args.next().map(|a| a.parse()).transpose()?.unwrap_or(16);

    let received = Arc::new(AtomicUsize::new(0));
    let r2 = received.clone();
    let hook = Router::new().route(
        "/cb",
        post(move |body: axum::body::Bytes| {
            let r = r2.clone();
            async move {
                let n = serde_json::from_slice::<Value>(&body)
                    .ok()
                    .and_then(|v| v["value"].as_array().map(Vec::len))
                    .unwrap_or(0);
                r.fetch_add(n, Ordering::Relaxed);
                StatusCode::ACCEPTED
            }
        }),
    );
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let cb = format!("http://{}/cb", l.local_addr()?);
    tokio::spawn(async move { axum::serve(l, hook).await });

    let emu = Emulator::builder()
        .app(AppConfig::with_roles(roles::ALL))
        .timing(Timing {
            establish_ms: 50,
            ..Timing::default()
        })
        .start("127.0.0.1:0")
        .await?;
    let app = emu.apps()[0].clone();
    let http = reqwest::Client::new();
    let tok: Value = http
        .post(emu.token_url(&app.tenant_id))
        .form(&[
            ("grant_type", "client_credentials"),
            ("client_id", app.client_id.as_str()),
            (
                "client_secret",
                app.client_secret.as_deref().context("secret")?,
            ),
            ("scope", "https://graph.microsoft.com/.default"),
        ])
        .send()
        .await?
        .json()
        .await?;
    let token = tok["access_token"].as_str().context("token")?.to_owned();
    let blob = mediabot_emulator::media::MediaBlob {
        v: 1,
        whip: "http://127.0.0.1:9/whip".into(),
        token: "t".into(),
        expires: "2030-01-01T00:00:00Z".into(),
    }
    .encode();
    let body = json!({
        "callbackUri": cb, "requestedModalities": ["audio"],
        "targets": [{"identity": {"user": {"id": "u", "displayName": "U"}}}],
        "mediaConfig": {"@odata.type": "#microsoft.graph.appHostedMediaConfig", "blob": blob},
    });

    let start = Instant::now();
    let sem = Arc::new(tokio::sync::Semaphore::new(concurrency));
    let mut tasks = Vec::new();
    for _ in 0..calls {
        let permit = sem.clone().acquire_owned().await?;
        let (http, url, token, body) = (
            http.clone(),
            format!("{}/communications/calls", emu.graph_url()),
            token.clone(),
            body.clone(),
        );
        tasks.push(tokio::spawn(async move {
            let t0 = Instant::now();
            let r = http.post(url).bearer_auth(token).json(&body).send().await;
            drop(permit);
            let ms = t0.elapsed().as_secs_f64() * 1000.0;
            let id = match r {
                Ok(r) if r.status() == 201 => r
                    .json::<Value>()
                    .await
                    .ok()
                    .and_then(|v| v["id"].as_str().map(str::to_owned)),
                _ => None,
            };
            (ms, id)
        }));
    }
    let mut create_ms = Vec::new();
    let mut ids = Vec::new();
    for t in tasks {
        let (ms, id) = t.await?;
        create_ms.push(ms);
        ids.extend(id);
    }
    let created = start.elapsed();
    // establishing + established + roster per call.
    let want = ids.len() * 3;
    let deadline = Instant::now() + Duration::from_secs(120);
    while received.load(Ordering::Relaxed) < want && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let established = start.elapsed();
    for id in &ids {
        emu.hang_up(id);
    }
    let want = ids.len() * 5;
    while received.load(Ordering::Relaxed) < want && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let total = start.elapsed();
    // The log entry is written after the bot's answer arrives: let the last ones land.
    emu.wait_for_deliveries(Duration::from_secs(5), |d| d.len() >= want)
        .await;
    let recs = emu.deliveries(None);
    let mut lat: Vec<f64> = recs
        .iter()
        .filter(|r| r.outcome == Outcome::Delivered)
        .map(|r| r.delivery_latency_ms)
        .collect();
    let delivered = lat.len();
    println!(
        "calls created        {} of {calls} in {:.2} s ({:.0} creates/s, concurrency {concurrency})",
        ids.len(),
        created.as_secs_f64(),
        ids.len() as f64 / created.as_secs_f64()
    );
    println!(
        "create call latency  p50 {:.1} ms  p99 {:.1} ms",
        pct(&mut create_ms, 0.5),
        pct(&mut create_ms, 0.99)
    );
    println!(
        "all established      {:.2} s after start",
        established.as_secs_f64()
    );
    println!(
        "notification POSTs   {delivered} delivered, {} items received by the bot, in {:.2} s ({:.0} POSTs/s)",
        received.load(Ordering::Relaxed),
        total.as_secs_f64(),
        delivered as f64 / total.as_secs_f64()
    );
    println!(
        "delivery latency     p50 {:.1} ms  p99 {:.1} ms (queued -> bot's 2xx)",
        pct(&mut lat, 0.5),
        pct(&mut lat, 0.99)
    );
    emu.shutdown().await;
    Ok(())
}
