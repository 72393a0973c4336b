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
//!
//! ## Whole-sample mode (same rate, small corrections)
//!
//! The stream's controller sets a correction after every chunk, and for a sender within
//! ~100 ppm of our clock (loopback, most real senders) it is tiny but not zero, so the cubic
//! interpolator would still run on every sample of every stream: ~5 % of the bot's CPU at 160
//! streams, plus its copies. So while the step stays within [`WHOLE_SAMPLE_MAX`] (300 ppm) of
//! 1 (both where the chunk starts and where its ramp ends), output `n` is the input sample
//! nearest to its position, `round(t_n)`, with the same positions and the same output count
//! as the cubic path: contiguous copies, one input sample repeated (positive correction) or
//! skipped (negative) wherever `round(t_n) - n` changes. The position moves by at most 0.144
//! sample per 10 ms chunk at 48 kHz (0.048 at 16 kHz) against the plain delay line, so a
//! chunk holds at most one slip (two, repeat and skip, when its ramp crosses a ratio of 1),
//! and at 300 ppm a slip comes at most once per 3,333 samples (~70 ms at 48 kHz). A slip is
//! a 21 us (48 kHz) or 63 us (16 kHz) timing step, between slips the signal is exact (no
//! interpolation smoothing at all), and the time error against the ideal position is at most
//! half a sample; for speech to a recognizer or a recording we judge that negligible (not
//! verified by listening tests) next to the interpolation's cost. It saves the
//! interpolation, and when no slip falls in a chunk, the output copy too: `process`
//! then returns the run straight from the FIFO. Beyond the threshold (a sender far off, or
//! the controller catching up after a jump) the cubic path runs exactly as before; the mode
//! is chosen per chunk from the same `t`/`step` bookkeeping, so switching neither loses nor
//! duplicates output, at the cost of a sub-sample position step at the switch.
//!
//! The FIFO is compacted lazily: `process` advances a read offset and `push` moves the few
//! unread samples to the front only when the new input does not fit behind them (with the
//! usual 20 ms pushes, that moves the 3 history samples instead of a whole chunk).

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

    /// The FIFO's free space for exactly `n` more input samples, to be written in place (a
    /// decoder writes straight into it: no copy); `None` when `n` do not fit now, and the
    /// caller pushes through [`DriftResampler::push`] instead. The samples count once
    /// [`DriftResampler::commit`] says how many were written.
    pub fn input_slot(&mut self, n: usize) -> Option<&mut [f32]> {
        each!(self, r => r.input_slot(n))
    }

    /// Takes the first `n` samples written into the last [`DriftResampler::input_slot`] as
    /// input (at most the slot's length).
    pub fn commit(&mut self, n: usize) {
        each!(self, r => r.commit(n))
    }

    /// Resamples one chunk if the FIFO holds one; returns the output samples.
    ///
    /// At equal rates with a correction within [`WHOLE_SAMPLE_MAX`], the output is whole input
    /// samples (one repeated or skipped where the drift adds up to a sample; see the module
    /// docs), often a slice of the FIFO itself; beyond it, cubic interpolation.
    pub fn process(&mut self) -> Option<&[f32]> {
        each!(self, r => r.process())
    }

    /// Sets the drift correction: the ratio becomes `nominal * (1 + correction)`, ramped over
    /// the next chunk. Clamped to +-0.9 %. At equal rates, corrections within
    /// [`WHOLE_SAMPLE_MAX`] are applied by repeating or skipping whole samples.
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
            Engine::Cubic(r) => r.pending(),
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

/// Largest deviation of the same-rate step (input samples per output sample) from 1 at which
/// [`DriftResampler`] copies whole samples instead of interpolating (300 ppm, see the module
/// docs): the position then moves by at most 0.144 sample per 10 ms chunk at 48 kHz.
pub const WHOLE_SAMPLE_MAX: f64 = 3e-4;

/// Outputs the cubic interpolator computes per block (two SSE vectors).
const LANES: usize = 8;

/// `floor` of a remainder (well within `i32`) without a libm call: SSE2 has no rounding
/// instruction, so `f32::floor` would be a function call per lane. Truncation, then one down
/// for negative non-integers.
#[inline(always)]
fn floor_small(x: f32) -> i32 {
    let t = x as i32;
    t - i32::from((t as f32) > x)
}

