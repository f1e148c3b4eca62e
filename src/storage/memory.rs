//! The `memory` backend: objects in a process-local map. It exists for unit tests and for
//! `storage.type: memory` (a single process syncing with itself), exactly like the Go backend of
//! the same name; nothing survives the process.

use std::collections::BTreeMap;
use std::io::{Cursor, Read};
use std::sync::{Arc, Mutex, MutexGuard};

use super::{ObjectInfo, ReadSeek, Result, Storage, StorageError, copy_exact};

#[derive(Default)]
pub struct MemoryStorage {
    objects: Mutex<BTreeMap<String, Arc<Vec<u8>>>>,
}

impl MemoryStorage {
    pub fn new() -> MemoryStorage {
        MemoryStorage::default()
    }

    fn objects(&self) -> MutexGuard<'_, BTreeMap<String, Arc<Vec<u8>>>> {
        // A panic while holding the lock cannot leave the map half-updated (every update is a
        // single insert or remove), so a poisoned lock is still consistent.
        self.objects.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// Reads a shared object without copying it.
struct SharedReader(Cursor<Arc<Vec<u8>>>);

impl Read for SharedReader {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let pos = self.0.position() as usize;
        let data = self.0.get_ref();
        let n = buf.len().min(data.len().saturating_sub(pos));
        buf[..n].copy_from_slice(&data[pos..pos + n]);
        self.0.set_position((pos + n) as u64);
        Ok(n)
    }
}

impl Storage for MemoryStorage {
    fn list(&self, prefix: &str) -> Result<Vec<ObjectInfo>> {
        Ok(self
            .objects()
            .range(prefix.to_string()..)
            .take_while(|(k, _)| k.starts_with(prefix))
            .map(|(k, v)| ObjectInfo {
                name: k.clone(),
                size: v.len() as u64,
            })
            .collect())
    }

    fn get(&self, name: &str) -> Result<Box<dyn Read + Send + '_>> {
        let data = self
            .objects()
            .get(name)
            .cloned()
            .ok_or_else(|| StorageError::not_found(name))?;
        Ok(Box::new(SharedReader(Cursor::new(data))))
    }

    fn put(&self, name: &str, body: &mut dyn ReadSeek, len: u64) -> Result<()> {
        if name.is_empty() {
            return Err(StorageError::invalid_name("", "empty name"));
        }
        let mut data = Vec::new();
        copy_exact(body, &mut data, len, name)?;
        self.objects().insert(name.to_string(), Arc::new(data));
        Ok(())
    }

    fn delete(&self, name: &str) -> Result<()> {
        self.objects().remove(name);
        Ok(())
    }

    fn kind(&self) -> &'static str {
        "memory"
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn shared_backend_behaviour() {
        crate::storage::tests::exercise_backend(&super::MemoryStorage::new());
    }
}
