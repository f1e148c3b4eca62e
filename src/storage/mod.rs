//! Object storage behind one small trait: list by prefix in name order, get as a stream, put from
//! a stream of known length, delete. Backends live one per module (`fs`, `memory`, `s3/`, `azure/`) and
//! share one typed error ([`StorageError`], in `error.rs`); the syncer and the `snapshots`
//! commands only see [`Storage`]. Streams keep snapshot transfers out of memory, and the known
//! length is what S3 needs for a plain signed PUT.

pub mod azure;
mod error;
pub mod fs;
pub mod marker;
pub mod memory;
pub mod s3;

pub use error::{ErrorKind, StorageError};

use std::fs::File;
use std::io::{self, Read, Seek, SeekFrom};

/// One listed object.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ObjectInfo {
    pub name: String,
    pub size: u64,
}

pub type Result<T> = std::result::Result<T, StorageError>;

/// An upload body: uploads may need to read it twice (checksum, then send) or again on retry.
pub trait ReadSeek: Read + Seek + Send {}
impl<T: Read + Seek + Send> ReadSeek for T {}

/// A blob store holding snapshot objects. Implementations are shared between threads.
pub trait Storage: Send + Sync {
    /// Every object whose name starts with `prefix`, sorted by name (bytewise).
    fn list(&self, prefix: &str) -> Result<Vec<ObjectInfo>>;
    /// The object's content as a stream; [`StorageError::NotFound`] when it does not exist.
    fn get(&self, name: &str) -> Result<Box<dyn Read + Send + '_>>;
    /// Stores exactly `len` bytes read from `body` under `name`, replacing any existing object
    /// atomically: readers see the old or the new content, never a mix.
    fn put(&self, name: &str, body: &mut dyn ReadSeek, len: u64) -> Result<()>;
    /// Removes the object; a missing object is not an error.
    fn delete(&self, name: &str) -> Result<()>;
    /// Short backend name for logs (`fs`, `memory`, `s3`).
    fn kind(&self) -> &'static str;
    /// The object opened as a local file, for backends that keep objects as files that are
    /// replaced by rename and never written in place (so an open file keeps its content);
    /// `None` for the others, whose objects are downloaded.
    fn local_file(&self, _name: &str) -> Option<Result<File>> {
        None
    }
}

/// Uploads a whole file (from its start) under `name`.
pub fn put_file(storage: &dyn Storage, name: &str, file: &mut File) -> Result<()> {
    let len = file
        .metadata()
        .map_err(|e| StorageError::io("put", name, e))?
        .len();
    file.seek(SeekFrom::Start(0))
        .map_err(|e| StorageError::io("put", name, e))?;
    storage.put(name, file, len)
}

/// The object as a file, so that it can be read twice (validate, then merge) without holding it
/// in memory: the backend's own file where objects are local files (no copy), else a download
/// into an anonymous temporary file. Returns the file positioned at its start and the object's
/// size.
pub fn get_as_file(storage: &dyn Storage, name: &str) -> Result<(File, u64)> {
    if let Some(file) = storage.local_file(name) {
        let file = file?;
        let size = file
            .metadata()
            .map_err(|e| StorageError::io("get", name, e))?
            .len();
        return Ok((file, size));
    }
    let body = storage.get(name)?;
    let mut file = tempfile::tempfile().map_err(|e| StorageError::io("get", name, e))?;
    let progress = crate::progress::Progress::new(&format!("downloading {name}"), None);
    let size = io::copy(&mut progress.reader(body), &mut file)
        .map_err(|e| StorageError::stream("get", name, e))?;
    progress.finish();
    file.seek(SeekFrom::Start(0))
        .map_err(|e| StorageError::io("get", name, e))?;
    Ok((file, size))
}

/// Reads a stream of exactly `len` bytes, failing on a short or long body; used by backends to
/// make a caller's wrong length an error instead of a truncated object.
pub(crate) fn copy_exact(
    body: &mut dyn Read,
    out: &mut dyn io::Write,
    len: u64,
    name: &str,
) -> Result<()> {
    let copied =
        io::copy(&mut body.take(len), out).map_err(|e| StorageError::io("put", name, e))?;
    if copied != len {
        return Err(StorageError::new(
            ErrorKind::BodyLength,
            "put",
            name,
            format!("body ended after {copied} of {len} bytes"),
        ));
    }
    let mut probe = [0u8; 1];
    match body.read(&mut probe) {
        Ok(0) => Ok(()),
        Ok(_) => Err(StorageError::new(
            ErrorKind::BodyLength,
            "put",
            name,
            format!("body is longer than the announced {len} bytes"),
        )),
        Err(e) => Err(StorageError::io("put", name, e)),
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    pub(crate) fn body(b: &[u8]) -> std::io::Cursor<Vec<u8>> {
        std::io::Cursor::new(b.to_vec())
    }

    /// Behaviour every backend must share; each backend's tests call this.
    pub(crate) fn exercise_backend(s: &dyn Storage) {
        assert!(s.list("").unwrap().is_empty());
        let err = s.get("main__a__x").err().expect("missing object must fail");
        assert!(err.is_not_found(), "{err}");

        s.put("main__b__2", &mut body(b"bbbb"), 4).unwrap();
        s.put("main__a__1", &mut body(b"a"), 1).unwrap();
        s.put("shard__a__1", &mut body(b""), 0).unwrap();
        let all: Vec<_> = s.list("").unwrap();
        let names: Vec<_> = all.iter().map(|o| o.name.as_str()).collect();
        assert_eq!(names, ["main__a__1", "main__b__2", "shard__a__1"]);
        assert_eq!(all[1].size, 4);
        assert_eq!(all[2].size, 0);
        let main: Vec<_> = s.list("main__").unwrap();
        assert_eq!(main.len(), 2);

        let mut buf = Vec::new();
        s.get("main__b__2").unwrap().read_to_end(&mut buf).unwrap();
        assert_eq!(buf, b"bbbb");

        // Replace, then wrong lengths are refused and leave the old content.
        s.put("main__b__2", &mut body(b"cc"), 2).unwrap();
        assert!(s.put("main__b__2", &mut body(b"c"), 2).is_err());
        assert!(s.put("main__b__2", &mut body(b"ccc"), 2).is_err());
        buf.clear();
        s.get("main__b__2").unwrap().read_to_end(&mut buf).unwrap();
        assert_eq!(buf, b"cc");

        s.delete("main__b__2").unwrap();
        s.delete("main__b__2").unwrap();
        assert!(s.get("main__b__2").err().unwrap().is_not_found());
        assert_eq!(s.list("main__").unwrap().len(), 1);
    }
}
