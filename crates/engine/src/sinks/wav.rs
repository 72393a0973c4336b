//! A crash-safe PCM16 WAV writer.
//!
//! A recording bot can be killed at any moment (OOM killer, `kill -9`, a node drained). The
//! writer keeps the file playable throughout: the RIFF header is written first with the sizes of
//! the data checkpointed so far, and [`WavWriter::checkpoint`] rewrites the two size fields after
//! each flush. After a crash, a player sees the audio up to the last checkpoint (the recorder
//! checkpoints every second of audio by default); bytes written after it are beyond the declared
//! `data` size and ignored by players.
//!
//! Durability (fsync) is a separate, slower policy: [`WavWriter::checkpoint`] takes a flag, and the
//! recorder asks for `fdatasync` every `fsync_interval` (see [`crate::config`]) and at close.
//!
//! A RIFF file holds at most 4 GiB of data; [`WavWriter::remaining_samples`] lets the recorder
//! roll over to a new segment before that (12 hours of 48 kHz mono).

use std::fs::File;
use std::io::{self, BufWriter, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

/// Size of the canonical 44-byte PCM WAV header this writer produces.
pub const HEADER_LEN: u64 = 44;

/// Largest `data` chunk a RIFF file can declare (its size fields are 32-bit).
pub const MAX_DATA_BYTES: u64 = u32::MAX as u64 - HEADER_LEN;

/// Writes 16-bit little-endian PCM to a WAV file whose header stays valid while it grows.
#[derive(Debug)]
pub struct WavWriter {
    path: PathBuf,
    out: BufWriter<File>,
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
        let file = File::create(&path)?;
        // 32 KiB: a write every ~170 ms per 48 kHz track; the buffer is resident per open track.
        let mut out = BufWriter::with_capacity(32 * 1024, file);
        out.write_all(&header(sample_rate, channels, 0))?;
        out.flush()?;
        Ok(Self {
            path,
            out,
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
        self.data_bytes / (2 * u64::from(self.channels))
    }

    /// How many more sample frames fit before the 4 GiB RIFF limit.
    pub fn remaining_samples(&self) -> u64 {
        (MAX_DATA_BYTES - self.data_bytes) / (2 * u64::from(self.channels))
    }

    /// Appends interleaved samples.
    ///
    /// # Errors
    /// I/O errors (disk full, ...); `InvalidInput` when the write would pass the RIFF size limit.
    pub fn write_samples(&mut self, samples: &[i16]) -> io::Result<()> {
        let bytes = samples.len() as u64 * 2;
        self.ensure_room(bytes)?;
        let mut buf = [0u8; 512];
        for chunk in samples.chunks(buf.len() / 2) {
            for (dst, s) in buf.chunks_exact_mut(2).zip(chunk) {
                dst.copy_from_slice(&s.to_le_bytes());
            }
            self.out.write_all(&buf[..chunk.len() * 2])?;
        }
        self.data_bytes += bytes;
        Ok(())
    }

    /// Appends `frames` sample frames of digital silence.
    ///
    /// # Errors
    /// As [`WavWriter::write_samples`].
    pub fn write_silence(&mut self, frames: u64) -> io::Result<()> {
        let bytes = frames * 2 * u64::from(self.channels);
        self.ensure_room(bytes)?;
        let zeros = [0u8; 4096];
        let mut left = bytes;
        while left > 0 {
            let n = left.min(zeros.len() as u64) as usize;
            self.out.write_all(&zeros[..n])?;
            left -= n as u64;
        }
        self.data_bytes += bytes;
        Ok(())
    }

    /// Flushes buffered samples and rewrites the header's size fields, so that the file as it is
    /// now on disk plays everything written so far. With `sync`, also `fdatasync`s the file.
    ///
    /// # Errors
    /// Any I/O error; the header then still declares the previous checkpoint.
    pub fn checkpoint(&mut self, sync: bool) -> io::Result<()> {
        self.out.flush()?;
        if self.data_bytes != self.checkpointed_bytes {
            let file = self.out.get_mut();
            let riff_size = (HEADER_LEN - 8 + self.data_bytes) as u32;
            file.seek(SeekFrom::Start(4))?;
            file.write_all(&riff_size.to_le_bytes())?;
            file.seek(SeekFrom::Start(40))?;
            file.write_all(&(self.data_bytes as u32).to_le_bytes())?;
            file.seek(SeekFrom::End(0))?;
            self.checkpointed_bytes = self.data_bytes;
        }
        if sync {
            self.out.get_ref().sync_data()?;
        }
        Ok(())
    }

    /// Checkpoints, syncs and closes the file, returning the sample frames it holds.
    ///
    /// # Errors
    /// Any I/O error of the final checkpoint.
    pub fn finalize(mut self) -> io::Result<u64> {
        self.checkpoint(true)?;
        Ok(self.samples_written())
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

    #[test]
    fn header_declares_checkpointed_samples_and_hound_reads_them() {
        let path = tmp("a.wav");
        let mut w = WavWriter::create(&path, 16_000, 1).unwrap();
        let ramp: Vec<i16> = (0..1600).map(|i| i as i16 * 7).collect();
        w.write_samples(&ramp).unwrap();
        w.write_silence(400).unwrap();
        w.checkpoint(false).unwrap();
        // Written after the checkpoint and never checkpointed: a crash here loses only this.
        w.write_samples(&[1, 2, 3]).unwrap();
        w.out.flush().unwrap();

        let r = hound::WavReader::open(&path).unwrap();
        assert_eq!(r.spec().sample_rate, 16_000);
        assert_eq!(r.len(), 2000);
        let got: Vec<i16> = r.into_samples().map(|s| s.unwrap()).collect();
        assert_eq!(&got[..1600], &ramp[..]);
        assert!(got[1600..].iter().all(|&s| s == 0));
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
