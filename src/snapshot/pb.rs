// Automatically generated rust module for 'snapshot.proto' file, by pb-rs 0.10:
//   pb-rs -s -o src/snapshot/pb.rs proto/snapshot.proto
// Do not edit; regenerate instead. Used to cross-check the hand-written codec in tests.

#![allow(non_snake_case)]
#![allow(non_upper_case_globals)]
#![allow(non_camel_case_types)]
#![allow(unused_imports)]
#![allow(unknown_lints)]
#![allow(clippy::all)]
#![cfg_attr(rustfmt, rustfmt_skip)]


use std::borrow::Cow;
use quick_protobuf::{MessageInfo, MessageRead, MessageWrite, BytesReader, Writer, WriterBackend, Result};
use quick_protobuf::sizeofs::*;
use super::*;

#[allow(clippy::derive_partial_eq_without_eq)]
#[derive(Debug, Default, PartialEq, Clone)]
pub struct KV<'a> {
    pub key: Cow<'a, [u8]>,
    pub value: Cow<'a, [u8]>,
    pub timestampNano: u64,
    pub flags: u32,
}

impl<'a> MessageRead<'a> for KV<'a> {
    fn from_reader(r: &mut BytesReader, bytes: &'a [u8]) -> Result<Self> {
        let mut msg = Self::default();
        while !r.is_eof() {
            match r.next_tag(bytes) {
                Ok(10) => msg.key = r.read_bytes(bytes).map(Cow::Borrowed)?,
                Ok(18) => msg.value = r.read_bytes(bytes).map(Cow::Borrowed)?,
                Ok(25) => msg.timestampNano = r.read_fixed64(bytes)?,
                Ok(32) => msg.flags = r.read_uint32(bytes)?,
                Ok(t) => { r.read_unknown(bytes, t)?; }
                Err(e) => return Err(e),
            }
        }
        Ok(msg)
    }
}

impl<'a> MessageWrite for KV<'a> {
    fn get_size(&self) -> usize {
        0
        + if self.key == Cow::Borrowed(b"") { 0 } else { 1 + sizeof_len((&self.key).len()) }
        + if self.value == Cow::Borrowed(b"") { 0 } else { 1 + sizeof_len((&self.value).len()) }
        + if self.timestampNano == 0u64 { 0 } else { 1 + 8 }
        + if self.flags == 0u32 { 0 } else { 1 + sizeof_varint(*(&self.flags) as u64) }
    }

    fn write_message<W: WriterBackend>(&self, w: &mut Writer<W>) -> Result<()> {
        if self.key != Cow::Borrowed(b"") { w.write_with_tag(10, |w| w.write_bytes(&**&self.key))?; }
        if self.value != Cow::Borrowed(b"") { w.write_with_tag(18, |w| w.write_bytes(&**&self.value))?; }
        if self.timestampNano != 0u64 { w.write_with_tag(25, |w| w.write_fixed64(*&self.timestampNano))?; }
        if self.flags != 0u32 { w.write_with_tag(32, |w| w.write_uint32(*&self.flags))?; }
        Ok(())
    }
}

#[allow(clippy::derive_partial_eq_without_eq)]
#[derive(Debug, Default, PartialEq, Clone)]
pub struct DBI<'a> {
    pub name: Cow<'a, str>,
    pub entries: Vec<KV<'a>>,
    pub flags: u64,
    pub transform: Cow<'a, str>,
}

impl<'a> MessageRead<'a> for DBI<'a> {
    fn from_reader(r: &mut BytesReader, bytes: &'a [u8]) -> Result<Self> {
        let mut msg = Self::default();
        while !r.is_eof() {
            match r.next_tag(bytes) {
                Ok(10) => msg.name = r.read_string(bytes).map(Cow::Borrowed)?,
                Ok(18) => msg.entries.push(r.read_message::<KV>(bytes)?),
                Ok(24) => msg.flags = r.read_uint64(bytes)?,
                Ok(34) => msg.transform = r.read_string(bytes).map(Cow::Borrowed)?,
                Ok(t) => { r.read_unknown(bytes, t)?; }
                Err(e) => return Err(e),
            }
        }
        Ok(msg)
    }
}

impl<'a> MessageWrite for DBI<'a> {
    fn get_size(&self) -> usize {
        0
        + if self.name == "" { 0 } else { 1 + sizeof_len((&self.name).len()) }
        + self.entries.iter().map(|s| 1 + sizeof_len((s).get_size())).sum::<usize>()
        + if self.flags == 0u64 { 0 } else { 1 + sizeof_varint(*(&self.flags) as u64) }
        + if self.transform == "" { 0 } else { 1 + sizeof_len((&self.transform).len()) }
    }

    fn write_message<W: WriterBackend>(&self, w: &mut Writer<W>) -> Result<()> {
        if self.name != "" { w.write_with_tag(10, |w| w.write_string(&**&self.name))?; }
        for s in &self.entries { w.write_with_tag(18, |w| w.write_message(s))?; }
        if self.flags != 0u64 { w.write_with_tag(24, |w| w.write_uint64(*&self.flags))?; }
        if self.transform != "" { w.write_with_tag(34, |w| w.write_string(&**&self.transform))?; }
        Ok(())
    }
}

#[allow(clippy::derive_partial_eq_without_eq)]
#[derive(Debug, Default, PartialEq, Clone)]
pub struct Snapshot<'a> {
    pub formatVersion: u32,
    pub compatVersion: u32,
    pub meta: Option<mod_Snapshot::Meta<'a>>,
    pub databases: Vec<DBI<'a>>,
}

