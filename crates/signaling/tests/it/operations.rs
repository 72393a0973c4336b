//! Proves every call-control operation sends the documented method, path, headers and JSON
//! body over real HTTP on loopback, and handles the documented 201/202/200+operation/204.

use crate::fake_graph::{FakeGraph, Recorded};
use mediabot_signaling::models::*;
use serde_json::{Value, json};

fn check(r: &Recorded, method: &str, path: &str) {
    assert_eq!(r.method.as_str(), method, "method of {path}");
    assert_eq!(r.path, path);
    let auth = r.headers.get("authorization").unwrap().to_str().unwrap();
    assert!(auth.starts_with("Bearer "), "bearer token");
    let crid = r
        .headers
        .get("client-request-id")
        .unwrap()
        .to_str()
        .unwrap();
    assert!(
        uuid::Uuid::parse_str(crid).is_ok(),
        "client-request-id is a uuid"
    );
    if !r.body.is_null() {
        assert_eq!(r.headers.get("content-type").unwrap(), "application/json");
    }
}

const C: &str = "/v1.0/communications/calls";

#[tokio::test]
async fn create_call_variants_return_201_call() {
    let g = FakeGraph::start().await;
    let client = g.client();
    let target = InvitationParticipantInfo::new(IdentitySet::user("u1", Some("Heidi")));

    let call = client
        .create_call(&Call::peer_to_peer(
            "https://bot/cb",
            target.clone(),
            MediaConfig::app_hosted("blob-1"),
        ))
        .await
        .unwrap();
    assert_eq!(call.id.as_deref(), Some("call-new"));
    assert_eq!(call.state, Some(CallState::Establishing));
    let r = g.last();
    check(&r, "POST", C);
    assert_eq!(r.body["@odata.type"], "#microsoft.graph.call");
    assert_eq!(
        r.body["mediaConfig"],
        json!({"@odata.type": "#microsoft.graph.appHostedMediaConfig", "blob": "blob-1"})
    );
    assert_eq!(r.body["targets"][0]["identity"]["user"]["id"], "u1");

    client
        .create_call(&Call::group_call(
            "https://bot/cb",
            vec![target.clone(), target],
            "t1",
            MediaConfig::service_hosted(),
        ))
        .await
        .unwrap();
    assert_eq!(g.last().body["targets"].as_array().unwrap().len(), 2);

    let url = "https://teams.microsoft.com/l/meetup-join/19%3ameeting_abc%40thread.v2/0?context=%7b%22Tid%22%3a%22t1%22%2c%22Oid%22%3a%22o1%22%7d";
    let join = mediabot_signaling::join_url::parse_join_url(url).unwrap();
    client
        .create_call(&Call::join_meeting(
            "https://bot/cb",
            join,
            MediaConfig::app_hosted("b"),
        ))
        .await
        .unwrap();
    let b = g.last().body;
    assert_eq!(b["chatInfo"]["threadId"], "19:meeting_abc@thread.v2");
    assert_eq!(b["chatInfo"]["messageId"], "0");
    assert_eq!(
        b["meetingInfo"]["@odata.type"],
        "#microsoft.graph.organizerMeetingInfo"
    );
    assert_eq!(b["meetingInfo"]["organizer"]["user"]["id"], "o1");
    assert_eq!(b["tenantId"], "t1");

    let by_id = Call::join_meeting_id(
        "https://bot/cb",
        "1234567",
        Some("pass".into()),
        "t1",
        MediaConfig::app_hosted("b"),
    );
    client.create_call(&by_id).await.unwrap();
    assert_eq!(
        g.last().body["meetingInfo"],
        json!({"@odata.type": "#microsoft.graph.joinMeetingIdMeetingInfo", "joinMeetingId": "1234567", "passcode": "pass"})
    );

    client
        .create_call(&by_id.as_guest("guest-1", "Recorder bot"))
        .await
        .unwrap();
    assert_eq!(
        g.last().body["source"]["identity"]["guest"]["displayName"],
        "Recorder bot"
    );
}

