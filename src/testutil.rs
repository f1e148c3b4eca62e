//! Helpers for the unit tests of several modules: scratch LMDBs and values with LS headers.

use std::path::Path;
use std::sync::Arc;

use crate::core::header;
use crate::lmdb::{Env, EnvOptions};

/// A fresh no-subdir LMDB `dir/name` with room for a few DBIs.
pub fn scratch_env(dir: &Path, name: &str, map_size: u64) -> Arc<Env> {
    let o = EnvOptions {
        no_subdir: true,
        create: true,
        map_size,
        max_dbs: 16,
        ..Default::default()
    };
    Env::open(&dir.join(name), &o).unwrap()
}

/// An LS header (txn ID 1, deletion flag as given) followed by the application value.
pub fn header_value(ts: u64, deleted: bool, app: &[u8]) -> Vec<u8> {
    let mut v = Vec::new();
    let flags = if deleted { header::FLAG_DELETED } else { 0 };
    header::write_header(&mut v, ts, 1, flags, false);
    v.extend_from_slice(app);
    v
}

/// Puts `items` into DBI `dbi` (created if needed) in one committed transaction.
pub fn put_all(env: &Env, dbi: &[u8], items: &[(Vec<u8>, Vec<u8>)]) {
    let mut txn = env.begin_rw().unwrap();
    let d = txn.create_dbi(dbi, 0).unwrap();
    for (k, v) in items {
        txn.put(d, k, v).unwrap();
    }
    txn.commit().unwrap();
}
