//! The LMDB wrapper, and the only module with `unsafe`. It sits directly on `lmdb-rkv-sys` (the
//! LMDB 0.9 C library that lmdb-rkv bundles, the same on-disk and lock format PowerDNS uses)
//! because lmdb-rkv's safe API cannot open DBIs by raw byte names, panics on unknown DBI flag
//! bits, and lets an iterator outlive its cursor. The types here make the known traps impossible:
//! one [`Env`] per path per process (a second open + close would drop the process's fcntl locks,
//! so a reopen also waits for a closing copy to finish), LMDB's rules for the process-wide DBI
//! handle table enforced (see [`Txn::open_dbi`]), the map only resized while this process has no
//! transaction, cursors and borrowed values tied to their transaction's lifetime, and every LMDB
//! error turned into an [`LmdbError`] with context.

use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::ffi::{CStr, CString};
use std::marker::PhantomData;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError, Weak};
use std::thread::ThreadId;

use lmdb_sys as ffi;

pub use crate::core::flags::*;

/// `MDB_CREATE` as an environment flag is `MDB_NOMETASYNC` in LMDB; the Go version sets it when
/// `create` is on, so we do too for identical durability.
const GO_CREATE_ENV_FLAG: u32 = 0x40000;

#[derive(Debug, thiserror::Error)]
pub enum LmdbError {
    #[error("LMDB {op}: {msg} ({code})")]
    Lmdb {
        op: &'static str,
        code: i32,
        msg: String,
    },
    #[error("LMDB {op}: the map is full (raise map_size): {msg}")]
    MapFull { op: &'static str, msg: String },
    #[error("LMDB {op}: key of {len} bytes is not allowed (1 to {MAX_KEY_SIZE} bytes)")]
    BadKey { op: &'static str, len: usize },
    #[error("LMDB {op}: DBI name {name:?} contains a NUL byte")]
    BadName { op: &'static str, name: String },
    /// A second transaction of the same thread needs the DBI table while the first still holds
    /// it (waiting would deadlock).
    #[error(
        "LMDB {op} {name:?}: another open transaction of this thread has opened DBIs; \
         LMDB allows only one such transaction at a time"
    )]
    DbiTableBusy { op: &'static str, name: String },
    /// New DBI handles were published after this transaction began; LMDB would hand out a slot
    /// that is already taken.
    #[error(
        "LMDB {op} {name:?}: DBI handles were opened by another transaction since this one \
         began; retry in a new transaction"
    )]
    DbiTableChanged { op: &'static str, name: String },
    #[error("{op} {path}: {source}")]
    Io {
        op: &'static str,
        path: String,
        #[source]
        source: std::io::Error,
    },
}

impl LmdbError {
    pub fn is_map_full(&self) -> bool {
        matches!(self, LmdbError::MapFull { .. })
    }
}

pub type Result<T> = std::result::Result<T, LmdbError>;

/// Locks `m`, ignoring poisoning: every critical section here leaves its data consistent
/// between statements, so a panic elsewhere does not make it unusable.
fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

fn check(op: &'static str, rc: i32) -> Result<()> {
    if rc == 0 {
        return Ok(());
    }
    // SAFETY: mdb_strerror returns a pointer to a static NUL-terminated string for any code.
    let msg = unsafe { CStr::from_ptr(ffi::mdb_strerror(rc)) }
        .to_string_lossy()
        .into_owned();
    if rc == ffi::MDB_MAP_FULL {
        return Err(LmdbError::MapFull { op, msg });
    }
    Err(LmdbError::Lmdb { op, code: rc, msg })
}

fn check_key(op: &'static str, key: &[u8]) -> Result<()> {
    if key.is_empty() || key.len() > MAX_KEY_SIZE {
        return Err(LmdbError::BadKey { op, len: key.len() });
    }
    Ok(())
}

fn val(b: &[u8]) -> ffi::MDB_val {
    ffi::MDB_val {
        mv_size: b.len(),
        mv_data: b.as_ptr() as *mut std::ffi::c_void,
    }
}

fn empty_val() -> ffi::MDB_val {
    ffi::MDB_val {
        mv_size: 0,
        mv_data: std::ptr::null_mut(),
    }
}

/// # Safety
/// `v` must point into memory that stays valid for `'a` (a value LMDB returned within a
/// transaction that lives for `'a`).
unsafe fn slice<'a>(v: &ffi::MDB_val) -> &'a [u8] {
    if v.mv_size == 0 {
        return &[];
    }
    // SAFETY: guaranteed by the caller.
    unsafe { std::slice::from_raw_parts(v.mv_data as *const u8, v.mv_size) }
}

#[derive(Clone, Debug, Default)]
pub struct EnvOptions {
    pub no_subdir: bool,
    pub create: bool,
    /// 0: 1 GiB when creating, else the size stored in the file.
    pub map_size: u64,
    /// 0: 64.
    pub max_dbs: u32,
    /// 0: 0o664.
    pub file_mask: u32,
    /// 0: 0o775.
    pub dir_mask: u32,
    /// Open with MDB_RDONLY (the lock file must still be writable).
    pub read_only: bool,
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct EnvInfo {
    pub map_size: u64,
    pub last_pgno: u64,
    pub last_txn_id: u64,
    pub max_readers: u32,
    pub num_readers: u32,
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct DbStat {
    pub page_size: u32,
    pub depth: u32,
    pub branch_pages: u64,
    pub leaf_pages: u64,
    pub overflow_pages: u64,
    pub entries: u64,
}

impl DbStat {
    /// Bytes of the pages in use (branch, leaf and overflow), as `stats` and the metrics report.
    pub fn used_bytes(&self) -> u64 {
        u64::from(self.page_size) * (self.branch_pages + self.leaf_pages + self.overflow_pages)
    }
}

impl From<ffi::MDB_stat> for DbStat {
    fn from(s: ffi::MDB_stat) -> Self {
        DbStat {
            page_size: s.ms_psize,
            depth: s.ms_depth,
            branch_pages: s.ms_branch_pages as u64,
            leaf_pages: s.ms_leaf_pages as u64,
            overflow_pages: s.ms_overflow_pages as u64,
            entries: s.ms_entries as u64,
        }
    }
}

/// An open LMDB environment. Shared between threads as `Arc<Env>`; closed when the last
/// reference goes.
pub struct Env {
    ptr: *mut ffi::MDB_env,
    path: PathBuf,
    /// The registry key; `None` until registered (an env that failed to open never is).
    key: Option<PathBuf>,
    /// Our view of LMDB's process-wide DBI handle table (see [`Txn::open_dbi`]).
    dbis: Mutex<DbiTable>,
    /// Signalled when a transaction gives up the DBI table.
    dbis_released: Condvar,
    /// Transactions of this process open on the env. Counted before `mdb_txn_begin` and held
    /// locked while resizing, because `mdb_env_set_mapsize` remaps under any live transaction.
    active: Mutex<usize>,
    next_serial: AtomicU64,
}

/// LMDB keeps one DBI handle table per env and process. `mdb_dbi_open` adds a slot for a name
/// not yet open; the slot becomes visible to other transactions only when its transaction ends,
/// and only to transactions begun after that (each copies the slot count at its start). Two
/// transactions adding slots concurrently, or one adding a slot after another published one it
/// cannot see, get the same slot for different names — a handle that later reads or writes the
/// wrong DBI. So: at most one live transaction (the owner) may add slots, and only if nothing
/// was published since it began.
#[derive(Default)]
struct DbiTable {
    /// Names whose handles are published: the generation that published them, and the slot.
    published: HashMap<Vec<u8>, (u64, ffi::MDB_dbi)>,
    /// Bumped whenever a transaction publishes new handles.
    generation: u64,
    /// The transaction (serial, thread) allowed to add slots.
    owner: Option<(u64, ThreadId)>,
}

// SAFETY: an MDB_env may be used from any thread; with MDB_NOTLS read transactions are not tied
// to threads either. Write transactions are serialised by LMDB's own mutex.
unsafe impl Send for Env {}
// SAFETY: as above; all mutation of shared state goes through LMDB's locks or our mutexes.
unsafe impl Sync for Env {}

/// The process's open envs. An entry stays until its env is closed (not just until the last
/// `Arc` is gone), so a reopen cannot race with the close of the previous copy.
#[derive(Default)]
struct Registry {
    envs: Mutex<HashMap<PathBuf, Weak<Env>>>,
    /// Signalled when an env has been closed and its entry removed.
    closed: Condvar,
}

fn registry() -> &'static Registry {
    static REGISTRY: std::sync::OnceLock<Registry> = std::sync::OnceLock::new();
    REGISTRY.get_or_init(Registry::default)
}

/// The identity of an LMDB for the one-env-per-path rule: the canonical path of its data file
/// (or directory), or of its parent plus file name when it does not exist yet.
fn identity(path: &Path) -> PathBuf {
    if let Ok(p) = path.canonicalize() {
        return p;
    }
    match (path.parent(), path.file_name()) {
        (Some(parent), Some(name)) => {
            let parent = if parent.as_os_str().is_empty() {
                Path::new(".")
            } else {
                parent
            };
            parent
                .canonicalize()
                .map(|p| p.join(name))
                .unwrap_or_else(|_| path.to_path_buf())
        }
        _ => path.to_path_buf(),
    }
}

fn mkdir_p(dir: &Path, mode: u32) -> Result<()> {
    use std::os::unix::fs::DirBuilderExt;
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(mode)
        .create(dir)
        .map_err(|source| LmdbError::Io {
            op: "creating directory",
            path: dir.display().to_string(),
            source,
        })
}

impl Env {
    /// Opens the LMDB at `path` (creating it with `opts.create`), or returns the one this process
    /// already has open there.
    pub fn open(path: &Path, opts: &EnvOptions) -> Result<Arc<Env>> {
        let reg = registry();
        let mut envs = lock(&reg.envs);
        let key = identity(path);
        loop {
            match envs.get(&key).map(Weak::upgrade) {
                None => break,
                Some(Some(env)) => return Ok(env),
                // The last reference is gone but mdb_env_close has not finished: opening now and
                // then closing the old copy would drop the new copy's locks.
                Some(None) => {
                    envs = reg
                        .closed
                        .wait(envs)
                        .unwrap_or_else(PoisonError::into_inner)
                }
            }
        }
        if opts.create {
            let dir = if opts.no_subdir {
                match path.parent() {
                    Some(p) if !p.as_os_str().is_empty() => p,
                    _ => {
                        return Err(LmdbError::Io {
                            op: "creating LMDB",
                            path: path.display().to_string(),
                            source: std::io::Error::new(
                                std::io::ErrorKind::InvalidInput,
                                "a no_subdir LMDB path needs a directory part",
                            ),
                        });
                    }
                }
            } else {
                path
            };
            mkdir_p(
                dir,
                if opts.dir_mask == 0 {
                    0o775
                } else {
                    opts.dir_mask
                },
            )?;
        }
        let mut env = Env::open_raw(path, opts)?;
        // The file exists now, so this is its canonical identity even if `key` was a guess.
        let key = identity(path);
        env.key = Some(key.clone());
        let env = Arc::new(env);
        envs.insert(key, Arc::downgrade(&env));
        Ok(env)
    }