#[tokio::test]
async fn call_actions_send_documented_bodies() {
    let g = FakeGraph::start().await;
    let client = g.client();

    let call = client.get_call("c1").await.unwrap();
    assert_eq!(call.state, Some(CallState::Established));
    check(&g.last(), "GET", &format!("{C}/c1"));

    client.hang_up("c1").await.unwrap();
    check(&g.last(), "DELETE", &format!("{C}/c1"));

    let mut answer = AnswerRequest::audio("https://bot/cb/c1", MediaConfig::app_hosted("blob"));
    answer.call_options = Some(CallOptions::incoming(true));
    answer.participant_capacity = Some(200);
    client.answer("c1", &answer).await.unwrap();
    let r = g.last();
    check(&r, "POST", &format!("{C}/c1/answer"));
    assert_eq!(
        r.body,
        json!({
            "callbackUri": "https://bot/cb/c1",
            "mediaConfig": {"@odata.type": "#microsoft.graph.appHostedMediaConfig", "blob": "blob"},
            "acceptedModalities": ["audio"],
            "participantCapacity": 200,
            "callOptions": {"@odata.type": "#microsoft.graph.incomingCallOptions", "isDeltaRosterEnabled": true}
        })
    );

    client
        .reject(
            "c1",
            &RejectRequest {
                reason: Some(RejectReason::Busy),
                callback_uri: None,
            },
        )
        .await
        .unwrap();
    check(&g.last(), "POST", &format!("{C}/c1/reject"));
    assert_eq!(g.last().body, json!({"reason": "busy"}));

    let target = InvitationParticipantInfo::new(IdentitySet::user("u2", None));
    client
        .redirect(
            "c1",
            &RedirectRequest {
                targets: vec![target.clone()],
                timeout: Some(30),
                callback_uri: None,
            },
        )
        .await
        .unwrap();
    check(&g.last(), "POST", &format!("{C}/c1/redirect"));
    assert_eq!(
        g.last().body,
        json!({"targets": [{"identity": {"user": {"id": "u2"}}}], "timeout": 30})
    );

    client
        .transfer(
            "c1",
            &TransferRequest {
                transfer_target: target,
                transferee: None,
            },
        )
        .await
        .unwrap();
    check(&g.last(), "POST", &format!("{C}/c1/transfer"));
    assert_eq!(
        g.last().body["transferTarget"]["identity"]["user"]["id"],
        "u2"
    );

    client.keep_alive("c1").await.unwrap();
    let r = g.last();
    check(&r, "POST", &format!("{C}/c1/keepAlive"));
    assert!(r.body.is_null(), "keepAlive has no body");

    client
        .change_screen_sharing_role("c1", ScreenSharingRole::Viewer)
        .await
        .unwrap();
    check(
        &g.last(),
        "POST",
        &format!("{C}/c1/changeScreenSharingRole"),
    );
    assert_eq!(g.last().body, json!({"role": "viewer"}));

    let quality = TeleconferenceDeviceQuality {
        call_chain_id: Some("chain".into()),
        ..Default::default()
    };
    client
        .log_teleconference_device_quality(&quality)
        .await
        .unwrap();
    check(
        &g.last(),
        "POST",
        &format!("{C}/logTeleconferenceDeviceQuality"),
    );
    assert_eq!(g.last().body, json!({"quality": {"callChainId": "chain"}}));
}

