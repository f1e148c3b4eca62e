//! Text renderings shared by the commands and the logs, matching the Go version's output so that
//! operators' scripts keep working: `DisplayASCII` for keys and values, binary human sizes for
//! `stats`, and Go's `time.Time.String()` form for timestamps in `snapshots dump`.

use jiff::Timestamp;
use jiff::tz::TimeZone;

/// 2022-01-01T00:00:00Z: values whose first 8 bytes decode to a later instant are assumed to
/// start with an LS header timestamp (the Go heuristic).
const PLAUSIBLE_TS_START_NS: i64 = 1_640_995_200_000_000_000;
const THIRTY_DAYS_NS: i64 = 30 * 86_400 * 1_000_000_000;

/// Go's `utils.DisplayASCII`: printable ASCII with `.` for other bytes, plus the hex bytes when
/// the text alone would be ambiguous, plus the RFC 3339 time when the value starts with a
/// plausible LS header timestamp. `now_ns` is the current time (passed in to keep this pure).
pub fn display_ascii(b: &[u8], now_ns: i64) -> String {
    let mut unsafe_bytes = false;
    let text: String = b
        .iter()
        .map(|&c| {
            if (0x20..=0x7e).contains(&c) {
                c as char
            } else {
                unsafe_bytes = true;
                '.'
            }
        })
        .collect();
    let mut ts_string = None;
    if b.len() >= 8 {
        let ns = i64::from_be_bytes(b[..8].try_into().expect("8 bytes"));
        if ns > PLAUSIBLE_TS_START_NS && ns < now_ns.saturating_add(THIRTY_DAYS_NS) {
            ts_string = Some(rfc3339_nano(ns));
        }
    }
    if unsafe_bytes || b.len() <= 8 || ts_string.is_some() {
        let hex: Vec<String> = b.iter().map(|c| format!("{c:02x}")).collect();
        let mut s = format!("{text} [{}]", hex.join(" "));
        if let Some(ts) = ts_string {
            s.push_str(&format!(" ({ts})"));
        }
        s
    } else {
        text
    }
}

/// RFC 3339 in UTC with the fraction trimmed of trailing zeros (Go's `time.RFC3339Nano`).
pub fn rfc3339_nano(ns: i64) -> String {
    let (secs, frac) = (ns.div_euclid(1_000_000_000), ns.rem_euclid(1_000_000_000));
    let ts = Timestamp::from_second(secs).unwrap_or(Timestamp::UNIX_EPOCH);
    let base = ts.strftime("%Y-%m-%dT%H:%M:%S").to_string();
    format!("{base}{}Z", fraction(frac as u32))
}

/// `.nnnnnnnnn` with trailing zeros removed, or nothing for a whole second.
fn fraction(frac: u32) -> String {
    if frac == 0 {
        return String::new();
    }
    let s = format!(".{frac:09}");
    s.trim_end_matches('0').to_string()
}

/// Go's `time.Time.String()` for a nanosecond timestamp in the given zone:
/// `2022-01-02 03:04:05.012345678 +0000 UTC`.
pub fn go_time_string(ns: i64, tz: &TimeZone) -> String {
    let (secs, frac) = (ns.div_euclid(1_000_000_000), ns.rem_euclid(1_000_000_000));
    let ts = Timestamp::from_second(secs).unwrap_or(Timestamp::UNIX_EPOCH);
    let zoned = ts.to_zoned(tz.clone());
    let abbrev = tz.to_offset_info(ts).abbreviation().to_string();
    format!(
        "{}{} {} {}",
        zoned.strftime("%Y-%m-%d %H:%M:%S"),
        fraction(frac as u32),
        zoned.strftime("%z"),
        abbrev
    )
}

/// Binary human-readable size as the Go `stats` command prints it (strictly greater-than, so
/// 1024 is `1024 B` and 4096 is `4.0 KB`).
pub fn human_size(n: u64) -> String {
    const UNITS: [(&str, u64); 6] = [
        ("EB", 1 << 60),
        ("PB", 1 << 50),
        ("TB", 1 << 40),
        ("GB", 1 << 30),
        ("MB", 1 << 20),
        ("KB", 1 << 10),
    ];
    for (unit, size) in UNITS {
        if n > size {
            return format!("{:.1} {unit}", n as f64 / size as f64);
        }
    }
    format!("{n} B")
}

/// A key for error messages: printable, and bounded so one hostile key cannot flood a log.
pub fn key_for_humans(key: &[u8]) -> String {
    let shown = &key[..key.len().min(64)];
    let mut s = format!("{:?}", String::from_utf8_lossy(shown));
    if key.len() > shown.len() {
        s.push_str(&format!("... ({} bytes)", key.len()));
    }
    s
}

/// Bytes as text for logs and messages, invalid UTF-8 replaced.
pub fn lossy(name: &[u8]) -> String {
    String::from_utf8_lossy(name).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOW: i64 = 1_795_334_374_331_784_305;

    #[test]
    fn display_ascii_matches_go() {
        assert_eq!(display_ascii(b"hello", NOW), "hello [68 65 6c 6c 6f]");
        assert_eq!(display_ascii(b"hello world", NOW), "hello world");
        assert_eq!(display_ascii(b"", NOW), " []");
        assert_eq!(display_ascii(&[0, 1, 0x61], NOW), "..a [00 01 61]");
        assert_eq!(display_ascii(b"k_absent_tomb", NOW), "k_absent_tomb");
        let mut v = vec![0x16, 0xc6, 0x55, 0x10, 0xd5, 0x77, 0x93, 0x4e];
        v.extend_from_slice(&[0, 0, 0, 0, 0, 0, 0, 0x0b, 0, 0, 0, 0, 0, 0, 0, 0, 0x31]);
        assert_eq!(
            display_ascii(&v, NOW),
            "..U..w.N................1 [16 c6 55 10 d5 77 93 4e 00 00 00 00 00 00 00 0b 00 00 00 00 00 00 00 00 31] (2022-01-02T03:04:05.012345678Z)"
        );
    }

    #[test]
    fn go_time_strings() {
        let t = 1_641_092_645_012_345_678;
        assert_eq!(
            go_time_string(t, &TimeZone::UTC),
            "2022-01-02 03:04:05.012345678 +0000 UTC"
        );
        assert_eq!(
            go_time_string(0, &TimeZone::UTC),
            "1970-01-01 00:00:00 +0000 UTC"
        );
        let ams = TimeZone::get("Europe/Amsterdam").unwrap();
        assert_eq!(
            go_time_string(1, &ams),
            "1970-01-01 01:00:00.000000001 +0100 CET"
        );
        assert_eq!(rfc3339_nano(t), "2022-01-02T03:04:05.012345678Z");
        assert_eq!(
            rfc3339_nano(1_641_092_645_000_000_000),
            "2022-01-02T03:04:05Z"
        );
    }

    #[test]
    fn human_sizes() {
        assert_eq!(human_size(0), "0 B");
        assert_eq!(human_size(1024), "1024 B");
        assert_eq!(human_size(4096), "4.0 KB");
        assert_eq!(human_size(8192), "8.0 KB");
        assert_eq!(human_size(67_108_864), "64.0 MB");
    }
}
