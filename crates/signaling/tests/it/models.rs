//! Proves the models read documented Graph payloads, keep unknown properties and values, and
//! write them back unchanged.

use mediabot_signaling::models::*;
use serde_json::{Value, json};

fn round_trip<T: serde::Serialize + serde::de::DeserializeOwned>(v: &Value) -> (T, Value) {
    let typed: T = serde_json::from_value(v.clone()).unwrap();
    let back = serde_json::to_value(&typed).unwrap();
    (typed, back)
}

#[test]
fn incoming_call_round_trips_with_unknown_fields() {
    let v = json!({
        "@odata.type": "#microsoft.graph.call",
        "@odata.id": "/communications/calls/491f0b00-ffff-4bc9-a43e-b226498ec22a",
        "@odata.etag": "W/\"5445\"",
        "state": "incoming",
        "direction": "incoming",
        "callbackUri": "https://bot.contoso.com/api/calls",
        "source": {
            "@odata.type": "#microsoft.graph.participantInfo",
            "identity": {
                "@odata.type": "#microsoft.graph.identitySet",
                "user": {"@odata.type": "#microsoft.graph.identity", "displayName": "John", "id": "112f7296-5fa4-42ca-bae8-6a692b15d4b8", "tenantId": "t1", "identityProvider": "AAD"}
            },
            "region": "westus",
            "languageId": "en-US",
            "futureInfoField": {"nested": [1, 2]}
        },
        "targets": [{
            "@odata.type": "#microsoft.graph.invitationParticipantInfo",
            "identity": {"@odata.type": "#microsoft.graph.identitySet", "application": {"displayName": "Bot", "id": "2891555a-92ff-42e6-80fa-6e1300c6b5c6"}},
            "endpointType": "default"
        }],
        "requestedModalities": ["audio", "holographic"],
        "mediaConfig": {"@odata.type": "#microsoft.graph.appHostedMediaConfig", "blob": "eyJ2IjoxfQ==", "newKnob": true},
        "chatInfo": {"@odata.type": "#microsoft.graph.chatInfo", "threadId": "19:meeting_x@thread.v2", "messageId": "0"},
        "meetingInfo": {"@odata.type": "#microsoft.graph.organizerMeetingInfo", "organizer": {"user": {"id": "o1", "tenantId": "t1"}}, "allowConversationWithoutHost": true},
        "incomingContext": {"@odata.type": "#microsoft.graph.incomingContext", "observedParticipantId": "p-1", "sourceParticipantId": "p-2"},
        "tenantId": "t1",
        "myParticipantId": "me",
        "callChainId": "chain",
        "toneInfo": {"sequenceId": 3, "tone": "tone5"},
        "mediaState": {"audio": "active"},
        "transcription": {"state": "notStarted", "lastModifiedDateTime": "2026-11-22T00:00:00Z"},
        "callRoutes": [{"routingType": "forwarded", "final": {"user": {"id": "a"}}, "original": {"user": {"id": "b"}}}],
        "callOptions": {"@odata.type": "#microsoft.graph.incomingCallOptions", "isDeltaRosterEnabled": true},
        "someFutureProperty": "kept"
    });
    let (call, back): (Call, Value) = round_trip(&v);
    assert_eq!(call.state, Some(CallState::Incoming));
    assert_eq!(call.direction, Some(CallDirection::Incoming));
    assert_eq!(
        call.requested_modalities,
        Some(vec![
            Modality::Audio,
            Modality::Unknown("holographic".into())
        ])
    );
    let Some(MediaConfig::AppHosted(m)) = &call.media_config else {
        panic!("app hosted")
    };
    assert_eq!(m.blob.as_deref(), Some("eyJ2IjoxfQ=="));
    assert_eq!(m.extra["newKnob"], json!(true));
    assert!(matches!(call.meeting_info, Some(MeetingInfo::Organizer(_))));
    assert_eq!(call.tone_info.as_ref().unwrap().tone, Some(Tone::Tone5));
    assert_eq!(call.extra["someFutureProperty"], json!("kept"));
    assert_eq!(call.extra["@odata.etag"], json!("W/\"5445\""));
    assert_eq!(back, v, "call must round-trip unchanged");
}