#[tokio::test]
async fn media_actions_return_operations() {
    let g = FakeGraph::start().await;
    let client = g.client();

    let op = client.mute("c1", Some("ctx-mute")).await.unwrap();
    check(&g.last(), "POST", &format!("{C}/c1/mute"));
    assert_eq!(g.last().body, json!({"clientContext": "ctx-mute"}));
    assert_eq!(op.operation_type(), OperationType::MuteParticipant);
    assert_eq!(op.client_context.as_deref(), Some("ctx-mute"));
    assert!(op.is_final());

    let op = client.unmute("c1", None).await.unwrap();
    check(&g.last(), "POST", &format!("{C}/c1/unmute"));
    assert_eq!(g.last().body, json!({}));
    assert_eq!(op.operation_type(), OperationType::UnmuteParticipant);

    let op = client
        .play_prompt(
            "c1",
            &PlayPromptRequest {
                prompts: vec![Prompt::media("https://cdn/hello.wav")],
                client_context: Some("pp".into()),
            },
        )
        .await
        .unwrap();
    check(&g.last(), "POST", &format!("{C}/c1/playPrompt"));
    assert_eq!(
        g.last().body,
        json!({"prompts": [{"@odata.type": "#microsoft.graph.mediaPrompt", "mediaInfo": {"uri": "https://cdn/hello.wav"}}], "clientContext": "pp"})
    );
    assert_eq!(op.status, Some(OperationStatus::Running));

    let req = RecordResponseRequest {
        max_record_duration_in_seconds: Some(10),
        stop_tones: Some(vec!["#".into()]),
        play_beep: Some(true),
        ..Default::default()
    };
    let op = client.record_response("c1", &req).await.unwrap();
    check(&g.last(), "POST", &format!("{C}/c1/recordResponse"));
    assert_eq!(
        g.last().body,
        json!({"maxRecordDurationInSeconds": 10, "playBeep": true, "stopTones": ["#"]})
    );
    assert_eq!(op.operation_type(), OperationType::Record);

    client
        .cancel_media_processing("c1", Some("cancel"))
        .await
        .unwrap();
    check(&g.last(), "POST", &format!("{C}/c1/cancelMediaProcessing"));

    let op = client.subscribe_to_tone("c1", Some("tones")).await.unwrap();
    check(&g.last(), "POST", &format!("{C}/c1/subscribeToTone"));
    assert_eq!(op.operation_type(), OperationType::SubscribeToTone);

    let op = client
        .send_dtmf_tones(
            "c1",
            &SendDtmfTonesRequest {
                tones: vec![Tone::Tone1, Tone::Pound],
                delay_between_tones_ms: Some(100),
                client_context: None,
            },
        )
        .await
        .unwrap();
    check(&g.last(), "POST", &format!("{C}/c1/sendDtmfTones"));
    assert_eq!(
        g.last().body,
        json!({"tones": ["tone1", "pound"], "delayBetweenTonesMs": 100})
    );
    assert_eq!(op.operation_type(), OperationType::SendDtmfTones);

    let op = client
        .update_recording_status(
            "c1",
            &UpdateRecordingStatusRequest {
                status: RecordingStatus::Recording,
                client_context: Some("rec".into()),
            },
        )
        .await
        .unwrap();
    check(&g.last(), "POST", &format!("{C}/c1/updateRecordingStatus"));
    assert_eq!(
        g.last().body,
        json!({"status": "recording", "clientContext": "rec"})
    );
    assert_eq!(op.operation_type(), OperationType::UpdateRecordingStatus);

    let op = client.get_operation("c1", "op-9").await.unwrap();
    check(&g.last(), "GET", &format!("{C}/c1/operations/op-9"));
    assert_eq!(op.result_info.unwrap().code, Some(200));
}

#[tokio::test]
async fn participant_operations() {
    let g = FakeGraph::start().await;
    let client = g.client();

    let ps = client.list_participants("c1").await.unwrap();
    assert_eq!(
        ps.iter().map(|p| p.id.clone().unwrap()).collect::<Vec<_>>(),
        ["p1", "p2"],
        "follows nextLink"
    );
    let reqs = g.requests();
    check(
        &reqs[reqs.len() - 2],
        "GET",
        &format!("{C}/c1/participants"),
    );
    assert_eq!(g.last().query.as_deref(), Some("$skiptoken=2"));

    let p = client.get_participant("c1", "p1").await.unwrap();
    check(&g.last(), "GET", &format!("{C}/c1/participants/p1"));
    assert_eq!(p.is_in_lobby, Some(false));

    let invite = InviteParticipantsRequest {
        participants: vec![InvitationParticipantInfo::new(IdentitySet::user(
            "u3",
            Some("Ann"),
        ))],
        client_context: Some("inv".into()),
    };
    let op = client.invite_participants("c1", &invite).await.unwrap();
    check(&g.last(), "POST", &format!("{C}/c1/participants/invite"));
    assert_eq!(
        g.last().body["participants"][0]["identity"]["user"]["displayName"],
        "Ann"
    );
    assert_eq!(
        op.status,
        Some(OperationStatus::Running),
        "PascalCase Running"
    );
    assert_eq!(op.operation_type(), OperationType::InviteParticipants);

    client
        .mute_participant("c1", "p1", Some("m"))
        .await
        .unwrap();
    check(&g.last(), "POST", &format!("{C}/c1/participants/p1/mute"));

    client.remove_participant("c1", "p1").await.unwrap();
    check(&g.last(), "DELETE", &format!("{C}/c1/participants/p1"));

    let op = client
        .start_hold_music(
            "c1",
            "p1",
            &StartHoldMusicRequest {
                custom_prompt: Some(Prompt::media("https://bot/hold.wav")),
                client_context: None,
            },
        )
        .await
        .unwrap();
    check(
        &g.last(),
        "POST",
        &format!("{C}/c1/participants/p1/startHoldMusic"),
    );
    assert_eq!(
        g.last().body["customPrompt"]["mediaInfo"]["uri"],
        "https://bot/hold.wav"
    );
    assert_eq!(op.operation_type(), OperationType::StartHoldMusic);

    let op = client.stop_hold_music("c1", "p1", Some("s")).await.unwrap();
    check(
        &g.last(),
        "POST",
        &format!("{C}/c1/participants/p1/stopHoldMusic"),
    );
    assert_eq!(op.operation_type(), OperationType::StopHoldMusic);

    // Ids cannot add path levels.
    client.get_participant("c1", "a/b?c").await.unwrap();
    assert_eq!(g.last().path, format!("{C}/c1/participants/a%2Fb%3Fc"));
}

