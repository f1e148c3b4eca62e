//! `drop-shadow`: deletes every `_sync*` DBI (shadows and sync metadata) of each configured LMDB
//! in one write transaction per LMDB, e.g. after moving PowerDNS from 4.7 (shadow mode) to 4.8+
//! (native). A db that fails is logged and the others still run, as upstream does.

use crate::config::Config;
use crate::core::lww::SYNC_PREFIX;
use crate::lmdb::Txn;

pub fn run(cfg: &Config) -> anyhow::Result<()> {
    for (name, l) in &cfg.lmdbs {
        if let Err(e) = drop_db(name, l) {
            log::error!(db = name, error = format!("{e:#}"); "LMDB drop-shadow error");
        }
    }
    Ok(())
}

fn drop_db(name: &str, l: &crate::config::LmdbConfig) -> anyhow::Result<()> {
    let env = super::open_lmdb(name, l)?;
    let mut txn = env.begin_rw()?;
    for dbi_name in txn.list_dbis()? {
        if !dbi_name.starts_with(SYNC_PREFIX) {
            continue;
        }
        if let Some(dbi) = txn.open_dbi(&dbi_name)? {
            log::info!(db = name, dbi = String::from_utf8_lossy(&dbi_name).into_owned(); "Dropping");
            txn.drop_dbi(dbi, true)?;
        }
    }
    txn.commit()?;
    Ok(())
}
