//! Decoder tests: round trips with the encoder, Go-written vectors, every kind of corruption.

use std::io::Write;

use super::*;
use crate::snapshot::encode::{GzipWriter, SnapshotWriter, kv_field_len};

#[test]
fn decompressed_size_limit() {
    use crate::snapshot::encode::{SnapshotWriter, kv_field_len};
    let value = vec![0u8; 100_000];
    let keys: Vec<[u8; 4]> = (0..100u32).map(|i| i.to_be_bytes()).collect();
    let kvs: Vec<KvRef> = keys
        .iter()
        .map(|k| KvRef {
            key: k,
            value: &value,
            timestamp_nano: 1,
            flags: 0,
        })
        .collect();
    let len = kvs.iter().map(kv_field_len).sum();
    let mut big = SnapshotWriter::new(Vec::new(), &Meta::default()).unwrap();
    big.begin_dbi(
        &DbiInfo {
            name: b"d".to_vec(),
            ..Default::default()
        },
        len,
    )
    .unwrap();
    for kv in &kvs {
        big.write_kv(kv).unwrap();
    }
    big.end_dbi().unwrap();
    let raw = big.finish().unwrap();
    let mut gz = crate::snapshot::encode::GzipWriter::new(Vec::new());
    std::io::Write::write_all(&mut gz, &raw).unwrap();
    let packed = gz.finish().unwrap();
    // 10 MB of zeros compress to a few KiB: refused by size after decompression.
    assert!(packed.len() < 100_000);
    assert!(scan_limited(&packed[..], raw.len() as u64).is_ok());
    let e = scan_limited(&packed[..], 1_000_000).unwrap_err();
    assert!(
        matches!(e, DecodeError::TooLarge { limit: 1_000_000 }),
        "{e}"
    );
    assert!(e.to_string().contains("snapshot_max_uncompressed_size"));
}

pub(crate) fn gz(b: &[u8]) -> Vec<u8> {
    let mut g = GzipWriter::new(Vec::new());
    g.write_all(b).unwrap();
    g.finish().unwrap()
}

fn meta() -> Meta {
    Meta {
        generation_id: b"GX".to_vec(),
        instance_id: b"inst1".to_vec(),
        hostname: b"host1".to_vec(),
        lmdb_txn_id: 42,
        timestamp_nano: 7,
        database_name: b"main".to_vec(),
        from_lmdb_txn_id: 0,
    }
}

pub(crate) fn build(dbis: &[(&str, u64, Vec<OwnedKv>)]) -> Vec<u8> {
    let mut w = SnapshotWriter::new(GzipWriter::new(Vec::new()), &meta()).unwrap();
    for (name, flags, kvs) in dbis {
        let refs: Vec<KvRef> = kvs
            .iter()
            .map(|k| KvRef {
                key: &k.key,
                value: &k.value,
                timestamp_nano: k.timestamp_nano,
                flags: k.flags,
            })
            .collect();
        let info = DbiInfo {
            name: name.as_bytes().to_vec(),
            flags: *flags,
            transform: Vec::new(),
        };
        w.begin_dbi(&info, refs.iter().map(kv_field_len).sum())
            .unwrap();
        for r in &refs {
            w.write_kv(r).unwrap();
        }
        w.end_dbi().unwrap();
    }
    w.finish().unwrap().finish().unwrap()
}

pub(crate) fn kv(k: &str, v: &str, ts: u64, flags: u32) -> OwnedKv {
    OwnedKv {
        key: k.into(),
        value: v.into(),
        timestamp_nano: ts,
        flags,
    }
}

#[test]
fn round_trip() {
    let big = "x".repeat(100_000);
    let dbis = vec![
        (
            "a",
            0,
            vec![
                kv("k1", "v1", 1, 0),
                kv("k2", "", 2, 1),
                kv("k3", &big, 0, 0),
            ],
        ),
        ("empty", 8, vec![]),
        ("b", 0, vec![kv("z", "last", u64::MAX, 0)]),
    ];
    let bytes = build(&dbis);
    let (idx, entries) = decode_all(&bytes[..]).unwrap();
    assert_eq!((idx.format_version, idx.compat_version), (3, 1));
    assert_eq!(idx.meta, meta());
    let names: Vec<_> = idx
        .dbis
        .iter()
        .map(|d| (d.info.name.clone(), d.info.flags, d.entries))
        .collect();
    assert_eq!(
        names,
        [
            (b"a".to_vec(), 0, 3),
            (b"empty".to_vec(), 8, 0),
            (b"b".to_vec(), 0, 1)
        ]
    );
    let want: Vec<(usize, OwnedKv)> = vec![
        (0, dbis[0].2[0].clone()),
        (0, dbis[0].2[1].clone()),
        (0, dbis[0].2[2].clone()),
        (2, dbis[2].2[0].clone()),
    ];
    assert_eq!(entries, want);
}

