//! The retained copy of a db's objects: copies what a listing of the bucket shows and the
//! retained prefix lacks, prunes what the policy no longer needs (`plan::prune`), and reports
//! the space used. The cleaner calls [`Archive::run_once`] before deleting anything and deletes
//! only objects that are safely retained, so nothing a retention window needs is ever lost to
//! our cleaner; a Go cleaner in the same bucket deletes full snapshots no sooner than
//! `must_keep_interval` after first seeing them, which config validation makes longer than
//! our cleaner's period.

use std::collections::BTreeSet;
use std::sync::Arc;

use crate::config::RetentionConfig;
use crate::core::name::SnapshotName;
use crate::storage::{ErrorKind, ObjectInfo, Storage, StorageError, get_as_file, put_file};

/// The retained prefix as a storage of its own, and the policy applied to it.
#[derive(Clone)]
pub struct Archive {
    pub storage: Arc<dyn Storage>,
    pub policy: RetentionConfig,
}

/// What one archiving pass did.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct ArchiveRun {
    /// Names of the bucket listing that are now retained (copied before or in this pass).
    pub retained: BTreeSet<String>,
    pub copied: usize,
    pub copy_failed: usize,
    pub pruned: usize,
    /// Objects and bytes retained after the pass.
    pub objects: usize,
    pub bytes: u64,
}

/// Copies one object from `from` to `to` under the same name, through a local file (no copy
/// for `fs`, whose objects are files already); returns its size.
pub fn copy_object(from: &dyn Storage, to: &dyn Storage, name: &str) -> Result<u64, StorageError> {
    let (mut file, size) = get_as_file(from, name)?;
    put_file(to, name, &mut file)?;
    Ok(size)
}

impl Archive {
    /// Every retained object of `db`.
    pub fn list(&self, db: &str) -> Result<Vec<ObjectInfo>, StorageError> {
        self.storage.list(&format!("{db}__"))
    }

    /// Copies the objects of `listed` (a listing of `<db>__` in the bucket) that are not
    /// retained yet, then prunes what the policy no longer needs at `now_ns`.
    pub fn run_once(
        &self,
        bucket: &dyn Storage,
        db: &str,
        listed: &[ObjectInfo],
        now_ns: i64,
    ) -> Result<ArchiveRun, StorageError> {
        let mut retained = self.list(db)?;
        let have: BTreeSet<String> = retained.iter().map(|o| o.name.clone()).collect();
        let mut run = ArchiveRun::default();
        let mut missing = Vec::new();
        for o in listed {
            if SnapshotName::parse_object(&o.name).is_err() {
                continue;
            }
            if have.contains(&o.name) {
                run.retained.insert(o.name.clone());
            } else {
                missing.push(o.clone());
            }
        }
        // What the policy would prune anyway (e.g. an old full snapshot of a stale instance
        // superseded by retained ones) needs no copy, and may be cleaned.
        let mut union = retained.clone();
        union.extend(missing.iter().cloned());
        let unneeded: BTreeSet<String> = super::plan::prune(&union, db, now_ns, &self.policy)
            .into_iter()
            .collect();
        for o in missing {
            if unneeded.contains(&o.name) {
                run.retained.insert(o.name);
                continue;
            }
            match copy_object(bucket, self.storage.as_ref(), &o.name) {
                Ok(size) => {
                    run.copied += 1;
                    run.retained.insert(o.name.clone());
                    retained.push(ObjectInfo { name: o.name, size });
                }
                // Deleted meanwhile (another cleaner): nothing to keep any more.
                Err(e) if e.is_not_found() => {}
                Err(e) => {
                    run.copy_failed += 1;
                    log::warn!(db = db, component = "retention", snapshot = o.name, error = e.to_string(); "Could not retain object; it is not cleaned");
                }
            }
        }
        let prune = super::plan::prune(&retained, db, now_ns, &self.policy);
        let gone: BTreeSet<&str> = prune.iter().map(String::as_str).collect();
        for name in &prune {
            match self.storage.delete(name) {
                Ok(()) => run.pruned += 1,
                Err(e) => {
                    log::warn!(db = db, component = "retention", snapshot = name, error = e.to_string(); "Could not prune retained object")
                }
            }
        }
        for o in retained.iter().filter(|o| !gone.contains(o.name.as_str())) {
            run.objects += 1;
            run.bytes += o.size;
        }
        Ok(run)
    }
}

