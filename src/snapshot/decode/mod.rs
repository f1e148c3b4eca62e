//! Streaming snapshot decoder. Snapshots are read twice: [`scan`] decompresses and checks
//! everything (gzip members and CRCs, every protobuf level, every key) while keeping only the
//! top-level fields and per-DBI headers, so a corrupt object is refused before anything is
//! merged; [`EntryReader`] then hands out the entries one at a time from a reusable buffer. Fields
//! may come in any order (python-protobuf writes DBI flags after the entries), unknown fields are
//! skipped at every level, and lengths are 64-bit, so DBI messages over 2 GiB are fine. Memory
//! use is bounded by the largest single entry, which is capped.

use std::io::{BufRead, BufReader, Read, Write};
use std::ops::Range;

use flate2::read::MultiGzDecoder;

use super::wire::{SliceReader, WT_FIXED64, WT_LEN, WT_VARINT};
use super::{DbiInfo, KvRef, Meta, OwnedKv, READER_VERSION, TRANSFORM_DUPSORT_HACK};
use crate::core::flags::{MAX_KEY_SIZE, MDB_DUPSORT};

/// Largest entry message accepted: far above any PowerDNS record, small enough that a hostile
/// length cannot exhaust memory.
pub const MAX_KV_SIZE: u64 = 256 << 20;
const MAX_META_SIZE: u64 = 1 << 20;
const MAX_NAME_SIZE: u64 = 64 << 10;

#[derive(Debug, thiserror::Error)]
pub enum DecodeError {
    /// The bytes are not a valid gzip stream: bad header, CRC or size mismatch, truncated
    /// member, trailing garbage. The object is corrupt.
    #[error("gzip: {0}")]
    Gzip(#[source] std::io::Error),
    /// Reading the compressed bytes themselves failed (disk or network): says nothing about the
    /// object, which may be fine on a retry.
    #[error("reading the snapshot: {0}")]
    Read(#[source] std::io::Error),
    #[error("protobuf {at} at offset {offset}: {reason}")]
    Protobuf {
        at: &'static str,
        offset: u64,
        reason: String,
    },
    #[error("empty key in DBI {dbi:?} (LMDB keys cannot be empty)")]
    EmptyKey { dbi: String },
    #[error("key of {len} bytes in DBI {dbi:?} exceeds LMDB's limit of {MAX_KEY_SIZE} bytes")]
    KeyTooLong { dbi: String, len: usize },
    /// More decompressed bytes than allowed (a gzip bomb, or a limit set too low).
    #[error("decompresses to more than {limit} bytes (snapshot_max_uncompressed_size)")]
    TooLarge { limit: u64 },
}

/// A version or transform this reader cannot merge (format.md §1.5).
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct VersionError(pub String);

/// Everything of a snapshot except its entries.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SnapshotIndex {
    pub format_version: u32,
    pub compat_version: u32,
    pub meta: Meta,
    /// DBI messages in file order.
    pub dbis: Vec<DbiIndexEntry>,
    /// Size of the protobuf after decompression.
    pub uncompressed_size: u64,
}

#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct DbiIndexEntry {
    pub info: DbiInfo,
    pub entries: u64,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Event {
    Format(u32),
    Compat(u32),
    Meta,
    DbiStart,
    DbiName,
    DbiFlags(u64),
    DbiTransform,
    Kv,
    End,
}

#[derive(Clone, Debug, Default)]
struct KvPos {
    key: Range<usize>,
    value: Range<usize>,
    timestamp_nano: u64,
    flags: u32,
}

/// The compressed input, remembering whether it failed: flate2 passes the source's errors
/// through unchanged, so without this a disk error would look like a corrupt gzip stream.
pub struct Source<R> {
    inner: R,
    failed: bool,
}

impl<R> Source<R> {
    pub fn new(inner: R) -> Self {
        Source {
            inner,
            failed: false,
        }
    }

    /// Whether a read of the inner source failed.
    pub fn failed(&self) -> bool {
        self.failed
    }
}

impl<R: Read> Read for Source<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let r = self.inner.read(buf);
        if r.is_err() {
            self.failed = true;
        }
        r
    }
}

