//! The 24-byte Lightning Stream value header (spec/format.md §3) that PowerDNS Auth 4.8+ and
//! Lightning Stream put before every value in a native-mode DBI: big-endian timestamp and txn ID,
//! version 0, flags (0x01 = deleted), reserved bytes, and a count of 8-byte extension blocks.
//! Parsing is exactly as strict as the Go version's, no more: readers elsewhere depend on it.

/// Size of the fixed part of the header.
pub const HEADER_SIZE: usize = 24;
/// The entry is a tombstone; its application value is empty.
pub const FLAG_DELETED: u8 = 0x01;
/// The only flags carried in snapshots and written back by merges.
pub const FLAG_SYNC_MASK: u8 = 0x01;
const BLOCK_SIZE: usize = 8;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ValueHeader {
    /// Nanoseconds since the UNIX epoch of the last change.
    pub timestamp: u64,
    /// LMDB transaction that last wrote the value (local to one LMDB).
    pub txn_id: u64,
    pub version: u8,
    pub flags: u8,
    /// Number of 8-byte extension blocks after the fixed header.
    pub num_extra: u16,
}

impl ValueHeader {
    pub fn is_deleted(&self) -> bool {
        self.flags & FLAG_DELETED != 0
    }
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum HeaderError {
    #[error("value too short to contain a header ({len} bytes, need {need})")]
    TooShort { len: usize, need: usize },
    #[error("unsupported header version or not a header (version byte {0})")]
    Version(u8),
}

fn be64(b: &[u8]) -> u64 {
    let mut a = [0u8; 8];
    a.copy_from_slice(&b[..8]);
    u64::from_be_bytes(a)
}

/// Splits a stored value into its header and the application value after any extension blocks.
pub fn parse(value: &[u8]) -> Result<(ValueHeader, &[u8]), HeaderError> {
    if value.len() < HEADER_SIZE {
        return Err(HeaderError::TooShort {
            len: value.len(),
            need: HEADER_SIZE,
        });
    }
    if value[16] != 0 {
        return Err(HeaderError::Version(value[16]));
    }
    let num_extra = u16::from_be_bytes([value[22], value[23]]);
    let start = HEADER_SIZE + BLOCK_SIZE * usize::from(num_extra);
    if value.len() < start {
        return Err(HeaderError::TooShort {
            len: value.len(),
            need: start,
        });
    }
    let h = ValueHeader {
        timestamp: be64(&value[0..8]),
        txn_id: be64(&value[8..16]),
        version: 0,
        flags: value[17],
        num_extra,
    };
    Ok((h, &value[start..]))
}

/// Appends a header (version 0, reserved 0) to `out`, with one all-zero extension block when
/// `padding_block` (the `header_extra_padding_block` test option). The app value is not added.
pub fn write_header(
    out: &mut Vec<u8>,
    timestamp: u64,
    txn_id: u64,
    flags: u8,
    padding_block: bool,
) {
    out.extend_from_slice(&timestamp.to_be_bytes());
    out.extend_from_slice(&txn_id.to_be_bytes());
    out.push(0);
    out.push(flags);
    out.extend_from_slice(&[0, 0, 0, 0]);
    if padding_block {
        out.extend_from_slice(&1u16.to_be_bytes());
        out.extend_from_slice(&[0; BLOCK_SIZE]);
    } else {
        out.extend_from_slice(&0u16.to_be_bytes());
    }
}

/// The first 8 bytes as a big-endian timestamp: the whole header of pre-0.3 shadow values.
pub fn timestamp_prefix(value: &[u8]) -> Option<u64> {
    (value.len() >= 8).then(|| be64(value))
}

#[cfg(test)]
mod tests {
    use super::*;

    const T: u64 = 1_641_092_645_012_345_678;

    fn hex(s: &str) -> Vec<u8> {
        s.split_whitespace()
            .map(|b| u8::from_str_radix(b, 16).unwrap())
            .collect()
    }

    /// The vectors of format.md §5.
    #[test]
    fn spec_vectors() {
        let mut v = Vec::new();
        write_header(&mut v, T, 7, 0, false);
        v.push(b'1');
        assert_eq!(
            v,
            hex("16 c6 55 10 d5 77 93 4e 00 00 00 00 00 00 00 07 00 00 00 00 00 00 00 00 31")
        );
        let (h, app) = parse(&v).unwrap();
        assert_eq!(
            (h.timestamp, h.txn_id, h.flags, h.num_extra, app),
            (T, 7, 0, 0, &b"1"[..])
        );

        let mut d = Vec::new();
        write_header(&mut d, T, 7, FLAG_DELETED, false);
        assert_eq!(
            d,
            hex("16 c6 55 10 d5 77 93 4e 00 00 00 00 00 00 00 07 00 01 00 00 00 00 00 00")
        );
        assert!(parse(&d).unwrap().0.is_deleted());
        assert!(parse(&d).unwrap().1.is_empty());

        let mut p = Vec::new();
        write_header(&mut p, T, 7, 0, true);
        p.push(b'1');
        assert_eq!(
            p,
            hex(
                "16 c6 55 10 d5 77 93 4e 00 00 00 00 00 00 00 07 00 00 00 00 00 00 00 01 00 00 00 00 00 00 00 00 31"
            )
        );
        assert_eq!(parse(&p).unwrap().1, b"1");
    }

    #[test]
    fn edge_cases() {
        assert_eq!(
            parse(b"short"),
            Err(HeaderError::TooShort { len: 5, need: 24 })
        );
        let mut v = vec![0u8; 24];
        v[16] = 1;
        assert_eq!(parse(&v), Err(HeaderError::Version(1)));
        // extension blocks announced but missing
        let mut v = vec![0u8; 24];
        v[23] = 2;
        v.extend_from_slice(&[0; 8]);
        assert_eq!(parse(&v), Err(HeaderError::TooShort { len: 32, need: 40 }));
        v.extend_from_slice(&[9; 8]);
        v.extend_from_slice(b"app");
        let (h, app) = parse(&v).unwrap();
        assert_eq!((h.num_extra, app), (2, &b"app"[..]));
        // reserved bytes and unknown flags are not validated
        let mut v = vec![0u8; 24];
        v[17] = 0xfe;
        v[18..22].copy_from_slice(&[1, 2, 3, 4]);
        let (h, _) = parse(&v).unwrap();
        assert_eq!(h.flags, 0xfe);
        assert!(!h.is_deleted());
        assert_eq!(timestamp_prefix(&T.to_be_bytes()), Some(T));
        assert_eq!(timestamp_prefix(b"1234567"), None);
    }
}
