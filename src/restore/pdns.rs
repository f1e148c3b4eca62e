//! PowerDNS Authoritative's native LMDB schema (4.8+, schema 5; `modules/lmdbbackend` and
//! `ext/lmdb-safe/lmdb-typed.hh`), as far as finding one zone's keys needs it. The main file
//! holds `domains_v5`, `metadata_v5`, `keydata_v5` (and `tsig_v5`), keyed by a 32-bit
//! big-endian ID, each with an index DBI `<name>_0` whose keys are `u16 length (BE) + name +
//! u32 ID (BE)`, the name being the DNS name lower-cased with its labels reversed and separated
//! by NUL and ending in one (`www.example.org` -> `org\0example\0www\0`, the root -> `\0`); the
//! metadata and key indexes are on the zone's name. The shard file's `records_v5` keys start with
//! the zone's domain ID (BE), then the owner name relative to the zone in the same form but
//! without the final NUL (empty at the apex), a NUL, and the 16-bit type (BE).

use std::collections::BTreeSet;

use crate::core::header;
use crate::lmdb::{Env, Txn};

use super::live::Selection;

pub const DOMAINS: &[u8] = b"domains_v5";
pub const DOMAINS_INDEX: &[u8] = b"domains_v5_0";
pub const METADATA: &[u8] = b"metadata_v5";
pub const METADATA_INDEX: &[u8] = b"metadata_v5_0";
pub const KEYDATA: &[u8] = b"keydata_v5";
pub const KEYDATA_INDEX: &[u8] = b"keydata_v5_0";
pub const RECORDS: &[u8] = b"records_v5";

#[derive(Debug, thiserror::Error)]
pub enum ZoneError {
    #[error("invalid zone name {0:?}: {1}")]
    Name(String, &'static str),
    #[error("zone {zone} did not exist at {at} (no live entry for it in {index})")]
    Absent {
        zone: String,
        at: String,
        index: String,
    },
    #[error("zone {zone} had {n} domain IDs at {at}; the LMDB is inconsistent, refusing")]
    Ambiguous { zone: String, at: String, n: usize },
    #[error(
        "domain ID {id} of zone {zone} (at {at}) is now used by zone {other}; \
         restoring would mix two zones, refusing"
    )]
    IdTaken {
        zone: String,
        at: String,
        id: u32,
        other: String,
    },
    #[error(
        "zone {zone} exists now with domain ID {now}, but had ID {then} at {at}; \
         delete the current zone first (pdnsutil delete-zone) to restore the old one"
    )]
    Recreated {
        zone: String,
        at: String,
        now: u32,
        then: u32,
    },
    #[error("LMDB {0}: {1}")]
    Lmdb(String, crate::lmdb::LmdbError),
    #[error("LMDB {env}, DBI {dbi}: value without a Lightning Stream header ({source})")]
    Header {
        env: String,
        dbi: String,
        #[source]
        source: header::HeaderError,
    },
}

/// `keyConv` of a DNS name: lower case, labels reversed, each followed by a NUL; the root is
/// one NUL.
pub fn name_key(zone: &str) -> Result<Vec<u8>, ZoneError> {
    let z = zone.strip_suffix('.').unwrap_or(zone).to_ascii_lowercase();
    if z.is_empty() {
        return Ok(vec![0]);
    }
    if z.contains('\\') {
        return Err(ZoneError::Name(
            zone.into(),
            "escaped characters are not supported",
        ));
    }
    let labels: Vec<&str> = z.split('.').collect();
    if labels.iter().any(|l| l.is_empty() || l.len() > 63) {
        return Err(ZoneError::Name(zone.into(), "empty or over-long label"));
    }
    let mut k = Vec::with_capacity(z.len() + 1);
    for l in labels.into_iter().rev() {
        k.extend_from_slice(l.as_bytes());
        k.push(0);
    }
    Ok(k)
}

/// The start of a name's keys in an index DBI: the length (BE u16) and the name key.
pub fn index_prefix(zone: &str) -> Result<Vec<u8>, ZoneError> {
    let k = name_key(zone)?;
    let len = u16::try_from(k.len()).map_err(|_| ZoneError::Name(zone.into(), "too long"))?;
    let mut p = len.to_be_bytes().to_vec();
    p.extend_from_slice(&k);
    Ok(p)
}

/// The name an index key is for, for messages.
pub fn index_key_name(k: &[u8]) -> String {
    if k.len() < 2 {
        return format!("<{}>", super::live::hex(k));
    }
    let len = usize::from(u16::from_be_bytes([k[0], k[1]]));
    let name = &k[2..(2 + len).min(k.len())];
    labels_to_name(name)
}

