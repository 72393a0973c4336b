//! Opus decoding for one stream (libopus through the `opus` crate), mono, straight at the rate
//! the consumer wants when libopus supports it. Loss is concealed with in-band FEC from the next
//! packet when that packet carries it, otherwise with libopus PLC.

use crate::units::SampleRate;

/// Largest decode in samples: 120 ms (the longest Opus packet) at 48 kHz.
pub const MAX_DECODE_SAMPLES: usize = 5760;

/// Why a payload could not be decoded.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum DecodeError {
    /// libopus rejected the payload or the request.
    #[error("opus decode failed: {0:?}")]
    Opus(opus::ErrorCode),
    /// The packet decodes to more than 120 ms.
    #[error("opus packet too long")]
    TooLong,
}

/// How a block of samples was obtained.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DecodeKind {
    /// Decoded from the packet itself.
    Normal,
    /// Rebuilt from in-band FEC of the following packet.
    Fec,
    /// Synthesized by packet-loss concealment.
    Plc,
}

/// An Opus decoder plus its output buffer.
pub struct OpusDecoder {
    decoder: opus::Decoder,
    rate: SampleRate,
    last_samples: usize,
    buf: Box<[f32; MAX_DECODE_SAMPLES]>,
}

impl std::fmt::Debug for OpusDecoder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OpusDecoder")
            .field("rate", &self.rate)
            .finish_non_exhaustive()
    }
}

impl OpusDecoder {
    /// A mono decoder at `rate`, which must be an Opus-native rate.
    ///
    /// # Errors
    /// [`DecodeError::Opus`] when libopus refuses the rate.
    pub fn new(rate: SampleRate) -> Result<Self, DecodeError> {
        let decoder = opus::Decoder::new(rate.hz(), opus::Channels::Mono)
            .map_err(|e| DecodeError::Opus(e.code()))?;
        Ok(OpusDecoder {
            decoder,
            rate,
            last_samples: rate.samples_in_ms(20),
            buf: Box::new([0.0; MAX_DECODE_SAMPLES]),
        })
    }

    /// Output rate.
    pub fn rate(&self) -> SampleRate {
        self.rate
    }

    /// Decodes one packet; returns the samples (valid until the next call).
    ///
    /// # Errors
    /// [`DecodeError`] when the payload is not valid Opus.
    pub fn decode(&mut self, payload: &[u8]) -> Result<&[f32], DecodeError> {
        let n = self.packet_samples(payload)?;
        let n = decode_to(&mut self.decoder, payload, &mut self.buf[..n])?;
        self.last_samples = n;
        Ok(&self.buf[..n])
    }

    /// How many samples `payload` decodes to at this decoder's rate.
    ///
    /// # Errors
    /// [`DecodeError`] when the payload is not valid Opus or longer than 120 ms.
    pub fn packet_samples(&self, payload: &[u8]) -> Result<usize, DecodeError> {
        let n = opus::packet::get_nb_samples(payload, self.rate.hz())
            .map_err(|e| DecodeError::Opus(e.code()))?;
        if n == 0 || n > MAX_DECODE_SAMPLES {
            return Err(DecodeError::TooLong);
        }
        Ok(n)
    }

    /// Decodes one packet into `dst`, sized by the caller from [`OpusDecoder::packet_samples`]
    /// (so the packet's header is not parsed twice), so a caller with a buffer of its own
    /// needs no copy out of ours; returns the sample count.
    ///
    /// # Errors
    /// [`DecodeError`] when the payload is not valid Opus, or `dst` is too short for it
    /// (libopus's `BufferTooSmall`).
    pub fn decode_into(&mut self, payload: &[u8], dst: &mut [f32]) -> Result<usize, DecodeError> {
        let n = decode_to(&mut self.decoder, payload, dst)?;
        self.last_samples = n;
        Ok(n)
    }

