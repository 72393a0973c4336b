//! The HTTP surface (axum): identity endpoints, Graph `/v1.0`, the control API under
//! `/_emulator`, plus the drivers that move the core's output to the network and media hook.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use axum::Router;
use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{any, get, post};
use base64::Engine as _;
use serde::Deserialize;
use serde_json::{Value, json};

use crate::clock::{Clock, Millis, VirtualClock, rfc3339, wall_ms, wall_secs};
use crate::graph_error::GraphError;
use crate::identity::{self, AppConfig, TokenRequest};
use crate::jwt::KeySet;
use crate::media::{MediaPeer, MediaPeerFactory};
use crate::notify::{DeliveryLog, Dispatcher, NOTIFICATION_ISSUER};
use crate::scenario::{FaultSpec, Scenario};
use crate::state::{Action, Core, IncomingCall, MediaCommand, snapshot};

/// Everything the handlers share.
pub(crate) struct Shared {
    pub core: Mutex<Core>,
    pub id_keys: Arc<RwLock<KeySet>>,
    pub notif_keys: Arc<RwLock<KeySet>>,
    pub clock: Arc<dyn Clock>,
    pub virtual_clock: Option<VirtualClock>,
    pub dispatcher: Dispatcher,
    pub log: Arc<Mutex<DeliveryLog>>,
    pub media_factory: Arc<dyn MediaPeerFactory>,
    pub media_peers: Mutex<HashMap<String, Box<dyn MediaPeer>>>,
    pub base_url: String,
    pub max_body: usize,
    /// Verified access tokens (cleared on token-key rotation).
    pub auth_cache: Mutex<HashMap<String, identity::Principal>>,
    /// Wakes the real-clock timer task when a timer became due (e.g. `establishing` at the
    /// time of the create request), so it fires now rather than at the next tick.
    pub timer_wake: tokio::sync::Notify,
}

impl Shared {
    /// Runs `f` on the core at the clock's now, then moves its output out.
    pub fn with_core<R>(&self, f: impl FnOnce(&mut Core, Millis) -> R) -> R {
        let now = self.clock.now_ms();
        let r = {
            let mut core = match self.core.lock() {
                Ok(c) => c,
                Err(p) => p.into_inner(),
            };
            let r = f(&mut core, now);
            if core.next_due().is_some_and(|d| d <= now) {
                self.timer_wake.notify_one();
            }
            r
        };
        self.flush();
        r
    }

    /// Sends queued notifications and media commands (call inside a tokio runtime).
    pub fn flush(&self) {
        let (out, media) = {
            let mut core = match self.core.lock() {
                Ok(c) => c,
                Err(p) => p.into_inner(),
            };
            (
                std::mem::take(&mut core.out),
                std::mem::take(&mut core.media),
            )
        };
        let ended: Vec<String> = out
            .iter()
            .filter(|o| {
                o.items.iter().any(|i| {
                    i["changeType"] == "deleted"
                        && i["resourceUrl"].as_str()
                            == Some(&format!("/communications/calls/{}", o.call_id))
                })
            })
            .map(|o| o.call_id.clone())
            .collect();
        if !out.is_empty() {
            self.dispatcher.dispatch(out);
        }
        for id in ended {
            self.dispatcher.close(&id);
        }
        if media.is_empty() {
            return;
        }
        let Ok(mut peers) = self.media_peers.lock() else {
            return;
        };
        for cmd in media {
            match cmd {
                MediaCommand::Start(session) => {
                    let id = session.call_id.clone();
                    let peer = self.media_factory.start(session);
                    peers.insert(id, peer);
                }
                MediaCommand::Event(id, ev) => {
                    if let Some(p) = peers.get_mut(&id) {
                        p.handle_event(ev);
                    }
                }
            }
        }
        if peers.len() > crate::state::MAX_CALLS {
            // Bounded memory: forget peers of calls the core no longer keeps.
            let core = match self.core.lock() {
                Ok(c) => c,
                Err(p) => p.into_inner(),
            };
            peers.retain(|id, _| core.calls.contains_key(id));
        }
    }

    /// Virtual clock: runs every timer up to `target`, stepping the clock to each.
    pub fn advance_to(&self, target: Millis) {
        let Some(vc) = &self.virtual_clock else {
            return;
        };
        loop {
            let next = match self.core.lock() {
                Ok(c) => c.next_due(),
                Err(p) => p.into_inner().next_due(),
            };
            match next {
                Some(t) if t <= target => {
                    vc.set(t);
                    self.with_core(|c, now| c.run_due(now));
                }
                _ => break,
            }
        }
        vc.set(target);
        self.with_core(|c, now| c.run_due(now));
    }

