//! Lightning Stream in Rust: syncs LMDB databases (above all PowerDNS Authoritative's LMDB
//! backend) through an object store, compatible with the Go implementation's bucket objects,
//! value headers, configuration and command line.

pub mod cli;
pub mod commands;
pub mod config;
pub mod display;
pub mod header;
pub mod lmdb;
pub mod logging;
pub mod merge;
pub mod metrics;
pub mod progress;
pub mod shadow;
pub mod snapshot;
pub mod status;
pub mod storage;
pub mod syncer;
#[cfg(test)]
mod testutil;
