//! Proves the per-call model follows the call lifecycle, the roster and operations, never
//! moves backwards or emits twice, and (proptest) ends in the same state for any permutation
//! or duplication of a recorded notification sequence.

use mediabot_signaling::models::*;
use mediabot_signaling::notifications::{Notification, parse_notifications};
use mediabot_signaling::state::{CallEvent, CallModel, CallModelConfig, RosterMode};
use proptest::prelude::*;
use serde_json::{Value, json};
use std::collections::BTreeMap;

const CALL: &str = "/communications/calls/c1";

fn n(change: &str, url: &str, data: Value) -> Notification {
    let body = json!({"value": [{"@odata.type": "#microsoft.graph.commsNotification", "changeType": change, "resourceUrl": url, "resourceData": data}]});
    parse_notifications(body.to_string().as_bytes())
        .unwrap()
        .remove(0)
}

fn call(etag: u32, extra: Value) -> Value {
    let mut v =
        json!({"@odata.type": "#microsoft.graph.call", "@odata.etag": format!("W/\"{etag}\"")});
    for (k, val) in extra.as_object().unwrap() {
        v[k] = val.clone();
    }
    v
}

fn participant(id: &str, seq: i64, source: Option<&str>, lobby: bool, muted: bool) -> Value {
    let mut p = json!({"@odata.type": "#microsoft.graph.participant", "id": id, "rosterSequenceNumber": seq,
        "info": {"identity": {"user": {"id": format!("user-{id}")}}}, "isInLobby": lobby, "isMuted": muted});
    if let Some(s) = source {
        p["mediaStreams"] =
            json!([{"mediaType": "audio", "sourceId": s, "direction": "sendReceive"}]);
    }
    p
}

/// A recorded call: incoming, answer, roster, operations, tones, hold, a leave, hang-up.
fn recorded(with_termination: bool) -> Vec<Notification> {
    let parts = format!("{CALL}/participants");
    let mut alice_rec = participant("p1", 5, Some("1"), false, true);
    alice_rec["recordingInfo"] = json!({"recordingStatus": "recording"});
    let mut v = vec![
        n(
            "created",
            CALL,
            call(1, json!({"state": "incoming", "direction": "incoming"})),
        ),
        n("updated", CALL, call(2, json!({"state": "establishing"}))),
        n(
            "updated",
            CALL,
            call(
                3,
                json!({"state": "established", "mediaState": {"audio": "active"}, "myParticipantId": "p0"}),
            ),
        ),
        n(
            "updated",
            &parts,
            json!([
                participant("p0", 1, Some("100"), false, false),
                participant("p1", 2, Some("1"), false, false)
            ]),
        ),
        n(
            "updated",
            &format!("{CALL}/operations/op1"),
            json!({"@odata.type": "#microsoft.graph.subscribeToToneOperation", "status": "running", "clientContext": "tones"}),
        ),
        n(
            "deleted",
            &format!("{CALL}/operations/op1"),
            json!({"@odata.type": "#microsoft.graph.subscribeToToneOperation", "status": "completed", "clientContext": "tones", "resultInfo": {"code": 200}}),
        ),
        n(
            "updated",
            &parts,
            json!([participant("p2", 3, Some("2"), true, false)]),
        ),
        n(
            "updated",
            &parts,
            json!([participant("p2", 4, Some("2"), false, false)]),
        ),
        n("updated", &parts, json!([alice_rec])),
        n(
            "updated",
            CALL,
            call(4, json!({"toneInfo": {"sequenceId": 1, "tone": "tone5"}})),
        ),
        n(
            "updated",
            CALL,
            call(5, json!({"toneInfo": {"sequenceId": 2, "tone": "pound"}})),
        ),
        n("updated", CALL, call(6, json!({"state": "hold"}))),
        n("updated", CALL, call(7, json!({"state": "established"}))),
        n(
            "deleted",
            &parts,
            json!([participant("p2", 6, Some("2"), false, false)]),
        ),
        n(
            "deleted",
            &format!("{CALL}/operations/op2"),
            json!({"@odata.type": "#microsoft.graph.playPromptOperation", "status": "failed", "clientContext": "pp", "resultInfo": {"code": 400, "subcode": 8501}}),
        ),
        n(
            "updated",
            CALL,
            call(8, json!({"mediaState": {"audio": "inactive"}})),
        ),
    ];
    if with_termination {
        v.push(n("deleted", CALL, call(9, json!({"state": "terminated", "resultInfo": {"code": 0, "subcode": 5000, "message": "bye"}}))));
    }
    v
}

