//! Proves the signaling crate drives the local Graph emulator end to end over loopback: tokens,
//! an incoming call answered with an app-hosted blob, signed notifications verified and fed to
//! the call model, every in-call operation, every create-call variant (peer-to-peer, group,
//! meeting by join URL, by joinMeetingId + passcode, as a guest), and a permission refusal.

use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::routing::post;
use mediabot_emulator::{AppConfig, Emulator, EmulatorHandle, IncomingCall, RegisteredApp, roles};
use mediabot_signaling::models::*;
use mediabot_signaling::notifications::{Notification, NotificationVerifier, VerifierConfig};
use mediabot_signaling::state::{CallEvent, CallModel, CallModelConfig};
use mediabot_signaling::{Credentials, GraphClient, GraphConfig, GraphErrorKind, Permission};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::mpsc;

struct Bot {
    emu: EmulatorHandle,
    app: RegisteredApp,
    client: GraphClient,
    webhook: String,
    rx: mpsc::UnboundedReceiver<Notification>,
}

async fn webhook(
    State((verifier, tx)): State<(
        Arc<NotificationVerifier>,
        mpsc::UnboundedSender<Notification>,
    )>,
    headers: HeaderMap,
    body: Bytes,
) -> StatusCode {
    let auth = headers.get("authorization").and_then(|v| v.to_str().ok());
    match verifier.verify(auth, &body).await {
        Ok(batch) => {
            for n in batch.notifications {
                let _ = tx.send(n);
            }
            StatusCode::ACCEPTED
        }
        Err(e) => StatusCode::from_u16(e.http_status()).unwrap(),
    }
}

async fn bot(roles: &[&str]) -> Bot {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/api/calling", listener.local_addr().unwrap());
    let emu = Emulator::builder()
        .app(AppConfig::with_roles(roles.iter().copied()).calling_webhook(url.clone()))
        .start("127.0.0.1:0")
        .await
        .unwrap();
    let app = emu.apps()[0].clone();
    let mut vcfg = VerifierConfig::new(app.client_id.clone());
    vcfg.openid_metadata_url = emu.openid_metadata_url();
    vcfg.allowed_tenants = Some(vec![app.tenant_id.clone()]);
    let verifier = Arc::new(NotificationVerifier::new(vcfg, reqwest::Client::new()));
    let (tx, rx) = mpsc::unbounded_channel();
    let router = Router::new()
        .route("/api/calling", post(webhook))
        .with_state((verifier, tx));
    tokio::spawn(async move { axum::serve(listener, router).await.unwrap() });
    let mut cfg = GraphConfig::with_endpoints(emu.graph_url(), emu.base_url());
    cfg.retry.initial_backoff = Duration::from_millis(10);
    let creds = Credentials::secret(
        app.tenant_id.clone(),
        app.client_id.clone(),
        app.client_secret.clone().unwrap(),
    );
    let client = GraphClient::new(cfg, creds).unwrap();
    Bot {
        emu,
        app,
        client,
        webhook: url,
        rx,
    }
}

/// Feeds notifications into `model` until `done` holds; returns the events seen.
async fn pump(
    bot: &mut Bot,
    model: &mut CallModel,
    done: impl Fn(&CallModel, &[CallEvent]) -> bool,
) -> Vec<CallEvent> {
    let mut events = Vec::new();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    while !done(model, &events) {
        let n = tokio::time::timeout_at(deadline, bot.rx.recv())
            .await
            .expect("notifications arrive in time")
            .expect("webhook alive");
        model.handle_notification(&n);
        while let Some(e) = model.poll_event() {
            events.push(e);
        }
    }
    events
}

fn blob() -> String {
    use base64::Engine as _;
    let json = r#"{"v":1,"whip":"http://127.0.0.1:9/whip/c","token":"t","expires":"2030-01-01T00:00:00Z"}"#;
    base64::engine::general_purpose::STANDARD.encode(json)
}

