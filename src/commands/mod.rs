//! The commands, one file each, and the pre-run sequence they share (spec/cli.md §2): load and
//! validate the config before anything touches an LMDB, apply the log flags, `--minimum-pid`,
//! `--log-config` and `--timeout`. Errors are printed once, here, with their context.

mod drop_shadow;
mod dump;
mod migrate;
mod restore;
mod snapshots;
mod stats;
mod sync;

use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, bail};

use crate::cli::{Cli, Command};
use crate::config::{self, Config, GoDuration, LmdbConfig};
use crate::lmdb::{Env, EnvOptions};
use crate::logging;
use crate::storage::{
    Storage, azure::AzureStorage, fs::FsStorage, memory::MemoryStorage, s3::S3Storage,
};

pub const VERSION: &str = env!("CARGO_PKG_VERSION");

/// Exit code for `--timeout` (EX_TEMPFAIL), as the Go version uses.
const EXIT_TIMEOUT: u8 = 75;

/// Runs the parsed command line and returns the process exit code.
pub fn run(cli: Cli) -> ExitCode {
    if cli.version {
        println!("lightningstream version {VERSION}");
        return ExitCode::SUCCESS;
    }
    let Some(command) = cli.command.as_ref() else {
        eprintln!("Error: no command given; run 'lightningstream --help' for usage");
        return ExitCode::FAILURE;
    };
    if let Command::Version(_) = command {
        println!("{VERSION}");
        return ExitCode::SUCCESS;
    }
    let cfg = match prepare(&cli) {
        Ok(cfg) => cfg,
        Err(e) => {
            // The logger may not be set up yet: print plainly.
            eprintln!("Error: {e:#}");
            return ExitCode::FAILURE;
        }
    };
    let result = match command {
        Command::Sync(c) => {
            // A one-shot pass (the initial load of a new server, by hand) may show bars.
            if c.only_once || cfg.only_once {
                crate::progress::allow_bars();
            }
            sync::run_sync(&cfg, c)
        }
        Command::Receive(c) => sync::run_receive(&cfg, c),
        Command::Snapshots(c) => {
            crate::progress::allow_bars();
            snapshots::run(&cfg, &c.command)
        }
        Command::Dump(c) => dump::run(&cfg, c),
        Command::Stats(_) => stats::run(&cfg),
        Command::DropShadow(_) => drop_shadow::run(&cfg),
        Command::Restore(c) => restore::run(&cfg, c, cli.instance.as_deref()),
        Command::Pdns(c) => match &c.command {
            crate::cli::PdnsCommand::RestoreZone(z) => restore::run_zone(&cfg, z),
        },
        Command::Experimental(c) => match &c.command {
            crate::cli::ExperimentalCommand::MigrateTimestamps(m) => migrate::run(&cfg, m),
        },
        Command::Version(_) => Ok(()),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            log::error!(error = format!("{e:#}"); "Error");
            eprintln!("Error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// Loads the config and applies the global flags (spec/cli.md §2).
fn prepare(cli: &Cli) -> anyhow::Result<Config> {
    let mut cfg = config::load(std::path::Path::new(&cli.config))?;
    if let Some(l) = &cli.log_level {
        cfg.log.level = l.clone();
    }
    if cli.debug {
        cfg.log.level = "debug".into();
    }
    if let Some(f) = &cli.log_format {
        cfg.log.format = f.clone();
    }
    if let Some(t) = &cli.log_timestamp {
        cfg.log.timestamp = t.clone();
    }
    if let Some(i) = &cli.instance {
        cfg.instance = i.clone();
    }
    let opts = logging::LogOptions {
        level: logging::parse_level(&cfg.log.level).map_err(anyhow::Error::msg)?,
        format: logging::parse_format(&cfg.log.format).map_err(anyhow::Error::msg)?,
        timestamp: logging::parse_timestamp(&cfg.log.timestamp).map_err(anyhow::Error::msg)?,
    };
    logging::init(opts);
    minimum_pid(cli.minimum_pid)?;
    log::debug!(version = VERSION; "Running");
    if cli.log_config {
        log::info!("Effective configuration:\n{}\n", cfg.effective_yaml());
    }
    if let Some(t) = &cli.timeout {
        let d: GoDuration = t
            .parse()
            .map_err(|e| anyhow::anyhow!("invalid argument {t:?} for \"--timeout\" flag: {e}"))?;
        arm_timeout(d.as_std());
    }
    Ok(cfg)
}

/// `--timeout`: after `d`, log and exit 75 whatever the command is doing (an LMDB write
/// transaction in progress is simply never committed).
fn arm_timeout(d: Duration) {
    if d.is_zero() {
        return;
    }
    log::info!(timeout = format!("{d:?}"); "Setting command timeout");
    std::thread::spawn(move || {
        std::thread::sleep(d);
        log::warn!("Timeout reached");
        log::error!("Exiting due to timeout");
        std::process::exit(i32::from(EXIT_TIMEOUT));
    });
}

/// `--minimum-pid N` (spec/cli.md §3): in containers where we start as PID 1, LMDB's reader
/// table can confuse our PID with another namespace's; burn PIDs and re-run ourselves.
fn minimum_pid(n: i64) -> anyhow::Result<()> {
    if n <= 0 {
        return Ok(());
    }
    let n = if n > 200 {
        log::warn!(limit = 200; "Adjusted minimum PID to limit");
        200
    } else {
        n
    };
    let pid = i64::from(std::process::id());
    if pid >= n {
        log::info!(pid = pid, minimum_pid = n; "PID satisfies minimum");
        return Ok(());
    }
    if std::env::var_os("LIGHTNINGSTREAM_NO_PID_CHECK").is_some_and(|v| !v.is_empty()) {
        log::warn!(pid = pid, minimum_pid = n; "PID does NOT satisfy minimum, but requested to skip check");
        return Ok(());
    }
    for _ in pid..n {
        // Each failed spawn still consumes a PID, which is the point.
        let _ = std::process::Command::new("/nonexistent").spawn();
    }
    let exe = std::env::current_exe().context("finding our own executable for --minimum-pid")?;
    let status = std::process::Command::new(exe)
        .args(std::env::args_os().skip(1))
        .env("LIGHTNINGSTREAM_NO_PID_CHECK", "1")
        .status()
        .context("re-running ourselves for --minimum-pid")?;
    std::process::exit(status.code().unwrap_or(1));
}

/// Creates the storage backend of `storage.type`.
pub fn open_storage(cfg: &Config) -> anyhow::Result<Arc<dyn Storage>> {
    let storage: Arc<dyn Storage> = match cfg.storage.kind.as_str() {
        "fs" => {
            let o = cfg.fs_options()?;
            Arc::new(
                FsStorage::new(std::path::Path::new(&o.root_path))
                    .with_context(|| format!("fs storage at {:?}", o.root_path))?,
            )
        }
        "memory" => Arc::new(MemoryStorage::new()),
        "s3" => Arc::new(S3Storage::new(cfg.s3_options()?).context("s3 storage")?),
        "azure" => Arc::new(AzureStorage::new(cfg.azure_options()?).context("azure storage")?),
        "" => bail!("no storage.type configured"),
        other => bail!("storage.type {other:?} not found or registered"),
    };
    log::info!(storage_type = storage.kind(); "Storage backend initialised");
    Ok(storage)
}

/// The keyring of the `encryption` section (validated with the config already; read again
/// here, so a file changed in between is checked too).
pub fn open_keyring(cfg: &Config) -> anyhow::Result<Arc<crate::crypt::Keyring>> {
    let e = &cfg.encryption;
    let keys =
        crate::crypt::Keyring::new(&e.recipients, &e.identity_files).context("encryption")?;
    if keys.encrypts() || keys.decrypts() {
        log::info!(recipients = e.recipients.len(), identity_files = e.identity_files.len(); "Encryption configured");
    }
    Ok(Arc::new(keys))
}

/// The retained prefix of the configured storage, as a storage of its own (see
/// [`crate::restore::RETAINED_PREFIX`]): a subdirectory of an `fs` root; for S3 and Azure the
/// same bucket or container with the prefix added to `global_prefix`, never touching the update
/// marker of the normal objects (archiving must not make the fleet list again).
pub fn open_retained_storage(cfg: &Config) -> anyhow::Result<Arc<dyn Storage>> {
    use crate::restore::RETAINED_PREFIX;
    Ok(match cfg.storage.kind.as_str() {
        "fs" => {
            let o = cfg.fs_options()?;
            let root = std::path::Path::new(&o.root_path).join(RETAINED_PREFIX);
            Arc::new(
                FsStorage::new(&root)
                    .with_context(|| format!("retained objects at {}", root.display()))?,
            )
        }
        "s3" => {
            let mut o = cfg.s3_options()?;
            o.global_prefix = format!("{}{RETAINED_PREFIX}/", o.global_prefix);
            o.use_update_marker = false;
            o.create_bucket = false;
            Arc::new(S3Storage::new(o).context("s3 storage for retained objects")?)
        }
        "azure" => {
            let mut o = cfg.azure_options()?;
            o.global_prefix = format!("{}{RETAINED_PREFIX}/", o.global_prefix);
            o.use_update_marker = false;
            o.create_container = false;
            Arc::new(AzureStorage::new(o).context("azure storage for retained objects")?)
        }
        other => bail!("retention needs fs, s3 or azure storage, not {other:?}"),
    })
}

/// The retention of the config with its storage, or an error saying that none is configured.
pub fn open_archive(cfg: &Config) -> anyhow::Result<crate::restore::archive::Archive> {
    if cfg.retention.is_off() {
        bail!(
            "no retention configured: point-in-time restore needs `retention:` in the config \
             (e.g. retention: {{all: 24h, hourly: 7d, daily: 90d}}) and a cleaner that archives"
        );
    }
    Ok(crate::restore::archive::Archive {
        storage: open_retained_storage(cfg)?,
        policy: cfg.retention.clone(),
    })
}

/// The LMDB options of a configured db.
pub fn env_options(l: &LmdbConfig) -> EnvOptions {
    let o = &l.options;
    EnvOptions {
        no_subdir: o.no_subdir,
        create: o.create,
        map_size: o.map_size,
        max_dbs: o.max_dbs,
        file_mask: o.file_mask,
        dir_mask: o.dir_mask,
        read_only: false,
    }
}

/// How snapshots are merged into a configured db.
pub fn load_options(l: &LmdbConfig) -> crate::import::LoadOptions {
    crate::import::LoadOptions {
        native: l.schema_tracks_changes,
        dupsort_hack: l.dupsort_hack,
        deleted_cutoff: 0,
        padding: l.header_extra_padding_block,
        override_create_flags: l
            .dbi_options
            .iter()
            .filter_map(|(k, v)| v.override_create_flags.map(|f| (k.as_bytes().to_vec(), f)))
            .collect(),
    }
}

/// Opens a configured LMDB with its options (spec/sync-loop.md §1.1).
pub fn open_lmdb(name: &str, l: &LmdbConfig) -> anyhow::Result<Arc<Env>> {
    let opts = env_options(l);
    log::info!(db = name, lmdbpath = l.path; "Opening LMDB");
    let env = Env::open(std::path::Path::new(&l.path), &opts)
        .with_context(|| format!("opening LMDB {name:?} at {:?}", l.path))?;
    let info = env.info().with_context(|| format!("LMDB {name:?} info"))?;
    log::info!(db = name, MapSize = crate::core::display::human_size(info.map_size), LastTxnID = info.last_txn_id; "Env info");
    Ok(env)
}

/// The instance name: configured, or the host name, sanitised as the Go version does.
pub fn instance_name(cfg: &Config) -> anyhow::Result<String> {
    let raw = if cfg.instance.is_empty() {
        crate::base::hostname()
    } else {
        cfg.instance.clone()
    };
    let name = crate::core::name::sanitize_instance(&raw);
    if name.is_empty() {
        bail!("instance name could not be determined, please provide one with --instance");
    }
    Ok(name)
}
