//! Gzip compression of a snapshot on worker threads, beside the caller who keeps reading the
//! LMDB and encoding. Each chunk becomes a gzip member written by the codec's single-member
//! [`GzipWriter`]; only the threading lives here.

use std::io::{self, Write};

use crate::snapshot::encode::GzipWriter;

/// Uncompressed bytes per gzip member of [`ParallelGzip`].
const CHUNK: usize = 2 << 20;

type Compressed = io::Result<Vec<u8>>;

/// Gzip compression on worker threads, beside the caller who keeps reading the LMDB and
/// encoding: the stream is cut into 2 MiB chunks, each compressed into a gzip member of its own
/// (Go's reader, like ours, reads concatenated members as one stream; the cost in size is
/// negligible), and a writer thread puts the members out in order. Memory stays bounded by the
/// few chunks in flight.
pub struct ParallelGzip<W: Write + Send + 'static> {
    buf: Vec<u8>,
    seq: u64,
    jobs: Option<std::sync::mpsc::SyncSender<(u64, Vec<u8>)>>,
    workers: Vec<std::thread::JoinHandle<()>>,
    writer: Option<std::thread::JoinHandle<io::Result<W>>>,
}

impl<W: Write + Send + 'static> ParallelGzip<W> {
    /// `threads` compression workers (at least one).
    pub fn new(out: W, threads: usize) -> io::Result<Self> {
        use std::sync::mpsc::sync_channel;
        let threads = threads.max(1);
        let (jobs, job_rx) = sync_channel::<(u64, Vec<u8>)>(threads);
        let job_rx = std::sync::Arc::new(std::sync::Mutex::new(job_rx));
        let (done_tx, done_rx) = sync_channel::<(u64, Compressed)>(threads * 2);
        let mut workers = Vec::with_capacity(threads);
        for i in 0..threads {
            let (job_rx, done_tx) = (job_rx.clone(), done_tx.clone());
            workers.push(
                std::thread::Builder::new()
                    .name(format!("gzip-{i}"))
                    .spawn(move || {
                        loop {
                            let job = job_rx.lock().unwrap_or_else(|e| e.into_inner()).recv();
                            let Ok((seq, chunk)) = job else { return };
                            let mut gz = GzipWriter::new(Vec::with_capacity(chunk.len() / 3));
                            let member = gz.write_all(&chunk).and_then(|_| gz.finish());
                            if done_tx.send((seq, member)).is_err() {
                                return;
                            }
                        }
                    })?,
            );
        }
        drop(done_tx);
        let writer = std::thread::Builder::new()
            .name("gzip-out".into())
            .spawn(move || {
                let mut out = out;
                let mut next = 0u64;
                let mut waiting = std::collections::BTreeMap::new();
                for (seq, member) in done_rx {
                    waiting.insert(seq, member);
                    while let Some(member) = waiting.remove(&next) {
                        out.write_all(&member?)?;
                        next += 1;
                    }
                }
                if !waiting.is_empty() {
                    return Err(io::Error::other("a compression worker ended early"));
                }
                Ok(out)
            })?;
        Ok(ParallelGzip {
            buf: Vec::with_capacity(CHUNK),
            seq: 0,
            jobs: Some(jobs),
            workers,
            writer: Some(writer),
        })
    }

    /// Ends the workers and returns the writer thread's result.
    fn join(&mut self) -> io::Result<W> {
        self.jobs = None;
        for w in self.workers.drain(..) {
            let _ = w.join();
        }
        match self.writer.take() {
            Some(t) => t
                .join()
                .map_err(|_| io::Error::other("the compression thread panicked"))?,
            None => Err(io::Error::other("the compression threads already ended")),
        }
    }

    fn send(&mut self) -> io::Result<()> {
        let chunk = std::mem::replace(&mut self.buf, Vec::with_capacity(CHUNK));
        let sent = self.jobs.as_ref().map(|j| j.send((self.seq, chunk)));
        self.seq += 1;
        match sent {
            Some(Ok(())) => Ok(()),
            // The threads stopped: the writer's error says why.
            _ => Err(self
                .join()
                .err()
                .unwrap_or_else(|| io::Error::other("the compression threads ended early"))),
        }
    }

    /// Compresses what is left (at least one member, so even an empty stream is valid gzip)
    /// and returns the writer with every member written.
    pub fn finish(mut self) -> io::Result<W> {
        if !self.buf.is_empty() || self.seq == 0 {
            self.send()?;
        }
        self.join()
    }
}

impl<W: Write + Send + 'static> Write for ParallelGzip<W> {
    fn write(&mut self, data: &[u8]) -> io::Result<usize> {
        self.buf.extend_from_slice(data);
        if self.buf.len() >= CHUNK {
            self.send()?;
        }
        Ok(data.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl<W: Write + Send + 'static> Drop for ParallelGzip<W> {
    fn drop(&mut self) {
        // Abandoned after an error elsewhere: stop the threads; the output is discarded.
        if self.writer.is_some() {
            let _ = self.join();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::snapshot::encode::GO_GZIP_HEADER;

    fn gunzip_all(bytes: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        std::io::Read::read_to_end(&mut flate2::read::MultiGzDecoder::new(bytes), &mut out)
            .unwrap();
        out
    }

    #[test]
    fn parallel_gzip_round_trips_in_order() {
        // Compressible but not trivial, several chunks, written in odd-sized pieces.
        let data: Vec<u8> = (0..9_000_000u32)
            .map(|i| (i.wrapping_mul(2_654_435_761) >> 27) as u8)
            .collect();
        let mut gz = ParallelGzip::new(Vec::new(), 3).unwrap();
        for piece in data.chunks(77_777) {
            gz.write_all(piece).unwrap();
        }
        let out = gz.finish().unwrap();
        assert_eq!(&out[..10], &GO_GZIP_HEADER);
        assert_eq!(gunzip_all(&out), data);
        // One member per 2 MiB chunk.
        let members = out.windows(10).filter(|w| *w == GO_GZIP_HEADER).count();
        assert!(members >= 5, "{members}");
    }

    #[test]
    fn parallel_gzip_of_nothing_is_valid_gzip() {
        let out = ParallelGzip::new(Vec::new(), 2).unwrap().finish().unwrap();
        assert!(!out.is_empty());
        assert!(gunzip_all(&out).is_empty());
    }

    struct FailingWriter;

    impl Write for FailingWriter {
        fn write(&mut self, _: &[u8]) -> io::Result<usize> {
            Err(io::Error::other("disk full"))
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn parallel_gzip_reports_the_writers_error() {
        let mut gz = ParallelGzip::new(FailingWriter, 2).unwrap();
        let big = vec![7u8; 3 * CHUNK];
        let mut err = None;
        for _ in 0..20 {
            if let Err(e) = gz.write_all(&big) {
                err = Some(e);
                break;
            }
        }
        let e = match err {
            Some(e) => e,
            None => gz
                .finish()
                .err()
                .expect("the failure surfaces at the latest in finish"),
        };
        assert!(e.to_string().contains("disk full"), "{e}");
    }
}