/// Decompressed snapshot bytes as the decoder reads them, telling a failure of the compressed
/// source (a read error) from corrupt data. [`InPlace`] inflates on the reading thread;
/// `pipeline::Inflater` on a thread of its own. A generic rather than a trait object: the
/// decoder reads a few bytes at a time, and a virtual call per read would show.
pub trait Inflate: BufRead {
    /// Whether the compressed source failed (a read error, not corrupt data).
    fn source_failed(&self) -> bool;
}

/// Inflation on the reading thread. MultiGzDecoder, never GzDecoder: the latter stops silently
/// after the first member, and Go's reader (like ours) decodes concatenated members as one
/// stream. It also rejects trailing bytes that are not a gzip member (< 10 bytes: unexpected
/// EOF, otherwise an invalid header), as Go does, and checks CRC32 and ISIZE per member.
pub struct InPlace<R: Read>(BufReader<MultiGzDecoder<Source<R>>>);

impl<R: Read> InPlace<R> {
    pub fn new(compressed: R) -> Self {
        InPlace(BufReader::with_capacity(
            256 * 1024,
            MultiGzDecoder::new(Source::new(compressed)),
        ))
    }
}

impl<R: Read> Read for InPlace<R> {
    fn read(&mut self, out: &mut [u8]) -> std::io::Result<usize> {
        self.0.read(out)
    }
}

impl<R: Read> BufRead for InPlace<R> {
    fn fill_buf(&mut self) -> std::io::Result<&[u8]> {
        self.0.fill_buf()
    }

    fn consume(&mut self, n: usize) {
        self.0.consume(n)
    }
}

impl<R: Read> Inflate for InPlace<R> {
    fn source_failed(&self) -> bool {
        self.0.get_ref().get_ref().failed
    }
}

/// Walks the decompressed protobuf as a sequence of events; byte payloads of the last event
/// live in `buf`.
struct Decoder<I: Inflate> {
    r: I,
    pos: u64,
    /// Bytes left in the DBI message being read, if inside one.
    dbi_left: Option<u64>,
    buf: Vec<u8>,
    kv: KvPos,
    /// Decompressed bytes allowed.
    limit: u64,
}

fn pb_err(at: &'static str, offset: u64, reason: impl Into<String>) -> DecodeError {
    DecodeError::Protobuf {
        at,
        offset,
        reason: reason.into(),
    }
}

impl<I: Inflate> Decoder<I> {
    fn with_input(r: I) -> Self {
        Decoder {
            r,
            pos: 0,
            dbi_left: None,
            buf: Vec::new(),
            kv: KvPos::default(),
            limit: u64::MAX,
        }
    }

    /// Classifies an I/O error of the decompressing reader.
    fn io_err(&self, e: std::io::Error) -> DecodeError {
        if self.r.source_failed() {
            DecodeError::Read(e)
        } else {
            DecodeError::Gzip(e)
        }
    }

    /// A varint, or `None` at a clean end of input before its first byte.
    fn varint(&mut self, at: &'static str) -> Result<Option<u64>, DecodeError> {
        let start = self.pos;
        let mut v: u64 = 0;
        for shift in (0..70).step_by(7) {
            let b = match self.r.fill_buf() {
                Ok(buf) => buf.first().copied(),
                Err(e) => return Err(self.io_err(e)),
            };
            let b = match b {
                Some(b) => b,
                None if shift == 0 => return Ok(None),
                None => return Err(pb_err(at, start, "truncated varint")),
            };
            self.r.consume(1);
            self.pos += 1;
            if shift == 63 && b > 1 {
                return Err(pb_err(at, start, "varint overflows 64 bits"));
            }
            v |= u64::from(b & 0x7f) << shift;
            if b < 0x80 {
                return Ok(Some(v));
            }
        }
        Err(pb_err(at, start, "varint longer than 10 bytes"))
    }

