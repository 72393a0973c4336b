//! Resampling with drift compensation. Nothing allocates after construction.
//!
//! Input goes through a small FIFO and is processed in fixed 10 ms chunks; output chunk sizes
//! vary with the ratio. Two engines behind one type:
//!
//! * rates differ (e.g. 48 kHz decode to a 44.1 kHz call): `rubato`'s asynchronous
//!   windowed-sinc resampler on its real-time API (`process_into_buffer`, preallocated
//!   buffers), anti-aliased, ratio changes ramped by rubato;
//! * rates equal (Opus decoded straight at the output rate): the only job is drift correction,
//!   a ratio within a few hundred ppm of 1, so a Catmull-Rom cubic interpolator of our own does
//!   it with the ratio ramped linearly over each chunk. We measured rubato's polynomial
//!   resampler at 23 ns/sample here (per-sample dynamic dispatch through its adapters), which
//!   alone cost more than the 1.25x budget over libopus; this one is a tight loop.

use rubato::audioadapter_buffers::direct::InterleavedSlice;
use rubato::{
    Adjustable, Async, FixedAsync, Resampler, SincInterpolationParameters, SincInterpolationType,
    WindowFunction,
};

use crate::units::SampleRate;

/// Largest relative ratio change the drift correction may ask for (1 %).
const MAX_RELATIVE: f64 = 1.01;

/// Why a resampler could not be built or run.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ResampleError {
    /// rubato refused the configuration.
    #[error("resampler construction failed: {0}")]
    Construction(String),
}

/// A mono resampler with an adjustable drift correction.
#[derive(Debug)]
pub struct DriftResampler {
    engine: Engine,
}

#[derive(Debug)]
enum Engine {
    Sinc(Box<RubatoResampler>),
    Cubic(CubicDrift),
}

macro_rules! each {
    ($self:ident, $r:ident => $e:expr) => {
        match &mut $self.engine {
            Engine::Sinc($r) => $e,
            Engine::Cubic($r) => $e,
        }
    };
}

impl DriftResampler {
    /// A resampler from `input` to `output` rate.
    ///
    /// # Errors
    /// [`ResampleError::Construction`] if rubato refuses the rates.
    pub fn new(input: SampleRate, output: SampleRate) -> Result<Self, ResampleError> {
        let engine = if input == output {
            Engine::Cubic(CubicDrift::new(input.samples_in_ms(10).max(1)))
        } else {
            Engine::Sinc(Box::new(RubatoResampler::new(input, output)?))
        };
        Ok(DriftResampler { engine })
    }

    /// Copies as much of `input` as fits into the FIFO; returns how many samples were taken.
    /// Call [`DriftResampler::process`] until it returns `None`, then push the rest.
    pub fn push(&mut self, input: &[f32]) -> usize {
        each!(self, r => r.push(input))
    }

    /// Like [`DriftResampler::push`] with `n` zeros.
    pub fn push_zeros(&mut self, n: usize) -> usize {
        each!(self, r => r.push_zeros(n))
    }

    /// Resamples one chunk if the FIFO holds one; returns the output samples.
    pub fn process(&mut self) -> Option<&[f32]> {
        each!(self, r => r.process())
    }

    /// Sets the drift correction: the ratio becomes `nominal * (1 + correction)`, ramped over
    /// the next chunk. Clamped to +-0.9 %.
    pub fn set_correction(&mut self, correction: f64) {
        each!(self, r => r.set_correction(correction))
    }

    /// Current correction.
    pub fn correction(&self) -> f64 {
        match &self.engine {
            Engine::Sinc(r) => r.correction,
            Engine::Cubic(r) => r.correction,
        }
    }

    /// Nominal output/input ratio.
    pub fn nominal_ratio(&self) -> f64 {
        match &self.engine {
            Engine::Sinc(r) => r.nominal,
            Engine::Cubic(_) => 1.0,
        }
    }

    /// Input samples per chunk.
    pub fn chunk(&self) -> usize {
        match &self.engine {
            Engine::Sinc(r) => r.chunk,
            Engine::Cubic(r) => r.chunk,
        }
    }

    /// Input samples waiting in the FIFO.
    pub fn pending(&self) -> usize {
        match &self.engine {
            Engine::Sinc(r) => r.fifo_len,
            Engine::Cubic(r) => r.fifo_len - HISTORY,
        }
    }

