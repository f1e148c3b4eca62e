//! `sync` and `receive`: open storage and every selected LMDB (all before syncing starts, so a
//! bad path fails fast), then run one syncer per LMDB on its own thread. The first syncer to fail
//! stops the others and the process exits 1.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use anyhow::{Context, anyhow};

use crate::cli::{ReceiveCmd, SyncCmd};
use crate::config::Config;
use crate::status::StatusContext;
use crate::status::health::{DbHealth, health};
use crate::syncer::cleaner::{self, Cleaner};
use crate::syncer::sweeper::{SweepOptions, Sweeper};
use crate::syncer::{SyncOptions, Syncer};

pub fn run_sync(cfg: &Config, cmd: &SyncCmd) -> anyhow::Result<()> {
    run(
        cfg,
        cmd.only_once || cfg.only_once,
        false,
        cmd.wait_for_marker_file.as_deref(),
        &cmd.only_db,
    )
}

pub fn run_receive(cfg: &Config, cmd: &ReceiveCmd) -> anyhow::Result<()> {
    run(
        cfg,
        cmd.only_once || cfg.only_once,
        true,
        cmd.wait_for_marker_file.as_deref(),
        &[],
    )
}

fn run(
    cfg: &Config,
    only_once: bool,
    receive_only: bool,
    marker: Option<&str>,
    only_db: &[String],
) -> anyhow::Result<()> {
    let instance = super::instance_name(cfg)?;
    let stop = Arc::new(AtomicBool::new(false));
    install_signal_handlers(&stop)?;
    let storage = super::open_storage(cfg)?;
    let keys = super::open_keyring(cfg)?;
    if let Some(m) = marker {
        wait_for_marker(cfg, storage.as_ref(), m, &stop);
    }
    let opts = SyncOptions {
        only_once,
        receive_only,
        lmdb_poll_interval: cfg.lmdb_poll_interval.as_std(),
        storage_poll_interval: cfg.storage_poll_interval.as_std(),
        storage_retry_interval: cfg.storage_retry_interval.as_std(),
        storage_retry_count: cfg.storage_retry_count,
        storage_retry_forever: cfg.storage_retry_forever,
        force_snapshot_interval: cfg.storage_force_snapshot_interval.as_std(),
        tombstone_cutoff_ns: cfg
            .sweeper
            .enabled
            .then(|| cfg.sweeper.retention_duration_minus_cutoff_ns()),
        downloaders: usize::try_from(cfg.memory_downloaded_snapshots).unwrap_or(1),
        waiting_snapshots: usize::try_from(cfg.memory_decompressed_snapshots).unwrap_or(1),
        log_stats_interval: cfg.lmdb_log_stats_interval.as_std(),
        log_stats_smaps: cfg.lmdb_scrape_smaps,
        max_uncompressed: cfg.snapshot_max_uncompressed_size,
        merge_limits: crate::import::load::SliceLimits {
            max: cfg.merge_lock_duration.as_std(),
            pause: cfg.merge_release_duration.as_std(),
        },
        deltas: cfg.deltas.enabled.then(|| crate::export::DeltaSettings {
            full_interval: cfg.deltas.full_snapshot_interval.as_std(),
            max_deltas: u64::try_from(cfg.deltas.max_deltas).unwrap_or(1),
        }),
        keys,
    };
    if opts.log_stats_interval.is_zero() {
        log::info!("LMDB stats logging disabled");
    } else {
        log::info!(interval = cfg.lmdb_log_stats_interval.to_string(); "Enabled LMDB stats logging");
    }
    let mut envs = Vec::new();
    let mut workers = Vec::new();
    // The helpers (cleaners, sweepers, health, HTTP) stop once every syncer has ended.
    let helpers_stop = Arc::new(AtomicBool::new(false));
    let mut syncers = Vec::new();
    for (name, l) in &cfg.lmdbs {
        if !only_db.is_empty() && !only_db.contains(name) {
            log::info!(db = name; "Skipping because of --only-db flag");
            continue;
        }
        let env = super::open_lmdb(name, l)?;
        let load_opts = super::load_options(l);
        let native = load_opts.native;
        let mut syncer = Syncer::new(
            name,
            env.clone(),
            storage.clone(),
            &instance,
            opts.clone(),
            load_opts,
            stop.clone(),
        )
        .with_health(DbHealth::register(name, &cfg.health));
        let c = &cfg.storage.cleanup;
        if c.enabled && !receive_only && !only_once {
            let cleaner = Cleaner::new(
                c.must_keep_interval.as_std(),
                c.remove_old_instances_interval.as_std(),
            );
            syncer = syncer.with_cleaner(cleaner.committed_handle());
            let (storage, db, interval, stop) = (
                storage.clone(),
                name.clone(),
                c.interval.as_std(),
                helpers_stop.clone(),
            );
            let archive = (!cfg.retention.is_off())
                .then(|| super::open_archive(cfg))
                .transpose()?;
            workers.push(spawn(format!("cleaner-{name}"), move || {
                cleaner::run(cleaner, storage, db, interval, stop, archive)
            })?);
        }
        let sw = &cfg.sweeper;
        if sw.enabled && !only_once {
            let sweeper = Sweeper {
                db: name.clone(),
                env: env.clone(),
                opts: SweepOptions {
                    retention_ns: sw.retention_duration_ns(),
                    first_interval: sw.first_interval.as_std(),
                    interval: sw.interval.as_std(),
                    lock_duration: sw.lock_duration.as_std(),
                    release_duration: sw.release_duration.as_std(),
                    native,
                },
                stop: helpers_stop.clone(),
            };
            workers.push(spawn(format!("sweeper-{name}"), move || sweeper.run())?);
        }
        envs.push((name.clone(), env));
        syncers.push(syncer);
    }
    spawn("health".into(), {
        let stop = helpers_stop.clone();
        move || {
            while !stop.load(Ordering::Relaxed) {
                let next = health().evaluate_due(std::time::Instant::now());
                std::thread::sleep(next.clamp(
                    std::time::Duration::from_millis(10),
                    std::time::Duration::from_millis(200),
                ));
            }
        }
    })?;
    if only_once {
        log::info!("Not starting the HTTP server, because OnlyOnce is set");
    } else if cfg.http.address.is_empty() {
        log::info!("HTTP stats server disabled");
    } else {
        let ctx = Arc::new(StatusContext {
            dbs: envs,
            storage: storage.clone(),
            scrape_smaps: cfg.lmdb_scrape_smaps,
        });
        let addr = crate::status::serve(&cfg.http.address, ctx, helpers_stop.clone())?;
        log::info!(address = addr.to_string(); "HTTP stats server enabled");
    }
    let handles: Vec<_> = syncers
        .into_iter()
        .map(|mut s| {
            let stop = stop.clone();
            std::thread::spawn(move || {
                let r = s.run();
                if r.is_err() {
                    // One failed syncer ends the process; the others stop at their next check.
                    stop.store(true, Ordering::Relaxed);
                }
                r
            })
        })
        .collect();
    log::info!("All syncers running");
    let mut first_err = None;
    for h in handles {
        let r = h
            .join()
            .map_err(|_| anyhow!("a syncer thread panicked"))
            .and_then(|r| r);
        if let Err(e) = r {
            log::error!(error = format!("{e:#}"); "Sync failed");
            first_err.get_or_insert(e);
        }
    }
    helpers_stop.store(true, Ordering::Relaxed);
    for w in workers {
        let _ = w.join();
    }
    match first_err {
        Some(e) => Err(e).context("sync failed"),
        None => {
            if stop.load(Ordering::Relaxed) {
                log::info!("Stopped");
            }
            Ok(())
        }
    }
}