    fn open_raw(path: &Path, opts: &EnvOptions) -> Result<Env> {
        let cpath = CString::new(path.as_os_str().as_bytes()).map_err(|_| LmdbError::BadName {
            op: "open",
            name: path.display().to_string(),
        })?;
        let mut ptr: *mut ffi::MDB_env = std::ptr::null_mut();
        // SAFETY: mdb_env_create writes a new handle into `ptr`.
        check("env_create", unsafe { ffi::mdb_env_create(&mut ptr) })?;
        let env = Env {
            ptr,
            path: path.to_path_buf(),
            key: None,
            dbis: Mutex::new(DbiTable::default()),
            dbis_released: Condvar::new(),
            active: Mutex::new(0),
            next_serial: AtomicU64::new(0),
        };
        let max_dbs = if opts.max_dbs == 0 { 64 } else { opts.max_dbs };
        // SAFETY: `ptr` is a valid, not yet opened env handle (closed by Drop on error).
        check("env_set_maxdbs", unsafe {
            ffi::mdb_env_set_maxdbs(ptr, max_dbs)
        })?;
        let map_size = match (opts.map_size, opts.create) {
            (0, true) => 1 << 30,
            (n, _) => n,
        };
        if map_size > 0 {
            // SAFETY: as above.
            check("env_set_mapsize", unsafe {
                ffi::mdb_env_set_mapsize(ptr, map_size as usize)
            })?;
        }
        let mut flags = ffi::MDB_NOTLS;
        if opts.no_subdir {
            flags |= ffi::MDB_NOSUBDIR;
        }
        if opts.create {
            flags |= GO_CREATE_ENV_FLAG;
        }
        if opts.read_only {
            flags |= ffi::MDB_RDONLY;
        }
        let mode = if opts.file_mask == 0 {
            0o664
        } else {
            opts.file_mask
        };
        // SAFETY: `cpath` is NUL-terminated and outlives the call.
        check("env_open", unsafe {
            ffi::mdb_env_open(ptr, cpath.as_ptr(), flags, mode as ffi::mdb_mode_t)
        })
        .map_err(|e| match e {
            LmdbError::Lmdb { code, msg, .. } => LmdbError::Lmdb {
                op: "open",
                code,
                msg: format!("{}: {msg}", path.display()),
            },
            other => other,
        })?;
        // Reader slots left by processes that died inside a read transaction (a daemon killed
        // with SIGKILL) pin old pages while any other process (PowerDNS) keeps the LMDB open:
        // the file then grows with every write until the map is full. LMDB clears them by
        // itself only when the first process opens the file, so clear them here.
        let mut dead: std::os::raw::c_int = 0;
        // SAFETY: `ptr` is an open env; `dead` receives the number of slots cleared.
        if unsafe { ffi::mdb_reader_check(ptr, &mut dead) } == 0 && dead > 0 {
            log::info!(path = path.display().to_string(), stale_readers = dead; "Cleared reader slots of processes that no longer run");
        }
        Ok(env)
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    pub fn info(&self) -> Result<EnvInfo> {
        // SAFETY: MDB_envinfo is plain data; LMDB fills it in.
        let mut i: ffi::MDB_envinfo = unsafe { std::mem::zeroed() };
        // SAFETY: `self.ptr` is an open env.
        check("env_info", unsafe { ffi::mdb_env_info(self.ptr, &mut i) })?;
        Ok(EnvInfo {
            map_size: i.me_mapsize as u64,
            last_pgno: i.me_last_pgno as u64,
            last_txn_id: i.me_last_txnid as u64,
            max_readers: i.me_maxreaders,
            num_readers: i.me_numreaders,
        })
    }

    /// Statistics of the root (unnamed) database.
    pub fn stat(&self) -> Result<DbStat> {
        // SAFETY: plain data, filled by LMDB.
        let mut s: ffi::MDB_stat = unsafe { std::mem::zeroed() };
        // SAFETY: `self.ptr` is an open env.
        check("env_stat", unsafe { ffi::mdb_env_stat(self.ptr, &mut s) })?;
        Ok(s.into())
    }

    fn begin(&self, flags: u32) -> Result<TxnInner<'_>> {
        // Read before the txn starts: a publish in between only makes this txn more cautious.
        let begin_gen = lock(&self.dbis).generation;
        let mut retried = false;
        loop {
            *lock(&self.active) += 1;
            let mut txn = std::ptr::null_mut();
            // SAFETY: `self.ptr` is an open env; LMDB writes the new txn handle. Counting the
            // txn first keeps adopt_file_map_size from remapping under it.
            let rc = unsafe { ffi::mdb_txn_begin(self.ptr, std::ptr::null_mut(), flags, &mut txn) };
            if rc == 0 {
                return Ok(TxnInner {
                    ptr: txn,
                    env: self,
                    serial: self.next_serial.fetch_add(1, Ordering::Relaxed),
                    begin_gen,
                    owns_table: Cell::new(false),
                    pending: RefCell::new(Vec::new()),
                    _not_send: PhantomData,
                });
            }
            self.txn_ended();
            // Another process (PowerDNS) grew the map beyond ours: follow it and try again.
            if rc == ffi::MDB_MAP_RESIZED && !retried && self.adopt_file_map_size()? {
                retried = true;
                continue;
            }
            check("txn_begin", rc)?;
        }
    }

