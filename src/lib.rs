//! Lightning Stream in Rust: syncs LMDB databases (above all PowerDNS Authoritative's LMDB
//! backend) through an object store, compatible with the Go implementation's bucket objects,
//! value headers, configuration and command line.
//!
//! Layers, each using only those below it (README "Layout"; `tests/module-graph.py` checks it):
//! `core` (pure rules and formats) and `base`; the `lmdb` wrapper, the `snapshot` codec,
//! `crypt` (age encryption of stored objects), `config`, `logging`, `metrics`, `retry`; `storage` backends and the threaded `pipeline`;
//! `export` (LMDB to objects) and `import` (objects to LMDB); `status`; `syncer`; `commands`.

// `unsafe` is confined to the LMDB wrapper, which allows it for itself.
#![deny(unsafe_code)]

pub mod base;
pub mod cli;
pub mod commands;
pub mod config;
pub mod core;
pub mod crypt;
pub mod export;
pub mod import;
#[allow(unsafe_code)]
pub mod lmdb;
pub mod logging;
pub mod metrics;
pub mod pipeline;
pub mod progress;
pub mod restore;
pub mod retry;
pub mod snapshot;
pub mod status;
pub mod storage;
pub mod syncer;
#[cfg(test)]
mod testutil;