/// Our encoder's output read by the code pb-rs generated from proto/snapshot.proto.
#[test]
fn generated_code_agrees() {
    use quick_protobuf::{BytesReader, MessageRead};
    let bytes = build(&[("a", 4, vec![kv("k", "v", 9, 1)])]);
    let mut raw = Vec::new();
    MultiGzDecoder::new(&bytes[..])
        .read_to_end(&mut raw)
        .unwrap();
    let mut r = BytesReader::from_bytes(&raw);
    let s = super::super::pb::Snapshot::from_reader(&mut r, &raw).unwrap();
    assert_eq!((s.formatVersion, s.compatVersion), (3, 1));
    let m = s.meta.unwrap();
    assert_eq!(
        (m.instanceID.as_ref(), m.lmdbTxnID, m.timestampNano),
        ("inst1", 42, 7)
    );
    assert_eq!(s.databases.len(), 1);
    let d = &s.databases[0];
    assert_eq!((d.name.as_ref(), d.flags, d.entries.len()), ("a", 4, 1));
    let e = &d.entries[0];
    assert_eq!(
        (e.key.as_ref(), e.value.as_ref(), e.timestampNano, e.flags),
        (&b"k"[..], &b"v"[..], 9, 1)
    );
}

/// Field orders a generic encoder uses, unknown fields everywhere, repeated meta.
#[test]
fn any_field_order_and_unknown_fields() {
    let mut p = Vec::new();
    p.extend([0x08, 0x03]); // formatVersion
    p.extend([0x12, 0x04, 0x12, 0x02, b'i', b'1']); // meta {instanceID}
    p.extend([0x98, 0x01, 0x05]); // unknown field 19 varint
    // DBI: name, unknown, entry (with unknown), flags after entries, transform
    let kvb = [
        0x0a, 0x01, b'k', 0x12, 0x01, b'v', 0x30, 0x07, 0x19, 1, 0, 0, 0, 0, 0, 0, 0,
    ];
    let mut dbi = vec![0x0a, 0x01, b'd', 0x2a, 0x01, b'?'];
    dbi.push(0x12);
    dbi.push(kvb.len() as u8);
    dbi.extend(kvb);
    dbi.extend([0x18, 0x08]);
    p.push(0x1a);
    p.push(dbi.len() as u8);
    p.extend(&dbi);
    p.extend([0x12, 0x02, 0x20, 0x05]); // second meta: lmdbTxnID 5, merged
    p.extend([0x20, 0x01]); // compatVersion last
    let (idx, entries) = decode_all(&gz(&p)[..]).unwrap();
    assert_eq!((idx.format_version, idx.compat_version), (3, 1));
    assert_eq!(idx.meta.instance_id, b"i1");
    assert_eq!(idx.meta.lmdb_txn_id, 5);
    assert_eq!(
        idx.dbis[0].info,
        DbiInfo {
            name: b"d".to_vec(),
            flags: 8,
            transform: vec![]
        }
    );
    assert_eq!(entries, vec![(0, kv("k", "v", 1, 0))]);
}

#[test]
fn multi_member_gzip() {
    let bytes = build(&[("a", 0, vec![kv("k", "v", 1, 0)])]);
    let mut raw = Vec::new();
    MultiGzDecoder::new(&bytes[..])
        .read_to_end(&mut raw)
        .unwrap();
    let mut two = gz(&raw[..10]);
    two.extend(gz(b""));
    two.extend(gz(&raw[10..]));
    let (idx, entries) = decode_all(&two[..]).unwrap();
    assert_eq!(idx.dbis.len(), 1);
    assert_eq!(entries.len(), 1);
}