/// The retained objects with the bucket's behind them: a restore also needs objects stored
/// since the cleaner's last run, which are not retained yet. Lists both (one entry per name)
/// and reads the retained copy first.
pub struct WithBucket {
    pub retained: Arc<dyn Storage>,
    pub bucket: Arc<dyn Storage>,
}

impl Storage for WithBucket {
    fn list(&self, prefix: &str) -> Result<Vec<ObjectInfo>, StorageError> {
        let mut all = self.retained.list(prefix)?;
        let have: BTreeSet<String> = all.iter().map(|o| o.name.clone()).collect();
        all.extend(
            self.bucket
                .list(prefix)?
                .into_iter()
                .filter(|o| !have.contains(&o.name)),
        );
        all.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(all)
    }

    fn get(&self, name: &str) -> Result<Box<dyn std::io::Read + Send + '_>, StorageError> {
        match self.retained.get(name) {
            Err(e) if e.is_not_found() => self.bucket.get(name),
            r => r,
        }
    }

    fn local_file(&self, name: &str) -> Option<Result<std::fs::File, StorageError>> {
        match self.retained.local_file(name) {
            Some(Err(e)) if e.is_not_found() => self.bucket.local_file(name),
            Some(r) => Some(r),
            // Not a local backend: `get` falls back by itself.
            None => None,
        }
    }

    fn put(
        &self,
        name: &str,
        _: &mut dyn crate::storage::ReadSeek,
        _: u64,
    ) -> Result<(), StorageError> {
        Err(StorageError::new(
            ErrorKind::Client,
            "put",
            name,
            "restores never write to storage",
        ))
    }

    fn delete(&self, name: &str) -> Result<(), StorageError> {
        Err(StorageError::new(
            ErrorKind::Client,
            "delete",
            name,
            "restores never write to storage",
        ))
    }

    fn kind(&self) -> &'static str {
        self.retained.kind()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::GoDuration;
    use crate::storage::memory::MemoryStorage;
    use crate::storage::{ReadSeek, Result};
    use std::io::Read;

    const HOUR: i64 = 3_600_000_000_000;
    /// 2024-05-01T10:00:00Z in ns.
    const T0: i64 = 1_714_557_600_000_000_000;

    /// A storage whose puts fail: retaining into it never succeeds.
    struct ReadOnly(MemoryStorage);

    impl Storage for ReadOnly {
        fn list(&self, prefix: &str) -> Result<Vec<ObjectInfo>> {
            self.0.list(prefix)
        }
        fn get(&self, name: &str) -> Result<Box<dyn Read + Send + '_>> {
            self.0.get(name)
        }
        fn put(&self, name: &str, _: &mut dyn ReadSeek, _: u64) -> Result<()> {
            Err(StorageError::new(ErrorKind::Auth, "put", name, "read-only"))
        }
        fn delete(&self, name: &str) -> Result<()> {
            self.0.delete(name)
        }
        fn kind(&self) -> &'static str {
            "read-only"
        }
    }

    fn put(s: &dyn Storage, name: &str, body: &[u8]) {
        s.put(
            name,
            &mut std::io::Cursor::new(body.to_vec()),
            body.len() as u64,
        )
        .unwrap();
    }

    fn retained_names(a: &Archive) -> Vec<String> {
        a.list("main")
            .unwrap()
            .into_iter()
            .map(|o| o.name)
            .collect()
    }

    fn policy() -> RetentionConfig {
        RetentionConfig {
            all: GoDuration(HOUR),
            hourly: GoDuration(0),
            daily: GoDuration(0),
        }
    }

    #[test]
    fn copies_what_is_missing_and_prunes_what_no_window_needs() {
        let bucket = MemoryStorage::new();
        let archive = Archive {
            storage: Arc::new(MemoryStorage::new()),
            policy: policy(),
        };
        let full = |ts, t| SnapshotName::full_covering("main", "a", ts, t).object_name();
        let delta = |ts, f, t| SnapshotName::delta("main", "a", ts, f, t).object_name();
        // Two hours of history: a full snapshot, a delta, a newer full snapshot, a delta.
        let old_full = full(T0 - 2 * HOUR, 10);
        let old_delta = delta(T0 - 2 * HOUR + 60_000_000_000, 10, 11);
        let base = full(T0 - 90 * 60_000_000_000, 11);
        let recent = delta(T0 - 10 * 60_000_000_000, 11, 12);
        for n in [&old_full, &old_delta, &base, &recent] {
            put(&bucket, n, n.as_bytes());
        }
        put(&bucket, "main__not-an-object", b"x");
        let listed = bucket.list("main__").unwrap();
        let run = archive.run_once(&bucket, "main", &listed, T0).unwrap();
        // The window (the last hour) needs `recent` and the base before it; the older pair
        // needs no copy and may be cleaned; foreign names are neither copied nor cleaned.
        assert_eq!(run.copied, 2);
        assert_eq!(
            run.retained,
            [&old_full, &old_delta, &base, &recent]
                .into_iter()
                .cloned()
                .collect()
        );
        let kept = retained_names(&archive);
        assert_eq!(kept, vec![base.clone(), recent.clone()]);
        assert_eq!(
            (run.objects, run.bytes),
            (2, (base.len() + recent.len()) as u64)
        );
        let mut body = String::new();
        archive
            .storage
            .get(&recent)
            .unwrap()
            .read_to_string(&mut body)
            .unwrap();
        assert_eq!(body, recent);

        // Next run, nothing new: nothing copied. Two hours later `recent` is older than the
        // window but still what rebuilds its start, so it stays; a newer full snapshot
        // replaces both.
        let run = archive.run_once(&bucket, "main", &listed, T0).unwrap();
        assert_eq!((run.copied, run.pruned), (0, 0));
        let newer = full(T0 + HOUR, 12);
        put(&bucket, &newer, b"n");
        let listed = bucket.list("main__").unwrap();
        let run = archive
            .run_once(&bucket, "main", &listed, T0 + 2 * HOUR + 1)
            .unwrap();
        assert_eq!((run.copied, run.pruned), (1, 2));
        let kept = retained_names(&archive);
        assert_eq!(kept, vec![newer]);
    }

    #[test]
    fn an_object_that_could_not_be_retained_is_not_cleaned() {
        let bucket = MemoryStorage::new();
        let archive = Archive {
            storage: Arc::new(ReadOnly(MemoryStorage::new())),
            policy: policy(),
        };
        let n = SnapshotName::new("main", "a", T0).object_name();
        put(&bucket, &n, b"x");
        let run = archive
            .run_once(&bucket, "main", &bucket.list("main__").unwrap(), T0)
            .unwrap();
        assert_eq!((run.copied, run.copy_failed), (0, 1));
        assert!(run.retained.is_empty());
    }

    #[test]
    fn restores_read_the_bucket_behind_the_retained_copies() {
        let retained: Arc<dyn Storage> = Arc::new(MemoryStorage::new());
        let bucket: Arc<dyn Storage> = Arc::new(MemoryStorage::new());
        put(retained.as_ref(), "main__a__1", b"retained");
        put(bucket.as_ref(), "main__a__1", b"bucket");
        put(bucket.as_ref(), "main__a__2", b"not retained yet");
        let both = WithBucket { retained, bucket };
        let names: Vec<String> = both
            .list("main__")
            .unwrap()
            .into_iter()
            .map(|o| o.name)
            .collect();
        assert_eq!(names, ["main__a__1", "main__a__2"]);
        let read = |n: &str| {
            let mut s = String::new();
            both.get(n).unwrap().read_to_string(&mut s).unwrap();
            s
        };
        assert_eq!(read("main__a__1"), "retained");
        assert_eq!(read("main__a__2"), "not retained yet");
        assert!(both.get("main__a__3").err().unwrap().is_not_found());
        assert!(both.delete("main__a__1").is_err());
    }
}
