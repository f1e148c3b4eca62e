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
use crate::lmdb::{MAX_KEY_SIZE, MDB_DUPSORT};

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
struct Source<R> {
    inner: R,
    failed: bool,
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

/// Bytes of one chunk of decompressed data handed over by an [`Inflater`] thread.
const INFLATE_CHUNK: usize = 1 << 20;
/// Chunks in flight between the inflating thread and the decoder.
const INFLATE_CHUNKS_IN_FLIGHT: usize = 4;

enum Inflated {
    Data(Vec<u8>),
    Failed {
        error: std::io::Error,
        source_failed: bool,
    },
}

/// Decompressed bytes made by a thread of their own: gzip inflation is the larger half of
/// decoding a snapshot, so handing it to another core nearly halves a pass. Chunks are recycled;
/// a few MiB are in flight at most. Dropping it stops the thread at its next chunk.
struct Inflater {
    rx: std::sync::mpsc::Receiver<Inflated>,
    recycle: std::sync::mpsc::SyncSender<Vec<u8>>,
    chunk: Vec<u8>,
    at: usize,
    source_failed: bool,
    /// Set once the thread is done (end of data or an error, which is returned again).
    end: Option<Option<std::io::Error>>,
}

impl Inflater {
    fn spawn<'scope, R: Read + Send + 'scope>(
        scope: &'scope std::thread::Scope<'scope, '_>,
        compressed: R,
    ) -> Inflater {
        let (tx, rx) = std::sync::mpsc::sync_channel(INFLATE_CHUNKS_IN_FLIGHT);
        let (recycle, recycled) =
            std::sync::mpsc::sync_channel::<Vec<u8>>(INFLATE_CHUNKS_IN_FLIGHT + 1);
        scope.spawn(move || {
            let mut gz = MultiGzDecoder::new(Source {
                inner: compressed,
                failed: false,
            });
            loop {
                let mut chunk = recycled.try_recv().unwrap_or_default();
                chunk.resize(INFLATE_CHUNK, 0);
                let mut filled = 0;
                let mut failure = None;
                while filled < chunk.len() {
                    match gz.read(&mut chunk[filled..]) {
                        Ok(0) => break,
                        Ok(n) => filled += n,
                        Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                        Err(error) => {
                            failure = Some(error);
                            break;
                        }
                    }
                }
                chunk.truncate(filled);
                let last = filled == 0 || failure.is_some();
                if filled > 0 && tx.send(Inflated::Data(chunk)).is_err() {
                    return;
                }
                if let Some(error) = failure {
                    let source_failed = gz.get_ref().failed;
                    let _ = tx.send(Inflated::Failed {
                        error,
                        source_failed,
                    });
                }
                if last {
                    return;
                }
            }
        });
        Inflater {
            rx,
            recycle,
            chunk: Vec::new(),
            at: 0,
            source_failed: false,
            end: None,
        }
    }
}

impl Read for Inflater {
    fn read(&mut self, out: &mut [u8]) -> std::io::Result<usize> {
        let n = {
            let buf = self.fill_buf()?;
            let n = buf.len().min(out.len());
            out[..n].copy_from_slice(&buf[..n]);
            n
        };
        self.consume(n);
        Ok(n)
    }
}

impl BufRead for Inflater {
    fn fill_buf(&mut self) -> std::io::Result<&[u8]> {
        while self.at == self.chunk.len() && self.end.is_none() {
            match self.rx.recv() {
                Ok(Inflated::Data(chunk)) => {
                    let old = std::mem::replace(&mut self.chunk, chunk);
                    let _ = self.recycle.try_send(old);
                    self.at = 0;
                }
                Ok(Inflated::Failed {
                    error,
                    source_failed,
                }) => {
                    self.source_failed = source_failed;
                    self.end = Some(Some(error));
                }
                // The thread ended after the last of the data.
                Err(_) => self.end = Some(None),
            }
        }
        if self.at == self.chunk.len()
            && let Some(Some(e)) = &mut self.end
        {
            // The error itself the first time; errors are not Clone, so a repeated read gets
            // one of the same kind and text.
            let again = std::io::Error::new(e.kind(), e.to_string());
            return Err(std::mem::replace(e, again));
        }
        Ok(&self.chunk[self.at..])
    }