#[tokio::test]
async fn incoming_call_answered_with_app_hosted_media_end_to_end() {
    let mut b = bot(&roles::ALL).await;
    let report = b
        .client
        .permission_report(&mediabot_signaling::auth::BotProfile {
            answers_calls: true,
            app_hosted_media: true,
            ..Default::default()
        })
        .await
        .unwrap();
    assert!(report.is_complete(), "{report:?}");

    let call_id = b.emu.ring(IncomingCall::default()).unwrap();
    let mut model = CallModel::new(call_id.clone(), CallModelConfig::default());
    pump(&mut b, &mut model, |m, _| {
        m.state() == Some(&CallState::Incoming)
    })
    .await;

    let mut answer = AnswerRequest::audio(b.webhook.clone(), MediaConfig::app_hosted(blob()));
    answer.call_options = Some(CallOptions::incoming(true));
    b.client.answer(&call_id, &answer).await.unwrap();
    let events = pump(&mut b, &mut model, |m, _| {
        m.state() == Some(&CallState::Established) && m.participants().count() >= 2
    })
    .await;
    assert!(
        events
            .iter()
            .any(|e| matches!(e, CallEvent::ParticipantJoined { .. }))
    );
    let caller = model
        .participants()
        .find(|p| {
            p.media_streams.as_ref().is_some_and(|s| !s.is_empty())
                && p.id.as_deref() != model.my_participant_id()
        })
        .cloned()
        .expect("a caller with media streams");
    let ssrc: u32 = caller.media_streams.as_ref().unwrap()[0]
        .source_id
        .as_deref()
        .unwrap()
        .parse()
        .unwrap();
    assert_eq!(
        model
            .participant_for_source(&Modality::Audio, ssrc)
            .unwrap()
            .id,
        caller.id
    );

    b.client.keep_alive(&call_id).await.unwrap();
    let call = b.client.get_call(&call_id).await.unwrap();
    assert_eq!(call.state, Some(CallState::Established));
    assert!(b.client.list_participants(&call_id).await.unwrap().len() >= 2);

    let op = b.client.mute(&call_id, Some("mute-ctx")).await.unwrap();
    model.handle_operation_response(&op);
    let op = b
        .client
        .subscribe_to_tone(&call_id, Some("tone-ctx"))
        .await
        .unwrap();
    model.handle_operation_response(&op);
    let op = b
        .client
        .update_recording_status(
            &call_id,
            &UpdateRecordingStatusRequest {
                status: RecordingStatus::Recording,
                client_context: Some("rec".into()),
            },
        )
        .await
        .unwrap();
    model.handle_operation_response(&op);
    let op = b
        .client
        .send_dtmf_tones(
            &call_id,
            &SendDtmfTonesRequest {
                tones: vec![Tone::Tone1],
                delay_between_tones_ms: None,
                client_context: Some("dtmf".into()),
            },
        )
        .await
        .unwrap();
    model.handle_operation_response(&op);
    let events = pump(&mut b, &mut model, |_, ev| {
        ev.iter().any(|e| matches!(e, CallEvent::OperationCompleted { client_context: Some(c), .. } if c == "dtmf"))
    })
    .await;
    assert!(
        events
            .iter()
            .any(|e| matches!(e, CallEvent::OperationCompleted { .. }))
    );
    let fetched = b
        .client
        .get_operation(&call_id, op.id.as_deref().unwrap())
        .await
        .unwrap();
    assert!(fetched.status.is_some());

    let group = AudioRoutingGroup {
        routing_mode: Some(RoutingMode::OneToOne),
        sources: Some(vec![caller.id.clone().unwrap()]),
        receivers: Some(vec![model.my_participant_id().unwrap_or("bot").to_owned()]),
        ..Default::default()
    };
    let g = b
        .client
        .create_audio_routing_group(&call_id, &group)
        .await
        .unwrap();
    let gid = g.id.clone().unwrap();
    assert_eq!(
        b.client
            .list_audio_routing_groups(&call_id)
            .await
            .unwrap()
            .len(),
        1
    );
    b.client
        .get_audio_routing_group(&call_id, &gid)
        .await
        .unwrap();
    b.client
        .update_audio_routing_group(&call_id, &gid, &group)
        .await
        .unwrap();
    b.client
        .delete_audio_routing_group(&call_id, &gid)
        .await
        .unwrap();
    b.client
        .list_content_sharing_sessions(&call_id)
        .await
        .unwrap();
    b.client
        .change_screen_sharing_role(&call_id, ScreenSharingRole::Viewer)
        .await
        .unwrap();

    b.client.hang_up(&call_id).await.unwrap();
    let events = pump(&mut b, &mut model, |m, _| m.is_terminated()).await;
    assert!(
        events
            .iter()
            .any(|e| matches!(e, CallEvent::Terminated { .. }))
    );
    let err = b.client.keep_alive(&call_id).await.unwrap_err();
    assert_eq!(
        err.kind(),
        &GraphErrorKind::NotFound,
        "keepAlive on an ended call"
    );
    assert_eq!(
        b.emu.counters().bad_requests,
        0,
        "the emulator refused nothing we sent"
    );
}

