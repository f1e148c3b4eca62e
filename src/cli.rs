//! Command-line definitions (argh) and the small argument shim that makes the Go CLI's forms
//! work: `--flag=value`, `--switch=true|false`, and global flags anywhere on the line
//! (`lightningstream sync --config x.yaml`), which argh alone rejects. The commands themselves
//! live in `commands/`; nothing here knows what they do.

use argh::FromArgs;

/// Lightning Stream syncs LMDB databases through an object store (S3 or a directory).
#[derive(FromArgs, Debug)]
pub struct Cli {
    /// config file (default: lightningstream.yaml)
    #[argh(
        option,
        short = 'c',
        default = "String::from(\"lightningstream.yaml\")"
    )]
    pub config: String,
    /// instance name; overrides `instance` from the config
    #[argh(option, short = 'i')]
    pub instance: Option<String>,
    /// set the log level to debug
    #[argh(switch)]
    pub debug: bool,
    /// log level (default: info; options: debug, info, warning, error, fatal)
    #[argh(option)]
    pub log_level: Option<String>,
    /// log format (default: human; options: human, logfmt, json)
    #[argh(option)]
    pub log_format: Option<String>,
    /// log timestamp mode (default: short; options: short, disable, full)
    #[argh(option)]
    pub log_timestamp: Option<String>,
    /// log the effective config at startup (secrets redacted)
    #[argh(switch)]
    pub log_config: bool,
    /// make sure the process PID is at least this (max 200), for LMDB reader locks in containers
    #[argh(option, default = "0")]
    pub minimum_pid: i64,
    /// exit with code 75 after this duration (Go syntax: 30s, 5m, 1h)
    #[argh(option)]
    pub timeout: Option<String>,
    /// print the version and exit
    #[argh(switch, short = 'v')]
    pub version: bool,
    #[argh(subcommand)]
    pub command: Option<Command>,
}

#[derive(FromArgs, Debug)]
#[argh(subcommand)]
pub enum Command {
    Sync(SyncCmd),
    Receive(ReceiveCmd),
    Snapshots(SnapshotsCmd),
    Dump(DumpCmd),
    Stats(StatsCmd),
    DropShadow(DropShadowCmd),
    Restore(RestoreCmd),
    Pdns(PdnsCmd),
    Experimental(ExperimentalCmd),
    Version(VersionCmd),
}

/// Rebuild a db as it was at a past moment from the retained objects (needs `retention:`):
/// into a new LMDB (--to PATH), or selected keys back into the live LMDB as new writes
/// (--dbi DBI [--key-prefix HEX]... --into-live). The global --instance restricts it to that
/// instance's objects (its own view).
#[derive(FromArgs, Debug)]
#[argh(subcommand, name = "restore")]
pub struct RestoreCmd {
    /// the moment: RFC 3339 (2026-12-04T10:00:00Z) or a duration ago (90m, 2h, 3d)
    #[argh(option)]
    pub at: String,
    /// write a new LMDB at this path (it must not exist)
    #[argh(option)]
    pub to: Option<String>,
    /// the db (name under lmdbs:); needed when several are configured
    #[argh(option, short = 'd')]
    pub db: Option<String>,
    /// with --into-live: the DBI whose keys are restored
    #[argh(option)]
    pub dbi: Option<String>,
    /// with --into-live: only keys starting with these bytes, in hex (repeatable)
    #[argh(option)]
    pub key_prefix: Vec<String>,
    /// write the selected keys' values as of --at into the live LMDB as new writes
    #[argh(switch)]
    pub into_live: bool,
    /// print what would be read (and changed) without writing anything
    #[argh(switch)]
    pub dry_run: bool,
}

/// PowerDNS Authoritative helpers (LMDB backend, Auth 4.8+ native schema).
#[derive(FromArgs, Debug)]
#[argh(subcommand, name = "pdns")]
pub struct PdnsCmd {
    #[argh(subcommand)]
    pub command: PdnsCommand,
}