    fn consume(&mut self, n: usize) {
        self.at = (self.at + n).min(self.chunk.len());
    }
}

/// Where a [`Decoder`] gets decompressed bytes: inflated in place, or by an [`Inflater`].
// One per decoder, never in a collection; boxing would add a pointer chase to every byte read.
#[allow(clippy::large_enum_variant)]
enum Input<R: Read> {
    Here(BufReader<MultiGzDecoder<Source<R>>>),
    Thread(Inflater),
}

impl<R: Read> Input<R> {
    /// Whether the compressed source failed (a read error, not corrupt data).
    fn source_failed(&self) -> bool {
        match self {
            Input::Here(r) => r.get_ref().get_ref().failed,
            Input::Thread(t) => t.source_failed,
        }
    }
}

impl<R: Read> Read for Input<R> {
    fn read(&mut self, out: &mut [u8]) -> std::io::Result<usize> {
        match self {
            Input::Here(r) => r.read(out),
            Input::Thread(t) => t.read(out),
        }
    }
}

impl<R: Read> BufRead for Input<R> {
    fn fill_buf(&mut self) -> std::io::Result<&[u8]> {
        match self {
            Input::Here(r) => r.fill_buf(),
            Input::Thread(t) => t.fill_buf(),
        }
    }

    fn consume(&mut self, n: usize) {
        match self {
            Input::Here(r) => r.consume(n),
            Input::Thread(t) => t.consume(n),
        }
    }
}

/// Walks the decompressed protobuf as a sequence of events; byte payloads of the last event
/// live in `buf`.
struct Decoder<R: Read> {
    r: Input<R>,
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

impl<R: Read> Decoder<R> {
    fn new(compressed: R) -> Self {
        // MultiGzDecoder, never GzDecoder: the latter stops silently after the first member,
        // and Go's reader (like ours) decodes concatenated members as one stream. It also
        // rejects trailing bytes that are not a gzip member (< 10 bytes: unexpected EOF,
        // otherwise an invalid header), as Go does, and checks CRC32 and ISIZE per member.
        Self::with_input(Input::Here(BufReader::with_capacity(
            256 * 1024,
            MultiGzDecoder::new(Source {
                inner: compressed,
                failed: false,
            }),
        )))
    }

    /// Inflating on a thread of the scope (the same MultiGzDecoder, see [`Decoder::new`]).
    fn threaded<'scope>(scope: &'scope std::thread::Scope<'scope, '_>, compressed: R) -> Self
    where
        R: Send + 'scope,
    {
        Self::with_input(Input::Thread(Inflater::spawn(scope, compressed)))
    }