#[tokio::test]
async fn meeting_join_by_url_reaches_established() {
    let mut b = bot(&roles::ALL).await;
    let url = format!(
        "https://teams.microsoft.com/l/meetup-join/19%3ameeting_emu%40thread.v2/0?context=%7b%22Tid%22%3a%22{}%22%2c%22Oid%22%3a%22organizer-1%22%7d",
        b.app.tenant_id
    );
    let join = mediabot_signaling::join_url::parse_join_url(&url).unwrap();
    let mut body = Call::join_meeting(b.webhook.clone(), join, MediaConfig::app_hosted(blob()));
    body.call_options = Some(CallOptions::outgoing(true));
    let call = b.client.create_call(&body).await.unwrap();
    assert_eq!(call.state, Some(CallState::Establishing));
    let call_id = call.id.clone().unwrap();
    let mut model = CallModel::new(call_id.clone(), CallModelConfig::default());
    model.handle_call(&call, &ChangeType::Created);
    pump(&mut b, &mut model, |m, _| {
        m.state() == Some(&CallState::Established)
    })
    .await;
    b.client.hang_up(&call_id).await.unwrap();
    pump(&mut b, &mut model, |m, _| m.is_terminated()).await;
}

#[tokio::test]
async fn emulator_permission_refusal_is_forbidden_with_the_missing_permission() {
    let b = bot(&[roles::JOIN_GROUP_CALL]).await;
    let mut cfg = b.client.config().clone();
    cfg.check_permissions = false; // let the request reach the emulator
    let creds = Credentials::secret(
        b.app.tenant_id.clone(),
        b.app.client_id.clone(),
        b.app.client_secret.clone().unwrap(),
    );
    let client = GraphClient::new(cfg, creds).unwrap();
    let target = InvitationParticipantInfo::new(IdentitySet::user("someone", None));
    let err = client
        .create_call(&Call::peer_to_peer(
            b.webhook.clone(),
            target.clone(),
            MediaConfig::service_hosted(),
        ))
        .await
        .unwrap_err();
    assert_eq!(err.status(), Some(403));
    assert_eq!(err.missing_permission(), Some(Permission::Initiate));
    // With the pre-flight check on, the same call never leaves the process.
    let before = b.emu.counters().forbidden;
    let err = b
        .client
        .create_call(&Call::peer_to_peer(
            b.webhook.clone(),
            target,
            MediaConfig::service_hosted(),
        ))
        .await
        .unwrap_err();
    assert_eq!(err.missing_permission(), Some(Permission::Initiate));
    assert_eq!(b.emu.counters().forbidden, before);
}

#[tokio::test]
async fn certificate_credentials_are_accepted_by_the_emulator() {
    let emu = Emulator::builder()
        .app(AppConfig::with_roles(roles::ALL).dev_certificate(0))
        .start("127.0.0.1:0")
        .await
        .unwrap();
    let app = emu.apps()[0].clone();
    let pem = app.private_key_pem.clone().unwrap();
    let creds = Credentials::certificate(
        app.tenant_id.clone(),
        app.client_id.clone(),
        &pem,
        &"ab".repeat(20),
    )
    .unwrap();
    let client = GraphClient::new(
        GraphConfig::with_endpoints(emu.graph_url(), emu.base_url()),
        creds,
    )
    .unwrap();
    let token = client.tokens().token().await.unwrap();
    assert_eq!(token.permissions().len(), 5);
    let err = client.get_call("no-such-call").await.unwrap_err();
    assert_eq!(err.kind(), &GraphErrorKind::NotFound);
}