#[test]
fn corrupt_inputs_are_errors() {
    let good = build(&[("a", 0, vec![kv("k", "v", 1, 0)])]);
    let mut bad_crc = good.clone();
    let n = bad_crc.len();
    bad_crc[n - 8] ^= 1;
    let mut trailing = good.clone();
    trailing.extend_from_slice(b"garbage after the member");
    let long_key = "x".repeat(512);
    let cases: Vec<(&str, Vec<u8>)> = vec![
        ("truncated", good[..good.len() - 3].to_vec()),
        ("bad crc", bad_crc),
        ("trailing garbage", trailing),
        ("not gzip", b"hello, this is not a snapshot".to_vec()),
        ("wrong wire type", gz(&[0x09, 1, 2, 3, 4, 5, 6, 7, 8])),
        (
            "huge length",
            gz(&[0x1a, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x7f]),
        ),
        (
            "huge entry",
            gz(&[0x1a, 0x0c, 0x12, 0xff, 0xff, 0xff, 0xff, 0x7f]),
        ),
        (
            "entry overruns dbi",
            gz(&[0x1a, 0x02, 0x12, 0x02, 0x0a, 0x00]),
        ),
        ("empty kv", gz(&[0x1a, 0x02, 0x12, 0x00])),
        ("empty key", build(&[("a", 0, vec![kv("", "v", 1, 0)])])),
        (
            "key too long",
            build(&[("a", 0, vec![kv(&long_key, "v", 1, 0)])]),
        ),
        ("bad meta", gz(&[0x12, 0x02, 0x0a, 0x05])),
    ];
    for (what, bytes) in cases {
        assert!(scan(&bytes[..]).is_err(), "{what} was accepted");
    }
    // 511-byte keys are fine
    let ok_key = "x".repeat(511);
    assert!(scan(&build(&[("a", 0, vec![kv(&ok_key, "v", 1, 0)])])[..]).is_ok());
}

#[test]
fn versions_and_transforms() {
    let idx = |f, c| SnapshotIndex {
        format_version: f,
        compat_version: c,
        ..Default::default()
    };
    let plain = DbiInfo {
        name: b"d".to_vec(),
        ..Default::default()
    };
    let dup = DbiInfo {
        name: b"d".to_vec(),
        flags: 4,
        transform: TRANSFORM_DUPSORT_HACK.to_vec(),
    };
    assert!(validate_dbi(&idx(3, 1), &plain, true).is_ok());
    assert!(validate_dbi(&idx(0, 0), &plain, true).is_err());
    assert!(validate_dbi(&idx(3, 4), &plain, true).is_err());
    assert!(validate_dbi(&idx(9, 3), &plain, true).is_ok());
    assert!(validate_dbi(&idx(3, 1), &dup, true).is_err());
    assert!(validate_dbi(&idx(3, 1), &dup, false).is_ok());
    let dup_no_transform = DbiInfo {
        flags: 4,
        ..plain.clone()
    };
    assert!(validate_dbi(&idx(3, 1), &dup_no_transform, false).is_err());
    assert!(validate_dbi(&idx(2, 0), &dup_no_transform, false).is_ok());
    let odd = DbiInfo {
        transform: b"rot13".to_vec(),
        ..plain
    };
    assert!(validate_dbi(&idx(3, 1), &odd, false).is_err());
}

/// Every cut of a valid object and every kind of trailing bytes is a gzip error, as in Go;
/// an extra empty member is fine.
#[test]
fn truncation_and_trailing_bytes() {
    let good = build(&[("a", 0, vec![kv("k", "v", 1, 0)])]);
    for cut in 0..good.len() {
        match scan(&good[..cut]) {
            Err(DecodeError::Gzip(_)) => {}
            other => panic!("cut at {cut}: {other:?}"),
        }
    }
    let tails: [&[u8]; 6] = [
        b"\0",
        b"\x1f\x8b",
        &[0; 9],
        &[0; 10],
        &[0; 4096],
        b"garbage after the member",
    ];
    for tail in tails {
        let mut v = good.clone();
        v.extend_from_slice(tail);
        match scan(&v[..]) {
            Err(e @ DecodeError::Gzip(_)) => {
                assert!(e.to_string().starts_with("gzip: "), "{e}");
            }
            other => panic!("tail {tail:?}: {other:?}"),
        }
    }
    let mut v = good.clone();
    v.extend(gz(b""));
    assert_eq!(scan(&v[..]).unwrap(), scan(&good[..]).unwrap());
    let mut bad_crc = good.clone();
    let n = bad_crc.len();
    bad_crc[n - 6] ^= 0x40;
    let e = scan(&bad_crc[..]).unwrap_err();
    assert!(e.to_string().contains("checksum"), "{e}");
    assert!(matches!(scan(&b""[..]), Err(DecodeError::Gzip(_))));
}

