//! Notification delivery: one ordered worker per call POSTs `commsNotifications` to the call's
//! callbackUri with `Authorization: Bearer <RS256 JWT>`, applying the call's policy (batching,
//! duplicates, reordering, drops), retrying on 5xx / connection errors, and recording every
//! attempt with its latency.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use rand::{Rng as _, SeedableRng as _};
use serde::Serialize;
use serde_json::{Value, json};
use tokio::sync::mpsc;

use crate::clock::{rfc3339, wall_ms, wall_secs};
use crate::jwt::KeySet;
use crate::state::Outbound;

/// Issuer of notification tokens (Graph's, as the samples accept it).
pub const NOTIFICATION_ISSUER: &str = "https://graph.microsoft.com";

/// One HTTP attempt.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Attempt {
    /// HTTP status, if a response came.
    pub status: Option<u16>,
    /// Transport error, if none came.
    pub error: Option<String>,
    /// Round-trip time in milliseconds.
    pub latency_ms: f64,
}

/// What finally happened to a POST.
#[derive(Debug, Clone, Copy, Serialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    /// A 2xx answer.
    Delivered,
    /// Retries exhausted or a 4xx answer.
    Failed,
    /// Dropped on purpose (fault injection).
    Dropped,
}

/// A recorded notification POST.
#[derive(Debug, Clone, Serialize)]
pub struct DeliveryRecord {
    /// Global sequence number (order of sending).
    pub seq: u64,
    /// Call id.
    pub call_id: String,
    /// Target URL.
    pub url: String,
    /// The POSTed body.
    pub body: Value,
    /// `changeType resourceUrl [state]` per item, for quick reading.
    pub summary: Vec<String>,
    /// Attempts.
    pub attempts: Vec<Attempt>,
    /// Outcome.
    pub outcome: Outcome,
    /// A deliberate duplicate of the previous POST.
    pub duplicate: bool,
    /// Sent after a later POST (deliberate reordering).
    pub reordered: bool,
    /// Time from production to the final answer, milliseconds (wall clock).
    pub delivery_latency_ms: f64,
    /// When it was sent (RFC 3339, wall clock).
    pub sent_at: String,
}

/// The delivery log (bounded).
#[derive(Debug, Default)]
pub struct DeliveryLog {
    records: VecDeque<DeliveryRecord>,
    next_seq: u64,
}

const LOG_CAP: usize = 20_000;

impl DeliveryLog {
    fn push(&mut self, mut r: DeliveryRecord) {
        self.next_seq += 1;
        r.seq = self.next_seq;
        if self.records.len() == LOG_CAP {
            self.records.pop_front();
        }
        self.records.push_back(r);
    }

    /// All records, optionally for one call.
    pub fn list(&self, call_id: Option<&str>) -> Vec<DeliveryRecord> {
        self.records
            .iter()
            .filter(|r| call_id.is_none_or(|c| r.call_id == c))
            .cloned()
            .collect()
    }

    /// Number of records.
    pub fn len(&self) -> usize {
        self.records.len()
    }

    /// Whether empty.
    pub fn is_empty(&self) -> bool {
        self.records.is_empty()
    }
}

/// (app id, tenant id, key id).
type TokenKey = (String, String, String);

/// Signs notification tokens, caching one per (app, tenant, kid) for most of its life.
#[derive(Debug)]
pub struct Signer {
    keys: Arc<RwLock<KeySet>>,
    cache: Mutex<HashMap<TokenKey, (String, u64)>>,
    lifetime_secs: u64,
}

impl Signer {
    /// A signer over the notification key set.
    pub fn new(keys: Arc<RwLock<KeySet>>) -> Self {
        Self {
            keys,
            cache: Mutex::new(HashMap::new()),
            lifetime_secs: 3600,
        }
    }