    fn need_varint(&mut self, at: &'static str) -> Result<u64, DecodeError> {
        let offset = self.pos;
        self.varint(at)?
            .ok_or_else(|| pb_err(at, offset, "unexpected end of data"))
    }

    /// Copies exactly `n` bytes of the stream to `out`, failing when the stream ends early.
    fn copy_exact(
        &mut self,
        n: u64,
        at: &'static str,
        out: &mut impl Write,
    ) -> Result<(), DecodeError> {
        let offset = self.pos;
        let got = match std::io::copy(&mut (&mut self.r).take(n), out) {
            Ok(got) => got,
            Err(e) => return Err(self.io_err(e)),
        };
        self.pos += got;
        if got != n {
            return Err(pb_err(
                at,
                offset,
                format!("{n}-byte field truncated after {got} bytes"),
            ));
        }
        Ok(())
    }

    /// Reads `n` bytes into `buf`, growing it only as data actually arrives (a hostile length
    /// claims memory only as far as the data really goes).
    fn read_into_buf(&mut self, n: u64, at: &'static str) -> Result<(), DecodeError> {
        let mut buf = std::mem::take(&mut self.buf);
        buf.clear();
        let r = self.copy_exact(n, at, &mut buf);
        self.buf = buf;
        r
    }

    fn skip(&mut self, n: u64, at: &'static str) -> Result<(), DecodeError> {
        self.copy_exact(n, at, &mut std::io::sink())
    }

    fn skip_field(&mut self, wire_type: u8, at: &'static str) -> Result<(), DecodeError> {
        match wire_type {
            WT_VARINT => self.need_varint(at).map(|_| ()),
            WT_FIXED64 => self.skip(8, at),
            WT_LEN => {
                let n = self.need_varint(at)?;
                self.skip(n, at)
            }
            5 => self.skip(4, at),
            other => Err(pb_err(
                at,
                self.pos,
                format!("unsupported wire type {other}"),
            )),
        }
    }

    fn len_capped(
        &mut self,
        cap: u64,
        what: &'static str,
        at: &'static str,
    ) -> Result<u64, DecodeError> {
        let offset = self.pos;
        let n = self.need_varint(at)?;
        if n > cap {
            return Err(pb_err(
                at,
                offset,
                format!("{what} of {n} bytes exceeds the limit of {cap}"),
            ));
        }
        Ok(n)
    }

    fn next(&mut self) -> Result<Event, DecodeError> {
        loop {
            // Entries are capped in size, so checking between events bounds the overrun.
            if self.pos > self.limit {
                return Err(DecodeError::TooLarge { limit: self.limit });
            }
            match self.dbi_left {
                Some(0) => self.dbi_left = None,
                Some(left) => {
                    let start = self.pos;
                    let ev = self.dbi_field()?;
                    let used = self.pos - start;
                    if used > left {
                        return Err(pb_err(
                            "DBI",
                            start,
                            format!(
                                "field of {used} bytes overruns the DBI message ({left} bytes left)"
                            ),
                        ));
                    }
                    self.dbi_left = Some(left - used);
                    if let Some(ev) = ev {
                        return Ok(ev);
                    }
                }
                None => {
                    let at = "Snapshot";
                    let offset = self.pos;
                    let Some(tag) = self.varint(at)? else {
                        return Ok(Event::End);
                    };
                    let (field, wt) = (tag >> 3, (tag & 7) as u8);
                    match (field, wt) {
                        (1, WT_VARINT) => return Ok(Event::Format(self.need_varint(at)? as u32)),
                        (4, WT_VARINT) => return Ok(Event::Compat(self.need_varint(at)? as u32)),
                        (2, WT_LEN) => {
                            let n = self.len_capped(MAX_META_SIZE, "meta", at)?;
                            self.read_into_buf(n, at)?;
                            return Ok(Event::Meta);
                        }
                        (3, WT_LEN) => {
                            self.dbi_left = Some(self.need_varint(at)?);
                            return Ok(Event::DbiStart);
                        }
                        (1..=4, _) => {
                            return Err(pb_err(
                                at,
                                offset,
                                format!("field {field} has wrong wire type {wt}"),
                            ));
                        }
                        _ => self.skip_field(wt, at)?,
                    }
                }
            }
        }
    }