/// The fractional positions of one block: lane `k` at `frac0 + m (a + (m - 1) b) - j` with
/// `m = n + k`.
struct Remainders {
    n: f32,
    frac0: f32,
    a: f32,
    b: f32,
    j: f32,
}

/// [`LANES`] Catmull-Rom outputs: output `k` between `window[k + 1]` and `window[k + 2]` at the
/// block's fractional position `k`. SSE2 (in every x86-64 CPU), four lanes at a time: the
/// compiler left the portable loop scalar.
#[cfg(target_arch = "x86_64")]
#[inline]
fn interpolate_block(window: &[f32], curve: &Remainders, out: &mut [f32]) {
    use std::arch::x86_64::{
        _mm_add_ps, _mm_loadu_ps, _mm_mul_ps, _mm_set_ps, _mm_set1_ps, _mm_storeu_ps, _mm_sub_ps,
    };
    let window = &window[..LANES + 3];
    let out = &mut out[..LANES];
    // SAFETY: SSE2 is in the x86-64 baseline. Every load reads 4 floats starting at most at
    // `window[LANES - 4 + 3]`, which ends inside `window` (LANES + 3 long, checked above), and
    // every store writes 4 floats inside `out` (LANES long); unaligned access is allowed.
    unsafe {
        let half = _mm_set1_ps(0.5);
        let one = _mm_set1_ps(1.0);
        let one_half = _mm_set1_ps(1.5);
        let two = _mm_set1_ps(2.0);
        let two_half = _mm_set1_ps(2.5);
        let (frac0, a, b, j) = (
            _mm_set1_ps(curve.frac0),
            _mm_set1_ps(curve.a),
            _mm_set1_ps(curve.b),
            _mm_set1_ps(curve.j),
        );
        for k in (0..LANES).step_by(4) {
            let m = _mm_add_ps(
                _mm_set1_ps(curve.n),
                _mm_set_ps(k as f32 + 3.0, k as f32 + 2.0, k as f32 + 1.0, k as f32),
            );
            // frac0 + m (a + (m - 1) b) - j, as `remainder` computes it.
            let r = _mm_add_ps(
                frac0,
                _mm_mul_ps(m, _mm_add_ps(a, _mm_mul_ps(_mm_sub_ps(m, one), b))),
            );
            let f = _mm_sub_ps(r, j);
            let p = window.as_ptr().add(k);
            let x0 = _mm_loadu_ps(p);
            let x1 = _mm_loadu_ps(p.add(1));
            let x2 = _mm_loadu_ps(p.add(2));
            let x3 = _mm_loadu_ps(p.add(3));
            let c1 = _mm_mul_ps(half, _mm_sub_ps(x2, x0));
            let c2 = _mm_sub_ps(
                _mm_add_ps(
                    _mm_sub_ps(x0, _mm_mul_ps(two_half, x1)),
                    _mm_mul_ps(two, x2),
                ),
                _mm_mul_ps(half, x3),
            );
            let c3 = _mm_add_ps(
                _mm_mul_ps(half, _mm_sub_ps(x3, x0)),
                _mm_mul_ps(one_half, _mm_sub_ps(x1, x2)),
            );
            let y = _mm_add_ps(_mm_mul_ps(_mm_add_ps(_mm_mul_ps(c3, f), c2), f), c1);
            _mm_storeu_ps(out.as_mut_ptr().add(k), _mm_add_ps(_mm_mul_ps(y, f), x1));
        }
    }
}

/// [`LANES`] Catmull-Rom outputs (portable form of the x86-64 kernel).
#[cfg(not(target_arch = "x86_64"))]
#[inline]
fn interpolate_block(window: &[f32], curve: &Remainders, out: &mut [f32]) {
    for (k, o) in out[..LANES].iter_mut().enumerate() {
        let m = curve.n + k as f32;
        let f = curve.frac0 + m * (curve.a + (m - 1.0) * curve.b) - curve.j;
        let w = &window[k..k + 4];
        *o = catmull_rom(w[0], w[1], w[2], w[3], f);
    }
}