fn labels_to_name(name: &[u8]) -> String {
    if name.iter().all(|b| *b == 0) {
        return ".".into();
    }
    let name = name.strip_suffix(&[0]).unwrap_or(name);
    let labels: Vec<String> = name
        .split(|b| *b == 0)
        .map(|l| String::from_utf8_lossy(l).into_owned())
        .collect();
    labels.into_iter().rev().collect::<Vec<_>>().join(".")
}

/// The ID at the end of an index key.
fn index_id(k: &[u8]) -> Option<u32> {
    let b: [u8; 4] = k.get(k.len().checked_sub(4)?..)?.try_into().ok()?;
    Some(u32::from_be_bytes(b))
}

/// A `records_v5` key for humans: `owner-relative-name TYPE` (type as a number or mnemonic).
pub fn describe_record_key(k: &[u8]) -> String {
    if k.len() < 7 {
        return super::live::hex(k);
    }
    let qtype = u16::from_be_bytes([k[k.len() - 2], k[k.len() - 1]]);
    let name = &k[4..k.len() - 3];
    let owner = if name.iter().all(|b| *b == 0) {
        "@".to_string()
    } else {
        labels_to_name(name)
    };
    format!("{owner} {}", qtype_name(qtype))
}

fn qtype_name(t: u16) -> String {
    match t {
        0 => "ENT".into(),
        1 => "A".into(),
        2 => "NS".into(),
        5 => "CNAME".into(),
        6 => "SOA".into(),
        12 => "PTR".into(),
        15 => "MX".into(),
        16 => "TXT".into(),
        28 => "AAAA".into(),
        33 => "SRV".into(),
        43 => "DS".into(),
        46 => "RRSIG".into(),
        47 => "NSEC".into(),
        48 => "DNSKEY".into(),
        50 => "NSEC3".into(),
        51 => "NSEC3PARAM".into(),
        257 => "CAA".into(),
        t => format!("TYPE{t}"),
    }
}

/// Every entry of an index DBI under `prefix`: (key, ID, deleted).
fn index_scan(
    env: &Env,
    dbi: &[u8],
    prefix: &[u8],
) -> Result<Vec<(Vec<u8>, u32, bool)>, ZoneError> {
    let path = env.path().display().to_string();
    let err = |e| ZoneError::Lmdb(path.clone(), e);
    let txn = env.begin_ro().map_err(err)?;
    let Some(d) = txn.open_dbi(dbi).map_err(err)? else {
        return Ok(Vec::new());
    };
    let mut out = Vec::new();
    let mut c = txn.cursor(d).map_err(err)?;
    let mut item = if prefix.is_empty() {
        c.first()
    } else {
        c.set_range(prefix)
    }
    .map_err(err)?;
    while let Some((k, v)) = item {
        if !k.starts_with(prefix) {
            break;
        }
        let (h, _) = header::parse(v).map_err(|source| ZoneError::Header {
            env: path.clone(),
            dbi: String::from_utf8_lossy(dbi).into_owned(),
            source,
        })?;
        if let Some(id) = index_id(k) {
            out.push((k.to_vec(), id, h.is_deleted()));
        }
        item = c.next_entry().map_err(err)?;
    }
    Ok(out)
}

/// The live (not deleted) entries of an index DBI under `prefix`: (key, ID).
fn index_entries(env: &Env, dbi: &[u8], prefix: &[u8]) -> Result<Vec<(Vec<u8>, u32)>, ZoneError> {
    Ok(index_scan(env, dbi, prefix)?
        .into_iter()
        .filter(|(_, _, deleted)| !deleted)
        .map(|(k, id, _)| (k, id))
        .collect())
}

/// The IDs of all entries (deleted or not) of exactly the name `prefix` stands for.
fn all_index_ids(env: &Env, dbi: &[u8], prefix: &[u8]) -> Result<BTreeSet<u32>, ZoneError> {
    Ok(index_scan(env, dbi, prefix)?
        .into_iter()
        .filter(|(k, _, _)| k.len() == prefix.len() + 4)
        .map(|(_, id, _)| id)
        .collect())
}

