//! `stats`: LMDB environment and per-DBI statistics of the configured LMDBs, in the Go version's
//! text layout. A db that cannot be read is logged and skipped; the command still succeeds.

use std::io::{self, BufWriter, Write};

use crate::config::Config;
use crate::core::display::human_size;
use crate::lmdb::Txn;

/// Bytes of pages a DBI uses.
pub fn run(cfg: &Config) -> anyhow::Result<()> {
    let stdout = io::stdout();
    let mut out = BufWriter::new(stdout.lock());
    for (name, l) in &cfg.lmdbs {
        if let Err(e) = stats_db(name, l, &mut out) {
            log::error!(db = name, error = format!("{e:#}"); "LMDB stats error");
        }
    }
    out.flush()?;
    Ok(())
}

fn stats_db(name: &str, l: &crate::config::LmdbConfig, out: &mut dyn Write) -> anyhow::Result<()> {
    let env = super::open_lmdb(name, l)?;
    let txn = env.begin_ro()?;
    let i = env.info()?;
    writeln!(
        out,
        "{name}: Env info: {{MapSize:{} LastPNO:{} LastTxnID:{} MaxReaders:{} NumReaders:{}}}",
        i.map_size, i.last_pgno, i.last_txn_id, i.max_readers, i.num_readers
    )?;
    let mut total = 0u64;
    for dbi_name in txn.list_dbis()? {
        let Some(dbi) = txn.open_dbi(&dbi_name)? else {
            continue;
        };
        let s = txn.dbi_stat(dbi)?;
        let used = s.used_bytes();
        total += used;
        writeln!(
            out,
            "{name}: dbi {}: {{PSize:{} Depth:{} BranchPages:{} LeafPages:{} OverflowPages:{} Entries:{}}} ({})",
            String::from_utf8_lossy(&dbi_name),
            s.page_size,
            s.depth,
            s.branch_pages,
            s.leaf_pages,
            s.overflow_pages,
            s.entries,
            human_size(used)
        )?;
    }
    let pct = if i.map_size > 0 {
        total as f64 * 100.0 / i.map_size as f64
    } else {
        0.0
    };
    writeln!(
        out,
        "{name}: Total Used: {} / {} (~ {pct:.1} %)",
        human_size(total),
        human_size(i.map_size)
    )?;
    Ok(())
}
