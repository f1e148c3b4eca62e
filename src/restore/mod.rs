//! Point-in-time restore: retention of objects under a separate prefix, and rebuilding a db's
//! state as of a past moment from them. `plan` decides (pure) which objects rebuild a moment
//! and which retained ones a policy keeps; `archive` copies objects into the retained prefix
//! and prunes it; `build` merges a plan's objects into a new LMDB with the same merge rule as
//! sync; `live` writes selected keys of such a state back into a live LMDB as new writes, so
//! the undo propagates like any change; `pdns` knows PowerDNS Auth's LMDB schema well enough
//! to select one zone's keys; `progress` is the periodic progress line of long restores.

pub mod archive;
pub mod build;
pub mod live;
pub mod pdns;
pub mod plan;
pub mod progress;

/// Retained objects live under this prefix (a subdirectory of an `fs` root, a key prefix after
/// an S3 bucket's `global_prefix`) with their original names: the normal listing of `<db>__`
/// never returns them, so neither the receivers nor any cleaner (ours or the Go version's)
/// ever see them.
pub const RETAINED_PREFIX: &str = "_retained";
