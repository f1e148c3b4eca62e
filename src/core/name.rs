//! Snapshot object names, `<db>__<instance>__<YYYYMMDD-hhmmss-nnnnnnnnn>__GX.pb.gz`, built and
//! parsed exactly as the Go version does (spec/format.md §2): the receiver, the cleaner and
//! `snapshots list -t` of both implementations must agree on which names are snapshots, whose
//! they are and how they sort. Our delta objects (`...__GX__F<from>__T<to>.delta.pb.gz`) have an
//! extension Go does not register, so its parser, like [`SnapshotName::parse`], rejects them and
//! Go's receiver and cleaner leave them alone; [`SnapshotName::parse_object`] accepts both kinds.
//! Encrypted objects (ours, `crate::crypt`) are either kind with [`ENCRYPTED_SUFFIX`] appended
//! (`.pb.gz.age`, `.delta.pb.gz.age`): an extension Go does not know either, while our receiver,
//! chains and cleaner treat them exactly as the plaintext kind they wrap.

use jiff::Timestamp;
use jiff::civil::DateTime;
use jiff::tz::TimeZone;
use sha2::{Digest, Sha256};

pub const GENERATION: &str = "GX";
pub const EXTENSION: &str = "pb.gz";
/// Everything after the first dot is the extension for Go, which knows only [`EXTENSION`].
pub const DELTA_EXTENSION: &str = "delta.pb.gz";
/// Appended (after a dot) to the extension of an object stored encrypted in the age format.
pub const ENCRYPTED_SUFFIX: &str = "age";

/// Whether an object name is that of an encrypted object (by its extension alone).
pub fn is_encrypted_name(name: &str) -> bool {
    name.split_once('.').is_some_and(|(_, ext)| {
        ext.strip_suffix(ENCRYPTED_SUFFIX)
            .is_some_and(|e| e.ends_with('.'))
    })
}

/// What an object holds: a full snapshot, or the entries written in LMDB transactions
/// `from` (exclusive) to `to` (inclusive) of its instance.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    Snapshot,
    Delta { from: u64, to: u64 },
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SnapshotName {
    /// The db (syncer) name: the key under `lmdbs:`.
    pub syncer: String,
    pub instance: String,
    /// Nanoseconds since the UNIX epoch, UTC.
    pub timestamp_ns: i64,
    /// The 25-character time as it appears in the name.
    pub timestamp_str: String,
    pub generation: String,
    /// Extra `__`-separated items, verbatim (parsed, never written by this implementation).
    pub extras: Vec<String>,
    pub extension: String,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("invalid snapshot name {name:?}: {reason}")]
pub struct NameError {
    pub name: String,
    pub reason: String,
}

/// `YYYYMMDD-hhmmss-nnnnnnnnn` in UTC.
pub fn format_timestamp(ns: i64) -> String {
    let secs = ns.div_euclid(1_000_000_000);
    let frac = ns.rem_euclid(1_000_000_000);
    let ts = Timestamp::from_second(secs).unwrap_or(Timestamp::UNIX_EPOCH);
    format!(
        "{}-{frac:09}",
        ts.to_zoned(TimeZone::UTC).strftime("%Y%m%d-%H%M%S")
    )
}

fn digits(s: &str) -> Option<i64> {
    if s.is_empty() || !s.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    s.parse().ok()
}

/// Parses the 25-character name time (Go layout `20060102-150405.000000000`, UTC).
fn parse_timestamp(s: &str) -> Result<i64, String> {
    let b = s.as_bytes();
    // ASCII only: the fields below are cut at byte offsets, which must be char boundaries.
    if b.len() != 25 || !s.is_ascii() || b[15] != b'-' || b[8] != b'-' {
        return Err(format!("timestamp {s:?} is not YYYYMMDD-hhmmss-nnnnnnnnn"));
    }
    let field = |r: std::ops::Range<usize>| {
        digits(&s[r]).ok_or_else(|| format!("timestamp {s:?} has non-digits"))
    };
    let (y, mo, d) = (field(0..4)?, field(4..6)?, field(6..8)?);
    let (h, mi, se) = (field(9..11)?, field(11..13)?, field(13..15)?);
    let nanos = field(16..25)?;
    let dt = DateTime::new(
        y as i16,
        mo as i8,
        d as i8,
        h as i8,
        mi as i8,
        se as i8,
        nanos as i32,
    )
    .map_err(|e| format!("timestamp {s:?}: {e}"))?;
    let ts = dt
        .to_zoned(TimeZone::UTC)
        .map_err(|e| format!("timestamp {s:?}: {e}"))?
        .timestamp();
    i64::try_from(ts.as_nanosecond()).map_err(|_| format!("timestamp {s:?} out of range"))
}

