//! The status HTTP server of `sync` and `receive` (spec/observability.md §1): `/metrics`,
//! `/healthz`, `/storage` and a human-readable `/` page. Plain HTTP/1.1 on std sockets with a
//! thread per connection, so a slow or silent client can never hold up a health probe; each
//! response closes its connection. The per-scrape LMDB figures (`lmdb_*`) and the board of what
//! each syncer has seen are gathered here too.

pub mod health;
mod page;

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, LazyLock, Mutex};
use std::time::Duration;

use anyhow::Context;
use prometheus::proto::MetricFamily;
use prometheus::{GaugeVec, Opts, Registry};

use crate::lmdb::{DbStat, Env, Txn};
use crate::storage::Storage;

/// More simultaneous connections than this get an immediate 503.
const MAX_CONNECTIONS: usize = 64;
/// How long a client may take to send its request.
const READ_TIMEOUT: Duration = Duration::from_secs(5);
/// Largest request head we read.
const MAX_REQUEST_HEAD: usize = 16 * 1024;

/// What the status pages need: every synced LMDB and the storage.
pub struct StatusContext {
    pub dbs: Vec<(String, Arc<Env>)>,
    pub storage: Arc<dyn Storage>,
    pub scrape_smaps: bool,
}

/// What one syncer has seen, for the `/` page.
#[derive(Clone, Debug, Default)]
pub struct DbBoard {
    pub instance: String,
    /// Per instance: the newest snapshot name in the last listing.
    pub latest: BTreeMap<String, String>,
    /// Per instance: the snapshot merged last.
    pub merged: BTreeMap<String, String>,
    /// Our last stored snapshot and when (ns).
    pub last_stored: Option<(String, i64)>,
    /// Compressed size of our last stored snapshot.
    pub last_stored_size: u64,
    /// The last local LMDB change the syncer saw: transaction ID, and when it saw it (ns).
    pub last_local_change: Option<(u64, i64)>,
    /// Per instance: the state of its delta chain here, in words.
    pub chains: BTreeMap<String, String>,
    /// Problems still current, by what failed (`list`, `store`, `load <instance>`): when (ns)
    /// and the error. A success of the same activity removes the entry.
    pub errors: BTreeMap<String, (i64, String)>,
    pub startup_complete: bool,
}

static BOARD: LazyLock<Mutex<BTreeMap<String, DbBoard>>> =
    LazyLock::new(|| Mutex::new(BTreeMap::new()));

/// Updates the board entry of db `db`.
pub fn update_board(db: &str, f: impl FnOnce(&mut DbBoard)) {
    let mut b = BOARD.lock().unwrap_or_else(|e| e.into_inner());
    f(b.entry(db.to_string()).or_default());
}

fn board() -> BTreeMap<String, DbBoard> {
    BOARD.lock().unwrap_or_else(|e| e.into_inner()).clone()
}

/// Binds `address` and serves the status pages on a background thread until `stop` is set.
/// A bind failure is returned (the caller treats it as fatal, like upstream).
pub fn serve(
    address: &str,
    ctx: Arc<StatusContext>,
    stop: Arc<AtomicBool>,
) -> anyhow::Result<std::net::SocketAddr> {
    let listener = TcpListener::bind(address)
        .with_context(|| format!("HTTP server error: listening on {address}"))?;
    let local = listener.local_addr()?;
    listener.set_nonblocking(true)?;
    let active = Arc::new(AtomicUsize::new(0));
    std::thread::Builder::new()
        .name("http".into())
        .spawn(move || {
            while !stop.load(Ordering::Relaxed) {
                match listener.accept() {
                    Ok((conn, _)) => {
                        let _ = conn.set_nonblocking(false);
                        if active.fetch_add(1, Ordering::SeqCst) >= MAX_CONNECTIONS {
                            active.fetch_sub(1, Ordering::SeqCst);
                            let _ = respond(&conn, 503, "text/plain", b"too many connections\n");
                            continue;
                        }
                        let (ctx, active) = (ctx.clone(), active.clone());
                        let spawned =
                            std::thread::Builder::new()
                                .name("http-conn".into())
                                .spawn(move || {
                                    handle(conn, &ctx);
                                    active.fetch_sub(1, Ordering::SeqCst);
                                });
                        if spawned.is_err() {
                            log::warn!("HTTP: could not start a connection thread");
                        }
                    }
                    Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                        std::thread::sleep(Duration::from_millis(20));
                    }
                    Err(e) => {
                        log::warn!(error = e.to_string(); "HTTP accept failed");
                        std::thread::sleep(Duration::from_millis(100));
                    }
                }
            }
        })
        .context("starting the HTTP thread")?;
    Ok(local)
}

