//! Scalar types of the config with Go's formats: durations (`time.ParseDuration` syntax, bare
//! integers are nanoseconds), sizes with binary units (`1000MB`), file modes in YAML 1.1 octal
//! (`0664`), DBI flag lists, YAML 1.1 booleans (`yes`, `on`), and the null handling of Go's
//! yaml.v2 (an empty value is the zero value). serde_norway follows YAML 1.2, so each of these
//! reads the raw scalar itself.

use std::fmt;

use serde::de::{self, Deserializer, Visitor};
use serde::{Deserialize, Serialize, Serializer};

use crate::core::flags::parse_dbi_flags;

const NS: i128 = 1;
const US: i128 = 1_000;
const MS: i128 = 1_000_000;
const SEC: i128 = 1_000_000_000;
const MIN: i128 = 60 * SEC;
const HOUR: i128 = 60 * MIN;

/// A Go `time.Duration`: signed nanoseconds.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Default, Hash)]
pub struct GoDuration(pub i64);

impl GoDuration {
    pub const fn from_secs(s: i64) -> Self {
        GoDuration(s * 1_000_000_000)
    }

    pub const fn from_millis(ms: i64) -> Self {
        GoDuration(ms * 1_000_000)
    }

    /// As a std duration; negative values become zero.
    pub fn as_std(&self) -> std::time::Duration {
        std::time::Duration::from_nanos(self.0.max(0) as u64)
    }

    pub fn from_std(d: std::time::Duration) -> Self {
        GoDuration(i64::try_from(d.as_nanos()).unwrap_or(i64::MAX))
    }

    pub fn is_zero(&self) -> bool {
        self.0 == 0
    }

    pub fn as_nanos(&self) -> i64 {
        self.0
    }
}

impl std::str::FromStr for GoDuration {
    type Err = String;

    /// Go's `time.ParseDuration`.
    fn from_str(orig: &str) -> Result<Self, String> {
        let err = || format!("time: invalid duration {orig:?}");
        let mut s = orig;
        let mut neg = false;
        if let Some(rest) = s.strip_prefix('-') {
            neg = true;
            s = rest;
        } else if let Some(rest) = s.strip_prefix('+') {
            s = rest;
        }
        if s == "0" {
            return Ok(GoDuration(0));
        }
        if s.is_empty() {
            return Err(err());
        }
        let mut total: i128 = 0;
        while !s.is_empty() {
            let int_len = s.bytes().take_while(u8::is_ascii_digit).count();
            let (int_part, rest) = s.split_at(int_len);
            let (frac_part, rest) = match rest.strip_prefix('.') {
                Some(r) => {
                    let n = r.bytes().take_while(u8::is_ascii_digit).count();
                    r.split_at(n)
                }
                None => ("", rest),
            };
            if int_part.is_empty() && frac_part.is_empty() {
                return Err(err());
            }
            let unit_len = rest
                .char_indices()
                .find(|(_, c)| *c == '.' || c.is_ascii_digit())
                .map_or(rest.len(), |(i, _)| i);
            let (unit, rest) = rest.split_at(unit_len);
            let scale = match unit {
                "ns" => NS,
                "us" | "µs" | "μs" => US,
                "ms" => MS,
                "s" => SEC,
                "m" => MIN,
                "h" => HOUR,
                "" => return Err(format!("time: missing unit in duration {orig:?}")),
                u => return Err(format!("time: unknown unit {u:?} in duration {orig:?}")),
            };
            let v: i128 = if int_part.is_empty() {
                0
            } else {
                int_part.parse().map_err(|_| err())?
            };
            let mut part = v.checked_mul(scale).ok_or_else(err)?;
            if !frac_part.is_empty() {
                // Fractions beyond nanosecond precision are truncated, as in Go.
                let digits = &frac_part[..frac_part.len().min(30)];
                let f: i128 = digits.parse().map_err(|_| err())?;
                part += f * scale / 10i128.pow(digits.len() as u32);
            }
            total = total.checked_add(part).ok_or_else(err)?;
            if total > i128::from(i64::MAX) + i128::from(neg) {
                return Err(err());
            }
            s = rest;
        }
        let v = if neg { -total } else { total };
        Ok(GoDuration(v as i64))
    }
}

