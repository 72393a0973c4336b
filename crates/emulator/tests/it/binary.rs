//! The `mediabot-emulator` binary starts, prints where it listens, loads a scenario and serves.

use std::io::{BufRead as _, BufReader};
use std::process::{Command, Stdio};

#[tokio::test]
async fn binary_serves_with_a_scenario() {
    let scenario = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/scenarios/standup-meeting.toml"
    );
    let mut child = Command::new(env!("CARGO_BIN_EXE_mediabot-emulator"))
        .args([
            "--listen",
            "127.0.0.1:0",
            "--client-id",
            "bin-app",
            "--client-secret",
            "s3cret",
            "--scenario",
            scenario,
        ])
        .env("RUST_LOG", "warn")
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let lines = tokio::task::spawn_blocking(move || {
        let mut out = Vec::new();
        for line in BufReader::new(stdout).lines() {
            let line = line.unwrap();
            let done = line.starts_with("control");
            out.push(line);
            if done {
                break;
            }
        }
        out
    })
    .await
    .unwrap();
    let find = |prefix: &str| {
        lines
            .iter()
            .find(|l| l.starts_with(prefix))
            .and_then(|l| l.split_whitespace().last())
            .unwrap()
            .to_owned()
    };
    assert!(
        lines[0].contains("client_id=bin-app") && lines[0].contains("secret=s3cret"),
        "{lines:?}"
    );
    let token_url = find("token");
    let control = find("control");
    let http = reqwest::Client::new();
    let r = http
        .post(&token_url)
        .form(&[
            ("grant_type", "client_credentials"),
            ("client_id", "bin-app"),
            ("client_secret", "s3cret"),
            ("scope", "https://graph.microsoft.com/.default"),
        ])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let base = control.trim_end_matches("/_emulator/calls");
    let v: serde_json::Value = http
        .get(format!("{base}/_emulator/scenarios"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(v[0]["join_meeting_id"], "123456789012");
    child.kill().unwrap();
    child.wait().unwrap();
}
