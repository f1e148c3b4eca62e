//! The snapshot format (spec/format.md §1–§2): object names, and a streaming encoder and
//! decoder for gzip(protobuf `Snapshot`). Both directions work one entry at a time so memory
//! does not grow with the dataset; the encoder reproduces the Go writer's field order byte for
//! byte, the decoder accepts anything a protobuf encoder may legally produce. Pure code: no
//! clocks, threads or sockets.

pub mod decode;
pub mod encode;
#[cfg(test)]
#[allow(clippy::all, dead_code, unused_imports, non_snake_case, non_camel_case_types)]
#[rustfmt::skip]
mod pb;
mod wire;

/// Format version written, and the oldest reader version that can read what we write.
pub const FORMAT_VERSION: u32 = 3;
pub const COMPAT_VERSION: u32 = 1;
/// Highest `compatVersion` this reader understands.
pub const READER_VERSION: u32 = 3;
pub const TRANSFORM_DUPSORT_HACK: &[u8] = b"dupsort_hack_v1";

/// Snapshot metadata. Strings are raw bytes: the Go version never validates their UTF-8.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Meta {
    pub generation_id: Vec<u8>,
    pub instance_id: Vec<u8>,
    pub hostname: Vec<u8>,
    pub lmdb_txn_id: i64,
    pub timestamp_nano: u64,
    pub database_name: Vec<u8>,
    pub from_lmdb_txn_id: i64,
}

pub use crate::core::kv::{KvRef, OwnedKv};

/// The header fields of a DBI message.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct DbiInfo {
    pub name: Vec<u8>,
    pub flags: u64,
    pub transform: Vec<u8>,
}