/// Catmull-Rom interpolation between `x1` and `x2` at `frac` (0..1), from four neighbours.
#[inline(always)]
fn catmull_rom(x0: f32, x1: f32, x2: f32, x3: f32, frac: f32) -> f32 {
    let c1 = 0.5 * (x2 - x0);
    let c2 = x0 - 2.5 * x1 + 2.0 * x2 - 0.5 * x3;
    let c3 = 0.5 * (x3 - x0) + 1.5 * (x1 - x2);
    ((c3 * frac + c2) * frac + c1) * frac + x1
}

/// Same-rate drift correction at a position that advances by `step = 1 / (1 + correction)`
/// input samples per output sample: Catmull-Rom interpolation, or the nearest whole sample
/// while the step is within [`WHOLE_SAMPLE_MAX`] of 1.
struct CubicDrift {
    chunk: usize,
    fifo: Box<[f32]>,
    /// Unread samples are `fifo[start..fifo_len]`; the chunk being read starts at `start`.
    start: usize,
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

/// Where a chunk's output was put.
enum Placed {
    /// In `CubicDrift::out`, from its start.
    Out,
    /// In the FIFO, one run from this offset within the chunk's window (no copy).
    Fifo(usize),
}

/// The smallest `n` in `lo..hi` for which `pred` holds, or `hi`; `pred` must be false then
/// true over the range.
fn first_true(mut lo: usize, mut hi: usize, pred: impl Fn(usize) -> bool) -> usize {
    while lo < hi {
        let mid = lo + (hi - lo) / 2;
        if pred(mid) {
            hi = mid;
        } else {
            lo = mid + 1;
        }
    }
    lo
}

impl CubicDrift {
    fn new(chunk: usize) -> Self {
        CubicDrift {
            chunk,
            fifo: vec![0.0; HISTORY + 2 * chunk].into_boxed_slice(),
            start: 0,
            fifo_len: HISTORY,
            out: vec![0.0; chunk + chunk / 50 + 8].into_boxed_slice(),
            t: 1.0,
            step: 1.0,
            target_step: 1.0,
            correction: 0.0,
        }
    }

    /// Unread input samples, not counting the history.
    fn pending(&self) -> usize {
        self.fifo_len - self.start - HISTORY
    }

    /// Moves the unread samples to the front if `n` more do not fit behind them.
    fn make_room(&mut self, n: usize) {
        if self.start > 0 && self.fifo.len() - self.fifo_len < n {
            self.fifo.copy_within(self.start..self.fifo_len, 0);
            self.fifo_len -= self.start;
            self.start = 0;
        }
    }

    fn push(&mut self, input: &[f32]) -> usize {
        self.make_room(input.len());
        let n = input.len().min(self.fifo.len() - self.fifo_len);
        self.fifo[self.fifo_len..self.fifo_len + n].copy_from_slice(&input[..n]);
        self.fifo_len += n;
        n
    }

    fn push_zeros(&mut self, n: usize) -> usize {
        self.make_room(n);
        let n = n.min(self.fifo.len() - self.fifo_len);
        self.fifo[self.fifo_len..self.fifo_len + n].fill(0.0);
        self.fifo_len += n;
        n
    }

    fn input_slot(&mut self, n: usize) -> Option<&mut [f32]> {
        self.make_room(n);
        self.fifo.get_mut(self.fifo_len..self.fifo_len + n)
    }

    fn commit(&mut self, n: usize) {
        self.fifo_len = (self.fifo_len + n).min(self.fifo.len());
    }