#[derive(FromArgs, Debug)]
#[argh(subcommand)]
pub enum PdnsCommand {
    RestoreZone(RestoreZoneCmd),
}

/// Bring one zone back as it was at a past moment (records, metadata, DNSSEC keys), written
/// into the live LMDBs as new changes so that every server gets it.
#[derive(FromArgs, Debug)]
#[argh(subcommand, name = "restore-zone")]
pub struct RestoreZoneCmd {
    /// the zone, e.g. example.org
    #[argh(positional)]
    pub zone: String,
    /// the moment: RFC 3339 or a duration ago (90m, 2h, 3d)
    #[argh(option)]
    pub at: String,
    /// list what would change without writing anything
    #[argh(switch)]
    pub dry_run: bool,
    /// the db holding Auth's main file (default: main)
    #[argh(option, default = "String::from(\"main\")")]
    pub main_db: String,
    /// the db holding Auth's shard file with the records (default: shard)
    #[argh(option, default = "String::from(\"shard\")")]
    pub shard_db: String,
}

/// Drop all shadow dbs and other sync metadata. This can potentially cause data loss.
#[derive(FromArgs, Debug)]
#[argh(subcommand, name = "drop-shadow")]
pub struct DropShadowCmd {}

/// Experimental and one-off maintenance commands.
#[derive(FromArgs, Debug)]
#[argh(subcommand, name = "experimental")]
pub struct ExperimentalCmd {
    #[argh(subcommand)]
    pub command: ExperimentalCommand,
}

#[derive(FromArgs, Debug)]
#[argh(subcommand)]
pub enum ExperimentalCommand {
    MigrateTimestamps(MigrateTimestampsCmd),
}

/// Copy newer timestamps from one DBI's headers into another's, e.g. from the shadow DBI of a
/// PowerDNS 4.7 LMDB into its 4.8 native DBI:
/// migrate-timestamps --add-delete-entries --database shard --src-dbi _sync_shadow_records --dst-dbi records_v5
#[derive(FromArgs, Debug)]
#[argh(subcommand, name = "migrate-timestamps")]
pub struct MigrateTimestampsCmd {
    /// the configured LMDB (db name) to work on
    #[argh(option, short = 'd')]
    pub database: String,
    /// DBI to take the timestamps from
    #[argh(option)]
    pub src_dbi: String,
    /// DBI whose headers get them
    #[argh(option)]
    pub dst_dbi: String,
    /// add tombstones for entries deleted in the source and absent from the destination
    #[argh(switch)]
    pub add_delete_entries: bool,
    /// succeed without doing anything when the source DBI does not exist
    #[argh(switch)]
    pub ignore_src_dbi_not_present: bool,
}

/// Continuous bidirectional syncing of all configured LMDBs.
#[derive(FromArgs, Debug)]
#[argh(subcommand, name = "sync")]
pub struct SyncCmd {
    /// do a single pass, then exit
    #[argh(switch)]
    pub only_once: bool,
    /// wait until this object exists in storage before starting
    #[argh(option)]
    pub wait_for_marker_file: Option<String>,
    /// only sync this db name (repeatable)
    #[argh(option)]
    pub only_db: Vec<String>,
}

/// Like sync, but never write snapshots.
#[derive(FromArgs, Debug)]
#[argh(subcommand, name = "receive")]
pub struct ReceiveCmd {
    /// do a single pass, then exit
    #[argh(switch)]
    pub only_once: bool,
    /// wait until this object exists in storage before starting
    #[argh(option)]
    pub wait_for_marker_file: Option<String>,
}

/// Operations on the snapshots in storage.
#[derive(FromArgs, Debug)]
#[argh(subcommand, name = "snapshots")]
pub struct SnapshotsCmd {
    #[argh(subcommand)]
    pub command: SnapshotsCommand,
}

#[derive(FromArgs, Debug)]
#[argh(subcommand)]
pub enum SnapshotsCommand {
    List(ListCmd),
    Get(GetCmd),
    Put(PutCmd),
    Remove(RemoveCmd),
    Dump(SnapshotDumpCmd),
}