    /// A bearer token for `app_id` in `tenant_id`.
    pub fn token(&self, app_id: &str, tenant_id: &str) -> String {
        let now = wall_secs();
        let kid = match self.keys.read() {
            Ok(k) => k.current().kid().to_owned(),
            Err(p) => p.get_ref().current().kid().to_owned(),
        };
        let ck = (app_id.to_owned(), tenant_id.to_owned(), kid);
        if let Ok(cache) = self.cache.lock()
            && let Some((t, exp)) = cache.get(&ck)
            && *exp > now + 600
        {
            return t.clone();
        }
        // Cache miss: clone the key (not the lock guard) so signing happens unlocked.
        let key = match self.keys.read() {
            Ok(k) => k.current().clone(),
            Err(p) => p.get_ref().current().clone(),
        };
        let exp = now + self.lifetime_secs;
        let claims = json!({
            "iss": NOTIFICATION_ISSUER,
            "aud": app_id,
            "tid": tenant_id,
            "iat": now,
            "nbf": now.saturating_sub(60),
            "exp": exp,
            "appid": app_id,
            "appidacr": "2",
        });
        let t = key.sign(&claims);
        if let Ok(mut cache) = self.cache.lock() {
            cache.insert(ck, (t.clone(), exp));
        }
        t
    }
}

struct Queued {
    ob: Outbound,
    enqueued: Instant,
}

/// Routes outbound notifications to per-call workers.
#[derive(Clone)]
pub struct Dispatcher {
    http: reqwest::Client,
    signer: Arc<Signer>,
    log: Arc<Mutex<DeliveryLog>>,
    workers: Arc<Mutex<HashMap<String, mpsc::UnboundedSender<Queued>>>>,
}

impl std::fmt::Debug for Dispatcher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Dispatcher").finish_non_exhaustive()
    }
}

impl Dispatcher {
    /// A dispatcher.
    pub fn new(http: reqwest::Client, signer: Arc<Signer>, log: Arc<Mutex<DeliveryLog>>) -> Self {
        Self {
            http,
            signer,
            log,
            workers: Arc::new(Mutex::new(HashMap::new())),
        }
    }

    /// Queues notifications (must be called inside a tokio runtime).
    pub fn dispatch(&self, batch: Vec<Outbound>) {
        let Ok(mut workers) = self.workers.lock() else {
            return;
        };
        for ob in batch {
            let q = Queued {
                ob,
                enqueued: Instant::now(),
            };
            let key = q.ob.call_id.clone();
            let q = match workers.get(&key) {
                Some(tx) => match tx.send(q) {
                    Ok(()) => continue,
                    Err(mpsc::error::SendError(q)) => q,
                },
                None => q,
            };
            let (tx, rx) = mpsc::unbounded_channel();
            let seed = q.ob.policy.seed ^ fxhash(&key);
            let _ = tx.send(q);
            workers.insert(key, tx);
            let me = self.clone();
            tokio::spawn(async move { me.worker(rx, seed).await });
        }
    }

    /// Forgets the worker of an ended call once its queue drains.
    pub fn close(&self, call_id: &str) {
        if let Ok(mut w) = self.workers.lock() {
            w.remove(call_id);
        }
    }

    async fn worker(self, mut rx: mpsc::UnboundedReceiver<Queued>, seed: u64) {
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
        let mut held: Option<Queued> = None;
        while let Some(mut q) = rx.recv().await {
            let pol = q.ob.policy.clone();
            if pol.batch {
                while q.ob.items.len() < pol.max_batch.max(1) {
                    match rx.try_recv() {
                        Ok(next) if next.ob.url == q.ob.url => q.ob.items.extend(next.ob.items),
                        Ok(next) => {
                            self.deliver(q, &mut rng, false).await;
                            q = next;
                        }
                        Err(_) => break,
                    }
                }
            }
            if held.is_none()
                && pol.reorder_probability > 0.0
                && rng.random::<f64>() < pol.reorder_probability
            {
                // Hold this one; it goes out after the next POST (or when the queue idles).
                held = Some(q);
                if let Ok(Some(next)) =
                    tokio::time::timeout(Duration::from_millis(200), rx.recv()).await
                {
                    self.deliver(next, &mut rng, false).await;
                }
                if let Some(h) = held.take() {
                    self.deliver(h, &mut rng, true).await;
                }
                continue;
            }
            self.deliver(q, &mut rng, false).await;
        }
        if let Some(h) = held.take() {
            self.deliver(h, &mut rng, true).await;
        }
    }

