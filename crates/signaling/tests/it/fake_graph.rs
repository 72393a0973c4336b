//! A small stand-in for Graph and its token endpoint, on loopback, for the operation tests.
//! It checks requests the way Graph documents them (bearer token it issued, JSON bodies with
//! the required properties, `client-request-id`) and answers with the documented shapes.

use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde_json::{Value, json};
use std::collections::VecDeque;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

#[derive(Debug, Clone)]
pub struct Recorded {
    pub method: Method,
    pub path: String,
    pub query: Option<String>,
    pub headers: HeaderMap,
    pub body: Value,
}

#[derive(Clone)]
pub struct Scripted {
    pub status: u16,
    pub headers: Vec<(&'static str, String)>,
    pub body: Value,
}

pub struct Shared {
    pub base: String,
    pub recorded: Mutex<Vec<Recorded>>,
    pub token_requests: Mutex<Vec<Vec<(String, String)>>>,
    pub token_count: AtomicUsize,
    pub roles: Mutex<Vec<String>>,
    pub script: Mutex<VecDeque<Scripted>>,
    pub token_script: Mutex<VecDeque<Scripted>>,
    pub expires_in: Mutex<u64>,
}

pub struct FakeGraph {
    pub addr: SocketAddr,
    pub shared: Arc<Shared>,
}

impl FakeGraph {
    pub async fn start() -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let shared = Arc::new(Shared {
            base: format!("http://{addr}/v1.0"),
            recorded: Mutex::new(Vec::new()),
            token_requests: Mutex::new(Vec::new()),
            token_count: AtomicUsize::new(0),
            roles: Mutex::new(
                mediabot_signaling::Permission::ALL
                    .iter()
                    .map(|p| p.name().to_owned())
                    .collect(),
            ),
            script: Mutex::new(VecDeque::new()),
            token_script: Mutex::new(VecDeque::new()),
            expires_in: Mutex::new(3600),
        });
        let app = Router::new().fallback(handle).with_state(shared.clone());
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        Self { addr, shared }
    }

    pub fn base_url(&self) -> String {
        self.shared.base.clone()
    }

    pub fn authority(&self) -> String {
        format!("http://{}", self.addr)
    }

    pub fn config(&self) -> mediabot_signaling::GraphConfig {
        let mut c =
            mediabot_signaling::GraphConfig::with_endpoints(self.base_url(), self.authority());
        c.retry.initial_backoff = std::time::Duration::from_millis(5);
        c.retry.max_backoff = std::time::Duration::from_millis(20);
        c.retry.jitter_seed = Some(7);
        c.request_timeout = std::time::Duration::from_secs(5);
        c
    }

    pub fn client(&self) -> mediabot_signaling::GraphClient {
        let creds = mediabot_signaling::Credentials::secret("tenant-1", "app-1", "s3cret");
        mediabot_signaling::GraphClient::new(self.config(), creds).unwrap()
    }

    pub fn set_roles(&self, roles: &[&str]) {
        *self.shared.roles.lock().unwrap() = roles.iter().map(|s| s.to_string()).collect();
    }