    /// Output `n` of a chunk sits at input position `t_n = t0 + n * step + dstep * n (n - 1) / 2`
    /// (the step ramps linearly from `step` to `target_step`), for every `n` with
    /// `floor(t_n) < HISTORY + chunk - 2`; the next chunk starts at that first `t_n` less
    /// `chunk`. The value is the input at `t_n`: cubic interpolation ([`CubicDrift::cubic`]),
    /// or, when both `step` and `target_step` are within [`WHOLE_SAMPLE_MAX`] of 1, the sample
    /// at `round(t_n)` ([`CubicDrift::nearest`]).
    fn process(&mut self) -> Option<&[f32]> {
        let len = HISTORY + self.chunk;
        if self.fifo_len - self.start < len {
            return None;
        }
        let base = self.start;
        let e = &self.fifo[base..base + len];
        // Ramp the step linearly over this chunk's outputs.
        let expected = (self.chunk as f64 / self.step).max(1.0);
        let dstep = (self.target_step - self.step) / expected;
        let whole = (self.step - 1.0).abs() <= WHOLE_SAMPLE_MAX
            && (self.target_step - 1.0).abs() <= WHOLE_SAMPLE_MAX;
        let (n, placed) = if whole {
            Self::nearest(e, &mut self.out, self.t, self.step, dstep)
        } else {
            (
                Self::cubic(e, &mut self.out, self.t, self.step, dstep),
                Placed::Out,
            )
        };
        let nf = n as f64;
        let t = self.t + nf * self.step + dstep * nf * (nf - 1.0) / 2.0;
        self.step = self.target_step;
        self.t = t - self.chunk as f64;
        // The chunk's samples stay where they are until a push needs the room.
        self.start += self.chunk;
        Some(match placed {
            Placed::Out => &self.out[..n],
            Placed::Fifo(s) => &self.fifo[base + s..base + s + n],
        })
    }

    /// Whole-sample rendering of one chunk window `e`: output `n` is `e[floor(t_n + 0.5)]`,
    /// with `t_n` in `f64` exactly as [`CubicDrift::process`] advances `t`. `t_n` increases
    /// with `n` (each step is within 300 ppm of 1), so the output count is a binary search;
    /// `round(t_n) - n` is monotone except where the ramp crosses a step of exactly 1, so
    /// each of the (at most two) monotone pieces is a few runs whose ends are binary searches
    /// too, each run one `copy_from_slice`. When the whole chunk is one run it is left in the
    /// FIFO. Returns the output count and where the outputs are.
    fn nearest(e: &[f32], out: &mut [f32], t: f64, step: f64, dstep: f64) -> (usize, Placed) {
        let pos = |n: usize| {
            let nf = n as f64;
            t + nf * step + dstep * nf * (nf - 1.0) / 2.0
        };
        let limit = (e.len() - 2) as f64;
        // `floor(t_n) < limit` exactly when `t_n < limit` (an integer).
        let count = first_true(0, out.len(), |n| pos(n) >= limit);
        if count == 0 {
            return (0, Placed::Out);
        }
        // Offset of output n's source from n.
        let offset = |n: usize| (pos(n) + 0.5).floor() as isize - n as isize;
        // `t_{n+1} - t_n - 1 = step - 1 + dstep n` changes sign at most once, at `turn`.
        let turn = (1.0 - step) / dstep;
        let split = if dstep != 0.0 && turn > 0.0 && turn < count as f64 {
            turn.ceil() as usize
        } else {
            count
        };
        let first = offset(0);
        if split == count
            && offset(count - 1) == first
            && let Some(s) = usize::try_from(first).ok().filter(|s| s + count <= e.len())
        {
            return (count, Placed::Fifo(s));
        }
        for (lo, hi) in [(0, split), (split, count)] {
            let mut lo = lo;
            while lo < hi {
                let d = offset(lo);
                let end = first_true(lo + 1, hi, |k| offset(k) != d);
                // Positions stay within [1, len - 2] (see `process`); a window that does not
                // contain the source would be a bookkeeping bug: stop there, counted as is.
                let src = usize::try_from(lo as isize + d)
                    .ok()
                    .and_then(|s| e.get(s..s + (end - lo)));
                let Some(src) = src else {
                    return (lo, Placed::Out);
                };
                out[lo..end].copy_from_slice(src);
                lo = end;
            }
        }
        (count, Placed::Out)
    }

