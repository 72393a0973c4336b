//! Integration tests of the emulator through its HTTP surface over loopback (one binary).
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::type_complexity,
    missing_docs
)]

mod bad_input;
mod binary;
mod calls;
mod common;
mod control;
mod identity;
mod notifications;
mod permissions;
mod scenarios;
