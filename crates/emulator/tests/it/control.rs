//! The control API under /_emulator: apps, ringing, participant events, hang-up, deliveries, clock, counters.

use serde_json::json;

use crate::common::env;

#[tokio::test]
async fn control_api_drives_and_observes_the_emulator() {
    let env = env().await;
    let (st, v) = env.ctl("GET", "/health", None).await;
    assert_eq!(
        (st, v["clock"].as_str(), v["media"].as_str()),
        (200, Some("system"), Some("none"))
    );
    let (st, app) = env.ctl("POST", "/apps", Some(json!({"client_id": "ctl-app", "roles": ["Calls.JoinGroupCall.All"], "calling_webhook": env.cb}))).await;
    assert_eq!(st, 201, "{app}");
    assert!(app["client_secret"].as_str().unwrap().starts_with("emu~"));
    let (st, _) = env
        .ctl("POST", "/apps", Some(json!({"client_id": "ctl-app"})))
        .await;
    assert_eq!(st, 400, "duplicate client id");
    let (st, _) = env
        .ctl("POST", "/apps", Some(json!({"roles": ["Mail.Read"]})))
        .await;
    assert_eq!(st, 400, "unknown role");
    let (st, v) = env
        .ctl(
            "PATCH",
            "/apps/ctl-app",
            Some(json!({"roles": ["Calls.JoinGroupCall.All", "Calls.AccessMedia.All"]})),
        )
        .await;
    assert_eq!((st, v["roles"].as_array().unwrap().len()), (200, 2));
    let (st, v) = env.ctl("GET", "/apps", None).await;
    assert_eq!((st, v.as_array().unwrap().len()), (200, 2));
    // Ring, answer, then a participant joins and the far side hangs up.
    let (st, v) = env
        .ctl(
            "POST",
            "/calls/incoming",
            Some(json!({"app_id": "ctl-app", "caller_name": "Pat"})),
        )
        .await;
    assert_eq!(st, 201);
    let id = v["call_id"].as_str().unwrap().to_owned();
    let (st, _) = env
        .ctl("POST", "/calls/incoming", Some(json!({"app_id": "nobody"})))
        .await;
    assert_eq!(st, 409);
    let app = env
        .emu
        .apps()
        .into_iter()
        .find(|a| a.client_id == "ctl-app")
        .unwrap();
    let t = env.token_for(&app).await;
    let answer = json!({"callbackUri": env.cb, "mediaConfig": {"@odata.type": "#microsoft.graph.appHostedMediaConfig", "blob": env.blob()}});
    let (st, _, v) = env
        .graph_as(
            &t,
            "POST",
            &format!("/communications/calls/{id}/answer"),
            Some(answer),
        )
        .await;
    assert_eq!(st, 202, "{v}");
    env.bot
        .wait_for(|i| {
            i.iter()
                .any(|x| x["resourceData"]["state"] == "established")
        })
        .await;
    let (st, _) = env
        .ctl(
            "POST",
            &format!("/calls/{id}/participants/dana/actions"),
            Some(json!({"type": "join"})),
        )
        .await;
    assert_eq!(st, 202);
    let (st, _) = env
        .ctl(
            "POST",
            &format!("/calls/{id}/participants/dana/actions"),
            Some(json!({"type": "mute"})),
        )
        .await;
    assert_eq!(st, 202);
    let (st, _) = env
        .ctl(
            "POST",
            &format!("/calls/{id}/participants/ghost/actions"),
            Some(json!({"type": "mute"})),
        )
        .await;
    assert_eq!(st, 404);
    let (st, v) = env.ctl("GET", &format!("/calls/{id}"), None).await;
    assert_eq!(st, 200);
    assert_eq!(v["state"], "established");
    assert_eq!(v["media_status"], "started");
    let dana = v["participants"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["handle"] == "dana")
        .unwrap();
    assert_eq!(dana["graph"]["isMuted"], true);
    let (st, _) = env.ctl("POST", &format!("/calls/{id}/hangup"), None).await;
    assert_eq!(st, 202);
    env.bot
        .wait_for(|i| i.iter().any(|x| x["changeType"] == "deleted"))
        .await;
    let (st, v) = env
        .ctl("GET", &format!("/deliveries?call_id={id}"), None)
        .await;
    assert_eq!(st, 200);
    let recs = v.as_array().unwrap();
    assert!(recs.len() >= 6, "{}", recs.len());
    assert!(
        recs.iter()
            .all(|r| r["outcome"] == "delivered"
                && r["attempts"][0]["latency_ms"].as_f64().is_some())
    );
    assert!(
        recs[0]["summary"][0]
            .as_str()
            .unwrap()
            .starts_with("created /communications/calls/")
    );
    let (st, v) = env.ctl("GET", "/media", None).await;
    assert_eq!(st, 200);
    assert!(v[&id].as_str().unwrap().contains("ended"));
    let (st, _) = env
        .ctl("POST", "/clock/advance", Some(json!({"ms": 10})))
        .await;
    assert_eq!(st, 409, "system clock");
    let (st, v) = env.ctl("GET", "/calls", None).await;
    assert_eq!((st, v.as_array().unwrap().len()), (200, 1));
    let (st, v) = env.ctl("GET", "/counters", None).await;
    assert_eq!(st, 200);
    assert!(v["tokens_issued"].as_u64().unwrap() >= 1);
}

#[tokio::test]
async fn clock_advance_over_http_fires_deadlines() {
    let env = crate::common::env_with(&mediabot_emulator::roles::ALL, true).await;
    let (_, v) = env.ctl("POST", "/calls/incoming", None).await;
    let id = v["call_id"].as_str().unwrap().to_owned();
    let (st, v) = env.ctl("GET", "/health", None).await;
    assert_eq!((st, v["clock"].as_str()), (200, Some("virtual")));
    let (st, _) = env
        .ctl("POST", "/clock/advance", Some(json!({"ms": 14_999})))
        .await;
    assert_eq!(st, 200);
    assert_eq!(
        env.ctl("GET", &format!("/calls/{id}"), None).await.1["state"],
        "incoming"
    );
    let (st, _) = env
        .ctl("POST", "/clock/advance", Some(json!({"ms": 1})))
        .await;
    assert_eq!(st, 200);
    assert_eq!(
        env.ctl("GET", &format!("/calls/{id}"), None).await.1["state"],
        "terminated"
    );
    let (_, c) = env.ctl("GET", "/counters", None).await;
    assert_eq!(c["answer_deadlines_missed"], 1);
}
