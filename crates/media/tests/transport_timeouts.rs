//! Sessions are bounded in time: an offer whose peer never does ICE/DTLS is closed at the
//! handshake timeout, and a connected peer that goes silent is closed at the idle timeout;
//! both leave the server's tables empty.
#![allow(clippy::unwrap_used)]

#[path = "transport_fixtures/common.rs"]
mod transport_common;

use std::time::Duration;

use mediabot_media::transport::client::{WhipClientConfig, WhipClientSession};
use mediabot_media::transport::server::ServerSizes;
use mediabot_media::transport::{CallId, CloseReason, MediaServerConfig};
use transport_common::{Harness, Seen};

const EMPTY: ServerSizes = ServerSizes {
    sessions: 0,
    ufrags: 0,
    addrs: 0,
};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn handshake_that_never_happens_times_out() {
    let h = Harness::start_with(MediaServerConfig {
        handshake_timeout: Duration::from_secs(1),
        ..Default::default()
    })
    .await;
    // A real offer, then the peer vanishes. Its fingerprint is spoiled as well, so that even
    // if its task got ICE through before the drop, DTLS could never complete.
    let blob = h.whip.mint_blob(&CallId::new("ghost")).blob;
    let c = WhipClientSession::connect_blob(
        &blob,
        WhipClientConfig {
            offer_rewrite: Some(|o: String| {
                o.lines()
                    .map(|l| {
                        if l.starts_with("a=fingerprint:") {
                            "a=fingerprint:sha-256 00:00".to_owned()
                        } else {
                            l.to_owned()
                        }
                    })
                    .collect::<Vec<_>>()
                    .join("\r\n")
                    + "\r\n"
            }),
            ..Default::default()
        },
    )
    .await
    .unwrap();
    drop(c); // no ICE, no DTLS from here on
    let seen = h.wait_for(|s: &Seen| !s.closed.is_empty()).await;
    assert_eq!(seen.closed[0].1, CloseReason::HandshakeTimeout);
    assert_eq!(h.media.sizes().await.unwrap(), EMPTY);
    h.media.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn silent_peer_is_closed_for_idleness() {
    let h = Harness::start_with(MediaServerConfig {
        idle_timeout: Duration::from_secs(1),
        ..Default::default()
    })
    .await;
    let blob = h.whip.mint_blob(&CallId::new("quiet")).blob;
    let mut c = WhipClientSession::connect_blob(&blob, WhipClientConfig::default())
        .await
        .unwrap();
    c.wait_connected(Duration::from_secs(15)).await.unwrap();
    drop(c); // the peer vanishes without a DELETE: no media, no keepalives
    let seen = h.wait_for(|s: &Seen| !s.closed.is_empty()).await;
    assert_eq!(seen.closed[0].1, CloseReason::Idle);
    assert_eq!(h.media.sizes().await.unwrap(), EMPTY);
    assert_eq!(h.whip.session_count(), 0, "forgotten by the WHIP state too");
    h.media.shutdown().await;
}
