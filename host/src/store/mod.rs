//! Storage: one embedded RocksDB database.
//!
//! Each kind of record has its own column family; keys are big-endian composites so that
//! RocksDB's byte order is numeric order (a mailbox's messages iterate by UID, the queue by
//! due time). Values are postcard-encoded. The API is narrow on purpose: protocol code asks
//! for what it needs in its own words (deliver, list, enqueue) and never sees RocksDB, so a
//! second backend can come later without touching it.
//!
//! Every call here blocks. Async code goes through [`Store::run`], which moves the work to
//! tokio's blocking pool and keeps it off the reactor threads.
//!
//! Durability: writes that back an SMTP `250` (deliveries, queue entries) are synced to disk
//! before they return; other writes (logins, flags, policy state) reach the WAL and survive a
//! process crash, but may lose the last moments on power loss.

mod accounts;
mod folders;
mod kv;
mod mailbox;
mod metadata;
mod push;
mod queue;
mod recent;
mod subscriptions;

use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use rocksdb::{ColumnFamily, ColumnFamilyDescriptor, DB, Options, WriteBatch, WriteOptions};
use serde::Serialize;
use serde::de::DeserializeOwned;

pub use accounts::Account;
pub use folders::{FlagChange, FolderError, is_keyword, limits};
pub use kv::{KvEntry, KvLimits};
pub use mailbox::{Accepted, DEFAULT_MAILBOXES, Delivery, Mailbox, MessageEntry, Outbound, StoredMessage};
pub use push::PushEntry;
pub use queue::QueueEntry;

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("database error: {0}")]
    Db(#[from] rocksdb::Error),
    #[error("corrupt record in {cf}: {reason}")]
    Corrupt { cf: &'static str, reason: String },
    #[error("no such account")]
    NoAccount,
    #[error("no such mailbox")]
    NoMailbox,
    #[error("cannot create {path}: {source}")]
    CreateDir { path: String, source: std::io::Error },
    #[error("cannot open the database at {path}: {source}")]
    Open { path: String, source: rocksdb::Error },
    /// A bound on what may be stored was reached.
    #[error("{0}")]
    Limit(String),
}

pub type Result<T, E = StoreError> = std::result::Result<T, E>;

/// Column families: one per kind of record.
pub(crate) mod cf {
    pub const ACCOUNTS: &str = "accounts";
    pub const MAILBOXES: &str = "mailboxes";
    pub const MESSAGES: &str = "messages";
    pub const BLOBS: &str = "blobs";
    pub const BLOB_REFS: &str = "blob_refs";
    pub const QUEUE: &str = "queue";
    pub const METADATA: &str = "metadata";
    pub const POLICY_KV: &str = "policy_kv";
    pub const PUSH: &str = "push";
    /// IMAP subscriptions: names, whether or not a mailbox of that name exists (RFC 3501 §6.3.6).
    pub const SUBSCRIPTIONS: &str = "subscriptions";
    pub const ALL: [&str; 10] = [ACCOUNTS, MAILBOXES, MESSAGES, BLOBS, BLOB_REFS, QUEUE, METADATA, POLICY_KV, PUSH, SUBSCRIPTIONS];
}

/// A handle on the database. Clones share it.
#[derive(Clone)]
pub struct Store {
    inner: Arc<Inner>,
}

struct Inner {
    db: DB,
    ids: IdAllocator,
    /// Serialises read-modify-write of one account's records (creation, uids, usage),
    /// sharded by address.
    account_locks: Vec<Mutex<()>>,
    /// Serialises compare-and-swap on policy state.
    kv_locks: Vec<Mutex<()>>,
    /// Serialises blob reference counting.
    blob_lock: Mutex<()>,
    /// What each policy's key-value namespace holds, counted once per run.
    kv_usage: Mutex<std::collections::HashMap<String, kv::KvUsage>>,
    /// Where the next purge of a full namespace goes on (kv.rs).
    kv_purge_from: Mutex<std::collections::HashMap<String, Vec<u8>>>,
    /// Keeps an in-memory environment alive for as long as the database uses it.
    _env: Option<rocksdb::Env>,
    _cache: rocksdb::Cache,
}

const LOCK_SHARDS: usize = 64;
/// Memtables of all column families together stay below this.
const MEMTABLE_BUDGET: usize = 64 << 20;
/// One block cache for all column families.
const BLOCK_CACHE: usize = 64 << 20;

impl Store {
    /// Open (or create) the database in `dir`.
    pub fn open(dir: &Path) -> Result<Store> {
        std::fs::create_dir_all(dir)
            .map_err(|source| StoreError::CreateDir { path: dir.display().to_string(), source })?;
        Self::open_with(dir, None)
    }

    /// A database that lives in memory only: for tests and `policy check`.
    pub fn open_in_memory() -> Result<Store> {
        let env = rocksdb::Env::mem_env()?;
        Self::open_with(Path::new("/ferrymail-in-memory"), Some(env))
    }

    fn open_with(dir: &Path, env: Option<rocksdb::Env>) -> Result<Store> {
        let mut options = Options::default();
        options.create_if_missing(true);
        options.create_missing_column_families(true);
        // Messages are encrypted: compression would only cost CPU.
        options.set_compression_type(rocksdb::DBCompressionType::None);
        if let Some(env) = &env {
            options.set_env(env);
        }
        // Bounded memory: RocksDB's defaults (64 MiB of memtable per column family, a block
        // cache per family) would let a busy relay grow by half a gigabyte.
        options.set_db_write_buffer_size(MEMTABLE_BUDGET);
        // The write-ahead log is kept until every column family has flushed what it holds:
        // without a bound, a little-written family (accounts, mailboxes) keeps gigabytes of
        // message log on disk after the messages themselves are long gone.
        options.set_max_total_wal_size(MEMTABLE_BUDGET as u64);
        let cache = rocksdb::Cache::new_lru_cache(BLOCK_CACHE);
        let mut table = rocksdb::BlockBasedOptions::default();
        table.set_block_cache(&cache);
        let descriptors = cf::ALL.iter().map(|name| {
            let mut cf_options = Options::default();
            cf_options.set_compression_type(rocksdb::DBCompressionType::None);
            cf_options.set_write_buffer_size(MEMTABLE_BUDGET / 4);
            cf_options.set_block_based_table_factory(&table);
            if *name == cf::BLOBS {
                // Large values go to blob files instead of being rewritten by every compaction.
                cf_options.set_enable_blob_files(true);
                cf_options.set_min_blob_size(4096);
                // And the space of deleted messages comes back: compactions move the live blobs
                // out of the oldest files, and a file mostly garbage gets a compaction of its own.
                cf_options.set_enable_blob_gc(true);
                cf_options.set_blob_gc_force_threshold(0.5);
            }
            ColumnFamilyDescriptor::new(*name, cf_options)
        });
        let db = DB::open_cf_descriptors(&options, dir, descriptors)
            .map_err(|source| StoreError::Open { path: dir.display().to_string(), source })?;
        let ids = IdAllocator::open(&db)?;
        let store = Store {
            inner: Arc::new(Inner {
                db,
                ids,
                account_locks: (0..LOCK_SHARDS).map(|_| Mutex::new(())).collect(),
                kv_locks: (0..LOCK_SHARDS).map(|_| Mutex::new(())).collect(),
                blob_lock: Mutex::new(()),
                kv_usage: Mutex::default(),
                kv_purge_from: Mutex::default(),
                _env: env,
                _cache: cache,
            }),
        };
        store.count_kv_usage()?;
        store.migrate_subscriptions()?;
        Ok(store)
    }

    /// Run blocking store work on tokio's blocking pool.
    pub async fn run<R, F>(&self, work: F) -> R
    where
        F: FnOnce(&Store) -> R + Send + 'static,
        R: Send + 'static,
    {
        let store = self.clone();
        match tokio::task::spawn_blocking(move || work(&store)).await {
            Ok(result) => result,
            Err(e) => std::panic::resume_unwind(e.into_panic()),
        }
    }

    /// Give the disk back what deleted messages held: compact the blobs (their keys' tombstones
    /// dropped, fully deleted blob files removed). Blocking, and takes a while on a big store.
    pub fn reclaim(&self) -> Result<()> {
        for family in [cf::BLOBS, cf::BLOB_REFS, cf::MESSAGES] {
            self.db().compact_range_cf(self.cf(family), None::<&[u8]>, None::<&[u8]>);
        }
        Ok(())
    }

    fn db(&self) -> &DB {
        &self.inner.db
    }

    fn cf(&self, name: &'static str) -> &ColumnFamily {
        // Every family in cf::ALL is created at open.
        self.inner.db.cf_handle(name).expect("column family created at open")
    }

    fn get<T: DeserializeOwned>(&self, family: &'static str, key: &[u8]) -> Result<Option<T>> {
        match self.db().get_pinned_cf(self.cf(family), key)? {
            Some(bytes) => decode(family, &bytes).map(Some),
            None => Ok(None),
        }
    }

    fn write(&self, batch: WriteBatch, durable: bool) -> Result<()> {
        let mut options = WriteOptions::default();
        options.set_sync(durable);
        self.db().write_opt(batch, &options)?;
        Ok(())
    }

    fn next_id(&self) -> Result<u64> {
        self.inner.ids.next(self)
    }

    /// Lock the records of these accounts (by address), in one global order so that two
    /// deliveries to overlapping recipients cannot deadlock.
    fn lock_accounts<'a>(&self, addresses: impl IntoIterator<Item = &'a str>) -> Vec<MutexGuard<'_, ()>> {
        let mut shards: Vec<usize> = addresses.into_iter().map(address_shard).collect();
        shards.sort_unstable();
        shards.dedup();
        shards.into_iter().map(|i| lock(&self.inner.account_locks[i])).collect()
    }
}

