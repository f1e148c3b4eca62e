//! Streaming snapshot encoder. It writes fields in exactly the Go writer's order (format.md
//! §1.3: Snapshot 1,4,2,3; Meta 1,2,3,7,4,5,8; DBI 1,3,4 then entries; KV 1,2,4,3) and omits
//! zero fields, so our objects are byte-identical to Go's before compression. A DBI message needs
//! its length up front: callers learn it in a first pass with [`kv_field_len`] and then stream
//! the entries, so no DBI is ever held in memory. [`GzipWriter`] frames the result with the Go
//! gzip header bytes at deflate level 1.

use std::io::{self, BufWriter, Write};

use flate2::Compression;
use flate2::write::DeflateEncoder;

use super::wire::{len_field_len, put_varint, varint_len};
use super::{COMPAT_VERSION, DbiInfo, FORMAT_VERSION, KvRef, Meta};

fn kv_body_len(kv: &KvRef) -> u64 {
    let mut n = 0;
    if !kv.key.is_empty() {
        n += len_field_len(kv.key.len() as u64);
    }
    if !kv.value.is_empty() {
        n += len_field_len(kv.value.len() as u64);
    }
    if kv.flags != 0 {
        n += 1 + varint_len(u64::from(kv.flags));
    }
    if kv.timestamp_nano != 0 {
        n += 9;
    }
    n
}

/// Bytes this entry adds to its DBI message: tag, length and body; 0 for an all-empty entry,
/// which is never written.
pub fn kv_field_len(kv: &KvRef) -> u64 {
    match kv_body_len(kv) {
        0 => 0,
        n => len_field_len(n),
    }
}

fn put_bytes_field(out: &mut Vec<u8>, tag: u8, b: &[u8]) {
    if !b.is_empty() {
        out.push(tag);
        put_varint(out, b.len() as u64);
        out.extend_from_slice(b);
    }
}

fn put_varint_field(out: &mut Vec<u8>, tag: u8, v: u64) {
    if v != 0 {
        out.push(tag);
        put_varint(out, v);
    }
}

fn put_fixed64_field(out: &mut Vec<u8>, tag: u8, v: u64) {
    if v != 0 {
        out.push(tag);
        out.extend_from_slice(&v.to_le_bytes());
    }
}

fn encode_meta(m: &Meta) -> Vec<u8> {
    let mut b = Vec::with_capacity(64);
    put_bytes_field(&mut b, 0x0a, &m.generation_id);
    put_bytes_field(&mut b, 0x12, &m.instance_id);
    put_bytes_field(&mut b, 0x1a, &m.hostname);
    put_bytes_field(&mut b, 0x3a, &m.database_name);
    // int64 as a plain (non-zigzag) varint: negative values take 10 bytes, as in Go.
    put_varint_field(&mut b, 0x20, m.lmdb_txn_id as u64);
    put_fixed64_field(&mut b, 0x29, m.timestamp_nano);
    put_varint_field(&mut b, 0x40, m.from_lmdb_txn_id as u64);
    b
}

fn encode_dbi_header(d: &DbiInfo) -> Vec<u8> {
    let mut b = Vec::new();
    put_bytes_field(&mut b, 0x0a, &d.name);
    put_varint_field(&mut b, 0x18, d.flags);
    put_bytes_field(&mut b, 0x22, &d.transform);
    b
}

/// Counts what passes through, for the uncompressed size.
struct Counting<W> {
    inner: W,
    count: u64,
}

impl<W: Write> Write for Counting<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.count += n as u64;
        Ok(n)
    }
    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

struct OpenDbi {
    announced: u64,
    written: u64,
}

/// Writes one snapshot, DBI by DBI, entry by entry.
pub struct SnapshotWriter<W: Write> {
    out: BufWriter<Counting<W>>,
    dbi: Option<OpenDbi>,
    scratch: Vec<u8>,
}

impl<W: Write> SnapshotWriter<W> {
    /// Starts a snapshot of the current format (3, compat 1) with `meta`.
    pub fn new(out: W, meta: &Meta) -> io::Result<Self> {
        Self::with_versions(out, meta, FORMAT_VERSION, COMPAT_VERSION)
    }

    /// Starts a snapshot with explicit version fields (tests of older formats).
    pub fn with_versions(out: W, meta: &Meta, format: u32, compat: u32) -> io::Result<Self> {
        let mut w = SnapshotWriter {
            out: BufWriter::with_capacity(
                256 * 1024,
                Counting {
                    inner: out,
                    count: 0,
                },
            ),
            dbi: None,
            scratch: Vec::with_capacity(256),
        };
        let mut b = Vec::with_capacity(128);
        put_varint_field(&mut b, 0x08, u64::from(format));
        put_varint_field(&mut b, 0x20, u64::from(compat));
        let m = encode_meta(meta);
        if !m.is_empty() {
            b.push(0x12);
            put_varint(&mut b, m.len() as u64);
            b.extend_from_slice(&m);
        }
        w.out.write_all(&b)?;
        Ok(w)
    }

