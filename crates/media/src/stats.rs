//! Counters that the media thread bumps and any other thread reads, with relaxed atomics: a
//! metrics scrape never takes a lock the media thread could wait on.
//!
//! A [`StreamStats`] (one per SSRC) and a [`CallStats`] (one per call) are shared through an
//! `Arc`; [`StreamStats::snapshot`] copies them into a plain struct.

use std::sync::atomic::{AtomicU64, Ordering};

macro_rules! counters {
    ($(#[$smeta:meta])* $shared:ident, $(#[$nmeta:meta])* $snap:ident { $($(#[$fmeta:meta])* $field:ident),* $(,)? }) => {
        $(#[$smeta])*
        #[derive(Debug, Default)]
        pub struct $shared {
            $($(#[$fmeta])* pub $field: AtomicU64,)*
        }

        $(#[$nmeta])*
        #[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
        #[non_exhaustive]
        pub struct $snap {
            $($(#[$fmeta])* pub $field: u64,)*
        }

        impl $shared {
            /// Copies every counter (each read is atomic; the set is not one instant).
            pub fn snapshot(&self) -> $snap {
                $snap { $($field: self.$field.load(Ordering::Relaxed),)* }
            }
        }
    };
}

counters! {
    /// Per-stream (per-SSRC) counters, written by the media thread only.
    StreamStats,
    /// A copy of [`StreamStats`] at one moment.
    StreamStatsSnapshot {
        /// RTP packets accepted into the stream (after header validation).
        received,
        /// Packets never received (RFC 3550 A.3: expected minus received, floor 0).
        lost,
        /// 20 ms (or packet-sized) frames synthesized by Opus packet-loss concealment.
        concealed,
        /// Lost frames rebuilt from in-band FEC carried by the next packet.
        fec_recovered,
        /// Packets that arrived after their play-out slot had passed.
        late,
        /// Packets received twice.
        duplicate,
        /// Packets dropped because the jitter buffer was full or they were too far ahead.
        overflow,
        /// Payloads libopus refused.
        decode_errors,
        /// Packets with a payload type other than the stream's Opus type.
        unknown_payload_type,
        /// Frames a sink ring had no room for (summed over sinks).
        dropped_at_ring,
        /// Frames produced for this stream.
        frames_out,
        /// Samples of exact silence inserted for DTX and short pauses.
        silence_samples,
        /// Times the stream was re-anchored on the timeline (gap too long, clock jump).
        resyncs,
        /// Sender restarts (sequence jump confirmed by consecutive packets, RFC 3550 A.1).
        restarts,
        /// RFC 3550 interarrival jitter, in microseconds (a gauge).
        jitter_us,
        /// Current jitter-buffer target delay, in microseconds (a gauge).
        buffer_delay_us,
        /// Current drift correction in parts per billion, offset by 2^32 so it stays unsigned
        /// (a gauge; use [`StreamStatsSnapshot::drift_ppb`]).
        drift_ppb_biased,
        /// Sender reports received.
        sender_reports,
    }
}

counters! {
    /// Per-call counters.
    CallStats,
    /// A copy of [`CallStats`] at one moment.
    CallStatsSnapshot {
        /// Datagrams that failed RTP/RTCP parsing.
        malformed,
        /// Packets for a new SSRC refused because the call already has its maximum of streams.
        streams_refused,
        /// Streams created.
        streams_created,
        /// Mixed frames produced.
        mixed_frames,
        /// Per-speaker frames that reached the mixer after their slot was mixed.
        late_for_mix,
        /// Mixed frames a sink ring had no room for.
        mixed_dropped_at_ring,
        /// PCM frames refused (bad rate, size, or source).
        pcm_rejected,
        /// Dominant speaker changes.
        dominant_changes,
    }
}

impl StreamStats {
    pub(crate) fn add(counter: &AtomicU64, n: u64) {
        counter.fetch_add(n, Ordering::Relaxed);
    }

    pub(crate) fn set(counter: &AtomicU64, v: u64) {
        counter.store(v, Ordering::Relaxed);
    }
}

const DRIFT_BIAS: i64 = 1 << 32;

impl StreamStats {
    pub(crate) fn set_drift_ppb(&self, ppb: i64) {
        let biased = ppb.saturating_add(DRIFT_BIAS).max(0) as u64;
        self.drift_ppb_biased.store(biased, Ordering::Relaxed);
    }
}

impl StreamStatsSnapshot {
    /// Drift correction applied to this stream, parts per billion (positive: the sender's
    /// clock runs slow, so its audio is stretched).
    pub fn drift_ppb(&self) -> i64 {
        if self.drift_ppb_biased == 0 {
            return 0;
        }
        self.drift_ppb_biased as i64 - DRIFT_BIAS
    }
}
