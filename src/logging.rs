//! Log output in the three formats of the Go version (`human`, `logfmt`, `json`) with its
//! timestamp modes, on stderr, through the `log` facade with structured key-values
//! (`log::info!(db = name; "Stored snapshot")`). Field names and messages follow upstream so that
//! existing log searches keep working; the exact byte layout of logrus is not reproduced.

use std::fmt::Write as _;
use std::io::{IsTerminal, Write};
use std::time::Instant;

use jiff::Timestamp;
use log::kv::{Key, Value, VisitSource};
use log::{Level, LevelFilter, Log, Metadata, Record};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Format {
    Human,
    Logfmt,
    Json,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TimestampMode {
    Short,
    Disable,
    Full,
}

#[derive(Clone, Copy, Debug)]
pub struct LogOptions {
    pub level: LevelFilter,
    pub format: Format,
    pub timestamp: TimestampMode,
}

/// logrus level names, case-insensitive; `panic` and `fatal` map to error, the closest `log` has.
pub fn parse_level(s: &str) -> Result<LevelFilter, String> {
    match s.to_ascii_lowercase().as_str() {
        "panic" | "fatal" | "error" => Ok(LevelFilter::Error),
        "warn" | "warning" => Ok(LevelFilter::Warn),
        "info" | "" => Ok(LevelFilter::Info),
        "debug" => Ok(LevelFilter::Debug),
        "trace" => Ok(LevelFilter::Trace),
        _ => Err(format!(
            "invalid log level {s:?}: must be one of: debug, info, warning, error, fatal"
        )),
    }
}

pub fn parse_format(s: &str) -> Result<Format, String> {
    match s {
        "human" | "" => Ok(Format::Human),
        "logfmt" => Ok(Format::Logfmt),
        "json" => Ok(Format::Json),
        _ => Err(format!(
            "invalid log format {s:?}: must be one of: human, logfmt, json"
        )),
    }
}

pub fn parse_timestamp(s: &str) -> Result<TimestampMode, String> {
    match s {
        "short" | "" => Ok(TimestampMode::Short),
        "disable" => Ok(TimestampMode::Disable),
        "full" => Ok(TimestampMode::Full),
        _ => Err(format!(
            "invalid log timestamp {s:?}: must be one of: short, disable, full"
        )),
    }
}

struct Logger {
    opts: LogOptions,
    tty: bool,
    start: Instant,
}

/// Installs the logger for the whole process. Called once, after the config is loaded; a second
/// call only changes the level (the `log` facade allows one logger per process).
pub fn init(opts: LogOptions) {
    let logger = Logger {
        opts,
        tty: std::io::stderr().is_terminal(),
        start: Instant::now(),
    };
    // Err only means a logger is already installed (tests, repeated init); keep that one.
    let _ = log::set_boxed_logger(Box::new(logger));
    log::set_max_level(opts.level);
}

fn level_name(level: Level) -> &'static str {
    match level {
        Level::Error => "error",
        Level::Warn => "warning",
        Level::Info => "info",
        Level::Debug => "debug",
        Level::Trace => "trace",
    }
}

#[derive(Default)]
struct Fields(Vec<(String, String)>);

impl<'kvs> VisitSource<'kvs> for Fields {
    fn visit_pair(&mut self, key: Key<'kvs>, value: Value<'kvs>) -> Result<(), log::kv::Error> {
        self.0.push((key.as_str().to_string(), value.to_string()));
        Ok(())
    }
}

/// logfmt needs quotes unless the value is a plain token (the logrus rule).
fn logfmt_value(v: &str) -> String {
    let plain = !v.is_empty()
        && v.chars()
            .all(|c| c.is_ascii_alphanumeric() || "-._/@^+:".contains(c));
    if plain {
        v.to_string()
    } else {
        serde_json::to_string(v).unwrap_or_else(|_| format!("{v:?}"))
    }
}

impl Logger {
    fn time_string(&self, full: bool) -> String {
        let now = Timestamp::now();
        let zoned = now.to_zoned(jiff::tz::TimeZone::system());
        if full {
            zoned.strftime("%Y-%m-%dT%H:%M:%S%.3f%:z").to_string()
        } else {
            zoned.strftime("%Y-%m-%dT%H:%M:%S%:z").to_string()
        }
    }

