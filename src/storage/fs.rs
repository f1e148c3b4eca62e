//! The `fs` backend: one regular file per object in a flat directory, as the Go version's
//! simpleblob fs backend lays it out, so both can share a directory. Writes go to a hidden
//! temporary file that is fsynced and renamed over the target, so readers never see half an
//! object; names are validated so nothing outside `root_path` can ever be read or written.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use super::{ObjectInfo, ReadSeek, Result, Storage, StorageError, copy_exact};

pub struct FsStorage {
    root: PathBuf,
}

static TMP_COUNTER: AtomicU64 = AtomicU64::new(0);

/// Why a name cannot be an object of this backend, if it cannot. The rules are the Go backend's
/// (no `/`, no leading `.`, no `.tmp` suffix) plus NUL and the empty name, which no file can have.
fn invalid_reason(name: &str) -> Option<&'static str> {
    if name.is_empty() {
        Some("empty name")
    } else if name.contains('/') {
        Some("contains '/'")
    } else if name.contains('\0') {
        Some("contains a NUL byte")
    } else if name.starts_with('.') {
        Some("starts with '.'")
    } else if name.ends_with(".tmp") {
        Some("ends with '.tmp'")
    } else {
        None
    }
}

impl FsStorage {
    /// Opens (creating with `mkdir -p`, mode 0755) the directory that holds the objects.
    pub fn new(root: &Path) -> std::io::Result<FsStorage> {
        use std::os::unix::fs::DirBuilderExt;
        fs::DirBuilder::new()
            .recursive(true)
            .mode(0o755)
            .create(root)
            .map_err(|e| io::Error::new(e.kind(), format!("create {}: {e}", root.display())))?;
        Ok(FsStorage {
            root: root.to_path_buf(),
        })
    }

    fn path_of(&self, op: &'static str, name: &str) -> Result<PathBuf> {
        match invalid_reason(name) {
            Some(reason) if op == "get" => {
                log::debug!(name = name, reason = reason; "fs storage: refusing to read invalid name");
                Err(StorageError::not_found(name))
            }
            Some(reason) => Err(StorageError::invalid_name(name, reason)),
            None => Ok(self.root.join(name)),
        }
    }
}

impl Storage for FsStorage {
    fn list(&self, prefix: &str) -> Result<Vec<ObjectInfo>> {
        let dir = fs::read_dir(&self.root)
            .map_err(|e| StorageError::io("list", &self.root.display().to_string(), e))?;
        let mut out = Vec::new();
        for entry in dir {
            let entry = entry.map_err(|e| StorageError::io("list", prefix, e))?;
            // Non-UTF-8 file names cannot be object names of any backend; they are not ours.
            let Ok(name) = entry.file_name().into_string() else {
                continue;
            };
            if !name.starts_with(prefix) || invalid_reason(&name).is_some() {
                continue;
            }
            let meta = match entry.metadata() {
                Ok(m) => m,
                // Removed between readdir and stat (another instance's cleaner): not listed.
                Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
                Err(e) => return Err(StorageError::io("list", &name, e)),
            };
            if meta.is_file() {
                out.push(ObjectInfo {
                    name,
                    size: meta.len(),
                });
            }
        }
        out.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(out)
    }

