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
        mv_data: b.as_ptr() as *mut libc::c_void,
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

/// A DBI handle, valid for the environment it was opened in.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Dbi(ffi::MDB_dbi);

struct TxnInner<'env> {
    ptr: *mut ffi::MDB_txn,
    env: &'env Env,
    /// Identifies this txn as the owner of the DBI table.
    serial: u64,
    /// `DbiTable::generation` when the txn began.
    begin_gen: u64,
    owns_table: Cell<bool>,
    /// Names (and slots) this txn opened while owning the table; published if the txn ends
    /// keeping them.
    pending: RefCell<Vec<(Vec<u8>, ffi::MDB_dbi)>>,
    /// LMDB write transactions must stay on their thread; keep both kinds !Send.
    _not_send: PhantomData<*const ()>,
}

/// How a transaction ends.
#[derive(Clone, Copy, PartialEq, Eq)]
enum End {
    Commit,
    Abort,
}

impl TxnInner<'_> {
    /// Makes this txn the owner of the DBI table (see [`DbiTable`]), waiting for another
    /// thread's owner to end.
    fn own_table<'a>(
        &self,
        mut table: MutexGuard<'a, DbiTable>,
        op: &'static str,
        name: &[u8],
    ) -> Result<MutexGuard<'a, DbiTable>> {
        let me = std::thread::current().id();
        loop {
            match table.owner {
                None => {
                    table.owner = Some((self.serial, me));
                    self.owns_table.set(true);
                    return Ok(table);
                }
                Some((serial, _)) if serial == self.serial => return Ok(table),
                Some((_, thread)) if thread == me => {
                    return Err(LmdbError::DbiTableBusy {
                        op,
                        name: String::from_utf8_lossy(name).into_owned(),
                    });
                }
                Some(_) => {
                    table = self
                        .env
                        .dbis_released
                        .wait(table)
                        .unwrap_or_else(PoisonError::into_inner);
                }
            }
        }
    }

    fn open_dbi(&self, name: &[u8], flags: u32, op: &'static str) -> Result<Option<Dbi>> {
        let cname = CString::new(name).map_err(|_| LmdbError::BadName {
            op,
            name: String::from_utf8_lossy(name).into_owned(),
        })?;
        // Held across mdb_dbi_open: it reads and writes the shared table without locking.
        let mut table = lock(&self.env.dbis);
        // A handle published before this txn began is within its slot count: LMDB just finds it.
        let visible = table
            .published
            .get(name)
            .is_some_and(|&(generation, _)| generation <= self.begin_gen);
        if !visible {
            table = self.own_table(table, op, name)?;
            if table.generation != self.begin_gen {
                return Err(LmdbError::DbiTableChanged {
                    op,
                    name: String::from_utf8_lossy(name).into_owned(),
                });
            }
        }
        let mut dbi: ffi::MDB_dbi = 0;
        // SAFETY: `self.ptr` is a live txn; the name is NUL-terminated; the table lock and the
        // ownership rule above keep LMDB's handle table consistent.
        let rc = unsafe { ffi::mdb_dbi_open(self.ptr, cname.as_ptr(), flags, &mut dbi) };
        if rc == ffi::MDB_NOTFOUND {
            return Ok(None);
        }
        check(op, rc)?;
        drop(table);
        if !visible {
            let mut pending = self.pending.borrow_mut();
            if !pending.iter().any(|(n, _)| n == name) {
                pending.push((name.to_vec(), dbi));
            }
        }
        Ok(Some(Dbi(dbi)))
    }

    /// Ends the txn; publishes the DBI handles it opened when LMDB keeps them. Returns LMDB's
    /// result code.
    fn end(&self, how: End) -> i32 {
        // An owner's end changes LMDB's table (publishing or freeing its new slots), so it must
        // not overlap another txn's mdb_dbi_open.
        let table = self.owns_table.get().then(|| lock(&self.env.dbis));
        let rc = match how {
            // SAFETY: the txn is live and is not used again (callers guarantee a single end).
            // Committing a read-only txn writes nothing and keeps its DBI handles, unlike abort.
            End::Commit => unsafe { ffi::mdb_txn_commit(self.ptr) },
            End::Abort => {
                // SAFETY: as above.
                unsafe { ffi::mdb_txn_abort(self.ptr) };
                0
            }
        };
        if let Some(mut table) = table {
            let pending = self.pending.take();
            if how == End::Commit && rc == 0 && !pending.is_empty() {
                table.generation += 1;
                let generation = table.generation;
                for (name, dbi) in pending {
                    table.published.insert(name, (generation, dbi));
                }
            }
            table.owner = None;
            drop(table);
            self.env.dbis_released.notify_all();
        }
        self.env.txn_ended();
        rc
    }
}