/// Whether `dbi[key]` holds a live (not deleted) value.
fn is_live(env: &Env, dbi: &[u8], key: &[u8]) -> Result<bool, ZoneError> {
    let path = env.path().display().to_string();
    let err = |e| ZoneError::Lmdb(path.clone(), e);
    let txn = env.begin_ro().map_err(err)?;
    let Some(d) = txn.open_dbi(dbi).map_err(err)? else {
        return Ok(false);
    };
    match txn.get(d, key).map_err(err)? {
        None => Ok(false),
        Some(v) => Ok(!header::parse(v)
            .map_err(|source| ZoneError::Header {
                env: path.clone(),
                dbi: String::from_utf8_lossy(dbi).into_owned(),
                source,
            })?
            .0
            .is_deleted()),
    }
}

/// One zone's keys: in the main LMDB and in the shard.
#[derive(Debug, PartialEq, Eq)]
pub struct ZoneKeys {
    pub id: u32,
    pub main: Vec<Selection>,
    pub shard: Vec<Selection>,
}

/// Finds `zone` in the restored main LMDB (its state as of `at`, for messages) and checks that
/// restoring it into `live_main` is safe: its domain ID must not belong to another zone now, and
/// the zone must not have been re-created under another ID. The selection covers the domain
/// entry and its index entry, every metadata and key entry of the zone then or now (so entries
/// added since are deleted), and all of its records.
pub fn zone_keys(
    restored_main: &Env,
    live_main: &Env,
    zone: &str,
    at: &str,
) -> Result<ZoneKeys, ZoneError> {
    let prefix = index_prefix(zone)?;
    let exact = |entries: Vec<(Vec<u8>, u32)>| -> Vec<u32> {
        entries
            .into_iter()
            .filter(|(k, _)| k.len() == prefix.len() + 4)
            .map(|(_, id)| id)
            .collect()
    };
    let mut then: Vec<u32> = exact(index_entries(restored_main, DOMAINS_INDEX, &prefix)?)
        .into_iter()
        .filter(|id| is_live(restored_main, DOMAINS, &id.to_be_bytes()).unwrap_or(false))
        .collect();
    then.dedup();
    let id = match then.as_slice() {
        [] => {
            return Err(ZoneError::Absent {
                zone: zone.into(),
                at: at.into(),
                index: String::from_utf8_lossy(DOMAINS_INDEX).into_owned(),
            });
        }
        [id] => *id,
        _ => {
            return Err(ZoneError::Ambiguous {
                zone: zone.into(),
                at: at.into(),
                n: then.len(),
            });
        }
    };
    let id_be = id.to_be_bytes();
    // Who uses that ID now: any live index entry ending in it for another name.
    if is_live(live_main, DOMAINS, &id_be)? {
        for (k, other) in index_entries(live_main, DOMAINS_INDEX, b"")? {
            if other == id && !k.starts_with(&prefix) {
                return Err(ZoneError::IdTaken {
                    zone: zone.into(),
                    at: at.into(),
                    id,
                    other: index_key_name(&k),
                });
            }
        }
    }
    for now in exact(index_entries(live_main, DOMAINS_INDEX, &prefix)?) {
        if now != id && is_live(live_main, DOMAINS, &now.to_be_bytes())? {
            return Err(ZoneError::Recreated {
                zone: zone.into(),
                at: at.into(),
                now,
                then: id,
            });
        }
    }
    let mut main = vec![
        Selection {
            dbi: DOMAINS.to_vec(),
            prefixes: vec![id_be.to_vec()],
        },
        Selection {
            dbi: DOMAINS_INDEX.to_vec(),
            prefixes: vec![[prefix.as_slice(), &id_be].concat()],
        },
    ];
    for (table, index) in [(METADATA, METADATA_INDEX), (KEYDATA, KEYDATA_INDEX)] {
        let mut ids = all_index_ids(restored_main, index, &prefix)?;
        ids.extend(all_index_ids(live_main, index, &prefix)?);
        main.push(Selection {
            dbi: index.to_vec(),
            prefixes: vec![prefix.clone()],
        });
        if !ids.is_empty() {
            main.push(Selection {
                dbi: table.to_vec(),
                prefixes: ids.iter().map(|i| i.to_be_bytes().to_vec()).collect(),
            });
        }
    }
    Ok(ZoneKeys {
        id,
        main,
        shard: vec![Selection {
            dbi: RECORDS.to_vec(),
            prefixes: vec![id_be.to_vec()],
        }],
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_as_auth_stores_them() {
        // As Auth 4.9 stores them (seen in its LMDB: `00 0a "test" 00 "undo" 00` + ID).
        assert_eq!(
            name_key("www.Example.ORG.").unwrap(),
            b"org\0example\0www\0"
        );
        assert_eq!(name_key(".").unwrap(), b"\0");
        assert_eq!(index_prefix("undo.test").unwrap(), b"\0\x0atest\0undo\0");
        assert!(name_key("a..b").is_err());
        assert!(name_key("a\\.b").is_err());
        let mut k = index_prefix("example.org").unwrap();
        assert_eq!(k.len(), 2 + 12);
        k.extend_from_slice(&7u32.to_be_bytes());
        assert_eq!(index_key_name(&k[..k.len() - 4]), "example.org");
        assert_eq!(index_id(&k), Some(7));
        // records_v5: ID, relative owner, NUL, type.
        let mut r = 7u32.to_be_bytes().to_vec();
        r.extend_from_slice(b"www\0\0\x01");
        assert_eq!(describe_record_key(&r), "www A");
        let mut apex = 7u32.to_be_bytes().to_vec();
        apex.extend_from_slice(b"\0\0\x06");
        assert_eq!(describe_record_key(&apex), "@ SOA");
        let mut deep = 7u32.to_be_bytes().to_vec();
        deep.extend_from_slice(b"b\0a\0\0\x10");
        assert_eq!(describe_record_key(&deep), "a.b TXT");
    }

    use crate::testutil::{header_value, put_all, scratch_env};

    /// A main LMDB with `zones` as (name, id, deleted), plus one metadata entry of each zone.
    fn main_env(
        dir: &std::path::Path,
        file: &str,
        zones: &[(&str, u32, bool)],
    ) -> std::sync::Arc<Env> {
        let env = scratch_env(dir, file, 16 << 20);
        let mut domains = Vec::new();
        let mut index = Vec::new();
        let mut meta = Vec::new();
        let mut meta_index = Vec::new();
        for (name, id, deleted) in zones {
            let app = if *deleted {
                b"".as_slice()
            } else {
                name.as_bytes()
            };
            domains.push((id.to_be_bytes().to_vec(), header_value(5, *deleted, app)));
            let p = index_prefix(name).unwrap();
            index.push((
                [p.as_slice(), &id.to_be_bytes()].concat(),
                header_value(5, *deleted, b""),
            ));
            let mid = id + 1000;
            meta.push((
                mid.to_be_bytes().to_vec(),
                header_value(5, *deleted, b"meta"),
            ));
            meta_index.push((
                [p.as_slice(), &mid.to_be_bytes()].concat(),
                header_value(5, *deleted, b""),
            ));
        }
        put_all(&env, DOMAINS, &domains);
        put_all(&env, DOMAINS_INDEX, &index);
        put_all(&env, METADATA, &meta);
        put_all(&env, METADATA_INDEX, &meta_index);
        env
    }

    #[test]
    fn zone_selection_and_refusals() {
        let dir = tempfile::tempdir().unwrap();
        let then = main_env(
            dir.path(),
            "then",
            &[("a.test", 5, false), ("b.test", 6, false)],
        );
        // Deleted since (tombstones everywhere): restorable, with its metadata.
        let now = main_env(
            dir.path(),
            "now",
            &[("a.test", 5, true), ("b.test", 6, false)],
        );
        let k = zone_keys(&then, &now, "a.test", "T").unwrap();
        assert_eq!(k.id, 5);
        assert_eq!(k.shard[0].prefixes, vec![5u32.to_be_bytes().to_vec()]);
        let meta = k.main.iter().find(|s| s.dbi == METADATA).unwrap();
        assert_eq!(meta.prefixes, vec![1005u32.to_be_bytes().to_vec()]);
        // Never existed, or deleted already then.
        let e = zone_keys(&then, &now, "c.test", "T").unwrap_err();
        assert!(matches!(e, ZoneError::Absent { .. }), "{e}");
        assert!(e.to_string().contains("did not exist at T"));
        assert!(matches!(
            zone_keys(&now, &now, "a.test", "T"),
            Err(ZoneError::Absent { .. })
        ));
        // Its ID now belongs to another zone.
        let taken = main_env(
            dir.path(),
            "taken",
            &[("a.test", 5, true), ("x.test", 5, false)],
        );
        let e = zone_keys(&then, &taken, "a.test", "T").unwrap_err();
        assert!(
            matches!(e, ZoneError::IdTaken { id: 5, ref other, .. } if other == "x.test"),
            "{e}"
        );
        // Re-created under another ID.
        let again = main_env(
            dir.path(),
            "again",
            &[("a.test", 5, true), ("a.test", 9, false)],
        );
        let e = zone_keys(&then, &again, "a.test", "T").unwrap_err();
        assert!(
            matches!(
                e,
                ZoneError::Recreated {
                    now: 9,
                    then: 5,
                    ..
                }
            ),
            "{e}"
        );
    }
}