    /// Rotates a key set (generation happens outside the lock).
    pub fn rotate(&self, notifications: bool) -> Result<String, String> {
        let set = if notifications {
            &self.notif_keys
        } else {
            &self.id_keys
        };
        let next = set
            .read()
            .map_err(|_| "key lock poisoned")?
            .next_key()
            .map_err(|e| e.to_string())?;
        let mut w = set.write().map_err(|_| "key lock poisoned")?;
        w.install(next.0, next.1);
        if !notifications && let Ok(mut c) = self.auth_cache.lock() {
            // A key may have left the published set: re-verify every token.
            c.clear();
        }
        tracing::info!(set = if notifications { "notifications" } else { "tokens" }, kid = %w.current().kid(), "signing key rotated");
        Ok(w.current().kid().to_owned())
    }
}

type S = State<Arc<Shared>>;

/// Builds the router.
pub(crate) fn router(shared: Arc<Shared>) -> Router {
    Router::new()
        .route("/{tenant}/oauth2/v2.0/token", post(token))
        .route(
            "/{tenant}/v2.0/.well-known/openid-configuration",
            get(openid_identity),
        )
        .route("/{tenant}/discovery/v2.0/keys", get(jwks_identity))
        .route(
            "/v1/.well-known/OpenIdConfiguration",
            get(openid_notifications),
        )
        .route("/v1/.well-known/keys", get(jwks_notifications))
        .route("/v1.0/{*rest}", any(graph))
        .route("/_emulator/health", get(health))
        .route("/_emulator/apps", get(list_apps).post(register_app))
        .route("/_emulator/apps/{id}", axum::routing::patch(patch_app))
        .route(
            "/_emulator/scenarios",
            get(list_scenarios).post(start_scenario),
        )
        .route("/_emulator/calls", get(list_calls))
        .route("/_emulator/calls/incoming", post(ring))
        .route("/_emulator/calls/{id}", get(get_call))
        .route("/_emulator/calls/{id}/hangup", post(hangup))
        .route(
            "/_emulator/calls/{id}/participants/{who}/actions",
            post(participant_action),
        )
        .route("/_emulator/deliveries", get(deliveries))
        .route("/_emulator/faults", post(add_faults).delete(clear_faults))
        .route("/_emulator/keys/rotate", post(rotate))
        .route("/_emulator/clock/advance", post(advance))
        .route("/_emulator/counters", get(counters))
        .route("/_emulator/media", get(media_status))
        .fallback(fallback)
        .layer(axum::middleware::from_fn(log_request))
        .with_state(shared)
}

/// One structured log line per HTTP request (every surface: identity, Graph, control).
async fn log_request(req: axum::extract::Request, next: axum::middleware::Next) -> Response {
    let method = req.method().clone();
    let path = req.uri().path().to_owned();
    let t0 = std::time::Instant::now();
    let resp = next.run(req).await;
    tracing::debug!(%method, %path, status = resp.status().as_u16(), ms = t0.elapsed().as_secs_f64() * 1000.0, "http");
    resp
}

fn json_response(status: u16, body: &Value) -> Response {
    let mut r = (
        StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR),
        body.to_string(),
    )
        .into_response();
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    r
}

fn control_error(status: u16, msg: impl Into<String>) -> Response {
    json_response(status, &json!({"error": msg.into()}))
}

async fn fallback(method: Method, uri: Uri) -> Response {
    tracing::debug!(%method, %uri, "no route");
    json_response(
        404,
        &GraphError::bad_request(format!("No route for {method} {}", uri.path())).body(
            &uuid::Uuid::new_v4().to_string(),
            None,
            &rfc3339(wall_ms()),
        ),
    )
}

// ------------------------------------------------------------------ identity