/// Every character outside `[A-Za-z0-9-]` becomes `-` (one per code point).
pub fn sanitize_instance(raw: &str) -> String {
    raw.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' {
                c
            } else {
                '-'
            }
        })
        .collect()
}

/// As [`sanitize_instance`] for raw bytes; each invalid UTF-8 byte becomes one `-`.
pub fn sanitize_instance_bytes(raw: &[u8]) -> String {
    let mut out = String::new();
    for chunk in raw.utf8_chunks() {
        out.push_str(&sanitize_instance(chunk.valid()));
        out.extend(std::iter::repeat_n('-', chunk.invalid().len()));
    }
    out
}

impl SnapshotName {
    pub fn new(syncer: &str, instance: &str, timestamp_ns: i64) -> SnapshotName {
        SnapshotName {
            syncer: syncer.to_string(),
            instance: instance.to_string(),
            timestamp_ns,
            timestamp_str: format_timestamp(timestamp_ns),
            generation: GENERATION.to_string(),
            extras: Vec::new(),
            extension: EXTENSION.to_string(),
        }
    }

    /// A delta object's name: the `F` and `T` extra items carry the transaction range, so
    /// receivers and the cleaner can see chains from a listing alone.
    pub fn delta(syncer: &str, instance: &str, timestamp_ns: i64, from: u64, to: u64) -> Self {
        let mut n = SnapshotName::new(syncer, instance, timestamp_ns);
        n.extras = vec![format!("F{from}"), format!("T{to}")];
        n.extension = DELTA_EXTENSION.to_string();
        n
    }

    /// A full snapshot's name that also says which LMDB transaction it covers (the `T` extra
    /// item, which Go's parser accepts and ignores), so that a receiver whose delta chain of
    /// the instance reaches that transaction can skip downloading it.
    pub fn full_covering(syncer: &str, instance: &str, timestamp_ns: i64, txn: u64) -> Self {
        let mut n = SnapshotName::new(syncer, instance, timestamp_ns);
        n.extras = vec![format!("T{txn}")];
        n
    }

    /// The same object stored encrypted: [`ENCRYPTED_SUFFIX`] appended to its extension.
    pub fn encrypted(mut self) -> Self {
        if !self.is_encrypted() {
            self.extension = format!("{}.{ENCRYPTED_SUFFIX}", self.extension);
        }
        self
    }

    /// Whether the name is that of an encrypted object.
    pub fn is_encrypted(&self) -> bool {
        self.extension != self.plain_extension()
    }

    /// The extension without [`ENCRYPTED_SUFFIX`]: what the object holds once decrypted.
    pub fn plain_extension(&self) -> &str {
        self.extension
            .strip_suffix(ENCRYPTED_SUFFIX)
            .and_then(|e| e.strip_suffix('.'))
            .unwrap_or(&self.extension)
    }

    /// The transaction a full snapshot's name says it covers, if it says so.
    pub fn covers(&self) -> Option<u64> {
        if self.plain_extension() != EXTENSION {
            return None;
        }
        self.extra('T').and_then(digits).map(|v| v as u64)
    }

    /// Go's `snapshot.ParseName`, step by step (format.md §2.2): plaintext full snapshots only.
    pub fn parse(name: &str) -> Result<SnapshotName, NameError> {
        match SnapshotName::parse_object(name)? {
            (n, Kind::Snapshot) if n.extension == EXTENSION => Ok(n),
            (n, _) => Err(NameError {
                name: name.to_string(),
                reason: format!("unknown extension {:?}", n.extension),
            }),
        }
    }