mod sealed {
    /// Gives the trait's provided methods the raw handle without making it public API.
    pub trait RawTxn {
        fn raw(&self) -> *mut super::ffi::MDB_txn;
    }
}

/// Read operations shared by both transaction kinds.
pub trait Txn: sealed::RawTxn {
    /// The transaction ID (for a read transaction: the last committed one it sees).
    fn id(&self) -> u64 {
        // SAFETY: the txn is live.
        unsafe { ffi::mdb_txn_id(self.raw()) as u64 }
    }

    /// Names of all named DBIs, from the root database in key (bytewise) order.
    fn list_dbis(&self) -> Result<Vec<Vec<u8>>> {
        // LMDB's unnamed database is handle 1 (MAIN_DBI); 0 is the free-page list.
        let root = Dbi(1);
        let mut names = Vec::new();
        let mut c = self.cursor(root)?;
        let mut item = c.first()?;
        while let Some((k, _)) = item {
            names.push(k.to_vec());
            item = c.next_entry()?;
        }
        Ok(names)
    }

    /// Opens an existing named DBI; `None` when there is none of that name. The handle stays
    /// valid in transactions begun after this one ends (a read txn ends by commit for that).
    ///
    /// LMDB's handle table is shared by the whole process: a name opened for the first time
    /// takes a slot that others see only after this txn ends. So while one live txn holds such
    /// new handles, another txn of the same thread gets [`LmdbError::DbiTableBusy`] for a new
    /// name and a txn of another thread waits (do not then wait on that thread, e.g. by starting
    /// a write txn while it holds LMDB's write lock); and a txn begun before new handles were
    /// published gets [`LmdbError::DbiTableChanged`]. Names already published before the txn
    /// began always open without waiting. Open DBIs early in a fresh txn to never see either.
    fn open_dbi(&self, name: &[u8]) -> Result<Option<Dbi>>;

    /// The DBI's persistent flags; bits LMDB does not know are kept out rather than panicking.
    fn dbi_flags(&self, dbi: Dbi) -> Result<u32> {
        let mut flags: libc::c_uint = 0;
        // SAFETY: live txn and a DBI handle of this env.
        check("dbi_flags", unsafe {
            ffi::mdb_dbi_flags(self.raw(), dbi.0, &mut flags)
        })?;
        Ok(flags & PERSISTENT_DBI_FLAGS)
    }

    fn dbi_stat(&self, dbi: Dbi) -> Result<DbStat> {
        // SAFETY: plain data, filled by LMDB.
        let mut s: ffi::MDB_stat = unsafe { std::mem::zeroed() };
        // SAFETY: live txn and a DBI handle of this env.
        check("stat", unsafe { ffi::mdb_stat(self.raw(), dbi.0, &mut s) })?;
        Ok(s.into())
    }

    /// The value of `key`, borrowed from the transaction.
    fn get(&self, dbi: Dbi, key: &[u8]) -> Result<Option<&[u8]>> {
        check_key("get", key)?;
        let mut k = val(key);
        let mut v = empty_val();
        // SAFETY: live txn; `k` points to `key`, which outlives the call.
        let rc = unsafe { ffi::mdb_get(self.raw(), dbi.0, &mut k, &mut v) };
        if rc == ffi::MDB_NOTFOUND {
            return Ok(None);
        }
        check("get", rc)?;
        // SAFETY: LMDB values stay valid until the transaction ends or writes; `&self` borrows
        // the txn, and writes need `&mut` on a RwTxn, so the slice cannot outlive its validity.
        Ok(Some(unsafe { slice(&v) }))
    }

