//! The disk under `data_dir`: new mail is refused while there is too little room for it, and a
//! full disk never traps a user. Mail stops (`452 4.3.1 Insufficient system storage`) while
//! free space is short of what a message could need; deletions (EXPUNGE, DELETE, retention)
//! need a little space too (RocksDB writes what it deletes), so the relay keeps a reserve file
//! in `data_dir` and gives it up when the disk runs full, whoever filled it. The reserve comes
//! back, and mail resumes, by itself once space returns.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

/// Write `dir/name` (creating `dir`, 0700) readable by the relay's user only (0600), whole or
/// not at all: keys and secrets in `data_dir`, where an interrupted write must not leave half
/// a file behind.
pub fn write_private(dir: &Path, name: &str, bytes: &[u8]) -> std::io::Result<()> {
    use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
    std::fs::DirBuilder::new().recursive(true).mode(0o700).create(dir)?;
    let temporary = dir.join(format!(".{name}.tmp"));
    let mut file = std::fs::OpenOptions::new().write(true).create(true).truncate(true).mode(0o600).open(&temporary)?;
    file.write_all(bytes)?;
    file.sync_all()?;
    std::fs::rename(&temporary, dir.join(name))
}

/// The reserve held for deletions.
const RESERVE_BYTES: u64 = 16 << 20;
/// How often the watcher looks.
const WATCH_EVERY: Duration = Duration::from_secs(2);
/// How often the store is compacted while the disk is short.
const RECLAIM_EVERY: Duration = Duration::from_secs(10);

pub struct Disk {
    dir: PathBuf,
    reserve: PathBuf,
    /// Free space below which new mail is refused.
    needed: u64,
    /// Whether the reserve file is in place.
    reserved: AtomicBool,
    /// Whether new mail is being refused (for saying so once).
    refusing: AtomicBool,
}

impl Disk {
    /// Watch the disk of `data_dir` for messages of up to `max_message_size`: new mail needs
    /// room for two of them besides the reserve.
    pub fn new(data_dir: &Path, max_message_size: u64) -> Disk {
        let disk = Disk {
            dir: data_dir.to_path_buf(),
            reserve: data_dir.join("reserve"),
            needed: max_message_size.saturating_mul(2) + RESERVE_BYTES,
            reserved: AtomicBool::new(false),
            refusing: AtomicBool::new(false),
        };
        disk.watch();
        disk
    }

    /// Free bytes under `data_dir` (plenty if it cannot be read: never refuse because of a probe).
    pub fn free(&self) -> u64 {
        rustix::fs::statvfs(&self.dir).map_or(u64::MAX, |s| s.f_bavail.saturating_mul(s.f_frsize))
    }

    /// Whether a message of `bytes` may be stored now. When not, and the disk is short, the
    /// reserve is given up, so that the deletions that make room can run (a refusal for one
    /// large message on a disk with room for others leaves the reserve in place).
    pub fn has_room(&self, bytes: u64) -> bool {
        let free = self.free();
        let room = free >= self.needed_for(bytes);
        if !room {
            if free < self.needed {
                self.release();
            }
            if !self.refusing.swap(true, Ordering::Relaxed) {
                tracing::warn!(free_bytes = self.free(), "the disk under data_dir is nearly full: new mail is refused until there is room");
            }
        } else if self.refusing.swap(false, Ordering::Relaxed) {
            tracing::info!(free_bytes = self.free(), "there is room on the disk again: new mail is accepted");
        }
        room
    }

    /// The free space a message of `bytes` needs. A reserve given up is still spoken for: it
    /// is for deletions, not for more mail.
    fn needed_for(&self, bytes: u64) -> u64 {
        let owed = if self.reserved.load(Ordering::Relaxed) { 0 } else { RESERVE_BYTES };
        self.needed.saturating_add(bytes).saturating_add(owed)
    }

    /// Give up the reserve: a write failed for lack of space, or new mail is refused.
    pub fn release(&self) {
        if self.reserved.swap(false, Ordering::Relaxed) {
            let _ = std::fs::remove_file(&self.reserve);
        }
    }

    /// One look: give up the reserve when the disk is short, take it again once there is room
    /// for it and for mail.
    pub fn watch(&self) {
        let free = self.free();
        if free < self.needed {
            self.release();
        } else if !self.reserved.load(Ordering::Relaxed) && free >= self.needed + RESERVE_BYTES && self.take_reserve() {
            self.reserved.store(true, Ordering::Relaxed);
        }
    }

    /// Write the reserve file (real blocks, not a sparse file).
    fn take_reserve(&self) -> bool {
        let write = || -> std::io::Result<()> {
            let mut file = std::fs::File::create(&self.reserve)?;
            let block = vec![0u8; 1 << 20];
            for _ in 0..RESERVE_BYTES >> 20 {
                file.write_all(&block)?;
            }
            file.sync_all()
        };
        match write() {
            Ok(()) => true,
            Err(_) => {
                let _ = std::fs::remove_file(&self.reserve);
                false
            }
        }
    }

    /// Look every two seconds, for as long as the relay runs. While mail is refused, the store
    /// is compacted now and then, so that what users delete comes back as free space.
    pub async fn run(self: std::sync::Arc<Self>, store: crate::store::Store) {
        let mut compacted: Option<tokio::time::Instant> = None;
        loop {
            tokio::time::sleep(WATCH_EVERY).await;
            let disk = self.clone();
            let _ = tokio::task::spawn_blocking(move || disk.watch()).await;
            let short = self.free() < self.needed_for(0);
            if short && compacted.is_none_or(|at| at.elapsed() >= RECLAIM_EVERY) {
                compacted = Some(tokio::time::Instant::now());
                if let Err(e) = store.run(|s| s.reclaim()).await {
                    tracing::warn!("cannot compact the store: {e}");
                }
            }
        }
    }
}

/// Whether a storage error means the disk is full.
pub fn is_full(error: &impl std::fmt::Display) -> bool {
    let text = error.to_string();
    text.contains("No space left on device") || text.contains("NoSpace")
}