/// SIGTERM and SIGINT ask every syncer to stop after its current step (a merge transaction
/// is finished or aborted, never left half-done) and the process exits 0; a second one exits
/// at once with status 1. SIGHUP (a reload request under systemd) is logged and ignored:
/// configuration changes need a restart, and a stray reload must not stop syncing.
fn install_signal_handlers(stop: &Arc<AtomicBool>) -> anyhow::Result<()> {
    use signal_hook::consts::{SIGHUP, SIGINT, SIGTERM};
    for sig in [SIGTERM, SIGINT] {
        signal_hook::flag::register_conditional_shutdown(sig, 1, stop.clone())
            .context("installing signal handlers")?;
        signal_hook::flag::register(sig, stop.clone()).context("installing signal handlers")?;
    }
    let hup = Arc::new(AtomicBool::new(false));
    signal_hook::flag::register(SIGHUP, hup.clone()).context("installing signal handlers")?;
    let stop = stop.clone();
    std::thread::Builder::new()
        .name("signals".into())
        .spawn(move || {
            let mut announced = false;
            loop {
                std::thread::sleep(std::time::Duration::from_millis(100));
                if hup.swap(false, Ordering::Relaxed) {
                    log::warn!("SIGHUP received and ignored: configuration reload is not supported, restart to apply changes");
                }
                if stop.load(Ordering::Relaxed) && !announced {
                    log::info!("Signal received, stopping (send it again to exit immediately)");
                    announced = true;
                }
            }
        })
        .context("starting the signal thread")?;
    Ok(())
}

/// `--wait-for-marker-file`: poll until the object exists; its content does not matter.
fn wait_for_marker(
    cfg: &Config,
    storage: &dyn crate::storage::Storage,
    name: &str,
    stop: &AtomicBool,
) {
    log::info!("waiting for marker file '{name}' before syncing");
    while !stop.load(Ordering::Relaxed) {
        match storage.get(name) {
            Ok(_) => {
                log::info!("marker file '{name}' found, proceeding");
                return;
            }
            Err(e) if e.is_not_found() => {
                log::debug!("marker file '{name}' not found yet");
            }
            Err(e) => {
                log::error!(error = e.to_string(); "unable to check storage for marker file");
            }
        }
        crate::retry::sleep_unless_stopped(stop, cfg.storage_poll_interval.as_std());
    }
}

fn spawn(
    name: String,
    f: impl FnOnce() + Send + 'static,
) -> anyhow::Result<std::thread::JoinHandle<()>> {
    std::thread::Builder::new()
        .name(name.clone())
        .spawn(f)
        .with_context(|| format!("starting thread {name}"))
}