    /// Starts a DBI message whose entries will take `entries_len` bytes (the sum of
    /// [`kv_field_len`] over them). A DBI whose whole encoding would be empty is not written.
    pub fn begin_dbi(&mut self, dbi: &DbiInfo, entries_len: u64) -> io::Result<()> {
        if self.dbi.is_some() {
            return Err(io::Error::other("begin_dbi inside an open DBI"));
        }
        let header = encode_dbi_header(dbi);
        let total = header.len() as u64 + entries_len;
        if total > 0 {
            self.scratch.clear();
            self.scratch.push(0x1a);
            put_varint(&mut self.scratch, total);
            self.scratch.extend_from_slice(&header);
            self.out.write_all(&self.scratch)?;
        }
        self.dbi = Some(OpenDbi {
            announced: entries_len,
            written: 0,
        });
        Ok(())
    }

    pub fn write_kv(&mut self, kv: &KvRef) -> io::Result<()> {
        let Some(dbi) = self.dbi.as_mut() else {
            return Err(io::Error::other("write_kv outside a DBI"));
        };
        let body = kv_body_len(kv);
        if body == 0 {
            return Ok(());
        }
        let b = &mut self.scratch;
        b.clear();
        b.push(0x12);
        put_varint(b, body);
        put_bytes_field(b, 0x0a, kv.key);
        // The value goes straight to the output: it can be large.
        if !kv.value.is_empty() {
            b.push(0x12);
            put_varint(b, kv.value.len() as u64);
            self.out.write_all(b)?;
            self.out.write_all(kv.value)?;
            b.clear();
        }
        put_varint_field(b, 0x20, u64::from(kv.flags));
        put_fixed64_field(b, 0x19, kv.timestamp_nano);
        self.out.write_all(b)?;
        dbi.written += len_field_len(body);
        Ok(())
    }

    /// Ends the current DBI; fails if the entries written differ from what was announced (the
    /// two passes saw different data, which would make the message unreadable).
    pub fn end_dbi(&mut self) -> io::Result<()> {
        match self.dbi.take() {
            Some(d) if d.written == d.announced => Ok(()),
            Some(d) => Err(io::Error::new(
                io::ErrorKind::InvalidData,
                format!(
                    "DBI entries took {} bytes but {} were announced",
                    d.written, d.announced
                ),
            )),
            None => Err(io::Error::other("end_dbi without begin_dbi")),
        }
    }

    /// Uncompressed bytes written so far.
    pub fn bytes_written(&self) -> u64 {
        self.out.get_ref().count + self.out.buffer().len() as u64
    }

    pub fn finish(self) -> io::Result<W> {
        if self.dbi.is_some() {
            return Err(io::Error::other("finish inside an open DBI"));
        }
        let counting = self.out.into_inner().map_err(|e| e.into_error())?;
        Ok(counting.inner)
    }
}

/// The gzip header the Go writer (klauspost/compress) emits: no name or comment, MTIME
/// 0x886E0900 (Go's zero time), XFL 4 (fastest), OS 255.
pub const GO_GZIP_HEADER: [u8; 10] = [0x1f, 0x8b, 0x08, 0x00, 0x00, 0x09, 0x6e, 0x88, 0x04, 0xff];

/// A single-member gzip writer at deflate level 1 with the Go header bytes.
pub struct GzipWriter<W: Write> {
    deflate: DeflateEncoder<W>,
    crc: flate2::Crc,
    header_written: bool,
}

impl<W: Write> GzipWriter<W> {
    pub fn new(out: W) -> Self {
        GzipWriter {
            deflate: DeflateEncoder::new(out, Compression::fast()),
            crc: flate2::Crc::new(),
            header_written: false,
        }
    }

    fn header(&mut self) -> io::Result<()> {
        if !self.header_written {
            self.deflate.get_mut().write_all(&GO_GZIP_HEADER)?;
            self.header_written = true;
        }
        Ok(())
    }

    /// Completes the stream (deflate end, CRC32 and size trailer) and returns the writer.
    pub fn finish(mut self) -> io::Result<W> {
        self.header()?;
        let mut out = self.deflate.finish()?;
        out.write_all(&self.crc.sum().to_le_bytes())?;
        out.write_all(&self.crc.amount().to_le_bytes())?;
        Ok(out)
    }
}