/// Reads the request line and headers; `None` for anything that is not a usable request.
fn read_request(conn: &TcpStream) -> Option<(String, String)> {
    conn.set_read_timeout(Some(READ_TIMEOUT)).ok()?;
    let mut reader = BufReader::new(Read::take(conn, MAX_REQUEST_HEAD as u64));
    let mut line = String::new();
    reader.read_line(&mut line).ok()?;
    let mut parts = line.split_whitespace();
    let method = parts.next()?.to_string();
    let target = parts.next()?.to_string();
    // Headers are read and ignored (nothing here depends on them).
    loop {
        let mut h = String::new();
        match reader.read_line(&mut h) {
            Ok(0) => break,
            Ok(_) if h == "\r\n" || h == "\n" => break,
            Ok(_) => continue,
            Err(_) => return None,
        }
    }
    Some((method, target))
}

fn respond(mut conn: &TcpStream, code: u16, ctype: &str, body: &[u8]) -> std::io::Result<()> {
    let reason = match code {
        200 => "OK",
        400 => "Bad Request",
        404 => "Not Found",
        405 => "Method Not Allowed",
        500 => "Internal Server Error",
        _ => "Service Unavailable",
    };
    conn.set_write_timeout(Some(Duration::from_secs(30)))?;
    write!(
        conn,
        "HTTP/1.1 {code} {reason}\r\nContent-Type: {ctype}\r\nContent-Length: {}\r\n\
         Cache-Control: no-store\r\nConnection: close\r\n\r\n",
        body.len()
    )?;
    conn.write_all(body)?;
    conn.flush()
}

fn handle(conn: TcpStream, ctx: &StatusContext) {
    let Some((method, target)) = read_request(&conn) else {
        let _ = respond(&conn, 400, "text/plain", b"bad request\n");
        return;
    };
    let head_only = method == "HEAD";
    if method != "GET" && !head_only {
        let _ = respond(&conn, 405, "text/plain", b"method not allowed\n");
        return;
    }
    let path = target.split('?').next().unwrap_or("");
    let (code, ctype, body): (u16, &str, Vec<u8>) = match path {
        "/metrics" => (
            200,
            "text/plain; version=0.0.4; charset=utf-8",
            crate::metrics::gather_text(collect_lmdb(ctx)).into_bytes(),
        ),
        "/healthz" => {
            let (code, json) = health::health().report();
            let mut body = serde_json::to_vec_pretty(&json).unwrap_or_default();
            body.push(b'\n');
            (code, "application/json", body)
        }
        "/storage" => match ctx.storage.list("") {
            Ok(list) => {
                let mut s = String::from("Name\tSize\n");
                for o in list {
                    s.push_str(&format!("{}\t{}\n", o.name, o.size));
                }
                (200, "text/plain; charset=utf-8", s.into_bytes())
            }
            Err(e) => (
                500,
                "text/plain; charset=utf-8",
                format!("ERROR LISTING STORAGE: {e}\n").into_bytes(),
            ),
        },
        "/" => (
            200,
            "text/html; charset=utf-8",
            page::render(&db_infos(ctx), &board()).into_bytes(),
        ),
        _ => (404, "text/plain", b"404 page not found\n".to_vec()),
    };
    let body = if head_only { Vec::new() } else { body };
    let _ = respond(&conn, code, ctype, &body);
}

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
        self.dbis.iter().map(|(_, _, s)| used_bytes(s)).sum()
    }
}

pub fn used_bytes(s: &DbStat) -> u64 {
    u64::from(s.page_size) * (s.branch_pages + s.leaf_pages + s.overflow_pages)
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
                .set(used_bytes(s) as f64);
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
