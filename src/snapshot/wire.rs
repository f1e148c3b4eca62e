//! Protobuf wire primitives shared by the snapshot encoder and decoder: varints, tags and a
//! reader over an in-memory message that reports where it failed. Lengths are 64-bit throughout
//! because DBI messages over 2 GiB are legal in this format.

pub const WT_VARINT: u8 = 0;
pub const WT_FIXED64: u8 = 1;
pub const WT_LEN: u8 = 2;
pub const WT_FIXED32: u8 = 5;

pub fn varint_len(mut v: u64) -> u64 {
    let mut n = 1;
    while v >= 0x80 {
        v >>= 7;
        n += 1;
    }
    n
}

pub fn put_varint(out: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        out.push((v as u8) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

/// Length of a length-delimited field with a one-byte tag.
pub fn len_field_len(body: u64) -> u64 {
    1 + varint_len(body) + body
}

/// Reads protobuf values from a complete message held in memory.
pub struct SliceReader<'a> {
    pub buf: &'a [u8],
    pub pos: usize,
}

impl<'a> SliceReader<'a> {
    pub fn new(buf: &'a [u8]) -> Self {
        SliceReader { buf, pos: 0 }
    }

    pub fn done(&self) -> bool {
        self.pos >= self.buf.len()
    }

    pub fn varint(&mut self) -> Result<u64, String> {
        let mut v: u64 = 0;
        for shift in (0..70).step_by(7) {
            let Some(&b) = self.buf.get(self.pos) else {
                return Err("truncated varint".into());
            };
            self.pos += 1;
            if shift == 63 && b > 1 {
                return Err("varint overflows 64 bits".into());
            }
            v |= u64::from(b & 0x7f) << shift;
            if b < 0x80 {
                return Ok(v);
            }
        }
        Err("varint longer than 10 bytes".into())
    }

    pub fn fixed64(&mut self) -> Result<u64, String> {
        let b = self
            .buf
            .get(self.pos..self.pos + 8)
            .ok_or_else(|| "truncated fixed64".to_string())?;
        self.pos += 8;
        Ok(u64::from_le_bytes(b.try_into().expect("8 bytes")))
    }

    pub fn bytes(&mut self) -> Result<&'a [u8], String> {
        let len = self.varint()?;
        let left = (self.buf.len() - self.pos) as u64;
        if len > left {
            return Err(format!(
                "length {len} runs past the end of the message ({left} bytes left)"
            ));
        }
        let b = &self.buf[self.pos..self.pos + len as usize];
        self.pos += len as usize;
        Ok(b)
    }

    /// Skips a field of an unknown number.
    pub fn skip(&mut self, wire_type: u8) -> Result<(), String> {
        match wire_type {
            WT_VARINT => self.varint().map(|_| ()),
            WT_FIXED64 => self.fixed64().map(|_| ()),
            WT_LEN => self.bytes().map(|_| ()),
            WT_FIXED32 => {
                if self.buf.len() - self.pos < 4 {
                    return Err("truncated fixed32".into());
                }
                self.pos += 4;
                Ok(())
            }
            other => Err(format!("unsupported wire type {other}")),
        }
    }

    /// The next tag as (field number, wire type).
    pub fn tag(&mut self) -> Result<(u64, u8), String> {
        let t = self.varint()?;
        Ok((t >> 3, (t & 7) as u8))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn varints() {
        for v in [0u64, 1, 127, 128, 300, 1 << 31, 1 << 35, u64::MAX] {
            let mut b = Vec::new();
            put_varint(&mut b, v);
            assert_eq!(b.len() as u64, varint_len(v));
            let mut r = SliceReader::new(&b);
            assert_eq!(r.varint().unwrap(), v);
            assert!(r.done());
        }
        assert!(SliceReader::new(&[0x80]).varint().is_err());
        assert!(SliceReader::new(&[0xff; 11]).varint().is_err());
        assert!(
            SliceReader::new(&[0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x02])
                .varint()
                .is_err()
        );
        // a 2 GiB+ length is representable
        assert_eq!(len_field_len(3 << 30), 1 + 5 + (3 << 30));
    }

    #[test]
    fn bytes_and_skip() {
        let mut r = SliceReader::new(&[0x03, b'a', b'b', b'c', 0x05, b'x']);
        assert_eq!(r.bytes().unwrap(), b"abc");
        assert!(r.bytes().is_err());
        let mut r = SliceReader::new(&[1, 2, 3, 4, 5]);
        assert!(r.skip(WT_FIXED32).is_ok());
        assert!(r.skip(WT_FIXED64).is_err());
        assert!(SliceReader::new(&[0]).skip(3).is_err());
    }
}