fn run(seq: &[Notification]) -> (CallModel, Vec<CallEvent>) {
    let mut m = CallModel::new("c1", CallModelConfig::default());
    let mut events = Vec::new();
    for n in seq {
        assert!(m.handle_notification(n));
        while let Some(e) = m.poll_event() {
            events.push(e);
        }
    }
    (m, events)
}

fn assert_no_event_twice(events: &[CallEvent]) {
    let mut seen: BTreeMap<String, usize> = BTreeMap::new();
    for e in events {
        let key = match e {
            CallEvent::ParticipantJoined { participant } => {
                format!("join {}", participant.id.clone().unwrap())
            }
            CallEvent::ParticipantLeft { participant_id } => format!("left {participant_id}"),
            CallEvent::OperationCompleted { operation_id, .. }
            | CallEvent::OperationFailed { operation_id, .. } => format!("op {operation_id}"),
            CallEvent::ToneReceived { sequence_id, .. } => format!("tone {sequence_id:?}"),
            CallEvent::Terminated { .. } => "terminated".into(),
            _ => continue,
        };
        *seen.entry(key).or_default() += 1;
    }
    for (k, count) in seen {
        assert_eq!(count, 1, "event {k} emitted {count} times");
    }
}

#[test]
fn in_order_recording_produces_the_expected_events_and_state() {
    let (m, events) = run(&recorded(true));
    assert_eq!(m.state(), Some(&CallState::Terminated));
    assert_eq!(m.my_participant_id(), Some("p0"));
    assert_eq!(m.result_info().unwrap().subcode, Some(5000));
    let alice = m.participant_for_source(&Modality::Audio, 1).unwrap();
    assert_eq!(alice.id.as_deref(), Some("p1"));
    assert!(
        m.participant_for_source(&Modality::Audio, 2).is_none(),
        "bob left"
    );
    assert!(
        m.participant_for_source(&Modality::Video, 1).is_none(),
        "per media type"
    );
    let states: Vec<_> = events
        .iter()
        .filter_map(|e| match e {
            CallEvent::StateChanged { to, .. } => Some(to.clone()),
            _ => None,
        })
        .collect();
    assert_eq!(
        states,
        [
            CallState::Incoming,
            CallState::Establishing,
            CallState::Established,
            CallState::Hold,
            CallState::Established,
            CallState::Terminated
        ]
    );
    assert!(events.contains(&CallEvent::OperationCompleted {
        operation_id: "op1".into(),
        operation_type: OperationType::SubscribeToTone,
        client_context: Some("tones".into()),
        result_info: Some(ResultInfo {
            code: Some(200),
            ..Default::default()
        }),
    }));
    assert!(events.iter().any(|e| matches!(e, CallEvent::OperationFailed { operation_id, client_context, .. } if operation_id == "op2" && client_context.as_deref() == Some("pp"))));
    assert!(events.contains(&CallEvent::ToneReceived {
        tone: Tone::Tone5,
        sequence_id: Some(1)
    }));
    assert!(events.contains(&CallEvent::ParticipantMuteChanged {
        participant_id: "p1".into(),
        muted: true
    }));
    assert!(events.contains(&CallEvent::RecordingStatusChanged {
        participant_id: "p1".into(),
        status: RecordingStatus::Recording
    }));
    assert!(events.contains(&CallEvent::ParticipantLobbyChanged {
        participant_id: "p2".into(),
        in_lobby: false
    }));
    // Bob's source is mapped only once he leaves the lobby, and unmapped when he leaves.
    let bob_src: Vec<_> = events
        .iter()
        .filter(|e| {
            matches!(
                e,
                CallEvent::SourceMapped { source_id: 2, .. }
                    | CallEvent::SourceUnmapped { source_id: 2, .. }
            )
        })
        .collect();
    assert_eq!(bob_src.len(), 2);
    assert!(matches!(bob_src[0], CallEvent::SourceMapped { .. }));
    assert!(events.contains(&CallEvent::ParticipantLeft {
        participant_id: "p2".into()
    }));
    assert!(events.contains(&CallEvent::MediaStateChanged {
        audio: MediaState::Inactive
    }));
    assert!(matches!(
        events.last(),
        Some(CallEvent::Terminated {
            result_info: Some(_)
        })
    ));
    assert_no_event_twice(&events);
}

#[test]
fn establishing_after_established_does_not_move_back() {
    let mut m = CallModel::new("c1", CallModelConfig::default());
    m.handle_notification(&n("updated", CALL, json!({"state": "established"})));
    m.handle_notification(&n("updated", CALL, json!({"state": "establishing"})));
    m.handle_notification(&n("updated", CALL, json!({"state": "established"})));
    assert_eq!(m.state(), Some(&CallState::Established));
    assert_eq!(
        m.poll_event(),
        Some(CallEvent::StateChanged {
            from: None,
            to: CallState::Established
        })
    );
    assert_eq!(m.poll_event(), None, "no backward move, no duplicate event");
    // Unknown future states never move the model either.
    m.handle_notification(&n("updated", CALL, json!({"state": "quantumEntangled"})));
    assert_eq!(m.state(), Some(&CallState::Established));
}

