//! A crash-safe PCM16 WAV writer.
//!
//! A recording bot can be killed at any moment (OOM killer, `kill -9`, a node drained). The
//! writer keeps the file playable throughout: the RIFF header is written first with the sizes of
//! the data checkpointed so far, and [`WavWriter::checkpoint`] rewrites the two size fields. After
//! a crash, a player sees the audio up to the last checkpoint (the recorder checkpoints every
//! second of audio by default), less what was still in the writer's buffer then (under one
//! [`CHUNK`]: 0.34 s of 48 kHz mono, 1 s of 16 kHz mono); bytes beyond the declared `data` size
//! are ignored by players.
//!
//! **Aligned writes.** Samples go to the file in whole [`CHUNK`]s at offsets that are multiples of
//! [`CHUNK`] (the 44-byte header sits at the start of the first one), and a checkpoint writes only
//! the header: it declares the data in the chunks already written instead of flushing a partial
//! one. Writes that start and end on those boundaries let the page cache take each chunk whole;
//! measured on ext4 (500 files written round-robin in 1920-byte frames with a checkpoint per
//! second of audio), that took ~35 % less kernel time per MB than the same data sent 44 bytes
//! off the boundary with a partial flush at each checkpoint (`docs/performance.md`).
//!
//! Durability (fsync) is a separate, slower policy: [`WavWriter::checkpoint`] takes a flag, and the
//! recorder asks for `fdatasync` every `fsync_interval` (see [`crate::config`]) and at close. The
//! periodic ones run on the process's sync thread ([`super::syncer`]), so a slow disk does not
//! hold up the thread writing; the one at close runs here.
//!
//! A RIFF file holds at most 4 GiB of data; [`WavWriter::remaining_samples`] lets the recorder
//! roll over to a new segment before that (12 hours of 48 kHz mono).

use std::fs::File;
use std::io;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use super::syncer::SyncHandle;

/// Size of the canonical 44-byte PCM WAV header this writer produces.
pub const HEADER_LEN: u64 = 44;

/// Largest `data` chunk a RIFF file can declare (its size fields are 32-bit).
pub const MAX_DATA_BYTES: u64 = u32::MAX as u64 - HEADER_LEN;

/// Bytes per write, and the boundary writes start on: a write every ~340 ms per 48 kHz mono
/// track. The buffer is resident per open track, so it is not larger.
pub const CHUNK: usize = 32 * 1024;

/// Writes 16-bit little-endian PCM to a WAV file whose header stays valid while it grows.
#[derive(Debug)]
pub struct WavWriter {
    path: PathBuf,
    /// The file; shared with `sync` for background `fdatasync`s.
    file: Arc<File>,
    /// The chunk being filled: the file's bytes from `chunk_start`, not yet written.
    buf: Vec<u8>,
    /// File offset of `buf[0]`, a multiple of [`CHUNK`]; everything before it is in the file.
    chunk_start: u64,
    sync: SyncHandle,
    sample_rate: u32,
    channels: u16,
    /// Bytes of sample data written (buffered or not).
    data_bytes: u64,
    /// Bytes of sample data the header currently declares.
    checkpointed_bytes: u64,
}

impl WavWriter {
    /// Creates (or truncates) `path` and writes a header declaring zero samples.
    ///
    /// # Errors
    /// Any I/O error creating or writing the file.
    pub fn create(path: impl AsRef<Path>, sample_rate: u32, channels: u16) -> io::Result<Self> {
        let path = path.as_ref().to_path_buf();
        let file = Arc::new(File::create(&path)?);
        let sync = SyncHandle::new(Arc::clone(&file));
        // On disk at once, so the file is a valid (empty) WAV from the start; the first chunk
        // carries it again.
        let h = header(sample_rate, channels, 0);
        file.write_all_at(&h, 0)?;
        let mut buf = Vec::with_capacity(CHUNK);
        buf.extend_from_slice(&h);
        Ok(Self {
            path,
            file,
            buf,
            chunk_start: 0,
            sync,
            sample_rate,
            channels,
            data_bytes: 0,
            checkpointed_bytes: 0,
        })
    }

