//! The man pages against the binary: every command, subcommand and flag that `--help` shows must
//! be in man/lightningstream.1, and every key of the effective configuration (`--log-config`)
//! must be a documented term of man/lightningstream.yaml.5. Adding a flag or a config key
//! without documenting it fails here.

use std::collections::BTreeSet;
use std::path::Path;
use std::process::Command;

const BIN: &str = env!("CARGO_BIN_EXE_lightningstream");

fn man_page(name: &str) -> String {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("man").join(name);
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// Roff source as a reader sees it: font escapes dropped, `\-` as `-`, `\e` as `\`.
fn plain(roff: &str) -> String {
    let mut s = roff.replace("\\-", "-").replace("\\e", "\\");
    for f in ["\\fB", "\\fI", "\\fR", "\\fP", "\\,", "\\/", "\\&"] {
        s = s.replace(f, "");
    }
    s
}

/// Whether `word` occurs in `text` with no name character (letter, digit, `-`, `_`) either side.
fn has_word(text: &str, word: &str) -> bool {
    let is_name = |c: char| c.is_ascii_alphanumeric() || c == '-' || c == '_';
    text.match_indices(word).any(|(i, _)| {
        let before = text[..i].chars().next_back();
        let after = text[i + word.len()..].chars().next();
        !before.is_some_and(is_name) && !after.is_some_and(is_name)
    })
}

fn help(path: &[&str]) -> String {
    let mut args: Vec<&str> = path.to_vec();
    args.push("--help");
    let o = Command::new(BIN).args(&args).output().unwrap();
    assert!(o.status.success(), "{args:?}: {o:?}");
    String::from_utf8(o.stdout).unwrap()
}

/// The command names listed under `Commands:` in a help text.
fn commands(help: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut inside = false;
    for line in help.lines() {
        if line.ends_with(':') && !line.starts_with(' ') {
            inside = line == "Commands:";
            continue;
        }
        if inside && let Some(rest) = line.strip_prefix("  ") {
            let name = rest.split_whitespace().next().unwrap_or("");
            if !rest.starts_with(' ') && !name.is_empty() {
                out.push(name.to_string());
            }
        }
    }
    out
}

/// Every `--long` flag anywhere in a help text, and the `-x` short flags of its options.
fn flags(help: &str) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    for word in help.split(|c: char| c.is_whitespace() || "[]<>(),;:".contains(c)) {
        if let Some(name) = word.strip_prefix("--")
            && name.starts_with(|c: char| c.is_ascii_lowercase())
        {
            out.insert(word.trim_end_matches('.').to_string());
        }
    }
    for line in help.lines() {
        let t = line.trim_start();
        if line.starts_with("  ")
            && let Some(short) = t.strip_suffix(',').or(t.split(", --").next())
            && short.len() == 2
            && short.starts_with('-')
            && short.as_bytes()[1].is_ascii_alphabetic()
        {
            out.insert(short.to_string());
        }
    }
    out
}

/// Walks the command tree from the top-level help: (command path, flags of its help).
fn command_tree() -> Vec<(Vec<String>, BTreeSet<String>)> {
    let mut out = Vec::new();
    let mut todo: Vec<Vec<String>> = vec![vec![]];
    while let Some(path) = todo.pop() {
        let refs: Vec<&str> = path.iter().map(String::as_str).collect();
        let text = help(&refs);
        for c in commands(&text) {
            let mut p = path.clone();
            p.push(c);
            todo.push(p);
        }
        out.push((path, flags(&text)));
    }
    out
}

#[test]
fn help_parsing_finds_what_it_should() {
    let tree = command_tree();
    let paths: BTreeSet<String> = tree.iter().map(|(p, _)| p.join(" ")).collect();
    for p in [
        "",
        "sync",
        "snapshots list",
        "snapshots dump",
        "experimental migrate-timestamps",
        "version",
    ] {
        assert!(paths.contains(p), "{p:?} not found in {paths:?}");
    }
    let all: BTreeSet<String> = tree.into_iter().flat_map(|(_, f)| f).collect();
    for f in [
        "--config",
        "-c",
        "--only-once",
        "--only-db",
        "-H",
        "--src-dbi",
    ] {
        assert!(all.contains(f), "{f} not found in {all:?}");
    }
}