    /// One field of a DBI message; `None` for a skipped unknown field.
    fn dbi_field(&mut self) -> Result<Option<Event>, DecodeError> {
        let at = "DBI";
        let offset = self.pos;
        let tag = self.need_varint(at)?;
        let (field, wt) = (tag >> 3, (tag & 7) as u8);
        Ok(Some(match (field, wt) {
            (1, WT_LEN) => {
                let n = self.len_capped(MAX_NAME_SIZE, "DBI name", at)?;
                self.read_into_buf(n, at)?;
                Event::DbiName
            }
            (2, WT_LEN) => {
                let n = self.len_capped(MAX_KV_SIZE, "entry", at)?;
                let kv_offset = self.pos;
                self.read_into_buf(n, "KV")?;
                self.kv = parse_kv(&self.buf).map_err(|reason| pb_err("KV", kv_offset, reason))?;
                Event::Kv
            }
            (3, WT_VARINT) => Event::DbiFlags(self.need_varint(at)?),
            (4, WT_LEN) => {
                let n = self.len_capped(MAX_NAME_SIZE, "transform", at)?;
                self.read_into_buf(n, at)?;
                Event::DbiTransform
            }
            (1..=4, _) => {
                return Err(pb_err(
                    at,
                    offset,
                    format!("field {field} has wrong wire type {wt}"),
                ));
            }
            _ => {
                self.skip_field(wt, at)?;
                return Ok(None);
            }
        }))
    }

    fn kv(&self) -> KvRef<'_> {
        KvRef {
            key: &self.buf[self.kv.key.clone()],
            value: &self.buf[self.kv.value.clone()],
            timestamp_nano: self.kv.timestamp_nano,
            flags: self.kv.flags,
        }
    }
}

fn range_of(outer: &[u8], inner: &[u8]) -> Range<usize> {
    let start = inner.as_ptr() as usize - outer.as_ptr() as usize;
    start..start + inner.len()
}

fn parse_kv(b: &[u8]) -> Result<KvPos, String> {
    if b.is_empty() {
        // Go's reader fails on these too; writers never produce them.
        return Err("empty KV message".into());
    }
    let mut r = SliceReader::new(b);
    let mut kv = KvPos::default();
    while !r.done() {
        let (field, wt) = r.tag()?;
        match (field, wt) {
            (1, WT_LEN) => kv.key = range_of(b, r.bytes()?),
            (2, WT_LEN) => kv.value = range_of(b, r.bytes()?),
            (3, WT_FIXED64) => kv.timestamp_nano = r.fixed64()?,
            (4, WT_VARINT) => kv.flags = r.varint()? as u32,
            (1..=4, _) => return Err(format!("field {field} has wrong wire type {wt}")),
            _ => r.skip(wt)?,
        }
    }
    Ok(kv)
}

/// Decodes a Meta message into `m`; fields present override earlier values (a repeated `meta`
/// field merges, as protobuf requires).
fn parse_meta(b: &[u8], m: &mut Meta) -> Result<(), String> {
    let mut r = SliceReader::new(b);
    while !r.done() {
        let (field, wt) = r.tag()?;
        match (field, wt) {
            (1, WT_LEN) => m.generation_id = r.bytes()?.to_vec(),
            (2, WT_LEN) => m.instance_id = r.bytes()?.to_vec(),
            (3, WT_LEN) => m.hostname = r.bytes()?.to_vec(),
            (7, WT_LEN) => m.database_name = r.bytes()?.to_vec(),
            (4, WT_VARINT) => m.lmdb_txn_id = r.varint()? as i64,
            (5, WT_FIXED64) => m.timestamp_nano = r.fixed64()?,
            (8, WT_VARINT) => m.from_lmdb_txn_id = r.varint()? as i64,
            (1..=5 | 7 | 8, _) => {
                return Err(format!("meta field {field} has wrong wire type {wt}"));
            }
            _ => r.skip(wt)?,
        }
    }
    Ok(())
}