    /// Output samples by which the resampler delays its input.
    pub fn output_delay(&self) -> usize {
        match &self.engine {
            Engine::Sinc(r) => r.inner.output_delay(),
            Engine::Cubic(_) => HISTORY - 1,
        }
    }

    /// Clears the FIFO and the resampler's history.
    pub fn reset(&mut self) {
        each!(self, r => r.reset())
    }
}

/// Samples of history the cubic interpolator keeps in front of each chunk.
const HISTORY: usize = 3;

/// Same-rate drift correction by Catmull-Rom interpolation at a position that advances by
/// `step = 1 / (1 + correction)` input samples per output sample.
struct CubicDrift {
    chunk: usize,
    fifo: Box<[f32]>,
    fifo_len: usize,
    out: Box<[f32]>,
    t: f64,
    step: f64,
    target_step: f64,
    correction: f64,
}

impl std::fmt::Debug for CubicDrift {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CubicDrift")
            .field("correction", &self.correction)
            .finish_non_exhaustive()
    }
}

impl CubicDrift {
    fn new(chunk: usize) -> Self {
        CubicDrift {
            chunk,
            fifo: vec![0.0; HISTORY + 2 * chunk].into_boxed_slice(),
            fifo_len: HISTORY,
            out: vec![0.0; chunk + chunk / 50 + 8].into_boxed_slice(),
            t: 1.0,
            step: 1.0,
            target_step: 1.0,
            correction: 0.0,
        }
    }

    fn push(&mut self, input: &[f32]) -> usize {
        let n = input.len().min(self.fifo.len() - self.fifo_len);
        self.fifo[self.fifo_len..self.fifo_len + n].copy_from_slice(&input[..n]);
        self.fifo_len += n;
        n
    }

    fn push_zeros(&mut self, n: usize) -> usize {
        let n = n.min(self.fifo.len() - self.fifo_len);
        self.fifo[self.fifo_len..self.fifo_len + n].fill(0.0);
        self.fifo_len += n;
        n
    }

    fn process(&mut self) -> Option<&[f32]> {
        let len = HISTORY + self.chunk;
        if self.fifo_len < len {
            return None;
        }
        let e = &self.fifo[..len];
        // Ramp the step linearly over this chunk's outputs.
        let expected = (self.chunk as f64 / self.step).max(1.0);
        let dstep = (self.target_step - self.step) / expected;
        // Integer index plus a fraction that drifts by (step - 1) per output: no float to
        // integer conversion per sample. t = i + frac throughout.
        let limit = len - 2;
        let mut i = self.t as usize;
        let mut frac = (self.t - i as f64) as f32;
        let mut delta = (self.step - 1.0) as f32;
        let ddelta = dstep as f32;
        let mut n = 0;
        let cap = self.out.len();
        while i < limit && n < cap {
            let w = &e[i - 1..i + 3];
            let (x0, x1, x2, x3) = (w[0], w[1], w[2], w[3]);
            let c1 = 0.5 * (x2 - x0);
            let c2 = x0 - 2.5 * x1 + 2.0 * x2 - 0.5 * x3;
            let c3 = 0.5 * (x3 - x0) + 1.5 * (x1 - x2);
            self.out[n] = ((c3 * frac + c2) * frac + c1) * frac + x1;
            n += 1;
            i += 1;
            frac += delta;
            delta += ddelta;
            if frac >= 1.0 {
                frac -= 1.0;
                i += 1;
            } else if frac < 0.0 {
                frac += 1.0;
                i -= 1;
            }
        }
        let t = i as f64 + f64::from(frac);
        self.step = self.target_step;
        self.t = t - self.chunk as f64;
        self.fifo.copy_within(self.chunk..self.fifo_len, 0);
        self.fifo_len -= self.chunk;
        Some(&self.out[..n])
    }

    fn set_correction(&mut self, correction: f64) {
        let c = correction.clamp(-0.009, 0.009);
        self.correction = c;
        self.target_step = 1.0 / (1.0 + c);
    }

    fn reset(&mut self) {
        self.fifo[..HISTORY].fill(0.0);
        self.fifo_len = HISTORY;
        self.t = 1.0;
        self.step = 1.0;
        self.target_step = 1.0;
        self.correction = 0.0;
    }
}

/// The rubato (sinc) engine.
struct RubatoResampler {
    inner: Async<f32>,
    nominal: f64,
    chunk: usize,
    fifo: Box<[f32]>,
    fifo_len: usize,
    out: Box<[f32]>,
    correction: f64,
}

