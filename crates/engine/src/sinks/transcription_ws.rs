//! WebSocket driver of the transcription feed: connects, sends, reconnects with backoff.
//!
//! The sink task feeds a [`FeedHandle`] (a short lock, never held across I/O); this driver drains
//! it to the socket. While the socket is down, the feed's bounded backlog holds audio; what
//! overflows is reported to the consumer as a `gap` once it is back, so a recognizer always knows
//! what it missed. On every reconnection the consumer first receives `session.start` with
//! `resumed: true` and the speakers known so far.

use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use futures::{SinkExt, StreamExt};
use tokio::sync::{Notify, watch};
use tokio_tungstenite::tungstenite::Message;

use super::transcription::{FeedMessage, FeedState};

/// Shared access to a call's [`FeedState`] for the producer and the driver.
#[derive(Clone, Debug)]
pub struct FeedHandle {
    state: Arc<Mutex<FeedState>>,
    notify: Arc<Notify>,
}

impl FeedHandle {
    /// Wraps a feed.
    pub fn new(state: FeedState) -> Self {
        Self {
            state: Arc::new(Mutex::new(state)),
            notify: Arc::new(Notify::new()),
        }
    }

    /// Runs `f` on the feed and wakes the driver.
    pub fn update<R>(&self, f: impl FnOnce(&mut FeedState) -> R) -> R {
        let r = f(&mut self.lock());
        self.notify.notify_one();
        r
    }

    /// Runs `f` on the feed without waking the driver; the caller calls [`FeedHandle::wake`]
    /// once after a batch (the sink thread feeds every frame of a drain, then wakes once).
    pub fn update_quiet<R>(&self, f: impl FnOnce(&mut FeedState) -> R) -> R {
        f(&mut self.lock())
    }

    /// Wakes the driver after [`FeedHandle::update_quiet`] calls.
    pub fn wake(&self) {
        self.notify.notify_one();
    }

    fn lock(&self) -> MutexGuard<'_, FeedState> {
        // A panic while holding this lock cannot leave FeedState half-updated in a way that
        // matters more than losing the feed; keep going with the inner value.
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// Settings of the WebSocket driver.
#[derive(Clone, Debug)]
pub struct WsFeedConfig {
    /// `ws://` or `wss://` URL; the call id is appended as `?callId=`.
    pub url: String,
    /// Bound on connecting (TCP + TLS + upgrade).
    pub connect_timeout: Duration,
    /// Bound on one send.
    pub send_timeout: Duration,
    /// First reconnect delay; doubles up to `max_backoff`.
    pub min_backoff: Duration,
    /// Largest reconnect delay.
    pub max_backoff: Duration,
}

impl WsFeedConfig {
    /// Defaults for `url`: 5 s connect and send bounds, backoff 250 ms to 10 s.
    pub fn new(url: impl Into<String>) -> Self {
        Self {
            url: url.into(),
            connect_timeout: Duration::from_secs(5),
            send_timeout: Duration::from_secs(5),
            min_backoff: Duration::from_millis(250),
            max_backoff: Duration::from_secs(10),
        }
    }
}

/// What the driver did, for metrics and the call summary.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct WsFeedStats {
    /// Successful connections (1 = never reconnected).
    pub connections: u64,
    /// Failed connection attempts.
    pub connect_failures: u64,
    /// Messages sent.
    pub messages_sent: u64,
}

