//! Resampling with drift compensation, on `rubato`'s real-time API (`process_into_buffer` with
//! preallocated buffers; nothing allocates after construction).
//!
//! Input goes through a small FIFO and is processed in fixed 10 ms chunks; output chunk sizes
//! vary with the ratio. When input and output rates are equal (Opus decoded straight at the
//! output rate) the resampler is a cubic polynomial interpolator whose only job is the drift
//! correction, a ratio within a few hundred ppm of 1; otherwise it is a windowed-sinc resampler
//! with anti-aliasing. The ratio is changed with rubato's ramp, so corrections never click.

use rubato::audioadapter_buffers::direct::InterleavedSlice;
use rubato::{
    Adjustable, Async, FixedAsync, PolynomialDegree, Resampler, SincInterpolationParameters,
    SincInterpolationType, WindowFunction,
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
pub struct DriftResampler {
    inner: Async<f32>,
    nominal: f64,
    chunk: usize,
    fifo: Box<[f32]>,
    fifo_len: usize,
    out: Box<[f32]>,
    correction: f64,
}

impl std::fmt::Debug for DriftResampler {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DriftResampler")
            .field("nominal", &self.nominal)
            .field("correction", &self.correction)
            .finish_non_exhaustive()
    }
}

impl DriftResampler {
    /// A resampler from `input` to `output` rate.
    ///
    /// # Errors
    /// [`ResampleError::Construction`] if rubato refuses the rates.
    pub fn new(input: SampleRate, output: SampleRate) -> Result<Self, ResampleError> {
        let nominal = f64::from(output.hz()) / f64::from(input.hz());
        let chunk = input.samples_in_ms(10).max(1);
        let inner = if input == output {
            Async::<f32>::new_poly(
                nominal,
                MAX_RELATIVE,
                PolynomialDegree::Cubic,
                chunk,
                1,
                FixedAsync::Input,
            )
        } else {
            let params = SincInterpolationParameters {
                sinc_len: 64,
                f_cutoff: None,
                oversampling_factor: 64,
                interpolation: SincInterpolationType::Linear,
                window: WindowFunction::BlackmanHarris2,
            };
            Async::<f32>::new_sinc(nominal, MAX_RELATIVE, &params, chunk, 1, FixedAsync::Input)
        }
        .map_err(|e| ResampleError::Construction(e.to_string()))?;
        let out_max = inner.output_frames_max();
        Ok(DriftResampler {
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
    pub fn push(&mut self, input: &[f32]) -> usize {
        let n = input.len().min(self.fifo.len() - self.fifo_len);
        self.fifo[self.fifo_len..self.fifo_len + n].copy_from_slice(&input[..n]);
        self.fifo_len += n;
        n
    }

    /// Like [`DriftResampler::push`] with `n` zeros.
    pub fn push_zeros(&mut self, n: usize) -> usize {
        let n = n.min(self.fifo.len() - self.fifo_len);
        self.fifo[self.fifo_len..self.fifo_len + n].fill(0.0);
        self.fifo_len += n;
        n
    }

    /// Resamples one chunk if the FIFO holds one; returns the output samples.
    pub fn process(&mut self) -> Option<&[f32]> {
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
    pub fn set_correction(&mut self, correction: f64) {
        let c = correction.clamp(-0.009, 0.009);
        if (c - self.correction).abs() < 1e-9 {
            return;
        }
        self.correction = c;
        let _ = self
            .inner
            .set_resample_ratio(self.nominal * (1.0 + c), true);
    }

    /// Current correction.
    pub fn correction(&self) -> f64 {
        self.correction
    }

    /// Nominal output/input ratio.
    pub fn nominal_ratio(&self) -> f64 {
        self.nominal
    }

    /// Input samples per chunk.
    pub fn chunk(&self) -> usize {
        self.chunk
    }

    /// Input samples waiting in the FIFO.
    pub fn pending(&self) -> usize {
        self.fifo_len
    }

    /// Output samples by which the resampler delays its input.
    pub fn output_delay(&self) -> usize {
        self.inner.output_delay()
    }

    /// Clears the FIFO and the resampler's history.
    pub fn reset(&mut self) {
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
