//! Proves Graph errors become actionable kinds, retries honour Retry-After only where safe,
//! and permissions are checked before sending.

use crate::fake_graph::FakeGraph;
use mediabot_signaling::models::*;
use mediabot_signaling::{GraphErrorKind, Permission};
use serde_json::json;
use std::time::Duration;

#[tokio::test]
async fn graph_error_body_becomes_typed_error() {
    let g = FakeGraph::start().await;
    let err = g.client().keep_alive("gone").await.unwrap_err();
    assert_eq!(err.kind(), &GraphErrorKind::NotFound);
    assert_eq!(err.status(), Some(404));
    assert_eq!(err.code(), Some("8519"));
    assert_eq!(err.message(), "call not found");
    assert_eq!(err.request_id(), Some("req-123"));
    let sent = g
        .last()
        .headers
        .get("client-request-id")
        .unwrap()
        .to_str()
        .unwrap()
        .to_owned();
    assert_eq!(err.client_request_id(), Some(sent.as_str()));

    for (status, kind) in [
        (400, GraphErrorKind::BadRequest),
        (409, GraphErrorKind::Conflict),
        (500, GraphErrorKind::Server),
        (
            403,
            GraphErrorKind::Forbidden {
                missing_permission: None,
            },
        ),
    ] {
        g.push(
            status,
            vec![],
            json!({"error": {"code": "X", "message": "m"}}),
        );
        let err = g.client().get_call("c1").await.unwrap_err();
        assert_eq!(err.kind(), &kind, "{status}");
    }
}

#[tokio::test]
async fn throttling_is_retried_after_retry_after() {
    let g = FakeGraph::start().await;
    g.push(
        429,
        vec![("retry-after", "0".into())],
        json!({"error": {"code": "TooManyRequests", "message": "slow down"}}),
    );
    g.push(
        503,
        vec![("retry-after", "0".into())],
        json!({"error": {"code": "ServiceUnavailable", "message": "busy"}}),
    );
    // A non-idempotent POST is retried after 429/503: the request was not processed.
    let client = g.client();
    let op = client
        .play_prompt(
            "c1",
            &PlayPromptRequest {
                prompts: vec![Prompt::media("u")],
                client_context: None,
            },
        )
        .await
        .unwrap();
    assert_eq!(op.operation_type(), OperationType::PlayPrompt);
    let stats = client.stats();
    assert_eq!(
        (
            stats.requests,
            stats.retries,
            stats.throttled,
            stats.failures
        ),
        (3, 2, 1, 0)
    );
    let reqs = g.requests();
    assert_eq!(reqs.len(), 3);
    let ids: Vec<_> = reqs
        .iter()
        .map(|r| r.headers["client-request-id"].clone())
        .collect();
    assert!(
        ids.windows(2).all(|w| w[0] == w[1]),
        "one client-request-id across retries"
    );
    client.keep_alive("c1").await.unwrap();
    assert_ne!(
        g.last().headers["client-request-id"],
        ids[0],
        "a new id per operation"
    );
}

#[tokio::test]
async fn long_retry_after_is_returned_to_the_caller() {
    let g = FakeGraph::start().await;
    g.push(
        429,
        vec![("retry-after", "3600".into())],
        json!({"error": {"code": "TooManyRequests", "message": "later"}}),
    );
    let err = g.client().get_call("c1").await.unwrap_err();
    assert_eq!(
        err.kind(),
        &GraphErrorKind::Throttled {
            retry_after: Some(Duration::from_secs(3600))
        }
    );
    assert_eq!(g.requests().len(), 1);
}

#[tokio::test]
async fn gateway_timeout_is_retried_only_when_idempotent() {
    let g = FakeGraph::start().await;
    g.push(
        504,
        vec![],
        json!({"error": {"code": "GatewayTimeout", "message": "t"}}),
    );
    g.client().keep_alive("c1").await.unwrap();
    assert_eq!(g.requests().len(), 2, "keepAlive is idempotent: retried");

    let g = FakeGraph::start().await;
    g.push(
        504,
        vec![],
        json!({"error": {"code": "GatewayTimeout", "message": "t"}}),
    );
    let target = InvitationParticipantInfo::new(IdentitySet::user("u", None));
    let err = g
        .client()
        .create_call(&Call::peer_to_peer(
            "https://b",
            target,
            MediaConfig::app_hosted("b"),
        ))
        .await
        .unwrap_err();
    assert_eq!(err.kind(), &GraphErrorKind::Server);
    assert_eq!(
        g.requests().len(),
        1,
        "create call may have happened: not retried"
    );
}