    fn get(&self, name: &str) -> Result<Box<dyn Read + Send + '_>> {
        let path = self.path_of("get", name)?;
        let file = File::open(&path).map_err(|e| StorageError::io("get", name, e))?;
        Ok(Box::new(io::BufReader::with_capacity(256 * 1024, file)))
    }

    fn local_file(&self, name: &str) -> Option<Result<File>> {
        Some(
            self.path_of("get", name)
                .and_then(|path| File::open(&path).map_err(|e| StorageError::io("get", name, e))),
        )
    }

    fn put(&self, name: &str, body: &mut dyn ReadSeek, len: u64) -> Result<()> {
        let path = self.path_of("put", name)?;
        // A per-writer temporary name: two processes storing the same name must not share one.
        let tmp = self.root.join(format!(
            ".{name}.{}-{}.tmp",
            std::process::id(),
            TMP_COUNTER.fetch_add(1, Ordering::Relaxed)
        ));
        let result = (|| {
            let mut file = OpenOptions::new()
                .write(true)
                .create_new(true)
                .open(&tmp)
                .map_err(|e| StorageError::io("put", name, e))?;
            let mut writer = io::BufWriter::with_capacity(256 * 1024, &mut file);
            copy_exact(body, &mut writer, len, name)?;
            writer
                .flush()
                .map_err(|e| StorageError::io("put", name, e))?;
            drop(writer);
            file.sync_all()
                .map_err(|e| StorageError::io("put", name, e))?;
            fs::rename(&tmp, &path).map_err(|e| StorageError::io("put", name, e))?;
            // The rename is only durable once the directory entry is.
            File::open(&self.root)
                .and_then(|d| d.sync_all())
                .map_err(|e| StorageError::io("put", name, e))
        })();
        if result.is_err() {
            let _ = fs::remove_file(&tmp);
        }
        result
    }

    fn delete(&self, name: &str) -> Result<()> {
        let path = self.path_of("delete", name)?;
        match fs::remove_file(path) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(StorageError::io("delete", name, e)),
        }
    }

    fn kind(&self) -> &'static str {
        "fs"
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::storage::ErrorKind;

    #[test]
    fn shared_backend_behaviour() {
        let dir = tempfile::tempdir().unwrap();
        let s = FsStorage::new(&dir.path().join("bucket/sub")).unwrap();
        crate::storage::tests::exercise_backend(&s);
        // No temporary files are left behind, also after refused writes.
        let mut left: Vec<_> = fs::read_dir(dir.path().join("bucket/sub"))
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        left.sort();
        assert_eq!(left, ["main__a__1", "shard__a__1"]);
        assert!(left.iter().all(|n| !n.ends_with(".tmp")), "{left:?}");
    }

    /// Objects are read in place, without a copy; an object replaced or deleted meanwhile does
    /// not change what an open file reads, and names that may not be read are not found.
    #[test]
    fn objects_are_read_in_place() {
        use std::io::Read;
        let dir = tempfile::tempdir().unwrap();
        let s = FsStorage::new(dir.path()).unwrap();
        let put = |data: &[u8]| {
            s.put(
                "main__a__1",
                &mut io::Cursor::new(data.to_vec()),
                data.len() as u64,
            )
            .unwrap()
        };
        put(b"first");
        let (mut f, size) = crate::storage::get_as_file(&s, "main__a__1").unwrap();
        assert_eq!(size, 5);
        put(b"second, longer");
        s.delete("main__a__1").unwrap();
        let mut text = String::new();
        f.read_to_string(&mut text).unwrap();
        assert_eq!(text, "first");
        for name in ["main__a__1", "../x", ".hidden", "x.tmp"] {
            assert!(
                crate::storage::get_as_file(&s, name)
                    .unwrap_err()
                    .is_not_found(),
                "{name}"
            );
        }
    }

    #[test]
    fn names_cannot_escape_the_root() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("bucket");
        let s = FsStorage::new(&root).unwrap();
        fs::write(dir.path().join("secret"), b"x").unwrap();
        for bad in [
            "../secret",
            "a/b",
            ".hidden",
            "x.tmp",
            "",
            "a\0b",
            "..",
            ".",
        ] {
            assert!(
                s.get(bad).err().unwrap().is_not_found(),
                "get {bad:?} must look missing"
            );
            let put = s.put(bad, &mut crate::storage::tests::body(b"x"), 1);
            assert_eq!(put.err().map(|e| e.kind()), Some(ErrorKind::InvalidName));
            let delete = s.delete(bad);
            assert_eq!(delete.err().map(|e| e.kind()), Some(ErrorKind::InvalidName));
        }
        assert_eq!(fs::read(dir.path().join("secret")).unwrap(), b"x");
        assert!(s.list("").unwrap().is_empty());
    }

    #[test]
    fn list_skips_foreign_entries() {
        let dir = tempfile::tempdir().unwrap();
        let s = FsStorage::new(dir.path()).unwrap();
        fs::create_dir(dir.path().join("main__dir")).unwrap();
        fs::write(dir.path().join("main__x.pb.gz.tmp"), b"partial").unwrap();
        fs::write(dir.path().join(".main__y"), b"hidden").unwrap();
        fs::write(dir.path().join("main__z"), b"ok").unwrap();
        let names: Vec<_> = s
            .list("main")
            .unwrap()
            .into_iter()
            .map(|o| o.name)
            .collect();
        assert_eq!(names, ["main__z"]);
    }
}
