//! Shared harness for the transport integration tests: a media server + WHIP endpoint on
//! loopback, with a handler that records everything it is given.
#![allow(dead_code, clippy::unwrap_used)]

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use mediabot_media::transport::whip::{ForgetClosed, WhipConfig, WhipState, router};
use mediabot_media::transport::{
    AudioLevel, CallId, CloseReason, InboundRtp, MediaHandler, MediaServer, MediaServerConfig,
    MediaServerHandle, PlaybackWriter, SessionId, ToneEvent,
};

/// One received RTP packet, owned.
#[derive(Debug, Clone)]
pub struct Rtp {
    pub session: SessionId,
    pub ssrc: u32,
    pub sequence: u16,
    pub timestamp: u32,
    pub audio_level: Option<AudioLevel>,
    pub payload: Vec<u8>,
    pub received_at: Instant,
}

/// Everything the handler saw.
#[derive(Debug, Default, Clone)]
pub struct Seen {
    pub opened: HashMap<CallId, SessionId>,
    pub connected: Vec<SessionId>,
    pub rtp: Vec<Rtp>,
    pub tones: Vec<ToneEvent>,
    pub closed: Vec<(SessionId, CloseReason)>,
    pub sender_reports: usize,
    /// Counts kept in every mode (the lean harness keeps nothing else per session).
    pub opened_count: usize,
    pub rtp_count: usize,
    pub closed_count: usize,
}

/// Playback writers handed out by the server, by session.
pub type Writers = Arc<Mutex<Vec<(SessionId, PlaybackWriter)>>>;

/// The recording handler; `lean` keeps counts only (no per-session growth: leak tests).
struct Recorder(Arc<Mutex<Seen>>, Writers, bool);

impl MediaHandler for Recorder {
    fn on_session_opened(&mut self, session: SessionId, call: &CallId) {
        let mut s = self.0.lock().unwrap();
        s.opened_count += 1;
        if !self.2 {
            s.opened.insert(call.clone(), session);
        }
    }
    fn on_session_connected(&mut self, session: SessionId, _call: &CallId) {
        if !self.2 {
            self.0.lock().unwrap().connected.push(session);
        }
    }
    fn on_rtp(&mut self, p: &InboundRtp<'_>) {
        let mut s = self.0.lock().unwrap();
        s.rtp_count += 1;
        if self.2 {
            return;
        }
        s.rtp.push(Rtp {
            session: p.session,
            ssrc: p.ssrc.0,
            sequence: p.sequence,
            timestamp: p.timestamp,
            audio_level: p.audio_level,
            payload: p.payload.to_vec(),
            received_at: p.received_at,
        });
    }
    fn on_sender_report(
        &mut self,
        _session: SessionId,
        _call: &CallId,
        _report: &mediabot_media::transport::SenderReportInfo,
    ) {
        self.0.lock().unwrap().sender_reports += 1;
    }
    fn on_playback_ready(&mut self, session: SessionId, _call: &CallId, writer: PlaybackWriter) {
        self.1.lock().unwrap().push((session, writer));
    }
    fn on_tone(&mut self, tone: &ToneEvent) {
        self.0.lock().unwrap().tones.push(tone.clone());
    }
    fn on_session_closed(&mut self, session: SessionId, _call: &CallId, reason: CloseReason) {
        // The session's playback writer (and its 2 s PCM ring, 192 KB) goes with it: keeping
        // it was the per-session growth of the 1,000-session soak test.
        self.1.lock().unwrap().retain(|(s, _)| *s != session);
        let mut s = self.0.lock().unwrap();
        s.closed_count += 1;
        if !self.2 {
            s.closed.push((session, reason));
        }
    }
}

/// Media server + WHIP router served on loopback.
pub struct Harness {
    pub media: MediaServerHandle,
    pub whip: WhipState<MediaServerHandle>,
    pub seen: Arc<Mutex<Seen>>,
    pub writers: Writers,
    pub http_addr: std::net::SocketAddr,
}

impl Harness {
    pub async fn start() -> Self {
        Self::start_with(MediaServerConfig::default()).await
    }

    pub async fn start_with(config: MediaServerConfig) -> Self {
        Self::start_with_routes(config, axum::Router::new()).await
    }

    /// Like `start_with`, also serving `extra` routes on the same origin (test pages).
    pub async fn start_with_routes(config: MediaServerConfig, extra: axum::Router) -> Self {
        Self::start_full(config, extra, false).await
    }

    /// A harness whose handler keeps counts only (`Seen::*_count`), for memory-growth tests.
    pub async fn start_lean(config: MediaServerConfig) -> Self {
        Self::start_full(config, axum::Router::new(), true).await
    }

    async fn start_full(config: MediaServerConfig, extra: axum::Router, lean: bool) -> Self {
        let seen = Arc::new(Mutex::new(Seen::default()));
        let writers: Writers = Arc::default();
        let recorder = Recorder(Arc::clone(&seen), Arc::clone(&writers), lean);
        let handler = ForgetClosed::new(recorder);
        let link = handler.link();
        let media = MediaServer::start(config, Box::new(handler)).unwrap();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let http_addr = listener.local_addr().unwrap();
        let whip = WhipState::new(
            WhipConfig {
                public_base_url: format!("http://{http_addr}"),
                ..Default::default()
            },
            media.clone(),
        );
        assert!(link.set(whip.clone()).is_ok());
        let app = router(whip.clone()).merge(extra);
        tokio::spawn(async move {
            axum::serve(listener, app).await.unwrap();
        });
        Self {
            media,
            whip,
            seen,
            writers,
            http_addr,
        }
    }

    /// Waits (up to 60 s) until `cond` holds on what was seen, and returns a copy.
    pub async fn wait_for(&self, cond: impl Fn(&Seen) -> bool) -> Seen {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            {
                let s = self.seen.lock().unwrap();
                if cond(&s) {
                    return s.clone();
                }
                if Instant::now() > deadline {
                    panic!(
                        "condition not met in time; seen so far: {} rtp, {} tones, closed {:?}",
                        s.rtp_count,
                        s.tones.len(),
                        s.closed
                    );
                }
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}