#[test]
fn ringing_and_unknown_call_states_parse() {
    let c: Call = serde_json::from_value(json!({"state": "ringing"})).unwrap();
    assert_eq!(c.state, Some(CallState::Ringing));
    let c: Call = serde_json::from_value(json!({"state": "ESTABLISHED"})).unwrap();
    assert_eq!(c.state, Some(CallState::Established));
    let c: Call = serde_json::from_value(json!({"state": "teleporting"})).unwrap();
    assert_eq!(c.state, Some(CallState::Unknown("teleporting".into())));
    assert_eq!(
        serde_json::to_value(&c).unwrap(),
        json!({"state": "teleporting"})
    );
    let c: Call = serde_json::from_value(json!({"state": "unknownFutureValue"})).unwrap();
    assert_eq!(c.state, Some(CallState::UnknownFutureValue));
}

#[test]
fn roster_participant_round_trips() {
    let v = json!({
        "@odata.type": "#microsoft.graph.participant",
        "id": "2765eb15-01f8-47c6-b12b-c32111a4a86f",
        "info": {
            "identity": {"user": {"displayName": "Bob", "id": "5810cede"}, "phone": {"id": "+12345678901"}},
            "region": "westus", "languageId": "en-US", "endpointType": "skypeForBusiness"
        },
        "mediaStreams": [
            {"mediaType": "audio", "label": "main-audio", "sourceId": "1", "direction": "sendReceive", "serverMuted": false},
            {"mediaType": "video", "label": "main-video", "sourceId": "2", "direction": "receiveOnly"}
        ],
        "isMuted": true,
        "isInLobby": false,
        "recordingInfo": {"recordingStatus": "recording", "initiator": {"user": {"id": "5810cede"}}},
        "restrictedExperience": {"videoDisabled": "none"},
        "rosterSequenceNumber": 42,
        "metadata": "opaque",
        "hyperdrive": {"level": 9}
    });
    let (p, back): (Participant, Value) = round_trip(&v);
    assert_eq!(p.is_muted, Some(true));
    let streams = p.media_streams.as_ref().unwrap();
    assert_eq!(streams[0].source_id.as_deref(), Some("1"));
    assert_eq!(streams[1].media_type, Some(Modality::Video));
    assert_eq!(
        p.recording_info.as_ref().unwrap().recording_status,
        Some(RecordingStatus::Recording)
    );
    assert_eq!(p.roster_sequence_number, Some(42));
    assert_eq!(back, v);
    // Int64 as a string (OData IEEE754Compatible) is accepted too.
    let p: Participant = serde_json::from_value(json!({"rosterSequenceNumber": "43"})).unwrap();
    assert_eq!(p.roster_sequence_number, Some(43));
}

#[test]
fn operation_status_is_case_insensitive_and_subtypes_are_read() {
    let op: CommsOperation = serde_json::from_value(json!({
        "@odata.type": "#microsoft.graph.inviteParticipantsOperation",
        "id": "op1", "status": "Running", "clientContext": "ctx",
        "participants": [{"identity": {"user": {"id": "u"}}}]
    }))
    .unwrap();
    assert_eq!(op.status, Some(OperationStatus::Running));
    assert_eq!(op.operation_type(), OperationType::InviteParticipants);
    assert!(!op.is_final());

    let v = json!({
        "@odata.type": "#microsoft.graph.recordOperation",
        "@odata.context": "https://graph.microsoft.com/v1.0/$metadata#recordOperation",
        "id": "op2", "status": "completed",
        "resultInfo": {"@odata.type": "#microsoft.graph.resultInfo", "code": 200, "subcode": 8515, "message": "max record duration reached"},
        "recordingLocation": "https://x/rec", "recordingAccessToken": "tok"
    });
    let (op, back): (CommsOperation, Value) = round_trip(&v);
    assert_eq!(op.operation_type(), OperationType::Record);
    assert!(op.is_final());
    assert_eq!(op.result_info.as_ref().unwrap().subcode, Some(8515));
    assert_eq!(back, v);

    let op: CommsOperation = serde_json::from_value(json!({
        "@odata.type": "#microsoft.graph.sendDtmfTonesOperation", "status": "FAILED",
        "completionReason": "somethingNew", "resultInfo": {"code": 500, "subCode": 7000}
    }))
    .unwrap();
    assert_eq!(op.status, Some(OperationStatus::Failed));
    assert_eq!(
        op.completion_reason,
        Some(SendDtmfCompletionReason::Unknown("somethingNew".into()))
    );
    assert_eq!(op.result_info.unwrap().subcode, Some(7000), "subCode alias");

    let op: CommsOperation =
        serde_json::from_value(json!({"@odata.type": "#microsoft.graph.brandNewOperation"}))
            .unwrap();
    assert_eq!(
        op.operation_type(),
        OperationType::Unknown("brandNewOperation".into())
    );
}