    /// Conceals one lost packet of the same duration as the last one: from the FEC data in
    /// `next` when it has some, else PLC. Returns the samples and how they were made.
    pub fn conceal(&mut self, next: Option<&[u8]>) -> (&[f32], DecodeKind) {
        let n = self.last_samples.min(MAX_DECODE_SAMPLES);
        if let Some(next) = next.filter(|p| has_fec(p))
            && let Ok(got) = self.decoder.decode_float(next, &mut self.buf[..n], true)
        {
            return (&self.buf[..got], DecodeKind::Fec);
        }
        match self.decoder.decode_float(&[], &mut self.buf[..n], false) {
            Ok(got) => (&self.buf[..got], DecodeKind::Plc),
            Err(_) => {
                // PLC cannot fail for a valid size; fall back to silence of the right length.
                self.buf[..n].fill(0.0);
                (&self.buf[..n], DecodeKind::Plc)
            }
        }
    }

    /// Samples produced by the last decode (the size PLC will produce next).
    pub fn last_samples(&self) -> usize {
        self.last_samples
    }

    /// Forgets all decoder state (sender restart).
    pub fn reset(&mut self) {
        let _ = self.decoder.reset_state();
    }
}

/// Whether an Opus packet carries in-band FEC (LBRR) data for the previous frame.
pub fn has_fec(packet: &[u8]) -> bool {
    let Ok(len) = i32::try_from(packet.len()) else {
        return false;
    };
    if len == 0 {
        return false;
    }
    // SAFETY: the pointer and length describe `packet`, which is live and unaliased for the
    // call; libopus only reads `len` bytes from it and keeps no reference.
    unsafe { opusic_sys::opus_packet_has_lbrr(packet.as_ptr(), len) > 0 }
}

/// One libopus decode of `payload` into `dst`; returns the sample count.
fn decode_to(
    decoder: &mut opus::Decoder,
    payload: &[u8],
    dst: &mut [f32],
) -> Result<usize, DecodeError> {
    decoder
        .decode_float(payload, dst, false)
        .map_err(|e| DecodeError::Opus(e.code()))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn decode_fec_plc() {
        let mut enc =
            opus::Encoder::new(16_000, opus::Channels::Mono, opus::Application::Voip).unwrap();
        enc.set_inband_fec(true).unwrap();
        enc.set_packet_loss_perc(10).unwrap();
        let mut dec = OpusDecoder::new(SampleRate::HZ_16000).unwrap();
        let mut out = [0u8; 400];
        let mut saw_fec = false;
        for i in 0..20 {
            let pcm: Vec<i16> = (0..320)
                .map(|j| ((f64::from(i * 320 + j) * 0.05).sin() * 8000.0) as i16)
                .collect();
            let n = enc.encode(&pcm, &mut out).unwrap();
            assert_eq!(dec.decode(&out[..n]).unwrap().len(), 320);
            let (c, kind) = dec.conceal(Some(&out[..n]));
            assert_eq!(c.len(), 320);
            saw_fec |= kind == DecodeKind::Fec;
        }
        assert!(saw_fec);
        let (c, kind) = dec.conceal(None);
        assert_eq!((c.len(), kind), (320, DecodeKind::Plc));
        assert!(dec.decode(&[0xff, 0xff, 0xff]).is_err());
    }

    #[test]
    fn decoding_into_a_callers_buffer_matches_decoding_into_ours() {
        let mut enc =
            opus::Encoder::new(48_000, opus::Channels::Mono, opus::Application::Voip).unwrap();
        let (mut a, mut b) = (
            OpusDecoder::new(SampleRate::HZ_48000).unwrap(),
            OpusDecoder::new(SampleRate::HZ_48000).unwrap(),
        );
        let mut packet = [0u8; 400];
        let mut dst = vec![0f32; 960];
        for i in 0..10 {
            let pcm: Vec<i16> = (0..960)
                .map(|j| ((f64::from(i * 960 + j) * 0.01).sin() * 8000.0) as i16)
                .collect();
            let n = enc.encode(&pcm, &mut packet).unwrap();
            assert_eq!(a.packet_samples(&packet[..n]).unwrap(), 960);
            let got = a.decode_into(&packet[..n], &mut dst).unwrap();
            assert_eq!(&dst[..got], b.decode(&packet[..n]).unwrap());
            assert_eq!(a.last_samples(), 960);
        }
        // Too short a buffer, and garbage, are errors, not panics.
        assert_eq!(
            a.decode_into(&packet[..1], &mut dst[..100]),
            Err(DecodeError::Opus(opus::ErrorCode::BufferTooSmall))
        );
        assert!(a.decode_into(&[0xff, 0xff, 0xff], &mut dst).is_err());
    }
}
