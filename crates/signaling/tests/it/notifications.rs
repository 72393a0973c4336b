//! Proves `commsNotifications` bodies in the documented shapes parse into typed resources,
//! and malformed bodies (or random bytes) are typed errors, never panics.

use mediabot_signaling::models::*;
use mediabot_signaling::notifications::*;
use proptest::prelude::*;
use serde_json::json;

#[test]
fn documented_shapes_parse() {
    let body = json!({
        "@odata.type": "#microsoft.graph.commsNotifications",
        "value": [
            {
                "@odata.type": "#microsoft.graph.commsNotification",
                "changeType": "created",
                "resourceUrl": "/communications/calls/491f0b00-ffff-4bc9-a43e-b226498ec22a",
                "callbackUri": "https://bot.contoso.com/api/calls",
                "resourceData": {
                    "@odata.type": "#microsoft.graph.call",
                    "state": "incoming", "direction": "incoming",
                    "source": {"identity": {"user": {"displayName": "John", "id": "u1"}}, "region": "westus"},
                    "targets": [{"identity": {"application": {"displayName": "Bot", "id": "app"}}}],
                    "requestedModalities": ["audio"],
                    "tenantId": "t1"
                }
            },
            {
                "changeType": "updated",
                "resourceUrl": "/communications/calls/491f0b00-ffff-4bc9-a43e-b226498ec22a/participants",
                "resourceData": [
                    {"@odata.type": "#microsoft.graph.participant", "id": "p1", "mediaStreams": [{"mediaType": "audio", "sourceId": "1"}], "isMuted": false, "isInLobby": false},
                    {"@odata.type": "#microsoft.graph.participant", "id": "p2", "mediaStreams": [{"mediaType": "audio", "sourceId": "3"}]}
                ]
            },
            {
                "changeType": "deleted",
                "resourceUrl": "/communications/calls/491f0b00-ffff-4bc9-a43e-b226498ec22a/operations/0fe0623f-d628-42ed-b4bd-8ac290072cc5",
                "resourceData": {"@odata.type": "#microsoft.graph.playPromptOperation", "@odata.id": "/communications/calls/x/operations/y", "@odata.etag": "W/\"54451\"", "clientContext": "d45324c1", "status": "completed", "resultInfo": {"code": 200, "subcode": 0}}
            },
            {
                "changeType": "updated",
                "resourceUrl": "/communications/calls/491f0b00-ffff-4bc9-a43e-b226498ec22a/contentsharingsessions",
                "resourceData": [{"@odata.type": "#microsoft.graph.contentSharingSession", "id": "s1"}]
            },
            {
                "changeType": "updated",
                "resource": "/app/calls/491f0b00-ffff-4bc9-a43e-b226498ec22a",
                "subscriptionId": "legacy",
                "resourceData": {"state": "established"}
            },
            {
                "changeType": "updated",
                "resourceUrl": "/communications/calls/491f0b00-ffff-4bc9-a43e-b226498ec22a/audioRoutingGroups/g1",
                "resourceData": {"id": "g1"}
            },
            {
                "changeType": "somethingNew",
                "resourceUrl": "/communications/calls/491f0b00-ffff-4bc9-a43e-b226498ec22a",
                "resourceData": {"state": "ringing"}
            }
        ]
    });
    let ns = parse_notifications(body.to_string().as_bytes()).unwrap();
    assert_eq!(ns.len(), 7);
    assert!(
        ns.iter()
            .all(|n| n.call_id() == Some("491f0b00-ffff-4bc9-a43e-b226498ec22a"))
    );
    let Resource::Call(c) = &ns[0].resource else {
        panic!("call")
    };
    assert_eq!(c.state, Some(CallState::Incoming));
    assert_eq!(
        ns[0].extra["callbackUri"],
        "https://bot.contoso.com/api/calls"
    );
    let Resource::Participants(ps) = &ns[1].resource else {
        panic!("participants")
    };
    assert_eq!(ps.len(), 2);
    let Resource::Operation(op) = &ns[2].resource else {
        panic!("operation")
    };
    assert_eq!(ns[2].change_type, ChangeType::Deleted);
    assert_eq!(op.operation_type(), OperationType::PlayPrompt);
    assert!(matches!(&ns[3].resource, Resource::ContentSharingSessions(s) if s.len() == 1));
    assert!(
        matches!(&ns[4].resource, Resource::Call(_)),
        "legacy resource key"
    );
    assert!(matches!(&ns[5].resource, Resource::Unknown(_)));
    assert_eq!(
        ns[6].change_type,
        ChangeType::Unknown("somethingNew".into())
    );
}

#[test]
fn malformed_bodies_are_typed_errors() {
    let cases: &[&[u8]] = &[
        b"",
        b"not json",
        b"[]",
        br#"{"value": {}}"#,
        br#"{"novalue": []}"#,
        br#"{"value": [5]}"#,
        br#"{"value": [{"changeType": 1, "resourceUrl": "/communications/calls/c"}]}"#,
        br#"{"value": [{"changeType": "updated"}]}"#,
        br#"{"value": [{"changeType": "updated", "resourceUrl": "/communications/calls/c", "resourceData": {"state": 5}}]}"#,
        br#"{"value": [{"changeType": "updated", "resourceUrl": "/communications/calls/c/participants", "resourceData": [{"mediaStreams": 1}]}]}"#,
        br#"{"value": [{"changeType": "updated", "resourceUrl": "/communications/calls/c/participants", "resourceData": "x"}]}"#,
    ];
    for c in cases {
        assert!(
            parse_notifications(c).is_err(),
            "{}",
            String::from_utf8_lossy(c)
        );
    }
    let many = json!({"value": vec![json!({"changeType": "updated", "resourceUrl": "/communications/calls/c"}); MAX_NOTIFICATIONS_PER_BATCH + 1]});
    assert_eq!(
        parse_notifications(many.to_string().as_bytes()),
        Err(NotificationError::TooMany)
    );
}

proptest! {
    #[test]
    fn random_bytes_never_panic(bytes in prop::collection::vec(any::<u8>(), 0..512)) {
        let _ = parse_notifications(&bytes);
    }

    #[test]
    fn random_tokens_never_panic(token in "[A-Za-z0-9_.-]{0,300}") {
        let rules = TokenRules { audience: "a", issuers: &[], tenants: None, skew: std::time::Duration::ZERO };
        let r = verify_token(&token, &KeySet::default(), &rules, std::time::SystemTime::now());
        prop_assert!(r.is_err());
    }
}
