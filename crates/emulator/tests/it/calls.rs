//! Calls API: every operation's documented status code, Location header and body, and the
//! notification sequences they trigger.

use serde_json::{Value, json};

use crate::common::{env, summarize};

fn loc(h: &reqwest::header::HeaderMap) -> String {
    h.get("location")
        .map(|v| v.to_str().unwrap().to_owned())
        .unwrap_or_default()
}

#[tokio::test]
async fn create_p2p_call_then_get_keepalive_delete() {
    let env = env().await;
    let (st, h, v) = env
        .graph("POST", "/communications/calls", Some(env.p2p_body()))
        .await;
    assert_eq!(st, 201, "{v}");
    let id = v["id"].as_str().unwrap().to_owned();
    assert_eq!(
        loc(&h),
        format!("{}/communications/calls/{id}", env.emu.graph_url())
    );
    assert_eq!(v["state"], "establishing");
    assert_eq!(v["direction"], "outgoing");
    assert!(h.get("request-id").is_some());
    let items = env.bot.wait(3).await;
    let s: Vec<String> = items.iter().map(summarize).collect();
    assert_eq!(
        s[..3],
        [
            "updated call establishing",
            "updated call established",
            "updated participants"
        ]
    );
    let roster = items[2]["resourceData"].as_array().unwrap();
    assert_eq!(roster.len(), 2, "bot + target");
    assert!(
        roster
            .iter()
            .all(|p| p["mediaStreams"][0]["sourceId"].is_string())
    );
    let (st, _, v) = env
        .graph("GET", &format!("/communications/calls/{id}"), None)
        .await;
    assert_eq!((st, v["state"].as_str()), (200, Some("established")));
    assert!(v["myParticipantId"].is_string());
    let (st, _, v) = env
        .graph(
            "POST",
            &format!("/communications/calls/{id}/keepAlive"),
            None,
        )
        .await;
    assert_eq!((st, v), (200, Value::Null));
    let (st, _, _) = env
        .graph("DELETE", &format!("/communications/calls/{id}"), None)
        .await;
    assert_eq!(st, 204);
    env.bot
        .wait_for(|i| {
            i.iter()
                .any(|x| x["changeType"] == "deleted" && x["resourceData"]["state"] == "terminated")
        })
        .await;
    let (st, _, v) = env
        .graph(
            "POST",
            &format!("/communications/calls/{id}/keepAlive"),
            None,
        )
        .await;
    assert_eq!(st, 404, "keepAlive on an ended call");
    assert_eq!(v["error"]["code"], "itemNotFound");
    assert!(v["error"]["innerError"]["request-id"].is_string());
    let (st, _, _) = env
        .graph("GET", &format!("/communications/calls/{id}"), None)
        .await;
    assert_eq!(st, 404);
}

#[tokio::test]
async fn incoming_call_answer_reject_redirect() {
    let env = env().await;
    // Answer.
    let (st, v) = env
        .ctl(
            "POST",
            "/calls/incoming",
            Some(json!({"caller_name": "Zoe"})),
        )
        .await;
    assert_eq!(st, 201);
    let id = v["call_id"].as_str().unwrap().to_owned();
    let items = env.bot.wait(1).await;
    assert_eq!(items[0]["changeType"], "created");
    assert_eq!(items[0]["resourceData"]["state"], "incoming");
    assert_eq!(items[0]["resourceData"]["direction"], "incoming");
    assert_eq!(
        items[0]["resourceData"]["source"]["identity"]["user"]["displayName"],
        "Zoe"
    );
    let answer = json!({"callbackUri": env.cb, "acceptedModalities": ["audio"],
        "mediaConfig": {"@odata.type": "#microsoft.graph.appHostedMediaConfig", "blob": env.blob()}});
    let (st, _, v) = env
        .graph(
            "POST",
            &format!("/communications/calls/{id}/answer"),
            Some(answer.clone()),
        )
        .await;
    assert_eq!((st, v), (202, Value::Null));
    let items = env.bot.wait(4).await;
    let s: Vec<String> = items.iter().map(summarize).collect();
    assert_eq!(
        s[1..4],
        [
            "updated call establishing",
            "updated call established",
            "updated participants"
        ]
    );
    let (st, _, v) = env
        .graph(
            "POST",
            &format!("/communications/calls/{id}/answer"),
            Some(answer),
        )
        .await;
    assert_eq!(st, 409, "answer twice: {v}");
    assert_eq!(v["error"]["code"], "Conflict");
    // Reject.
    let (_, v) = env.ctl("POST", "/calls/incoming", None).await;
    let id2 = v["call_id"].as_str().unwrap().to_owned();
    let (st, _, _) = env
        .graph(
            "POST",
            &format!("/communications/calls/{id2}/reject"),
            Some(json!({"reason": "busy"})),
        )
        .await;
    assert_eq!(st, 202);
    env.bot
        .wait_for(|i| {
            i.iter().any(|x| {
                x["changeType"] == "deleted" && x["resourceUrl"].as_str().unwrap().ends_with(&id2)
            })
        })
        .await;
    let (st, _, _) = env
        .graph(
            "POST",
            &format!("/communications/calls/{id2}/reject"),
            Some(json!({"reason": "busy"})),
        )
        .await;
    assert_eq!(st, 404, "the rejected call is gone");
    // Redirect.
    let (_, v) = env.ctl("POST", "/calls/incoming", None).await;
    let id3 = v["call_id"].as_str().unwrap().to_owned();
    let target = json!({"targets": [{"identity": {"user": {"id": "u-9"}}}], "timeout": 30});
    let (st, _, _) = env
        .graph(
            "POST",
            &format!("/communications/calls/{id3}/redirect"),
            Some(target),
        )
        .await;
    assert_eq!(st, 202);
    env.bot
        .wait_for(|i| {
            i.iter().any(|x| {
                x["changeType"] == "deleted" && x["resourceUrl"].as_str().unwrap().ends_with(&id3)
            })
        })
        .await;
}

