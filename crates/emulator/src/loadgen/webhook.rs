//! The webhook phase: verified notifications blasted at the bot's `callbackUri`.
//!
//! The body is the last notification the emulator really delivered for a live call (so the
//! bot parses and routes a real Graph payload to a call it holds), and the bearer token is the
//! one the emulator signs deliveries with. Graph reuses one notification token per app and
//! tenant for most of its hour-long life (the emulator does the same, see `notify::Signer`), so
//! every request carries the same token: the bot's verifier still checks the RS256 signature,
//! issuer, audience, lifetime and tenant on each request (it keeps no cache of verified
//! tokens), so nothing is skipped by reusing it.
//!
//! Several HTTP/1.1 keep-alive connections each send one request at a time, as Graph's
//! delivery workers do; latency is measured at the client, per request, from the first byte
//! written to the last byte of the answer read.
//!
//! So that the client-side latency is the bot's and not the generator's, the blast runs on its
//! own OS thread with its own single-threaded runtime (it inherits the generator's CPU pin):
//! the emulator, the progress line and the rest of the generator's runtime cannot delay its
//! tasks' wake-ups, and no wake-up crosses threads. For `http://` URLs each connection is a
//! minimal HTTP/1.1 client over a `TcpStream` that writes the same pre-built request bytes and
//! reads the status line, headers and `Content-Length` (or chunked) body of each answer: a few
//! microseconds of generator CPU per request instead of a general-purpose client's tens, so
//! the generator's core is not what limits the rate. `https://` URLs (a remote bot behind
//! TLS) use `reqwest` on the same dedicated thread.

use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use serde::Serialize;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::TcpStream;

/// Result of a blast.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Blast {
    /// Connections used.
    pub connections: usize,
    /// The HTTP client used: `"raw-http1"` (plain HTTP) or `"reqwest"` (HTTPS).
    pub client: String,
    /// Wall seconds of the blast.
    pub secs: f64,
    /// Requests answered 2xx.
    pub accepted: u64,
    /// Requests answered otherwise, or failed.
    pub failed: u64,
    /// The first failure, for the report.
    pub first_failure: Option<String>,
    /// Accepted per wall second.
    pub per_sec: f64,
    /// Client-side latency percentiles, milliseconds: p50, p90, p99, max.
    pub latency_ms: [f64; 4],
    /// Milliseconds the blast's own thread was runnable but waiting for a CPU during the blast
    /// (Linux `schedstat`; `None` elsewhere): how much of the client-side tail is the
    /// generator's machine, not the bot.
    pub client_runqueue_wait_ms: Option<f64>,
}

/// What one connection's task brings back: latencies (µs) of accepted requests, failures, the
/// first failure.
type ConnOutcome = (Vec<u32>, u64, Option<String>);

/// Sends `body` with `token` to `url` from `connections` keep-alive connections for `duration`.
///
/// Runs on a dedicated thread (see the module doc); the calling task only waits for it.
pub async fn blast(
    url: &str,
    token: &str,
    body: Bytes,
    connections: usize,
    duration: Duration,
) -> Blast {
    let connections = connections.max(1);
    let target = Target::parse(url);
    let client = match &target {
        Some(_) => "raw-http1",
        None => "reqwest",
    };
    let auth = format!("Bearer {token}");
    let url = url.to_owned();
    let (tx, rx) = tokio::sync::oneshot::channel();
    let spawned = std::thread::Builder::new()
        .name("webhook-blast".into())
        .spawn(move || {
            let rt = match tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
            {
                Ok(rt) => rt,
                Err(e) => {
                    let _ = tx.send((0.0, vec![(Vec::new(), 1, Some(e.to_string()))], None));
                    return;
                }
            };
            let wait0 = runqueue_wait_ns();
            let (secs, outcomes) = rt.block_on(run_connections(
                target,
                url,
                auth,
                body,
                connections,
                duration,
            ));
            let wait = match (wait0, runqueue_wait_ns()) {
                (Some(a), Some(b)) => Some(b.saturating_sub(a) as f64 / 1e6),
                _ => None,
            };
            let _ = tx.send((secs, outcomes, wait));
        });
    let (secs, outcomes, wait) = match spawned {
        Ok(_) => rx.await.unwrap_or_else(|_| {
            (
                0.0,
                vec![(Vec::new(), 1, Some("the blast thread ended early".into()))],
                None,
            )
        }),
        Err(e) => (
            0.0,
            vec![(
                Vec::new(),
                1,
                Some(format!("cannot start the blast thread: {e}")),
            )],
            None,
        ),
    };
    let mut out = summarize(connections, client, secs, outcomes);
    out.client_runqueue_wait_ms = wait;
    out
}