/// List objects in storage.
#[derive(FromArgs, Debug)]
#[argh(subcommand, name = "list")]
pub struct ListCmd {
    /// only objects whose name starts with this
    #[argh(option, short = 'p', default = "String::new()")]
    pub prefix: String,
    /// print sizes too
    #[argh(switch, short = 'l')]
    pub long: bool,
    /// sort snapshots by time (unparseable names first)
    #[argh(switch, short = 't')]
    pub time: bool,
    /// list the retained objects (retention) instead, with the space they use
    #[argh(switch, short = 'r')]
    pub retained: bool,
}

/// Download an object to a local file.
#[derive(FromArgs, Debug)]
#[argh(subcommand, name = "get")]
pub struct GetCmd {
    /// output file (default: the object name)
    #[argh(option, short = 'o')]
    pub output: Option<String>,
    /// decrypt an encrypted object with the configured identities (default: write it as stored)
    #[argh(switch)]
    pub decrypt: bool,
    /// object name
    #[argh(positional)]
    pub name: String,
}

/// Upload a local file as a snapshot object.
#[derive(FromArgs, Debug)]
#[argh(subcommand, name = "put")]
pub struct PutCmd {
    /// object name (default: the file's base name)
    #[argh(option, short = 'n')]
    pub name: Option<String>,
    /// upload even if the name is not a valid snapshot name
    #[argh(switch)]
    pub force: bool,
    /// local file
    #[argh(positional)]
    pub file: String,
}

/// Remove an object from storage.
#[derive(FromArgs, Debug)]
#[argh(subcommand, name = "remove")]
pub struct RemoveCmd {
    /// object name
    #[argh(positional)]
    pub name: String,
}

/// Decode and print a snapshot.
#[derive(FromArgs, Debug)]
#[argh(subcommand, name = "dump")]
pub struct SnapshotDumpCmd {
    /// output format: debug or text (identical)
    #[argh(option, short = 'f', default = "String::from(\"debug\")")]
    pub format: String,
    /// only the DBI with this exact name
    #[argh(option, short = 'd')]
    pub dbi: Option<String>,
    /// NAME is a local file instead of an object in storage
    #[argh(switch, short = 'l')]
    pub local: bool,
    /// object name (or local file with --local)
    #[argh(positional)]
    pub name: String,
}

/// Dump the raw contents of the configured LMDBs.
#[derive(FromArgs, Debug)]
#[argh(subcommand, name = "dump")]
pub struct DumpCmd {
    /// only the db with this config name
    #[argh(option, short = 'n')]
    pub name: Option<String>,
    /// skip DBIs whose name starts with _sync
    #[argh(switch, short = 'H')]
    pub hide: bool,
}

/// Print LMDB statistics of the configured LMDBs.
#[derive(FromArgs, Debug)]
#[argh(subcommand, name = "stats")]
pub struct StatsCmd {}

/// Print the version.
#[derive(FromArgs, Debug)]
#[argh(subcommand, name = "version")]
pub struct VersionCmd {}

/// Global flags that take a value, as the Go CLI spells them.
const GLOBAL_VALUE_FLAGS: &[&str] = &[
    "-c",
    "--config",
    "-i",
    "--instance",
    "--log-level",
    "--log-format",
    "--log-timestamp",
    "--minimum-pid",
    "--timeout",
];
const GLOBAL_SWITCHES: &[&str] = &["--debug", "--log-config"];
/// Every switch of every command, so that `--only-once=true` can be understood.
const SWITCHES: &[&str] = &[
    "--debug",
    "--log-config",
    "--version",
    "--only-once",
    "--long",
    "--time",
    "--force",
    "--local",
    "--hide",
    "--add-delete-entries",
    "--ignore-src-dbi-not-present",
    "--into-live",
    "--dry-run",
    "--retained",
];

