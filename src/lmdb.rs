//! The LMDB wrapper, and the only module with `unsafe`. It sits directly on `lmdb-rkv-sys` (the
//! LMDB 0.9 C library that lmdb-rkv bundles, the same on-disk and lock format PowerDNS uses)
//! because lmdb-rkv's safe API cannot open DBIs by raw byte names, panics on unknown DBI flag
//! bits, and lets an iterator outlive its cursor. The types here make the known traps impossible:
//! one [`Env`] per path per process (a second open + close would drop the process's fcntl locks),
//! DBIs opened inside a transaction under a per-env lock, cursors and borrowed values tied to
//! their transaction's lifetime, and every LMDB error turned into an [`LmdbError`] with context.

use std::collections::HashMap;
use std::ffi::{CStr, CString};
use std::marker::PhantomData;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, Weak};

use lmdb_sys as ffi;

pub const MDB_REVERSEKEY: u32 = 0x02;
pub const MDB_DUPSORT: u32 = 0x04;
pub const MDB_INTEGERKEY: u32 = 0x08;
pub const MDB_DUPFIXED: u32 = 0x10;
pub const MDB_INTEGERDUP: u32 = 0x20;
pub const MDB_REVERSEDUP: u32 = 0x40;
/// Every flag that is stored with a DBI (the ones snapshots carry).
pub const PERSISTENT_DBI_FLAGS: u32 = 0x7e;
/// LMDB 0.9's compiled-in key size limit.
pub const MAX_KEY_SIZE: usize = 511;
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
    key: PathBuf,
    /// `mdb_dbi_open` must not run in two transactions of one env at once.
    dbi_lock: Mutex<()>,
    /// Transactions of this process open on the env: the map may only be resized at zero.
    active: std::sync::atomic::AtomicUsize,
}

// SAFETY: an MDB_env may be used from any thread; with MDB_NOTLS read transactions are not tied
// to threads either. Write transactions are serialised by LMDB's own mutex.
unsafe impl Send for Env {}
// SAFETY: as above; all mutation of shared state goes through LMDB's locks or `dbi_lock`.
unsafe impl Sync for Env {}

fn registry() -> &'static Mutex<HashMap<PathBuf, Weak<Env>>> {
    static REGISTRY: std::sync::OnceLock<Mutex<HashMap<PathBuf, Weak<Env>>>> =
        std::sync::OnceLock::new();
    REGISTRY.get_or_init(|| Mutex::new(HashMap::new()))
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
        let mut reg = registry().lock().unwrap_or_else(|e| e.into_inner());
        reg.retain(|_, w| w.strong_count() > 0);
        if let Some(env) = reg.get(&identity(path)).and_then(Weak::upgrade) {
            return Ok(env);
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
        let env = Env::open_raw(path, opts)?;
        let env = Arc::new(env);
        reg.insert(env.key.clone(), Arc::downgrade(&env));
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
        let mut env = Env {
            ptr,
            path: path.to_path_buf(),
            key: PathBuf::new(),
            dbi_lock: Mutex::new(()),
            active: std::sync::atomic::AtomicUsize::new(0),
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
        env.key = identity(path);
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

    fn begin(&self, flags: u32) -> Result<*mut ffi::MDB_txn> {
        let mut txn = std::ptr::null_mut();
        // SAFETY: `self.ptr` is an open env; LMDB writes the new txn handle.
        let mut rc = unsafe { ffi::mdb_txn_begin(self.ptr, std::ptr::null_mut(), flags, &mut txn) };
        if rc == ffi::MDB_MAP_RESIZED && self.adopt_file_map_size()? {
            // Another process (PowerDNS) grew the map beyond ours: follow it and try again.
            // SAFETY: as above.
            rc = unsafe { ffi::mdb_txn_begin(self.ptr, std::ptr::null_mut(), flags, &mut txn) };
        }
        check("txn_begin", rc)?;
        self.active
            .fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        Ok(txn)
    }

    fn txn_ended(&self) {
        self.active
            .fetch_sub(1, std::sync::atomic::Ordering::SeqCst);
    }

    /// Takes the map size recorded in the file when it is larger than ours: the applications
    /// sharing the LMDB (PowerDNS opens it with a 16 GB map) may have grown it, and a write
    /// transaction of ours then fails with a full map. LMDB allows this only while this process
    /// has no transaction open on the env; then nothing is done and `false` returned. Returns
    /// whether the map grew.
    pub fn adopt_file_map_size(&self) -> Result<bool> {
        if self.active.load(std::sync::atomic::Ordering::SeqCst) != 0 {
            return Ok(false);
        }
        let before = self.info()?.map_size;
        // SAFETY: no transaction of this process is open on the env (checked above; callers
        // keep transactions on the thread that calls this), as mdb_env_set_mapsize requires.
        check("env_set_mapsize", unsafe {
            ffi::mdb_env_set_mapsize(self.ptr, 0)
        })?;
        Ok(self.info()?.map_size > before)
    }

    pub fn begin_ro(&self) -> Result<RoTxn<'_>> {
        Ok(RoTxn {
            inner: TxnInner {
                ptr: self.begin(ffi::MDB_RDONLY)?,
                env: self,
                _not_send: PhantomData,
            },
        })
    }

    /// Starts a write transaction, waiting for LMDB's write lock (shared with other processes).
    pub fn begin_rw(&self) -> Result<RwTxn<'_>> {
        Ok(RwTxn {
            inner: TxnInner {
                ptr: self.begin(0)?,
                env: self,
                _not_send: PhantomData,
            },
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
        // SAFETY: no transaction can outlive the env (they borrow it), so closing is safe.
        unsafe { ffi::mdb_env_close(self.ptr) };
    }
}

/// A DBI handle, valid for the environment it was opened in.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Dbi(ffi::MDB_dbi);

struct TxnInner<'env> {
    ptr: *mut ffi::MDB_txn,
    env: &'env Env,
    /// LMDB write transactions must stay on their thread; keep both kinds !Send.
    _not_send: PhantomData<*const ()>,
}