#[tokio::test]
async fn meeting_operations_against_the_emulator() {
    let mut b = bot(&roles::ALL).await;
    let url = format!(
        "https://teams.microsoft.com/l/meetup-join/19%3ameeting_ops%40thread.v2/0?context=%7b%22Tid%22%3a%22{}%22%2c%22Oid%22%3a%22organizer-2%22%7d",
        b.app.tenant_id
    );
    let join = mediabot_signaling::join_url::parse_join_url(&url).unwrap();
    let mut body = Call::join_meeting(b.webhook.clone(), join, MediaConfig::service_hosted());
    body.call_options = Some(CallOptions::outgoing(true));
    let call = b.client.create_call(&body).await.unwrap();
    let call_id = call.id.clone().unwrap();
    let mut model = CallModel::new(call_id.clone(), CallModelConfig::default());
    model.handle_call(&call, &ChangeType::Created);
    pump(&mut b, &mut model, |m, _| {
        m.state() == Some(&CallState::Established)
    })
    .await;

    // Service-hosted media: prompts and recording are allowed.
    let op = b
        .client
        .play_prompt(
            &call_id,
            &PlayPromptRequest {
                prompts: vec![Prompt::media("https://bot.example/hello.wav")],
                client_context: Some("pp".into()),
            },
        )
        .await
        .unwrap();
    model.handle_operation_response(&op);
    let op = b
        .client
        .record_response(
            &call_id,
            &RecordResponseRequest {
                max_record_duration_in_seconds: Some(10),
                client_context: Some("rec".into()),
                ..Default::default()
            },
        )
        .await
        .unwrap();
    model.handle_operation_response(&op);
    b.client
        .cancel_media_processing(&call_id, Some("cancel"))
        .await
        .unwrap();
    pump(&mut b, &mut model, |_, ev| {
        ev.iter().any(|e| matches!(e, CallEvent::OperationCompleted { client_context: Some(c), .. } | CallEvent::OperationFailed { client_context: Some(c), .. } if c == "pp"))
    })
    .await;

    let invite = InviteParticipantsRequest {
        participants: vec![InvitationParticipantInfo::new(IdentitySet::user(
            "invitee-1",
            Some("Invitee"),
        ))],
        client_context: Some("inv".into()),
    };
    let op = b
        .client
        .invite_participants(&call_id, &invite)
        .await
        .unwrap();
    assert_eq!(op.operation_type(), OperationType::InviteParticipants);
    model.handle_operation_response(&op);
    pump(&mut b, &mut model, |_, ev| {
        ev.iter().any(|e| matches!(e, CallEvent::OperationCompleted { client_context: Some(c), .. } if c == "inv"))
    })
    .await;

    let other = b
        .client
        .list_participants(&call_id)
        .await
        .unwrap()
        .into_iter()
        .find(|p| p.id.as_deref() != model.my_participant_id())
        .and_then(|p| p.id)
        .expect("another participant");
    b.client.get_participant(&call_id, &other).await.unwrap();
    let op = b
        .client
        .mute_participant(&call_id, &other, Some("pm"))
        .await
        .unwrap();
    assert_eq!(op.operation_type(), OperationType::MuteParticipant);
    let op = b
        .client
        .start_hold_music(&call_id, &other, &StartHoldMusicRequest::default())
        .await
        .unwrap();
    assert_eq!(op.operation_type(), OperationType::StartHoldMusic);
    let op = b
        .client
        .stop_hold_music(&call_id, &other, None)
        .await
        .unwrap();
    assert_eq!(op.operation_type(), OperationType::StopHoldMusic);
    b.client.remove_participant(&call_id, &other).await.unwrap();
    let removed = other.clone();
    pump(&mut b, &mut model, move |m, _| {
        m.participant(&removed).is_none()
    })
    .await;

    b.client
        .log_teleconference_device_quality(&TeleconferenceDeviceQuality {
            call_chain_id: call.call_chain_id.clone(),
            participant_id: Some("p".into()),
            media_leg_id: Some("leg".into()),
            ..Default::default()
        })
        .await
        .unwrap();
    b.client.hang_up(&call_id).await.unwrap();
    pump(&mut b, &mut model, |m, _| m.is_terminated()).await;
    assert_eq!(b.emu.counters().bad_requests, 0);
}

