//! Microsoft Graph call control for application-hosted media bots.
//!
//! In scope: everything a bot exchanges with Graph's cloud-communications API v1.0.
//! - [`models`]: serde types of the communications resources, forward compatible (unknown
//!   properties and enum values round-trip; abstract types dispatch on `@odata.type`);
//! - [`GraphClient`]: every call-control operation as a typed async method, over reqwest
//!   (rustls), with a `client-request-id` on every request, timeouts, and retries that honour
//!   `Retry-After` only where retrying is safe; errors are a [`GraphError`] whose
//!   [`GraphErrorKind`] says what to do;
//! - [`auth`]: client credentials (secret or certificate), a cached single-flight
//!   [`TokenProvider`], the five `Calls.*` [`Permission`]s, a pre-flight permission check and
//!   a needed-vs-granted report;
//! - [`join_url`]: Teams join URLs → `chatInfo` + `meetingInfo`;
//! - [`notifications`]: strict RS256 verification of inbound notification tokens and parsing
//!   of `commsNotifications`, as a function the engine's HTTP route calls;
//! - [`state`]: a sans-IO per-call model fed notifications and operation responses, emitting
//!   [`state::CallEvent`]s.
//!
//! Not in scope: media (the blob in `appHostedMediaConfig` is produced by the media side and
//! passed through as a string), HTTP serving (the engine owns the webhook route), and online
//! meeting management (`OnlineMeetings.*`).
//!
//! The Graph base URL, token authority and OpenID metadata are configuration
//! ([`GraphConfig`], [`notifications::VerifierConfig`]), so the same code talks to Graph or to
//! the local emulator.
//!
//! # Example: answer an incoming call with an app-hosted media blob
//!
//! ```no_run
//! use mediabot_signaling::models::{AnswerRequest, CallOptions, CallState, MediaConfig};
//! use mediabot_signaling::notifications::{NotificationVerifier, Resource, VerifierConfig};
//! use mediabot_signaling::state::{CallModel, CallModelConfig};
//! use mediabot_signaling::{Credentials, GraphClient, GraphConfig};
//!
//! /// The engine's webhook route calls this with the raw header and body.
//! async fn on_notification(
//!     client: &GraphClient,
//!     verifier: &NotificationVerifier,
//!     authorization: Option<&str>,
//!     body: &[u8],
//!     media_blob: &str, // base64 JSON produced by the media side for this call
//! ) -> u16 {
//!     let batch = match verifier.verify(authorization, body).await {
//!         Ok(batch) => batch,
//!         Err(e) => return e.http_status(), // 400 / 401 / 403 / 413 / 503
//!     };
//!     for n in &batch.notifications {
//!         let Resource::Call(call) = &n.resource else { continue };
//!         if call.state != Some(CallState::Incoming) {
//!             continue;
//!         }
//!         let call_id = n.call_id().unwrap_or_default();
//!         let mut answer = AnswerRequest::audio(
//!             "https://bot.example.com/api/calling",
//!             MediaConfig::app_hosted(media_blob),
//!         );
//!         answer.call_options = Some(CallOptions::incoming(true)); // delta roster
//!         if let Err(e) = client.answer(call_id, &answer).await {
//!             eprintln!("answer failed ({:?}): {e}", e.kind());
//!         }
//!         // Track the call: feed it every later notification and drain its events.
//!         let mut model = CallModel::new(call_id, CallModelConfig::default());
//!         model.handle_notification(n);
//!         while let Some(event) = model.poll_event() {
//!             println!("{event:?}");
//!         }
//!     }
//!     202
//! }
//!
//! # async fn setup() -> Result<(), Box<dyn std::error::Error>> {
//! let credentials = Credentials::secret("tenant-id", "app-id", "client-secret");
//! let config = GraphConfig::default(); // or GraphConfig::with_endpoints(emulator, authority)
//! let http = GraphClient::http_client(&config)?;
//! let client = GraphClient::new(config, credentials)?;
//! let verifier = NotificationVerifier::new(VerifierConfig::new("app-id"), http);
//! let status = on_notification(&client, &verifier, Some("Bearer ..."), b"{}", "eyJ2IjoxfQ==").await;
//! assert!(status >= 200);
//! # Ok(())
//! # }
//! ```

pub mod auth;
mod client;
pub mod config;
pub mod error;
pub mod join_url;
pub mod jwt;
pub mod models;
pub mod notifications;
pub mod state;
mod transport;

pub use auth::{Credentials, Permission, TokenProvider};
pub use client::{ClientStats, GraphClient, MAX_CLIENT_CONTEXT_LEN};
pub use config::{GraphConfig, RetryPolicy};
pub use error::{GraphError, GraphErrorKind};
