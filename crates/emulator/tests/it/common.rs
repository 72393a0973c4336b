//! Shared harness: a loopback bot webhook that records notifications, and token helpers.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::routing::post;
use mediabot_emulator::{AppConfig, Emulator, EmulatorHandle, RegisteredApp, Timing, roles};
use serde_json::{Value, json};

/// One notification POST as the bot saw it.
#[derive(Debug, Clone)]
pub struct Received {
    pub authorization: Option<String>,
    pub body: Value,
}

/// A bot webhook on loopback.
#[derive(Clone, Default)]
pub struct Bot {
    pub got: Arc<Mutex<Vec<Received>>>,
    /// Statuses to answer with, in order; 202 once exhausted.
    pub script: Arc<Mutex<Vec<u16>>>,
}

impl Bot {
    pub async fn start() -> (Self, String) {
        let bot = Bot::default();
        let app = Router::new()
            .route("/api/calling", post(receive))
            .with_state(bot.clone());
        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}/api/calling", l.local_addr().unwrap());
        tokio::spawn(async move { axum::serve(l, app).await.unwrap() });
        (bot, url)
    }

    pub fn all(&self) -> Vec<Received> {
        self.got.lock().unwrap().clone()
    }

    /// Every notification item, flattened, in arrival order.
    pub fn items(&self) -> Vec<Value> {
        self.all()
            .into_iter()
            .flat_map(|r| r.body["value"].as_array().cloned().unwrap_or_default())
            .collect()
    }

    /// `changeType resourceUrl-suffix state` summaries.
    pub fn summary(&self) -> Vec<String> {
        self.items().iter().map(summarize).collect()
    }

    pub async fn wait(&self, n: usize) -> Vec<Value> {
        for _ in 0..500 {
            if self.items().len() >= n {
                return self.items();
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        panic!("expected {n} notification items, got {:?}", self.summary());
    }

    pub async fn wait_for(&self, pred: impl Fn(&[Value]) -> bool) -> Vec<Value> {
        for _ in 0..500 {
            let items = self.items();
            if pred(&items) {
                return items;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        panic!("condition not met; got {:?}", self.summary());
    }
}

pub fn summarize(i: &Value) -> String {
    let url = i["resourceUrl"].as_str().unwrap_or_default();
    let tail = if url.contains("/operations/") {
        "operation"
    } else if url.ends_with("/participants") {
        "participants"
    } else {
        "call"
    };
    let extra = i["resourceData"]["state"]
        .as_str()
        .or(i["resourceData"]["status"].as_str())
        .unwrap_or("");
    format!(
        "{} {tail} {extra}",
        i["changeType"].as_str().unwrap_or_default()
    )
    .trim()
    .to_owned()
}

async fn receive(State(bot): State<Bot>, headers: HeaderMap, body: Bytes) -> StatusCode {
    let status = {
        let mut s = bot.script.lock().unwrap();
        if s.is_empty() { 202 } else { s.remove(0) }
    };
    if (200..300).contains(&status) {
        bot.got.lock().unwrap().push(Received {
            authorization: headers
                .get("authorization")
                .and_then(|v| v.to_str().ok())
                .map(str::to_owned),
            body: serde_json::from_slice(&body).unwrap(),
        });
    }
    StatusCode::from_u16(status).unwrap()
}

pub struct Env {
    pub emu: EmulatorHandle,
    pub bot: Bot,
    pub cb: String,
    pub app: RegisteredApp,
    pub http: reqwest::Client,
}

/// Fast timing so real-clock tests finish quickly.
pub fn fast() -> Timing {
    Timing {
        establish_ms: 50,
        operation_ms: 30,
        transfer_ms: 30,
        ..Timing::default()
    }
}

pub async fn env_with(roles: &[&str], virtual_clock: bool) -> Env {
    let (bot, cb) = Bot::start().await;
    let mut b = Emulator::builder()
        .app(AppConfig::with_roles(roles.iter().copied()).calling_webhook(cb.clone()))
        .timing(fast());
    if virtual_clock {
        b = b.virtual_clock();
    }
    let emu = b.start("127.0.0.1:0").await.unwrap();
    let app = emu.apps()[0].clone();
    Env {
        emu,
        bot,
        cb,
        app,
        http: reqwest::Client::new(),
    }
}

pub async fn env() -> Env {
    env_with(&roles::ALL, false).await
}

impl Env {
    pub async fn token_for(&self, app: &RegisteredApp) -> String {
        let r = self
            .http
            .post(self.emu.token_url(&app.tenant_id))
            .form(&[
                ("grant_type", "client_credentials"),
                ("client_id", app.client_id.as_str()),
                ("client_secret", app.client_secret.as_deref().unwrap()),
                ("scope", "https://graph.microsoft.com/.default"),
            ])
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
        let v: Value = r.json().await.unwrap();
        v["access_token"].as_str().unwrap().to_owned()
    }

    pub async fn token(&self) -> String {
        self.token_for(&self.app).await
    }

    /// A Graph request; returns (status, headers, body or Null).
    pub async fn graph(
        &self,
        method: &str,
        path: &str,
        body: Option<Value>,
    ) -> (u16, reqwest::header::HeaderMap, Value) {
        let t = self.token().await;
        self.graph_as(&t, method, path, body).await
    }

    pub async fn graph_as(
        &self,
        token: &str,
        method: &str,
        path: &str,
        body: Option<Value>,
    ) -> (u16, reqwest::header::HeaderMap, Value) {
        let url = format!("{}{}", self.emu.graph_url(), path);
        let mut rb = self
            .http
            .request(method.parse().unwrap(), url)
            .bearer_auth(token);
        if let Some(b) = body {
            rb = rb.json(&b);
        }
        let r = rb.send().await.unwrap();
        let status = r.status().as_u16();
        let headers = r.headers().clone();
        let text = r.text().await.unwrap();
        let v = if text.is_empty() {
            Value::Null
        } else {
            serde_json::from_str(&text).unwrap()
        };
        (status, headers, v)
    }

    pub fn blob(&self) -> String {
        mediabot_emulator::media::MediaBlob {
            v: 1,
            whip: "http://127.0.0.1:9/whip/x".into(),
            token: "t".into(),
            expires: "2030-01-01T00:00:00Z".into(),
        }
        .encode()
    }

    pub fn p2p_body(&self) -> Value {
        json!({
            "@odata.type": "#microsoft.graph.call",
            "callbackUri": self.cb,
            "targets": [{"@odata.type": "#microsoft.graph.invitationParticipantInfo",
                "identity": {"@odata.type": "#microsoft.graph.identitySet", "user": {"id": "u-1", "displayName": "Ann"}}}],
            "requestedModalities": ["audio"],
            "mediaConfig": {"@odata.type": "#microsoft.graph.appHostedMediaConfig", "blob": self.blob()},
            "tenantId": self.app.tenant_id,
        })
    }

    pub fn meeting_body(&self, thread: &str) -> Value {
        json!({
            "@odata.type": "#microsoft.graph.call",
            "callbackUri": self.cb,
            "requestedModalities": ["audio"],
            "mediaConfig": {"@odata.type": "#microsoft.graph.appHostedMediaConfig", "blob": self.blob()},
            "chatInfo": {"@odata.type": "#microsoft.graph.chatInfo", "threadId": thread, "messageId": "0"},
            "meetingInfo": {"@odata.type": "#microsoft.graph.organizerMeetingInfo",
                "organizer": {"@odata.type": "#microsoft.graph.identitySet", "user": {"id": "org-1", "tenantId": self.app.tenant_id}}},
            "tenantId": self.app.tenant_id,
        })
    }

    /// Creates a p2p call and waits until it is established; returns the call id.
    pub async fn established_call(&self) -> String {
        let (st, _, v) = self
            .graph("POST", "/communications/calls", Some(self.p2p_body()))
            .await;
        assert_eq!(st, 201, "{v}");
        let id = v["id"].as_str().unwrap().to_owned();
        self.bot
            .wait_for(|items| {
                items.iter().any(|i| {
                    i["resourceData"]["state"] == "established"
                        && i["resourceUrl"].as_str().unwrap().ends_with(&id)
                })
            })
            .await;
        id
    }

    pub async fn ctl(&self, method: &str, path: &str, body: Option<Value>) -> (u16, Value) {
        let mut rb = self.http.request(
            method.parse().unwrap(),
            format!("{}/_emulator{path}", self.emu.base_url()),
        );
        if let Some(b) = body {
            rb = rb.json(&b);
        }
        let r = rb.send().await.unwrap();
        let st = r.status().as_u16();
        let text = r.text().await.unwrap();
        (
            st,
            if text.is_empty() {
                Value::Null
            } else {
                serde_json::from_str(&text).unwrap()
            },
        )
    }
}