#[tokio::test]
async fn retries_are_bounded() {
    let g = FakeGraph::start().await;
    for _ in 0..10 {
        g.push(
            503,
            vec![],
            json!({"error": {"code": "ServiceUnavailable", "message": "x"}}),
        );
    }
    let err = g.client().get_call("c1").await.unwrap_err();
    assert_eq!(err.kind(), &GraphErrorKind::Server);
    assert_eq!(g.requests().len(), 4, "1 attempt + max_retries (3)");
}

#[tokio::test]
async fn connection_refused_is_a_transport_error() {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    drop(listener);
    let g = FakeGraph::start().await;
    let mut cfg = g.config();
    cfg.base_url = format!("http://{addr}/v1.0");
    cfg.retry.max_retries = 1;
    let client = mediabot_signaling::GraphClient::new(
        cfg,
        mediabot_signaling::Credentials::secret("t", "a", "s"),
    )
    .unwrap();
    let err = client.get_call("c1").await.unwrap_err();
    assert_eq!(err.kind(), &GraphErrorKind::Transport);
}

#[tokio::test]
async fn missing_permission_fails_before_sending() {
    let g = FakeGraph::start().await;
    g.set_roles(&["Calls.JoinGroupCall.All"]);
    let client = g.client();
    let err = client
        .answer(
            "c1",
            &AnswerRequest::audio("https://bot/cb", MediaConfig::app_hosted("b")),
        )
        .await
        .unwrap_err();
    assert_eq!(
        err.kind(),
        &GraphErrorKind::Forbidden {
            missing_permission: Some(Permission::AccessMedia)
        }
    );
    assert!(
        err.message().contains("Calls.AccessMedia.All"),
        "{}",
        err.message()
    );
    assert!(
        err.message().contains("adminconsent"),
        "names the consent step"
    );
    assert!(g.requests().is_empty(), "refused before sending");
    assert_eq!(client.stats().refused_locally, 1);
    // Service-hosted media does not need AccessMedia.
    client
        .answer(
            "c1",
            &AnswerRequest::audio("https://bot/cb", MediaConfig::service_hosted()),
        )
        .await
        .unwrap();
    // Transfer needs Calls.Initiate.All.
    let target = InvitationParticipantInfo::new(IdentitySet::user("u", None));
    let err = client
        .transfer(
            "c1",
            &TransferRequest {
                transfer_target: target,
                transferee: None,
            },
        )
        .await
        .unwrap_err();
    assert_eq!(err.missing_permission(), Some(Permission::Initiate));
}

#[tokio::test]
async fn timeouts_are_typed_and_retried_only_when_idempotent() {
    let g = FakeGraph::start().await;
    let mut cfg = g.config();
    cfg.request_timeout = Duration::from_millis(300);
    cfg.retry.max_retries = 1;
    let client = mediabot_signaling::GraphClient::new(
        cfg,
        mediabot_signaling::Credentials::secret("t", "a", "s"),
    )
    .unwrap();
    let err = client.get_call("slow").await.unwrap_err();
    assert_eq!(err.kind(), &GraphErrorKind::Timeout);
    assert_eq!(g.requests().len(), 2, "GET retried once after a timeout");
    let err = client
        .play_prompt(
            "slow",
            &PlayPromptRequest {
                prompts: vec![Prompt::media("u")],
                client_context: None,
            },
        )
        .await
        .unwrap_err();
    assert_eq!(err.kind(), &GraphErrorKind::Timeout);
    assert_eq!(
        g.requests().len(),
        3,
        "playPrompt may have been processed: not retried"
    );
}

#[tokio::test]
async fn token_endpoint_throttling_and_errors() {
    let g = FakeGraph::start().await;
    g.push_token(429, json!({"error": "temporarily_unavailable"}));
    g.client().keep_alive("c1").await.unwrap();
    assert_eq!(g.token_count(), 2, "429 from the token endpoint is retried");

    let g = FakeGraph::start().await;
    for _ in 0..5 {
        g.push_token(503, json!({"error": "temporarily_unavailable"}));
    }
    let err = g.client().keep_alive("c1").await.unwrap_err();
    assert_eq!(err.kind(), &GraphErrorKind::Server);
    assert_eq!(g.token_count(), 4, "bounded retries");
    assert!(g.requests().is_empty());

    let g = FakeGraph::start().await;
    g.push_token(500, json!({"error": "server_error"}));
    let err = g.client().keep_alive("c1").await.unwrap_err();
    assert_eq!(err.kind(), &GraphErrorKind::Server);
    assert_eq!(g.token_count(), 1, "500 is not a retry status");

    let g = FakeGraph::start().await;
    g.push_token(200, json!({"token_type": "Bearer"}));
    let err = g.client().keep_alive("c1").await.unwrap_err();
    assert_eq!(
        err.kind(),
        &GraphErrorKind::InvalidResponse,
        "no access_token"
    );
}