/// An error of the underlying reader is reported as such, not as a corrupt object.
#[test]
fn source_errors_are_not_gzip_errors() {
    struct Failing<'a>(&'a [u8]);
    impl Read for Failing<'_> {
        fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
            if self.0.is_empty() {
                return Err(std::io::Error::other("disk on fire"));
            }
            let n = self.0.read(buf)?;
            Ok(n)
        }
    }
    let good = build(&[("a", 0, vec![kv("k", "v", 1, 0)])]);
    let e = scan(Failing(&good[..good.len() / 2])).unwrap_err();
    assert!(matches!(e, DecodeError::Read(_)), "{e:?}");
    assert!(e.to_string().contains("disk on fire"));
    let mut r = EntryReader::new(Failing(&good[..20]));
    assert!(matches!(r.next_entry(), Err(DecodeError::Read(_))));
}

/// A length claiming far more than the data holds fails when the data ends, and the buffer
/// only grew as far as the data went.
#[test]
fn hostile_lengths_do_not_allocate() {
    // DBI of 2^40 bytes holding one entry that claims 200 MiB (under the cap) but has 3.
    let mut p = vec![0x1a, 0x80, 0x80, 0x80, 0x80, 0x80, 0x20];
    p.extend([0x12, 0x80, 0x80, 0x80, 0x64, b'a', b'b', b'c']);
    let bytes = gz(&p);
    let mut d = Decoder::with_input(InPlace::new(&bytes[..]));
    assert_eq!(d.next().unwrap(), Event::DbiStart);
    match d.next() {
        Err(DecodeError::Protobuf {
            at: "KV", reason, ..
        }) => {
            assert!(reason.contains("truncated after 3 bytes"), "{reason}")
        }
        other => panic!("{other:?}"),
    }
    assert!(d.buf.capacity() < 1 << 20, "{}", d.buf.capacity());
    // Over the cap: refused before reading anything.
    let p = [0x1a, 0x06, 0x12, 0x80, 0x80, 0x80, 0x80, 0x02];
    match scan(&gz(&p)[..]) {
        Err(DecodeError::Protobuf {
            at: "DBI", reason, ..
        }) => {
            assert!(reason.contains("exceeds the limit"), "{reason}")
        }
        other => panic!("{other:?}"),
    }
    // A 10-byte varint with the top bit set in the last byte is not a length.
    let p = [
        0x1a, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x7f,
    ];
    assert!(matches!(
        scan(&gz(&p)[..]),
        Err(DecodeError::Protobuf { at: "Snapshot", .. })
    ));
}

/// DBI messages over 2 GiB are legal (Go allows top-level fields up to 100 GiB): a 3 GiB
/// DBI length is accepted and its content decoded; this one fails only where the data ends.
#[test]
fn dbi_over_2_gib() {
    const LEN: u64 = 3 << 30;
    let kvb = [0x0a, 0x01, b'k', 0x19, 5, 0, 0, 0, 0, 0, 0, 0];
    let mut p = vec![0x08, 0x03, 0x1a];
    super::super::wire::put_varint(&mut p, LEN);
    assert_eq!(p.len(), 3 + 5);
    p.extend([0x0a, 0x01, b'd', 0x12, kvb.len() as u8]);
    p.extend(kvb);
    let bytes = gz(&p);
    let mut r = EntryReader::new(&bytes[..]);
    let (i, e) = r.next_entry().unwrap().unwrap();
    assert_eq!((i, e.key, e.timestamp_nano), (0, &b"k"[..], 5));
    match r.next_entry() {
        Err(DecodeError::Protobuf {
            at: "DBI", reason, ..
        }) => {
            assert_eq!(reason, "unexpected end of data")
        }
        other => panic!("{other:?}"),
    }
    // The encoder announces such a length with a 5-byte varint too.
    let mut w = SnapshotWriter::new(Vec::new(), &Meta::default()).unwrap();
    let info = DbiInfo {
        name: b"d".to_vec(),
        ..Default::default()
    };
    w.begin_dbi(&info, LEN).unwrap();
    assert_eq!(w.bytes_written(), 4 + 1 + 5 + 3);
    assert_eq!(super::super::wire::len_field_len(LEN + 3), 1 + 5 + LEN + 3);
}

