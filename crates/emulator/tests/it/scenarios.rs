//! Scenario playback on a virtual clock: roster sequences, lobby, tones, meeting end, answer deadlines, keepAlive, faults, the media hook.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use mediabot_emulator::media::{MediaEvent, MediaPeer, MediaPeerFactory, MediaSession};
use mediabot_emulator::{AppConfig, Emulator, Scenario, roles};
use serde_json::{Value, json};

use crate::common::{Bot, Env, env_with};

#[derive(Clone, Default)]
struct Recorder {
    sessions: Arc<Mutex<Vec<MediaSession>>>,
    events: Arc<Mutex<Vec<MediaEvent>>>,
}
struct RecPeer(Arc<Mutex<Vec<MediaEvent>>>);
impl MediaPeer for RecPeer {
    fn handle_event(&mut self, e: MediaEvent) {
        self.0.lock().unwrap().push(e);
    }
    fn status(&self) -> String {
        "recording".into()
    }
}
impl MediaPeerFactory for Recorder {
    fn start(&self, s: MediaSession) -> Box<dyn MediaPeer> {
        self.sessions.lock().unwrap().push(s);
        Box::new(RecPeer(self.events.clone()))
    }
    fn name(&self) -> &'static str {
        "recorder"
    }
}

async fn virtual_env(media: Recorder) -> Env {
    let (bot, cb) = Bot::start().await;
    let emu = Emulator::builder()
        .app(AppConfig::with_roles(roles::ALL).calling_webhook(cb.clone()))
        .virtual_clock()
        .media(Arc::new(media))
        .start("127.0.0.1:0")
        .await
        .unwrap();
    let app = emu.apps()[0].clone();
    Env {
        emu,
        bot,
        cb,
        app,
        http: reqwest::Client::new(),
    }
}

fn roster_names(i: &Value) -> Vec<String> {
    let mut v: Vec<String> = i["resourceData"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|p| p["info"]["identity"]["application"].is_null())
        .map(|p| {
            let id = &p["info"]["identity"];
            let who = id["user"]["displayName"]
                .as_str()
                .or(id["guest"]["displayName"].as_str())
                .unwrap()
                .to_owned();
            let mut s = who;
            if p["isInLobby"] == true {
                s.push_str("(lobby)");
            }
            if p["isMuted"] == true {
                s.push_str("(muted)");
            }
            s
        })
        .collect();
    v.sort();
    v
}