    /// A cursor over `dbi`; its items borrow from the transaction.
    fn cursor(&self, dbi: Dbi) -> Result<Cursor<'_>> {
        let mut c = std::ptr::null_mut();
        // SAFETY: live txn; LMDB writes the cursor handle.
        check("cursor_open", unsafe {
            ffi::mdb_cursor_open(self.raw(), dbi.0, &mut c)
        })?;
        Ok(Cursor {
            ptr: c,
            started: false,
            _txn: PhantomData,
        })
    }
}

pub struct RoTxn<'env> {
    inner: TxnInner<'env>,
}

impl sealed::RawTxn for RoTxn<'_> {
    fn raw(&self) -> *mut ffi::MDB_txn {
        self.inner.ptr
    }
}

impl Txn for RoTxn<'_> {
    fn open_dbi(&self, name: &[u8]) -> Result<Option<Dbi>> {
        self.inner.open_dbi(name, 0, "dbi_open")
    }
}

impl RoTxn<'_> {
    /// The handle of `name` if it was published before this txn began; `None` otherwise, and
    /// then without opening anything. Unlike [`Txn::open_dbi`] it never takes a slot in LMDB's
    /// shared handle table, so it cannot make another thread's transaction wait or fail with
    /// [`LmdbError::DbiTableChanged`]: for background readers of DBIs others opened.
    pub fn published_dbi(&self, name: &[u8]) -> Option<Dbi> {
        let table = lock(&self.inner.env.dbis);
        table
            .published
            .get(name)
            .filter(|&&(generation, _)| generation <= self.inner.begin_gen)
            .map(|&(_, dbi)| Dbi(dbi))
    }
}

impl Drop for RoTxn<'_> {
    fn drop(&mut self) {
        // Committing (not aborting) a read transaction keeps the DBI handles opened in it valid
        // for later transactions; it writes nothing and cannot fail in a way we could act on.
        self.inner.end(End::Commit);
    }
}

pub struct RwTxn<'env> {
    inner: TxnInner<'env>,
}

impl sealed::RawTxn for RwTxn<'_> {
    fn raw(&self) -> *mut ffi::MDB_txn {
        self.inner.ptr
    }
}

impl Txn for RwTxn<'_> {
    fn open_dbi(&self, name: &[u8]) -> Result<Option<Dbi>> {
        self.inner.open_dbi(name, 0, "dbi_open")
    }
}