    fn txn_ended(&self) {
        let mut active = lock(&self.active);
        *active = active.saturating_sub(1);
    }

    /// Takes the map size recorded in the file when it is larger than ours: the applications
    /// sharing the LMDB (PowerDNS opens it with a 16 GB map) may have grown it, and a write
    /// transaction of ours then fails with a full map. LMDB allows this only while this process
    /// has no transaction open on the env; then nothing is done and `false` returned. Returns
    /// whether the map grew.
    pub fn adopt_file_map_size(&self) -> Result<bool> {
        let active = lock(&self.active);
        if *active != 0 {
            return Ok(false);
        }
        let before = self.info()?.map_size;
        // SAFETY: no transaction of this process is open on the env, and none can start while
        // `active` stays locked (begin counts before mdb_txn_begin), as mdb_env_set_mapsize
        // requires.
        check("env_set_mapsize", unsafe {
            ffi::mdb_env_set_mapsize(self.ptr, 0)
        })?;
        drop(active);
        Ok(self.info()?.map_size > before)
    }

    /// Turns `MDB_NOSYNC` on or off: commits then do not wait for the disk (a crash may lose
    /// them), for LMDBs of our own that are synced once when complete ([`Env::sync`]).
    pub fn set_no_sync(&self, on: bool) -> Result<()> {
        // SAFETY: `self.ptr` is an open env; LMDB documents MDB_NOSYNC as changeable at any
        // time with mdb_env_set_flags.
        check("env_set_flags", unsafe {
            ffi::mdb_env_set_flags(self.ptr, ffi::MDB_NOSYNC, i32::from(on))
        })
    }

