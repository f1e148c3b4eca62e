//! Gzip inflation of a snapshot on a thread of its own: inflation is the larger half of
//! decoding, so handing it to another core nearly halves a pass. The decoder reads the
//! [`Inflater`] through the codec's [`Inflate`] trait exactly as it reads in-place inflation.

use std::io::{BufRead, Read};

use flate2::read::MultiGzDecoder;

use crate::snapshot::decode::{Inflate, ScanningReader, Source};

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
pub struct Inflater {
    rx: std::sync::mpsc::Receiver<Inflated>,
    recycle: std::sync::mpsc::SyncSender<Vec<u8>>,
    chunk: Vec<u8>,
    at: usize,
    source_failed: bool,
    /// Set once the thread is done (end of data or an error, which is returned again).
    end: Option<Option<std::io::Error>>,
}

impl Inflater {
    pub fn spawn<'scope, R: Read + Send + 'scope>(
        scope: &'scope std::thread::Scope<'scope, '_>,
        compressed: R,
    ) -> Inflater {
        let (tx, rx) = std::sync::mpsc::sync_channel(INFLATE_CHUNKS_IN_FLIGHT);
        let (recycle, recycled) =
            std::sync::mpsc::sync_channel::<Vec<u8>>(INFLATE_CHUNKS_IN_FLIGHT + 1);
        scope.spawn(move || {
            let mut gz = MultiGzDecoder::new(Source::new(compressed));
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
                    let source_failed = gz.get_ref().failed();
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

impl Inflate for Inflater {
    fn source_failed(&self) -> bool {
        self.source_failed
    }
}

/// The validating pass ([`ScanningReader`]) with decompression on a thread of `scope`, beside
/// the caller's work on the entries.
pub fn scanning_reader<'scope, R: Read + Send + 'scope>(
    scope: &'scope std::thread::Scope<'scope, '_>,
    compressed: R,
    limit: u64,
) -> ScanningReader<Inflater> {
    ScanningReader::from_input(Inflater::spawn(scope, compressed), limit)
}