    /// The file this writer writes.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Sample rate in Hz declared in the header.
    pub fn sample_rate(&self) -> u32 {
        self.sample_rate
    }

    /// Samples (per channel: frames) written so far.
    pub fn samples_written(&self) -> u64 {
        self.data_bytes / self.frame_bytes()
    }

    /// How many more sample frames fit before the 4 GiB RIFF limit.
    pub fn remaining_samples(&self) -> u64 {
        (MAX_DATA_BYTES - self.data_bytes) / self.frame_bytes()
    }

    /// Appends interleaved samples.
    ///
    /// # Errors
    /// I/O errors (disk full, ...); `InvalidInput` when the write would pass the RIFF size limit.
    pub fn write_samples(&mut self, samples: &[i16]) -> io::Result<()> {
        let bytes = samples.len() as u64 * 2;
        self.ensure_room(bytes)?;
        self.append(&le_bytes(samples))?;
        self.data_bytes += bytes;
        Ok(())
    }

    /// Appends samples already in the file's format: 16-bit little-endian PCM, interleaved (what
    /// the transcription feed's audio messages carry), copied as they are.
    ///
    /// # Errors
    /// As [`WavWriter::write_samples`]; `InvalidInput` also when `pcm` is not a whole number of
    /// sample frames.
    pub fn write_pcm_le(&mut self, pcm: &[u8]) -> io::Result<()> {
        let frame = 2 * usize::from(self.channels);
        if !pcm.len().is_multiple_of(frame) {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "wav data must be whole 16-bit sample frames",
            ));
        }
        let bytes = pcm.len() as u64;
        self.ensure_room(bytes)?;
        self.append(pcm)?;
        self.data_bytes += bytes;
        Ok(())
    }

    /// Appends `frames` sample frames of digital silence.
    ///
    /// # Errors
    /// As [`WavWriter::write_samples`].
    pub fn write_silence(&mut self, frames: u64) -> io::Result<()> {
        let bytes = frames * self.frame_bytes();
        self.ensure_room(bytes)?;
        let mut left = bytes;
        while left > 0 {
            self.make_room()?;
            let n = left.min((CHUNK - self.buf.len()) as u64) as usize;
            self.buf.resize(self.buf.len() + n, 0);
            left -= n as u64;
        }
        self.data_bytes += bytes;
        Ok(())
    }

    /// Rewrites the header's size fields to declare the samples already in the file (all written
    /// but the chunk being filled, under [`CHUNK`] bytes), so that the file as it is now on disk
    /// plays them. It writes no samples: a partial chunk would break the aligned writes (module
    /// docs). With `sync`, also asks the sync thread for an `fdatasync` of the file (without
    /// waiting for it).
    ///
    /// # Errors
    /// Any I/O error, including one a background sync met since the last checkpoint; the header
    /// then still declares the previous checkpoint.
    pub fn checkpoint(&mut self, sync: bool) -> io::Result<()> {
        if let Some(e) = self.sync.take_error() {
            return Err(e);
        }
        let in_file = self.chunk_start.saturating_sub(HEADER_LEN);
        self.declare(in_file - in_file % self.frame_bytes())?;
        if sync {
            self.sync.request();
        }
        Ok(())
    }

    /// Checkpoints, syncs (on this thread) and closes the file, returning the sample frames it
    /// holds.
    ///
    /// # Errors
    /// Any I/O error of the final checkpoint or sync, or one a background sync met.
    pub fn finalize(mut self) -> io::Result<u64> {
        if let Some(e) = self.sync.take_error() {
            return Err(e);
        }
        self.write_buf()?;
        self.declare(self.data_bytes)?;
        self.file.sync_data()?;
        Ok(self.samples_written())
    }

    /// Bytes of one sample frame (all channels).
    fn frame_bytes(&self) -> u64 {
        2 * u64::from(self.channels)
    }

    /// Writes the header declaring `data_bytes` (already in the file) unless it already does.
    fn declare(&mut self, data_bytes: u64) -> io::Result<()> {
        if data_bytes != self.checkpointed_bytes {
            // The whole header in one positioned write (one syscall where seeking to each size
            // field and back took five).
            let h = header(self.sample_rate, self.channels, data_bytes as u32);
            self.file.write_all_at(&h, 0)?;
            self.checkpointed_bytes = data_bytes;
        }
        Ok(())
    }

    /// Appends `bytes` to the chunk being filled, writing each chunk that fills.
    fn append(&mut self, mut bytes: &[u8]) -> io::Result<()> {
        while !bytes.is_empty() {
            self.make_room()?;
            let n = bytes.len().min(CHUNK - self.buf.len());
            self.buf.extend_from_slice(&bytes[..n]);
            bytes = &bytes[n..];
        }
        self.make_room()
    }

    /// Writes the chunk if it is full and starts the next one.
    fn make_room(&mut self) -> io::Result<()> {
        if self.buf.len() == CHUNK {
            self.write_buf()?;
            self.chunk_start += CHUNK as u64;
            self.buf.clear();
        }
        Ok(())
    }

    /// Writes the chunk being filled, as far as it is, at its place in the file.
    fn write_buf(&mut self) -> io::Result<()> {
        if self.chunk_start == 0 && self.buf.len() >= HEADER_LEN as usize {
            // The first chunk carries the header: the one on disk, not the one of creation.
            let h = header(
                self.sample_rate,
                self.channels,
                self.checkpointed_bytes as u32,
            );
            self.buf[..HEADER_LEN as usize].copy_from_slice(&h);
        }
        self.file.write_all_at(&self.buf, self.chunk_start)
    }

    fn ensure_room(&self, bytes: u64) -> io::Result<()> {
        if self.data_bytes + bytes > MAX_DATA_BYTES {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "wav data would exceed the 4 GiB RIFF limit; roll over to a new segment",
            ));
        }
        Ok(())
    }
}