#[tokio::test]
async fn routing_groups_and_sessions() {
    let g = FakeGraph::start().await;
    let client = g.client();
    let group = AudioRoutingGroup {
        routing_mode: Some(RoutingMode::OneToOne),
        sources: Some(vec!["a".into()]),
        receivers: Some(vec!["b".into()]),
        ..Default::default()
    };
    let created = client
        .create_audio_routing_group("c1", &group)
        .await
        .unwrap();
    check(&g.last(), "POST", &format!("{C}/c1/audioRoutingGroups"));
    assert_eq!(
        g.last().body,
        json!({"routingMode": "oneToOne", "sources": ["a"], "receivers": ["b"]})
    );
    assert_eq!(created.id.as_deref(), Some("oneToOne_1"));

    assert_eq!(
        client.list_audio_routing_groups("c1").await.unwrap().len(),
        1
    );
    check(&g.last(), "GET", &format!("{C}/c1/audioRoutingGroups"));

    let got = client.get_audio_routing_group("c1", "g1").await.unwrap();
    check(&g.last(), "GET", &format!("{C}/c1/audioRoutingGroups/g1"));
    assert_eq!(got.routing_mode, Some(RoutingMode::Multicast));

    let updated = client
        .update_audio_routing_group("c1", "g1", &group)
        .await
        .unwrap();
    check(&g.last(), "PATCH", &format!("{C}/c1/audioRoutingGroups/g1"));
    assert_eq!(updated.id.as_deref(), Some("g1"));

    client.delete_audio_routing_group("c1", "g1").await.unwrap();
    check(
        &g.last(),
        "DELETE",
        &format!("{C}/c1/audioRoutingGroups/g1"),
    );

    assert_eq!(
        client
            .list_content_sharing_sessions("c1")
            .await
            .unwrap()
            .len(),
        1
    );
    check(&g.last(), "GET", &format!("{C}/c1/contentSharingSessions"));
    let s = client
        .get_content_sharing_session("c1", "s1")
        .await
        .unwrap();
    check(
        &g.last(),
        "GET",
        &format!("{C}/c1/contentSharingSessions/s1"),
    );
    assert_eq!(s.id.as_deref(), Some("s1"));
}

#[tokio::test]
async fn client_side_validation_refuses_before_sending() {
    let g = FakeGraph::start().await;
    let client = g.client();
    let long = "x".repeat(257);
    let err = client.mute("c1", Some(&long)).await.unwrap_err();
    assert_eq!(
        err.kind(),
        &mediabot_signaling::GraphErrorKind::InvalidRequest
    );
    let err = client
        .invite_participants(
            "c1",
            &InviteParticipantsRequest {
                participants: vec![],
                client_context: None,
            },
        )
        .await
        .unwrap_err();
    assert_eq!(
        err.kind(),
        &mediabot_signaling::GraphErrorKind::InvalidRequest
    );
    assert!(g.requests().is_empty(), "nothing was sent");
    let _: Value = Value::Null;
}

#[tokio::test]
async fn operation_with_empty_body_takes_its_id_from_location() {
    let g = FakeGraph::start().await;
    g.push(
        200,
        vec![(
            "location",
            format!("{}/communications/calls/c1/operations/op-77", g.base_url()),
        )],
        Value::Null,
    );
    let op = g.client().mute("c1", None).await.unwrap();
    assert_eq!(op.id.as_deref(), Some("op-77"));
    assert_eq!(op.status, None, "result comes by notification");
}

#[tokio::test]
async fn unreadable_success_body_is_invalid_response() {
    let g = FakeGraph::start().await;
    g.push(200, vec![], json!(["not", "a", "call"]));
    let err = g.client().get_call("c1").await.unwrap_err();
    assert_eq!(
        err.kind(),
        &mediabot_signaling::GraphErrorKind::InvalidResponse
    );
}

#[tokio::test]
async fn oversized_response_is_refused() {
    let g = FakeGraph::start().await;
    let mut cfg = g.config();
    cfg.max_response_bytes = 1024;
    let client = mediabot_signaling::GraphClient::new(
        cfg,
        mediabot_signaling::Credentials::secret("t", "a", "s"),
    )
    .unwrap();
    g.push(200, vec![], json!({"subject": "x".repeat(4096)}));
    let err = client.get_call("c1").await.unwrap_err();
    assert_eq!(
        err.kind(),
        &mediabot_signaling::GraphErrorKind::InvalidResponse
    );
}
