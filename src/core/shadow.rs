//! Shadow-mode naming and the `dupsort_hack_v1` key transform (spec/merge.md §5–§7): the
//! `_sync_shadow_X` twin of a user DBI, and the unique, order-preserving key that stands for one
//! (key, duplicate) pair of a DUPSORT DBI in snapshots. The transactional passes that use them
//! live in `import::shadow`.

use super::display::key_for_humans;
use super::flags::{MAX_KEY_SIZE, MDB_INTEGERKEY};

pub const SHADOW_PREFIX: &[u8] = b"_sync_shadow_";
/// The only flag a shadow DBI takes from its main DBI: the same key order.
pub const ALLOWED_SHADOW_FLAGS: u32 = MDB_INTEGERKEY;
const DUPSORT_HACK_MAX_KEY: usize = 255;

/// The shadow DBI of user DBI `dbi`.
pub fn shadow_name(dbi: &[u8]) -> Vec<u8> {
    let mut n = SHADOW_PREFIX.to_vec();
    n.extend_from_slice(dbi);
    n
}

/// dupsort_hack_v1: a unique key for one (key, duplicate) pair, ordered like the pairs.
pub fn dupsort_encode(key: &[u8], value: &[u8]) -> Result<Vec<u8>, String> {
    if key.is_empty() {
        return Err("empty key not supported by dupsort_hack".into());
    }
    if key.len() > DUPSORT_HACK_MAX_KEY {
        return Err(format!(
            "key size exceeds dupsort_hack max size of {DUPSORT_HACK_MAX_KEY}: key {}",
            key_for_humans(key)
        ));
    }
    let mut e = Vec::with_capacity(MAX_KEY_SIZE);
    e.extend_from_slice(key);
    e.extend_from_slice(&[0, 0, 0, 0]);
    let room = MAX_KEY_SIZE - e.len() - 1;
    e.extend_from_slice(&value[..value.len().min(room)]);
    e.push(key.len() as u8);
    Ok(e)
}

/// The original key of a dupsort_hack_v1 key.
pub fn dupsort_decode(e: &[u8]) -> Result<&[u8], String> {
    let bad = |what: &str| {
        format!(
            "not a valid dupsort_hack dump ({what}): key {}",
            key_for_humans(e)
        )
    };
    if e.len() < 6 {
        return Err(bad("key"));
    }
    let n = usize::from(e[e.len() - 1]);
    if e.len() < n + 5 {
        return Err(bad("key len"));
    }
    if e[n..n + 4] != [0, 0, 0, 0] {
        return Err(bad("no separator"));
    }
    Ok(&e[..n])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dupsort_hack_bytes() {
        assert_eq!(
            dupsort_encode(b"key", b"val").unwrap(),
            [0x6b, 0x65, 0x79, 0, 0, 0, 0, 0x76, 0x61, 0x6c, 3]
        );
        let long = dupsort_encode(b"key", &[b'A'; 1000]).unwrap();
        assert_eq!(long.len(), 511);
        assert_eq!(&long[7..510], &[b'A'; 503][..]);
        assert_eq!(dupsort_encode(b"key", b"").unwrap(), b"key\0\0\0\0\x03");
        assert!(dupsort_encode(b"", b"v").is_err());
        assert!(dupsort_encode(&[1; 256], b"v").is_err());
        assert_eq!(
            dupsort_decode(&dupsort_encode(b"key", b"val").unwrap()).unwrap(),
            b"key"
        );
        assert!(dupsort_decode(b"key").unwrap_err().contains("(key)"));
        assert!(
            dupsort_decode(b"abcdef\x09")
                .unwrap_err()
                .contains("(key len)")
        );
        assert!(
            dupsort_decode(b"key\0\x01\0\0\x03")
                .unwrap_err()
                .contains("(no separator)")
        );
    }
}
