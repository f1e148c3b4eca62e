//! Reading a config file: environment expansion, strict YAML parsing with the Go defaults, and
//! the validation rules with the Go messages, every error located by file, key and line.

use std::path::Path;

use super::*;

/// Finds the line of a dotted key path in YAML text (block or flow style): the first line at or
/// after the parent's line where `key:` appears. Good enough to point a person at the spot.
fn locate(text: &str, path: &str) -> Option<usize> {
    let lines: Vec<&str> = text.lines().collect();
    let mut from = 0;
    for part in path.split('.') {
        let found = (from..lines.len()).find(|&i| {
            let l = lines[i].split(" #").next().unwrap_or("");
            let t = l.trim_start().trim_start_matches("- ");
            t.starts_with(&format!("{part}:"))
                || l.contains(&format!("{{{part}:"))
                || l.contains(&format!(" {part}:"))
                || t.starts_with(&format!("\"{part}\":"))
        })?;
        from = found;
    }
    Some(from + 1)
}

/// The line of `value` in the list under the dotted key `path`: the first line at or after the
/// key's own line that contains it.
fn locate_value(text: &str, path: &str, value: &str) -> Option<usize> {
    let from = locate(text, path)?;
    let value = value.trim();
    if value.is_empty() {
        return Some(from);
    }
    text.lines()
        .enumerate()
        .skip(from - 1)
        .find(|(_, l)| l.contains(value))
        .map(|(i, _)| i + 1)
        .or(Some(from))
}

pub(super) struct Source<'a> {
    pub(super) file: &'a str,
    pub(super) text: &'a str,
}

impl Source<'_> {
    pub(super) fn error(&self, key: &str, message: impl Into<String>) -> ConfigError {
        ConfigError {
            file: self.file.to_string(),
            key: Some(key.to_string()),
            line: locate(self.text, key),
            column: None,
            message: message.into(),
        }
    }

    /// An error about one item of a list, located at the item's line.
    pub(super) fn item_error(
        &self,
        key: &str,
        value: &str,
        message: impl Into<String>,
    ) -> ConfigError {
        ConfigError {
            line: locate_value(self.text, key, value),
            ..self.error(key, message)
        }
    }

    pub(super) fn yaml_error(
        &self,
        e: serde_path_to_error::Error<serde_norway::Error>,
    ) -> ConfigError {
        let path = e.path().to_string();
        let inner = e.into_inner();
        let loc = inner.location();
        let mut message = inner.to_string();
        // serde_norway appends " at line L column C"; we print the location ourselves.
        if let Some(i) = message.rfind(" at line ") {
            message.truncate(i);
        }
        let mut key = (path != "." && !path.is_empty()).then_some(path);
        // For unknown fields the path is the enclosing mapping; point at the field itself.
        if let Some(field) = message
            .strip_prefix("unknown field `")
            .or_else(|| message.split(": unknown field `").nth(1))
            .and_then(|m| m.split('`').next())
        {
            key = Some(match key {
                Some(k) => format!("{k}.{field}"),
                None => field.to_string(),
            });
        }
        // The line of the key when we can find it; serde_norway's location otherwise (it is
        // exact for syntax errors but points at the document start for value errors).
        let found = key.as_deref().and_then(|k| locate(self.text, k));
        let (line, column) = match (found, &loc) {
            (Some(l), _) => (Some(l), None),
            (None, Some(loc)) => (Some(loc.line()), Some(loc.column())),
            (None, None) => (None, None),
        };
        ConfigError {
            file: self.file.to_string(),
            key,
            line,
            column,
            message,
        }
    }
}

/// Reads, expands, parses and validates a config file.
pub fn load(path: &Path) -> Result<Config, ConfigError> {
    let file = path.display().to_string();
    let text = std::fs::read_to_string(path).map_err(|e| ConfigError {
        file: file.clone(),
        key: None,
        line: None,
        column: None,
        message: format!("open yaml file: {e}"),
    })?;
    parse_str(&text, &file)
}

/// As [`load`] on text already read; `source` names the file in messages.
pub fn parse_str(text: &str, source: &str) -> Result<Config, ConfigError> {
    parse_with_env(text, source, |k| std::env::var(k).ok())
}