    pub fn begin_ro(&self) -> Result<RoTxn<'_>> {
        Ok(RoTxn {
            inner: self.begin(ffi::MDB_RDONLY)?,
        })
    }

    /// Starts a write transaction, waiting for LMDB's write lock (shared with other processes).
    pub fn begin_rw(&self) -> Result<RwTxn<'_>> {
        Ok(RwTxn {
            inner: self.begin(0)?,
        })
    }

    pub fn sync(&self, force: bool) -> Result<()> {
        // SAFETY: `self.ptr` is an open env.
        check("env_sync", unsafe {
            ffi::mdb_env_sync(self.ptr, i32::from(force))
        })
    }
}

impl Drop for Env {
    fn drop(&mut self) {
        let Some(key) = &self.key else {
            // Never registered (failed open): nobody can be waiting for it.
            // SAFETY: no transaction can outlive the env (they borrow it).
            unsafe { ffi::mdb_env_close(self.ptr) };
            return;
        };
        let reg = registry();
        // Holding the registry while closing makes a concurrent Env::open of the same path wait.
        let mut envs = lock(&reg.envs);
        // SAFETY: no transaction can outlive the env (they borrow it), so closing is safe.
        unsafe { ffi::mdb_env_close(self.ptr) };
        if envs.get(key).is_some_and(|w| w.strong_count() == 0) {
            envs.remove(key);
        }
        drop(envs);
        reg.closed.notify_all();
    }
}

/// Runs an LMDB call, retrying it a few times: while an application initialises a fresh LMDB
/// next to us (PowerDNS creates and upgrades its files on first use) the first attempts to start
/// a transaction can fail, and that must not end the daemon. A full map is no such passing state.
pub fn retry_lmdb<T>(what: &str, f: impl FnMut() -> Result<T>) -> Result<T> {
    use crate::retry::{Attempts, Policy, Verdict};
    const POLICY: Policy = Policy::linear(
        Attempts::Max(5),
        std::time::Duration::from_millis(200),
        std::time::Duration::from_secs(1),
    );
    crate::retry::run(
        &POLICY,
        f,
        |e: &LmdbError| {
            if e.is_map_full() {
                Verdict::Fail
            } else {
                Verdict::Retry
            }
        },
        |r| log::warn!(error = r.error.to_string(), attempt = r.attempt; "{what} failed, retrying"),
        crate::retry::sleep,
    )
    .map_err(crate::retry::Failed::into_error)
}

mod cursor;
mod txn;
pub use cursor::{Cursor, RwCursor};
use txn::TxnInner;
pub use txn::{Dbi, RoTxn, RwTxn, Txn};

#[cfg(test)]
mod tests;
