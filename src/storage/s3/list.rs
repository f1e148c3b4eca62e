//! Listings: every object under the global prefix, page by page, without the update marker (and
//! without folder entries with `hide_folders`), as the Go backend lists them. With
//! `use_update_marker` a full listing is reused while the small marker object, rewritten by every
//! instance after each store and delete, stays the same (and for at most
//! `update_marker_force_list_interval`): one GET instead of a listing of thousands of objects.

use std::io;

use rusty_s3::S3Action;
use rusty_s3::actions::ListObjectsV2;

use super::request::body_text;
use super::{S3Storage, SIGN_FOR, UPDATE_MARKER};
use crate::storage::marker::{marker_body, read_marker};
use crate::storage::{ErrorKind, ObjectInfo, Result, StorageError};

impl S3Storage {
    /// The listing for [`Storage::list`]: through the marker cache when configured.
    pub(super) fn list_cached(&self, prefix: &str) -> Result<Vec<ObjectInfo>> {
        if !self.opts.use_update_marker {
            return self.list_all(prefix);
        }
        let marker = read_marker(self)?;
        let force = self.opts.update_marker_force_list_interval.as_std();
        self.cache.list(prefix, marker, force, || self.list_all(""))
    }

    /// Lists every object under the global prefix + `prefix`, paging through the results.
    pub(super) fn list_all(&self, prefix: &str) -> Result<Vec<ObjectInfo>> {
        let full = self.key(prefix);
        let gp = self.opts.global_prefix.as_str();
        let marker = self.key(UPDATE_MARKER);
        let folders = self.opts.hide_folders || self.opts.prefix_folders;
        let mut out = Vec::new();
        let mut token: Option<String> = None;
        loop {
            let resp = self.request("list", &full, &[], |c| {
                let mut a: ListObjectsV2 = self.bucket.list_objects_v2(Some(c));
                a.with_prefix(full.as_str());
                if folders {
                    a.with_delimiter("/");
                }
                if let Some(t) = &token {
                    a.with_continuation_token(t.as_str());
                }
                self.agent.get(a.sign(SIGN_FOR).as_str()).call()
            })?;
            let body = body_text(resp, 64 << 20).map_err(|e| StorageError::io("list", &full, e))?;
            let page = ListObjectsV2::parse_response(&body).map_err(|e| {
                StorageError::new(
                    ErrorKind::Protocol,
                    "list",
                    &full,
                    format!("unreadable listing: {e}"),
                )
            })?;
            for o in page.contents {
                if o.key == marker || (self.opts.hide_folders && o.key.ends_with('/')) {
                    continue;
                }
                let Some(name) = o.key.strip_prefix(gp) else {
                    continue;
                };
                out.push(ObjectInfo {
                    name: name.to_string(),
                    size: o.size.unwrap_or(0),
                });
            }
            match page.next_continuation_token {
                Some(t) if !t.is_empty() => token = Some(t),
                _ => break,
            }
        }
        out.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(out)
    }

    /// Rewrites the marker after a change: `<key>:<etag>:<unix ns>:<deleted>`.
    pub(super) fn write_marker(&self, name: &str, etag: &str, deleted: bool) -> Result<()> {
        self.cache.invalidate();
        let body = marker_body(&self.key(name), etag, deleted);
        self.put_single(
            UPDATE_MARKER,
            &mut io::Cursor::new(body.as_bytes()),
            body.len() as u64,
        )
        .map(|_| ())
    }
}
