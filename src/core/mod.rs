//! The pure core every other module stands on: the value header, the last-writer-wins rule,
//! object names, shadow naming and the `dupsort_hack_v1` transform, LMDB's DBI flag constants,
//! and the text renderings of keys, sizes and times. Functions over bytes and numbers only: no
//! I/O, threads or clocks (a current time is always passed in), so all of it is unit-tested
//! without a file system or a timer, and it depends on no other module of the crate.

pub mod display;
pub mod flags;
pub mod header;
pub mod kv;
pub mod lww;
pub mod name;
pub mod shadow;