async fn token(
    State(sh): S,
    Path(tenant): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let trace = uuid::Uuid::new_v4().to_string();
    let ts = rfc3339(wall_ms());
    if body.len() > 64 * 1024 {
        return control_error(413, "request too large");
    }
    let form: HashMap<String, String> = url::form_urlencoded::parse(&body).into_owned().collect();
    let basic = headers
        .get(header::AUTHORIZATION)
        .and_then(|h| h.to_str().ok())
        .and_then(|h| h.strip_prefix("Basic "))
        .and_then(|b| {
            base64::engine::general_purpose::STANDARD
                .decode(b.trim())
                .ok()
        })
        .and_then(|b| String::from_utf8(b).ok())
        .and_then(|s| {
            s.split_once(':')
                .map(|(a, b)| (decode_form(a), decode_form(b)))
        });
    let req = TokenRequest {
        token_url: format!("{}/{tenant}/oauth2/v2.0/token", sh.base_url),
        tenant,
        form,
        basic,
    };
    let keys = match sh.id_keys.read() {
        Ok(k) => k,
        Err(p) => p.into_inner(),
    };
    let result = {
        let mut core = match sh.core.lock() {
            Ok(c) => c,
            Err(p) => p.into_inner(),
        };
        let r = identity::issue_token(&mut core.dir, &keys, &req, wall_secs(), &trace);
        match &r {
            Ok(_) => core.counters.tokens_issued += 1,
            Err(_) => core.counters.token_refusals += 1,
        }
        r
    };
    match result {
        Ok(v) => {
            tracing::info!(tenant = %req.tenant, client_id = ?req.form.get("client_id"), "token issued");
            let mut r = json_response(200, &v);
            r.headers_mut().insert(
                header::CACHE_CONTROL,
                HeaderValue::from_static("no-store, no-cache"),
            );
            r
        }
        Err(e) => {
            tracing::info!(tenant = %req.tenant, error = e.error, code = e.code, "token refused");
            json_response(e.status, &e.body(&ts, &trace))
        }
    }
}

fn decode_form(s: &str) -> String {
    url::form_urlencoded::parse(format!("x={s}").as_bytes())
        .next()
        .map(|(_, v)| v.into_owned())
        .unwrap_or_default()
}

async fn openid_identity(State(sh): S, Path(tenant): Path<String>) -> Response {
    let b = &sh.base_url;
    json_response(
        200,
        &json!({
            "issuer": format!("{b}/{tenant}/v2.0"),
            "token_endpoint": format!("{b}/{tenant}/oauth2/v2.0/token"),
            "jwks_uri": format!("{b}/{tenant}/discovery/v2.0/keys"),
            "token_endpoint_auth_methods_supported": ["client_secret_post", "private_key_jwt", "client_secret_basic"],
            "response_types_supported": ["token"],
            "grant_types_supported": ["client_credentials"],
            "id_token_signing_alg_values_supported": ["RS256"],
            "subject_types_supported": ["pairwise"],
            "scopes_supported": ["https://graph.microsoft.com/.default"],
            "tenant_region_scope": "NA",
            "access_token_issuer": "https://sts.windows.net/{tenantid}/",
        }),
    )
}

async fn jwks_identity(State(sh): S) -> Response {
    let v = match sh.id_keys.read() {
        Ok(k) => k.jwks(),
        Err(p) => p.into_inner().jwks(),
    };
    json_response(200, &v)
}

async fn openid_notifications(State(sh): S) -> Response {
    let b = &sh.base_url;
    json_response(
        200,
        &json!({
            "issuer": NOTIFICATION_ISSUER,
            "authorization_endpoint": format!("{b}/v1/authorize"),
            "jwks_uri": format!("{b}/v1/.well-known/keys"),
            "id_token_signing_alg_values_supported": ["RS256"],
            "token_endpoint_auth_methods_supported": ["private_key_jwt"],
        }),
    )
}

async fn jwks_notifications(State(sh): S) -> Response {
    let v = match sh.notif_keys.read() {
        Ok(k) => k.jwks(),
        Err(p) => p.into_inner().jwks(),
    };
    json_response(200, &v)
}

// ------------------------------------------------------------------ Graph

async fn graph(
    State(sh): S,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let request_id = uuid::Uuid::new_v4().to_string();
    let client_request_id = headers
        .get("client-request-id")
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    let path = uri.path().to_owned();
    let (status, resp) = graph_inner(
        &sh,
        &method,
        &path,
        &headers,
        &body,
        &request_id,
        client_request_id.as_deref(),
    )
    .await;
    tracing::info!(%method, %path, status, %request_id, "graph request");
    let mut resp = resp;
    let h = resp.headers_mut();
    if let Ok(v) = HeaderValue::from_str(&request_id) {
        h.insert("request-id", v);
    }
    if let Some(c) = client_request_id.and_then(|c| HeaderValue::from_str(&c).ok()) {
        h.insert("client-request-id", c);
    }
    resp
}