    async fn deliver(&self, q: Queued, rng: &mut rand_chacha::ChaCha8Rng, reordered: bool) {
        let pol = &q.ob.policy;
        let body =
            json!({"@odata.type": "#microsoft.graph.commsNotifications", "value": q.ob.items});
        let summary: Vec<String> =
            q.ob.items
                .iter()
                .map(|i| {
                    let st = i
                        .pointer("/resourceData/state")
                        .and_then(Value::as_str)
                        .map(|s| format!(" {s}"))
                        .unwrap_or_default();
                    let op = i
                        .pointer("/resourceData/status")
                        .and_then(Value::as_str)
                        .map(|s| format!(" {s}"))
                        .unwrap_or_default();
                    format!(
                        "{} {}{st}{op}",
                        i["changeType"].as_str().unwrap_or_default(),
                        i["resourceUrl"].as_str().unwrap_or_default()
                    )
                })
                .collect();
        let mut rec = DeliveryRecord {
            seq: 0,
            call_id: q.ob.call_id.clone(),
            url: q.ob.url.clone(),
            body: body.clone(),
            summary,
            attempts: Vec::new(),
            outcome: Outcome::Dropped,
            duplicate: false,
            reordered,
            delivery_latency_ms: 0.0,
            sent_at: rfc3339(wall_ms()),
        };
        if pol.drop_probability > 0.0 && rng.random::<f64>() < pol.drop_probability {
            tracing::info!(call_id = %rec.call_id, summary = ?rec.summary, "notification dropped (fault injection)");
            self.record(rec);
            return;
        }
        let copies =
            if pol.duplicate_probability > 0.0 && rng.random::<f64>() < pol.duplicate_probability {
                2
            } else {
                1
            };
        for copy in 0..copies {
            let mut r = rec.clone();
            r.duplicate = copy == 1;
            r.sent_at = rfc3339(wall_ms());
            let token = self.signer.token(&q.ob.app_id, &q.ob.tenant_id);
            let mut outcome = Outcome::Failed;
            for attempt in 0..=pol.max_retries {
                if attempt > 0 {
                    let backoff = pol
                        .retry_backoff_ms
                        .saturating_mul(1 << (attempt - 1).min(10));
                    tokio::time::sleep(Duration::from_millis(backoff)).await;
                }
                let t0 = Instant::now();
                let res = self
                    .http
                    .post(&q.ob.url)
                    .bearer_auth(&token)
                    .header("content-type", "application/json")
                    .header("client-request-id", uuid::Uuid::new_v4().to_string())
                    .body(body.to_string())
                    .send()
                    .await;
                let latency_ms = t0.elapsed().as_secs_f64() * 1000.0;
                match res {
                    Ok(resp) => {
                        let status = resp.status().as_u16();
                        r.attempts.push(Attempt {
                            status: Some(status),
                            error: None,
                            latency_ms,
                        });
                        if resp.status().is_success() {
                            outcome = Outcome::Delivered;
                            break;
                        }
                        if status < 500 {
                            break;
                        }
                    }
                    Err(e) => r.attempts.push(Attempt {
                        status: None,
                        error: Some(e.to_string()),
                        latency_ms,
                    }),
                }
            }
            r.outcome = outcome;
            r.delivery_latency_ms = q.enqueued.elapsed().as_secs_f64() * 1000.0;
            tracing::info!(
                call_id = %r.call_id, url = %r.url, outcome = ?r.outcome, attempts = r.attempts.len(),
                latency_ms = r.delivery_latency_ms, summary = ?r.summary, duplicate = r.duplicate, "notification"
            );
            self.record(r);
        }
        rec.attempts.clear();
    }

    fn record(&self, r: DeliveryRecord) {
        if let Ok(mut log) = self.log.lock() {
            log.push(r);
        }
    }
}

fn fxhash(s: &str) -> u64 {
    s.bytes().fold(0xcbf2_9ce4_8422_2325u64, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
    })
}