/// As [`parse_str`] with an explicit environment (tests never touch the process environment).
pub fn parse_with_env(
    text: &str,
    source: &str,
    env: impl Fn(&str) -> Option<String>,
) -> Result<Config, ConfigError> {
    let expanded = expand_env(text, env);
    let src = Source {
        file: source,
        text: &expanded,
    };
    // An empty document is an empty config, not an error.
    let mut cfg: Config = if expanded.trim().is_empty() {
        defaults()
    } else {
        serde_path_to_error::deserialize(serde_norway::Deserializer::from_str(&expanded))
            .map_err(|e| src.yaml_error(e))?
    };
    cfg.validate_in(&src)?;
    if !cfg.storage.root_path.is_empty() {
        log::warn!("storage.root_path is deprecated, use storage.options.root_path");
        cfg.storage.options.insert(
            serde_norway::Value::String("root_path".into()),
            serde_norway::Value::String(cfg.storage.root_path.clone()),
        );
    }
    cfg.source = ConfigSource {
        file: source.to_string(),
        text: expanded,
    };
    Ok(cfg)
}

fn check_mask(src: &Source, key: &str, v: u32) -> Result<(), ConfigError> {
    if v > 0o777 {
        let short = key.rsplit('.').next().unwrap_or(key);
        return Err(src.error(
            key,
            format!("lmdb.options.{short}: too large value, possible use of decimal ({v}) instead of octal ({v:#o})")
                .replace("0o", "0"),
        ));
    }
    Ok(())
}

/// Go's `net.SplitHostPort` acceptance: `host:port`, `[v6]:port`, `:port`.
fn check_host_port(addr: &str) -> Result<(), String> {
    let (host, port) = if let Some(rest) = addr.strip_prefix('[') {
        let (h, p) = rest
            .split_once(']')
            .ok_or_else(|| format!("address {addr}: missing ']' in address"))?;
        let p = p
            .strip_prefix(':')
            .ok_or_else(|| format!("address {addr}: missing port in address"))?;
        (h, p)
    } else {
        let (h, p) = addr
            .rsplit_once(':')
            .ok_or_else(|| format!("address {addr}: missing port in address"))?;
        if h.contains(':') {
            return Err(format!("address {addr}: too many colons in address"));
        }
        (h, p)
    };
    // Go accepts empty host and port parts; so do we.
    let _ = (host, port);
    Ok(())
}

impl Config {
    /// `retention:` windows nest (`all` <= `hourly` <= `daily` where set), and a cleaner that
    /// archives must see every object before any cleaner with its `must_keep_interval` may
    /// delete it: its runs (every `interval` +20 %) must come more often than that.
    fn validate_retention(&self, src: &Source) -> Result<(), ConfigError> {
        let r = &self.retention;
        if r.is_off() {
            return Ok(());
        }
        for (k, v) in [("all", r.all), ("hourly", r.hourly), ("daily", r.daily)] {
            if v.0 < 0 {
                let key = format!("retention.{k}");
                return Err(src.error(&key, format!("{key}: must not be negative")));
            }
        }
        if !r.hourly.is_zero() && r.hourly < r.all {
            return Err(src.error(
                "retention.hourly",
                "retention.hourly: must not be shorter than retention.all",
            ));
        }
        if !r.daily.is_zero() && (r.daily < r.all || r.daily < r.hourly) {
            return Err(src.error(
                "retention.daily",
                "retention.daily: must not be shorter than retention.all and retention.hourly",
            ));
        }
        let c = &self.storage.cleanup;
        if c.enabled && c.interval.0 / 5 * 6 >= c.must_keep_interval.0 {
            return Err(src.error(
                "storage.cleanup.interval",
                format!(
                    "storage.cleanup.interval: with retention, must be below must_keep_interval / 1.2 \
                     ({}), so that objects are archived before any cleaner may delete them",
                    GoDuration(c.must_keep_interval.0 / 6 * 5)
                ),
            ));
        }
        Ok(())
    }

    /// The validation of spec/config.md §10, in Go's order and with its messages.
    pub fn validate(&self) -> Result<(), ConfigError> {
        self.validate_in(&Source {
            file: "config",
            text: "",
        })
    }