    pub fn push(&self, status: u16, headers: Vec<(&'static str, String)>, body: Value) {
        self.shared.script.lock().unwrap().push_back(Scripted {
            status,
            headers,
            body,
        });
    }

    pub fn push_token(&self, status: u16, body: Value) {
        self.shared
            .token_script
            .lock()
            .unwrap()
            .push_back(Scripted {
                status,
                headers: vec![],
                body,
            });
    }

    pub fn requests(&self) -> Vec<Recorded> {
        self.shared.recorded.lock().unwrap().clone()
    }

    pub fn last(&self) -> Recorded {
        self.requests()
            .last()
            .cloned()
            .expect("a request reached the fake graph")
    }

    pub fn token_count(&self) -> usize {
        self.shared.token_count.load(Ordering::SeqCst)
    }
}

fn error(status: StatusCode, code: &str, message: &str) -> Response {
    let body = json!({"error": {"code": code, "message": message, "innerError": {"request-id": "req-123", "date": "2026-11-22T00:00:00"}}});
    (status, [("request-id", "req-123")], axum::Json(body)).into_response()
}

fn scripted(s: Scripted) -> Response {
    let mut resp = if s.body.is_null() {
        StatusCode::from_u16(s.status).unwrap().into_response()
    } else {
        (StatusCode::from_u16(s.status).unwrap(), axum::Json(s.body)).into_response()
    };
    for (k, v) in s.headers {
        resp.headers_mut().insert(k, v.parse().unwrap());
    }
    resp
}

pub fn unsigned_jwt(claims: &Value) -> String {
    let h = URL_SAFE_NO_PAD.encode(br#"{"alg":"RS256","typ":"JWT"}"#);
    let c = URL_SAFE_NO_PAD.encode(claims.to_string().as_bytes());
    format!("{h}.{c}.c2ln")
}

async fn handle(
    State(st): State<Arc<Shared>>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let path = uri.path().to_owned();
    if path.ends_with("/oauth2/v2.0/token") {
        return token(&st, &headers, &body);
    }
    let json_body: Value = if body.is_empty() {
        Value::Null
    } else {
        if headers.get("content-type").and_then(|v| v.to_str().ok()) != Some("application/json") {
            return error(
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                "BadRequest",
                "content-type must be application/json",
            );
        }
        match serde_json::from_slice(&body) {
            Ok(v) => v,
            Err(_) => return error(StatusCode::BAD_REQUEST, "BadRequest", "malformed json"),
        }
    };
    st.recorded.lock().unwrap().push(Recorded {
        method: method.clone(),
        path: path.clone(),
        query: uri.query().map(str::to_owned),
        headers: headers.clone(),
        body: json_body.clone(),
    });
    let auth_ok = headers
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("Bearer ey"));
    if !auth_ok {
        return error(
            StatusCode::UNAUTHORIZED,
            "InvalidAuthenticationToken",
            "missing bearer token",
        );
    }
    let crid_ok = headers
        .get("client-request-id")
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| uuid::Uuid::parse_str(v).is_ok());
    if !crid_ok {
        return error(
            StatusCode::BAD_REQUEST,
            "BadRequest",
            "client-request-id missing",
        );
    }
    if let Some(s) = st.script.lock().unwrap().pop_front() {
        return scripted(s);
    }
    let Some(rest) = path.strip_prefix("/v1.0/communications/calls") else {
        return error(StatusCode::NOT_FOUND, "UnknownError", "no such resource");
    };
    let seg: Vec<&str> = rest.split('/').filter(|s| !s.is_empty()).collect();
    let base = st.base.clone();
    let op = |ty: &str, status: &str, code: u16| -> Response {
        let id = "op-1";
        let mut b =
            json!({"@odata.type": format!("#microsoft.graph.{ty}"), "id": id, "status": status});
        if let Some(ctx) = json_body.get("clientContext") {
            b["clientContext"] = ctx.clone();
        }
        if ty == "inviteParticipantsOperation" {
            b["participants"] = json_body["participants"].clone();
        }
        let loc = format!(
            "{base}/communications/calls/{}/operations/{id}",
            seg.first().unwrap_or(&"")
        );
        (
            StatusCode::from_u16(code).unwrap(),
            [("location", loc)],
            axum::Json(b),
        )
            .into_response()
    };
    let require = |fields: &[&str]| fields.iter().all(|f| !json_body[*f].is_null());
    let call = |id: &str| json!({"@odata.type": "#microsoft.graph.call", "id": id, "state": "established", "direction": "outgoing", "callbackUri": "https://bot/cb"});
    if seg.first() == Some(&"slow") {
        tokio::time::sleep(std::time::Duration::from_secs(3)).await;
    }
    if seg.first() == Some(&"gone") {
        return error(StatusCode::NOT_FOUND, "8519", "call not found");
    }
    match (method.as_str(), seg.as_slice()) {
        ("POST", []) => {
            if !require(&["callbackUri", "mediaConfig", "requestedModalities"]) || json_body["mediaConfig"]["@odata.type"].is_null() {
                return error(StatusCode::BAD_REQUEST, "BadRequest", "callbackUri, mediaConfig, requestedModalities required");
            }
            if json_body["targets"].is_null() && json_body["meetingInfo"].is_null() {
                return error(StatusCode::BAD_REQUEST, "BadRequest", "targets or meetingInfo required");
            }
            let mut c = json_body.clone();
            c["id"] = json!("call-new");
            c["state"] = json!("establishing");
            c["direction"] = json!("outgoing");
            (StatusCode::CREATED, [("location", format!("{base}/communications/calls/call-new"))], axum::Json(c)).into_response()
        }
        ("POST", ["logTeleconferenceDeviceQuality"]) => {
            if !require(&["quality"]) {
                return error(StatusCode::BAD_REQUEST, "BadRequest", "quality required");
            }
            StatusCode::NO_CONTENT.into_response()
        }
        ("GET", [id]) => axum::Json(call(id)).into_response(),
        ("DELETE", [_]) => StatusCode::NO_CONTENT.into_response(),
        ("POST", [_, "answer"]) => {
            if !require(&["callbackUri", "mediaConfig"]) {
                return error(StatusCode::BAD_REQUEST, "BadRequest", "callbackUri and mediaConfig required");
            }
            StatusCode::ACCEPTED.into_response()
        }
        ("POST", [_, "reject"]) => StatusCode::ACCEPTED.into_response(),
        ("POST", [_, "redirect"]) if require(&["targets"]) => StatusCode::ACCEPTED.into_response(),
        ("POST", [_, "transfer"]) if require(&["transferTarget"]) => StatusCode::ACCEPTED.into_response(),
        ("POST", [_, "changeScreenSharingRole"]) if require(&["role"]) => StatusCode::ACCEPTED.into_response(),
        ("POST", [_, "keepAlive"]) => StatusCode::OK.into_response(),
        ("POST", [_, "mute"]) => op("muteParticipantOperation", "completed", 200),
        ("POST", [_, "unmute"]) => op("unmuteParticipantOperation", "completed", 200),
        ("POST", [_, "playPrompt"]) if require(&["prompts"]) => op("playPromptOperation", "running", 200),
        ("POST", [_, "recordResponse"]) => op("recordOperation", "running", 200),
        ("POST", [_, "cancelMediaProcessing"]) => op("cancelMediaProcessingOperation", "completed", 200),
        ("POST", [_, "subscribeToTone"]) => op("subscribeToToneOperation", "completed", 200),
        ("POST", [_, "sendDtmfTones"]) if require(&["tones"]) => op("sendDtmfTonesOperation", "running", 200),
        ("POST", [_, "updateRecordingStatus"]) if require(&["status"]) => op("updateRecordingStatusOperation", "completed", 200),
        ("GET", [_, "participants"]) => {
            if uri.query().is_some_and(|q| q.contains("skiptoken=2")) {
                axum::Json(json!({"value": [{"@odata.type": "#microsoft.graph.participant", "id": "p2", "isMuted": true}]})).into_response()
            } else {
                let next = format!("{base}/communications/calls{rest}?$skiptoken=2");
                axum::Json(json!({"@odata.context": "x", "value": [{"@odata.type": "#microsoft.graph.participant", "id": "p1", "mediaStreams": [{"mediaType": "audio", "sourceId": "1"}]}], "@odata.nextLink": next})).into_response()
            }
        }
        ("POST", [_, "participants", "invite"]) if require(&["participants"]) => op("inviteParticipantsOperation", "Running", 200),
        ("GET", [_, "participants", pid]) => axum::Json(json!({"@odata.type": "#microsoft.graph.participant", "id": pid, "isInLobby": false})).into_response(),
        ("DELETE", [_, "participants", _]) => StatusCode::NO_CONTENT.into_response(),
        ("POST", [_, "participants", _, "mute"]) => op("muteParticipantOperation", "completed", 200),
        ("POST", [_, "participants", _, "startHoldMusic"]) => op("startHoldMusicOperation", "running", 202),
        ("POST", [_, "participants", _, "stopHoldMusic"]) => op("stopHoldMusicOperation", "running", 202),
        ("POST", [_, "audioRoutingGroups"]) if require(&["routingMode", "sources", "receivers"]) => {
            let mut g = json_body.clone();
            g["id"] = json!("oneToOne_1");
            (StatusCode::CREATED, axum::Json(g)).into_response()
        }
        ("GET", [_, "audioRoutingGroups"]) => axum::Json(json!({"value": [{"id": "oneToOne_1", "routingMode": "oneToOne", "sources": ["a"], "receivers": ["b"]}]})).into_response(),
        ("GET", [_, "audioRoutingGroups", gid]) => axum::Json(json!({"id": gid, "routingMode": "multicast", "sources": ["a"], "receivers": ["b", "c"]})).into_response(),
        ("PATCH", [_, "audioRoutingGroups", gid]) => {
            let mut g = json_body.clone();
            g["id"] = json!(gid);
            axum::Json(g).into_response()
        }
        ("DELETE", [_, "audioRoutingGroups", _]) => StatusCode::NO_CONTENT.into_response(),
        ("GET", [_, "contentSharingSessions"]) => axum::Json(json!({"value": [{"@odata.type": "#microsoft.graph.contentSharingSession", "id": "s1"}]})).into_response(),
        ("GET", [_, "contentSharingSessions", sid]) => axum::Json(json!({"@odata.type": "#microsoft.graph.contentSharingSession", "id": sid})).into_response(),
        ("GET", [_, "operations", oid]) => axum::Json(json!({"@odata.type": "#microsoft.graph.playPromptOperation", "id": oid, "status": "completed", "resultInfo": {"code": 200, "subcode": 0, "message": "ok"}})).into_response(),
        _ => error(StatusCode::BAD_REQUEST, "BadRequest", "unexpected request"),
    }
}

