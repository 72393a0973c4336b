//! Permission checks from the token's roles (403 7504), auth failures (401), tenant mismatch (403 7505), other apps' calls (404).

use mediabot_emulator::roles;
use serde_json::json;

use crate::common::{env, env_with};

#[tokio::test]
async fn each_missing_role_is_a_403_with_graphs_code() {
    let env = env_with(&[roles::JOIN_GROUP_CALL], false).await;
    let denied = |st: u16, v: &serde_json::Value, what: &str| {
        assert_eq!(st, 403, "{what}: {v}");
        assert_eq!(v["error"]["code"], "7504", "{what}");
        assert!(
            v["error"]["message"]
                .as_str()
                .unwrap()
                .starts_with("Insufficient enterprise tenant permissions")
        );
    };
    // App-hosted media needs Calls.AccessMedia.All.
    let (st, _, v) = env
        .graph(
            "POST",
            "/communications/calls",
            Some(env.meeting_body("19:meeting_a@thread.v2")),
        )
        .await;
    denied(st, &v, "app-hosted join without AccessMedia");
    assert!(
        v["error"]["message"]
            .as_str()
            .unwrap()
            .contains(roles::ACCESS_MEDIA)
    );
    // Service-hosted join is allowed with JoinGroupCall alone.
    let mut svc = env.meeting_body("19:meeting_a@thread.v2");
    svc["mediaConfig"] = json!({"@odata.type": "#microsoft.graph.serviceHostedMediaConfig"});
    let (st, _, v) = env
        .graph("POST", "/communications/calls", Some(svc.clone()))
        .await;
    assert_eq!(st, 201, "{v}");
    let id = v["id"].as_str().unwrap().to_owned();
    // Guest join needs JoinGroupCallAsGuest.
    let mut guest = svc.clone();
    guest["source"] = json!({"identity": {"guest": {"displayName": "Guest bot"}}});
    let (st, _, v) = env
        .graph("POST", "/communications/calls", Some(guest))
        .await;
    denied(st, &v, "guest join");
    // 1:1 needs Initiate, group needs InitiateGroupCall.
    let mut p2p = env.p2p_body();
    p2p["mediaConfig"] = json!({"@odata.type": "#microsoft.graph.serviceHostedMediaConfig"});
    let (st, _, v) = env
        .graph("POST", "/communications/calls", Some(p2p.clone()))
        .await;
    denied(st, &v, "p2p");
    let mut group = p2p.clone();
    group["targets"] = json!([p2p["targets"][0], {"identity": {"user": {"id": "u-7"}}}]);
    let (st, _, v) = env
        .graph("POST", "/communications/calls", Some(group))
        .await;
    denied(st, &v, "group");
    // In-call actions.
    env.bot
        .wait_for(|i| {
            i.iter()
                .any(|x| x["resourceData"]["state"] == "established")
        })
        .await;
    let (st, _, v) = env
        .graph(
            "POST",
            &format!("/communications/calls/{id}/subscribeToTone"),
            Some(json!({})),
        )
        .await;
    denied(st, &v, "subscribeToTone");
    let (st, _, v) = env
        .graph(
            "POST",
            &format!("/communications/calls/{id}/participants/invite"),
            Some(json!({"participants": [{"identity": {"user": {"id": "q"}}}]})),
        )
        .await;
    denied(st, &v, "invite");
    let (st, _, v) = env
        .graph(
            "POST",
            &format!("/communications/calls/{id}/transfer"),
            Some(json!({"transferTarget": {"identity": {"user": {"id": "q"}}}})),
        )
        .await;
    denied(st, &v, "transfer");
    let (st, _, v) = env
        .graph(
            "POST",
            &format!("/communications/calls/{id}/recordResponse"),
            Some(json!({})),
        )
        .await;
    denied(st, &v, "recordResponse");
    // Roles changed: a fresh token grants the new set.
    env.emu.set_roles(
        &env.app.client_id,
        &[roles::JOIN_GROUP_CALL, roles::ACCESS_MEDIA],
    );
    let (st, _, v) = env
        .graph(
            "POST",
            &format!("/communications/calls/{id}/subscribeToTone"),
            Some(json!({})),
        )
        .await;
    assert_eq!(st, 200, "{v}");
    let c = env.emu.counters();
    assert!(c.forbidden >= 7, "{c:?}");
}

#[tokio::test]
async fn auth_failures_are_401_and_tenants_and_apps_are_isolated() {
    let env = env().await;
    let url = format!("{}/communications/calls", env.emu.graph_url());
    let r = env
        .http
        .post(&url)
        .json(&env.p2p_body())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
    let v: serde_json::Value = r.json().await.unwrap();
    assert_eq!(v["error"]["code"], "InvalidAuthenticationToken");
    for bad in ["garbage", "a.b.c", "eyJhbGciOiJub25lIn0.e30."] {
        let (st, _, _) = env
            .graph_as(bad, "POST", "/communications/calls", Some(env.p2p_body()))
            .await;
        assert_eq!(st, 401, "{bad}");
    }
    let mut other_tenant = env.p2p_body();
    other_tenant["tenantId"] = json!("11111111-2222-3333-4444-555555555555");
    let (st, _, v) = env
        .graph("POST", "/communications/calls", Some(other_tenant))
        .await;
    assert_eq!((st, v["error"]["code"].as_str()), (403, Some("7505")));
    // Another app cannot see this app's call.
    let id = env.established_call().await;
    let other = env
        .emu
        .register_app(mediabot_emulator::AppConfig::with_roles(roles::ALL))
        .unwrap();
    let t = env.token_for(&other).await;
    let (st, _, _) = env
        .graph_as(&t, "GET", &format!("/communications/calls/{id}"), None)
        .await;
    assert_eq!(st, 404);
}