fn address_shard(address: &str) -> usize {
    let hash = address.bytes().fold(0u64, |h, b| h.wrapping_mul(31).wrapping_add(u64::from(b.to_ascii_lowercase())));
    (hash % LOCK_SHARDS as u64) as usize
}

fn lock(mutex: &Mutex<()>) -> MutexGuard<'_, ()> {
    // The guarded data is (); a panic elsewhere leaves nothing inconsistent behind.
    mutex.lock().unwrap_or_else(|e| e.into_inner())
}

fn encode<T: Serialize>(value: &T) -> Vec<u8> {
    postcard::to_stdvec(value).expect("records always serialise")
}

fn decode<T: DeserializeOwned>(family: &'static str, bytes: &[u8]) -> Result<T> {
    postcard::from_bytes(bytes).map_err(|e| StoreError::Corrupt { cf: family, reason: e.to_string() })
}

/// Builds big-endian composite keys.
struct Key(Vec<u8>);

impl Key {
    fn new() -> Key {
        Key(Vec::with_capacity(24))
    }
    fn u64(mut self, v: u64) -> Key {
        self.0.extend_from_slice(&v.to_be_bytes());
        self
    }
    fn u32(mut self, v: u32) -> Key {
        self.0.extend_from_slice(&v.to_be_bytes());
        self
    }
    fn str(mut self, s: &str) -> Key {
        self.0.extend_from_slice(s.as_bytes());
        self
    }
}

