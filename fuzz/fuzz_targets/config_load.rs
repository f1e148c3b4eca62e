//! The configuration loader on arbitrary text: environment expansion, YAML, strict decoding,
//! validation, and for accepted configs the effective-config printer and the storage backend
//! option parsers. Pure parsing: no file is read or written, and the environment is a fixed
//! table, not the process's.

#![no_main]

use libfuzzer_sys::fuzz_target;
use lightningstream::config::parse_with_env;

fn env(name: &str) -> Option<String> {
    match name {
        "LS_INSTANCE" => Some("fuzz".into()),
        "LS_DATA" => Some("/nonexistent/data".into()),
        "LSV_SCHEMA_TRACKS_CHANGES" | "LSV_DUPSORT_HACK" => Some("true".into()),
        "LSV_HEADER_EXTRA_PADDING_BLOCK" => Some("false".into()),
        "EVIL" => Some("${EVIL} $EVIL \n: - [".into()),
        _ => None,
    }
}

fuzz_target!(|data: &[u8]| {
    // A config file that is not UTF-8 fails to be read at all; its repaired text still goes
    // through the parser, which is what is fuzzed.
    let text = String::from_utf8_lossy(data);
    match parse_with_env(&text, "fuzz.yaml", env) {
        Ok(cfg) => {
            drop(cfg.effective_yaml());
            cfg.validate().expect("a loaded config validates again");
            if let Err(e) = cfg.fs_options() {
                drop(e.to_string());
            }
            if let Err(e) = cfg.s3_options() {
                drop(e.to_string());
            }
        }
        Err(e) => drop(e.to_string()),
    }
});