impl<W: Write> Write for GzipWriter<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.header()?;
        let n = self.deflate.write(buf)?;
        self.crc.update(&buf[..n]);
        Ok(n)
    }
    fn flush(&mut self) -> io::Result<()> {
        self.deflate.flush()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    pub(crate) fn spec_meta() -> Meta {
        Meta {
            generation_id: b"GX".to_vec(),
            instance_id: b"inst1".to_vec(),
            hostname: b"host1".to_vec(),
            lmdb_txn_id: 42,
            timestamp_nano: 1_641_092_645_012_345_678,
            database_name: b"main".to_vec(),
            from_lmdb_txn_id: 0,
        }
    }

    fn hex(s: &str) -> Vec<u8> {
        s.split_whitespace()
            .map(|b| u8::from_str_radix(b, 16).unwrap())
            .collect()
    }

    /// The 82-byte example of format.md §5, exactly.
    #[test]
    fn spec_example_bytes() {
        const T: u64 = 1_641_092_645_012_345_678;
        let kvs = [
            KvRef {
                key: b"a",
                value: b"1",
                timestamp_nano: T,
                flags: 0,
            },
            KvRef {
                key: b"b",
                value: b"",
                timestamp_nano: T,
                flags: 1,
            },
        ];
        let mut w = SnapshotWriter::new(Vec::new(), &spec_meta()).unwrap();
        let info = DbiInfo {
            name: b"test".to_vec(),
            ..Default::default()
        };
        w.begin_dbi(&info, kvs.iter().map(kv_field_len).sum())
            .unwrap();
        for kv in &kvs {
            w.write_kv(kv).unwrap();
        }
        w.end_dbi().unwrap();
        assert_eq!(w.bytes_written(), 82);
        let got = w.finish().unwrap();
        let want = hex(
            "08 03 20 01 12 23 0a 02 47 58 12 05 69 6e 73 74 31 1a 05 68 6f 73 74 31 3a 04 6d 61 69 6e \
             20 2a 29 4e 93 77 d5 10 55 c6 16 1a 27 0a 04 74 65 73 74 \
             12 0f 0a 01 61 12 01 31 19 4e 93 77 d5 10 55 c6 16 \
             12 0e 0a 01 62 20 01 19 4e 93 77 d5 10 55 c6 16",
        );
        assert_eq!(got, want);
    }

    #[test]
    fn empty_dbis_zero_fields_and_long_lengths() {
        let mut w = SnapshotWriter::new(Vec::new(), &Meta::default()).unwrap();
        // name only
        w.begin_dbi(
            &DbiInfo {
                name: b"e".to_vec(),
                ..Default::default()
            },
            0,
        )
        .unwrap();
        w.end_dbi().unwrap();
        // entirely empty DBI: skipped
        w.begin_dbi(&DbiInfo::default(), 0).unwrap();
        w.end_dbi().unwrap();
        // a 200-byte value needs a two-byte length; timestamp 0 and flags 0 are omitted
        let v = vec![b'x'; 200];
        let kv = KvRef {
            key: b"k",
            value: &v,
            timestamp_nano: 0,
            flags: 0,
        };
        let info = DbiInfo {
            name: b"d".to_vec(),
            flags: 0x14,
            transform: b"t".to_vec(),
        };
        w.begin_dbi(&info, kv_field_len(&kv)).unwrap();
        w.write_kv(&kv).unwrap();
        w.end_dbi().unwrap();
        let b = w.finish().unwrap();
        let mut want = hex("08 03 20 01 1a 03 0a 01 65");
        want.extend(hex(
            "1a d9 01 0a 01 64 18 14 22 01 74 12 ce 01 0a 01 6b 12 c8 01",
        ));
        want.extend(&v);
        assert_eq!(b, want);
    }

    #[test]
    fn announced_length_is_enforced() {
        let mut w = SnapshotWriter::new(Vec::new(), &Meta::default()).unwrap();
        w.begin_dbi(
            &DbiInfo {
                name: b"d".to_vec(),
                ..Default::default()
            },
            5,
        )
        .unwrap();
        assert!(w.end_dbi().is_err());
        assert!(
            w.write_kv(&KvRef {
                key: b"k",
                value: b"",
                timestamp_nano: 0,
                flags: 0
            })
            .is_err()
        );
    }

    #[test]
    fn gzip_framing() {
        let mut g = GzipWriter::new(Vec::new());
        g.write_all(b"hello hello hello").unwrap();
        let out = g.finish().unwrap();
        assert_eq!(&out[..10], &GO_GZIP_HEADER);
        let mut d = flate2::read::MultiGzDecoder::new(&out[..]);
        let mut s = String::new();
        std::io::Read::read_to_string(&mut d, &mut s).unwrap();
        assert_eq!(s, "hello hello hello");
        // an empty stream is still a valid gzip member
        let empty = GzipWriter::new(Vec::new()).finish().unwrap();
        assert_eq!(&empty[..10], &GO_GZIP_HEADER);
    }
}
