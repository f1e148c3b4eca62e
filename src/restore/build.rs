//! Executes a restore plan: every chosen object is downloaded, validated completely and merged,
//! one at a time, into an LMDB of its own through the same fetch and merge as `sync` (so the
//! result is what a fresh instance would hold after receiving exactly those objects). The LMDB
//! is built under a temporary name next to the target and renamed into place only once every
//! object merged, so a missing or corrupt object leaves no half-restored LMDB behind. Memory
//! stays as flat as a load: objects stream through temporary files.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use crate::import::LoadOptions;
use crate::import::load::{FetchError, SliceLimits, fetch, merge};
use crate::lmdb::{Env, EnvOptions};
use crate::storage::Storage;

use super::plan::Plan;
use super::progress::Progress;

/// Longest write transaction of a build.
const SLICE: std::time::Duration = std::time::Duration::from_millis(100);

#[derive(Debug, thiserror::Error)]
pub enum BuildError {
    #[error("retained object {name} is missing (removed while restoring?); nothing was restored")]
    Missing { name: String },
    #[error("retained object {name} is corrupt: {reason}; nothing was restored")]
    Corrupt { name: String, reason: String },
    #[error("merging retained object {name}: {source}; nothing was restored")]
    Merge {
        name: String,
        #[source]
        source: Box<FetchError>,
    },
    #[error("{path}: {what}")]
    Target { path: String, what: String },
}

/// Counters of a build.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct BuildStats {
    pub objects: usize,
    pub bytes: u64,
    pub entries: u64,
    pub written: u64,
}

/// How the objects are read and merged.
#[derive(Clone, Debug)]
pub struct BuildOptions {
    pub load: LoadOptions,
    pub max_uncompressed: u64,
    /// Identities for encrypted objects (`encryption.identity_files`).
    pub keys: std::sync::Arc<crate::crypt::Keyring>,
}

fn fetch_error(name: &str, e: FetchError) -> BuildError {
    match e {
        FetchError::Storage(s) if s.is_not_found() => BuildError::Missing {
            name: name.to_string(),
        },
        FetchError::Corrupt { reason, .. } => BuildError::Corrupt {
            name: name.to_string(),
            reason,
        },
        source => BuildError::Merge {
            name: name.to_string(),
            source: Box::new(source),
        },
    }
}

/// Merges the plan's objects into `env` (normally empty), in plan order.
pub fn merge_plan(
    storage: &dyn Storage,
    plan: &Plan,
    env: &Env,
    opts: &BuildOptions,
) -> Result<BuildStats, BuildError> {
    let mut stats = BuildStats::default();
    let mut progress = Progress::new("Restore", plan.objects().count(), plan.bytes());
    let mut last_txn = env
        .info()
        .map(|i| i.last_txn_id)
        .map_err(|e| BuildError::Target {
            path: env.path().display().to_string(),
            what: e.to_string(),
        })?;
    // The LMDB is ours alone: no pauses, but bounded write transactions all the same, since
    // LMDB keeps a transaction's dirty pages in memory (up to 512 MiB before spilling).
    let limits = SliceLimits {
        max: SLICE,
        pause: std::time::Duration::ZERO,
    };
    for o in plan.objects() {
        let fetched = fetch(storage, &o.name, &opts.keys, opts.max_uncompressed, None)
            .map_err(|e| fetch_error(&o.name, e))?;
        let merged = merge(env, fetched, last_txn, &opts.load, limits)
            .map_err(|e| fetch_error(&o.name, e))?;
        last_txn = merged.txn_id;
        stats.objects += 1;
        stats.bytes += o.size;
        stats.entries += merged.stats.entries;
        stats.written += merged.stats.written;
        progress.object_done(&o.name, o.size);
    }
    Ok(stats)
}

/// Builds a new LMDB at `target` holding the plan's state; `target` must not exist. With
/// `no_subdir` the LMDB is the file `target` (and its `-lock` file), else a directory.
pub fn build_new(
    storage: &dyn Storage,
    plan: &Plan,
    target: &Path,
    env_opts: &EnvOptions,
    opts: &BuildOptions,
) -> Result<BuildStats, BuildError> {
    let target_err = |what: String| BuildError::Target {
        path: target.display().to_string(),
        what,
    };
    if target.exists() {
        return Err(target_err(
            "already exists; restore writes a new LMDB and never touches an existing one".into(),
        ));
    }
    let tmp = temporary_path(target);
    let result = (|| {
        let env = open_new(&tmp, env_opts).map_err(|e| target_err(e.to_string()))?;
        let stats = merge_plan(storage, plan, &env, opts)?;
        env.sync(true).map_err(|e| target_err(e.to_string()))?;
        drop(env);
        std::fs::rename(&tmp, target)
            .map_err(|e| target_err(format!("renaming into place: {e}")))?;
        Ok(stats)
    })();
    remove_lmdb(&tmp, env_opts.no_subdir);
    if env_opts.no_subdir {
        // The lock file belongs to the temporary name; a new one comes with the next open.
        let _ = std::fs::remove_file(lock_path(target));
    }
    result
}

/// Opens a fresh LMDB (creating it) for a build, with `MDB_NOSYNC`.
pub fn open_new(path: &Path, env_opts: &EnvOptions) -> Result<Arc<Env>, crate::lmdb::LmdbError> {
    let opts = EnvOptions {
        create: true,
        read_only: false,
        // Address space only: the file grows with what is written.
        map_size: if env_opts.map_size == 0 {
            16 << 30
        } else {
            env_opts.map_size
        },
        ..env_opts.clone()
    };
    if !opts.no_subdir {
        let _ = std::fs::create_dir_all(path);
    }
    let env = Env::open(path, &opts)?;
    // Commits need not reach the disk one by one: a build that does not complete is thrown
    // away, and `build_new` syncs once at the end.
    env.set_no_sync(true)?;
    Ok(env)
}

fn temporary_path(target: &Path) -> PathBuf {
    let mut name = target.file_name().unwrap_or_default().to_os_string();
    name.push(format!(".restoring-{}", std::process::id()));
    target.with_file_name(name)
}

fn lock_path(path: &Path) -> PathBuf {
    let mut s = path.as_os_str().to_os_string();
    s.push("-lock");
    PathBuf::from(s)
}

/// Removes what a (failed or renamed) build left under `path`.
fn remove_lmdb(path: &Path, no_subdir: bool) {
    if no_subdir {
        let _ = std::fs::remove_file(path);
        let _ = std::fs::remove_file(lock_path(path));
    } else {
        let _ = std::fs::remove_dir_all(path);
    }
}
