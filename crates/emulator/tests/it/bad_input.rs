//! Bad input never crashes the emulator: malformed bodies, wrong types, missing fields, huge bodies, odd paths and methods all get Graph-style 4xx.

use serde_json::{Value, json};

use crate::common::env;

#[tokio::test]
async fn malformed_requests_get_graph_errors_not_crashes() {
    let env = env().await;
    let t = env.token().await;
    let url = format!("{}/communications/calls", env.emu.graph_url());
    let send = |body: Vec<u8>, ct: &'static str| {
        let http = env.http.clone();
        let url = url.clone();
        let t = t.clone();
        async move {
            let r = http
                .post(url)
                .bearer_auth(t)
                .header("content-type", ct)
                .body(body)
                .send()
                .await
                .unwrap();
            let st = r.status().as_u16();
            (st, r.json::<Value>().await.unwrap_or(Value::Null))
        }
    };
    let (st, v) = send(b"{not json".to_vec(), "application/json").await;
    assert_eq!((st, v["error"]["code"].as_str()), (400, Some("BadRequest")));
    let (st, _) = send(b"[1,2]".to_vec(), "application/json").await;
    assert_eq!(st, 400);
    let (st, _) = send(
        b"callbackUri=x".to_vec(),
        "application/x-www-form-urlencoded",
    )
    .await;
    assert_eq!(st, 415);
    let (st, _) = send(vec![b' '; 2 * 1024 * 1024], "application/json").await;
    assert_eq!(st, 413);
    let (st, _) = send(vec![0xff, 0xfe, 0x00], "application/json").await;
    assert_eq!(st, 400);

    // Every required field removed, and every field given the wrong type: 4xx, never 5xx.
    let good = env.p2p_body();
    let mut checked = 0;
    for key in good.as_object().unwrap().keys() {
        let mut b = good.clone();
        b.as_object_mut().unwrap().remove(key);
        let (st, _, v) = env
            .graph_as(&t, "POST", "/communications/calls", Some(b))
            .await;
        if [
            "callbackUri",
            "mediaConfig",
            "requestedModalities",
            "targets",
        ]
        .contains(&key.as_str())
        {
            assert_eq!(st, 400, "without {key}: {v}");
            assert!(v["error"]["message"].is_string());
        } else {
            assert!(st < 500, "without {key}: {st}");
        }
        for wrong in [
            json!(1),
            json!(null),
            json!([]),
            json!({}),
            json!("x"),
            json!(true),
        ] {
            let mut b = good.clone();
            b[key] = wrong.clone();
            let (st, _, _) = env
                .graph_as(&t, "POST", "/communications/calls", Some(b))
                .await;
            assert!(st < 500, "{key} = {wrong}: {st}");
            checked += 1;
        }
    }
    assert!(checked >= 30);
    // Specific Graph rules.
    let mut b = good.clone();
    b["callbackUri"] = json!("not a url");
    assert_eq!(
        env.graph_as(&t, "POST", "/communications/calls", Some(b))
            .await
            .0,
        400
    );
    let mut b = good.clone();
    b["mediaConfig"] = json!({"@odata.type": "#microsoft.graph.appHostedMediaConfig"});
    assert_eq!(
        env.graph_as(&t, "POST", "/communications/calls", Some(b))
            .await
            .0,
        400,
        "blob required"
    );
    let mut b = good.clone();
    b["requestedModalities"] = json!(["smell"]);
    assert_eq!(
        env.graph_as(&t, "POST", "/communications/calls", Some(b))
            .await
            .0,
        400
    );
    let mut b = env.meeting_body("19:m@thread.v2");
    b["targets"] = good["targets"].clone();
    assert_eq!(
        env.graph_as(&t, "POST", "/communications/calls", Some(b))
            .await
            .0,
        400,
        "targets + meetingInfo"
    );
    let mut b = env.meeting_body("19:m@thread.v2");
    b.as_object_mut().unwrap().remove("chatInfo");
    assert_eq!(
        env.graph_as(&t, "POST", "/communications/calls", Some(b))
            .await
            .0,
        400,
        "organizerMeetingInfo needs chatInfo"
    );

    // Actions with bad bodies on a live call.
    let id = env.established_call().await;
    let base = format!("/communications/calls/{id}");
    for (path, body) in [
        ("updateRecordingStatus", json!({"status": "paused"})),
        ("updateRecordingStatus", json!({})),
        ("sendDtmfTones", json!({"tones": ["tone42"]})),
        ("sendDtmfTones", json!({"tones": []})),
        ("changeScreenSharingRole", json!({"role": "boss"})),
        ("mute", json!({"clientContext": "x".repeat(300)})),
        ("transfer", json!({})),
        ("transfer", json!({"transferTarget": {"identity": {}}})),
        ("redirect", json!({"targets": []})),
        ("reject", json!({"reason": "tired"})),
        ("noSuchAction", json!({})),
    ] {
        let (st, _, v) = env
            .graph_as(&t, "POST", &format!("{base}/{path}"), Some(body.clone()))
            .await;
        assert!((400..500).contains(&st), "{path} {body}: {st} {v}");
        assert!(v["error"]["code"].is_string(), "{path}: Graph error body");
    }
    let (st, _, _) = env.graph_as(&t, "PUT", &base, Some(json!({}))).await;
    assert_eq!(st, 405);
    let (st, _, _) = env.graph_as(&t, "GET", "/me/events", None).await;
    assert_eq!(st, 400);
    let (st, _, _) = env
        .graph_as(
            &t,
            "GET",
            "/communications/calls/00000000-0000-0000-0000-000000000000",
            None,
        )
        .await;
    assert_eq!(st, 404);
    // Control API refuses bad JSON politely.
    for (m, p) in [
        ("POST", "/apps"),
        ("POST", "/calls/incoming"),
        ("POST", "/faults"),
        ("POST", "/keys/rotate"),
        ("POST", "/clock/advance"),
    ] {
        let r = env
            .http
            .request(
                m.parse().unwrap(),
                format!("{}/_emulator{p}", env.emu.base_url()),
            )
            .body("{{{")
            .send()
            .await
            .unwrap();
        assert!(r.status().is_client_error(), "{p}: {}", r.status());
    }
    let (st, _) = env.ctl("POST", "/scenarios", None).await;
    assert!(st < 500);
    let r = env
        .http
        .post(format!("{}/_emulator/scenarios", env.emu.base_url()))
        .body("[[participant]]\nhandle=1")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
    // Still alive and serving.
    let (st, _, _) = env.graph_as(&t, "GET", &base, None).await;
    assert_eq!(st, 200);
    let c = env.emu.counters();
    assert!(c.bad_requests >= 20, "{c:?}");
}

#[tokio::test]
async fn https_callbacks_can_be_required_as_graph_does() {
    let (bot, cb) = crate::common::Bot::start().await;
    let emu = mediabot_emulator::Emulator::builder()
        .app(mediabot_emulator::AppConfig::with_roles(
            mediabot_emulator::roles::ALL,
        ))
        .require_https_callbacks(true)
        .start("127.0.0.1:0")
        .await
        .unwrap();
    let app = emu.apps()[0].clone();
    let env = crate::common::Env {
        emu,
        bot,
        cb,
        app,
        http: reqwest::Client::new(),
    };
    let (st, _, v) = env
        .graph("POST", "/communications/calls", Some(env.p2p_body()))
        .await;
    assert_eq!(st, 400);
    assert!(v["error"]["message"].as_str().unwrap().contains("HTTPS"));
    let mut b = env.p2p_body();
    b["callbackUri"] = json!("https://bot.example/api/calling");
    let (st, _, _) = env.graph("POST", "/communications/calls", Some(b)).await;
    assert_eq!(st, 201);
}

#[test]
fn the_handle_can_be_shared_across_tasks() {
    fn send_sync<T: Send + Sync>() {}
    send_sync::<mediabot_emulator::EmulatorHandle>();
}
