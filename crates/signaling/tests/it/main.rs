//! Integration tests of mediabot-signaling, gathered into one binary to save link time.
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

mod models;