    fn validate_in(&self, src: &Source) -> Result<(), ConfigError> {
        if crate::logging::parse_level(&self.log.level).is_err() {
            return Err(src.error(
                "log.level",
                "log.level: must be one of: debug, info, warning, error, fatal",
            ));
        }
        if crate::logging::parse_format(&self.log.format).is_err() {
            return Err(src.error(
                "log.format",
                "log.format: must be one of: human, logfmt, json",
            ));
        }
        if crate::logging::parse_timestamp(&self.log.timestamp).is_err() {
            return Err(src.error(
                "log.timestamp",
                "log.timestamp: must be one of: short, disable, full",
            ));
        }
        if self.lmdbs.is_empty() {
            return Err(src.error("lmdbs", "no LMDBs configured"));
        }
        for (name, l) in &self.lmdbs {
            let key = |k: &str| format!("lmdbs.{name}.{k}");
            if l.path.is_empty() {
                return Err(src.error(
                    &format!("lmdbs.{name}"),
                    format!("lmdb {name:?}: no path configured"),
                ));
            }
            check_mask(src, &key("options.file_mask"), l.options.file_mask)?;
            check_mask(src, &key("options.dir_mask"), l.options.dir_mask)?;
            if l.schema_tracks_changes && l.dupsort_hack {
                return Err(src.error(
                    &key("dupsort_hack"),
                    "lmdb.schema_tracks_changes: cannot be used together with the dupsort_hack option",
                ));
            }
        }
        if !self.http.address.is_empty() {
            check_host_port(&self.http.address)
                .map_err(|e| src.error("http.address", format!("http.address: {e}")))?;
        }
        let min = GoDuration::from_millis(100);
        for (k, v) in [
            ("lmdb_poll_interval", self.lmdb_poll_interval),
            ("storage_poll_interval", self.storage_poll_interval),
            ("storage_retry_interval", self.storage_retry_interval),
        ] {
            if v < min {
                return Err(src.error(k, format!("{k}: too short interval")));
            }
        }
        for (k, v) in [
            ("merge_lock_duration", self.merge_lock_duration),
            ("merge_release_duration", self.merge_release_duration),
        ] {
            if v.0 < 0 {
                return Err(src.error(k, format!("{k}: must not be negative")));
            }
        }
        if self.deltas.enabled {
            if self.deltas.full_snapshot_interval < GoDuration::from_secs(1) {
                return Err(src.error(
                    "deltas.full_snapshot_interval",
                    "deltas.full_snapshot_interval: too short interval (minimum 1s)",
                ));
            }
            if self.deltas.max_deltas < 1 {
                return Err(src.error(
                    "deltas.max_deltas",
                    "deltas.max_deltas: positive number required",
                ));
            }
        }
        self.validate_encryption(src)?;
        self.validate_retention(src)?;
        let f = self.storage_force_snapshot_interval;
        if !f.is_zero() && f < GoDuration::from_secs(60) {
            return Err(src.error(
                "storage_force_snapshot_interval",
                "storage_force_snapshot_interval: too short interval (minimum 1m if enabled)",
            ));
        }
        for (k, v) in [
            ("storage_retry_count", self.storage_retry_count),
            (
                "memory_downloaded_snapshots",
                self.memory_downloaded_snapshots,
            ),
            (
                "memory_decompressed_snapshots",
                self.memory_decompressed_snapshots,
            ),
        ] {
            if v < 1 {
                return Err(src.error(k, format!("{k}: positive number required")));
            }
        }
        Ok(())
    }

    /// Every recipient must parse and every identity file must be usable (readable, holding
    /// identities, not accessible to other users), so a bad key stops the program at start.
    /// Messages never repeat a key: a secret pasted in the wrong place stays out of the log.
    fn validate_encryption(&self, src: &Source) -> Result<(), ConfigError> {
        let e = &self.encryption;
        for (i, r) in e.recipients.iter().enumerate() {
            if let Err(err) = crate::crypt::parse_recipient(r) {
                return Err(src.item_error(
                    "encryption.recipients",
                    r,
                    format!("encryption.recipients[{i}]: {err}"),
                ));
            }
        }
        for f in &e.identity_files {
            if let Err(err) = crate::crypt::read_identity_file(Path::new(f)) {
                return Err(src.item_error(
                    "encryption.identity_files",
                    f,
                    format!("encryption.identity_files: {err}"),
                ));
            }
        }
        if !e.recipients.is_empty() && e.identity_files.is_empty() {
            log::warn!(
                "encryption.recipients without identity_files: this instance cannot read encrypted objects, not even its own"
            );
        }
        Ok(())
    }

    /// The effective config as YAML for `--log-config`: Go-style durations and sizes, and the
    /// secret option keys masked.
    pub fn effective_yaml(&self) -> String {
        serde_norway::to_string(self).unwrap_or_else(|e| format!("(cannot print config: {e})"))
    }
}