    /// Parses a full snapshot's name as Go does, or one of our delta names, which must carry
    /// numeric `F` and `T` items with `from < to`, or either of them encrypted (the kind is
    /// that of the plaintext inside; see [`SnapshotName::is_encrypted`]).
    pub fn parse_object(name: &str) -> Result<(SnapshotName, Kind), NameError> {
        let err = |reason: String| NameError {
            name: name.to_string(),
            reason,
        };
        let (base, ext) = name
            .split_once('.')
            .ok_or_else(|| err("no extension".into()))?;
        let plain = ext
            .strip_suffix(ENCRYPTED_SUFFIX)
            .and_then(|e| e.strip_suffix('.'))
            .unwrap_or(ext);
        if plain != EXTENSION && plain != DELTA_EXTENSION {
            return Err(err(format!("unknown extension {ext:?}")));
        }
        let parts: Vec<&str> = base.split("__").collect();
        if parts.len() < 4 {
            return Err(err(format!("{} parts instead of at least 4", parts.len())));
        }
        let timestamp_ns = parse_timestamp(parts[2]).map_err(err)?;
        let n = SnapshotName {
            syncer: parts[0].to_string(),
            instance: parts[1].to_string(),
            timestamp_ns,
            timestamp_str: parts[2].to_string(),
            generation: parts[3].to_string(),
            extras: parts[4..].iter().map(|s| s.to_string()).collect(),
            extension: ext.to_string(),
        };
        if plain == EXTENSION {
            return Ok((n, Kind::Snapshot));
        }
        let txn = |kind: char| {
            n.extra(kind)
                .and_then(digits)
                .map(|v| v as u64)
                .ok_or_else(|| err(format!("delta without a numeric {kind} item")))
        };
        let (from, to) = (txn('F')?, txn('T')?);
        if from >= to {
            return Err(err(format!("delta range {from}..{to} is empty")));
        }
        Ok((n, Kind::Delta { from, to }))
    }

    pub fn object_name(&self) -> String {
        let mut s = format!(
            "{}__{}__{}__{}",
            self.syncer, self.instance, self.timestamp_str, self.generation
        );
        for e in &self.extras {
            s.push_str("__");
            s.push_str(e);
        }
        s.push('.');
        s.push_str(&self.extension);
        s
    }

    /// First 7 hex digits of SHA-256 of `<instance>-<time>`: a short id for logs.
    pub fn shorthash(&self) -> String {
        let digest = Sha256::digest(format!("{}-{}", self.instance, self.timestamp_str));
        digest
            .iter()
            .take(4)
            .map(|b| format!("{b:02x}"))
            .collect::<String>()[..7]
            .to_string()
    }

    /// The first extra item of the given type letter.
    pub fn extra(&self, kind: char) -> Option<&str> {
        self.extras
            .iter()
            .find(|e| e.starts_with(kind))
            .map(|e| &e[kind.len_utf8()..])
    }
}

