//! Cursors over one DBI of a transaction: read cursors that iterate in key order (duplicates
//! included) and write cursors for in-place puts and deletes, each borrowed from its
//! transaction so that no value outlives it.

use super::*;

/// A cursor bound to its transaction; yields every entry (each duplicate of DUPSORT DBIs too).
pub struct Cursor<'txn> {
    pub(super) ptr: *mut ffi::MDB_cursor,
    pub(super) started: bool,
    pub(super) _txn: PhantomData<&'txn ()>,
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
    pub(super) ptr: *mut ffi::MDB_cursor,
    pub(super) _txn: PhantomData<&'txn mut ()>,
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

    fn put_flags(&mut self, key: &[u8], value: &[u8], flags: std::ffi::c_uint) -> std::ffi::c_int {
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