impl std::fmt::Debug for RubatoResampler {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RubatoResampler")
            .field("nominal", &self.nominal)
            .field("correction", &self.correction)
            .finish_non_exhaustive()
    }
}

impl RubatoResampler {
    fn new(input: SampleRate, output: SampleRate) -> Result<Self, ResampleError> {
        let nominal = f64::from(output.hz()) / f64::from(input.hz());
        let chunk = input.samples_in_ms(10).max(1);
        let params = SincInterpolationParameters {
            sinc_len: 64,
            f_cutoff: None,
            oversampling_factor: 64,
            interpolation: SincInterpolationType::Linear,
            window: WindowFunction::BlackmanHarris2,
        };
        let inner =
            Async::<f32>::new_sinc(nominal, MAX_RELATIVE, &params, chunk, 1, FixedAsync::Input)
                .map_err(|e| ResampleError::Construction(e.to_string()))?;
        let out_max = inner.output_frames_max();
        Ok(RubatoResampler {
            inner,
            nominal,
            chunk,
            fifo: vec![0.0; 2 * chunk].into_boxed_slice(),
            fifo_len: 0,
            out: vec![0.0; out_max].into_boxed_slice(),
            correction: 0.0,
        })
    }

    /// Copies as much of `input` as fits into the FIFO; returns how many samples were taken.
    /// Call [`DriftResampler::process`] until it returns `None`, then push the rest.
    fn push(&mut self, input: &[f32]) -> usize {
        let n = input.len().min(self.fifo.len() - self.fifo_len);
        self.fifo[self.fifo_len..self.fifo_len + n].copy_from_slice(&input[..n]);
        self.fifo_len += n;
        n
    }

    /// Like [`DriftResampler::push`] with `n` zeros.
    fn push_zeros(&mut self, n: usize) -> usize {
        let n = n.min(self.fifo.len() - self.fifo_len);
        self.fifo[self.fifo_len..self.fifo_len + n].fill(0.0);
        self.fifo_len += n;
        n
    }

    /// Resamples one chunk if the FIFO holds one; returns the output samples.
    fn process(&mut self) -> Option<&[f32]> {
        if self.fifo_len < self.chunk {
            return None;
        }
        let frames_out = self.out.len();
        let produced = {
            let input = InterleavedSlice::new(&self.fifo[..self.chunk], 1, self.chunk).ok()?;
            let mut output = InterleavedSlice::new_mut(&mut self.out[..], 1, frames_out).ok()?;
            self.inner
                .process_into_buffer(&input, &mut output, None)
                .ok()?
                .1
        };
        self.fifo.copy_within(self.chunk..self.fifo_len, 0);
        self.fifo_len -= self.chunk;
        Some(&self.out[..produced])
    }

    /// Sets the drift correction: the ratio becomes `nominal * (1 + correction)`, ramped over
    /// the next chunk. Clamped to the constructor's bounds.
    fn set_correction(&mut self, correction: f64) {
        let c = correction.clamp(-0.009, 0.009);
        if (c - self.correction).abs() < 1e-9 {
            return;
        }
        self.correction = c;
        let _ = self
            .inner
            .set_resample_ratio(self.nominal * (1.0 + c), true);
    }

    /// Clears the FIFO and the resampler's history.
    fn reset(&mut self) {
        self.inner.reset();
        self.fifo_len = 0;
        self.correction = 0.0;
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn run(r: &mut DriftResampler, n: usize) -> usize {
        let input = vec![0.25f32; n];
        let mut rest = &input[..];
        let mut out = 0;
        while !rest.is_empty() {
            let k = r.push(rest);
            rest = &rest[k..];
            while let Some(o) = r.process() {
                out += o.len();
            }
        }
        out
    }

    #[test]
    fn counts_balance() {
        let mut r = DriftResampler::new(SampleRate::HZ_48000, SampleRate::HZ_16000).unwrap();
        let out = run(&mut r, 48_000);
        assert!((out as i64 - 16_000).abs() <= 160, "{out}");
        let mut r = DriftResampler::new(SampleRate::HZ_16000, SampleRate::HZ_16000).unwrap();
        r.set_correction(0.001);
        let out = run(&mut r, 160_000);
        assert!((out as i64 - 160_160).abs() <= 200, "{out}");
    }
}