async fn graph_inner(
    sh: &Arc<Shared>,
    method: &Method,
    path: &str,
    headers: &HeaderMap,
    body: &Bytes,
    request_id: &str,
    client_request_id: Option<&str>,
) -> (u16, Response) {
    let date = rfc3339(wall_ms());
    let err = |e: GraphError| {
        let mut r = json_response(e.status, &e.body(request_id, client_request_id, &date));
        if let Some(ra) = e.retry_after
            && let Ok(v) = HeaderValue::from_str(&ra.to_string())
        {
            r.headers_mut().insert(header::RETRY_AFTER, v);
        }
        (e.status, r)
    };
    let fault = sh.with_core(|c, now| c.fault_for(now));
    if fault.delay_ms > 0 {
        tokio::time::sleep(Duration::from_millis(fault.delay_ms)).await;
    }
    if let Some(e) = fault.error {
        return err(e);
    }
    let auth = headers
        .get(header::AUTHORIZATION)
        .and_then(|h| h.to_str().ok());
    let now_secs = wall_secs();
    let cached = identity::bearer(auth).and_then(|t| {
        let cache = sh.auth_cache.lock().ok()?;
        cache
            .get(t)
            .filter(|p| p.expires_at + 300 >= now_secs)
            .cloned()
    });
    let principal = match cached {
        Some(p) => Ok(p),
        None => {
            // RSA verification outside the core lock; the result is cached per token.
            let keys = match sh.id_keys.read() {
                Ok(k) => k,
                Err(p) => p.into_inner(),
            };
            let r = identity::verify_access_token(auth, &keys, now_secs);
            if let (Ok(p), Some(t)) = (&r, identity::bearer(auth))
                && let Ok(mut cache) = sh.auth_cache.lock()
            {
                if cache.len() >= 10_000 {
                    cache.clear();
                }
                cache.insert(t.to_owned(), p.clone());
            }
            r
        }
    };
    let principal = {
        let mut core = match sh.core.lock() {
            Ok(c) => c,
            Err(p) => p.into_inner(),
        };
        let r = principal.and_then(|p| {
            if core.dir.app(&p.app_id).is_some() {
                Ok(p)
            } else {
                Err(identity::AuthError::Invalid(
                    "application not registered".into(),
                ))
            }
        });
        if r.is_err() {
            core.counters.unauthorized += 1;
        }
        r
    };
    let principal = match principal {
        Ok(p) => p,
        Err(e) => return err(GraphError::unauthorized(e.to_string())),
    };
    if body.len() > sh.max_body {
        return err(GraphError::new(
            413,
            "RequestEntityTooLarge",
            format!("The request body exceeds {} bytes.", sh.max_body),
        ));
    }
    let parsed = if body.iter().all(u8::is_ascii_whitespace) {
        None
    } else {
        if let Some(ct) = headers
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            && !ct.to_ascii_lowercase().contains("json")
        {
            return err(GraphError::new(
                415,
                "UnsupportedMediaType",
                format!("Content-Type '{ct}' is not supported; use application/json."),
            ));
        }
        match serde_json::from_slice::<Value>(body) {
            Ok(v) => Some(v),
            Err(e) => {
                return err(GraphError::bad_request(format!(
                    "Unable to read JSON request payload: {e}"
                )));
            }
        }
    };
    let rest = path.trim_start_matches("/v1.0/");
    let segments: Vec<&str> = rest.split('/').filter(|s| !s.is_empty()).collect();
    let base = sh.base_url.clone();
    let r = sh.with_core(|c, now| {
        c.graph(
            now,
            &principal,
            method.as_str(),
            &segments,
            parsed.as_ref(),
            &base,
        )
    });
    match r {
        Ok(g) => {
            let mut resp = match &g.body {
                Some(b) => json_response(g.status, b),
                None => StatusCode::from_u16(g.status)
                    .unwrap_or(StatusCode::OK)
                    .into_response(),
            };
            if let Some(l) = g.location.and_then(|l| HeaderValue::from_str(&l).ok()) {
                resp.headers_mut().insert(header::LOCATION, l);
            }
            (g.status, resp)
        }
        Err(e) => err(e),
    }
}

// ------------------------------------------------------------------ control

async fn health(State(sh): S) -> Response {
    json_response(
        200,
        &json!({"ok": true, "clock": if sh.clock.is_virtual() {"virtual"} else {"system"}, "now": rfc3339(sh.clock.now_ms()), "media": sh.media_factory.name()}),
    )
}