impl RwTxn<'_> {
    /// Opens `name`, creating it with `flags` (LMDB's 16 flag bits) when it does not exist.
    /// Unknown bits make LMDB refuse (EINVAL), reported as an error.
    pub fn create_dbi(&mut self, name: &[u8], flags: u32) -> Result<Dbi> {
        let flags = ffi::MDB_CREATE | (flags & 0xffff);
        match self.inner.open_dbi(name, flags, "dbi_create")? {
            Some(d) => Ok(d),
            None => Err(LmdbError::Lmdb {
                op: "dbi_create",
                code: ffi::MDB_NOTFOUND,
                msg: "not created".into(),
            }),
        }
    }

    pub fn put(&mut self, dbi: Dbi, key: &[u8], value: &[u8]) -> Result<()> {
        check_key("put", key)?;
        let mut k = val(key);
        let mut v = val(value);
        // SAFETY: live write txn; LMDB copies key and value before returning.
        check("put", unsafe {
            ffi::mdb_put(self.inner.ptr, dbi.0, &mut k, &mut v, 0)
        })
    }

    /// Puts `key` after the DBI's last key (MDB_APPEND: no search, pages filled completely),
    /// much cheaper than [`put`](Self::put) when keys arrive in order. Returns false, writing
    /// nothing, when `key` does not sort after the last key. Not for DUPSORT DBIs.
    pub fn append(&mut self, dbi: Dbi, key: &[u8], value: &[u8]) -> Result<bool> {
        check_key("put", key)?;
        let mut k = val(key);
        let mut v = val(value);
        // SAFETY: live write txn; LMDB copies key and value before returning.
        let rc = unsafe { ffi::mdb_put(self.inner.ptr, dbi.0, &mut k, &mut v, ffi::MDB_APPEND) };
        if rc == ffi::MDB_KEYEXIST {
            return Ok(false);
        }
        check("put", rc)?;
        Ok(true)
    }

    /// Deletes `key` (all its duplicates in a DUPSORT DBI); false when it was absent.
    pub fn del(&mut self, dbi: Dbi, key: &[u8]) -> Result<bool> {
        check_key("del", key)?;
        let mut k = val(key);
        // SAFETY: live write txn.
        let rc = unsafe { ffi::mdb_del(self.inner.ptr, dbi.0, &mut k, std::ptr::null_mut()) };
        if rc == ffi::MDB_NOTFOUND {
            return Ok(false);
        }
        check("del", rc)?;
        Ok(true)
    }

    /// Empties the DBI, or deletes it altogether with `delete`. A deleted DBI's handle is closed
    /// for the whole process at once (LMDB does that even if this txn is later aborted), so no
    /// other code may still use a copy of it.
    pub fn drop_dbi(&mut self, dbi: Dbi, delete: bool) -> Result<()> {
        if !delete {
            // SAFETY: live write txn.
            return check("drop", unsafe { ffi::mdb_drop(self.inner.ptr, dbi.0, 0) });
        }
        // Deleting frees the handle's slot in LMDB's shared table: same rules as opening.
        let mut table = self.inner.own_table(
            lock(&self.inner.env.dbis),
            "drop",
            format!("(handle {})", dbi.0).as_bytes(),
        )?;
        // SAFETY: live write txn; the table lock keeps the slot release from overlapping any
        // other txn's mdb_dbi_open.
        check("drop", unsafe { ffi::mdb_drop(self.inner.ptr, dbi.0, 1) })?;
        // The slot may be reused for another name; forget whichever name it had.
        self.inner.pending.borrow_mut().retain(|&(_, d)| d != dbi.0);
        table.published.retain(|_, &mut (_, d)| d != dbi.0);
        Ok(())
    }

    /// A cursor that reads and writes `dbi`. It borrows the transaction mutably, so nothing else
    /// writes while it lives; what it returns is valid until its next call.
    pub fn write_cursor(&mut self, dbi: Dbi) -> Result<RwCursor<'_>> {
        let mut c = std::ptr::null_mut();
        // SAFETY: live write txn; LMDB writes the cursor handle.
        check("cursor_open", unsafe {
            ffi::mdb_cursor_open(self.inner.ptr, dbi.0, &mut c)
        })?;
        Ok(RwCursor {
            ptr: c,
            _txn: PhantomData,
        })
    }

    pub fn commit(self) -> Result<()> {
        let this = std::mem::ManuallyDrop::new(self);
        // Commit frees the txn whatever the outcome; ManuallyDrop keeps Drop from aborting it
        // a second time.
        check("commit", this.inner.end(End::Commit))
    }

    pub fn abort(self) {}
}

impl Drop for RwTxn<'_> {
    fn drop(&mut self) {
        self.inner.end(End::Abort);
    }
}

/// A cursor bound to its transaction; yields every entry (each duplicate of DUPSORT DBIs too).
pub struct Cursor<'txn> {
    ptr: *mut ffi::MDB_cursor,
    started: bool,
    _txn: PhantomData<&'txn ()>,
}

type Item<'txn> = Option<(&'txn [u8], &'txn [u8])>;

/// `mdb_cursor_get`, the entry found borrowed for `'a`.
///
/// # Safety
/// `cursor` must be live, and the pages it points into must stay valid and unchanged for `'a`.
unsafe fn cursor_get<'a>(
    cursor: *mut ffi::MDB_cursor,
    op: ffi::MDB_cursor_op,
    key: Option<&[u8]>,
) -> Result<Item<'a>> {
    let mut k = key.map_or_else(empty_val, val);
    let mut v = empty_val();
    // SAFETY: the caller's promise; `k` points to `key`, which outlives the call.
    let rc = unsafe { ffi::mdb_cursor_get(cursor, &mut k, &mut v, op) };
    if rc == ffi::MDB_NOTFOUND {
        return Ok(None);
    }
    check("cursor_get", rc)?;
    // SAFETY: both point into pages valid for 'a (the caller's promise).
    Ok(Some(unsafe { (slice(&k), slice(&v)) }))
}