fn be_u64(bytes: &[u8]) -> Option<u64> {
    Some(u64::from_be_bytes(bytes.get(..8)?.try_into().ok()?))
}

fn be_u32(bytes: &[u8]) -> Option<u32> {
    Some(u32::from_be_bytes(bytes.get(..4)?.try_into().ok()?))
}

/// Unique ids for accounts, blobs and queue entries. Ids are leased in blocks whose end is
/// recorded (synced) before any id of the block is used, so a crash can skip ids but never
/// hand one out twice.
struct IdAllocator {
    next: AtomicU64,
    lease_end: Mutex<u64>,
}

const ID_LEASE_KEY: &[u8] = b"\0id-lease";
const ID_LEASE: u64 = 100_000;

impl IdAllocator {
    fn open(db: &DB) -> Result<IdAllocator> {
        let family = db.cf_handle(cf::METADATA).expect("column family created at open");
        let start = match db.get_cf(family, ID_LEASE_KEY)? {
            Some(bytes) => be_u64(&bytes).unwrap_or(1),
            None => 1,
        };
        Ok(IdAllocator { next: AtomicU64::new(start), lease_end: Mutex::new(start) })
    }

    fn next(&self, store: &Store) -> Result<u64> {
        let id = self.next.fetch_add(1, Ordering::Relaxed);
        let mut lease_end = self.lease_end.lock().unwrap_or_else(|e| e.into_inner());
        if id >= *lease_end {
            let end = id + ID_LEASE;
            let mut batch = WriteBatch::default();
            batch.put_cf(store.cf(cf::METADATA), ID_LEASE_KEY, end.to_be_bytes());
            store.write(batch, true)?;
            *lease_end = end;
        }
        Ok(id)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_unique_across_restarts() {
        let dir = tempfile::tempdir().unwrap();
        let first: Vec<u64> = {
            let store = Store::open(dir.path()).unwrap();
            (0..3).map(|_| store.next_id().unwrap()).collect()
        };
        let store = Store::open(dir.path()).unwrap();
        let after = store.next_id().unwrap();
        assert!(first.iter().all(|&id| id < after), "{first:?} then {after}");
    }
}