#[tokio::test]
async fn operations_return_200_location_and_complete_by_notification() {
    let env = env().await;
    let id = env.established_call().await;
    let base = format!("/communications/calls/{id}");
    // mute/unmute: completed at once, roster shows isMuted.
    let (st, h, v) = env
        .graph(
            "POST",
            &format!("{base}/mute"),
            Some(json!({"clientContext": "c-mute"})),
        )
        .await;
    assert_eq!(st, 200);
    assert_eq!(
        v["@odata.type"],
        "#microsoft.graph.muteParticipantOperation"
    );
    assert_eq!(
        (v["status"].as_str(), v["clientContext"].as_str()),
        (Some("completed"), Some("c-mute"))
    );
    assert_eq!(
        loc(&h),
        format!(
            "{}{base}/operations/{}",
            env.emu.graph_url(),
            v["id"].as_str().unwrap()
        )
    );
    env.bot
        .wait_for(|i| {
            i.iter().any(|x| {
                x["resourceData"]
                    .as_array()
                    .is_some_and(|a| a.iter().any(|p| p["isMuted"] == true))
            })
        })
        .await;
    let (st, _, v) = env.graph("POST", &format!("{base}/unmute"), None).await;
    assert_eq!(
        (st, v["@odata.type"].as_str()),
        (200, Some("#microsoft.graph.unmuteParticipantOperation"))
    );
    // sendDtmfTones: running, then a deleted notification on the operation with completed.
    let (st, _, v) = env
        .graph(
            "POST",
            &format!("{base}/sendDtmfTones"),
            Some(json!({"tones": ["tone1", "pound"], "clientContext": "dtmf"})),
        )
        .await;
    assert_eq!((st, v["status"].as_str()), (200, Some("running")));
    let op = v["id"].as_str().unwrap().to_owned();
    let items = env
        .bot
        .wait_for(|i| {
            i.iter()
                .any(|x| x["resourceUrl"].as_str().unwrap().ends_with(&op))
        })
        .await;
    let done = items
        .iter()
        .find(|x| x["resourceUrl"].as_str().unwrap().ends_with(&op))
        .unwrap();
    assert_eq!(done["changeType"], "deleted");
    assert_eq!(done["resourceData"]["status"], "completed");
    assert_eq!(done["resourceData"]["clientContext"], "dtmf");
    assert_eq!(
        done["resourceData"]["completionReason"],
        "completedSuccessfully"
    );
    assert_eq!(done["resourceData"]["resultInfo"]["code"], 200);
    let (st, _, v) = env
        .graph("GET", &format!("{base}/operations/{op}"), None)
        .await;
    assert_eq!((st, v["status"].as_str()), (200, Some("completed")));
    let (st, _, _) = env
        .graph("GET", &format!("{base}/operations/nope"), None)
        .await;
    assert_eq!(st, 404);
    // subscribeToTone then a participant presses 5: toneInfo on the call.
    let (st, _, v) = env
        .graph(
            "POST",
            &format!("{base}/subscribeToTone"),
            Some(json!({"clientContext": "t"})),
        )
        .await;
    assert_eq!((st, v["status"].as_str()), (200, Some("completed")));
    let snap = env.emu.call(&id).unwrap();
    let caller = snap["participants"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["is_bot"] == false)
        .unwrap()["graph"]["id"]
        .as_str()
        .unwrap()
        .to_owned();
    env.emu
        .participant_action(
            &id,
            &caller,
            mediabot_emulator::Action::Tone { tone: "5".into() },
        )
        .unwrap();
    let items = env
        .bot
        .wait_for(|i| {
            i.iter()
                .any(|x| x["resourceData"]["toneInfo"]["tone"] == "tone5")
        })
        .await;
    let tone = items
        .iter()
        .find(|x| x["resourceData"]["toneInfo"].is_object())
        .unwrap();
    assert_eq!(tone["resourceData"]["toneInfo"]["sequenceId"], 1);
    // updateRecordingStatus: completed with Location; roster shows recordingInfo.
    let (st, h, v) = env
        .graph(
            "POST",
            &format!("{base}/updateRecordingStatus"),
            Some(json!({"status": "recording", "clientContext": "r"})),
        )
        .await;
    assert_eq!((st, v["status"].as_str()), (200, Some("completed")));
    assert!(loc(&h).contains("/operations/"));
    env.bot
        .wait_for(|i| {
            i.iter().any(|x| {
                x["resourceData"].as_array().is_some_and(|a| {
                    a.iter()
                        .any(|p| p["recordingInfo"]["recordingStatus"] == "recording")
                })
            })
        })
        .await;
    // changeScreenSharingRole, cancelMediaProcessing, logTeleconferenceDeviceQuality.
    let (st, _, _) = env
        .graph(
            "POST",
            &format!("{base}/changeScreenSharingRole"),
            Some(json!({"role": "viewer"})),
        )
        .await;
    assert_eq!(st, 200);
    let (st, _, v) = env
        .graph(
            "POST",
            &format!("{base}/cancelMediaProcessing"),
            Some(json!({"clientContext": "x"})),
        )
        .await;
    assert_eq!(
        (st, v["@odata.type"].as_str()),
        (200, Some("#microsoft.graph.cancelMediaProcessingOperation"))
    );
    let q = json!({"quality": {"callChainId": "c", "mediaLegId": "m", "mediaQualityList": []}});
    let (st, _, _) = env
        .graph(
            "POST",
            "/communications/calls/logTeleconferenceDeviceQuality",
            Some(q),
        )
        .await;
    assert_eq!(st, 200);
    // playPrompt/recordResponse refuse app-hosted media.
    let prompts = json!({"prompts": [{"@odata.type": "#microsoft.graph.mediaPrompt", "mediaInfo": {"uri": "https://x/a.wav"}}]});
    let (st, _, v) = env
        .graph("POST", &format!("{base}/playPrompt"), Some(prompts))
        .await;
    assert_eq!(st, 400, "{v}");
    // Transfer: transferring, transferAccepted, deleted.
    let (st, _, _) = env
        .graph(
            "POST",
            &format!("{base}/transfer"),
            Some(json!({"transferTarget": {"identity": {"user": {"id": "u-2"}}}})),
        )
        .await;
    assert_eq!(st, 202);
    let items = env
        .bot
        .wait_for(|i| {
            i.iter().any(|x| {
                x["changeType"] == "deleted"
                    && x["resourceUrl"] == format!("/communications/calls/{id}")
            })
        })
        .await;
    let states: Vec<&str> = items
        .iter()
        .filter(|x| x["resourceUrl"] == format!("/communications/calls/{id}"))
        .filter_map(|x| x["resourceData"]["state"].as_str())
        .collect();
    let tail = &states[states.len() - 3..];
    assert_eq!(tail, ["transferring", "transferAccepted", "terminated"]);
}