impl<'txn> Cursor<'txn> {
    fn op(&mut self, op: ffi::MDB_cursor_op, key: Option<&[u8]>) -> Result<Item<'txn>> {
        self.started = true;
        // SAFETY: live cursor of a live txn (the borrow on 'txn guarantees it); its pages stay
        // valid for 'txn (see Txn::get).
        unsafe { cursor_get(self.ptr, op, key) }
    }

    pub fn first(&mut self) -> Result<Item<'txn>> {
        self.op(ffi::MDB_FIRST, None)
    }

    pub fn next_entry(&mut self) -> Result<Item<'txn>> {
        self.op(ffi::MDB_NEXT, None)
    }

    /// Positions at the first key >= `key`.
    pub fn set_range(&mut self, key: &[u8]) -> Result<Item<'txn>> {
        check_key("set_range", key)?;
        self.op(ffi::MDB_SET_RANGE, Some(key))
    }
}

impl<'txn> Iterator for Cursor<'txn> {
    type Item = Result<(&'txn [u8], &'txn [u8])>;

    fn next(&mut self) -> Option<Self::Item> {
        let r = if self.started {
            self.next_entry()
        } else {
            self.first()
        };
        r.transpose()
    }
}

/// A cursor of a write transaction. Writing through it keeps it positioned, so a run of
/// lookups and writes in key order never searches from the root (LMDB first checks whether a
/// key falls within the cursor's current page).
pub struct RwCursor<'txn> {
    ptr: *mut ffi::MDB_cursor,
    _txn: PhantomData<&'txn mut ()>,
}

impl RwCursor<'_> {
    fn op(&mut self, op: ffi::MDB_cursor_op, key: Option<&[u8]>) -> Result<Item<'_>> {
        // SAFETY: live cursor of a live write txn (borrowed mutably for the cursor's life). Its
        // pages stay put until the next write, and the result borrows `self`, so no write
        // through this cursor (the only writer while it lives) can happen meanwhile.
        unsafe { cursor_get(self.ptr, op, key) }
    }

    /// The entry at the cursor; only valid on a positioned cursor (LMDB says EINVAL otherwise).
    pub fn current(&mut self) -> Result<Item<'_>> {
        self.op(ffi::MDB_GET_CURRENT, None)
    }

    pub fn next_entry(&mut self) -> Result<Item<'_>> {
        self.op(ffi::MDB_NEXT, None)
    }

    /// Positions at the first key >= `key`.
    pub fn set_range(&mut self, key: &[u8]) -> Result<Item<'_>> {
        check_key("set_range", key)?;
        self.op(ffi::MDB_SET_RANGE, Some(key))
    }

    fn put_flags(&mut self, key: &[u8], value: &[u8], flags: libc::c_uint) -> libc::c_int {
        let mut k = val(key);
        let mut v = val(value);
        // SAFETY: live cursor of a live write txn; LMDB copies key and value before returning.
        unsafe { ffi::mdb_cursor_put(self.ptr, &mut k, &mut v, flags) }
    }

    /// Like [`RwTxn::put`]; the cursor ends up at `key`.
    pub fn put(&mut self, key: &[u8], value: &[u8]) -> Result<()> {
        check_key("put", key)?;
        check("put", self.put_flags(key, value, 0))
    }

    /// Like [`RwTxn::append`]; the cursor ends up at `key` when it was appended.
    pub fn append(&mut self, key: &[u8], value: &[u8]) -> Result<bool> {
        check_key("put", key)?;
        let rc = self.put_flags(key, value, ffi::MDB_APPEND);
        if rc == ffi::MDB_KEYEXIST {
            return Ok(false);
        }
        check("put", rc)?;
        Ok(true)
    }

    /// Deletes the entry at the cursor (with `all_dups`, every duplicate of its key in a
    /// DUPSORT DBI). The cursor is left at the next entry, or unpositioned.
    pub fn del_current(&mut self, all_dups: bool) -> Result<()> {
        let flags = if all_dups { ffi::MDB_NODUPDATA } else { 0 };
        // SAFETY: live cursor of a live write txn.
        check("del", unsafe { ffi::mdb_cursor_del(self.ptr, flags) })
    }
}