/// Runs until `stop` turns true and the feed (ending with `session.stop`) has been delivered, or
/// until `stop` is true and the consumer cannot be reached within one more attempt.
pub async fn run(
    cfg: WsFeedConfig,
    feed: FeedHandle,
    mut stop: watch::Receiver<bool>,
) -> WsFeedStats {
    let mut stats = WsFeedStats::default();
    let mut backoff = cfg.min_backoff;
    loop {
        let connect = tokio::time::timeout(
            cfg.connect_timeout,
            tokio_tungstenite::connect_async(cfg.url.as_str()),
        );
        let mut ws = match connect.await {
            Ok(Ok((ws, _))) => ws,
            Ok(Err(e)) => {
                tracing::debug!(url = %cfg.url, error = %e, "transcription feed: connect failed");
                stats.connect_failures += 1;
                if *stop.borrow() {
                    return stats;
                }
                tokio::select! {
                    _ = tokio::time::sleep(backoff) => {}
                    _ = stop.changed() => {}
                }
                backoff = (backoff * 2).min(cfg.max_backoff);
                continue;
            }
            Err(_) => {
                stats.connect_failures += 1;
                if *stop.borrow() {
                    return stats;
                }
                backoff = (backoff * 2).min(cfg.max_backoff);
                continue;
            }
        };
        backoff = cfg.min_backoff;
        stats.connections += 1;
        if stats.connections > 1 {
            let resume = feed.lock().resume_messages();
            let mut ok = true;
            for m in resume {
                if send(&mut ws, &cfg, &m).await.is_err() {
                    ok = false;
                    break;
                }
                stats.messages_sent += 1;
            }
            if !ok {
                continue;
            }
        }
        // Connected: drain, then wait for more or for stop.
        let broken = loop {
            let next = feed.lock().poll_message();
            match next {
                Some(m) => {
                    if send(&mut ws, &cfg, &m).await.is_err() {
                        feed.lock().unpoll(m);
                        break true;
                    }
                    stats.messages_sent += 1;
                }
                None => {
                    if *stop.borrow() {
                        let _ = ws.close(None).await;
                        return stats;
                    }
                    tokio::select! {
                        _ = feed.notify.notified() => {}
                        _ = stop.changed() => {}
                        // The consumer may close on us while we idle.
                        msg = ws.next() => {
                            // Anything but a data/ping message means the consumer is gone.
                            if !matches!(msg, Some(Ok(Message::Text(_) | Message::Binary(_) | Message::Ping(_) | Message::Pong(_)))) {
                                break true;
                            }
                        }
                    }
                }
            }
        };
        if broken {
            tracing::info!(url = %cfg.url, "transcription feed: connection lost, reconnecting");
        }
    }
}

