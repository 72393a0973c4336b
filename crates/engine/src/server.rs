//! The engine's HTTP surface, as an axum [`Router`] built by plain functions so tests drive it
//! with `oneshot` and no port.
//!
//! | path | what |
//! |---|---|
//! | `GET /healthz` | 200 while the process serves |
//! | `GET /readyz` | 200 when new calls are welcome, else 503 with the reason |
//! | `GET /metrics` | Prometheus text |
//! | `POST /api/calls/notifications` | Graph's notification webhook (the `callbackUri`) |
//! | `/whip/...` | WHIP media endpoint (the blob's URL) |
//! | `/api/v1/...` | operator API, bearer token (see [`crate::engine`]) |

use std::sync::Arc;

use axum::Router;
use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;

use crate::health::Health;

/// Path of the notification webhook; `callbackUri` = `server.public_url` + this.
pub const NOTIFICATION_PATH: &str = "/api/calls/notifications";
/// Path of the liveness probe.
pub const HEALTH_PATH: &str = "/healthz";
/// Path of the readiness probe.
pub const READY_PATH: &str = "/readyz";
/// Path of the Prometheus endpoint.
pub const METRICS_PATH: &str = "/metrics";
/// Prefix of the WHIP media endpoint.
pub const WHIP_PREFIX: &str = "/whip";

/// Something that renders the Prometheus body on each scrape.
pub trait MetricsSource: Send + Sync + 'static {
    /// The exposition text.
    fn render(&self) -> String;
}

/// What the probe routes need.
#[derive(Clone)]
pub struct ProbeState {
    /// Readiness and drain.
    pub health: Arc<Health>,
    /// Metrics.
    pub metrics: Arc<dyn MetricsSource>,
}

/// `/healthz`, `/readyz`, `/metrics`.
pub fn probe_routes(state: ProbeState) -> Router {
    Router::new()
        .route(HEALTH_PATH, get(|| async { "ok\n" }))
        .route(READY_PATH, get(ready))
        .route(METRICS_PATH, get(metrics))
        .with_state(state)
}

async fn ready(State(s): State<ProbeState>) -> Response {
    match s.health.readiness() {
        Ok(()) => (StatusCode::OK, "ready\n").into_response(),
        Err(why) => (
            StatusCode::SERVICE_UNAVAILABLE,
            format!("not ready: {why}\n"),
        )
            .into_response(),
    }
}

async fn metrics(State(s): State<ProbeState>) -> Response {
    let mut headers = HeaderMap::new();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8"),
    );
    (headers, s.metrics.render()).into_response()
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use axum::body::Body;
    use axum::http::Request;
    use tower::ServiceExt;

    struct Fixed;
    impl MetricsSource for Fixed {
        fn render(&self) -> String {
            "mediabot_calls 0\n".into()
        }
    }

    async fn get_path(app: &Router, path: &str) -> (StatusCode, String) {
        let r = app
            .clone()
            .oneshot(Request::get(path).body(Body::empty()).unwrap())
            .await
            .unwrap();
        let status = r.status();
        let body = axum::body::to_bytes(r.into_body(), 1 << 20).await.unwrap();
        (status, String::from_utf8(body.to_vec()).unwrap())
    }

    #[tokio::test]
    async fn probes_report_readiness_and_drain() {
        let health = Arc::new(Health::new(10));
        let app = probe_routes(ProbeState {
            health: health.clone(),
            metrics: Arc::new(Fixed),
        });
        assert_eq!(get_path(&app, HEALTH_PATH).await.0, StatusCode::OK);
        let (st, body) = get_path(&app, READY_PATH).await;
        assert_eq!(st, StatusCode::SERVICE_UNAVAILABLE);
        assert!(body.contains("starting"));
        health.set_started();
        assert_eq!(get_path(&app, READY_PATH).await.0, StatusCode::OK);
        health.start_draining();
        let (st, body) = get_path(&app, READY_PATH).await;
        assert_eq!(st, StatusCode::SERVICE_UNAVAILABLE);
        assert!(body.contains("draining"));
        assert_eq!(get_path(&app, HEALTH_PATH).await.0, StatusCode::OK);
        let (st, body) = get_path(&app, METRICS_PATH).await;
        assert_eq!(st, StatusCode::OK);
        assert_eq!(body, "mediabot_calls 0\n");
    }
}