fn token(st: &Shared, headers: &HeaderMap, body: &[u8]) -> Response {
    st.token_count.fetch_add(1, Ordering::SeqCst);
    if headers.get("content-type").and_then(|v| v.to_str().ok())
        != Some("application/x-www-form-urlencoded")
    {
        return (
            StatusCode::BAD_REQUEST,
            axum::Json(json!({"error": "invalid_request"})),
        )
            .into_response();
    }
    let form: Vec<(String, String)> = url::form_urlencoded::parse(body).into_owned().collect();
    st.token_requests.lock().unwrap().push(form.clone());
    if let Some(s) = st.token_script.lock().unwrap().pop_front() {
        return scripted(s);
    }
    let get = |k: &str| form.iter().find(|(n, _)| n == k).map(|(_, v)| v.clone());
    if get("grant_type").as_deref() != Some("client_credentials")
        || get("client_id").is_none()
        || get("scope").is_none()
    {
        return (
            StatusCode::BAD_REQUEST,
            axum::Json(json!({"error": "invalid_request"})),
        )
            .into_response();
    }
    if get("client_secret").is_none() && get("client_assertion").is_none() {
        return (StatusCode::UNAUTHORIZED, axum::Json(json!({"error": "invalid_client", "error_description": "AADSTS7000215: Invalid client secret provided."}))).into_response();
    }
    let roles = st.roles.lock().unwrap().clone();
    let n = st.token_count.load(Ordering::SeqCst);
    let access =
        unsigned_jwt(&json!({"aud": "https://graph.microsoft.com", "roles": roles, "n": n}));
    let expires_in = *st.expires_in.lock().unwrap();
    axum::Json(json!({"token_type": "Bearer", "expires_in": expires_in, "access_token": access}))
        .into_response()
}
