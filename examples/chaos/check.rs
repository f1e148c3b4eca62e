//! The end checks: LMDB dumps (txn IDs left out) and the expected winner of every key written,
//! computed from the writers' logs with the merge rule of spec/merge.md §2: the highest
//! timestamp wins; at equal timestamps the bytewise smaller application value wins, so a
//! tombstone (empty value) wins a tie against any live value.

use std::collections::BTreeMap;
use std::path::Path;

use lightningstream::core::header;
use lightningstream::lmdb::{Env, Txn};

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Entry {
    pub ts: u64,
    pub flags: u8,
    pub value: Vec<u8>,
}

impl std::fmt::Display for Entry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "ts={} flags={} value={:?}",
            self.ts,
            self.flags,
            String::from_utf8_lossy(&self.value)
        )
    }
}

pub type Key = (String, Vec<u8>);
pub type Dump = BTreeMap<Key, Entry>;

/// Every user DBI (not the LS-private `_sync*` ones) with its entries.
pub fn dump(env: &Env) -> Result<Dump, String> {
    let txn = env.begin_ro().map_err(|e| e.to_string())?;
    let mut out = Dump::new();
    for name in txn.list_dbis().map_err(|e| e.to_string())? {
        if name.starts_with(b"_sync") {
            continue;
        }
        let Some(dbi) = txn.open_dbi(&name).map_err(|e| e.to_string())? else {
            continue;
        };
        let dbi_name = String::from_utf8_lossy(&name).into_owned();
        for item in txn.cursor(dbi).map_err(|e| e.to_string())? {
            let (k, v) = item.map_err(|e| e.to_string())?;
            let (h, app) = header::parse(v).map_err(|e| format!("{dbi_name} {k:?}: {e}"))?;
            out.insert(
                (dbi_name.clone(), k.to_vec()),
                Entry {
                    ts: h.timestamp,
                    flags: h.flags,
                    value: app.to_vec(),
                },
            );
        }
    }
    Ok(out)
}

/// One logged write.
pub struct Write {
    pub key: Key,
    pub entry: Entry,
}

pub fn read_log(path: &Path) -> Result<Vec<Write>, String> {
    let text = std::fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()))?;
    let mut out = Vec::new();
    for (n, line) in text.lines().enumerate() {
        let f: Vec<&str> = line.splitn(5, '\t').collect();
        let bad = || format!("{}:{}: bad line {line:?}", path.display(), n + 1);
        if f.len() != 5 {
            return Err(bad());
        }
        let ts: u64 = f[2].parse().map_err(|_| bad())?;
        let deleted = match f[3] {
            "0" => false,
            "1" => true,
            _ => return Err(bad()),
        };
        out.push(Write {
            key: (f[0].to_string(), f[1].as_bytes().to_vec()),
            entry: Entry {
                ts,
                flags: deleted as u8,
                value: f[4].as_bytes().to_vec(),
            },
        });
    }
    Ok(out)
}

/// Whether `a` beats `b` under the merge rule.
fn beats(a: &Entry, b: &Entry) -> bool {
    a.ts > b.ts || (a.ts == b.ts && a.value < b.value)
}

pub fn expected(writes: &[Write]) -> BTreeMap<Key, Entry> {
    let mut want: BTreeMap<Key, Entry> = BTreeMap::new();
    for w in writes {
        match want.get(&w.key) {
            Some(old) if !beats(&w.entry, old) => {}
            _ => {
                want.insert(w.key.clone(), w.entry.clone());
            }
        }
    }
    want
}

#[derive(Default, Debug)]
pub struct Verdict {
    pub keys_checked: usize,
    /// The winner is missing, or an older write of the key survived it.
    pub lost: Vec<String>,
    /// The winner is a delete, but a live value survived.
    pub resurrected: Vec<String>,
    /// Keys nobody wrote.
    pub unexpected: Vec<String>,
    /// Anything else (an entry no writer wrote, wrong flags).
    pub other: Vec<String>,
}

fn show(k: &Key) -> String {
    format!("{}/{}", k.0, String::from_utf8_lossy(&k.1))
}

/// Compares one instance's dump with the expected winners.
pub fn verify(instance: &str, d: &Dump, want: &BTreeMap<Key, Entry>, v: &mut Verdict) {
    v.keys_checked = v.keys_checked.max(want.len());
    for (k, w) in want {
        match d.get(k) {
            Some(e) if e == w => {}
            None => v
                .lost
                .push(format!("{instance}: {} missing, want {w}", show(k))),
            Some(e) if w.flags & 1 == 1 && e.flags & 1 == 0 => v
                .resurrected
                .push(format!("{instance}: {} is {e}, want {w}", show(k))),
            Some(e) if beats(w, e) => v
                .lost
                .push(format!("{instance}: {} is {e}, want {w}", show(k))),
            Some(e) => v
                .other
                .push(format!("{instance}: {} is {e}, want {w}", show(k))),
        }
    }
    for (k, e) in d {
        if !want.contains_key(k) {
            v.unexpected
                .push(format!("{instance}: {} = {e} never written", show(k)));
        }
    }
}

/// Keys whose entries differ between two dumps, for the report.
pub fn diff(a: &Dump, b: &Dump) -> Vec<String> {
    let mut out = Vec::new();
    for (k, e) in a {
        match b.get(k) {
            Some(f) if f == e => {}
            Some(f) => out.push(format!("{}: {e} vs {f}", show(k))),
            None => out.push(format!("{}: {e} vs absent", show(k))),
        }
    }
    for (k, f) in b {
        if !a.contains_key(k) {
            out.push(format!("{}: absent vs {f}", show(k)));
        }
    }
    out
}