/// Nanoseconds the calling thread has spent runnable but not running (the second field of
/// `/proc/thread-self/schedstat`); `None` where that file does not exist.
fn runqueue_wait_ns() -> Option<u64> {
    let text = std::fs::read_to_string("/proc/thread-self/schedstat").ok()?;
    text.split_whitespace().nth(1)?.parse().ok()
}

/// Runs every connection's loop on the current (dedicated) runtime; returns the wall seconds
/// and each connection's outcome.
async fn run_connections(
    target: Option<Target>,
    url: String,
    auth: String,
    body: Bytes,
    connections: usize,
    duration: Duration,
) -> (f64, Vec<ConnOutcome>) {
    let t0 = Instant::now();
    let end = t0 + duration;
    let mut tasks = Vec::with_capacity(connections);
    match target {
        Some(t) => {
            let request = Bytes::from(t.request(&auth, &body));
            let t = Arc::new(t);
            for _ in 0..connections {
                tasks.push(tokio::spawn(raw_connection(
                    Arc::clone(&t),
                    request.clone(),
                    end,
                )));
            }
        }
        None => {
            let (auth, url) = (Arc::new(auth), Arc::new(url));
            for _ in 0..connections {
                tasks.push(tokio::spawn(reqwest_connection(
                    Arc::clone(&url),
                    Arc::clone(&auth),
                    body.clone(),
                    end,
                )));
            }
        }
    }
    let mut out = Vec::with_capacity(tasks.len());
    for t in tasks {
        out.push(
            t.await
                .unwrap_or_else(|e| (Vec::new(), 1, Some(format!("blast task: {e}")))),
        );
    }
    (t0.elapsed().as_secs_f64(), out)
}

fn summarize(connections: usize, client: &str, secs: f64, outcomes: Vec<ConnOutcome>) -> Blast {
    let mut all: Vec<u32> = Vec::new();
    let mut out = Blast {
        connections,
        client: client.to_owned(),
        secs,
        ..Blast::default()
    };
    for (lat, failed, first) in outcomes {
        all.extend(lat);
        out.failed += failed;
        if out.first_failure.is_none() {
            out.first_failure = first;
        }
    }
    out.accepted = all.len() as u64;
    out.per_sec = out.accepted as f64 / out.secs.max(1e-9);
    all.sort_unstable();
    out.latency_ms = [
        exact_quantile(&all, 0.5),
        exact_quantile(&all, 0.9),
        exact_quantile(&all, 0.99),
        all.last().map_or(0.0, |v| f64::from(*v) / 1000.0),
    ];
    out
}

/// A plain-HTTP target: where to connect and what to put in the request line.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Target {
    /// `host:port` to connect to (also the `Host` header).
    authority: String,
    /// Path and query.
    path: String,
}

impl Target {
    /// `Some` for `http://host[:port]/path` URLs; `None` for anything else (HTTPS).
    fn parse(url: &str) -> Option<Self> {
        let u = url::Url::parse(url).ok()?;
        if u.scheme() != "http" {
            return None;
        }
        let host = u.host_str()?;
        let port = u.port_or_known_default()?;
        let authority = if host.contains(':') && !host.starts_with('[') {
            format!("[{host}]:{port}")
        } else {
            format!("{host}:{port}")
        };
        let mut path = u.path().to_owned();
        if let Some(q) = u.query() {
            path.push('?');
            path.push_str(q);
        }
        Some(Self { authority, path })
    }

    /// The whole request (head and body), built once and written as is for every request.
    fn request(&self, authorization: &str, body: &[u8]) -> Vec<u8> {
        let mut r = format!(
            "POST {} HTTP/1.1\r\nhost: {}\r\nauthorization: {authorization}\r\n\
             content-type: application/json\r\ncontent-length: {}\r\n\r\n",
            self.path,
            self.authority,
            body.len()
        )
        .into_bytes();
        r.extend_from_slice(body);
        r
    }
}