#[tokio::test]
async fn meeting_scenario_plays_the_documented_sequence() {
    let media = Recorder::default();
    let env = virtual_env(media.clone()).await;
    let text = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/scenarios/standup-meeting.toml"
    ))
    .unwrap();
    // The scenario's network impairment travels with the media session.
    let text = format!("{text}\n[network]\nloss = 0.02\njitter_ms = 30\nseed = 7\n");
    let r = env
        .http
        .post(format!("{}/_emulator/scenarios", env.emu.base_url()))
        .header("content-type", "application/toml")
        .body(text)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201);
    let info: Value = r.json().await.unwrap();
    assert!(
        info["join_url"]
            .as_str()
            .unwrap()
            .starts_with("https://teams.microsoft.com/l/meetup-join/19%3Ameeting_")
    );
    // Join by joinMeetingId + passcode.
    let mut body = env.meeting_body("unused");
    body.as_object_mut().unwrap().remove("chatInfo");
    body["meetingInfo"] = json!({"@odata.type": "#microsoft.graph.joinMeetingIdMeetingInfo", "joinMeetingId": "123456789012", "passcode": "standup"});
    let (st, _, v) = env.graph("POST", "/communications/calls", Some(body)).await;
    assert_eq!(st, 201, "{v}");
    let id = v["id"].as_str().unwrap().to_owned();
    env.bot.wait(1).await; // establishing at t=0
    let step = |ms: u64| env.emu.advance(Duration::from_millis(ms)).unwrap();
    step(300); // established; alice joins at +0
    let items = env.bot.wait(4).await;
    assert_eq!(items[1]["resourceData"]["state"], "established");
    assert_eq!(
        roster_names(&items[2]),
        Vec::<String>::new(),
        "bot alone at establishment"
    );
    assert_eq!(roster_names(&items[3]), ["Alice Example"]);
    step(2000);
    let items = env.bot.wait(5).await;
    assert_eq!(roster_names(&items[4]), ["Alice Example", "Bob Example"]);
    step(3000); // guest at 5 s, in the lobby
    let items = env.bot.wait(6).await;
    assert_eq!(
        roster_names(&items[5]),
        ["Alice Example", "Bob Example", "Visiting Guest(lobby)"]
    );
    step(10_000); // admitted at 15 s
    let items = env.bot.wait(7).await;
    assert_eq!(
        roster_names(&items[6]),
        ["Alice Example", "Bob Example", "Visiting Guest"]
    );
    // Tones only after subscribeToTone.
    let (st, _, _) = env
        .graph(
            "POST",
            &format!("/communications/calls/{id}/subscribeToTone"),
            Some(json!({})),
        )
        .await;
    assert_eq!(st, 200);
    step(15_000); // tone at 30 s
    let items = env.bot.wait(8).await;
    assert_eq!(items[7]["resourceData"]["toneInfo"]["tone"], "tone5");
    step(10_000); // bob mutes at 40 s
    let items = env.bot.wait(9).await;
    assert_eq!(
        roster_names(&items[8]),
        ["Alice Example", "Bob Example(muted)", "Visiting Guest"]
    );
    step(10_000); // unmutes at 50 s
    step(40_000); // guest leaves at 90 s
    let items = env.bot.wait(11).await;
    assert_eq!(roster_names(&items[10]), ["Alice Example", "Bob Example"]);
    step(30_000); // meeting ends at 120 s
    let items = env.bot.wait(13).await;
    assert_eq!(items[11]["resourceData"]["state"], "terminating");
    assert_eq!(items[12]["changeType"], "deleted");
    assert_eq!(
        items[12]["resourceData"]["resultInfo"]["message"],
        "The meeting has ended."
    );
    // Media hook: one session with the blob, source ids and the speech schedule.
    let sessions = media.sessions.lock().unwrap().clone();
    assert_eq!(sessions.len(), 1);
    let s = &sessions[0];
    assert_eq!(s.blob.token, "t");
    assert_eq!(s.speech.len(), 3);
    let net = s.network.as_ref().unwrap();
    assert_eq!((net.loss, net.jitter_ms, net.seed), (0.02, 30, 7));
    assert_eq!(net.burst_exit, 1.0, "unset fields keep their defaults");
    let alice_sid = s
        .speech
        .iter()
        .find(|seg| seg.handle == "alice")
        .unwrap()
        .source_id;
    assert!(s.speech.iter().any(|seg| seg.handle == "alice"
        && seg.source_id == alice_sid
        && seg.start_ms == 1000
        && seg.duration_ms == 6000));
    let events = media.events.lock().unwrap().clone();
    assert!(events.iter().any(|e| matches!(e, MediaEvent::Tone { .. })));
    assert!(events.iter().any(|e| matches!(e, MediaEvent::Roster(r) if r.iter().any(|p| p.handle == "alice" && p.source_id == alice_sid))));
    assert_eq!(events.last(), Some(&MediaEvent::Ended));
    // Roster sourceIds are the SSRCs the media side was given.
    let any_roster = items[4]["resourceData"].as_array().unwrap();
    let alice = any_roster
        .iter()
        .find(|p| p["info"]["identity"]["user"]["displayName"] == "Alice Example")
        .unwrap();
    assert_eq!(alice["mediaStreams"][0]["sourceId"], alice_sid.to_string());
}

#[tokio::test]
async fn wrong_passcode_ends_the_call() {
    let env = virtual_env(Recorder::default()).await;
    env.emu
        .start_scenario(
            Scenario::from_toml("[meeting]\njoin_meeting_id='42'\npasscode='right'\n", None)
                .unwrap(),
        )
        .unwrap();
    let mut body = env.meeting_body("x");
    body.as_object_mut().unwrap().remove("chatInfo");
    body["meetingInfo"] = json!({"@odata.type": "#microsoft.graph.joinMeetingIdMeetingInfo", "joinMeetingId": "42", "passcode": "wrong"});
    let (st, _, _) = env.graph("POST", "/communications/calls", Some(body)).await;
    assert_eq!(st, 201);
    env.emu.advance(Duration::from_millis(300)).unwrap();
    let items = env
        .bot
        .wait_for(|i| i.iter().any(|x| x["changeType"] == "deleted"))
        .await;
    assert_eq!(
        items.last().unwrap()["resourceData"]["resultInfo"]["code"],
        403
    );
}

