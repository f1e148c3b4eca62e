//! Transactions and DBI handles: read-only and read-write transactions tied to their [`Env`]'s
//! lifetime, the process-wide DBI handle table rules of LMDB enforced on open, and every
//! get/put/delete with its error context.

use super::*;

/// A DBI handle, valid for the environment it was opened in.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Dbi(pub(super) ffi::MDB_dbi);

pub(super) struct TxnInner<'env> {
    pub(super) ptr: *mut ffi::MDB_txn,
    pub(super) env: &'env Env,
    /// Identifies this txn as the owner of the DBI table.
    pub(super) serial: u64,
    /// `DbiTable::generation` when the txn began.
    pub(super) begin_gen: u64,
    pub(super) owns_table: Cell<bool>,
    /// Names (and slots) this txn opened while owning the table; published if the txn ends
    /// keeping them.
    pub(super) pending: RefCell<Vec<(Vec<u8>, ffi::MDB_dbi)>>,
    /// LMDB write transactions must stay on their thread; keep both kinds !Send.
    pub(super) _not_send: PhantomData<*const ()>,
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
        let mut flags: std::ffi::c_uint = 0;
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
    pub(super) inner: TxnInner<'env>,
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
    pub(super) inner: TxnInner<'env>,
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
