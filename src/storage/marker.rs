//! The update marker of the Go version's object stores (simpleblob): an object every writer
//! rewrites after each store and delete, so that readers list the bucket only when it changed
//! (or every `update_marker_force_list_interval`) and otherwise answer from the last listing.
//! Shared by the S3 and Azure backends; what differs between them (the key under the global
//! prefix, the upload) stays with each backend.

use std::io::Read;
use std::sync::Mutex;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use super::{ObjectInfo, Result, Storage, StorageError};

/// Name of the marker object (after the global prefix), as the Go backends name it; listings
/// hide it.
pub const UPDATE_MARKER: &str = "update-marker";

/// The listing read when the marker last changed.
struct Cached {
    marker: String,
    objects: Vec<ObjectInfo>,
    at: Instant,
}

/// A backend's listing cache behind the marker.
#[derive(Default)]
pub struct MarkerCache(Mutex<Option<Cached>>);

impl MarkerCache {
    /// The objects under `prefix`: from the cache while `marker` (the marker object's content,
    /// `None` when there is none) is the one seen with it and the cache is younger than
    /// `force_every`, else from `list_all` (a full listing, cached when there is a marker).
    pub fn list(
        &self,
        prefix: &str,
        marker: Option<String>,
        force_every: Duration,
        list_all: impl FnOnce() -> Result<Vec<ObjectInfo>>,
    ) -> Result<Vec<ObjectInfo>> {
        let mut cache = self.0.lock().unwrap_or_else(|e| e.into_inner());
        let fresh = match (&*cache, &marker) {
            (Some(c), Some(m)) => c.marker == *m && c.at.elapsed() < force_every,
            _ => false,
        };
        if !fresh {
            let objects = list_all()?;
            *cache = marker.map(|m| Cached {
                marker: m,
                objects: objects.clone(),
                at: Instant::now(),
            });
            return Ok(objects
                .into_iter()
                .filter(|o| o.name.starts_with(prefix))
                .collect());
        }
        let objects = cache
            .as_ref()
            .map(|c| c.objects.clone())
            .unwrap_or_default();
        Ok(objects
            .into_iter()
            .filter(|o| o.name.starts_with(prefix))
            .collect())
    }

    /// Forgets the cached listing (this instance changed the bucket).
    pub fn invalidate(&self) {
        *self.0.lock().unwrap_or_else(|e| e.into_inner()) = None;
    }
}

/// The marker object's content, `None` when there is none.
pub fn read_marker(storage: &dyn Storage) -> Result<Option<String>> {
    match storage.get(UPDATE_MARKER) {
        Ok(mut r) => {
            let mut s = String::new();
            r.read_to_string(&mut s)
                .map_err(|e| StorageError::io("get", UPDATE_MARKER, e))?;
            Ok(Some(s))
        }
        Err(e) if e.is_not_found() => Ok(None),
        Err(e) => Err(e),
    }
}

/// The marker's content after a change of `key` (the object's full key or blob name):
/// `<key>:<etag>:<unix ns>:<deleted>`, as the Go backends write it.
pub fn marker_body(key: &str, etag: &str, deleted: bool) -> String {
    let ns = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0);
    format!("{key}:{etag}:{ns}:{deleted}")
}
