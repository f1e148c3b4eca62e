//! The status HTTP server of `sync` and `receive` (spec/observability.md §1): `/metrics`,
//! `/healthz`, `/storage` and a human-readable `/` page, and the board of what each syncer has
//! seen. The HTTP plumbing is in [`server`] (a thread per connection, so a slow or silent client
//! can never hold up a health probe), the per-scrape LMDB figures (`lmdb_*`) in [`lmdb_stats`].

pub mod health;
mod lmdb_stats;
mod page;
mod server;

pub use lmdb_stats::{DbInfo, collect_lmdb, db_infos, log_lmdb_stats, smaps_of};

use std::collections::BTreeMap;
use std::sync::atomic::AtomicBool;
use std::sync::{Arc, LazyLock, Mutex};

use crate::lmdb::Env;
use crate::storage::Storage;
use server::Response;

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

/// Binds `address` and serves the status pages on background threads until `stop` is set.
/// A bind failure is returned (the caller treats it as fatal, like upstream).
pub fn serve(
    address: &str,
    ctx: Arc<StatusContext>,
    stop: Arc<AtomicBool>,
) -> anyhow::Result<std::net::SocketAddr> {
    server::serve(address, stop, move |path| route(&ctx, path))
}

/// What each path answers.
fn route(ctx: &StatusContext, path: &str) -> Response {
    match path {
        "/metrics" => Response::new(
            200,
            "text/plain; version=0.0.4; charset=utf-8",
            crate::metrics::gather_text(collect_lmdb(ctx)),
        ),
        "/healthz" => {
            let (code, json) = health::health().report();
            let mut body = serde_json::to_vec_pretty(&json).unwrap_or_default();
            body.push(b'\n');
            Response::new(code, "application/json", body)
        }
        "/storage" => match ctx.storage.list("") {
            Ok(list) => {
                let mut s = String::from("Name\tSize\n");
                for o in list {
                    s.push_str(&format!("{}\t{}\n", o.name, o.size));
                }
                Response::new(200, "text/plain; charset=utf-8", s)
            }
            Err(e) => Response::new(
                500,
                "text/plain; charset=utf-8",
                format!("ERROR LISTING STORAGE: {e}\n"),
            ),
        },
        "/" => Response::new(
            200,
            "text/html; charset=utf-8",
            page::render(&db_infos(ctx), &board()),
        ),
        _ => Response::new(404, "text/plain", "404 page not found\n"),
    }
}
