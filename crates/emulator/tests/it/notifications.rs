//! Notifications: signed so the bot can verify them with the published JWKS, rotation, retries on 5xx, batching, duplicates, drops, out-of-order establishment.

use mediabot_emulator::{AppConfig, Emulator, NotificationPolicy, Outcome, roles};
use serde_json::Value;

use crate::common::{Bot, Env, env, fast, summarize};
use crate::identity::verify_with_jwks;

async fn env_policy(policy: NotificationPolicy) -> Env {
    let (bot, cb) = Bot::start().await;
    let emu = Emulator::builder()
        .app(AppConfig::with_roles(roles::ALL).calling_webhook(cb.clone()))
        .timing(fast())
        .notifications(policy)
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

async fn jwks(env: &Env) -> Value {
    let md: Value = env
        .http
        .get(env.emu.openid_metadata_url())
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(md["issuer"], "https://graph.microsoft.com");
    env.http
        .get(md["jwks_uri"].as_str().unwrap())
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap()
}

#[tokio::test]
async fn notifications_are_signed_for_the_bot_and_verify_after_rotation() {
    let env = env().await;
    env.established_call().await;
    let keys = jwks(&env).await;
    let got = env.bot.all();
    assert!(!got.is_empty());
    for r in &got {
        let auth = r.authorization.as_deref().expect("Authorization header");
        let token = auth.strip_prefix("Bearer ").expect("Bearer scheme");
        let claims = verify_with_jwks(token, &keys);
        assert_eq!(claims["aud"], env.app.client_id.as_str());
        assert_eq!(claims["tid"], env.app.tenant_id.as_str());
        assert_eq!(claims["iss"], "https://graph.microsoft.com");
        assert_eq!(r.body["@odata.type"], "#microsoft.graph.commsNotifications");
    }
    let old_kid = got[0].authorization.clone().unwrap();
    let new_kid = env.emu.rotate_notification_key().unwrap();
    let n = env.bot.all().len();
    env.established_call().await;
    let keys = jwks(&env).await;
    assert_eq!(
        keys["keys"].as_array().unwrap().len(),
        2,
        "old and new key both published"
    );
    let latest = env.bot.all()[n].authorization.clone().unwrap();
    assert_ne!(latest, old_kid);
    let token = latest.strip_prefix("Bearer ").unwrap();
    verify_with_jwks(token, &keys);
    let header: Value = serde_json::from_slice(
        &base64::Engine::decode(
            &base64::engine::general_purpose::URL_SAFE_NO_PAD,
            token.split('.').next().unwrap(),
        )
        .unwrap(),
    )
    .unwrap();
    assert_eq!(header["kid"], new_kid.as_str());
}

#[tokio::test]
async fn retries_on_5xx_and_records_attempts_and_latency() {
    let env = env_policy(NotificationPolicy {
        retry_backoff_ms: 5,
        ..NotificationPolicy::default()
    })
    .await;
    env.bot.script.lock().unwrap().extend([503, 500]);
    let id = env.established_call().await;
    let recs = env.emu.deliveries(Some(&id));
    let first = &recs[0];
    let statuses: Vec<Option<u16>> = first.attempts.iter().map(|a| a.status).collect();
    assert_eq!(statuses, [Some(503), Some(500), Some(202)]);
    assert_eq!(first.outcome, Outcome::Delivered);
    assert!(first.delivery_latency_ms > 0.0);
    // A 4xx is not retried.
    env.bot.script.lock().unwrap().push(400);
    env.emu.hang_up(&id);
    assert!(
        env.emu
            .wait_for_deliveries(std::time::Duration::from_secs(5), |d| d
                .iter()
                .any(|r| r.outcome == Outcome::Failed))
            .await
    );
    let failed = env
        .emu
        .deliveries(Some(&id))
        .into_iter()
        .find(|r| r.outcome == Outcome::Failed)
        .unwrap();
    assert_eq!(failed.attempts.len(), 1);
}

#[tokio::test]
async fn duplicates_drops_and_out_of_order_establishment() {
    let env = env_policy(NotificationPolicy {
        duplicate_probability: 1.0,
        establish_out_of_order: true,
        ..NotificationPolicy::default()
    })
    .await;
    let (st, _, v) = env
        .graph("POST", "/communications/calls", Some(env.p2p_body()))
        .await;
    assert_eq!(st, 201);
    let id = v["id"].as_str().unwrap().to_owned();
    let items = env.bot.wait(6).await;
    let s: Vec<String> = items.iter().map(summarize).collect();
    // Each POST twice; established before the stale establishing.
    assert_eq!(
        s[..4],
        [
            "updated call established",
            "updated call established",
            "updated call establishing",
            "updated call establishing"
        ]
    );
    assert!(env.emu.deliveries(Some(&id)).iter().any(|r| r.duplicate));

    let env = env_policy(NotificationPolicy {
        drop_probability: 1.0,
        ..NotificationPolicy::default()
    })
    .await;
    let (st, _, v) = env
        .graph("POST", "/communications/calls", Some(env.p2p_body()))
        .await;
    assert_eq!(st, 201);
    let id = v["id"].as_str().unwrap().to_owned();
    assert!(
        env.emu
            .wait_for_deliveries(std::time::Duration::from_secs(5), |d| d.len() >= 3)
            .await
    );
    assert!(
        env.emu
            .deliveries(Some(&id))
            .iter()
            .all(|r| r.outcome == Outcome::Dropped)
    );
    assert!(env.bot.all().is_empty());
}

#[tokio::test]
async fn batching_merges_queued_notifications_into_one_post() {
    let env = env_policy(NotificationPolicy {
        batch: true,
        establish_out_of_order: false,
        ..NotificationPolicy::default()
    })
    .await;
    let id = env.established_call().await;
    // Hang-up produces terminating + terminated in one core step: one POST with two items.
    env.emu.hang_up(&id);
    env.bot
        .wait_for(|i| i.iter().any(|x| x["changeType"] == "deleted"))
        .await;
    let last = env.bot.all().last().cloned().unwrap();
    let n = last.body["value"].as_array().unwrap().len();
    assert_eq!(n, 2, "{}", last.body);
}

#[tokio::test]
async fn reordering_swaps_posts_and_delta_roster_reports_leavers() {
    let env = env_policy(NotificationPolicy {
        reorder_probability: 1.0,
        ..NotificationPolicy::default()
    })
    .await;
    let (st, _, _) = env
        .graph("POST", "/communications/calls", Some(env.p2p_body()))
        .await;
    assert_eq!(st, 201);
    let items = env.bot.wait(2).await;
    let s: Vec<String> = items.iter().map(summarize).collect();
    assert_eq!(
        s[..2],
        ["updated call established", "updated call establishing"],
        "held establishing goes out after established"
    );
    assert!(
        env.emu
            .wait_for_deliveries(std::time::Duration::from_secs(5), |d| d
                .iter()
                .any(|r| r.reordered))
            .await
    );

    // Delta roster: only changes, and leavers as `deleted`.
    let env = crate::common::env().await;
    let (_, v) = env.ctl("POST", "/calls/incoming", None).await;
    let id = v["call_id"].as_str().unwrap().to_owned();
    let answer = serde_json::json!({"callbackUri": env.cb,
        "mediaConfig": {"@odata.type": "#microsoft.graph.serviceHostedMediaConfig"},
        "callOptions": {"@odata.type": "#microsoft.graph.incomingCallOptions", "isDeltaRosterEnabled": true}});
    let (st, _, _) = env
        .graph(
            "POST",
            &format!("/communications/calls/{id}/answer"),
            Some(answer),
        )
        .await;
    assert_eq!(st, 202);
    env.bot
        .wait_for(|i| {
            i.iter()
                .any(|x| x["resourceData"]["state"] == "established")
        })
        .await;
    env.emu
        .participant_action(&id, "caller", mediabot_emulator::Action::Leave)
        .unwrap();
    let items = env
        .bot
        .wait_for(|i| {
            i.iter().any(|x| {
                x["changeType"] == "deleted"
                    && x["resourceUrl"]
                        .as_str()
                        .unwrap()
                        .ends_with("/participants")
            })
        })
        .await;
    let gone = items.iter().find(|x| x["changeType"] == "deleted").unwrap();
    assert_eq!(gone["resourceData"].as_array().unwrap().len(), 1);
}

#[tokio::test]
async fn slow_response_fault_delays_graph_answers() {
    let env = env().await;
    env.emu
        .inject_faults(&mediabot_emulator::scenario::FaultSpec {
            slow: vec![mediabot_emulator::scenario::SlowSpec {
                at: 0,
                duration: 60_000,
                delay_ms: 300,
            }],
            ..Default::default()
        });
    let t = env.token().await;
    let t0 = std::time::Instant::now();
    let (st, _, _) = env
        .graph_as(&t, "POST", "/communications/calls", Some(env.p2p_body()))
        .await;
    assert_eq!(st, 201);
    assert!(t0.elapsed() >= std::time::Duration::from_millis(300));
}
