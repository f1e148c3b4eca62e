//! Uploads: a single signed PUT up to the multipart threshold, else a multipart upload (create,
//! one PUT per part, complete) that is aborted on failure so that no orphaned parts are left
//! behind. Bodies are read from the caller's seekable stream, never held in memory: each
//! attempt rewinds to its start, and the Content-MD5 that S3 checks (unless
//! `disable_send_content_md5`) is computed by a first pass over the same range.

use std::io::{Read, SeekFrom};

use base64::Engine;
use md5::{Digest, Md5};
use rusty_s3::S3Action;
use rusty_s3::actions::CreateMultipartUpload;

use super::request::{body_text, etag_of, parse_error_xml};
use super::{S3Storage, SIGN_FOR};
use crate::storage::{ErrorKind, ReadSeek, Result, StorageError};

impl S3Storage {
    pub(super) fn put_single(
        &self,
        name: &str,
        body: &mut dyn ReadSeek,
        len: u64,
    ) -> Result<String> {
        let key = self.key(name);
        let md5 = if self.opts.disable_send_content_md5 {
            None
        } else {
            Some(md5_of(body, len, name)?)
        };
        let resp = self.request("store", name, &[], |c| {
            let mut a = self.bucket.put_object(Some(c), &key);
            if let Some(m) = &md5 {
                a.headers_mut().insert("content-md5", m.clone());
            }
            if !self.opts.storage_class.is_empty() {
                a.headers_mut()
                    .insert("x-amz-storage-class", self.opts.storage_class.clone());
            }
            let mut req = self
                .agent
                .put(a.sign(SIGN_FOR).as_str())
                .header("Content-Length", len.to_string());
            if let Some(m) = &md5 {
                req = req.header("Content-MD5", m.as_str());
            }
            if !self.opts.storage_class.is_empty() {
                req = req.header("x-amz-storage-class", self.opts.storage_class.as_str());
            }
            body.seek(SeekFrom::Start(0)).map_err(ureq::Error::Io)?;
            let mut limited = (&mut *body).take(len);
            req.send(ureq::SendBody::from_reader(&mut limited))
        })?;
        Ok(etag_of(&resp))
    }

    pub(super) fn put_multipart(
        &self,
        name: &str,
        body: &mut dyn ReadSeek,
        len: u64,
    ) -> Result<String> {
        let key = self.key(name);
        let resp = self.request("store", name, &[], |c| {
            let a = self.bucket.create_multipart_upload(Some(c), &key);
            self.agent
                .post(a.sign(SIGN_FOR).as_str())
                .header("Content-Length", "0")
                .send_empty()
        })?;
        let text = body_text(resp, 1 << 20).map_err(|e| StorageError::io("store", name, e))?;
        let upload_id = CreateMultipartUpload::parse_response(&text)
            .map_err(|e| {
                StorageError::new(
                    ErrorKind::Protocol,
                    "store",
                    name,
                    format!("multipart upload not created: {e}"),
                )
            })?
            .upload_id()
            .to_string();
        let result = self.upload_parts(name, &key, &upload_id, body, len);
        if result.is_err() {
            // Leave no orphaned parts behind (best effort; the error that matters is returned).
            let _ = self.request("store", name, &[404], |c| {
                let a = self
                    .bucket
                    .abort_multipart_upload(Some(c), &key, &upload_id);
                self.agent.delete(a.sign(SIGN_FOR).as_str()).call()
            });
        }
        result
    }

    fn upload_parts(
        &self,
        name: &str,
        key: &str,
        upload_id: &str,
        body: &mut dyn ReadSeek,
        len: u64,
    ) -> Result<String> {
        let mut etags = Vec::new();
        let mut offset = 0u64;
        let mut part: u16 = 1;
        while offset < len {
            let size = self.part_size.min(len - offset);
            body.seek(SeekFrom::Start(offset))
                .map_err(|e| StorageError::io("store", name, e))?;
            let md5 = if self.opts.disable_send_content_md5 {
                None
            } else {
                Some(md5_of_range(body, offset, size, name)?)
            };
            let resp = self.request("store", name, &[], |c| {
                let a = self.bucket.upload_part(Some(c), key, part, upload_id);
                let mut req = self
                    .agent
                    .put(a.sign(SIGN_FOR).as_str())
                    .header("Content-Length", size.to_string());
                if let Some(m) = &md5 {
                    req = req.header("Content-MD5", m.as_str());
                }
                body.seek(SeekFrom::Start(offset))
                    .map_err(ureq::Error::Io)?;
                let mut limited = (&mut *body).take(size);
                req.send(ureq::SendBody::from_reader(&mut limited))
            })?;
            etags.push(etag_of(&resp));
            offset += size;
            part = part.checked_add(1).ok_or_else(|| {
                StorageError::new(
                    ErrorKind::BodyLength,
                    "store",
                    name,
                    "object needs more than 65535 parts",
                )
            })?;
        }
        let resp = self.request("store", name, &[], |c| {
            let a = self.bucket.complete_multipart_upload(
                Some(c),
                key,
                upload_id,
                etags.iter().map(String::as_str),
            );
            let url = a.sign(SIGN_FOR);
            let xml = a.body();
            self.agent.post(url.as_str()).send(xml.as_bytes())
        })?;
        let text = body_text(resp, 1 << 20).map_err(|e| StorageError::io("store", name, e))?;
        // S3 may report a failed completion inside a 200 response.
        let (code, msg) = parse_error_xml(&text);
        if !code.is_empty() {
            return Err(StorageError::new(
                ErrorKind::Server,
                "store",
                name,
                format!("completing multipart upload: {code}: {msg}"),
            ));
        }
        Ok(String::new())
    }
}

fn md5_of_range(body: &mut dyn ReadSeek, offset: u64, len: u64, name: &str) -> Result<String> {
    body.seek(SeekFrom::Start(offset))
        .map_err(|e| StorageError::io("store", name, e))?;
    let mut h = Md5::new();
    let mut buf = vec![0u8; 256 * 1024];
    let mut left = len;
    while left > 0 {
        let want = buf.len().min(usize::try_from(left).unwrap_or(buf.len()));
        let n = body
            .read(&mut buf[..want])
            .map_err(|e| StorageError::io("store", name, e))?;
        if n == 0 {
            return Err(StorageError::new(
                ErrorKind::BodyLength,
                "store",
                name,
                format!("body ended {left} bytes early"),
            ));
        }
        h.update(&buf[..n]);
        left -= n as u64;
    }
    Ok(base64::engine::general_purpose::STANDARD.encode(h.finalize()))
}

fn md5_of(body: &mut dyn ReadSeek, len: u64, name: &str) -> Result<String> {
    md5_of_range(body, 0, len, name)
}
