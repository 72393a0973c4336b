//! The real-time media pipeline (work in progress).

pub mod transport;
