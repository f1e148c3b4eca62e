//! `experimental migrate-timestamps` (spec/cli.md §5.7): carries timestamps from one DBI's value
//! headers (an LS header or the pre-0.3 8-byte one) into another DBI's LS headers where the
//! source is newer, and optionally turns source deletions into tombstones. Used to move a
//! PowerDNS fleet from 4.7 shadow DBIs to 4.8 native DBIs without losing which writes are newer.
//! One write transaction; the DBIs are read in bounded batches.

use anyhow::{Context, anyhow, bail};

use crate::cli::MigrateTimestampsCmd;
use crate::config::Config;
use crate::core::display::key_for_humans;
use crate::core::header::{self, FLAG_DELETED};
use crate::import::shadow::{ShadowError, for_each_batch};
use crate::lmdb::Txn;

pub fn run(cfg: &Config, c: &MigrateTimestampsCmd) -> anyhow::Result<()> {
    let l = cfg
        .lmdbs
        .get(&c.database)
        .ok_or_else(|| anyhow!("no LMDB with name {:?} configured", c.database))?;
    if c.src_dbi == c.dst_dbi {
        bail!("source and destination DBI cannot be the same");
    }
    let env = super::open_lmdb(&c.database, l)?;
    let mut txn = env.begin_rw()?;
    let t = txn.id();
    let Some(src) = txn.open_dbi(c.src_dbi.as_bytes())? else {
        if c.ignore_src_dbi_not_present {
            log::warn!(dbi = c.src_dbi; "Source DBI not found, no migration performed");
            return Ok(());
        }
        bail!("source DBI {:?} not found", c.src_dbi);
    };
    let dst = txn
        .open_dbi(c.dst_dbi.as_bytes())?
        .with_context(|| format!("destination DBI {:?} not found", c.dst_dbi))?;
    let bad = |msg: String| ShadowError::Invalid(msg);
    let lmdb = |e| bad(format!("LMDB: {e}"));

    let mut updated = 0u64;
    for_each_batch(&mut txn, dst, c.dst_dbi.as_bytes(), |txn, batch| {
        for (k, d) in batch {
            if d.len() < header::HEADER_SIZE {
                return Err(bad(format!(
                    "destination value of key {} has no LS header",
                    key_for_humans(&k)
                )));
            }
            let Some(s) = txn.get(src, &k).map_err(lmdb)?.map(<[u8]>::to_vec) else {
                continue;
            };
            let (Some(src_ts), Some(dst_ts)) =
                (header::timestamp_prefix(&s), header::timestamp_prefix(&d))
            else {
                return Err(bad(format!(
                    "source value of key {} has no timestamp",
                    key_for_humans(&k)
                )));
            };
            if dst_ts >= src_ts {
                continue;
            }
            let mut v = d;
            v[0..8].copy_from_slice(&s[0..8]);
            v[8..16].copy_from_slice(&t.to_be_bytes());
            txn.put(dst, &k, &v).map_err(lmdb)?;
            updated += 1;
        }
        Ok(())
    })?;

    let mut added = 0u64;
    if c.add_delete_entries {
        for_each_batch(&mut txn, src, c.src_dbi.as_bytes(), |txn, batch| {
            for (k, s) in batch {
                let deleted = if s.len() == 8 {
                    true
                } else {
                    match header::parse(&s) {
                        Ok((h, app)) if h.is_deleted() => {
                            if !app.is_empty() {
                                return Err(bad(format!(
                                    "deleted source entry {} has a value",
                                    key_for_humans(&k)
                                )));
                            }
                            true
                        }
                        _ => false,
                    }
                };
                if !deleted || txn.get(dst, &k).map_err(lmdb)?.is_some() {
                    continue;
                }
                let ts = header::timestamp_prefix(&s).unwrap_or(0);
                let mut v = Vec::with_capacity(header::HEADER_SIZE);
                header::write_header(&mut v, ts, t, FLAG_DELETED, false);
                txn.put(dst, &k, &v).map_err(lmdb)?;
                added += 1;
            }
            Ok(())
        })?;
    }
    txn.commit()?;
    log::info!(db = c.database, n_updated = updated, n_added_deletes = added; "Done");
    Ok(())
}