/// `v` with `prec` fractional digits, trailing zeros trimmed (Go's `fmtFrac` + `fmtInt`).
fn frac(v: u128, prec: u32) -> String {
    let div = 10u128.pow(prec);
    let (int, fr) = (v / div, v % div);
    if fr == 0 {
        return int.to_string();
    }
    let f = format!("{fr:0width$}", width = prec as usize);
    format!("{int}.{}", f.trim_end_matches('0'))
}

impl fmt::Display for GoDuration {
    /// Go's `Duration.String()`: `0s`, `1.5ms`, `1m0s`, `168h0m0s`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let neg = self.0 < 0;
        let u = u128::from(self.0.unsigned_abs());
        let sign = if neg { "-" } else { "" };
        let s = if u == 0 {
            "0s".to_string()
        } else if u < SEC as u128 {
            if u < US as u128 {
                format!("{u}ns")
            } else if u < MS as u128 {
                format!("{}µs", frac(u, 3))
            } else {
                format!("{}ms", frac(u, 6))
            }
        } else {
            let secs = frac(u % MIN as u128, 9);
            let mins = u / MIN as u128;
            if mins == 0 {
                format!("{secs}s")
            } else if mins < 60 {
                format!("{mins}m{secs}s")
            } else {
                format!("{}h{}m{secs}s", mins / 60, mins % 60)
            }
        };
        write!(f, "{sign}{s}")
    }
}

/// What a YAML scalar looked like, as far as serde_norway lets us see.
enum Scalar {
    Null,
    Bool(bool),
    Int(i128),
    Float(f64),
    Str(String),
}

struct ScalarVisitor;

impl Visitor<'_> for ScalarVisitor {
    type Value = Scalar;
    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a scalar value")
    }
    fn visit_unit<E>(self) -> Result<Scalar, E> {
        Ok(Scalar::Null)
    }
    fn visit_none<E>(self) -> Result<Scalar, E> {
        Ok(Scalar::Null)
    }
    fn visit_bool<E>(self, v: bool) -> Result<Scalar, E> {
        Ok(Scalar::Bool(v))
    }
    fn visit_i64<E>(self, v: i64) -> Result<Scalar, E> {
        Ok(Scalar::Int(v.into()))
    }
    fn visit_u64<E>(self, v: u64) -> Result<Scalar, E> {
        Ok(Scalar::Int(v.into()))
    }
    fn visit_i128<E>(self, v: i128) -> Result<Scalar, E> {
        Ok(Scalar::Int(v))
    }
    fn visit_u128<E: de::Error>(self, v: u128) -> Result<Scalar, E> {
        i128::try_from(v)
            .map(Scalar::Int)
            .map_err(|_| E::custom("integer too large"))
    }
    fn visit_f64<E>(self, v: f64) -> Result<Scalar, E> {
        Ok(Scalar::Float(v))
    }
    fn visit_str<E>(self, v: &str) -> Result<Scalar, E> {
        Ok(Scalar::Str(v.to_string()))
    }
    fn visit_string<E>(self, v: String) -> Result<Scalar, E> {
        Ok(Scalar::Str(v))
    }
}

fn scalar<'de, D: Deserializer<'de>>(d: D) -> Result<Scalar, D::Error> {
    d.deserialize_any(ScalarVisitor)
}

/// YAML 1.1 integers as Go's yaml.v2 reads them: `0664` octal, `0o`, `0x`, `0b`, `_` separators.
pub fn parse_yaml11_int(s: &str) -> Option<i128> {
    let t: String = s.chars().filter(|&c| c != '_').collect();
    let (neg, t) = match t.strip_prefix('-') {
        Some(r) => (true, r.to_string()),
        None => (false, t.strip_prefix('+').unwrap_or(&t).to_string()),
    };
    let v = if let Some(h) = t.strip_prefix("0x") {
        i128::from_str_radix(h, 16).ok()?
    } else if let Some(b) = t.strip_prefix("0b") {
        i128::from_str_radix(b, 2).ok()?
    } else if let Some(o) = t.strip_prefix("0o") {
        i128::from_str_radix(o, 8).ok()?
    } else if t.len() > 1 && t.starts_with('0') {
        i128::from_str_radix(&t[1..], 8).ok()?
    } else if !t.is_empty() && t.bytes().all(|c| c.is_ascii_digit()) {
        t.parse().ok()?
    } else {
        return None;
    };
    Some(if neg { -v } else { v })
}

