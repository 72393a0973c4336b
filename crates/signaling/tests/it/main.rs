//! Integration tests of mediabot-signaling, gathered into one binary to save link time.
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs, dead_code)]

mod auth;
mod emulator;
mod errors;
mod fake_graph;
mod keys;
mod models;
mod notifications;
mod operations;
mod state;
mod verify;
