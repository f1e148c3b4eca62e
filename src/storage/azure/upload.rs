//! Uploads: one Put Blob for small objects, staged blocks committed with Put Block List for
//! large ones, read from the body a block at a time (in parallel up to `concurrency`), so memory
//! stays bounded whatever the object's size.

use super::*;

impl AzureStorage {
    /// One Put Blob (block blob) streamed from `body`; returns the ETag.
    pub(super) fn put_single(
        &self,
        name: &str,
        body: &mut dyn ReadSeek,
        len: u64,
    ) -> Result<String> {
        let blob = self.blob_name(name);
        let md5 = md5_of_range(body, 0, len).map_err(|e| StorageError::io("store", name, e))?;
        let call = Call::new("PUT", Some(&blob))
            .header("Content-Length", len.to_string())
            .header("Content-Type", "application/octet-stream")
            .header("Content-MD5", md5)
            .header("x-ms-blob-type", "BlockBlob");
        let resp = self.request("store", name, true, &[], || {
            let rb = self.builder(&call, |u| self.agent.put(u))?;
            body.seek(SeekFrom::Start(0)).map_err(ureq::Error::Io)?;
            let mut limited = (&mut *body).take(len);
            Ok(rb.send(ureq::SendBody::from_reader(&mut limited))?)
        })?;
        Ok(etag_of(&resp))
    }

    /// The block size for an object of `len` bytes: ours, or larger when the object would
    /// need more blocks than a blob can have.
    pub(super) fn block_size_for(&self, len: u64) -> u64 {
        self.block_size.max(len.div_ceil(MAX_BLOCKS))
    }

    /// Staged blocks then Put Block List: the blob changes only at the commit, atomically.
    /// Blocks left uncommitted by a failure are discarded by the service (after a week, or
    /// at the next commit to the blob), so there is nothing to abort.
    pub(super) fn put_blocks(
        &self,
        name: &str,
        body: &mut dyn ReadSeek,
        len: u64,
    ) -> Result<String> {
        let blob = self.blob_name(name);
        let size = self.block_size_for(len);
        let count = len.div_ceil(size);
        let ids: Vec<String> = (0..count).map(block_id).collect();
        let workers = usize::try_from(self.opts.concurrency.max(1)).unwrap_or(1);
        if workers <= 1 {
            for (i, id) in ids.iter().enumerate() {
                let offset = i as u64 * size;
                let n = size.min(len - offset);
                self.put_block_from(name, &blob, id, body, offset, n)?;
            }
        } else {
            self.put_blocks_parallel(name, &blob, &ids, body, len, size, workers)?;
        }
        let xml = xml::block_list(&ids);
        let call = Call::new("PUT", Some(&blob))
            .query("comp", "blocklist")
            .header("Content-Length", xml.len().to_string())
            .header("Content-Type", "application/xml");
        let resp = self.request("store", name, true, &[], || {
            Ok(self
                .builder(&call, |u| self.agent.put(u))?
                .send(xml.as_bytes())?)
        })?;
        Ok(etag_of(&resp))
    }

    /// One Put Block streamed from `body` at `offset`.
    pub(super) fn put_block_from(
        &self,
        name: &str,
        blob: &str,
        id: &str,
        body: &mut dyn ReadSeek,
        offset: u64,
        n: u64,
    ) -> Result<()> {
        let md5 = md5_of_range(body, offset, n).map_err(|e| StorageError::io("store", name, e))?;
        let call = Call::new("PUT", Some(blob))
            .query("comp", "block")
            .query("blockid", id)
            .header("Content-Length", n.to_string())
            .header("Content-Type", "application/octet-stream")
            .header("Content-MD5", md5);
        self.request("store", name, true, &[], || {
            let rb = self.builder(&call, |u| self.agent.put(u))?;
            body.seek(SeekFrom::Start(offset))
                .map_err(ureq::Error::Io)?;
            let mut limited = (&mut *body).take(n);
            Ok(rb.send(ureq::SendBody::from_reader(&mut limited))?)
        })?;
        Ok(())
    }

    /// One Put Block from a buffer.
    pub(super) fn put_block_buf(
        &self,
        name: &str,
        blob: &str,
        id: &str,
        data: &[u8],
    ) -> Result<()> {
        let md5 = base64::engine::general_purpose::STANDARD.encode(Md5::digest(data));
        let call = Call::new("PUT", Some(blob))
            .query("comp", "block")
            .query("blockid", id)
            .header("Content-Length", data.len().to_string())
            .header("Content-Type", "application/octet-stream")
            .header("Content-MD5", md5);
        self.request("store", name, true, &[], || {
            Ok(self.builder(&call, |u| self.agent.put(u))?.send(data)?)
        })?;
        Ok(())
    }

    /// `workers` blocks in flight: this thread reads the body block by block into buffers
    /// handed over a rendezvous channel, so at most `workers + 1` blocks are in memory.
    #[allow(clippy::too_many_arguments)]
    pub(super) fn put_blocks_parallel(
        &self,
        name: &str,
        blob: &str,
        ids: &[String],
        body: &mut dyn ReadSeek,
        len: u64,
        size: u64,
        workers: usize,
    ) -> Result<()> {
        use std::sync::atomic::{AtomicBool, Ordering};
        let failed = AtomicBool::new(false);
        let first_error: Mutex<Option<StorageError>> = Mutex::new(None);
        let (tx, rx) = std::sync::mpsc::sync_channel::<(usize, Vec<u8>)>(0);
        let rx = Mutex::new(rx);
        std::thread::scope(|scope| {
            for _ in 0..workers.min(ids.len()) {
                scope.spawn(|| {
                    loop {
                        let job = rx.lock().unwrap_or_else(|e| e.into_inner()).recv();
                        let Ok((i, data)) = job else { break };
                        if failed.load(Ordering::Relaxed) {
                            continue;
                        }
                        if let Err(e) = self.put_block_buf(name, blob, &ids[i], &data) {
                            failed.store(true, Ordering::Relaxed);
                            first_error
                                .lock()
                                .unwrap_or_else(|e| e.into_inner())
                                .get_or_insert(e);
                        }
                    }
                });
            }
            let read = (|| -> io::Result<()> {
                body.seek(SeekFrom::Start(0))?;
                for (i, _) in ids.iter().enumerate() {
                    if failed.load(Ordering::Relaxed) {
                        break;
                    }
                    let n = size.min(len - i as u64 * size);
                    let mut data = vec![0u8; usize::try_from(n).map_err(io::Error::other)?];
                    body.read_exact(&mut data)?;
                    if tx.send((i, data)).is_err() {
                        break;
                    }
                }
                Ok(())
            })();
            drop(tx);
            if let Err(e) = read {
                failed.store(true, Ordering::Relaxed);
                first_error
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .get_or_insert(StorageError::io("store", name, e));
            }
        });
        match first_error.into_inner().unwrap_or_else(|e| e.into_inner()) {
            Some(e) => Err(e),
            None => Ok(()),
        }
    }
}
