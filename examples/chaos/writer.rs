//! One writer per instance, writing straight into that instance's LMDB the way PowerDNS Auth 4.9
//! does with `lmdb-lightning-stream=yes`: LS header (wall-clock ns, the txn ID, flags) + value,
//! deletes as tombstones (flag 0x01, empty value), in real LMDB write transactions shared with
//! the daemon. Every committed write is appended to the writer's log, one per line:
//! `dbi TAB key TAB timestamp TAB deleted(0|1) TAB value`.
//!
//! Pace: busy (a transaction every 5–60 ms) or, while `calm` is set, slow (every 150–900 ms):
//! at a slow pace most merges find nothing new, which is where a change can slip between a
//! merge and the next snapshot.
//!
//! Keys: `records` `s/NNN` are written by every writer (conflicts), `records` `p<i>/NNN` only by
//! writer i, and `ties` `t/NN` by every writer with timestamps rounded down to 100 ms, so that
//! equal timestamps (and with them the merge's tie-break on the value) really happen. A writer's
//! own writes to one key always get strictly increasing timestamps, as a clock would give them:
//! otherwise a later local overwrite that loses the tie-break would be a loss by the writer's
//! own hand that no sync could prevent.

use std::collections::HashMap;
use std::io::Write;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use lightningstream::core::header;
use lightningstream::lmdb::{Env, Txn};

use crate::rng;

pub const SHARED_KEYS: u64 = 40;
pub const PRIVATE_KEYS: u64 = 150;
pub const TIE_KEYS: u64 = 12;
pub const TIE_GRANULARITY_NS: u64 = 100_000_000;

#[derive(Default, Debug, Clone)]
pub struct Stats {
    pub txns: u64,
    pub puts: u64,
    pub deletes: u64,
    pub failed_txns: u64,
}

fn now_ns() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_nanos() as u64
}

pub fn run(
    idx: usize,
    env: Arc<Env>,
    log: PathBuf,
    stop: Arc<AtomicBool>,
    calm: Arc<AtomicBool>,
) -> Stats {
    let mut out = std::io::BufWriter::new(std::fs::File::create(&log).unwrap());
    let mut last_ts: HashMap<(&'static str, String), u64> = HashMap::new();
    let mut stats = Stats::default();
    let mut seq = 0u64;
    while !stop.load(Ordering::SeqCst) {
        let pause = if calm.load(Ordering::SeqCst) {
            rng::between(150, 900)
        } else {
            rng::between(5, 60)
        };
        std::thread::sleep(Duration::from_millis(pause));
        if stop.load(Ordering::SeqCst) {
            break;
        }
        let mut ops: Vec<(&'static str, String, u64, bool, String)> = Vec::new();
        let mut txn = match env.begin_rw() {
            Ok(t) => t,
            Err(e) => {
                eprintln!("writer {idx}: begin_rw: {e}");
                stats.failed_txns += 1;
                continue;
            }
        };
        let id = txn.id();
        let mut failed = false;
        for _ in 0..rng::between(1, 3) {
            let r = rng::below(100);
            let (dbi, key, ts) = if r < 45 {
                (
                    "records",
                    format!("s/{:03}", rng::below(SHARED_KEYS)),
                    now_ns(),
                )
            } else if r < 88 {
                let k = format!("p{idx}/{:03}", rng::below(PRIVATE_KEYS));
                ("records", k, now_ns())
            } else {
                let t = now_ns();
                let k = format!("t/{:02}", rng::below(TIE_KEYS));
                ("ties", k, t - t % TIE_GRANULARITY_NS)
            };
            let prev = last_ts.get(&(dbi, key.clone())).copied().unwrap_or(0);
            let ts = if ts > prev {
                ts
            } else if dbi == "ties" {
                continue; // this 100 ms slot is used up for this key by this writer
            } else {
                prev + 1
            };
            // Noted at once: a second write to the key in this transaction must come later.
            last_ts.insert((dbi, key.clone()), ts);
            let deleted = rng::below(100) < 35;
            seq += 1;
            let value = if deleted {
                String::new()
            } else {
                // random first, so that no writer always wins the tie-break
                format!("{:04x}-w{idx}-{seq}", rng::below(0x10000))
            };
            let mut val = Vec::with_capacity(24 + value.len());
            let flags = if deleted { header::FLAG_DELETED } else { 0 };
            header::write_header(&mut val, ts, id, flags, false);
            val.extend_from_slice(value.as_bytes());
            let res = txn
                .create_dbi(dbi.as_bytes(), 0)
                .and_then(|d| txn.put(d, key.as_bytes(), &val));
            if let Err(e) = res {
                eprintln!("writer {idx}: put: {e}");
                failed = true;
                break;
            }
            ops.push((dbi, key, ts, deleted, value));
        }
        if failed {
            txn.abort();
            stats.failed_txns += 1;
            continue;
        }
        if let Err(e) = txn.commit() {
            eprintln!("writer {idx}: commit: {e}");
            stats.failed_txns += 1;
            continue;
        }
        // Only committed writes are logged, in commit order.
        stats.txns += 1;
        for (dbi, key, ts, deleted, value) in ops {
            writeln!(out, "{dbi}\t{key}\t{ts}\t{}\t{value}", deleted as u8).unwrap();
            if deleted {
                stats.deletes += 1;
            } else {
                stats.puts += 1;
            }
        }
    }
    out.flush().unwrap();
    stats
}