#[test]
fn polymorphic_types_dispatch_and_keep_unknown_subtypes() {
    let mc: MediaConfig = serde_json::from_value(json!({
        "@odata.type": "#microsoft.graph.serviceHostedMediaConfig",
        "preFetchMedia": [{"uri": "https://x/a.wav", "resourceId": "r1"}]
    }))
    .unwrap();
    let MediaConfig::ServiceHosted(s) = &mc else {
        panic!("service hosted")
    };
    assert_eq!(
        s.pre_fetch_media.as_ref().unwrap()[0]
            .resource_id
            .as_deref(),
        Some("r1")
    );

    // Discriminator without '#' or namespace, any case.
    let mc: MediaConfig =
        serde_json::from_value(json!({"@odata.type": "AppHostedMediaConfig", "blob": "b"}))
            .unwrap();
    assert!(mc.is_app_hosted());
    // No discriminator: inferred from the properties.
    let mc: MediaConfig = serde_json::from_value(json!({"blob": "b"})).unwrap();
    assert_eq!(mc, MediaConfig::app_hosted("b"));
    assert_eq!(
        serde_json::to_value(MediaConfig::app_hosted("b")).unwrap(),
        json!({"@odata.type": "#microsoft.graph.appHostedMediaConfig", "blob": "b"})
    );

    let unknown = json!({"@odata.type": "#microsoft.graph.quantumMediaConfig", "qubits": 3});
    let (mc, back): (MediaConfig, Value) = round_trip(&unknown);
    assert!(matches!(mc, MediaConfig::Unknown(_)));
    assert_eq!(back, unknown);

    for (v, want) in [
        (
            json!({"@odata.type": "#microsoft.graph.joinMeetingIdMeetingInfo", "joinMeetingId": "123", "passcode": "p"}),
            "joinMeetingIdMeetingInfo",
        ),
        (
            json!({"@odata.type": "#microsoft.graph.tokenMeetingInfo", "token": "tk"}),
            "tokenMeetingInfo",
        ),
        (
            json!({"@odata.type": "#microsoft.graph.organizerMeetingInfo", "organizer": {"user": {"id": "o"}}}),
            "organizerMeetingInfo",
        ),
    ] {
        let (mi, back): (MeetingInfo, Value) = round_trip(&v);
        assert_eq!(mi.odata_type().unwrap(), format!("#microsoft.graph.{want}"));
        assert_eq!(back, v);
    }

    let p: Prompt = serde_json::from_value(json!({
        "@odata.type": "#microsoft.graph.mediaPrompt",
        "mediaInfo": {"@odata.type": "#microsoft.graph.mediaInfo", "uri": "https://cdn/a.wav", "resourceId": "1"}
    }))
    .unwrap();
    assert!(matches!(p, Prompt::Media(_)));
}

#[test]
fn identity_subtypes_round_trip() {
    let v = json!({
        "@odata.type": "#microsoft.graph.communicationsIdentitySet",
        "applicationInstance": {"@odata.type": "#microsoft.graph.communicationsApplicationInstanceIdentity", "id": "ai", "hidden": false, "tenantId": "t"},
        "guest": {"@odata.type": "#microsoft.graph.communicationsGuestIdentity", "displayName": "Guest", "id": "g", "email": "g@example.com"},
        "phone": {"@odata.type": "#microsoft.graph.communicationsPhoneIdentity", "id": "+1555"},
        "application": {"@odata.type": "#microsoft.graph.communicationsApplicationIdentity", "id": "app", "applicationType": "bot", "hidden": true},
        "encrypted": {"@odata.type": "#microsoft.graph.communicationsEncryptedIdentity", "id": "enc"},
        "endpointType": "voicemail",
        "assertedIdentity": {"id": "+1666"}
    });
    let (ids, back): (IdentitySet, Value) = round_trip(&v);
    assert_eq!(
        ids.guest.as_ref().unwrap().email.as_deref(),
        Some("g@example.com")
    );
    assert_eq!(
        ids.application
            .as_ref()
            .unwrap()
            .application_type
            .as_deref(),
        Some("bot")
    );
    assert_eq!(ids.endpoint_type, Some(EndpointType::Voicemail));
    assert_eq!(back, v);
}