#[tokio::test]
async fn reject_redirect_and_transfer_against_the_emulator() {
    let mut b = bot(&roles::ALL).await;
    // Reject.
    let c1 = b.emu.ring(IncomingCall::default()).unwrap();
    let mut m1 = CallModel::new(c1.clone(), CallModelConfig::default());
    pump(&mut b, &mut m1, |m, _| {
        m.state() == Some(&CallState::Incoming)
    })
    .await;
    b.client
        .reject(
            &c1,
            &RejectRequest {
                reason: Some(RejectReason::Busy),
                callback_uri: None,
            },
        )
        .await
        .unwrap();
    pump(&mut b, &mut m1, |m, _| m.is_terminated()).await;

    // Redirect.
    let c2 = b.emu.ring(IncomingCall::default()).unwrap();
    let mut m2 = CallModel::new(c2.clone(), CallModelConfig::default());
    pump(&mut b, &mut m2, |m, _| {
        m.state() == Some(&CallState::Incoming)
    })
    .await;
    let target = InvitationParticipantInfo::new(IdentitySet::user("redirect-target", None));
    b.client
        .redirect(
            &c2,
            &RedirectRequest {
                targets: vec![target.clone()],
                timeout: Some(30),
                callback_uri: None,
            },
        )
        .await
        .unwrap();
    pump(&mut b, &mut m2, |m, _| m.is_terminated()).await;

    // Transfer an established call.
    let c3 = b.emu.ring(IncomingCall::default()).unwrap();
    let mut m3 = CallModel::new(c3.clone(), CallModelConfig::default());
    pump(&mut b, &mut m3, |m, _| {
        m.state() == Some(&CallState::Incoming)
    })
    .await;
    b.client
        .answer(
            &c3,
            &AnswerRequest::audio(b.webhook.clone(), MediaConfig::app_hosted(blob())),
        )
        .await
        .unwrap();
    pump(&mut b, &mut m3, |m, _| {
        m.state() == Some(&CallState::Established)
    })
    .await;
    b.client
        .transfer(
            &c3,
            &TransferRequest {
                transfer_target: target,
                transferee: None,
            },
        )
        .await
        .unwrap();
    let events = pump(&mut b, &mut m3, |m, _| m.is_terminated()).await;
    assert!(events.iter().any(|e| matches!(
        e,
        CallEvent::StateChanged {
            to: CallState::Transferring,
            ..
        }
    )));
    assert_eq!(b.emu.counters().bad_requests, 0);
}

/// Rings the bot and answers with an app-hosted blob; returns the established call's model.
async fn answered_call(b: &mut Bot) -> (String, CallModel) {
    let call_id = b.emu.ring(IncomingCall::default()).unwrap();
    let mut model = CallModel::new(call_id.clone(), CallModelConfig::default());
    pump(b, &mut model, |m, _| {
        m.state() == Some(&CallState::Incoming)
    })
    .await;
    b.client
        .answer(
            &call_id,
            &AnswerRequest::audio(b.webhook.clone(), MediaConfig::app_hosted(blob())),
        )
        .await
        .unwrap();
    pump(b, &mut model, |m, _| {
        m.state() == Some(&CallState::Established) && m.my_participant_id().is_some()
    })
    .await;
    (call_id, model)
}

fn bot_muted(m: &CallModel) -> Option<bool> {
    let me = m.my_participant_id()?;
    m.participant(me)?.is_muted
}