/// Wrong wire types for known fields are errors at every level; unknown Meta fields
/// (including the retired field 6) are skipped.
#[test]
fn wire_types_per_level() {
    let bad: [(&str, Vec<u8>); 4] = [
        ("Snapshot", vec![0x0a, 0x00]),         // formatVersion as bytes
        ("Meta", vec![0x12, 0x02, 0x28, 0x01]), // timestampNano as varint
        ("DBI", vec![0x1a, 0x02, 0x1a, 0x00]),  // flags as bytes
        ("KV", vec![0x1a, 0x04, 0x12, 0x02, 0x18, 0x01]), // timestampNano as varint
    ];
    for (level, p) in bad {
        match scan(&gz(&p)[..]) {
            Err(DecodeError::Protobuf { at, reason, .. }) => {
                assert_eq!(at, level);
                assert!(reason.contains("wrong wire type"), "{reason}");
            }
            other => panic!("{level}: {other:?}"),
        }
    }
    let mut p = vec![0x12, 0x0e];
    p.extend([0x32, 0x03, b'o', b'l', b'd']); // 6: previousSnapshot
    p.extend([0x4d, 1, 2, 3, 4]); // 9: fixed32
    p.extend([0x0a, 0x02, b'G', b'X']);
    let idx = scan(&gz(&p)[..]).unwrap();
    assert_eq!(idx.meta.generation_id, b"GX");
}

/// python-protobuf writes fields in number order; the result must decode to the same
/// snapshot, and our encoder must not produce that order (Go's order differs).
#[test]
fn python_order_decodes_the_same() {
    const T: [u8; 8] = [0x4e, 0x93, 0x77, 0xd5, 0x10, 0x55, 0xc6, 0x16];
    let mut meta = vec![0x0a, 0x02, b'G', b'X', 0x12, 0x05];
    meta.extend(b"inst1");
    meta.extend([0x1a, 0x05]);
    meta.extend(b"host1");
    meta.extend([0x20, 0x2a, 0x29]);
    meta.extend(T);
    meta.extend([0x3a, 0x04]);
    meta.extend(b"main");
    let mut kv_a = vec![0x0a, 0x01, b'a', 0x12, 0x01, b'1', 0x19];
    kv_a.extend(T);
    let mut kv_b = vec![0x0a, 0x01, b'b', 0x19];
    kv_b.extend(T);
    kv_b.extend([0x20, 0x01]);
    let mut dbi = vec![0x0a, 0x04];
    dbi.extend(b"test");
    for k in [&kv_a, &kv_b] {
        dbi.push(0x12);
        dbi.push(k.len() as u8);
        dbi.extend(k);
    }
    let mut py = vec![0x08, 0x03, 0x12, meta.len() as u8];
    py.extend(&meta);
    py.extend([0x1a, dbi.len() as u8]);
    py.extend(&dbi);
    py.extend([0x20, 0x01]);
    assert_eq!(py.len(), 82);

    let t = u64::from_le_bytes(T);
    let kvs = [
        KvRef {
            key: b"a",
            value: b"1",
            timestamp_nano: t,
            flags: 0,
        },
        KvRef {
            key: b"b",
            value: b"",
            timestamp_nano: t,
            flags: 1,
        },
    ];
    let m = Meta {
        generation_id: b"GX".to_vec(),
        instance_id: b"inst1".to_vec(),
        hostname: b"host1".to_vec(),
        lmdb_txn_id: 42,
        timestamp_nano: t,
        database_name: b"main".to_vec(),
        from_lmdb_txn_id: 0,
    };
    let mut w = SnapshotWriter::new(Vec::new(), &m).unwrap();
    let info = DbiInfo {
        name: b"test".to_vec(),
        ..Default::default()
    };
    w.begin_dbi(&info, kvs.iter().map(kv_field_len).sum())
        .unwrap();
    for k in &kvs {
        w.write_kv(k).unwrap();
    }
    w.end_dbi().unwrap();
    let ours = w.finish().unwrap();
    assert_eq!(ours.len(), py.len());
    assert_ne!(ours, py);
    // Go order: compatVersion right after formatVersion, KV flags before the timestamp.
    assert_eq!(&ours[..4], &[0x08, 0x03, 0x20, 0x01]);
    let kv_b_ours = &ours[ours.len() - 14..];
    assert_eq!(&kv_b_ours[..5], &[0x0a, 0x01, b'b', 0x20, 0x01]);

    let a = decode_all(&gz(&py)[..]).unwrap();
    let b = decode_all(&gz(&ours)[..]).unwrap();
    assert_eq!(a, b);
    assert_eq!(a.0.meta, m);
    assert_eq!(a.1.len(), 2);
}