impl Drop for RwCursor<'_> {
    fn drop(&mut self) {
        // SAFETY: the cursor is live and its txn still is (the 'txn borrow).
        unsafe { ffi::mdb_cursor_close(self.ptr) };
    }
}

impl Drop for Cursor<'_> {
    fn drop(&mut self) {
        // SAFETY: the cursor is live and its txn still is (the 'txn borrow).
        unsafe { ffi::mdb_cursor_close(self.ptr) };
    }
}

/// Runs an LMDB call, retrying it a few times: while an application initialises a fresh LMDB
/// next to us (PowerDNS creates and upgrades its files on first use) the first attempts to start
/// a transaction can fail, and that must not end the daemon.
pub fn retry_lmdb<T>(what: &str, mut f: impl FnMut() -> Result<T>) -> Result<T> {
    let mut attempt = 1;
    loop {
        match f() {
            Ok(v) => return Ok(v),
            Err(e) if attempt < 5 && !e.is_map_full() => {
                log::warn!(error = e.to_string(), attempt = attempt; "{what} failed, retrying");
                std::thread::sleep(std::time::Duration::from_millis(200 * attempt));
                attempt += 1;
            }
            Err(e) => return Err(e),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    fn opts() -> EnvOptions {
        EnvOptions {
            no_subdir: true,
            create: true,
            map_size: 1 << 20,
            ..Default::default()
        }
    }

    #[test]
    fn txn_ids_and_dbis() {
        let dir = tempfile::tempdir().unwrap();
        let env = Env::open(&dir.path().join("sub/db.lmdb"), &opts()).unwrap();
        assert_eq!(env.info().unwrap().last_txn_id, 0);
        {
            let mut t = env.begin_rw().unwrap();
            assert_eq!(t.id(), 1);
            let b = t.create_dbi(b"b", MDB_DUPSORT | MDB_DUPFIXED).unwrap();
            let i = t.create_dbi(b"\xffraw", MDB_INTEGERKEY).unwrap();
            let a = t.create_dbi(b"a", 0).unwrap();
            t.put(a, b"k2", b"v2").unwrap();
            t.put(a, b"k1", b"v1").unwrap();
            t.put(b, b"d", b"1").unwrap();
            t.put(b, b"d", b"2").unwrap();
            t.put(i, &7u32.to_ne_bytes(), b"seven").unwrap();
            t.commit().unwrap();
        }
        assert_eq!(env.info().unwrap().last_txn_id, 1);
        // An empty write transaction does not advance the ID.
        env.begin_rw().unwrap().commit().unwrap();
        assert_eq!(env.info().unwrap().last_txn_id, 1);

        let t = env.begin_ro().unwrap();
        assert_eq!(t.id(), 1);
        assert_eq!(
            t.list_dbis().unwrap(),
            [b"a".to_vec(), b"b".to_vec(), b"\xffraw".to_vec()]
        );
        let a = t.open_dbi(b"a").unwrap().unwrap();
        let b = t.open_dbi(b"b").unwrap().unwrap();
        let i = t.open_dbi(b"\xffraw").unwrap().unwrap();
        assert!(t.open_dbi(b"missing").unwrap().is_none());
        assert_eq!(t.dbi_flags(a).unwrap(), 0);
        assert_eq!(t.dbi_flags(b).unwrap(), MDB_DUPSORT | MDB_DUPFIXED);
        assert_eq!(t.dbi_flags(i).unwrap(), MDB_INTEGERKEY);
        assert_eq!(t.get(a, b"k1").unwrap(), Some(&b"v1"[..]));
        assert_eq!(t.get(a, b"nope").unwrap(), None);
        let all: Vec<_> = t.cursor(a).unwrap().map(|r| r.unwrap()).collect();
        assert_eq!(all, [(&b"k1"[..], &b"v1"[..]), (&b"k2"[..], &b"v2"[..])]);
        let dups: Vec<_> = t.cursor(b).unwrap().map(|r| r.unwrap().1).collect();
        assert_eq!(dups, [b"1", b"2"]);
        let mut c = t.cursor(a).unwrap();
        assert_eq!(c.set_range(b"k15").unwrap(), Some((&b"k2"[..], &b"v2"[..])));
        assert_eq!(c.next_entry().unwrap(), None);
        assert_eq!(t.dbi_stat(a).unwrap().entries, 2);
        drop(c);
        drop(t);

        let mut t = env.begin_rw().unwrap();
        assert!(t.del(a, b"k1").unwrap());
        assert!(!t.del(a, b"k1").unwrap());
        t.drop_dbi(b, true).unwrap();
        t.commit().unwrap();
        let t = env.begin_ro().unwrap();
        assert_eq!(t.list_dbis().unwrap(), [b"a".to_vec(), b"\xffraw".to_vec()]);
    }

    #[test]
    fn bad_input_is_an_error_not_a_crash() {
        let dir = tempfile::tempdir().unwrap();
        let env = Env::open(&dir.path().join("db"), &opts()).unwrap();
        let mut t = env.begin_rw().unwrap();
        assert!(t.create_dbi(b"odd", 0x8000).is_err());
        assert!(matches!(
            t.create_dbi(b"a\0b", 0),
            Err(LmdbError::BadName { .. })
        ));
        let d = t.create_dbi(b"d", 0).unwrap();
        assert!(matches!(
            t.put(d, &[b'k'; 512], b"v"),
            Err(LmdbError::BadKey { len: 512, .. })
        ));
        assert!(matches!(
            t.put(d, b"", b"v"),
            Err(LmdbError::BadKey { len: 0, .. })
        ));
        t.put(d, &[b'k'; 511], b"v").unwrap();
        assert!(t.get(d, &[0; 600]).is_err());
        // A tiny map fills up with a recognisable error.
        let big = vec![7u8; 64 << 10];
        let full = (0..100u32)
            .find_map(|i| t.put(d, &i.to_be_bytes(), &big).err())
            .unwrap();
        assert!(full.is_map_full(), "{full}");
    }

    #[test]
    fn one_env_per_path() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("db");
        let a = Env::open(&path, &opts()).unwrap();
        let b = Env::open(&dir.path().join(".").join("db"), &opts()).unwrap();
        assert!(Arc::ptr_eq(&a, &b));
        std::os::unix::fs::symlink(dir.path(), dir.path().join("link")).unwrap();
        let c = Env::open(&dir.path().join("link/db"), &opts()).unwrap();
        assert!(Arc::ptr_eq(&a, &c));
        drop((a, b, c));
        let d = Env::open(&path, &opts()).unwrap();
        assert_eq!(d.info().unwrap().last_txn_id, 0);
    }

    #[test]
    fn masks_and_layouts() {
        let dir = tempfile::tempdir().unwrap();
        let o = EnvOptions {
            file_mask: 0o600,
            dir_mask: 0o700,
            ..opts()
        };
        let path = dir.path().join("new/dir/db");
        let _env = Env::open(&path, &o).unwrap();
        let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode(&path), 0o600);
        assert_eq!(mode(&dir.path().join("new/dir")), 0o700 & !umask());
        // A directory-style LMDB (data.mdb + lock.mdb inside `path`).
        let sub = dir.path().join("subdir-env");
        let env = Env::open(
            &sub,
            &EnvOptions {
                create: true,
                ..Default::default()
            },
        )
        .unwrap();
        assert!(sub.join("data.mdb").exists());
        assert_eq!(env.info().unwrap().map_size, 1 << 30);
        // Without create, a missing LMDB is an error naming the path.
        let e = Env::open(&dir.path().join("absent/db"), &EnvOptions::default())
            .err()
            .unwrap();
        assert!(e.to_string().contains("absent"), "{e}");
    }

    /// Creates DBIs a, b, c in a fresh LMDB and reopens it, so that no handle is open yet.
    fn env_with_unopened_dbis(dir: &Path) -> Arc<Env> {
        let path = dir.join("db");
        {
            let env = Env::open(&path, &opts()).unwrap();
            let mut t = env.begin_rw().unwrap();
            for n in [b"a", b"b", b"c"] {
                let d = t.create_dbi(n, 0).unwrap();
                t.put(d, b"k", n).unwrap();
            }
            t.commit().unwrap();
        }
        Env::open(&path, &opts()).unwrap()
    }

    #[test]
    fn dbi_table_rules() {
        let dir = tempfile::tempdir().unwrap();
        let env = env_with_unopened_dbis(dir.path());
        let t1 = env.begin_ro().unwrap();
        let t2 = env.begin_ro().unwrap();
        let a = t1.open_dbi(b"a").unwrap().unwrap();
        // Two live txns adding handles could get the same slot for different names.
        let e = t2.open_dbi(b"b").unwrap_err();
        assert!(matches!(e, LmdbError::DbiTableBusy { .. }), "{e}");
        drop(t1);
        // t2 began before `a` was published: its slot count does not include it.
        let e = t2.open_dbi(b"a").unwrap_err();
        assert!(matches!(e, LmdbError::DbiTableChanged { .. }), "{e}");
        drop(t2);
        let t3 = env.begin_ro().unwrap();
        assert_eq!(t3.open_dbi(b"a").unwrap(), Some(a));
        let b = t3.open_dbi(b"b").unwrap().unwrap();
        assert_ne!(a, b);
        assert_eq!(t3.get(a, b"k").unwrap(), Some(&b"a"[..]));
        assert_eq!(t3.get(b, b"k").unwrap(), Some(&b"b"[..]));
        drop(t3);
        // Published handles can be reopened by concurrent txns of one thread.
        let t4 = env.begin_ro().unwrap();
        let t5 = env.begin_ro().unwrap();
        assert_eq!(t4.open_dbi(b"a").unwrap(), Some(a));
        assert_eq!(t5.open_dbi(b"b").unwrap(), Some(b));
        drop((t4, t5));

        // Another thread waits for the owner to end instead of failing.
        let mut w = env.begin_rw().unwrap();
        w.create_dbi(b"new", 0).unwrap();
        let ended = std::sync::atomic::AtomicBool::new(false);
        std::thread::scope(|s| {
            let reader = s.spawn(|| {
                let t = env.begin_ro().unwrap();
                let c = t.open_dbi(b"c").unwrap().unwrap();
                assert!(ended.load(Ordering::SeqCst));
                t.get(c, b"k").unwrap().map(<[u8]>::to_vec)
            });
            std::thread::sleep(std::time::Duration::from_millis(100));
            ended.store(true, Ordering::SeqCst);
            w.abort();
            assert_eq!(reader.join().unwrap(), Some(b"c".to_vec()));
        });
    }

    #[test]
    fn no_resize_under_a_live_txn() {
        let dir = tempfile::tempdir().unwrap();
        let env = Env::open(&dir.path().join("db"), &opts()).unwrap();
        let t = env.begin_ro().unwrap();
        assert!(!env.adopt_file_map_size().unwrap());
        drop(t);
        // Nothing grew the file's map, so there is nothing to adopt.
        assert!(!env.adopt_file_map_size().unwrap());
    }

    /// Whether this process holds an fcntl lock on `file`, per /proc/locks.
    fn holds_lock(file: &Path) -> bool {
        use std::os::unix::fs::MetadataExt;
        let ino = std::fs::metadata(file).unwrap().ino().to_string();
        let pid = std::process::id().to_string();
        std::fs::read_to_string("/proc/locks")
            .unwrap()
            .lines()
            .any(|l| {
                let f: Vec<_> = l.split_whitespace().collect();
                f.len() > 5 && f[4] == pid && f[5].rsplit(':').next() == Some(ino.as_str())
            })
    }

    #[test]
    fn reopen_racing_close_keeps_locks() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("db");
        let lockfile = dir.path().join("db-lock");
        drop(Env::open(&path, &opts()).unwrap());
        for _ in 0..20 {
            let env = Env::open(&path, &opts()).unwrap();
            let env = std::thread::scope(|s| {
                let opener = s.spawn(|| Env::open(&path, &opts()).unwrap());
                drop(env);
                opener.join().unwrap()
            });
            assert!(holds_lock(&lockfile), "lost the LMDB lock");
            drop(env);
            // The check can see a lock go.
            assert!(!holds_lock(&lockfile));
        }
    }

    fn umask() -> u32 {
        let status = std::fs::read_to_string("/proc/self/status").unwrap();
        status
            .lines()
            .find_map(|l| l.strip_prefix("Umask:"))
            .map(|v| u32::from_str_radix(v.trim(), 8).unwrap())
            .unwrap_or(0o022)
    }
}