    /// Catmull-Rom rendering of one chunk window `e` into `out`; returns the output count.
    ///
    /// Written as `t_n = i0 + n + r_n` with `i0 = floor(t0)`, the remainder `r_n` stays within
    /// a few samples (the correction is at most 0.9 %), so it is computed in `f32` in closed
    /// form, lane by lane, with no loop-carried dependency: blocks of [`LANES`] outputs whose
    /// remainders share one integer part (nearly all of them) are four shifted slices and a
    /// polynomial, which the compiler vectorises. The few blocks where the integer part
    /// changes take the scalar path.
    fn cubic(e: &[f32], out: &mut [f32], t: f64, step: f64, dstep: f64) -> usize {
        let len = e.len();
        let limit = len - 2;
        let i0 = t as usize;
        let frac0 = (t - i0 as f64) as f32;
        let a = (step - 1.0) as f32;
        let b = (dstep / 2.0) as f32;
        // Same operations in the same order as the kernel, so both see the same values.
        let remainder = |n: usize| {
            let nf = n as f32;
            frac0 + nf * (a + (nf - 1.0) * b)
        };
        let cap = out.len();
        // r_{n+1} - r_n = a + 2 b n keeps one sign over the chunk unless the ramp crosses a
        // ratio of exactly 1: then a block's two ends bound all of it.
        let monotone = a * (a + 2.0 * b * cap as f32) >= 0.0;
        let mut n = 0;
        'outer: while n < cap {
            if n + LANES <= cap {
                let j = floor_small(remainder(n));
                let j_last = floor_small(remainder(n + LANES - 1));
                let uniform = j == j_last
                    && (monotone || (n + 1..n + LANES - 1).all(|m| floor_small(remainder(m)) == j));
                // Positions never decrease within a block (each output advances 1 +- 0.9 %).
                let last = (i0 + n + LANES - 1) as isize + j_last as isize;
                let base = (i0 + n) as isize + j as isize;
                if uniform && last < limit as isize && base >= 1 {
                    let base = base as usize;
                    // `last < limit` puts `base + LANES + 1` inside `e`.
                    let window = &e[base - 1..base + LANES + 2];
                    let curve = Remainders {
                        n: n as f32,
                        frac0,
                        a,
                        b,
                        j: j as f32,
                    };
                    interpolate_block(window, &curve, &mut out[n..n + LANES]);
                    n += LANES;
                    continue;
                }
            }
            // Scalar: one output at a time, each with its own integer part.
            for _ in 0..LANES {
                if n >= cap {
                    break 'outer;
                }
                let r = remainder(n);
                let j = floor_small(r);
                let i = (i0 + n) as isize + j as isize;
                let j = j as f32;
                if i >= limit as isize {
                    break 'outer;
                }
                let Some(w) = usize::try_from(i - 1).ok().and_then(|s| e.get(s..s + 4)) else {
                    break 'outer;
                };
                out[n] = catmull_rom(w[0], w[1], w[2], w[3], r - j);
                n += 1;
            }
        }
        n
    }

    fn set_correction(&mut self, correction: f64) {
        let c = correction.clamp(-0.009, 0.009);
        self.correction = c;
        self.target_step = 1.0 / (1.0 + c);
    }

