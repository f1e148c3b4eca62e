//! The container check at start-up (created with `create_container`), paged listings of up to
//! 5,000 blobs per request, and the update marker that lets other instances skip listings.

use super::*;

impl AzureStorage {
    /// Creates the container when asked to, then checks that it exists and that our
    /// credentials may list it (one List Blobs of one result, which a container-scoped SAS
    /// token allows too).
    pub(super) fn init(&self) -> Result<()> {
        let container = self.opts.container.clone();
        let timeout = Some(self.opts.init_timeout.as_std()).filter(|d| !d.is_zero());
        if self.opts.create_container {
            let call = Call::new("PUT", None).query("restype", "container");
            let resp = self.request("create-container", &container, false, &[409], || {
                Ok(self
                    .builder(&call, |u| self.agent.put(u))?
                    .config()
                    .timeout_global(timeout)
                    .build()
                    .header("Content-Length", "0")
                    .send_empty()?)
            })?;
            if resp.status().as_u16() == 409 {
                let code = error_code_header(&resp);
                if code != "ContainerAlreadyExists" {
                    let body = body_text(resp, 64 << 10).unwrap_or_default();
                    let (c, msg) = xml::parse_error(&body);
                    let code = if code.is_empty() { c } else { code };
                    return Err(self
                        .error(
                            "init",
                            &container,
                            false,
                            ErrorKind::Client,
                            &format!("creating the container: HTTP 409 {code}: {msg}"),
                        )
                        .with_response(409, &code));
                }
            }
        }
        let call = Call::new("GET", None)
            .query("restype", "container")
            .query("comp", "list")
            .query("maxresults", "1");
        let resp = self.request("init", &container, false, &[404], || {
            Ok(self
                .builder(&call, |u| self.agent.get(u))?
                .config()
                .timeout_global(timeout)
                .build()
                .call()?)
        })?;
        if resp.status().as_u16() == 404 {
            return Err(self.error(
                "init",
                &container,
                false,
                ErrorKind::Config,
                &format!(
                    "container {container:?} does not exist (create it, or set create_container: true)"
                ),
            ));
        }
        // Read to the end so that the connection can be reused.
        let _ = body_text(resp, 1 << 20);
        Ok(())
    }

    /// Lists every blob under the global prefix + `prefix`, page by page.
    pub(super) fn list_all(&self, prefix: &str) -> Result<Vec<ObjectInfo>> {
        let full = self.blob_name(prefix);
        let gp = self.opts.global_prefix.as_str();
        let marker_blob = self.blob_name(UPDATE_MARKER);
        let mut out = Vec::new();
        let mut next: Option<String> = None;
        loop {
            let mut call = Call::new("GET", None)
                .query("restype", "container")
                .query("comp", "list")
                .query("maxresults", LIST_PAGE_SIZE.to_string());
            if !full.is_empty() {
                call = call.query("prefix", full.clone());
            }
            if let Some(m) = &next {
                call = call.query("marker", m.clone());
            }
            let resp = self.request("list", &full, false, &[], || {
                Ok(self.builder(&call, |u| self.agent.get(u))?.call()?)
            })?;
            let body = body_text(resp, 64 << 20).map_err(|e| StorageError::io("list", &full, e))?;
            let page = xml::parse_list(&body).map_err(|e| {
                self.error(
                    "list",
                    &full,
                    false,
                    ErrorKind::Protocol,
                    &format!("unreadable listing: {e}"),
                )
            })?;
            for (blob, size) in page.blobs {
                if blob == marker_blob {
                    continue;
                }
                let Some(name) = blob.strip_prefix(gp) else {
                    continue;
                };
                out.push(ObjectInfo {
                    name: name.to_string(),
                    size,
                });
            }
            match page.next_marker {
                Some(m) => next = Some(m),
                None => break,
            }
        }
        out.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(out)
    }

    /// Rewrites the marker after a change: `<blob>:<etag>:<unix ns>:<deleted>`, as Go writes it.
    pub(super) fn write_marker(&self, name: &str, etag: &str, deleted: bool) -> Result<()> {
        self.cache.invalidate();
        let body = super::super::marker::marker_body(&self.blob_name(name), etag, deleted);
        self.put_single(
            UPDATE_MARKER,
            &mut io::Cursor::new(body.as_bytes()),
            body.len() as u64,
        )
        .map(|_| ())
    }
}