fn yaml11_bool(s: &str) -> Option<bool> {
    match s {
        "y" | "Y" | "yes" | "Yes" | "YES" | "true" | "True" | "TRUE" | "on" | "On" | "ON" => {
            Some(true)
        }
        "n" | "N" | "no" | "No" | "NO" | "false" | "False" | "FALSE" | "off" | "Off" | "OFF" => {
            Some(false)
        }
        _ => None,
    }
}

/// A bool field: YAML 1.1 spellings; null is false.
pub fn de_bool<'de, D: Deserializer<'de>>(d: D) -> Result<bool, D::Error> {
    match scalar(d)? {
        Scalar::Null => Ok(false),
        Scalar::Bool(b) => Ok(b),
        Scalar::Str(s) => yaml11_bool(&s)
            .ok_or_else(|| de::Error::custom(format!("cannot unmarshal {s:?} into a bool"))),
        Scalar::Int(i) => Err(de::Error::custom(format!(
            "cannot unmarshal {i} into a bool"
        ))),
        Scalar::Float(f) => Err(de::Error::custom(format!(
            "cannot unmarshal {f} into a bool"
        ))),
    }
}

fn int_from(s: Scalar, what: &str) -> Result<i128, String> {
    match s {
        Scalar::Null => Ok(0),
        Scalar::Int(i) => Ok(i),
        Scalar::Str(t) => {
            parse_yaml11_int(&t).ok_or_else(|| format!("cannot unmarshal {t:?} into {what}"))
        }
        Scalar::Bool(b) => Err(format!("cannot unmarshal {b} into {what}")),
        Scalar::Float(f) => Err(format!("cannot unmarshal {f} into {what}")),
    }
}

/// A signed integer field (YAML 1.1 forms; null is 0).
pub fn de_i64<'de, D: Deserializer<'de>>(d: D) -> Result<i64, D::Error> {
    let v = int_from(scalar(d)?, "an integer").map_err(de::Error::custom)?;
    i64::try_from(v).map_err(|_| de::Error::custom(format!("integer {v} out of range")))
}

/// An unsigned 32-bit field, e.g. `max_dbs` and file modes (`0664` is octal).
pub fn de_u32<'de, D: Deserializer<'de>>(d: D) -> Result<u32, D::Error> {
    let v = int_from(scalar(d)?, "an unsigned integer").map_err(de::Error::custom)?;
    u32::try_from(v).map_err(|_| de::Error::custom(format!("integer {v} out of range")))
}

/// A string field: any scalar keeps its literal text; null is "".
pub fn de_string<'de, D: Deserializer<'de>>(d: D) -> Result<String, D::Error> {
    Ok(match scalar(d)? {
        Scalar::Null => String::new(),
        Scalar::Bool(b) => b.to_string(),
        Scalar::Int(i) => i.to_string(),
        Scalar::Float(f) => f.to_string(),
        Scalar::Str(s) => s,
    })
}

/// A float32 field (`retention_days`).
pub fn de_f32<'de, D: Deserializer<'de>>(d: D) -> Result<f32, D::Error> {
    match scalar(d)? {
        Scalar::Null => Ok(0.0),
        Scalar::Int(i) => Ok(i as f32),
        Scalar::Float(f) => Ok(f as f32),
        Scalar::Str(s) => s
            .replace('_', "")
            .parse::<f32>()
            .map_err(|_| de::Error::custom(format!("cannot unmarshal {s:?} into a number"))),
        Scalar::Bool(b) => Err(de::Error::custom(format!(
            "cannot unmarshal {b} into a number"
        ))),
    }
}

impl<'de> Deserialize<'de> for GoDuration {
    /// A Go duration string, or a bare integer of nanoseconds; null is 0.
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        match scalar(d)? {
            Scalar::Null => Ok(GoDuration(0)),
            Scalar::Int(i) => i64::try_from(i)
                .map(GoDuration)
                .map_err(|_| de::Error::custom("duration out of range")),
            Scalar::Str(s) => s.parse().map_err(de::Error::custom),
            Scalar::Float(f) => Err(de::Error::custom(format!(
                "cannot unmarshal {f} into a duration (use a unit, e.g. \"1.5s\")"
            ))),
            Scalar::Bool(b) => Err(de::Error::custom(format!(
                "cannot unmarshal {b} into a duration"
            ))),
        }
    }
}

