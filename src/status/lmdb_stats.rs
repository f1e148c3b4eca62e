//! The LMDB figures of the status server: read per scrape into the `lmdb_*` metric families and
//! the `/` page, and logged every `lmdb_log_stats_interval`. A db that cannot be read shows its
//! error instead of figures; the other dbs are unaffected.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use prometheus::proto::MetricFamily;
use prometheus::{GaugeVec, Opts, Registry};

use super::StatusContext;
use crate::lmdb::{DbStat, Env, Txn};

/// LMDB figures of one db, as the page and the collector show them.
pub struct DbInfo {
    pub name: String,
    pub map_size: u64,
    pub last_txn_id: u64,
    pub readers: (u32, u32),
    pub file_size: u64,
    pub data_path: PathBuf,
    /// Per DBI: name, flags, stat.
    pub dbis: Vec<(String, u32, DbStat)>,
    pub error: Option<String>,
}

impl DbInfo {
    pub fn used(&self) -> u64 {
        self.dbis.iter().map(|(_, _, s)| s.used_bytes()).sum()
    }
}

/// The data file of an env: the path itself with `no_subdir`, else `data.mdb` inside it.
fn data_file(path: &Path) -> PathBuf {
    if path.is_dir() {
        path.join("data.mdb")
    } else {
        path.to_path_buf()
    }
}

fn read_dbis(env: &Env) -> Result<Vec<(String, u32, DbStat)>, crate::lmdb::LmdbError> {
    let txn = env.begin_ro()?;
    let mut out = Vec::new();
    for name in txn.list_dbis()? {
        let Some(dbi) = txn.open_dbi(&name)? else {
            continue;
        };
        out.push((
            String::from_utf8_lossy(&name).into_owned(),
            txn.dbi_flags(dbi)?,
            txn.dbi_stat(dbi)?,
        ));
    }
    Ok(out)
}

/// Reads the figures of every db; a db that cannot be read carries its error.
pub fn db_infos(ctx: &StatusContext) -> Vec<DbInfo> {
    ctx.dbs
        .iter()
        .map(|(name, env)| {
            let data_path = data_file(env.path());
            let mut info = DbInfo {
                name: name.clone(),
                map_size: 0,
                last_txn_id: 0,
                readers: (0, 0),
                file_size: std::fs::metadata(&data_path).map(|m| m.len()).unwrap_or(0),
                data_path,
                dbis: Vec::new(),
                error: None,
            };
            match env.info() {
                Ok(i) => {
                    info.map_size = i.map_size;
                    info.last_txn_id = i.last_txn_id;
                    info.readers = (i.num_readers, i.max_readers);
                }
                Err(e) => {
                    info.error = Some(e.to_string());
                    return info;
                }
            }
            // A DBI published by a concurrent transaction while ours ran: read again.
            let mut result = read_dbis(env);
            if matches!(result, Err(crate::lmdb::LmdbError::DbiTableChanged { .. })) {
                result = read_dbis(env);
            }
            match result {
                Ok(d) => info.dbis = d,
                Err(e) => info.error = Some(e.to_string()),
            }
            info
        })
        .collect()
}

/// `Key: N kB` lines of the mapping of `path` in `/proc/self/smaps`, keys lower-cased.
pub fn smaps_of(smaps: &str, path: &Path) -> BTreeMap<String, u64> {
    let want = path.to_string_lossy();
    let mut out = BTreeMap::new();
    let mut lines = smaps.lines();
    while let Some(l) = lines.next() {
        // A mapping header: address perms offset dev inode path.
        let fields: Vec<&str> = l.split_whitespace().collect();
        if fields.len() < 6 || !fields[0].contains('-') || fields[5..].join(" ") != want {
            continue;
        }
        for l in lines.by_ref() {
            let Some(rest) = l.strip_suffix(" kB") else {
                break;
            };
            let Some((k, v)) = rest.split_once(':') else {
                break;
            };
            if let Ok(n) = v.trim().parse::<u64>() {
                *out.entry(k.trim().to_lowercase()).or_insert(0) += n * 1024;
            }
        }
        break;
    }
    out
}