impl TxnInner<'_> {
    fn open_dbi(&self, name: Option<&[u8]>, flags: u32, op: &'static str) -> Result<Option<Dbi>> {
        let cname = match name {
            Some(n) => Some(CString::new(n).map_err(|_| LmdbError::BadName {
                op,
                name: String::from_utf8_lossy(n).into_owned(),
            })?),
            None => None,
        };
        let mut dbi: ffi::MDB_dbi = 0;
        let _guard = self.env.dbi_lock.lock().unwrap_or_else(|e| e.into_inner());
        // SAFETY: `self.ptr` is a live txn; the name is NUL-terminated; opens are serialised.
        let rc = unsafe {
            ffi::mdb_dbi_open(
                self.ptr,
                cname.as_ref().map_or(std::ptr::null(), |c| c.as_ptr()),
                flags,
                &mut dbi,
            )
        };
        if rc == ffi::MDB_NOTFOUND {
            return Ok(None);
        }
        check(op, rc)?;
        Ok(Some(Dbi(dbi)))
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

    /// Opens an existing named DBI; `None` when there is none of that name.
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
        self.inner.open_dbi(Some(name), 0, "dbi_open")
    }
}

impl Drop for RoTxn<'_> {
    fn drop(&mut self) {
        // Committing (not aborting) a read transaction keeps the DBI handles opened in it valid
        // for later transactions; it writes nothing.
        // SAFETY: the txn is live and ends here.
        unsafe {
            ffi::mdb_txn_commit(self.inner.ptr);
        }
        self.inner.env.txn_ended();
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
        self.inner.open_dbi(Some(name), 0, "dbi_open")
    }
}

impl RwTxn<'_> {
    /// Opens `name`, creating it with `flags` (LMDB's 16 flag bits) when it does not exist.
    /// Unknown bits make LMDB refuse (EINVAL), reported as an error.
    pub fn create_dbi(&mut self, name: &[u8], flags: u32) -> Result<Dbi> {
        let flags = ffi::MDB_CREATE | (flags & 0xffff);
        match self.inner.open_dbi(Some(name), flags, "dbi_create")? {
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

    /// Empties the DBI, or deletes it altogether with `delete`.
    pub fn drop_dbi(&mut self, dbi: Dbi, delete: bool) -> Result<()> {
        // SAFETY: live write txn.
        check("drop", unsafe {
            ffi::mdb_drop(self.inner.ptr, dbi.0, i32::from(delete))
        })
    }

    pub fn commit(self) -> Result<()> {
        let (ptr, env) = (self.inner.ptr, self.inner.env);
        std::mem::forget(self);
        // SAFETY: the txn is live; commit frees it whatever the outcome, and `forget` keeps Drop
        // from aborting it a second time.
        let rc = unsafe { ffi::mdb_txn_commit(ptr) };
        env.txn_ended();
        check("commit", rc)
    }

    pub fn abort(self) {}
}

impl Drop for RwTxn<'_> {
    fn drop(&mut self) {
        // SAFETY: a live txn that was neither committed nor aborted yet.
        unsafe { ffi::mdb_txn_abort(self.inner.ptr) };
        self.inner.env.txn_ended();
    }
}

/// A cursor bound to its transaction; yields every entry (each duplicate of DUPSORT DBIs too).
pub struct Cursor<'txn> {
    ptr: *mut ffi::MDB_cursor,
    started: bool,
    _txn: PhantomData<&'txn ()>,
}

type Item<'txn> = Option<(&'txn [u8], &'txn [u8])>;

impl<'txn> Cursor<'txn> {
    fn op(&mut self, op: ffi::MDB_cursor_op, key: Option<&[u8]>) -> Result<Item<'txn>> {
        self.started = true;
        let mut k = key.map_or_else(empty_val, val);
        let mut v = empty_val();
        // SAFETY: live cursor of a live txn (the borrow on 'txn guarantees it).
        let rc = unsafe { ffi::mdb_cursor_get(self.ptr, &mut k, &mut v, op) };
        if rc == ffi::MDB_NOTFOUND {
            return Ok(None);
        }
        check("cursor_get", rc)?;
        // SAFETY: both point into the txn's pages, valid for 'txn (see Txn::get).
        Ok(Some(unsafe { (slice(&k), slice(&v)) }))
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

impl Drop for Cursor<'_> {
    fn drop(&mut self) {
        // SAFETY: the cursor is live and its txn still is (the 'txn borrow).
        unsafe { ffi::mdb_cursor_close(self.ptr) };
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

    fn umask() -> u32 {
        let status = std::fs::read_to_string("/proc/self/status").unwrap();
        status
            .lines()
            .find_map(|l| l.strip_prefix("Umask:"))
            .map(|v| u32::from_str_radix(v.trim(), 8).unwrap())
            .unwrap_or(0o022)
    }
}