#[test]
fn routing_groups_sessions_and_quality_round_trip() {
    let v = json!({"id": "oneToOne_1", "routingMode": "oneToOne", "sources": ["a"], "receivers": ["b", "c"]});
    let (g, back): (AudioRoutingGroup, Value) = round_trip(&v);
    assert_eq!(g.routing_mode, Some(RoutingMode::OneToOne));
    assert_eq!(back, v);

    let v = json!({"@odata.type": "#microsoft.graph.contentSharingSession", "id": "s1", "unknownThing": 1});
    let (_s, back): (ContentSharingSession, Value) = round_trip(&v);
    assert_eq!(back, v);

    let v = json!({
        "callChainId": "c", "participantId": "p", "mediaLegId": "m", "deviceName": "dev",
        "deviceDescription": "d", "cloudServiceName": "svc",
        "mediaQualityList": [{
            "@odata.type": "#microsoft.graph.teleconferenceDeviceVideoQuality",
            "channelIndex": 1, "mediaDuration": "PT20M", "networkLinkSpeedInBytes": 13000,
            "localIPAddress": "127.0.0.1", "localPort": 6300, "remoteIPAddress": "102.1.1.101", "remotePort": 6331,
            "inboundPackets": 5500, "outboundPackets": 5400,
            "averageInboundPacketLossRateInPercentage": 0.01, "maximumInboundPacketLossRateInPercentage": 0.02,
            "averageInboundJitter": "PT0.03S", "averageInboundRoundTripDelay": "PT0.05S",
            "averageInboundBitRate": 1000.5, "averageInboundFrameRate": 30.0
        }]
    });
    let (q, back): (TeleconferenceDeviceQuality, Value) = round_trip(&v);
    assert_eq!(
        q.media_quality_list.as_ref().unwrap()[0].local_port,
        Some(6300)
    );
    assert_eq!(back, v);
}

#[test]
fn wrong_types_are_errors_not_panics() {
    assert!(serde_json::from_value::<Call>(json!({"state": 5})).is_err());
    assert!(serde_json::from_value::<Participant>(json!({"mediaStreams": "nope"})).is_err());
    assert!(serde_json::from_value::<Participant>(json!({"rosterSequenceNumber": "x"})).is_err());
    assert!(serde_json::from_value::<MediaConfig>(json!(["array"])).is_err());
    assert!(
        serde_json::from_value::<CommsOperation>(json!({"resultInfo": {"code": "abc"}})).is_err()
    );
}

#[test]
fn create_call_bodies_match_documented_shapes() {
    let target = InvitationParticipantInfo::new(IdentitySet::user("u1", Some("Heidi")));
    let p2p = Call::peer_to_peer(
        "https://bot/cb",
        target.clone(),
        MediaConfig::app_hosted("blob"),
    );
    assert_eq!(p2p.scenario(), Some(CallScenario::PeerToPeer));
    let v = serde_json::to_value(&p2p).unwrap();
    assert_eq!(v["@odata.type"], "#microsoft.graph.call");
    assert_eq!(v["callbackUri"], "https://bot/cb");
    assert_eq!(v["requestedModalities"], json!(["audio"]));
    assert_eq!(v["targets"][0]["identity"]["user"]["id"], "u1");
    assert_eq!(
        v["mediaConfig"]["@odata.type"],
        "#microsoft.graph.appHostedMediaConfig"
    );

    let group = Call::group_call(
        "https://bot/cb",
        vec![target.clone(), target],
        "t",
        MediaConfig::service_hosted(),
    );
    assert_eq!(group.scenario(), Some(CallScenario::GroupCall));
    assert!(!group.is_app_hosted());

    let by_id = Call::join_meeting_id(
        "https://bot/cb",
        "123",
        Some("pw".into()),
        "t",
        MediaConfig::app_hosted("b"),
    );
    assert_eq!(by_id.scenario(), Some(CallScenario::JoinMeeting));
    let v = serde_json::to_value(&by_id).unwrap();
    assert_eq!(
        v["meetingInfo"]["@odata.type"],
        "#microsoft.graph.joinMeetingIdMeetingInfo"
    );
    assert_eq!(v["meetingInfo"]["joinMeetingId"], "123");
    assert_eq!(v["tenantId"], "t");

    let guest = by_id.as_guest("g-1", "Recorder");
    assert_eq!(guest.scenario(), Some(CallScenario::JoinMeetingAsGuest));
    let v = serde_json::to_value(&guest).unwrap();
    assert_eq!(v["source"]["identity"]["guest"]["displayName"], "Recorder");
}
