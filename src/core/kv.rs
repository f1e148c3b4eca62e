//! One entry as the merge rule and the snapshot format see it: key, application value (without
//! the LS header), header timestamp and the synced header flags.

/// One entry as it travels in a snapshot: application value without header, header timestamp,
/// header flags masked to the synced bits.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct KvRef<'a> {
    pub key: &'a [u8],
    pub value: &'a [u8],
    pub timestamp_nano: u64,
    pub flags: u32,
}

/// An owned [`KvRef`], for tests and tools.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OwnedKv {
    pub key: Vec<u8>,
    pub value: Vec<u8>,
    pub timestamp_nano: u64,
    pub flags: u32,
}

impl From<KvRef<'_>> for OwnedKv {
    fn from(kv: KvRef<'_>) -> Self {
        OwnedKv {
            key: kv.key.to_vec(),
            value: kv.value.to_vec(),
            timestamp_nano: kv.timestamp_nano,
            flags: kv.flags,
        }
    }
}