#[test]
fn operation_responses_resolve_once() {
    let mut m = CallModel::new("c1", CallModelConfig::default());
    let done: CommsOperation = serde_json::from_value(json!({"@odata.type": "#microsoft.graph.muteParticipantOperation", "id": "m1", "status": "completed", "clientContext": "c"})).unwrap();
    m.handle_operation_response(&done);
    assert!(matches!(
        m.poll_event(),
        Some(CallEvent::OperationCompleted {
            operation_type: OperationType::MuteParticipant,
            ..
        })
    ));
    m.handle_notification(&n(
        "deleted",
        &format!("{CALL}/operations/m1"),
        json!({"status": "completed"}),
    ));
    assert_eq!(m.poll_event(), None, "already resolved");

    let running: CommsOperation = serde_json::from_value(json!({"@odata.type": "#microsoft.graph.playPromptOperation", "id": "p1", "status": "running", "clientContext": "ctx-42"})).unwrap();
    m.handle_operation_response(&running);
    assert_eq!(m.poll_event(), None, "pending");
    assert!(m.snapshot().pending_operations.contains("p1"));
    // The completion notification carries no clientContext: it comes from the pending entry.
    m.handle_notification(&n(
        "deleted",
        &format!("{CALL}/operations/p1"),
        json!({"@odata.type": "#microsoft.graph.commsOperation", "status": "completed"}),
    ));
    match m.poll_event() {
        Some(CallEvent::OperationCompleted {
            operation_id,
            client_context,
            operation_type,
            ..
        }) => {
            assert_eq!(operation_id, "p1");
            assert_eq!(client_context.as_deref(), Some("ctx-42"));
            assert_eq!(operation_type, OperationType::PlayPrompt);
        }
        other => panic!("{other:?}"),
    }
    assert!(m.snapshot().pending_operations.is_empty());
}

#[test]
fn notifications_for_other_calls_are_ignored() {
    let mut m = CallModel::new("c1", CallModelConfig::default());
    assert!(!m.handle_notification(&n(
        "updated",
        "/communications/calls/other",
        json!({"state": "established"})
    )));
    assert_eq!(m.state(), None);
    assert_eq!(m.ignored_count(), 1);
    // The legacy /app/calls path names the same call.
    assert!(m.handle_notification(&n(
        "updated",
        "/app/calls/c1",
        json!({"state": "established"})
    )));
}

#[test]
fn full_roster_mode_removes_absent_participants_and_ignores_old_snapshots() {
    let cfg = CallModelConfig {
        roster_mode: RosterMode::Full,
        ..Default::default()
    };
    let mut m = CallModel::new("c1", cfg);
    let parts = format!("{CALL}/participants");
    let s1 = n(
        "updated",
        &parts,
        json!([
            participant("a", 1, Some("1"), false, false),
            participant("b", 2, Some("2"), false, false)
        ]),
    );
    let s2 = n(
        "updated",
        &parts,
        json!([participant("a", 3, Some("1"), false, false)]),
    );
    m.handle_notification(&s2);
    m.handle_notification(&s1); // older snapshot arriving late
    assert_eq!(m.participants().count(), 1);
    let mut m2 = CallModel::new(
        "c1",
        CallModelConfig {
            roster_mode: RosterMode::Full,
            ..Default::default()
        },
    );
    m2.handle_notification(&s1);
    m2.handle_notification(&s2);
    assert_eq!(m.snapshot(), m2.snapshot());
    let mut left = false;
    while let Some(e) = m2.poll_event() {
        left |= e
            == CallEvent::ParticipantLeft {
                participant_id: "b".into(),
            };
    }
    assert!(left);
}

#[test]
fn single_participant_object_and_source_id_garbage_are_tolerated() {
    let mut m = CallModel::new("c1", CallModelConfig::default());
    let mut p = participant("x", 1, Some("not-a-number"), false, false);
    p["mediaStreams"]
        .as_array_mut()
        .unwrap()
        .push(json!({"mediaType": "video", "sourceId": "7"}));
    m.handle_notification(&n("updated", &format!("{CALL}/participants/x"), p));
    assert_eq!(m.participants().count(), 1);
    assert!(m.participant_for_source(&Modality::Video, 7).is_some());
    assert_eq!(
        m.snapshot().sources.len(),
        1,
        "unparsable source ids are skipped"
    );
}

