//! `dump`: the raw contents of the configured LMDBs (values printed whole, headers included), in
//! the Go version's layout. A db that cannot be read is logged and skipped; the command still
//! succeeds, as upstream's does.

use std::io::{self, BufWriter, Write};

use crate::base::now_ns;
use crate::cli::DumpCmd;
use crate::config::Config;
use crate::core::display::display_ascii;
use crate::core::lww::SYNC_PREFIX;
use crate::lmdb::Txn;

pub fn run(cfg: &Config, cmd: &DumpCmd) -> anyhow::Result<()> {
    let stdout = io::stdout();
    let mut out = BufWriter::new(stdout.lock());
    for (name, l) in &cfg.lmdbs {
        if cmd.name.as_ref().is_some_and(|n| n != name) {
            continue;
        }
        if let Err(e) = dump_db(name, l, cmd.hide, &mut out) {
            log::error!(db = name, error = format!("{e:#}"); "LMDB dump error");
        }
    }
    out.flush()?;
    Ok(())
}

fn dump_db(
    name: &str,
    l: &crate::config::LmdbConfig,
    hide: bool,
    out: &mut dyn Write,
) -> anyhow::Result<()> {
    let env = super::open_lmdb(name, l)?;
    let txn = env.begin_ro()?;
    let now = now_ns();
    for dbi_name in txn.list_dbis()? {
        if hide && dbi_name.starts_with(SYNC_PREFIX) {
            continue;
        }
        let Some(dbi) = txn.open_dbi(&dbi_name)? else {
            continue;
        };
        write!(
            out,
            "\n### {name} :: {}\n\n",
            String::from_utf8_lossy(&dbi_name)
        )?;
        for item in txn.cursor(dbi)? {
            let (k, v) = item?;
            writeln!(
                out,
                "{}  =  {}",
                display_ascii(k, now),
                display_ascii(v, now)
            )?;
        }
    }
    Ok(())
}