impl<'a> MessageRead<'a> for Snapshot<'a> {
    fn from_reader(r: &mut BytesReader, bytes: &'a [u8]) -> Result<Self> {
        let mut msg = Self::default();
        while !r.is_eof() {
            match r.next_tag(bytes) {
                Ok(8) => msg.formatVersion = r.read_uint32(bytes)?,
                Ok(32) => msg.compatVersion = r.read_uint32(bytes)?,
                Ok(18) => msg.meta = Some(r.read_message::<mod_Snapshot::Meta>(bytes)?),
                Ok(26) => msg.databases.push(r.read_message::<DBI>(bytes)?),
                Ok(t) => { r.read_unknown(bytes, t)?; }
                Err(e) => return Err(e),
            }
        }
        Ok(msg)
    }
}

impl<'a> MessageWrite for Snapshot<'a> {
    fn get_size(&self) -> usize {
        0
        + if self.formatVersion == 0u32 { 0 } else { 1 + sizeof_varint(*(&self.formatVersion) as u64) }
        + if self.compatVersion == 0u32 { 0 } else { 1 + sizeof_varint(*(&self.compatVersion) as u64) }
        + self.meta.as_ref().map_or(0, |m| 1 + sizeof_len((m).get_size()))
        + self.databases.iter().map(|s| 1 + sizeof_len((s).get_size())).sum::<usize>()
    }

    fn write_message<W: WriterBackend>(&self, w: &mut Writer<W>) -> Result<()> {
        if self.formatVersion != 0u32 { w.write_with_tag(8, |w| w.write_uint32(*&self.formatVersion))?; }
        if self.compatVersion != 0u32 { w.write_with_tag(32, |w| w.write_uint32(*&self.compatVersion))?; }
        if let Some(ref s) = self.meta { w.write_with_tag(18, |w| w.write_message(s))?; }
        for s in &self.databases { w.write_with_tag(26, |w| w.write_message(s))?; }
        Ok(())
    }
}

pub mod mod_Snapshot {

use std::borrow::Cow;
use super::*;

#[allow(clippy::derive_partial_eq_without_eq)]
#[derive(Debug, Default, PartialEq, Clone)]
pub struct Meta<'a> {
    pub generationID: Cow<'a, str>,
    pub instanceID: Cow<'a, str>,
    pub hostname: Cow<'a, str>,
    pub lmdbTxnID: i64,
    pub timestampNano: u64,
    pub databaseName: Cow<'a, str>,
    pub fromLmdbTxnID: i64,
}

impl<'a> MessageRead<'a> for Meta<'a> {
    fn from_reader(r: &mut BytesReader, bytes: &'a [u8]) -> Result<Self> {
        let mut msg = Self::default();
        while !r.is_eof() {
            match r.next_tag(bytes) {
                Ok(10) => msg.generationID = r.read_string(bytes).map(Cow::Borrowed)?,
                Ok(18) => msg.instanceID = r.read_string(bytes).map(Cow::Borrowed)?,
                Ok(26) => msg.hostname = r.read_string(bytes).map(Cow::Borrowed)?,
                Ok(32) => msg.lmdbTxnID = r.read_int64(bytes)?,
                Ok(41) => msg.timestampNano = r.read_fixed64(bytes)?,
                Ok(58) => msg.databaseName = r.read_string(bytes).map(Cow::Borrowed)?,
                Ok(64) => msg.fromLmdbTxnID = r.read_int64(bytes)?,
                Ok(t) => { r.read_unknown(bytes, t)?; }
                Err(e) => return Err(e),
            }
        }
        Ok(msg)
    }
}

impl<'a> MessageWrite for Meta<'a> {
    fn get_size(&self) -> usize {
        0
        + if self.generationID == "" { 0 } else { 1 + sizeof_len((&self.generationID).len()) }
        + if self.instanceID == "" { 0 } else { 1 + sizeof_len((&self.instanceID).len()) }
        + if self.hostname == "" { 0 } else { 1 + sizeof_len((&self.hostname).len()) }
        + if self.lmdbTxnID == 0i64 { 0 } else { 1 + sizeof_varint(*(&self.lmdbTxnID) as u64) }
        + if self.timestampNano == 0u64 { 0 } else { 1 + 8 }
        + if self.databaseName == "" { 0 } else { 1 + sizeof_len((&self.databaseName).len()) }
        + if self.fromLmdbTxnID == 0i64 { 0 } else { 1 + sizeof_varint(*(&self.fromLmdbTxnID) as u64) }
    }

    fn write_message<W: WriterBackend>(&self, w: &mut Writer<W>) -> Result<()> {
        if self.generationID != "" { w.write_with_tag(10, |w| w.write_string(&**&self.generationID))?; }
        if self.instanceID != "" { w.write_with_tag(18, |w| w.write_string(&**&self.instanceID))?; }
        if self.hostname != "" { w.write_with_tag(26, |w| w.write_string(&**&self.hostname))?; }
        if self.lmdbTxnID != 0i64 { w.write_with_tag(32, |w| w.write_int64(*&self.lmdbTxnID))?; }
        if self.timestampNano != 0u64 { w.write_with_tag(41, |w| w.write_fixed64(*&self.timestampNano))?; }
        if self.databaseName != "" { w.write_with_tag(58, |w| w.write_string(&**&self.databaseName))?; }
        if self.fromLmdbTxnID != 0i64 { w.write_with_tag(64, |w| w.write_int64(*&self.fromLmdbTxnID))?; }
        Ok(())
    }
}

}