/// One keep-alive connection sending `request` until `end`; reconnects when the server closes.
async fn raw_connection(target: Arc<Target>, request: Bytes, end: Instant) -> ConnOutcome {
    let mut lat: Vec<u32> = Vec::with_capacity(100_000);
    let (mut failed, mut first) = (0u64, None::<String>);
    let mut conn: Option<TcpStream> = None;
    let mut buf: Vec<u8> = Vec::with_capacity(8 * 1024);
    while Instant::now() < end {
        let mut stream = match conn.take() {
            Some(s) => s,
            None => match TcpStream::connect(target.authority.as_str()).await {
                Ok(s) => {
                    let _ = s.set_nodelay(true);
                    s
                }
                Err(e) => {
                    failed += 1;
                    first.get_or_insert_with(|| format!("connect {}: {e}", target.authority));
                    tokio::time::sleep(Duration::from_millis(10)).await;
                    continue;
                }
            },
        };
        let s = Instant::now();
        let answer = match stream.write_all(&request).await {
            Ok(()) => read_response(&mut stream, &mut buf).await,
            Err(e) => Err(format!("write: {e}")),
        };
        match answer {
            Ok(r) => {
                if (200..300).contains(&r.status) {
                    lat.push(s.elapsed().as_micros().min(u128::from(u32::MAX)) as u32);
                } else {
                    failed += 1;
                    first.get_or_insert_with(|| {
                        format!("{}: {}", r.status, String::from_utf8_lossy(&r.body).trim())
                    });
                }
                if r.keep_alive {
                    conn = Some(stream);
                }
            }
            Err(e) => {
                failed += 1;
                first.get_or_insert(e);
            }
        }
    }
    (lat, failed, first)
}

/// One parsed answer.
#[derive(Debug, PartialEq, Eq)]
struct Response {
    status: u16,
    body: Vec<u8>,
    keep_alive: bool,
}

/// Longest response head accepted.
const MAX_HEAD: usize = 16 * 1024;
/// Longest response body kept (the bot answers 202 with an empty body, errors with a line).
const MAX_BODY: usize = 64 * 1024;

/// Reads one HTTP/1.1 response from `stream`; `buf` is scratch space (empty on return).
async fn read_response(stream: &mut TcpStream, buf: &mut Vec<u8>) -> Result<Response, String> {
    buf.clear();
    loop {
        if let Some(parsed) = parse_response(buf)? {
            buf.clear();
            return Ok(parsed);
        }
        if buf.len() > MAX_HEAD + MAX_BODY {
            return Err("response too large".into());
        }
        let mut chunk = [0u8; 4096];
        let n = stream
            .read(&mut chunk)
            .await
            .map_err(|e| format!("read: {e}"))?;
        if n == 0 {
            return Err("connection closed before a full response".into());
        }
        buf.extend_from_slice(&chunk[..n]);
    }
}

/// Parses a complete response from the start of `data`: `Ok(None)` when more bytes are needed.
fn parse_response(data: &[u8]) -> Result<Option<Response>, String> {
    let Some(head_end) = find(data, b"\r\n\r\n") else {
        return if data.len() > MAX_HEAD {
            Err("response head too large".into())
        } else {
            Ok(None)
        };
    };
    let head = std::str::from_utf8(&data[..head_end]).map_err(|_| "response head not utf-8")?;
    let mut lines = head.split("\r\n");
    let status_line = lines.next().unwrap_or_default();
    let mut parts = status_line.splitn(3, ' ');
    let version = parts.next().unwrap_or_default();
    let status: u16 = parts
        .next()
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| format!("bad status line {status_line:?}"))?;
    let mut keep_alive = version == "HTTP/1.1";
    let (mut length, mut chunked) = (None::<usize>, false);
    for line in lines {
        let Some((name, value)) = line.split_once(':') else {
            continue;
        };
        let value = value.trim();
        if name.eq_ignore_ascii_case("content-length") {
            length = Some(value.parse().map_err(|_| "bad content-length")?);
        } else if name.eq_ignore_ascii_case("transfer-encoding") {
            chunked = value.to_ascii_lowercase().contains("chunked");
        } else if name.eq_ignore_ascii_case("connection") {
            let v = value.to_ascii_lowercase();
            if v.contains("close") {
                keep_alive = false;
            } else if v.contains("keep-alive") {
                keep_alive = true;
            }
        }
    }
    let rest = &data[head_end + 4..];
    let body = if chunked {
        match dechunk(rest)? {
            Some(b) => b,
            None => return Ok(None),
        }
    } else if let Some(n) = length {
        if n > MAX_BODY {
            return Err("response body too large".into());
        }
        if rest.len() < n {
            return Ok(None);
        }
        rest[..n].to_vec()
    } else if status == 204 || status == 304 || (100..200).contains(&status) {
        Vec::new()
    } else {
        // Body delimited by the end of the connection: not something we reuse.
        return Err(format!("{status} without content-length"));
    };
    Ok(Some(Response {
        status,
        body,
        keep_alive,
    }))
}