    fn reset(&mut self) {
        self.fifo[..HISTORY].fill(0.0);
        self.start = 0;
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

    fn input_slot(&mut self, n: usize) -> Option<&mut [f32]> {
        self.fifo.get_mut(self.fifo_len..self.fifo_len + n)
    }

    fn commit(&mut self, n: usize) {
        self.fifo_len = (self.fifo_len + n).min(self.fifo.len());
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

    #[test]
    fn writing_in_place_resamples_like_pushing() {
        for (from, to) in [
            (SampleRate::HZ_48000, SampleRate::HZ_48000),
            (SampleRate::HZ_48000, SampleRate::HZ_16000),
        ] {
            let mut pushed = DriftResampler::new(from, to).unwrap();
            let mut placed = DriftResampler::new(from, to).unwrap();
            let (mut a, mut b) = (Vec::new(), Vec::new());
            let mut in_place = 0;
            for k in 0..50 {
                let input: Vec<f32> = (0..960)
                    .map(|i| ((k * 960 + i) as f32 * 0.01).sin())
                    .collect();
                pushed.set_correction(0.0002);
                placed.set_correction(0.0002);
                let mut rest = &input[..];
                while !rest.is_empty() {
                    let n = pushed.push(rest);
                    rest = &rest[n..];
                    while let Some(o) = pushed.process() {
                        a.extend_from_slice(o);
                    }
                }
                if let Some(slot) = placed.input_slot(input.len()) {
                    slot.copy_from_slice(&input);
                    placed.commit(input.len());
                    in_place += 1;
                } else {
                    let mut rest = &input[..];
                    while !rest.is_empty() {
                        let n = placed.push(rest);
                        rest = &rest[n..];
                        while let Some(o) = placed.process() {
                            b.extend_from_slice(o);
                        }
                    }
                }
                while let Some(o) = placed.process() {
                    b.extend_from_slice(o);
                }
            }
            assert!(in_place > 0, "{from:?} -> {to:?}: the slot was never free");
            assert_eq!(a, b, "{from:?} -> {to:?}");
        }
    }

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

    /// The definition the same-rate engine must follow: output `n` of a chunk at input
    /// position `t0 + n * step + dstep * n (n - 1) / 2`, in `f64`, one output at a time, from
    /// an unbounded FIFO: the nearest sample while both ends of the step ramp are within
    /// [`WHOLE_SAMPLE_MAX`] of 1, else Catmull-Rom.
    struct Reference {
        chunk: usize,
        fifo: Vec<f32>,
        t: f64,
        step: f64,
        target_step: f64,
    }

    impl Reference {
        fn new(chunk: usize) -> Self {
            Self {
                chunk,
                fifo: vec![0.0; HISTORY],
                t: 1.0,
                step: 1.0,
                target_step: 1.0,
            }
        }

        fn set_correction(&mut self, c: f64) {
            self.target_step = 1.0 / (1.0 + c.clamp(-0.009, 0.009));
        }

        fn whole(&self) -> bool {
            (self.step - 1.0).abs() <= WHOLE_SAMPLE_MAX
                && (self.target_step - 1.0).abs() <= WHOLE_SAMPLE_MAX
        }

        fn process(&mut self, out: &mut Vec<f32>) -> bool {
            let len = HISTORY + self.chunk;
            if self.fifo.len() < len {
                return false;
            }
            let whole = self.whole();
            let expected = (self.chunk as f64 / self.step).max(1.0);
            let dstep = (self.target_step - self.step) / expected;
            let mut n = 0usize;
            loop {
                let nf = n as f64;
                let t = self.t + nf * self.step + dstep * nf * (nf - 1.0) / 2.0;
                let i = t.floor() as usize;
                if i >= len - 2 {
                    self.t = t - self.chunk as f64;
                    break;
                }
                if whole {
                    out.push(self.fifo[(t + 0.5).floor() as usize]);
                } else {
                    let f = &self.fifo[i - 1..i + 3];
                    out.push(catmull_rom(f[0], f[1], f[2], f[3], (t - i as f64) as f32));
                }
                n += 1;
            }
            self.step = self.target_step;
            self.fifo.drain(..self.chunk);
            true
        }
    }

    fn signal(x: usize) -> f32 {
        let x = x as f32;
        (x * 0.7).sin() * 0.4 + (x * 0.013).sin() * 0.3 + (x * x * 1e-7).sin() * 0.2
    }

    #[test]
    fn vectorised_interpolator_follows_the_definition() {
        // A chirp-like signal and a correction that changes every chunk, across the full
        // range and through zero, so blocks cross integer positions both ways. Corrections
        // are kept beyond the whole-sample threshold, so every chunk interpolates.
        let chunk = 480;
        let mut fast = CubicDrift::new(chunk);
        let mut slow = Reference::new(chunk);
        let (mut a, mut b) = (Vec::new(), Vec::new());
        let mut seed = 0x2545_f491_u32;
        let mut interpolated = 0;
        for c in 0..400 {
            let input: Vec<f32> = (0..chunk).map(|k| signal(c * chunk + k)).collect();
            seed ^= seed << 13;
            seed ^= seed >> 17;
            seed ^= seed << 5;
            let corr = (f64::from(seed % 2001) - 1000.0) / 1000.0 * 0.009;
            let corr = if corr.abs() < 0.001 {
                0.001_f64.copysign(corr)
            } else {
                corr
            };
            fast.set_correction(corr);
            slow.set_correction(corr);
            interpolated += usize::from(!slow.whole());
            assert_eq!(fast.push(&input), chunk);
            slow.fifo.extend_from_slice(&input);
            let got = fast.process().unwrap().to_vec();
            let before = b.len();
            assert!(slow.process(&mut b));
            assert_eq!(got.len(), b.len() - before, "chunk {c}: output count");
            a.extend_from_slice(&got);
            assert!(fast.process().is_none());
        }
        assert_eq!(interpolated, 400, "every chunk took the cubic path");
        let worst = a
            .iter()
            .zip(&b)
            .map(|(x, y)| (x - y).abs())
            .fold(0.0f32, f32::max);
        assert!(worst < 1e-4, "largest difference {worst}");
        // Net correction is tracked: output count differs from input by the integral.
        assert!((a.len() as i64 - 400 * chunk as i64).abs() < 2000);
    }

    #[test]
    fn small_corrections_copy_whole_samples() {
        for (chunk, c) in [(480, 5e-5), (480, -5e-5), (480, 2.9e-4), (160, -2.9e-4)] {
            let chunks = 2000;
            let mut r = CubicDrift::new(chunk);
            // Input sample k is k + 1 (exact in f32): every output names its source.
            let input: Vec<f32> = (0..chunks * chunk).map(|k| (k + 1) as f32).collect();
            let mut out: Vec<f32> = Vec::new();
            let mut slips = 0;
            for piece in input.chunks(chunk) {
                r.set_correction(c);
                assert_eq!(r.push(piece), chunk);
                let o = r.process().unwrap();
                let mut in_chunk = 0;
                for &v in o {
                    assert_eq!(v.fract(), 0.0, "{v} is an input sample");
                    if let Some(&prev) = out.last() {
                        let d = v - prev;
                        if prev > 0.0 && d != 1.0 {
                            // A repeat for a positive correction, a skip for a negative one.
                            assert_eq!(d, if c > 0.0 { 0.0 } else { 2.0 }, "c {c}");
                            in_chunk += 1;
                        }
                    }
                    out.push(v);
                }
                assert!(in_chunk <= 1, "{in_chunk} slips in one chunk (c {c})");
                slips += in_chunk;
                assert!(r.process().is_none());
            }
            // Output = input x (1 + c), and one slip per 1/|c| samples.
            let n = (chunks * chunk) as f64;
            let expected = n * (1.0 + c);
            assert!(
                (out.len() as f64 - expected).abs() <= 2.0,
                "{} vs {expected}",
                out.len()
            );
            assert!(
                (slips as f64 - n * c.abs()).abs() <= 2.0,
                "{slips} slips (c {c})"
            );
            // Outputs are the input in order, delayed by the history: the two zeros first.
            assert_eq!(&out[..3], &[0.0, 0.0, 1.0]);
        }
    }

    #[test]
    fn mode_switches_follow_the_definition() {
        // Corrections that hop in and out of whole-sample mode (also with ramps crossing a
        // ratio of 1 both within and beyond the threshold), pushed in irregular pieces so the
        // lazily compacted FIFO wraps at every phase; compared with the unbounded reference.
        let chunk = 480;
        let pattern = [
            5e-5, -2e-4, 1e-4, 3e-3, -4e-3, 2.5e-4, 0.0, -6e-4, 1e-5, -1e-5,
        ];
        let sizes = [7, 333, 480, 1000, 1, 250, 960, 479];
        let mut fast = CubicDrift::new(chunk);
        let mut slow = Reference::new(chunk);
        let (mut a, mut b) = (Vec::new(), Vec::new());
        let (mut chunks, mut whole, mut fed) = (0, 0, 0);
        for (p, &size) in sizes.iter().cycle().take(400).enumerate() {
            let input: Vec<f32> = (fed..fed + size).map(signal).collect();
            fed += size;
            let mut rest = &input[..];
            while !rest.is_empty() {
                let k = fast.push(rest);
                assert!(k > 0 || fast.pending() >= chunk, "piece {p}: push stalled");
                slow.fifo.extend_from_slice(&rest[..k]);
                rest = &rest[k..];
                loop {
                    let c = pattern[chunks % pattern.len()];
                    fast.set_correction(c);
                    slow.set_correction(c);
                    let mode = slow.whole();
                    let Some(o) = fast.process() else {
                        assert!(!slow.process(&mut b));
                        break;
                    };
                    a.extend_from_slice(o);
                    assert!(slow.process(&mut b));
                    assert_eq!(a.len(), b.len(), "chunk {chunks}: output count");
                    whole += usize::from(mode);
                    chunks += 1;
                }
                assert_eq!(fast.pending(), slow.fifo.len() - HISTORY);
            }
        }
        assert!(
            whole > chunks / 5 && whole < chunks * 4 / 5,
            "{whole} of {chunks}"
        );
        for (k, (x, y)) in a.iter().zip(&b).enumerate() {
            assert!((x - y).abs() < 1e-4, "output {k}: {x} vs {y}");
        }
        // The count follows the corrections' integral.
        let mean: f64 = pattern.iter().sum::<f64>() / pattern.len() as f64;
        let expected = (chunks * chunk) as f64 * (1.0 + mean);
        assert!(
            (a.len() as f64 - expected).abs() < 10.0,
            "{} vs {expected}",
            a.len()
        );
    }

    #[test]
    fn ramp_through_a_ratio_of_one_slips_both_ways() {
        // A whole-sample chunk whose step ramps across 1 moves its position forward then back
        // (or back then forward); started near a half sample, it skips and then repeats (or
        // the reverse) within the chunk: both slips land where the definition puts them.
        let chunk = 480;
        let input: Vec<f32> = (0..chunk).map(|k| (k + 1) as f32).collect();
        let mut both = 0;
        for (step, target) in [(1.0 + 2.9e-4, 1.0 - 2.9e-4), (1.0 - 2.9e-4, 1.0 + 2.9e-4)] {
            for k in 0..200 {
                let t = 1.4 + f64::from(k) * 0.001;
                let mut fast = CubicDrift::new(chunk);
                let mut slow = Reference::new(chunk);
                (fast.t, fast.step, fast.target_step) = (t, step, target);
                (slow.t, slow.step, slow.target_step) = (t, step, target);
                assert!(slow.whole());
                fast.push(&input);
                slow.fifo.extend_from_slice(&input);
                let got = fast.process().unwrap().to_vec();
                let mut want = Vec::new();
                assert!(slow.process(&mut want));
                assert_eq!(got, want, "t0 {t}, step {step}");
                let jumps: Vec<f32> = got.windows(2).map(|w| w[1] - w[0]).collect();
                both += usize::from(jumps.contains(&0.0) && jumps.contains(&2.0));
            }
        }
        assert!(both > 10, "{both} chunks slipped both ways");
    }

    #[test]
    fn zero_correction_is_a_delay_line() {
        let mut r = CubicDrift::new(160);
        let input: Vec<f32> = (0..1600).map(|i| (i as f32 * 0.1).sin()).collect();
        let mut out = Vec::new();
        for c in input.chunks(160) {
            r.set_correction(0.0);
            r.push(c);
            out.extend_from_slice(r.process().unwrap());
        }
        assert_eq!(out.len(), 1600);
        // Position t = 1 of the FIFO is two samples before the first input: a fixed delay of
        // two, bit-exact.
        assert_eq!(&out[..2], &[0.0, 0.0]);
        for (k, v) in out.iter().enumerate().skip(2) {
            assert_eq!(v.to_bits(), input[k - 2].to_bits(), "sample {k}");
        }
    }

    #[test]
    fn counts_balance() {
        let mut r = DriftResampler::new(SampleRate::HZ_48000, SampleRate::HZ_16000).unwrap();
        let out = run(&mut r, 48_000);
        assert!((out as i64 - 16_000).abs() <= 160, "{out}");
        for c in [0.001, 1e-4] {
            let mut r = DriftResampler::new(SampleRate::HZ_16000, SampleRate::HZ_16000).unwrap();
            r.set_correction(c);
            let out = run(&mut r, 160_000);
            let expected = 160_000.0 * (1.0 + c);
            assert!((out as f64 - expected).abs() <= 40.0, "{out} vs {expected}");
        }
    }
}