/// Number of gzip members in `b` (test helper: bufread::GzDecoder stops exactly at the end
/// of a member).
fn gzip_members(mut b: &[u8]) -> u64 {
    let mut n = 0;
    while !b.is_empty() {
        let mut d = flate2::bufread::GzDecoder::new(b);
        std::io::copy(&mut d, &mut std::io::sink()).unwrap();
        b = d.into_inner();
        n += 1;
    }
    n
}

fn hex(s: &str) -> Vec<u8> {
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
        .collect()
}

/// The Go-written files of ../shared/vectors/decode match their JSON descriptions exactly.
#[test]
fn go_written_vectors() {
    let dir = std::path::Path::new(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../shared/vectors/decode"
    ));
    if !dir.exists() {
        assert!(
            std::env::var_os("LS_REQUIRE_SHARED").is_none(),
            "{} missing",
            dir.display()
        );
        eprintln!("skipping: {} not present", dir.display());
        return;
    }
    let mut seen = 0;
    for f in std::fs::read_dir(dir).unwrap() {
        let path = f.unwrap().path();
        if !path.to_string_lossy().ends_with(".pb.gz") {
            continue;
        }
        seen += 1;
        let bytes = std::fs::read(&path).unwrap();
        let j: serde_json::Value =
            serde_json::from_slice(&std::fs::read(format!("{}.json", path.display())).unwrap())
                .unwrap();
        let (idx, entries) = decode_all(&bytes[..]).unwrap();
        assert_eq!(gzip_members(&bytes), j["gzip_members"].as_u64().unwrap());
        assert_eq!(
            u64::from(idx.format_version),
            j["formatVersion"].as_u64().unwrap()
        );
        assert_eq!(
            u64::from(idx.compat_version),
            j["compatVersion"].as_u64().unwrap()
        );
        assert_eq!(idx.uncompressed_size, j["protobuf_size"].as_u64().unwrap());
        let m = &j["meta"];
        assert_eq!(
            idx.meta.instance_id,
            m["instanceID"].as_str().unwrap().as_bytes()
        );
        assert_eq!(
            idx.meta.hostname,
            m["hostname"].as_str().unwrap().as_bytes()
        );
        assert_eq!(
            idx.meta.generation_id,
            m["generationID"].as_str().unwrap().as_bytes()
        );
        assert_eq!(
            idx.meta.database_name,
            m["databaseName"].as_str().unwrap().as_bytes()
        );
        assert_eq!(idx.meta.lmdb_txn_id, m["lmdbTxnID"].as_i64().unwrap());
        assert_eq!(
            idx.meta.timestamp_nano,
            m["timestampNano"].as_u64().unwrap()
        );
        assert_eq!(
            idx.meta.from_lmdb_txn_id,
            m["fromLmdbTxnID"].as_i64().unwrap()
        );
        let dbis = j["databases"].as_array().unwrap();
        assert_eq!(idx.dbis.len(), dbis.len());
        let mut want = Vec::new();
        for (i, d) in dbis.iter().enumerate() {
            assert_eq!(
                idx.dbis[i].info.name,
                d["name"].as_str().unwrap().as_bytes()
            );
            assert_eq!(idx.dbis[i].info.flags, d["flags"].as_u64().unwrap());
            assert_eq!(
                idx.dbis[i].info.transform,
                d["transform"].as_str().unwrap().as_bytes()
            );
            for e in d["entries"].as_array().unwrap() {
                want.push((
                    i,
                    OwnedKv {
                        key: hex(e["key_hex"].as_str().unwrap()),
                        value: hex(e["value_hex"].as_str().unwrap()),
                        timestamp_nano: e["timestampNano"].as_u64().unwrap(),
                        flags: e["flags"].as_u64().unwrap() as u32,
                    },
                ));
            }
        }
        assert_eq!(entries, want, "{}", path.display());
    }
    assert_eq!(seen, 3);
}
