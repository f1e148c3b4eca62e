//! LMDB's persistent DBI flags as numbers and as text: the values snapshots carry in
//! `DBI.flags`, the names `override_create_flags` accepts, and the canonical rendering the
//! commands and the status page print. Shared by the LMDB wrapper, the codec and the config, so
//! it sits at the bottom and none of them needs another for a constant.

pub const MDB_REVERSEKEY: u32 = 0x02;
pub const MDB_DUPSORT: u32 = 0x04;
pub const MDB_INTEGERKEY: u32 = 0x08;
pub const MDB_DUPFIXED: u32 = 0x10;
pub const MDB_INTEGERDUP: u32 = 0x20;
pub const MDB_REVERSEDUP: u32 = 0x40;
/// Every flag that is stored with a DBI (the ones snapshots carry).
pub const PERSISTENT_DBI_FLAGS: u32 = 0x7e;
/// LMDB 0.9's compiled-in key size limit.
pub const MAX_KEY_SIZE: usize = 511;
const DBI_FLAG_NAMES: [(u32, &str, &str); 6] = [
    (0x02, "MDB_REVERSEKEY", "ReverseKey"),
    (0x04, "MDB_DUPSORT", "DupSort"),
    (0x08, "MDB_INTEGERKEY", "IntegerKey"),
    (0x10, "MDB_DUPFIXED", "DupFixed"),
    (0x20, "MDB_INTEGERDUP", "IntegerDup"),
    (0x40, "MDB_REVERSEDUP", "ReverseDup"),
];

/// `override_create_flags` text: names (with or without `MDB_`) or numbers joined by `|`, `,`,
/// `+` or spaces.
pub fn parse_dbi_flags(text: &str) -> Result<u32, String> {
    let mut flags = 0;
    for part in text.split(['|', ',', '+', ' ']) {
        let p = part.trim().to_ascii_uppercase();
        if p.is_empty() {
            continue;
        }
        let named = DBI_FLAG_NAMES
            .iter()
            .find(|(_, c, _)| *c == p || c.strip_prefix("MDB_") == Some(p.as_str()));
        let v = match named {
            Some((v, _, _)) => *v,
            None => {
                let n = match p.strip_prefix("0X") {
                    Some(h) => u32::from_str_radix(h, 16).ok(),
                    None => p.parse::<u32>().ok(),
                };
                match n {
                    Some(n) if n <= 0xffff && n & !0x7e == 0 => n,
                    _ => return Err(format!("invalid persistent DBI flag: {}", part.trim())),
                }
            }
        };
        flags |= v;
    }
    Ok(flags)
}

/// The canonical text of DBI flags: `MDB_DUPSORT|MDB_DUPFIXED`, `UNKNOWN:0x..` for the rest.
pub fn dbi_flags_string(flags: u64) -> String {
    let mut parts = Vec::new();
    let mut left = flags;
    for (v, name, _) in DBI_FLAG_NAMES {
        if flags & u64::from(v) != 0 {
            parts.push(name.to_string());
            left &= !u64::from(v);
        }
    }
    if left != 0 {
        parts.push(format!("UNKNOWN:0x{left:x}"));
    }
    parts.join("|")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dbi_flags() {
        assert_eq!(parse_dbi_flags("MDB_DUPSORT|MDB_DUPFIXED"), Ok(0x14));
        assert_eq!(parse_dbi_flags("dupsort, integerkey"), Ok(0x0c));
        assert_eq!(parse_dbi_flags("0x14"), Ok(0x14));
        assert_eq!(parse_dbi_flags("8"), Ok(8));
        assert_eq!(parse_dbi_flags(""), Ok(0));
        assert!(parse_dbi_flags("MDB_CREATE").is_err());
        assert!(parse_dbi_flags("0x1").is_err());
        assert!(parse_dbi_flags("bogus").is_err());
        assert_eq!(dbi_flags_string(0x14), "MDB_DUPSORT|MDB_DUPFIXED");
        assert_eq!(dbi_flags_string(0), "");
        assert_eq!(dbi_flags_string(0x8004), "MDB_DUPSORT|UNKNOWN:0x8000");
    }
}