    fn with_input(r: Input<R>) -> Self {
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
pub struct ScanningReader<R: Read> {
    d: Decoder<R>,
    idx: SnapshotIndex,
}

impl<R: Read> ScanningReader<R> {
    pub fn new(compressed: R, limit: u64) -> Self {
        Self::with_decoder(Decoder::new(compressed), limit)
    }

    /// The same, with decompression on a thread of `scope`, beside the caller's work on the
    /// entries.
    pub fn threaded<'scope>(
        scope: &'scope std::thread::Scope<'scope, '_>,
        compressed: R,
        limit: u64,
    ) -> Self
    where
        R: Send + 'scope,
    {
        Self::with_decoder(Decoder::threaded(scope, compressed), limit)
    }

    fn with_decoder(mut d: Decoder<R>, limit: u64) -> Self {
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
pub struct EntryReader<R: Read> {
    d: Decoder<R>,
    dbi: Option<usize>,
}

impl<R: Read> EntryReader<R> {
    pub fn new(compressed: R) -> Self {
        EntryReader {
            d: Decoder::new(compressed),
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

impl<R: Read> EntrySource for EntryReader<R> {
    fn next_entry(&mut self) -> Result<Option<(usize, KvRef<'_>)>, DecodeError> {
        EntryReader::next_entry(self)
    }
}

/// Entries per batch handed from the decoding thread to the consumer.
const BATCH_ENTRIES: usize = 4096;
/// Bytes of keys and values after which a batch is handed over (large values: few entries).
const BATCH_BYTES: usize = 1 << 20;
/// Batches in flight: bounds the memory of [`ThreadedEntries`] to a few MiB.
const BATCHES_IN_FLIGHT: usize = 4;

/// Decoded entries, copied out of the decoder's buffer: (DBI, key length, value length,
/// timestamp, flags) with keys and values back to back in `data`.
#[derive(Default)]
struct Batch {
    data: Vec<u8>,
    items: Vec<(usize, u32, u32, u64, u32)>,
}

/// An [`EntryReader`] running on a thread of its own (parsing, with decompression on another),
/// so that the consumer's LMDB work overlaps with it. Batches are recycled between the two;
/// memory stays bounded by [`BATCHES_IN_FLIGHT`] batches. Create it inside a
/// [`std::thread::scope`].
pub struct ThreadedEntries {
    rx: std::sync::mpsc::Receiver<Result<Batch, DecodeError>>,
    recycle: std::sync::mpsc::SyncSender<Batch>,
    batch: Batch,
    next: usize,
    offset: usize,
    done: bool,
}

impl ThreadedEntries {
    pub fn spawn<'scope, R: Read + Send + 'scope>(
        scope: &'scope std::thread::Scope<'scope, '_>,
        compressed: R,
    ) -> ThreadedEntries {
        let (tx, rx) = std::sync::mpsc::sync_channel(BATCHES_IN_FLIGHT);
        let (recycle, recycled) = std::sync::mpsc::sync_channel::<Batch>(BATCHES_IN_FLIGHT + 2);
        scope.spawn(move || {
            // Inflating on a third thread: parsing, and the consumer's LMDB work, keep up.
            let mut reader = EntryReader {
                d: Decoder::threaded(scope, compressed),
                dbi: None,
            };
            loop {
                let mut b = recycled.try_recv().unwrap_or_default();
                b.data.clear();
                b.items.clear();
                let mut end = false;
                while b.items.len() < BATCH_ENTRIES && b.data.len() < BATCH_BYTES {
                    match reader.next_entry() {
                        Ok(Some((i, kv))) => {
                            b.data.extend_from_slice(kv.key);
                            b.data.extend_from_slice(kv.value);
                            b.items.push((
                                i,
                                kv.key.len() as u32,
                                kv.value.len() as u32,
                                kv.timestamp_nano,
                                kv.flags,
                            ));
                        }
                        Ok(None) => {
                            end = true;
                            break;
                        }
                        Err(e) => {
                            // The consumer sees the entries before the error, then the error.
                            if !b.items.is_empty() && tx.send(Ok(b)).is_err() {
                                return;
                            }
                            let _ = tx.send(Err(e));
                            return;
                        }
                    }
                }
                // An empty batch marks the end.
                let empty = b.items.is_empty();
                if tx.send(Ok(b)).is_err() {
                    return; // the consumer gave up
                }
                if end && !empty && tx.send(Ok(Batch::default())).is_err() {
                    return;
                }
                if end {
                    return;
                }
            }
        });
        ThreadedEntries {
            rx,
            recycle,
            batch: Batch::default(),
            next: 0,
            offset: 0,
            done: false,
        }
    }
}

impl EntrySource for ThreadedEntries {
    fn next_entry(&mut self) -> Result<Option<(usize, KvRef<'_>)>, DecodeError> {
        if self.next == self.batch.items.len() {
            if self.done {
                return Ok(None);
            }
            let fresh = match self.rx.recv() {
                Ok(r) => r?,
                // The decoder thread ended without an end marker: it panicked.
                Err(_) => {
                    return Err(DecodeError::Read(std::io::Error::other(
                        "snapshot decoder thread ended unexpectedly",
                    )));
                }
            };
            let old = std::mem::replace(&mut self.batch, fresh);
            let _ = self.recycle.try_send(old);
            self.next = 0;
            self.offset = 0;
            if self.batch.items.is_empty() {
                self.done = true;
                return Ok(None);
            }
        }
        let (i, kl, vl, ts, flags) = self.batch.items[self.next];
        self.next += 1;
        let (kl, vl) = (kl as usize, vl as usize);
        let start = self.offset;
        self.offset += kl + vl;
        Ok(Some((
            i,
            KvRef {
                key: &self.batch.data[start..start + kl],
                value: &self.batch.data[start + kl..start + kl + vl],
                timestamp_nano: ts,
                flags,
            },
        )))
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
mod tests {
    use std::io::Write;

    use super::super::encode::{GzipWriter, SnapshotWriter, kv_field_len};
    use super::*;

    /// The threaded reader yields exactly what the plain one does, across batch boundaries
    /// (by count and by bytes), and passes on a decode error after the entries before it.
    #[test]
    fn threaded_entries_match_the_plain_reader() {
        use crate::snapshot::encode::{GzipWriter, SnapshotWriter, kv_field_len};
        let big = vec![7u8; 300_000];
        let keys: Vec<[u8; 4]> = (0..10_000u32).map(|i| i.to_be_bytes()).collect();
        let kvs: Vec<KvRef> = keys
            .iter()
            .enumerate()
            .map(|(i, k)| KvRef {
                key: k,
                value: if i % 1000 == 0 { &big } else { b"small" },
                timestamp_nano: i as u64,
                flags: (i % 2) as u32,
            })
            .collect();
        let mut w = SnapshotWriter::new(Vec::new(), &Meta::default()).unwrap();
        for part in kvs.chunks(6_000) {
            let len = part.iter().map(kv_field_len).sum();
            w.begin_dbi(
                &DbiInfo {
                    name: b"d".to_vec(),
                    ..Default::default()
                },
                len,
            )
            .unwrap();
            for kv in part {
                w.write_kv(kv).unwrap();
            }
            w.end_dbi().unwrap();
        }
        let mut gz = GzipWriter::new(Vec::new());
        std::io::Write::write_all(&mut gz, &w.finish().unwrap()).unwrap();
        let packed = gz.finish().unwrap();

        let collect = |src: &mut dyn EntrySource| {
            let mut out = Vec::new();
            loop {
                match src.next_entry() {
                    Ok(Some((i, kv))) => out.push((i, OwnedKv::from(kv))),
                    Ok(None) => return (out, None),
                    Err(e) => return (out, Some(e.to_string())),
                }
            }
        };
        let plain = collect(&mut EntryReader::new(&packed[..]));
        assert_eq!(plain.0.len(), 10_000);
        assert_eq!(plain.0[6_000].0, 1);
        let threaded = std::thread::scope(|s| collect(&mut ThreadedEntries::spawn(s, &packed[..])));
        assert_eq!(threaded, plain);

        let cut = &packed[..packed.len() / 2];
        let plain = collect(&mut EntryReader::new(cut));
        let threaded = std::thread::scope(|s| collect(&mut ThreadedEntries::spawn(s, cut)));
        assert!(plain.1.is_some());
        assert_eq!(threaded, plain);
    }

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

    fn gz(b: &[u8]) -> Vec<u8> {
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

    fn build(dbis: &[(&str, u64, Vec<OwnedKv>)]) -> Vec<u8> {
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

    fn kv(k: &str, v: &str, ts: u64, flags: u32) -> OwnedKv {
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

    /// Inflating on a thread changes nothing about the outcome: the same index for good input
    /// (one crossing many chunks too), the same error (kind and text) for bad input, and a
    /// failing source is still a read error, not a gzip one.
    #[test]
    fn threaded_inflation_matches_inline() {
        fn threaded<R: Read + Send>(r: R, limit: u64) -> Result<SnapshotIndex, DecodeError> {
            std::thread::scope(|scope| {
                let mut s = ScanningReader::threaded(scope, r, limit);
                while s.next_entry()?.is_some() {}
                Ok(s.finish())
            })
        }
        let show = |r: &Result<SnapshotIndex, DecodeError>| match r {
            Ok(i) => format!("{i:?}"),
            Err(e) => format!("{e:?}"),
        };
        let big = "v".repeat(200_000);
        let many: Vec<_> = (0..40)
            .map(|i| kv(&format!("k{i:03}"), &big, i, 0))
            .collect();
        let large = build(&[("a", 0, many)]);
        let good = build(&[("a", 0, vec![kv("k", "v", 1, 0)])]);
        let mut bad_crc = good.clone();
        let n = bad_crc.len();
        bad_crc[n - 8] ^= 1;
        let mut inputs = vec![large.clone(), large[..large.len() / 2].to_vec(), bad_crc];
        inputs.extend((0..good.len()).map(|cut| good[..cut].to_vec()));
        inputs.push(gz(&[0x1a, 0x02, 0x12, 0x02, 0x0a, 0x00]));
        for bytes in &inputs {
            let inline = scan(&bytes[..]);
            assert_eq!(show(&threaded(&bytes[..], u64::MAX)), show(&inline));
        }
        assert!(threaded(&large[..], u64::MAX).unwrap().uncompressed_size > 4 << 20);
        assert!(matches!(
            threaded(&large[..], 3 << 20),
            Err(DecodeError::TooLarge { .. })
        ));
        struct Failing<'a>(&'a [u8]);
        impl Read for Failing<'_> {
            fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
                if self.0.is_empty() {
                    return Err(std::io::Error::other("disk on fire"));
                }
                self.0.read(buf)
            }
        }
        let e = threaded(Failing(&large[..large.len() / 3]), u64::MAX).unwrap_err();
        assert!(matches!(e, DecodeError::Read(_)), "{e:?}");
        assert!(e.to_string().contains("disk on fire"));
    }

    /// A length claiming far more than the data holds fails when the data ends, and the buffer
    /// only grew as far as the data went.
    #[test]
    fn hostile_lengths_do_not_allocate() {
        // DBI of 2^40 bytes holding one entry that claims 200 MiB (under the cap) but has 3.
        let mut p = vec![0x1a, 0x80, 0x80, 0x80, 0x80, 0x80, 0x20];
        p.extend([0x12, 0x80, 0x80, 0x80, 0x64, b'a', b'b', b'c']);
        let bytes = gz(&p);
        let mut d = Decoder::new(&bytes[..]);
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
}