#[tokio::test]
async fn unmute_returns_an_unmute_operation_from_the_emulator() {
    let mut b = bot(&roles::ALL).await;
    let (call_id, mut model) = answered_call(&mut b).await;

    let op = b.client.mute(&call_id, Some("m")).await.unwrap();
    model.handle_operation_response(&op);
    pump(&mut b, &mut model, |m, _| bot_muted(m) == Some(true)).await;

    // 200 + unmuteParticipantOperation, completed, client context echoed.
    let op = b.client.unmute(&call_id, Some("u")).await.unwrap();
    assert_eq!(op.operation_type(), OperationType::UnmuteParticipant);
    assert_eq!(op.status, Some(OperationStatus::Completed));
    assert_eq!(op.client_context.as_deref(), Some("u"));
    let op_id = op.id.clone().expect("the operation has an id");
    model.handle_operation_response(&op);
    // The roster notification the emulator sends shows the bot unmuted.
    pump(&mut b, &mut model, |m, _| bot_muted(m) == Some(false)).await;
    let fetched = b.client.get_operation(&call_id, &op_id).await.unwrap();
    assert_eq!(fetched.operation_type(), OperationType::UnmuteParticipant);
    assert_eq!(fetched.id.as_deref(), Some(op_id.as_str()));

    // Without a client context the body is still accepted.
    let op = b.client.unmute(&call_id, None).await.unwrap();
    assert_eq!(op.operation_type(), OperationType::UnmuteParticipant);
    assert_eq!(op.client_context, None);

    // An over-long client context never reaches the emulator.
    let before = b.emu.counters().graph_requests;
    let err = b
        .client
        .unmute(&call_id, Some(&"x".repeat(257)))
        .await
        .unwrap_err();
    assert_eq!(err.kind(), &GraphErrorKind::InvalidRequest);
    assert_eq!(b.emu.counters().graph_requests, before);

    b.client.hang_up(&call_id).await.unwrap();
    pump(&mut b, &mut model, |m, _| m.is_terminated()).await;
    let err = b.client.unmute(&call_id, Some("late")).await.unwrap_err();
    assert_eq!(
        err.kind(),
        &GraphErrorKind::NotFound,
        "unmute on an ended call"
    );
    assert_eq!(b.emu.counters().bad_requests, 0);
}

#[tokio::test]
async fn content_sharing_sessions_list_and_get_against_the_emulator() {
    let mut b = bot(&roles::ALL).await;
    let (call_id, mut model) = answered_call(&mut b).await;

    // 200 with a collection: nobody shares content in an emulated call.
    let sessions = b
        .client
        .list_content_sharing_sessions(&call_id)
        .await
        .unwrap();
    assert!(sessions.is_empty(), "{sessions:?}");

    // 404 for an unknown session id, typed as NotFound, not retried.
    let before = b.emu.counters();
    let stats = b.client.stats();
    let err = b
        .client
        .get_content_sharing_session(&call_id, "no-such-session")
        .await
        .unwrap_err();
    assert_eq!(err.kind(), &GraphErrorKind::NotFound);
    assert_eq!(err.status(), Some(404));
    let after = b.emu.counters();
    assert_eq!(after.not_found, before.not_found + 1);
    assert_eq!(after.graph_requests, before.graph_requests + 1);
    assert_eq!(b.client.stats().retries, stats.retries);

    // A session id with characters that need escaping stays one path segment.
    let err = b
        .client
        .get_content_sharing_session(&call_id, "a/b?c#d")
        .await
        .unwrap_err();
    assert_eq!(err.kind(), &GraphErrorKind::NotFound);
    assert_eq!(b.emu.counters().bad_requests, 0);

    b.client.hang_up(&call_id).await.unwrap();
    pump(&mut b, &mut model, |m, _| m.is_terminated()).await;
}

#[tokio::test]
async fn peer_to_peer_and_group_calls_are_placed_on_the_emulator() {
    let mut b = bot(&roles::ALL).await;

    // Peer-to-peer: 201 + the call, establishing, then established with the target in the roster.
    let target = InvitationParticipantInfo::new(IdentitySet::user("p2p-target", Some("Target")));
    let mut body = Call::peer_to_peer(b.webhook.clone(), target, MediaConfig::app_hosted(blob()));
    body.call_options = Some(CallOptions::outgoing(true));
    let call = b.client.create_call(&body).await.unwrap();
    assert_eq!(call.state, Some(CallState::Establishing));
    let call_id = call.id.clone().unwrap();
    let mut model = CallModel::new(call_id.clone(), CallModelConfig::default());
    model.handle_call(&call, &ChangeType::Created);
    pump(&mut b, &mut model, |m, _| {
        m.state() == Some(&CallState::Established)
    })
    .await;
    let people = b.client.list_participants(&call_id).await.unwrap();
    assert_eq!(people.len(), 2, "bot + target: {people:?}");
    b.client.hang_up(&call_id).await.unwrap();
    pump(&mut b, &mut model, |m, _| m.is_terminated()).await;

    // Group call: several targets in the app's tenant.
    let targets = vec![
        InvitationParticipantInfo::new(IdentitySet::user("group-a", Some("A"))),
        InvitationParticipantInfo::new(IdentitySet::user("group-b", Some("B"))),
    ];
    let body = Call::group_call(
        b.webhook.clone(),
        targets,
        b.app.tenant_id.clone(),
        MediaConfig::service_hosted(),
    );
    let call = b.client.create_call(&body).await.unwrap();
    assert_eq!(call.state, Some(CallState::Establishing));
    let call_id = call.id.clone().unwrap();
    let mut model = CallModel::new(call_id.clone(), CallModelConfig::default());
    model.handle_call(&call, &ChangeType::Created);
    pump(&mut b, &mut model, |m, _| {
        m.state() == Some(&CallState::Established)
    })
    .await;
    let people = b.client.list_participants(&call_id).await.unwrap();
    assert_eq!(people.len(), 3, "bot + two targets: {people:?}");
    b.client.hang_up(&call_id).await.unwrap();
    pump(&mut b, &mut model, |m, _| m.is_terminated()).await;
    assert_eq!(b.emu.counters().bad_requests, 0);
}

