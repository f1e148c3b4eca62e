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
use crate::storage::{ObjectInfo, Storage, StorageError, get_as_file, put_file};

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