impl std::fmt::Display for SnapshotName {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.object_name())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const T: i64 = 1_641_092_645_012_345_678;

    #[test]
    fn build_and_parse() {
        let n = SnapshotName::new("main", "inst1", T);
        assert_eq!(
            n.object_name(),
            "main__inst1__20220102-030405-012345678__GX.pb.gz"
        );
        assert_eq!(SnapshotName::parse(&n.object_name()).unwrap(), n);
        assert_eq!(n.shorthash(), "b89bf33");
        assert_eq!(format_timestamp(0), "19700101-000000-000000000");
        assert_eq!(n.to_string(), n.object_name());
        // Leap day exists in 2024, not in 2023.
        let leap = SnapshotName::parse("m__i__20240229-235959-999999999__GX.pb.gz").unwrap();
        assert_eq!(format_timestamp(leap.timestamp_ns), leap.timestamp_str);
        assert!(SnapshotName::parse("m__i__20230229-000000-000000000__GX.pb.gz").is_err());
        // The reason names what is wrong.
        let e = SnapshotName::parse("m__i__20220102-030405-012345678__GX.tar").unwrap_err();
        assert!(e.to_string().contains("unknown extension"), "{e}");
        let e = SnapshotName::parse("m__i__GX.pb.gz").unwrap_err();
        assert!(e.to_string().contains("parts"), "{e}");
    }

    #[test]
    fn extras() {
        let n = SnapshotName::parse("db1__inst1__20220102-030405-012345678__G1__X123__Y456.pb.gz")
            .unwrap();
        assert_eq!((n.syncer.as_str(), n.generation.as_str()), ("db1", "G1"));
        assert_eq!(n.extras, ["X123", "Y456"]);
        assert_eq!(n.extra('Y'), Some("456"));
        assert_eq!(n.extra('Z'), None);
        assert_eq!(
            n.object_name(),
            "db1__inst1__20220102-030405-012345678__G1__X123__Y456.pb.gz"
        );
    }

    #[test]
    fn invalid_names() {
        for bad in [
            "main__inst1__20220102-030405-012345678__GX",
            "main__inst1__20220102-030405-012345678__GX.pb",
            "main__inst1__20220102-030405-012345678__GX.pb.gz.tmp",
            "main__inst1__20220102-030405-012345678.pb.gz",
            "main__in.st__20220102-030405-012345678__GX.pb.gz",
            "main__inst1__20221302-030405-012345678__GX.pb.gz",
            "main__inst1__20230230-030405-012345678__GX.pb.gz",
            "main__inst1__20220102-240405-012345678__GX.pb.gz",
            "main__inst1__20220102-036005-012345678__GX.pb.gz",
            "main__inst1__20220102-030405-01234567__GX.pb.gz",
            "main__inst1__20220102-030405.012345678__GX.pb.gz",
            "main__inst1__2022010a-030405-012345678__GX.pb.gz",
            "main__inst1__20220102-030460-012345678__GX.pb.gz",
            "main__inst1__20220100-030405-012345678__GX.pb.gz",
            "main__inst1__20220102-030405-+12345678__GX.pb.gz",
            "main.x__inst1__20220102-030405-012345678__GX.pb.gz",
            "main__inst1__GX.pb.gz",
            "",
            "zzz-not-a-snapshot",
        ] {
            assert!(SnapshotName::parse(bad).is_err(), "{bad} accepted");
        }
        // Not validated: the generation and the syncer name.
        assert!(SnapshotName::parse("x__i__20220102-030405-012345678__Q.pb.gz").is_ok());
        // Go's prefix quirk: a db named "a_" yields instance "_inst" under db "a".
        let q = SnapshotName::parse("a___inst__20220102-030405-012345678__GX.pb.gz").unwrap();
        assert_eq!((q.syncer.as_str(), q.instance.as_str()), ("a", "_inst"));
    }

    #[test]
    fn ordering_follows_time() {
        let a = SnapshotName::new("main", "x", T).object_name();
        let b = SnapshotName::new("main", "x", T + 1).object_name();
        let c = SnapshotName::new("main", "x", T + 1_000_000_000).object_name();
        assert!(a < b && b < c);
    }

    #[test]
    fn deltas() {
        let n = SnapshotName::delta("main", "inst1", T, 7, 12);
        let s = n.object_name();
        assert_eq!(
            s,
            "main__inst1__20220102-030405-012345678__GX__F7__T12.delta.pb.gz"
        );
        assert_eq!(
            SnapshotName::parse_object(&s).unwrap(),
            (n, Kind::Delta { from: 7, to: 12 })
        );
        // Go's parser (and ours for full snapshots) sees an unknown extension.
        let e = SnapshotName::parse(&s).unwrap_err();
        assert!(e.to_string().contains("unknown extension"), "{e}");
        let full = SnapshotName::new("main", "inst1", T).object_name();
        assert_eq!(SnapshotName::parse_object(&full).unwrap().1, Kind::Snapshot);
        // A full snapshot may say which transaction it covers; Go parses such names too.
        let covering = SnapshotName::full_covering("main", "inst1", T, 12);
        let c = covering.object_name();
        assert_eq!(c, "main__inst1__20220102-030405-012345678__GX__T12.pb.gz");
        assert_eq!(SnapshotName::parse(&c).unwrap().covers(), Some(12));
        assert_eq!(SnapshotName::parse(&full).unwrap().covers(), None);
        assert_eq!(SnapshotName::parse_object(&s).unwrap().0.covers(), None);
        // Deltas sort with full snapshots by time.
        let later_full = SnapshotName::new("main", "inst1", T + 1).object_name();
        assert!(full < s && s < later_full);
        for bad in [
            "main__i__20220102-030405-012345678__GX.delta.pb.gz",
            "main__i__20220102-030405-012345678__GX__F7.delta.pb.gz",
            "main__i__20220102-030405-012345678__GX__F7__Tx.delta.pb.gz",
            "main__i__20220102-030405-012345678__GX__F7__T7.delta.pb.gz",
            "main__i__20220102-030405-012345678__GX__F-1__T7.delta.pb.gz",
            "main__i__20220102-030405-012345678__GX__F1__T2.delta.gz",
        ] {
            assert!(SnapshotName::parse_object(bad).is_err(), "{bad} accepted");
        }
    }

    #[test]
    fn encrypted_names() {
        let full = SnapshotName::new("main", "inst1", T).encrypted();
        let s = full.object_name();
        assert_eq!(s, "main__inst1__20220102-030405-012345678__GX.pb.gz.age");
        assert!(full.is_encrypted() && is_encrypted_name(&s));
        assert_eq!(full.plain_extension(), EXTENSION);
        assert_eq!(
            SnapshotName::parse_object(&s).unwrap(),
            (full.clone(), Kind::Snapshot)
        );
        // Idempotent.
        assert_eq!(full.clone().encrypted(), full);
        // Go's parser: the extension is everything after the first dot, unknown to it.
        let e = SnapshotName::parse(&s).unwrap_err();
        assert!(
            e.to_string().contains("unknown extension \"pb.gz.age\""),
            "{e}"
        );
        let delta = SnapshotName::delta("main", "inst1", T, 7, 12).encrypted();
        let d = delta.object_name();
        assert_eq!(
            d,
            "main__inst1__20220102-030405-012345678__GX__F7__T12.delta.pb.gz.age"
        );
        assert_eq!(
            SnapshotName::parse_object(&d).unwrap(),
            (delta, Kind::Delta { from: 7, to: 12 })
        );
        assert!(SnapshotName::parse(&d).is_err());
        // A covering full snapshot says what it covers, encrypted or not.
        let c = SnapshotName::full_covering("main", "inst1", T, 12).encrypted();
        assert_eq!(
            SnapshotName::parse_object(&c.object_name())
                .unwrap()
                .0
                .covers(),
            Some(12)
        );
        // Plaintext names are not encrypted ones, and near misses are no names at all.
        assert!(!is_encrypted_name(
            "main__inst1__20220102-030405-012345678__GX.pb.gz"
        ));
        assert!(!SnapshotName::new("main", "i", T).is_encrypted());
        for bad in [
            "main__i__20220102-030405-012345678__GX.pb.gzage",
            "main__i__20220102-030405-012345678__GX.pb.gz.age.age",
            "main__i__20220102-030405-012345678__GX.age",
            "main__i__20220102-030405-012345678__GX.pb.age",
            "main__i__20220102-030405-012345678__GX.delta.pb.gz.agE",
            "main__i__20220102-030405-012345678__GX__F7.delta.pb.gz.age",
        ] {
            assert!(SnapshotName::parse_object(bad).is_err(), "{bad} accepted");
        }
        assert!(!is_encrypted_name("x.age") && !is_encrypted_name("x.pb.gzage"));
        // Encrypted objects sort among the plaintext ones by time.
        let later = SnapshotName::new("main", "inst1", T + 1).object_name();
        assert!(s < later);
    }

    #[test]
    fn sanitising() {
        assert_eq!(sanitize_instance("host.example_1"), "host-example-1");
        assert_eq!(sanitize_instance("hö st"), "h--st");
        assert_eq!(sanitize_instance("a/b:c"), "a-b-c");
        assert_eq!(sanitize_instance_bytes(b"a\xffb"), "a-b");
        assert_eq!(sanitize_instance(""), "");
    }
}