/// A recorded call whose roster notifications are whole rosters (no delta roster).
fn recorded_full_roster() -> Vec<Notification> {
    let parts = format!("{CALL}/participants");
    vec![
        n("updated", CALL, call(1, json!({"state": "establishing"}))),
        n("updated", CALL, call(2, json!({"state": "established"}))),
        n(
            "updated",
            &parts,
            json!([participant("p0", 1, Some("100"), false, false)]),
        ),
        n(
            "updated",
            &parts,
            json!([
                participant("p0", 1, Some("100"), false, false),
                participant("p1", 2, Some("1"), true, false)
            ]),
        ),
        n(
            "updated",
            &parts,
            json!([
                participant("p0", 1, Some("100"), false, false),
                participant("p1", 3, Some("1"), false, false),
                participant("p2", 4, Some("2"), false, false)
            ]),
        ),
        n(
            "updated",
            &parts,
            json!([
                participant("p0", 1, Some("100"), false, false),
                participant("p2", 5, Some("2"), false, true)
            ]),
        ),
        n(
            "updated",
            &parts,
            json!([
                participant("p0", 1, Some("100"), false, false),
                participant("p2", 5, Some("2"), false, true),
                participant("p3", 6, Some("3"), false, false)
            ]),
        ),
    ]
}

fn run_full(seq: &[Notification]) -> (CallModel, Vec<CallEvent>) {
    let mut m = CallModel::new(
        "c1",
        CallModelConfig {
            roster_mode: RosterMode::Full,
            ..Default::default()
        },
    );
    let mut events = Vec::new();
    for n in seq {
        m.handle_notification(n);
        while let Some(e) = m.poll_event() {
            events.push(e);
        }
    }
    (m, events)
}

/// Any permutation of the recording, with any duplicates inserted anywhere.
fn shuffled_with_duplicates(len: usize) -> impl Strategy<Value = Vec<usize>> {
    let order = Just((0..len).collect::<Vec<_>>()).prop_shuffle();
    let dups = prop::collection::vec((0..len, 0..len * 2), 0..len * 2);
    (order, dups).prop_map(|(mut order, dups)| {
        for (item, pos) in dups {
            let at = pos.min(order.len());
            order.insert(at, item);
        }
        order
    })
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    #[test]
    fn any_permutation_or_duplication_ends_in_the_same_state(idx in shuffled_with_duplicates(17)) {
        let rec = recorded(true);
        let (expected, _) = run(&rec);
        let seq: Vec<Notification> = idx.iter().map(|&i| rec[i].clone()).collect();
        let (got, events) = run(&seq);
        prop_assert_eq!(got.snapshot(), expected.snapshot());
        assert_no_event_twice(&events);
    }

    #[test]
    fn full_roster_mode_converges_too(idx in shuffled_with_duplicates(7)) {
        let rec = recorded_full_roster();
        let (expected, _) = run_full(&rec);
        let ids: Vec<_> = expected.participants().map(|p| p.id.clone().unwrap()).collect();
        prop_assert_eq!(ids, vec!["p0".to_owned(), "p2".to_owned(), "p3".to_owned()]);
        let seq: Vec<Notification> = idx.iter().map(|&i| rec[i].clone()).collect();
        let (got, events) = run_full(&seq);
        prop_assert_eq!(got.snapshot(), expected.snapshot());
        assert_no_event_twice(&events);
    }

    #[test]
    fn without_hang_up_the_in_call_state_is_ordered_by_etag(idx in shuffled_with_duplicates(16)) {
        let rec = recorded(false);
        let (expected, _) = run(&rec);
        prop_assert_eq!(expected.state(), Some(&CallState::Established));
        let seq: Vec<Notification> = idx.iter().map(|&i| rec[i].clone()).collect();
        let (got, events) = run(&seq);
        prop_assert_eq!(got.snapshot(), expected.snapshot());
        assert_no_event_twice(&events);
    }
}

#[test]
fn unpolled_events_are_bounded_and_counted() {
    let cfg = CallModelConfig {
        max_queued_events: 3,
        ..Default::default()
    };
    let mut m = CallModel::new("c1", cfg);
    let parts = format!("{CALL}/participants");
    for i in 0..5 {
        m.handle_notification(&n(
            "updated",
            &parts,
            json!([participant(&format!("p{i}"), 1, None, false, false)]),
        ));
    }
    assert_eq!(m.dropped_events(), 2);
    let mut left = 0;
    while m.poll_event().is_some() {
        left += 1;
    }
    assert_eq!(left, 3);
}
