//! Periodic `fdatasync`s, off the sink threads.
//!
//! A recording's durability policy (`recording.fsync_interval_secs`) asks each open WAV for an
//! `fdatasync` every few seconds. Run on the sink thread that writes the file, each one blocks
//! that thread for as long as the storage takes (milliseconds on a local SSD, far longer on a
//! network volume), and a sink worker shared by many calls would run its calls' syncs one after
//! another while their rings fill. So the periodic syncs go to one process-wide thread here: the
//! writer asks ([`SyncHandle::request`]) and goes on writing; the result comes back through the
//! handle and the writer reports an error at its next checkpoint, failing the file as a write
//! error would. The sync at close stays on the writer's thread (the final manifest must not
//! claim a file is complete before it is on disk).
//!
//! **Bounded.** A file has at most one sync queued or running: a request while one is pending is
//! skipped (the next interval asks again), so the queue never holds more entries than there are
//! open files, however slow the storage.

use std::fs::File;
use std::io;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc::Sender;
use std::sync::{Arc, Mutex, OnceLock, PoisonError};

/// One file's link to the sync thread.
#[derive(Debug)]
pub struct SyncHandle {
    slot: Arc<Slot>,
}

#[derive(Debug)]
struct Slot {
    file: Arc<File>,
    /// A sync is queued or running.
    pending: AtomicBool,
    /// The first error a background sync met, until the writer takes it.
    error: Mutex<Option<io::Error>>,
}

impl Slot {
    fn run(&self) {
        if let Err(e) = self.file.sync_data() {
            let mut slot = self.error.lock().unwrap_or_else(PoisonError::into_inner);
            slot.get_or_insert(e);
        }
        self.pending.store(false, Ordering::Release);
    }
}

/// Requests skipped because the file's previous sync had not finished (slow storage), for the
/// process's metrics.
pub static SKIPPED: AtomicU64 = AtomicU64::new(0);

impl SyncHandle {
    /// A handle for `file` (shared with its writer).
    pub fn new(file: Arc<File>) -> Self {
        Self {
            slot: Arc::new(Slot {
                file,
                pending: AtomicBool::new(false),
                error: Mutex::new(None),
            }),
        }
    }

    /// Asks for an `fdatasync` of everything written to the file so far, without waiting. When
    /// the previous request is still queued or running, this one is skipped (and counted in
    /// [`SKIPPED`]). When the sync thread cannot run (the OS refused it), syncs here.
    pub fn request(&self) {
        if self.slot.pending.swap(true, Ordering::AcqRel) {
            SKIPPED.fetch_add(1, Ordering::Relaxed);
            return;
        }
        let sent = sync_thread().is_some_and(|tx| tx.send(Arc::clone(&self.slot)).is_ok());
        if !sent {
            self.slot.run();
        }
    }

    /// The error a background sync met since the last call, if any.
    pub fn take_error(&self) -> Option<io::Error> {
        self.slot
            .error
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take()
    }

    /// Records `e` as if a background sync had met it (tests of the writers' error path).
    #[cfg(test)]
    pub(crate) fn set_error(&self, e: io::Error) {
        *self
            .slot
            .error
            .lock()
            .unwrap_or_else(PoisonError::into_inner) = Some(e);
    }

    /// Whether a requested sync has not finished yet.
    pub fn is_pending(&self) -> bool {
        self.slot.pending.load(Ordering::Acquire)
    }
}

/// The process's sync thread, started on first use; `None` when the OS refused it.
fn sync_thread() -> Option<&'static Sender<Arc<Slot>>> {
    static THREAD: OnceLock<Option<Sender<Arc<Slot>>>> = OnceLock::new();
    THREAD
        .get_or_init(|| {
            let (tx, rx) = std::sync::mpsc::channel::<Arc<Slot>>();
            let spawned = std::thread::Builder::new()
                .name("fsync".into())
                .spawn(move || {
                    // It waits on storage, not the CPU; what CPU it uses (starting the writeback)
                    // yields to the media thread like the sink threads do.
                    if let Err(e) =
                        mediabot_media::sched::set_current_thread_nice(super::runner::sink_nice())
                    {
                        tracing::debug!(error = %e, "fsync thread keeps the default priority");
                    }
                    for slot in rx {
                        slot.run();
                    }
                });
            match spawned {
                Ok(_) => Some(tx),
                Err(e) => {
                    tracing::warn!(error = %e, "no fsync thread: recordings sync on their sink threads");
                    None
                }
            }
        })
        .as_ref()
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use std::io::Write;
    use std::time::{Duration, Instant};

    fn wait_done(h: &SyncHandle) {
        let deadline = Instant::now() + Duration::from_secs(10);
        while h.is_pending() {
            assert!(Instant::now() < deadline, "sync never finished");
            std::thread::sleep(Duration::from_millis(1));
        }
    }

    fn temp_file(name: &str) -> (std::path::PathBuf, Arc<File>) {
        let path =
            std::env::temp_dir().join(format!("mediabot-syncer-{}-{name}", std::process::id()));
        let file = Arc::new(File::create(&path).unwrap());
        (path, file)
    }

    #[test]
    fn a_request_syncs_in_the_background_and_clears_pending() {
        let (path, file) = temp_file("bg");
        (&*file).write_all(b"hello").unwrap();
        let h = SyncHandle::new(Arc::clone(&file));
        h.request();
        wait_done(&h);
        assert!(h.take_error().is_none());
        // Again: a finished sync does not block the next request.
        h.request();
        wait_done(&h);
        assert!(h.take_error().is_none());
        let _ = std::fs::remove_file(path);
    }

    #[test]
    fn a_failing_sync_reports_its_error_once() {
        // A pipe cannot be synced (EINVAL): the stand-in for a storage error.
        let (r, _w) = std::io::pipe().unwrap();
        let file: File = std::os::fd::OwnedFd::from(r).into();
        let h = SyncHandle::new(Arc::new(file));
        h.request();
        wait_done(&h);
        let e = h.take_error().expect("syncing a pipe fails");
        assert_eq!(e.raw_os_error(), Some(22), "EINVAL: {e}");
        assert!(h.take_error().is_none(), "reported once");
    }

    #[test]
    fn a_request_while_one_is_pending_is_skipped() {
        let (path, file) = temp_file("skip");
        let h = SyncHandle::new(file);
        // Hold the slot as if a sync were running.
        h.slot.pending.store(true, Ordering::Release);
        let before = SKIPPED.load(Ordering::Relaxed);
        h.request();
        assert!(SKIPPED.load(Ordering::Relaxed) > before);
        h.slot.pending.store(false, Ordering::Release);
        let _ = std::fs::remove_file(path);
    }
}