/// A duration that may also be whole days, `7d` (retention windows); otherwise as
/// [`GoDuration`]'s own deserializer.
pub fn de_days<'de, D: Deserializer<'de>>(d: D) -> Result<GoDuration, D::Error> {
    match scalar(d)? {
        Scalar::Str(s) => parse_days(&s).map_err(de::Error::custom),
        Scalar::Null => Ok(GoDuration(0)),
        Scalar::Int(0) => Ok(GoDuration(0)),
        _ => Err(de::Error::custom(
            "a retention window is a duration such as 24h or 7d",
        )),
    }
}

/// `<n>d` (whole days) or a Go duration.
pub fn parse_days(s: &str) -> Result<GoDuration, String> {
    if let Some(n) = s.strip_suffix('d')
        && !n.is_empty()
        && n.bytes().all(|b| b.is_ascii_digit())
    {
        let days: i64 = n.parse().map_err(|_| format!("invalid duration {s:?}"))?;
        return days
            .checked_mul(24 * HOUR as i64)
            .map(GoDuration)
            .ok_or_else(|| format!("duration {s:?} out of range"));
    }
    s.parse()
}

impl Serialize for GoDuration {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.to_string())
    }
}

const SIZE_UNITS: [(&str, u32); 7] = [
    ("EB", 60),
    ("PB", 50),
    ("TB", 40),
    ("GB", 30),
    ("MB", 20),
    ("KB", 10),
    ("B", 0),
];

/// A size as c2h5oh/datasize parses it: digits, optional spaces, optional binary unit.
pub fn parse_size(text: &str) -> Result<u64, String> {
    let err = |why: &str| format!("invalid size {text:?}: {why}");
    let n = text.bytes().take_while(u8::is_ascii_digit).count();
    if n == 0 {
        return Err(err("must start with digits"));
    }
    let v: u64 = text[..n].parse().map_err(|_| err("number too large"))?;
    let unit = text[n..].trim_start();
    if matches!(unit, "Kb" | "Mb" | "Gb" | "Tb" | "Pb" | "Eb") {
        return Err(err("bits are not supported, use a capital B"));
    }
    let shift = match unit.to_ascii_lowercase().as_str() {
        "" | "b" | "byte" => 0,
        "k" | "kb" | "kilo" | "kilobyte" | "kilobytes" => 10,
        "m" | "mb" | "mega" | "megabyte" | "megabytes" => 20,
        "g" | "gb" | "giga" | "gigabyte" | "gigabytes" => 30,
        "t" | "tb" | "tera" | "terabyte" | "terabytes" => 40,
        "p" | "pb" | "peta" | "petabyte" | "petabytes" => 50,
        "e" | "eb" | "exa" | "exabyte" | "exabytes" => 60,
        _ => return Err(err("unknown unit")),
    };
    v.checked_mul(1u64 << shift).ok_or_else(|| err("too large"))
}

/// `<n><unit>` with the largest unit that divides exactly (`1000MB`, `1GB`, `0B`).
pub fn format_size(n: u64) -> String {
    for (unit, shift) in SIZE_UNITS {
        if shift == 0 || (n != 0 && n.is_multiple_of(1u64 << shift)) {
            return format!("{}{unit}", n >> shift);
        }
    }
    format!("{n}B")
}

/// `map_size`: an integer of bytes or a size string.
pub fn de_size<'de, D: Deserializer<'de>>(d: D) -> Result<u64, D::Error> {
    match scalar(d)? {
        Scalar::Null => Ok(0),
        Scalar::Int(i) => {
            u64::try_from(i).map_err(|_| de::Error::custom(format!("invalid size {i}")))
        }
        Scalar::Str(s) => parse_size(&s).map_err(de::Error::custom),
        Scalar::Float(f) => Err(de::Error::custom(format!(
            "invalid size {f}: decimals are not supported"
        ))),
        Scalar::Bool(b) => Err(de::Error::custom(format!("invalid size {b}"))),
    }
}