/// Rewrites Go-style arguments (everything after the program name) into the form argh accepts:
/// `--k=v` becomes `--k v`, `--switch=false` disappears, and global flags move to the front.
pub fn normalize_args(args: &[String]) -> Result<Vec<String>, String> {
    let mut split = Vec::with_capacity(args.len());
    let mut iter = args.iter();
    for arg in iter.by_ref() {
        if arg == "--" {
            split.push(arg.clone());
            break;
        }
        match arg.split_once('=') {
            Some((flag, value)) if flag.starts_with("--") && flag.len() > 2 => {
                if SWITCHES.contains(&flag) {
                    match value {
                        "true" | "1" | "t" | "T" | "TRUE" | "True" => split.push(flag.to_string()),
                        "false" | "0" | "f" | "F" | "FALSE" | "False" => {}
                        _ => return Err(format!("invalid argument {value:?} for {flag:?} flag")),
                    }
                } else {
                    split.push(flag.to_string());
                    split.push(value.to_string());
                }
            }
            _ => split.push(arg.clone()),
        }
    }
    split.extend(iter.cloned());

    let mut globals = Vec::new();
    let mut rest = Vec::new();
    let mut i = 0;
    while i < split.len() {
        let a = &split[i];
        if a == "--" {
            rest.extend_from_slice(&split[i..]);
            break;
        }
        if GLOBAL_VALUE_FLAGS.contains(&a.as_str()) {
            let value = split
                .get(i + 1)
                .ok_or_else(|| format!("flag needs an argument: {a}"))?;
            globals.push(a.clone());
            globals.push(value.clone());
            i += 2;
            continue;
        }
        if GLOBAL_SWITCHES.contains(&a.as_str()) {
            globals.push(a.clone());
        } else {
            rest.push(a.clone());
        }
        i += 1;
    }
    globals.extend(rest);
    Ok(globals)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn norm(s: &str) -> Vec<String> {
        let args: Vec<String> = s.split_whitespace().map(String::from).collect();
        normalize_args(&args).unwrap()
    }

    fn parse(s: &str) -> Cli {
        let args = norm(s);
        let refs: Vec<&str> = args.iter().map(|s| s.as_str()).collect();
        Cli::from_args(&["lightningstream"], &refs).unwrap()
    }

    #[test]
    fn go_forms_are_accepted() {
        let c = parse("--config=/etc/ls.yaml sync --only-once");
        assert_eq!(c.config, "/etc/ls.yaml");
        assert!(matches!(
            c.command,
            Some(Command::Sync(SyncCmd {
                only_once: true,
                ..
            }))
        ));

        let c = parse("sync --config /x.yaml -i inst1 --only-db main --only-db shard --debug");
        assert_eq!(c.config, "/x.yaml");
        assert_eq!(c.instance.as_deref(), Some("inst1"));
        assert!(c.debug);
        match c.command {
            Some(Command::Sync(s)) => assert_eq!(s.only_db, ["main", "shard"]),
            other => panic!("{other:?}"),
        }

        let c = parse("snapshots list -c a.yaml -l -t --prefix=main__b");
        assert_eq!(c.config, "a.yaml");
        match c.command {
            Some(Command::Snapshots(SnapshotsCmd {
                command: SnapshotsCommand::List(l),
            })) => {
                assert!(l.long && l.time);
                assert_eq!(l.prefix, "main__b");
            }
            other => panic!("{other:?}"),
        }

        let c = parse("sync --only-once=false --log-config=true --timeout=1s");
        assert!(c.log_config);
        assert_eq!(c.timeout.as_deref(), Some("1s"));
        assert!(matches!(
            c.command,
            Some(Command::Sync(SyncCmd {
                only_once: false,
                ..
            }))
        ));
    }

    #[test]
    fn bad_forms_are_refused() {
        assert!(normalize_args(&["--only-once=maybe".to_string()]).is_err());
        assert!(normalize_args(&["sync".to_string(), "--config".to_string()]).is_err());
        let args = norm("bogus");
        let refs: Vec<&str> = args.iter().map(|s| s.as_str()).collect();
        assert!(Cli::from_args(&["lightningstream"], &refs).is_err());
    }
}