/// The `lmdb_*` families, computed now (spec/observability.md §3.5).
pub fn collect_lmdb(ctx: &StatusContext) -> Vec<MetricFamily> {
    let reg = Registry::new();
    let gauge = |name: &str, help: &str, labels: &[&str]| -> GaugeVec {
        let g = GaugeVec::new(Opts::new(name, help), labels).expect("valid metric");
        reg.register(Box::new(g.clone())).expect("unique metric");
        g
    };
    let mapsize = gauge("lmdb_mapsize_bytes", "LMDB map size", &["lmdb"]);
    let readers = gauge("lmdb_env_readers_current", "LMDB readers in use", &["lmdb"]);
    let max_readers = gauge("lmdb_env_readers_max", "LMDB max readers", &["lmdb"]);
    let txn = gauge(
        "lmdb_env_last_tnx_id",
        "LMDB last transaction ID",
        &["lmdb"],
    );
    let filesize = gauge("lmdb_filesize_bytes", "LMDB data file size", &["lmdb"]);
    let db_usage = gauge("lmdb_db_usage_bytes", "LMDB DBI usage", &["lmdb", "db"]);
    let total = gauge("lmdb_total_usage_bytes", "LMDB total usage", &["lmdb"]);
    let fraction = gauge(
        "lmdb_total_usage_fraction",
        "LMDB total usage as a fraction of the map size",
        &["lmdb"],
    );
    let entries = gauge("lmdb_stat_entries", "LMDB DBI entries", &["lmdb", "db"]);
    let pages = gauge(
        "lmdb_stat_pages",
        "LMDB DBI pages",
        &["lmdb", "db", "pagetype"],
    );
    let depth = gauge("lmdb_stat_depth", "LMDB DBI B-tree depth", &["lmdb", "db"]);
    let smaps = ctx.scrape_smaps.then(|| {
        gauge(
            "lmdb_smaps_bytes",
            "Memory of the LMDB mapping from /proc/self/smaps",
            &["lmdb", "database_path", "smap"],
        )
    });
    let smaps_text = if ctx.scrape_smaps {
        std::fs::read_to_string("/proc/self/smaps").unwrap_or_default()
    } else {
        String::new()
    };
    for info in db_infos(ctx) {
        let l = info.name.as_str();
        if let Some(e) = &info.error {
            log::warn!(db = l, error = e; "Collector: reading LMDB statistics failed");
            continue;
        }
        mapsize.with_label_values(&[l]).set(info.map_size as f64);
        readers
            .with_label_values(&[l])
            .set(f64::from(info.readers.0));
        max_readers
            .with_label_values(&[l])
            .set(f64::from(info.readers.1));
        txn.with_label_values(&[l]).set(info.last_txn_id as f64);
        filesize.with_label_values(&[l]).set(info.file_size as f64);
        for (dbi, _, s) in &info.dbis {
            let d = dbi.as_str();
            db_usage
                .with_label_values(&[l, d])
                .set(s.used_bytes() as f64);
            entries.with_label_values(&[l, d]).set(s.entries as f64);
            depth.with_label_values(&[l, d]).set(f64::from(s.depth));
            for (t, n) in [
                ("branch", s.branch_pages),
                ("leaf", s.leaf_pages),
                ("overflow", s.overflow_pages),
            ] {
                pages.with_label_values(&[l, d, t]).set(n as f64);
            }
        }
        let used = info.used();
        total.with_label_values(&[l]).set(used as f64);
        if info.map_size > 0 {
            fraction
                .with_label_values(&[l])
                .set(used as f64 / info.map_size as f64);
        }
        if let Some(g) = &smaps {
            let abs = info
                .data_path
                .canonicalize()
                .unwrap_or(info.data_path.clone());
            let p = abs.to_string_lossy();
            for (k, v) in smaps_of(&smaps_text, &abs) {
                g.with_label_values(&[l, &p, &k]).set(v as f64);
            }
        }
    }
    reg.gather()
}

/// Logs the LMDB figures of one db (upstream's periodic `lmdb_log_stats_interval` lines).
pub fn log_lmdb_stats(db: &str, env: &Env, with_smaps: bool) {
    let data_path = data_file(env.path());
    let info = match env.info() {
        Ok(i) => i,
        Err(e) => {
            log::error!(db = db, error = e.to_string(); "LMDB stats logger");
            return;
        }
    };
    let file_size = std::fs::metadata(&data_path).map(|m| m.len()).unwrap_or(0);
    log::info!(db = db, map_size = info.map_size, num_readers = info.num_readers,
        max_readers = info.max_readers, file_size = file_size; "LMDB info");
    match read_dbis(env) {
        Ok(dbis) => {
            for (name, _, s) in dbis {
                log::info!(db = db, DB = name, entries = s.entries, depth = s.depth,
                    branch_pages = s.branch_pages, overflow_pages = s.overflow_pages,
                    psize = s.page_size; "LMDB db stat");
            }
        }
        Err(e) => log::error!(db = db, error = e.to_string(); "LMDB stats logger"),
    }
    if with_smaps {
        let abs = data_path.canonicalize().unwrap_or(data_path);
        let text = std::fs::read_to_string("/proc/self/smaps").unwrap_or_default();
        let m = smaps_of(&text, &abs);
        let fields: Vec<String> = m.iter().map(|(k, v)| format!("{k}={v}")).collect();
        log::info!(db = db, smaps = fields.join(" "); "LMDB memory");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn smaps_mapping_of_a_file() {
        let text = "\
7f00-7f10 r--p 00000000 fe:01 123 /usr/lib/libc.so
Size:                 64 kB
Rss:                  12 kB
7f20-7f30 r--s 00000000 fe:01 456 /var/lib/pdns/pdns.lmdb
Size:               1024 kB
KernelPageSize:        4 kB
Rss:                 100 kB
Shared_Clean:         40 kB
VmFlags: rd sh mr mw me ms sd
7f40-7f50 rw-p 00000000 00:00 0
Size:                  4 kB
";
        let m = smaps_of(text, Path::new("/var/lib/pdns/pdns.lmdb"));
        assert_eq!(m.get("size"), Some(&(1024 * 1024)));
        assert_eq!(m.get("rss"), Some(&(100 * 1024)));
        assert_eq!(m.get("shared_clean"), Some(&(40 * 1024)));
        assert_eq!(m.get("kernelpagesize"), Some(&(4 * 1024)));
        assert_eq!(m.len(), 4);
        assert!(smaps_of(text, Path::new("/nope")).is_empty());
    }
}