#[tokio::test]
async fn meeting_join_by_id_and_passcode_and_as_guest_against_the_emulator() {
    let mut b = bot(&roles::ALL).await;
    let info = b
        .emu
        .start_scenario(mediabot_emulator::scenario::Scenario {
            name: "join-by-id".into(),
            meeting: Some(mediabot_emulator::scenario::MeetingSpec {
                join_meeting_id: Some("1234567890".into()),
                passcode: Some("xyz".into()),
                ..Default::default()
            }),
            ..Default::default()
        })
        .unwrap();
    assert_eq!(info["join_meeting_id"], "1234567890");

    // Join by joinMeetingId + the right passcode: established.
    let body = Call::join_meeting_id(
        b.webhook.clone(),
        "1234567890",
        Some("xyz".into()),
        b.app.tenant_id.clone(),
        MediaConfig::service_hosted(),
    );
    let call = b.client.create_call(&body).await.unwrap();
    assert_eq!(call.state, Some(CallState::Establishing));
    let call_id = call.id.clone().unwrap();
    let mut model = CallModel::new(call_id.clone(), CallModelConfig::default());
    model.handle_call(&call, &ChangeType::Created);
    pump(&mut b, &mut model, |m, _| {
        m.state() == Some(&CallState::Established)
    })
    .await;
    b.client.hang_up(&call_id).await.unwrap();
    pump(&mut b, &mut model, |m, _| m.is_terminated()).await;

    // The same join as a guest: established too.
    let body = Call::join_meeting_id(
        b.webhook.clone(),
        "1234567890",
        Some("xyz".into()),
        b.app.tenant_id.clone(),
        MediaConfig::service_hosted(),
    )
    .as_guest("guest-bot-1", "Guest Bot");
    let call = b.client.create_call(&body).await.unwrap();
    let call_id = call.id.clone().unwrap();
    let mut model = CallModel::new(call_id.clone(), CallModelConfig::default());
    model.handle_call(&call, &ChangeType::Created);
    pump(&mut b, &mut model, |m, _| {
        m.state() == Some(&CallState::Established)
    })
    .await;
    let fetched = b.client.get_call(&call_id).await.unwrap();
    let guest = fetched
        .source
        .and_then(|s| s.identity)
        .and_then(|i| i.guest)
        .expect("the call's source is a guest identity");
    assert_eq!(guest.id.as_deref(), Some("guest-bot-1"));
    b.client.hang_up(&call_id).await.unwrap();
    pump(&mut b, &mut model, |m, _| m.is_terminated()).await;

    // A wrong passcode: the call is created, then ends with 403.
    let body = Call::join_meeting_id(
        b.webhook.clone(),
        "1234567890",
        Some("wrong".into()),
        b.app.tenant_id.clone(),
        MediaConfig::service_hosted(),
    );
    let call = b.client.create_call(&body).await.unwrap();
    let call_id = call.id.clone().unwrap();
    let mut model = CallModel::new(call_id.clone(), CallModelConfig::default());
    model.handle_call(&call, &ChangeType::Created);
    pump(&mut b, &mut model, |m, _| m.is_terminated()).await;
    assert_eq!(model.result_info().and_then(|r| r.code), Some(403));
    assert_eq!(b.emu.counters().bad_requests, 0);
}