async fn list_apps(State(sh): S) -> Response {
    let apps = sh.with_core(|c, _| c.dir.apps());
    json_response(200, &json!(apps))
}

async fn register_app(State(sh): S, body: Bytes) -> Response {
    let cfg: AppConfig = match serde_json::from_slice(&body) {
        Ok(c) => c,
        Err(e) => return control_error(400, format!("app JSON: {e}")),
    };
    let r = sh.with_core(|c, _| {
        let tenant = c.cfg.tenant_id.clone();
        let mut ids = Vec::new();
        for _ in 0..3 {
            ids.push(c.uuid());
        }
        c.dir
            .register(cfg, &tenant, move || ids.pop().unwrap_or_default())
    });
    match r {
        Ok(app) => json_response(201, &json!(app)),
        Err(e) => control_error(400, e.to_string()),
    }
}

#[derive(Deserialize)]
struct AppPatch {
    roles: Option<Vec<String>>,
    calling_webhook: Option<String>,
}

async fn patch_app(State(sh): S, Path(id): Path<String>, body: Bytes) -> Response {
    let patch: AppPatch = match serde_json::from_slice(&body) {
        Ok(p) => p,
        Err(e) => return control_error(400, format!("patch JSON: {e}")),
    };
    if let Some(r) = patch
        .roles
        .iter()
        .flatten()
        .find(|r| !identity::roles::ALL.contains(&r.as_str()))
    {
        return control_error(400, format!("unknown role {r:?}"));
    }
    let r = sh.with_core(|c, _| {
        let app = c.dir.app_mut(&id)?;
        if let Some(r) = patch.roles {
            app.roles = r;
        }
        if let Some(w) = patch.calling_webhook {
            app.calling_webhook = Some(w);
        }
        Some(app.clone())
    });
    match r {
        Some(app) => json_response(200, &json!(app)),
        None => control_error(404, format!("no app {id}")),
    }
}

async fn start_scenario(State(sh): S, headers: HeaderMap, body: Bytes) -> Response {
    let is_json = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|c| c.contains("json"));
    let scenario = if is_json {
        #[derive(Deserialize)]
        struct ByPath {
            path: std::path::PathBuf,
        }
        match serde_json::from_slice::<ByPath>(&body) {
            Ok(p) => Scenario::from_file(&p.path),
            Err(e) => {
                return control_error(
                    400,
                    format!("expected {{\"path\": ...}} or a TOML body: {e}"),
                );
            }
        }
    } else {
        match std::str::from_utf8(&body) {
            Ok(t) => Scenario::from_toml(t, None),
            Err(_) => return control_error(400, "scenario body is not UTF-8"),
        }
    };
    let scenario = match scenario {
        Ok(s) => s,
        Err(e) => return control_error(400, e.to_string()),
    };
    match sh.with_core(|c, now| c.start_scenario(scenario, now)) {
        Ok(run) => json_response(201, &scenario_json(&run)),
        Err(e) => control_error(409, e),
    }
}

fn scenario_json(run: &crate::state::ScenarioRun) -> Value {
    json!({
        "id": run.id,
        "name": run.scenario.name,
        "started_at": rfc3339(run.started_at),
        "thread_id": run.thread_id,
        "join_meeting_id": run.join_meeting_id,
        "passcode": run.scenario.meeting.as_ref().and_then(|m| m.passcode.clone()),
        "join_url": run.join_url,
        "organizer_id": run.organizer.as_ref().map(|o| o.0.clone()),
        "tenant_id": run.organizer.as_ref().map(|o| o.1.clone()),
        "incoming_call_id": run.incoming_call_id,
        "calls": run.calls,
    })
}

async fn list_scenarios(State(sh): S) -> Response {
    let v: Vec<Value> = sh.with_core(|c, _| c.scenarios.iter().map(scenario_json).collect());
    json_response(200, &json!(v))
}

async fn list_calls(State(sh): S) -> Response {
    let v: Vec<Value> = sh.with_core(|c, _| {
        c.call_order
            .iter()
            .filter_map(|id| c.calls.get(id))
            .map(snapshot)
            .collect()
    });
    json_response(200, &json!(v))
}

async fn get_call(State(sh): S, Path(id): Path<String>) -> Response {
    match sh.with_core(|c, _| c.calls.get(&id).map(snapshot)) {
        Some(v) => json_response(200, &v),
        None => control_error(404, format!("no call {id}")),
    }
}