/// Decodes a chunked body: `Ok(None)` when incomplete.
fn dechunk(mut data: &[u8]) -> Result<Option<Vec<u8>>, String> {
    let mut body = Vec::new();
    loop {
        let Some(eol) = find(data, b"\r\n") else {
            return Ok(None);
        };
        let size_text = std::str::from_utf8(&data[..eol]).map_err(|_| "bad chunk size")?;
        let size_text = size_text.split(';').next().unwrap_or_default().trim();
        let size = usize::from_str_radix(size_text, 16).map_err(|_| "bad chunk size")?;
        data = &data[eol + 2..];
        if size == 0 {
            // No trailers from the bot: the final CRLF ends the body.
            return Ok(find(data, b"\r\n").map(|_| body));
        }
        if body.len() + size > MAX_BODY {
            return Err("response body too large".into());
        }
        if data.len() < size + 2 {
            return Ok(None);
        }
        body.extend_from_slice(&data[..size]);
        data = &data[size + 2..];
    }
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

/// One keep-alive `reqwest` connection (HTTPS targets) sending until `end`.
async fn reqwest_connection(
    url: Arc<String>,
    auth: Arc<String>,
    body: Bytes,
    end: Instant,
) -> ConnOutcome {
    let client = match reqwest::Client::builder()
        .pool_max_idle_per_host(1)
        .timeout(Duration::from_secs(5))
        .build()
    {
        Ok(c) => c,
        Err(e) => return (Vec::new(), 1u64, Some(e.to_string())),
    };
    let mut lat: Vec<u32> = Vec::with_capacity(100_000);
    let (mut failed, mut first) = (0u64, None);
    while Instant::now() < end {
        let s = Instant::now();
        let r = client
            .post(url.as_str())
            .header("authorization", auth.as_str())
            .header("content-type", "application/json")
            .body(body.clone())
            .send()
            .await;
        match r {
            Ok(resp) if resp.status().is_success() => {
                // Read the (empty) body so the connection is reused.
                let _ = resp.bytes().await;
                lat.push(s.elapsed().as_micros().min(u128::from(u32::MAX)) as u32);
            }
            Ok(resp) => {
                failed += 1;
                let st = resp.status();
                let text = resp.text().await.unwrap_or_default();
                first.get_or_insert_with(|| format!("{st}: {}", text.trim()));
            }
            Err(e) => {
                failed += 1;
                first.get_or_insert_with(|| e.to_string());
            }
        }
    }
    (lat, failed, first)
}

/// The `q` quantile (nearest rank) of sorted microsecond samples, in milliseconds.
pub fn exact_quantile(sorted_us: &[u32], q: f64) -> f64 {
    if sorted_us.is_empty() {
        return 0.0;
    }
    let rank = ((q.clamp(0.0, 1.0) * sorted_us.len() as f64).ceil() as usize).max(1);
    f64::from(sorted_us[rank.min(sorted_us.len()) - 1]) / 1000.0
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn nearest_rank_quantiles() {
        let v: Vec<u32> = (1..=100).map(|i| i * 1000).collect();
        assert_eq!(exact_quantile(&v, 0.5), 50.0);
        assert_eq!(exact_quantile(&v, 0.99), 99.0);
        assert_eq!(exact_quantile(&v, 1.0), 100.0);
        assert_eq!(exact_quantile(&[], 0.5), 0.0);
    }

    #[test]
    fn plain_http_urls_take_the_raw_client_and_https_does_not() {
        let t = Target::parse("http://127.0.0.1:8080/api/calls/notifications?x=1").unwrap();
        assert_eq!(t.authority, "127.0.0.1:8080");
        assert_eq!(t.path, "/api/calls/notifications?x=1");
        assert_eq!(
            Target::parse("http://localhost/a").unwrap().authority,
            "localhost:80"
        );
        assert_eq!(
            Target::parse("http://[::1]:9/a").unwrap().authority,
            "[::1]:9"
        );
        assert!(Target::parse("https://bot.example/a").is_none());
        let req = t.request("Bearer t", b"{}");
        let text = String::from_utf8(req).unwrap();
        assert!(text.starts_with("POST /api/calls/notifications?x=1 HTTP/1.1\r\n"));
        assert!(text.contains("\r\ncontent-length: 2\r\n\r\n{}"));
        assert!(text.contains("\r\nauthorization: Bearer t\r\n"));
    }

    #[test]
    fn responses_parse_only_when_complete() {
        let full = b"HTTP/1.1 202 Accepted\r\ncontent-length: 0\r\ndate: x\r\n\r\n";
        for cut in 0..full.len() {
            assert_eq!(parse_response(&full[..cut]).unwrap(), None, "cut at {cut}");
        }
        let r = parse_response(full).unwrap().unwrap();
        assert_eq!((r.status, r.keep_alive, r.body.len()), (202, true, 0));

        let err = b"HTTP/1.1 401 Unauthorized\r\nContent-Length: 13\r\nConnection: close\r\n\r\ntoken expired";
        assert_eq!(parse_response(&err[..err.len() - 1]).unwrap(), None);
        let r = parse_response(err).unwrap().unwrap();
        assert_eq!(r.status, 401);
        assert!(!r.keep_alive);
        assert_eq!(r.body, b"token expired");

        let chunked =
            b"HTTP/1.1 400 Bad Request\r\ntransfer-encoding: chunked\r\n\r\n3\r\nabc\r\n2\r\nde\r\n0\r\n\r\n";
        assert_eq!(parse_response(&chunked[..chunked.len() - 2]).unwrap(), None);
        assert_eq!(parse_response(chunked).unwrap().unwrap().body, b"abcde");

        assert!(parse_response(b"garbage\r\n\r\n").is_err());
        assert!(parse_response(b"HTTP/1.1 200 OK\r\n\r\n").is_err());
        let http10 = b"HTTP/1.0 202 Accepted\r\ncontent-length: 0\r\n\r\n";
        assert!(!parse_response(http10).unwrap().unwrap().keep_alive);
    }

    #[tokio::test]
    async fn blasts_a_loopback_server_and_counts_answers() {
        use tokio::net::TcpListener;
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        // A tiny server: every request with "good" in its head gets 202, others 401 and close.
        tokio::spawn(async move {
            loop {
                let Ok((mut s, _)) = listener.accept().await else {
                    return;
                };
                tokio::spawn(async move {
                    let mut buf = Vec::new();
                    let mut chunk = [0u8; 4096];
                    loop {
                        let Ok(n) = s.read(&mut chunk).await else {
                            return;
                        };
                        if n == 0 {
                            return;
                        }
                        buf.extend_from_slice(&chunk[..n]);
                        // Requests are head + 2-byte body.
                        while let Some(h) = find(&buf, b"\r\n\r\n") {
                            if buf.len() < h + 4 + 2 {
                                break;
                            }
                            let good = find(&buf[..h], b"good").is_some();
                            buf.drain(..h + 6);
                            let answer: &[u8] = if good {
                                b"HTTP/1.1 202 Accepted\r\ncontent-length: 0\r\n\r\n"
                            } else {
                                b"HTTP/1.1 401 Unauthorized\r\ncontent-length: 3\r\nconnection: close\r\n\r\nbad"
                            };
                            if s.write_all(answer).await.is_err() || !good {
                                return;
                            }
                        }
                    }
                });
            }
        });
        let url = format!("http://{addr}/api/calls/notifications");
        let ok = blast(
            &url,
            "good",
            Bytes::from_static(b"{}"),
            2,
            Duration::from_millis(200),
        )
        .await;
        assert_eq!(ok.client, "raw-http1");
        assert_eq!(ok.failed, 0, "{:?}", ok.first_failure);
        assert!(ok.accepted > 0);
        assert!(ok.latency_ms[0] <= ok.latency_ms[2] && ok.latency_ms[2] <= ok.latency_ms[3]);
        if cfg!(target_os = "linux") {
            assert!(ok.client_runqueue_wait_ms.is_some_and(|w| w >= 0.0));
        }

        let bad = blast(
            &url,
            "nope",
            Bytes::from_static(b"{}"),
            1,
            Duration::from_millis(100),
        )
        .await;
        assert_eq!(bad.accepted, 0);
        assert!(bad.failed > 0);
        assert_eq!(bad.first_failure.as_deref(), Some("401: bad"));
    }
}
