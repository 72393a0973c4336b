//! HTTP plumbing shared by the client, the token provider and the key fetcher.

use crate::config::AttemptFailure;
use crate::error::{GraphError, GraphErrorKind};

/// Reads a response body, refusing more than `max` bytes.
pub(crate) async fn read_body(
    resp: &mut reqwest::Response,
    max: usize,
) -> Result<Vec<u8>, GraphError> {
    if resp.content_length().is_some_and(|l| l > max as u64) {
        return Err(GraphError::new(
            GraphErrorKind::InvalidResponse,
            "response body too large",
        ));
    }
    let mut buf = Vec::new();
    loop {
        match resp.chunk().await {
            Ok(Some(chunk)) => {
                if buf.len() + chunk.len() > max {
                    return Err(GraphError::new(
                        GraphErrorKind::InvalidResponse,
                        "response body too large",
                    ));
                }
                buf.extend_from_slice(&chunk);
            }
            Ok(None) => return Ok(buf),
            Err(e) => return Err(classify_send_error(&e).0),
        }
    }
}

/// Maps a reqwest error to our error and to what it means for retrying.
pub(crate) fn classify_send_error(e: &reqwest::Error) -> (GraphError, AttemptFailure) {
    if e.is_timeout() {
        (
            GraphError::new(GraphErrorKind::Timeout, e.to_string()),
            AttemptFailure::Timeout,
        )
    } else if e.is_connect() {
        (
            GraphError::new(GraphErrorKind::Transport, e.to_string()),
            AttemptFailure::Connect,
        )
    } else {
        (
            GraphError::new(GraphErrorKind::Transport, e.to_string()),
            AttemptFailure::Io,
        )
    }
}

/// Percent-encodes an id for use as one path segment (ids never add path levels).
pub(crate) fn segment(id: &str) -> String {
    let mut out = String::with_capacity(id.len());
    for b in id.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~' | b':' | b'@') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// Jitter source for retry backoff: seeded for deterministic tests, else from the OS.
#[derive(Debug)]
pub(crate) struct Jitter(std::sync::Mutex<rand::rngs::StdRng>);

impl Jitter {
    pub(crate) fn new(seed: Option<u64>) -> Self {
        use rand::SeedableRng as _;
        let rng = match seed {
            Some(s) => rand::rngs::StdRng::seed_from_u64(s),
            None => rand::rngs::StdRng::from_os_rng(),
        };
        Self(std::sync::Mutex::new(rng))
    }

    /// A value in `[0, 1)`.
    pub(crate) fn next(&self) -> f64 {
        use rand::Rng as _;
        self.0.lock().map(|mut r| r.random::<f64>()).unwrap_or(0.5)
    }
}