#[tokio::test]
async fn service_hosted_prompts_and_recordings_complete() {
    let env = env().await;
    let mut body = env.p2p_body();
    body["mediaConfig"] = json!({"@odata.type": "#microsoft.graph.serviceHostedMediaConfig"});
    let (st, _, v) = env.graph("POST", "/communications/calls", Some(body)).await;
    assert_eq!(st, 201);
    let id = v["id"].as_str().unwrap().to_owned();
    env.bot
        .wait_for(|i| {
            i.iter()
                .any(|x| x["resourceData"]["state"] == "established")
        })
        .await;
    let prompts = json!({"clientContext": "p", "prompts": [{"@odata.type": "#microsoft.graph.mediaPrompt", "mediaInfo": {"uri": "https://x/a.wav"}}]});
    let (st, _, v) = env
        .graph(
            "POST",
            &format!("/communications/calls/{id}/playPrompt"),
            Some(prompts),
        )
        .await;
    assert_eq!((st, v["status"].as_str()), (200, Some("running")));
    let (st, _, v) = env
        .graph(
            "POST",
            &format!("/communications/calls/{id}/recordResponse"),
            Some(json!({"maxRecordDurationInSeconds": 10})),
        )
        .await;
    assert_eq!(
        (st, v["@odata.type"].as_str()),
        (200, Some("#microsoft.graph.recordOperation"))
    );
    let rec = v["id"].as_str().unwrap().to_owned();
    let items = env
        .bot
        .wait_for(|i| {
            i.iter()
                .any(|x| x["resourceUrl"].as_str().unwrap().ends_with(&rec))
        })
        .await;
    let done = items
        .iter()
        .find(|x| x["resourceUrl"].as_str().unwrap().ends_with(&rec))
        .unwrap();
    assert_eq!(done["resourceData"]["resultInfo"]["subcode"], 8515);
    assert!(done["resourceData"]["recordingLocation"].is_string());
    let (st, _, _) = env
        .graph(
            "POST",
            &format!("/communications/calls/{id}/recordResponse"),
            Some(json!({"maxRecordDurationInSeconds": 500})),
        )
        .await;
    assert_eq!(st, 400);
}