#[tokio::test]
async fn answer_deadlines_are_15s_and_5s_for_policy_recording() {
    let env = virtual_env(Recorder::default()).await;
    let normal = env.emu.ring(Default::default()).unwrap();
    let text = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/scenarios/compliance-recording.toml"
    ))
    .unwrap();
    let info = env
        .emu
        .start_scenario(Scenario::from_toml(&text, None).unwrap())
        .unwrap();
    let policy = info["incoming_call_id"].as_str().unwrap().to_owned();
    let items = env.bot.wait(2).await;
    let created = items
        .iter()
        .find(|i| i["resourceUrl"].as_str().unwrap().ends_with(&policy))
        .unwrap();
    assert!(created["resourceData"]["incomingContext"]["observedParticipantId"].is_string());
    env.emu.advance(Duration::from_millis(4999)).unwrap();
    assert_eq!(env.emu.call(&policy).unwrap()["state"], "incoming");
    env.emu.advance(Duration::from_millis(1)).unwrap();
    assert_eq!(env.emu.call(&policy).unwrap()["state"], "terminated");
    assert_eq!(env.emu.call(&normal).unwrap()["state"], "incoming");
    env.emu.advance(Duration::from_millis(10_000)).unwrap();
    assert_eq!(env.emu.call(&normal).unwrap()["state"], "terminated");
    assert_eq!(env.emu.counters().answer_deadlines_missed, 2);
    let items = env.bot.wait(4).await;
    let ends: Vec<&Value> = items
        .iter()
        .filter(|i| i["changeType"] == "deleted")
        .collect();
    assert_eq!(ends[0]["resourceData"]["resultInfo"]["code"], 408);
    // Answering after the deadline: the call is gone.
    let answer = json!({"callbackUri": env.cb, "mediaConfig": {"@odata.type": "#microsoft.graph.serviceHostedMediaConfig"}});
    let (st, _, _) = env
        .graph(
            "POST",
            &format!("/communications/calls/{normal}/answer"),
            Some(answer),
        )
        .await;
    assert_eq!(st, 404);
}

#[tokio::test]
async fn keepalive_rule_ends_silent_calls_after_45_minutes() {
    let env = virtual_env(Recorder::default()).await;
    let (st, _, v) = env
        .graph("POST", "/communications/calls", Some(env.p2p_body()))
        .await;
    assert_eq!(st, 201);
    let id = v["id"].as_str().unwrap().to_owned();
    let min = |m: u64| Duration::from_secs(60 * m);
    env.emu.advance(Duration::from_millis(300)).unwrap();
    env.emu.advance(min(44)).unwrap();
    let (st, _, _) = env
        .graph(
            "POST",
            &format!("/communications/calls/{id}/keepAlive"),
            None,
        )
        .await;
    assert_eq!(st, 200);
    env.emu.advance(min(44)).unwrap();
    assert_eq!(
        env.emu.call(&id).unwrap()["state"],
        "established",
        "kept alive"
    );
    env.emu.advance(min(2)).unwrap();
    assert_eq!(env.emu.call(&id).unwrap()["state"], "terminated");
    assert_eq!(env.emu.counters().keepalive_timeouts, 1);
    let (st, _, _) = env
        .graph(
            "POST",
            &format!("/communications/calls/{id}/keepAlive"),
            None,
        )
        .await;
    assert_eq!(st, 404);
}

#[tokio::test]
async fn fault_windows_throttle_then_fail_then_recover() {
    let env = env_with(&roles::ALL, true).await;
    let text = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/scenarios/flaky-network.toml"
    ))
    .unwrap();
    let mut sc = Scenario::from_toml(&text, None).unwrap();
    sc.fault.slow.clear(); // keep the test fast; slowness is covered by the window logic
    env.emu.start_scenario(sc).unwrap();
    let (st, h, v) = env
        .graph("POST", "/communications/calls", Some(env.p2p_body()))
        .await;
    assert_eq!(st, 429);
    assert_eq!(h.get("retry-after").unwrap(), "2");
    assert_eq!(v["error"]["code"], "TooManyRequests");
    env.emu.advance(Duration::from_secs(3)).unwrap();
    let (st, h, _) = env
        .graph("POST", "/communications/calls", Some(env.p2p_body()))
        .await;
    assert_eq!(st, 503);
    assert!(h.get("retry-after").is_some());
    let (st, _, _) = env
        .graph("POST", "/communications/calls", Some(env.p2p_body()))
        .await;
    assert_eq!(st, 503);
    let (st, _, _) = env
        .graph("POST", "/communications/calls", Some(env.p2p_body()))
        .await;
    assert_eq!(st, 201);
    assert_eq!(env.emu.counters().injected_faults, 3);
}

#[tokio::test]
async fn deadlines_also_fire_on_the_system_clock() {
    let (bot, cb) = Bot::start().await;
    let emu = Emulator::builder()
        .app(AppConfig::with_roles(roles::ALL).calling_webhook(cb.clone()))
        .timing(mediabot_emulator::Timing {
            answer_deadline_ms: 150,
            ..crate::common::fast()
        })
        .start("127.0.0.1:0")
        .await
        .unwrap();
    let id = emu.ring(Default::default()).unwrap();
    let items = bot
        .wait_for(|i| i.iter().any(|x| x["changeType"] == "deleted"))
        .await;
    let end = items.iter().find(|x| x["changeType"] == "deleted").unwrap();
    assert!(end["resourceUrl"].as_str().unwrap().ends_with(&id));
    assert_eq!(end["resourceData"]["resultInfo"]["code"], 408);
    assert_eq!(emu.counters().answer_deadlines_missed, 1);
    assert!(
        emu.advance(Duration::from_secs(1)).is_err(),
        "advance needs a virtual clock"
    );
}