/// `samples` as 16-bit little-endian bytes: on a little-endian machine their own memory, borrowed
/// (no conversion, no copy), else a converted copy.
#[cfg(target_endian = "little")]
pub(crate) fn le_bytes(samples: &[i16]) -> std::borrow::Cow<'_, [u8]> {
    // SAFETY: on a little-endian target the memory of an `i16` slice is exactly its 16-bit
    // little-endian encoding; `u8` has no alignment requirement, `i16` has no padding, and the
    // byte slice covers the same `2 * len` initialized bytes, borrowed for as long as `samples`.
    let bytes =
        unsafe { std::slice::from_raw_parts(samples.as_ptr().cast::<u8>(), samples.len() * 2) };
    std::borrow::Cow::Borrowed(bytes)
}

/// `samples` as 16-bit little-endian bytes (converted copy on a big-endian machine).
#[cfg(not(target_endian = "little"))]
pub(crate) fn le_bytes(samples: &[i16]) -> std::borrow::Cow<'_, [u8]> {
    std::borrow::Cow::Owned(samples.iter().flat_map(|s| s.to_le_bytes()).collect())
}

/// The canonical 44-byte PCM header for `data_bytes` of 16-bit samples.
fn header(sample_rate: u32, channels: u16, data_bytes: u32) -> [u8; HEADER_LEN as usize] {
    let block_align = channels * 2;
    let byte_rate = sample_rate * u32::from(block_align);
    let mut h = [0u8; HEADER_LEN as usize];
    h[0..4].copy_from_slice(b"RIFF");
    h[4..8].copy_from_slice(&(36 + data_bytes).to_le_bytes());
    h[8..12].copy_from_slice(b"WAVE");
    h[12..16].copy_from_slice(b"fmt ");
    h[16..20].copy_from_slice(&16u32.to_le_bytes());
    h[20..22].copy_from_slice(&1u16.to_le_bytes()); // PCM
    h[22..24].copy_from_slice(&channels.to_le_bytes());
    h[24..28].copy_from_slice(&sample_rate.to_le_bytes());
    h[28..32].copy_from_slice(&byte_rate.to_le_bytes());
    h[32..34].copy_from_slice(&block_align.to_le_bytes());
    h[34..36].copy_from_slice(&16u16.to_le_bytes());
    h[36..40].copy_from_slice(b"data");
    h[40..44].copy_from_slice(&data_bytes.to_le_bytes());
    h
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn tmp(name: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("mediabot-wav-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        dir.join(name)
    }

    /// Samples of data in the first chunk (after the header).
    const FIRST_CHUNK_SAMPLES: usize = (CHUNK - HEADER_LEN as usize) / 2;

    #[test]
    fn header_declares_checkpointed_samples_and_hound_reads_them() {
        let path = tmp("a.wav");
        let mut w = WavWriter::create(&path, 16_000, 1).unwrap();
        assert_eq!(
            hound::WavReader::open(&path).unwrap().len(),
            0,
            "valid at once"
        );
        let ramp: Vec<i16> = (0..16_000).map(|i| (i * 7) as i16).collect();
        w.write_samples(&ramp).unwrap();
        w.write_silence(4_000).unwrap();
        w.checkpoint(false).unwrap();
        // The checkpoint declares the first chunk, the one written; the rest of the 20,000
        // samples is still in the buffer: a crash here loses only that.
        let r = hound::WavReader::open(&path).unwrap();
        assert_eq!(r.spec().sample_rate, 16_000);
        assert_eq!(r.len() as usize, FIRST_CHUNK_SAMPLES);
        let got: Vec<i16> = r.into_samples().map(|s| s.unwrap()).collect();
        assert_eq!(&got[..16_000], &ramp[..]);
        assert!(got[16_000..].iter().all(|&s| s == 0));
        assert_eq!(std::fs::metadata(&path).unwrap().len(), CHUNK as u64);
        assert_eq!(w.finalize().unwrap(), 20_000);
        assert_eq!(hound::WavReader::open(&path).unwrap().len(), 20_000);
    }

    #[test]
    fn writes_are_whole_chunks_on_chunk_boundaries_and_checkpoints_write_only_the_header() {
        let samples: Vec<i16> = (0..50_000)
            .map(|i| (i * 7919 % 65_536 - 32_768) as i16)
            .collect();
        let bytes: Vec<u8> = samples.iter().flat_map(|s| s.to_le_bytes()).collect();
        assert_eq!(&*le_bytes(&samples), &bytes[..]);
        let (pa, pb) = (tmp("d.wav"), tmp("e.wav"));
        let mut a = WavWriter::create(&pa, 16_000, 1).unwrap();
        let mut b = WavWriter::create(&pb, 16_000, 1).unwrap();
        let mut declared_before = 0;
        for (i, (cs, cb)) in samples.chunks(320).zip(bytes.chunks(640)).enumerate() {
            a.write_samples(cs).unwrap();
            b.write_pcm_le(cb).unwrap();
            let len = std::fs::metadata(&pa).unwrap().len();
            assert!(
                len == HEADER_LEN || len.is_multiple_of(CHUNK as u64),
                "only whole chunks reach the file: {len}"
            );
            if i % 4 == 3 {
                a.checkpoint(false).unwrap();
                b.checkpoint(false).unwrap();
                // The file is a complete WAV of every chunk written, and the checkpoint did not
                // lengthen it.
                let on_disk = std::fs::read(&pa).unwrap();
                assert_eq!(on_disk.len() as u64, len);
                let declared = len - HEADER_LEN;
                assert_eq!(on_disk[..44], header(16_000, 1, declared as u32));
                assert!(a.data_bytes - declared < CHUNK as u64);
                assert!(declared >= declared_before);
                declared_before = declared;
            }
        }
        assert!(declared_before > 0, "several chunks were written");
        assert_eq!(a.finalize().unwrap(), 50_000);
        assert_eq!(b.finalize().unwrap(), 50_000);
        let fa = std::fs::read(&pa).unwrap();
        assert_eq!(fa, std::fs::read(&pb).unwrap());
        assert_eq!(fa[..44], header(16_000, 1, 100_000));
        assert_eq!(&fa[44..], &bytes[..]);

        let mut st = WavWriter::create(tmp("f.wav"), 16_000, 2).unwrap();
        let err = st.write_pcm_le(&[0, 1]).unwrap_err();
        assert_eq!(
            err.kind(),
            io::ErrorKind::InvalidInput,
            "half a stereo frame"
        );
        assert_eq!(st.samples_written(), 0);
        st.write_pcm_le(&[0, 1, 2, 3]).unwrap();
        assert_eq!(st.samples_written(), 1);
    }

    #[test]
    fn a_checkpoint_declares_whole_sample_frames() {
        // Stereo: a chunk boundary falls inside a sample frame ((32768 - 44) / 4 is not whole),
        // so the header declares the frames before it.
        let path = tmp("g.wav");
        let mut w = WavWriter::create(&path, 48_000, 2).unwrap();
        w.write_samples(&vec![9i16; 2 * 10_000]).unwrap();
        w.checkpoint(false).unwrap();
        let r = hound::WavReader::open(&path).unwrap();
        assert_eq!(r.duration() as usize, (CHUNK - HEADER_LEN as usize) / 4);
        assert_eq!(w.finalize().unwrap(), 10_000);
        assert_eq!(hound::WavReader::open(&path).unwrap().duration(), 10_000);
    }

    #[test]
    fn a_background_sync_error_fails_the_next_checkpoint_and_the_finalize() {
        let path = tmp("sync-err.wav");
        let mut w = WavWriter::create(&path, 16_000, 1).unwrap();
        w.write_samples(&[3i16; 20_000]).unwrap();
        w.checkpoint(true).unwrap();
        while w.sync.is_pending() {
            std::thread::sleep(std::time::Duration::from_millis(1));
        }
        w.checkpoint(false).unwrap();
        w.sync.set_error(io::Error::from_raw_os_error(5));
        let e = w.checkpoint(false).unwrap_err();
        assert_eq!(e.raw_os_error(), Some(5), "EIO comes back: {e}");
        // The header still declares what the last good checkpoint had.
        assert_eq!(
            hound::WavReader::open(&path).unwrap().len() as usize,
            FIRST_CHUNK_SAMPLES
        );
        w.sync.set_error(io::Error::from_raw_os_error(28));
        assert_eq!(w.finalize().unwrap_err().raw_os_error(), Some(28));
    }

    #[test]
    fn finalize_returns_frames_and_file_is_complete() {
        let path = tmp("b.wav");
        let mut w = WavWriter::create(&path, 48_000, 2).unwrap();
        w.write_samples(&[5i16; 960]).unwrap();
        assert_eq!(w.finalize().unwrap(), 480);
        let r = hound::WavReader::open(&path).unwrap();
        assert_eq!(r.spec().channels, 2);
        assert_eq!(r.duration(), 480);
        assert_eq!(
            std::fs::metadata(&path).unwrap().len(),
            HEADER_LEN + 960 * 2
        );
    }

    #[test]
    fn refuses_to_pass_the_riff_limit() {
        let path = tmp("c.wav");
        let mut w = WavWriter::create(&path, 48_000, 1).unwrap();
        w.data_bytes = MAX_DATA_BYTES - 2;
        assert!(w.write_samples(&[1]).is_ok());
        let err = w.write_samples(&[1]).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::InvalidInput);
        assert_eq!(w.remaining_samples(), 0);
    }
}
