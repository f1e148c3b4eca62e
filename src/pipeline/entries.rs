//! Snapshot entries decoded on a thread of their own (parsing, with inflation on a third), so
//! that the consumer's LMDB writes overlap with decoding. Entries are copied into recycled
//! batches; memory stays bounded by the batches in flight.

use std::io::Read;

use super::inflate::Inflater;
use crate::snapshot::KvRef;
use crate::snapshot::decode::{DecodeError, EntryReader, EntrySource};

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
            let mut reader = EntryReader::from_input(Inflater::spawn(scope, compressed));
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