async fn send<S>(ws: &mut S, cfg: &WsFeedConfig, m: &FeedMessage) -> Result<(), ()>
where
    S: SinkExt<Message> + Unpin,
{
    let msg = match m {
        FeedMessage::Text(t) => Message::text(t.clone()),
        FeedMessage::Audio(a) => Message::binary(a.clone()),
    };
    match tokio::time::timeout(cfg.send_timeout, ws.send(msg)).await {
        Ok(Ok(())) => Ok(()),
        _ => Err(()),
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::super::transcription::{SpeakerInfo, VadConfig, parse_audio_header};
    use super::*;
    use tokio::net::TcpListener;

    /// A consumer that records messages. It closes the first connection as soon as it has seen
    /// the first audio frame, and reports on `accepted` each connection it accepts.
    async fn consumer(
        listener: TcpListener,
        accepted: tokio::sync::mpsc::Sender<usize>,
    ) -> Vec<Vec<Message>> {
        let mut conns = Vec::new();
        loop {
            let Ok(Ok((tcp, _))) =
                tokio::time::timeout(Duration::from_secs(10), listener.accept()).await
            else {
                return conns;
            };
            let mut ws = tokio_tungstenite::accept_async(tcp).await.unwrap();
            accepted.send(conns.len() + 1).await.unwrap();
            let mut got = Vec::new();
            let first = conns.is_empty();
            while let Some(Ok(m)) = ws.next().await {
                let stop = matches!(&m, Message::Text(t) if t.contains("session.stop"));
                let audio = matches!(&m, Message::Binary(_));
                got.push(m);
                if first && audio {
                    let _ = ws.close(None).await;
                    break;
                }
                if stop {
                    conns.push(got);
                    return conns;
                }
            }
            conns.push(got);
        }
    }

    #[tokio::test]
    async fn reconnects_resumes_and_delivers_everything_in_order() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("ws://{}", listener.local_addr().unwrap());
        let (acc_tx, mut acc_rx) = tokio::sync::mpsc::channel(4);
        let server = tokio::spawn(consumer(listener, acc_tx));

        let feed = FeedHandle::new(FeedState::new("call-1", VadConfig::default(), 60, 8));
        feed.update(|f| {
            f.handle_speaker_info(
                11,
                &SpeakerInfo {
                    display_name: Some("Bo".into()),
                    ..Default::default()
                },
            )
        });
        let (stop_tx, stop_rx) = watch::channel(false);
        let driver = tokio::spawn(run(WsFeedConfig::new(url), feed.clone(), stop_rx));
        assert_eq!(acc_rx.recv().await, Some(1));
        feed.update(|f| f.handle_frame(11, 0, &[100; 320]));
        // The consumer closes after frame 0; the idle driver notices and reconnects.
        assert_eq!(
            tokio::time::timeout(Duration::from_secs(10), acc_rx.recv())
                .await
                .unwrap(),
            Some(2)
        );
        for i in 1..20u64 {
            feed.update(|f| f.handle_frame(11, i * 320, &[100; 320]));
            tokio::task::yield_now().await;
        }
        feed.update(|f| f.handle_stop("test"));
        stop_tx.send(true).unwrap();
        let stats = tokio::time::timeout(Duration::from_secs(20), driver)
            .await
            .unwrap()
            .unwrap();
        let conns = server.await.unwrap();
        assert_eq!(stats.connections, 2, "{stats:?}");
        let second = &conns[1];
        match &second[0] {
            Message::Text(t) => assert!(t.contains("\"resumed\":true"), "{t}"),
            m => panic!("{m:?}"),
        }
        match &second[1] {
            Message::Text(t) => assert!(t.contains("speaker.add") && t.contains("Bo"), "{t}"),
            m => panic!("{m:?}"),
        }
        // Every audio frame arrives exactly once across the two connections, in order.
        let positions: Vec<u64> = conns
            .iter()
            .flatten()
            .filter_map(|m| match m {
                Message::Binary(b) => parse_audio_header(b).map(|h| h.1),
                _ => None,
            })
            .collect();
        let want: Vec<u64> = (0..20).map(|i| i * 320).collect();
        assert_eq!(positions, want);
    }

    #[tokio::test]
    async fn backlog_survives_an_absent_consumer_and_reports_what_overflowed() {
        // A free port with nobody listening yet.
        let port = TcpListener::bind("127.0.0.1:0")
            .await
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let feed = FeedHandle::new(FeedState::new("call-2", VadConfig::default(), 1, 8));
        let (stop_tx, stop_rx) = watch::channel(false);
        let mut cfg = WsFeedConfig::new(format!("ws://127.0.0.1:{port}"));
        cfg.max_backoff = Duration::from_millis(100);
        let driver = tokio::spawn(run(cfg, feed.clone(), stop_rx));
        for i in 0..80u64 {
            feed.update(|f| f.handle_frame(5, i * 320, &[0; 320]));
        }
        feed.update(|f| f.handle_stop("test"));
        let listener = TcpListener::bind(("127.0.0.1", port)).await.unwrap();
        let (acc_tx, _acc_rx) = tokio::sync::mpsc::channel(4);
        let server = tokio::spawn(async move {
            let (tcp, _) = listener.accept().await.unwrap();
            let _ = acc_tx.send(1).await;
            let mut ws = tokio_tungstenite::accept_async(tcp).await.unwrap();
            let mut got = Vec::new();
            while let Some(Ok(m)) = ws.next().await {
                let stop = matches!(&m, Message::Text(t) if t.contains("session.stop"));
                got.push(m);
                if stop {
                    break;
                }
            }
            got
        });
        let got = tokio::time::timeout(Duration::from_secs(20), server)
            .await
            .unwrap()
            .unwrap();
        stop_tx.send(true).unwrap();
        let stats = driver.await.unwrap();
        assert_eq!(stats.connections, 1);
        let gap = got
            .iter()
            .find_map(|m| match m {
                Message::Text(t) if t.contains("backlog_overflow") => {
                    Some(serde_json::from_str::<serde_json::Value>(t).unwrap())
                }
                _ => None,
            })
            .unwrap();
        assert_eq!(gap["samples"], 30 * 320);
        let audio = got
            .iter()
            .filter(|m| matches!(m, Message::Binary(_)))
            .count();
        assert_eq!(audio, 50);
    }
}