#[tokio::test]
async fn participants_invite_mute_hold_delete_and_routing_groups() {
    let env = env().await;
    let mut body = env.p2p_body();
    let t = body["targets"][0].clone();
    body["targets"] =
        json!([t.clone(), {"identity": {"user": {"id": "u-3", "displayName": "Bo"}}}]);
    let (st, _, v) = env.graph("POST", "/communications/calls", Some(body)).await;
    assert_eq!(st, 201);
    let id = v["id"].as_str().unwrap().to_owned();
    let base = format!("/communications/calls/{id}");
    env.bot
        .wait_for(|i| {
            i.iter()
                .any(|x| x["resourceData"]["state"] == "established")
        })
        .await;
    let (st, _, v) = env
        .graph("GET", &format!("{base}/participants"), None)
        .await;
    assert_eq!(st, 200);
    let parts = v["value"].as_array().unwrap().clone();
    assert_eq!(parts.len(), 3);
    let other = parts
        .iter()
        .find(|p| p["info"]["identity"]["user"]["id"] == "u-3")
        .unwrap()["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let (st, _, v) = env
        .graph("GET", &format!("{base}/participants/{other}"), None)
        .await;
    assert_eq!((st, v["id"].as_str()), (200, Some(other.as_str())));
    // Invite: 200 + running, then completed and the roster grows.
    let inv = json!({"participants": [{"identity": {"user": {"id": "u-4", "displayName": "Cy"}}}], "clientContext": "inv"});
    let (st, h, v) = env
        .graph("POST", &format!("{base}/participants/invite"), Some(inv))
        .await;
    assert_eq!((st, v["status"].as_str()), (200, Some("running")), "{v}");
    assert!(loc(&h).contains("/operations/"));
    assert_eq!(
        v["@odata.type"],
        "#microsoft.graph.inviteParticipantsOperation"
    );
    env.bot
        .wait_for(|i| {
            i.iter()
                .any(|x| x["resourceData"].as_array().is_some_and(|a| a.len() == 4))
        })
        .await;
    let six: Vec<Value> = (0..6)
        .map(|n| json!({"identity": {"user": {"id": format!("x{n}")}}}))
        .collect();
    let (st, _, _) = env
        .graph(
            "POST",
            &format!("{base}/participants/invite"),
            Some(json!({"participants": six})),
        )
        .await;
    assert_eq!(st, 400, "more than 5 invitees");
    // Participant mute, hold music.
    for action in ["mute", "startHoldMusic", "stopHoldMusic"] {
        let (st, _, v) = env
            .graph(
                "POST",
                &format!("{base}/participants/{other}/{action}"),
                Some(json!({"clientContext": action})),
            )
            .await;
        assert_eq!(st, 200, "{action}: {v}");
        assert_eq!(v["status"], "running");
    }
    let (st, _, _) = env
        .graph(
            "POST",
            &format!("{base}/participants/nobody/mute"),
            Some(json!({})),
        )
        .await;
    assert_eq!(st, 404);
    // Audio routing groups.
    let bot = env.emu.call(&id).unwrap()["call"]["myParticipantId"]
        .as_str()
        .unwrap()
        .to_owned();
    let g = json!({"routingMode": "oneToOne", "sources": [bot], "receivers": [other]});
    let (st, h, v) = env
        .graph("POST", &format!("{base}/audioRoutingGroups"), Some(g))
        .await;
    assert_eq!(st, 201, "{v}");
    let gid = v["id"].as_str().unwrap().to_owned();
    assert!(loc(&h).ends_with(&gid));
    let (st, _, v) = env
        .graph("GET", &format!("{base}/audioRoutingGroups"), None)
        .await;
    assert_eq!((st, v["value"].as_array().unwrap().len()), (200, 1));
    let (st, _, v) = env
        .graph(
            "PATCH",
            &format!("{base}/audioRoutingGroups/{gid}"),
            Some(json!({"routingMode": "multicast"})),
        )
        .await;
    assert_eq!((st, v["routingMode"].as_str()), (200, Some("multicast")));
    let (st, _, _) = env
        .graph("GET", &format!("{base}/audioRoutingGroups/{gid}"), None)
        .await;
    assert_eq!(st, 200);
    let (st, _, _) = env
        .graph("DELETE", &format!("{base}/audioRoutingGroups/{gid}"), None)
        .await;
    assert_eq!(st, 204);
    let (st, _, _) = env
        .graph("GET", &format!("{base}/audioRoutingGroups/{gid}"), None)
        .await;
    assert_eq!(st, 404);
    let (st, _, _) = env
        .graph(
            "POST",
            &format!("{base}/audioRoutingGroups"),
            Some(json!({"routingMode": "oneToOne", "sources": ["ghost"], "receivers": [other]})),
        )
        .await;
    assert_eq!(st, 400);
    // Content sharing sessions.
    let (st, _, v) = env
        .graph("GET", &format!("{base}/contentSharingSessions"), None)
        .await;
    assert_eq!((st, v["value"].as_array().map(Vec::len)), (200, Some(0)));
    let (st, _, _) = env
        .graph("GET", &format!("{base}/contentSharingSessions/abc"), None)
        .await;
    assert_eq!(st, 404);
    // Remove a participant.
    let (st, _, _) = env
        .graph("DELETE", &format!("{base}/participants/{other}"), None)
        .await;
    assert_eq!(st, 204);
    let (st, _, _) = env
        .graph("GET", &format!("{base}/participants/{other}"), None)
        .await;
    assert_eq!(st, 404);
    // Invite is refused on a 1:1 call.
    let p2p = env.established_call().await;
    let (st, _, _) = env
        .graph(
            "POST",
            &format!("/communications/calls/{p2p}/participants/invite"),
            Some(json!({"participants": [{"identity": {"user": {"id": "z"}}}]})),
        )
        .await;
    assert_eq!(st, 400);
}

#[tokio::test]
async fn video_calls_list_a_video_stream_per_participant_with_distinct_source_ids() {
    let env = env().await;
    let mut body = env.p2p_body();
    body["requestedModalities"] = json!(["audio", "video"]);
    let (st, _, v) = env.graph("POST", "/communications/calls", Some(body)).await;
    assert_eq!(st, 201, "{v}");
    let items = env
        .bot
        .wait_for(|i| {
            i.iter().any(|x| {
                x["resourceUrl"]
                    .as_str()
                    .unwrap()
                    .ends_with("/participants")
            })
        })
        .await;
    let roster = items
        .iter()
        .find(|x| {
            x["resourceUrl"]
                .as_str()
                .unwrap()
                .ends_with("/participants")
        })
        .unwrap();
    let mut ids = std::collections::HashSet::new();
    for p in roster["resourceData"].as_array().unwrap() {
        let kinds: Vec<&str> = p["mediaStreams"]
            .as_array()
            .unwrap()
            .iter()
            .map(|s| s["mediaType"].as_str().unwrap())
            .collect();
        assert_eq!(kinds, ["audio", "video"]);
        for s in p["mediaStreams"].as_array().unwrap() {
            assert!(
                ids.insert(s["sourceId"].as_str().unwrap().to_owned()),
                "sourceIds are unique"
            );
        }
    }
    assert_eq!(ids.len(), 4);
}