/// `dbi_options.<dbi>.override_create_flags`: present (even as 0) or absent.
pub fn de_dbi_flags<'de, D: Deserializer<'de>>(d: D) -> Result<Option<u32>, D::Error> {
    let text = match scalar(d)? {
        Scalar::Null => String::new(),
        Scalar::Int(i) => i.to_string(),
        Scalar::Str(s) => s,
        Scalar::Float(f) => f.to_string(),
        Scalar::Bool(b) => b.to_string(),
    };
    parse_dbi_flags(&text).map(Some).map_err(de::Error::custom)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn d(s: &str) -> Result<i64, String> {
        s.parse::<GoDuration>().map(|d| d.0)
    }

    #[test]
    fn durations_parse_like_go() {
        assert_eq!(d("1s"), Ok(1_000_000_000));
        assert_eq!(d("500ms"), Ok(500_000_000));
        assert_eq!(d("1h30m"), Ok(5_400_000_000_000));
        assert_eq!(d("1.5h"), Ok(5_400_000_000_000));
        assert_eq!(d("0"), Ok(0));
        assert_eq!(d("-1s"), Ok(-1_000_000_000));
        assert_eq!(d("+2m"), Ok(120_000_000_000));
        assert_eq!(d(".5s"), Ok(500_000_000));
        assert_eq!(d("1µs"), Ok(1_000));
        assert_eq!(d("1us2ns"), Ok(1_002));
        assert_eq!(d("168h"), Ok(168 * 3_600_000_000_000));
        for bad in [
            "",
            "1",
            "1d",
            "s",
            "1.s.",
            "-",
            "1 s",
            "10",
            "5 minutes",
            "99999999999999999999h",
        ] {
            assert!(d(bad).is_err(), "{bad:?} accepted");
        }
    }

    #[test]
    fn durations_print_like_go() {
        for (ns, s) in [
            (0i64, "0s"),
            (1, "1ns"),
            (1_500, "1.5µs"),
            (1_500_000, "1.5ms"),
            (500_000_000, "500ms"),
            (1_000_000_000, "1s"),
            (1_500_000_000, "1.5s"),
            (60_000_000_000, "1m0s"),
            (3_600_000_000_000, "1h0m0s"),
            (168 * 3_600_000_000_000, "168h0m0s"),
            (5_400_000_000_000, "1h30m0s"),
            (-1_000_000_000, "-1s"),
        ] {
            assert_eq!(GoDuration(ns).to_string(), s);
            assert_eq!(s.parse::<GoDuration>().unwrap().0, ns, "{s}");
        }
    }

    #[test]
    fn sizes() {
        assert_eq!(parse_size("1000MB"), Ok(1_048_576_000));
        assert_eq!(parse_size("1GB"), Ok(1 << 30));
        assert_eq!(parse_size("1gb"), Ok(1 << 30));
        assert_eq!(parse_size("64 MB"), Ok(64 << 20));
        assert_eq!(parse_size("10"), Ok(10));
        assert_eq!(parse_size("2kilobytes"), Ok(2048));
        for bad in [
            "1Kb",
            "1Mb",
            "1.5GB",
            "-1",
            " 1GB",
            "1XB",
            "",
            "99999999999EB",
        ] {
            assert!(parse_size(bad).is_err(), "{bad:?} accepted");
        }
        assert_eq!(format_size(1_048_576_000), "1000MB");
        assert_eq!(format_size(1 << 30), "1GB");
        assert_eq!(format_size(0), "0B");
        assert_eq!(format_size(1000), "1000B");
    }

    #[test]
    fn yaml11_ints_and_bools() {
        assert_eq!(parse_yaml11_int("0664"), Some(436));
        assert_eq!(parse_yaml11_int("0o775"), Some(509));
        assert_eq!(parse_yaml11_int("0x1fd"), Some(509));
        assert_eq!(parse_yaml11_int("0b11"), Some(3));
        assert_eq!(parse_yaml11_int("1_000"), Some(1000));
        assert_eq!(parse_yaml11_int("0"), Some(0));
        assert_eq!(parse_yaml11_int("08"), None);
        assert_eq!(parse_yaml11_int("abc"), None);
        assert_eq!(yaml11_bool("on"), Some(true));
        assert_eq!(yaml11_bool("No"), Some(false));
        assert_eq!(yaml11_bool("nope"), None);
    }
}