fn dbi_label(d: &DbiIndexEntry, i: usize) -> String {
    if d.info.name.is_empty() {
        format!("#{i}")
    } else {
        String::from_utf8_lossy(&d.info.name).into_owned()
    }
}

/// First pass: decompresses and validates the whole snapshot, keeping only its index.
pub fn scan<R: Read>(compressed: R) -> Result<SnapshotIndex, DecodeError> {
    scan_limited(compressed, u64::MAX)
}

/// [`scan`], refusing snapshots that decompress to more than `limit` bytes.
pub fn scan_limited<R: Read>(compressed: R, limit: u64) -> Result<SnapshotIndex, DecodeError> {
    let mut r = ScanningReader::new(compressed, limit);
    while r.next_entry()?.is_some() {}
    Ok(r.finish())
}

/// One entry of a [`ScanningReader`].
pub struct ScannedEntry<'a> {
    /// Index of the DBI message.
    pub dbi: usize,
    /// The DBI's name as far as read (writers put it before the entries; empty if not).
    pub dbi_name: &'a [u8],
    /// The snapshot's format version as far as read (writers put it first).
    pub format_version: u32,
    pub kv: KvRef<'a>,
}

/// The validating pass as a stream of entries: every check of [`scan_limited`] is made as the
/// entries go by, so a consumer can look at them (compare them with an LMDB, say) in the same
/// pass. Only once [`next_entry`](Self::next_entry) has returned `None` is the snapshot known
/// to be valid and the index complete.
pub struct ScanningReader<I: Inflate> {
    d: Decoder<I>,
    idx: SnapshotIndex,
}

impl<R: Read> ScanningReader<InPlace<R>> {
    pub fn new(compressed: R, limit: u64) -> Self {
        Self::from_input(InPlace::new(compressed), limit)
    }
}

impl<I: Inflate> ScanningReader<I> {
    /// A reader of bytes inflated elsewhere (`pipeline::scanning_reader`: on another thread).
    pub fn from_input(input: I, limit: u64) -> Self {
        let mut d = Decoder::with_input(input);
        d.limit = limit;
        ScanningReader {
            d,
            idx: SnapshotIndex::default(),
        }
    }

    /// The next entry, with what is known of its snapshot so far.
    pub fn next_entry(&mut self) -> Result<Option<ScannedEntry<'_>>, DecodeError> {
        let d = &mut self.d;
        let idx = &mut self.idx;
        loop {
            let ev = d.next()?;
            let last = idx.dbis.len().wrapping_sub(1);
            match ev {
                Event::Format(v) => idx.format_version = v,
                Event::Compat(v) => idx.compat_version = v,
                Event::Meta => {
                    let offset = d.pos;
                    parse_meta(&d.buf, &mut idx.meta).map_err(|r| pb_err("Meta", offset, r))?;
                }
                Event::DbiStart => idx.dbis.push(DbiIndexEntry::default()),
                Event::DbiName => idx.dbis[last].info.name = d.buf.clone(),
                Event::DbiFlags(f) => idx.dbis[last].info.flags = f,
                Event::DbiTransform => idx.dbis[last].info.transform = d.buf.clone(),
                Event::Kv => {
                    let kv = d.kv();
                    let entry = &mut idx.dbis[last];
                    if kv.key.is_empty() {
                        return Err(DecodeError::EmptyKey {
                            dbi: dbi_label(entry, last),
                        });
                    }
                    if kv.key.len() > MAX_KEY_SIZE {
                        return Err(DecodeError::KeyTooLong {
                            dbi: dbi_label(entry, last),
                            len: kv.key.len(),
                        });
                    }
                    entry.entries += 1;
                    return Ok(Some(ScannedEntry {
                        dbi: last,
                        dbi_name: &entry.info.name,
                        format_version: idx.format_version,
                        kv,
                    }));
                }
                Event::End => {
                    idx.uncompressed_size = d.pos;
                    return Ok(None);
                }
            }
        }
    }

    /// The index; complete once `next_entry` has returned `None`.
    pub fn finish(self) -> SnapshotIndex {
        self.idx
    }
}