#[test]
fn every_command_and_flag_is_in_lightningstream_1() {
    let man = plain(&man_page("lightningstream.1"));
    let mut missing = Vec::new();
    for (path, flags) in command_tree() {
        match path.as_slice() {
            [] => {}
            // A top-level command has its own subsection.
            [cmd] => {
                if !man.lines().any(|l| l == format!(".SS {cmd}")) {
                    missing.push(format!("command {cmd:?} (no .SS {cmd})"));
                }
            }
            // A subcommand is written with its parent: "snapshots list".
            _ => {
                let name = path.join(" ");
                if !has_word(&man, &name) {
                    missing.push(format!("command {name:?}"));
                }
            }
        }
        for f in flags {
            if !has_word(&man, &f) {
                missing.push(format!("flag {f} of {:?}", path.join(" ")));
            }
        }
    }
    assert!(
        missing.is_empty(),
        "man/lightningstream.1 lacks: {missing:#?}"
    );
}

/// The key paths of the effective configuration, except the names the user chose (db names,
/// DBI names, backend options).
fn config_keys(v: &serde_norway::Value, prefix: &str, out: &mut Vec<String>) {
    let serde_norway::Value::Mapping(m) = v else {
        return;
    };
    for (k, v) in m {
        let k = k.as_str().expect("string keys").to_string();
        let path = if prefix.is_empty() {
            k.clone()
        } else {
            format!("{prefix}.{k}")
        };
        out.push(path.clone());
        match path.as_str() {
            "lmdbs" => {
                if let serde_norway::Value::Mapping(dbs) = v {
                    for (_, db) in dbs {
                        config_keys(db, "lmdbs.<db>", out);
                    }
                }
            }
            "storage.options" | "lmdbs.<db>.dbi_options" => {}
            _ => config_keys(v, &path, out),
        }
    }
}

#[test]
fn every_config_key_is_in_lightningstream_yaml_5() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("ls.yaml");
    std::fs::create_dir(dir.path().join("bucket")).unwrap();
    std::fs::write(
        &cfg,
        format!(
            "lmdbs:\n  main:\n    path: {0}/db\n    dbi_options: {{records: {{override_create_flags: 0}}}}\n\
             storage:\n  type: fs\n  options: {{root_path: {0}/bucket}}\n",
            dir.path().display()
        ),
    )
    .unwrap();
    let o = Command::new(BIN)
        .args(["-c", cfg.to_str().unwrap()])
        .args(["--log-config", "--log-format", "json", "snapshots", "list"])
        .output()
        .unwrap();
    assert!(o.status.success(), "{o:?}");
    let stderr = String::from_utf8(o.stderr).unwrap();
    let yaml = stderr
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter_map(|v| v["msg"].as_str().map(String::from))
        .find_map(|m| {
            m.strip_prefix("Effective configuration:\n")
                .map(String::from)
        })
        .unwrap_or_else(|| panic!("no effective configuration logged: {stderr}"));
    let value: serde_norway::Value = serde_norway::from_str(&yaml).unwrap();
    let mut keys = Vec::new();
    config_keys(&value, "", &mut keys);
    assert!(keys.len() > 40, "too few keys: {keys:?}");
    assert!(keys.contains(&"storage.cleanup.must_keep_interval".to_string()));
    assert!(keys.contains(&"lmdbs.<db>.dbi_options".to_string()));

    // A key is documented when it is a term of a tagged paragraph: the line after .TP or .TQ.
    let man = plain(&man_page("lightningstream.yaml.5"));
    let lines: Vec<&str> = man.lines().collect();
    let mut terms = BTreeSet::new();
    for w in lines.windows(2) {
        if w[0] == ".TP" || w[0] == ".TQ" {
            for t in w[1].split(|c: char| c.is_whitespace() || c == '"' || c == ',') {
                terms.insert(t.to_string());
            }
        }
    }
    let missing: Vec<&String> = keys
        .iter()
        .filter(|k| !terms.contains(k.rsplit('.').next().unwrap()))
        .collect();
    assert!(
        missing.is_empty(),
        "man/lightningstream.yaml.5 lacks: {missing:#?}"
    );
    // Every top-level key has its own paragraph under TOP-LEVEL KEYS.
    let top = man
        .split(".SH TOP-LEVEL KEYS")
        .nth(1)
        .and_then(|s| s.split("\n.SH ").next())
        .expect("a TOP-LEVEL KEYS section");
    for k in keys.iter().filter(|k| !k.contains('.')) {
        assert!(
            top.contains(&format!(".TP\n.BR {k} ")),
            "{k} has no paragraph under TOP-LEVEL KEYS"
        );
    }
}