    fn render(&self, record: &Record) -> String {
        let mut fields = Fields::default();
        let _ = record.key_values().visit(&mut fields);
        let msg = record.args().to_string();
        let full = self.opts.timestamp == TimestampMode::Full;
        let with_time = self.opts.timestamp != TimestampMode::Disable;
        let mut out = String::with_capacity(128);
        match self.opts.format {
            Format::Json => {
                let mut map = serde_json::Map::new();
                for (k, v) in fields.0 {
                    map.insert(k, serde_json::Value::String(v));
                }
                map.insert("level".into(), level_name(record.level()).into());
                map.insert("msg".into(), msg.into());
                if with_time {
                    map.insert("time".into(), self.time_string(full).into());
                }
                out = serde_json::Value::Object(map).to_string();
            }
            Format::Human if self.tty => {
                let (tag, color) = match record.level() {
                    Level::Error => ("ERRO", 31),
                    Level::Warn => ("WARN", 33),
                    Level::Info => ("INFO", 36),
                    Level::Debug => ("DEBU", 37),
                    Level::Trace => ("TRAC", 37),
                };
                let _ = write!(out, "\x1b[{color}m{tag}\x1b[0m");
                match self.opts.timestamp {
                    TimestampMode::Short => {
                        let _ = write!(out, "[{:04}]", self.start.elapsed().as_secs());
                    }
                    TimestampMode::Full => {
                        let _ = write!(out, "[{}]", self.time_string(true));
                    }
                    TimestampMode::Disable => {}
                }
                let db = fields.0.iter().find(|(k, _)| k == "db").map(|(_, v)| v);
                let prefix = db.map(|d| format!("[{d:<14}] ")).unwrap_or_default();
                let _ = write!(out, " {prefix}{msg:<44}");
                for (k, v) in &fields.0 {
                    if k != "db" {
                        let _ = write!(out, " \x1b[{color}m{k}\x1b[0m={}", logfmt_value(v));
                    }
                }
            }
            Format::Human | Format::Logfmt => {
                if with_time {
                    let _ = write!(out, "time=\"{}\" ", self.time_string(full));
                }
                let _ = write!(
                    out,
                    "level={} msg={}",
                    level_name(record.level()),
                    logfmt_value(&msg)
                );
                for (k, v) in &fields.0 {
                    let _ = write!(out, " {k}={}", logfmt_value(v));
                }
            }
        }
        out
    }
}

impl Log for Logger {
    fn enabled(&self, metadata: &Metadata) -> bool {
        // Libraries' debug chatter (the HTTP client's per-request lines) is not for operators.
        let ours = metadata.target().starts_with("lightningstream");
        metadata.level() <= self.opts.level && (ours || metadata.level() <= Level::Warn)
    }

    fn log(&self, record: &Record) {
        if !self.enabled(record.metadata()) {
            return;
        }
        let mut line = self.render(record);
        line.push('\n');
        // One write per line so that lines of concurrent threads never interleave; with
        // progress bars on screen, between two of their redraws.
        let _ = crate::progress::suspend(|| std::io::stderr().lock().write_all(line.as_bytes()));
    }

    fn flush(&self) {
        let _ = std::io::stderr().flush();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn logger(format: Format, timestamp: TimestampMode) -> Logger {
        Logger {
            opts: LogOptions {
                level: LevelFilter::Debug,
                format,
                timestamp,
            },
            tty: false,
            start: Instant::now(),
        }
    }

    fn render(l: &Logger) -> String {
        let kvs: [(&str, &str); 2] = [("db", "main"), ("snapshot_name", "a b")];
        let args = format_args!("Stored snapshot");
        let record = Record::builder()
            .level(Level::Warn)
            .args(args)
            .key_values(&kvs)
            .build();
        l.render(&record)
    }

    #[test]
    fn logfmt_lines() {
        let line = render(&logger(Format::Logfmt, TimestampMode::Disable));
        assert_eq!(
            line,
            r#"level=warning msg="Stored snapshot" db=main snapshot_name="a b""#
        );
        let timed = render(&logger(Format::Human, TimestampMode::Short));
        assert!(timed.starts_with("time=\""), "{timed}");
        assert!(
            timed.ends_with(r#"level=warning msg="Stored snapshot" db=main snapshot_name="a b""#)
        );
    }

    #[test]
    fn json_lines() {
        let line = render(&logger(Format::Json, TimestampMode::Disable));
        let v: serde_json::Value = serde_json::from_str(&line).unwrap();
        assert_eq!(v["level"], "warning");
        assert_eq!(v["msg"], "Stored snapshot");
        assert_eq!(v["db"], "main");
        assert_eq!(v["snapshot_name"], "a b");
        assert!(v.get("time").is_none());
    }

    #[test]
    fn option_parsing() {
        assert_eq!(parse_level("WARNING").unwrap(), LevelFilter::Warn);
        assert_eq!(parse_level("fatal").unwrap(), LevelFilter::Error);
        assert!(parse_level("loud").is_err());
        assert!(parse_format("xml").is_err());
        assert_eq!(parse_timestamp("disable").unwrap(), TimestampMode::Disable);
    }
}