async fn ring(State(sh): S, body: Bytes) -> Response {
    let inc: IncomingCall = if body.is_empty() {
        IncomingCall::default()
    } else {
        match serde_json::from_slice(&body) {
            Ok(i) => i,
            Err(e) => return control_error(400, format!("incoming call JSON: {e}")),
        }
    };
    match sh.with_core(|c, now| c.ring(now, &inc, None)) {
        Ok(id) => json_response(201, &json!({"call_id": id})),
        Err(e) => control_error(409, e),
    }
}

async fn hangup(State(sh): S, Path(id): Path<String>) -> Response {
    if sh.with_core(|c, now| c.remote_hangup(&id, now)) {
        json_response(202, &json!({"ok": true}))
    } else {
        control_error(404, format!("no live call {id}"))
    }
}

async fn participant_action(
    State(sh): S,
    Path((id, who)): Path<(String, String)>,
    body: Bytes,
) -> Response {
    let action: Action = match serde_json::from_slice(&body) {
        Ok(a) => a,
        Err(e) => {
            return control_error(
                400,
                format!("action JSON (e.g. {{\"type\":\"join\"}}): {e}"),
            );
        }
    };
    match sh.with_core(|c, now| c.participant_action(&id, &who, action, now)) {
        Ok(()) => json_response(202, &json!({"ok": true})),
        Err(e) => control_error(404, e),
    }
}

#[derive(Deserialize)]
struct DeliveryQuery {
    call_id: Option<String>,
}

async fn deliveries(State(sh): S, Query(q): Query<DeliveryQuery>) -> Response {
    let v = match sh.log.lock() {
        Ok(l) => l.list(q.call_id.as_deref()),
        Err(p) => p.into_inner().list(q.call_id.as_deref()),
    };
    json_response(200, &json!(v))
}

async fn add_faults(State(sh): S, body: Bytes) -> Response {
    let spec: FaultSpec = match serde_json::from_slice(&body) {
        Ok(s) => s,
        Err(e) => return control_error(400, format!("fault JSON: {e}")),
    };
    sh.with_core(|c, now| c.add_faults(&spec, now));
    json_response(201, &json!({"ok": true}))
}

async fn clear_faults(State(sh): S) -> Response {
    sh.with_core(|c, _| c.clear_faults());
    json_response(200, &json!({"ok": true}))
}

#[derive(Deserialize)]
struct RotateReq {
    #[serde(default)]
    set: Option<String>,
}

async fn rotate(State(sh): S, body: Bytes) -> Response {
    let req: RotateReq = if body.is_empty() {
        RotateReq { set: None }
    } else {
        match serde_json::from_slice(&body) {
            Ok(r) => r,
            Err(e) => return control_error(400, format!("rotate JSON: {e}")),
        }
    };
    let notifications = match req.set.as_deref() {
        None | Some("notifications") => true,
        Some("tokens") => false,
        Some(o) => {
            return control_error(
                400,
                format!("set must be notifications or tokens, not {o:?}"),
            );
        }
    };
    let sh2 = sh.clone();
    match tokio::task::spawn_blocking(move || sh2.rotate(notifications)).await {
        Ok(Ok(kid)) => json_response(200, &json!({"kid": kid})),
        Ok(Err(e)) => control_error(500, e),
        Err(e) => control_error(500, e.to_string()),
    }
}

#[derive(Deserialize)]
struct AdvanceReq {
    ms: u64,
}

async fn advance(State(sh): S, body: Bytes) -> Response {
    let req: AdvanceReq = match serde_json::from_slice(&body) {
        Ok(r) => r,
        Err(e) => return control_error(400, format!("advance JSON {{\"ms\": n}}: {e}")),
    };
    if sh.virtual_clock.is_none() {
        return control_error(
            409,
            "the emulator runs on the system clock; start it with a virtual clock to advance time",
        );
    }
    let target = sh.clock.now_ms().saturating_add(req.ms);
    sh.advance_to(target);
    json_response(200, &json!({"now": rfc3339(sh.clock.now_ms())}))
}

async fn counters(State(sh): S) -> Response {
    let v = sh.with_core(|c, _| json!(c.counters));
    json_response(200, &v)
}

async fn media_status(State(sh): S) -> Response {
    let v: HashMap<String, String> = match sh.media_peers.lock() {
        Ok(p) => p.iter().map(|(k, v)| (k.clone(), v.status())).collect(),
        Err(_) => HashMap::new(),
    };
    json_response(200, &json!(v))
}