/// Second pass: the entries in file order, each with the index of its DBI message.
pub struct EntryReader<I: Inflate> {
    d: Decoder<I>,
    dbi: Option<usize>,
}

impl<R: Read> EntryReader<InPlace<R>> {
    pub fn new(compressed: R) -> Self {
        Self::from_input(InPlace::new(compressed))
    }
}

impl<I: Inflate> EntryReader<I> {
    /// A reader of bytes inflated elsewhere (`pipeline::ThreadedEntries`: on another thread).
    pub fn from_input(input: I) -> Self {
        EntryReader {
            d: Decoder::with_input(input),
            dbi: None,
        }
    }

    /// The next entry, borrowed until the next call; `None` at the end.
    pub fn next_entry(&mut self) -> Result<Option<(usize, KvRef<'_>)>, DecodeError> {
        loop {
            match self.d.next()? {
                Event::DbiStart => self.dbi = Some(self.dbi.map_or(0, |i| i + 1)),
                Event::Kv => {
                    let i = self.dbi.unwrap_or(0);
                    return Ok(Some((i, self.d.kv())));
                }
                Event::End => return Ok(None),
                _ => {}
            }
        }
    }
}

/// A stream of snapshot entries, each with the index of its DBI message.
pub trait EntrySource {
    /// The next entry, borrowed until the next call; `None` at the end.
    fn next_entry(&mut self) -> Result<Option<(usize, KvRef<'_>)>, DecodeError>;
}

impl<I: Inflate> EntrySource for EntryReader<I> {
    fn next_entry(&mut self) -> Result<Option<(usize, KvRef<'_>)>, DecodeError> {
        EntryReader::next_entry(self)
    }
}

/// The version and transform checks of format.md §1.5, made per DBI before it is merged.
pub fn validate_dbi(
    index: &SnapshotIndex,
    dbi: &DbiInfo,
    native: bool,
) -> Result<(), VersionError> {
    let (f, c) = (index.format_version, index.compat_version);
    if f == 0 {
        return Err(VersionError(
            "no snapshot formatVersion provided, or 0".into(),
        ));
    }
    if c > READER_VERSION {
        return Err(VersionError(format!(
            "snapshot compatVersion too new for this version ({c} > {READER_VERSION}, formatVersion {f})"
        )));
    }
    let t = dbi.transform.as_slice();
    if !t.is_empty() && t != TRANSFORM_DUPSORT_HACK {
        return Err(VersionError(format!(
            "transform {:?} not supported",
            String::from_utf8_lossy(t)
        )));
    }
    if native && !t.is_empty() {
        return Err(VersionError(format!(
            "transform {:?} not supported with schema_tracks_changes (native mode)",
            String::from_utf8_lossy(t)
        )));
    }
    if f >= 3 {
        let dupsort = dbi.flags & u64::from(MDB_DUPSORT) != 0;
        if dupsort != (t == TRANSFORM_DUPSORT_HACK) {
            return Err(VersionError(format!(
                "DBI flags and transform do not match (MDB_DUPSORT {}, transform {:?})",
                if dupsort { "set" } else { "not set" },
                String::from_utf8_lossy(t)
            )));
        }
    }
    Ok(())
}

/// Decodes a whole snapshot into memory. For tests and tools on small files only.
pub fn decode_all<R: Read>(
    compressed: R,
) -> Result<(SnapshotIndex, Vec<(usize, OwnedKv)>), DecodeError> {
    let mut bytes = Vec::new();
    let mut r = compressed;
    r.read_to_end(&mut bytes).map_err(DecodeError::Read)?;
    let index = scan(&bytes[..])?;
    let mut entries = Vec::new();
    let mut er = EntryReader::new(&bytes[..]);
    while let Some((i, kv)) = er.next_entry()? {
        entries.push((i, kv.into()));
    }
    Ok((index, entries))
}

#[cfg(test)]
pub(crate) mod tests;
