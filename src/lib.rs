//! Lightning Stream in Rust: syncs LMDB databases (above all PowerDNS Authoritative's LMDB
//! backend) through an object store, compatible with the Go implementation's bucket objects,
//! value headers, configuration and command line.

pub mod display;
pub mod storage;
pub mod logging;
pub mod cli;
pub mod commands;
pub mod merge;
pub mod syncer;
pub mod config;
pub mod header;
pub mod lmdb;
pub mod snapshot;
