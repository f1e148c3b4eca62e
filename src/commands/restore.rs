//! `restore` and `pdns restore-zone`: resolve the moment against the retention policy, plan
//! the retained objects (`restore::plan`), then build a new LMDB from them, or write selected
//! keys of that state back into the live LMDB (`restore::live`), printing what changed.

use std::io::{self, BufWriter, Write};

use anyhow::{Context, bail};

use crate::base::now_ns;
use crate::cli::{RestoreCmd, RestoreZoneCmd};
use crate::config::{Config, LmdbConfig};
use crate::core::display::rfc3339_nano;
use crate::core::name::{SnapshotName, sanitize_instance};
use crate::lmdb::{Env, EnvOptions};
use crate::restore::archive::{Archive, WithBucket};
use crate::restore::build::{BuildOptions, build_new, merge_plan, open_new};
use crate::restore::live::{Action, Change, Selection, apply, hex, plan_changes};
use crate::restore::pdns;
use crate::restore::plan::{Plan, parse_time, plan_at, resolve};

/// Keys written per write transaction into a live LMDB.
const LIVE_BATCH: usize = 1000;

fn db_config<'a>(cfg: &'a Config, db: Option<&str>) -> anyhow::Result<(&'a str, &'a LmdbConfig)> {
    match db {
        Some(d) => cfg
            .lmdbs
            .get_key_value(d)
            .map(|(k, v)| (k.as_str(), v))
            .with_context(|| format!("no db named {d:?} under lmdbs: in the config")),
        None if cfg.lmdbs.len() == 1 => {
            let (k, v) = cfg.lmdbs.iter().next().expect("one db");
            Ok((k.as_str(), v))
        }
        None => bail!(
            "several dbs are configured ({}); choose one with --db",
            cfg.lmdbs.keys().cloned().collect::<Vec<_>>().join(", ")
        ),
    }
}

/// The retained objects, with the bucket's behind them for what the cleaner has not retained
/// yet (see [`WithBucket`]).
fn restore_source(cfg: &Config) -> anyhow::Result<Archive> {
    let archive = super::open_archive(cfg)?;
    Ok(Archive {
        storage: std::sync::Arc::new(WithBucket {
            retained: archive.storage,
            bucket: super::open_storage(cfg)?,
        }),
        policy: archive.policy,
    })
}

/// The plan for `db` at the moment `at` asks for, after checking it against the policy.
fn plan_for(archive: &Archive, db: &str, at: &str, instance: Option<&str>) -> anyhow::Result<Plan> {
    let now = now_ns();
    let at_ns = parse_time(at, now).map_err(anyhow::Error::msg)?;
    let objects = archive
        .list(db)
        .with_context(|| format!("listing the retained objects of db {db:?}"))?;
    let oldest = objects
        .iter()
        .filter_map(|o| SnapshotName::parse_object(&o.name).ok())
        .filter(|(n, _)| n.syncer == db)
        .map(|(n, _)| n.timestamp_ns)
        .min();
    let resolved = resolve(at_ns, now, &archive.policy, oldest)?;
    if !resolved.exact {
        log::warn!(db = db, requested = rfc3339_nano(at_ns), restoring = rfc3339_nano(resolved.at_ns);
            "Before the window kept in full: restoring the newest kept point at or before the requested time");
        eprintln!(
            "note: {} is older than the window kept in full; restoring the kept point {}",
            rfc3339_nano(at_ns),
            rfc3339_nano(resolved.at_ns)
        );
    }
    let instance = instance.map(sanitize_instance);
    let plan = plan_at(&objects, db, resolved.at_ns, instance.as_deref())?;
    for (inst, n) in &plan.without_base {
        log::warn!(db = db, instance = inst, objects = n; "Instance left out: no retained full snapshot at or before the moment");
    }
    Ok(plan)
}

fn build_options(cfg: &Config, l: &LmdbConfig) -> anyhow::Result<BuildOptions> {
    Ok(BuildOptions {
        load: super::load_options(l),
        max_uncompressed: cfg.snapshot_max_uncompressed_size,
        keys: super::open_keyring(cfg)?,
    })
}

/// A private LMDB for a state that is only compared (into-live restores): a subdirectory LMDB
/// in a temporary directory, removed on drop.
struct Scratch {
    _dir: tempfile::TempDir,
    env: std::sync::Arc<Env>,
}

fn build_scratch(
    cfg: &Config,
    archive: &Archive,
    l: &LmdbConfig,
    plan: &Plan,
) -> anyhow::Result<Scratch> {
    let dir = tempfile::tempdir().context("creating a temporary directory for the restore")?;
    let opts = EnvOptions {
        no_subdir: false,
        map_size: l.options.map_size,
        max_dbs: l.options.max_dbs,
        ..EnvOptions::default()
    };
    let env = open_new(&dir.path().join("restored"), &opts).context("creating the scratch LMDB")?;
    let stats = merge_plan(
        archive.storage.as_ref(),
        plan,
        &env,
        &build_options(cfg, l)?,
    )?;
    log::info!(objects = stats.objects, bytes = stats.bytes, entries = stats.entries; "State rebuilt");
    Ok(Scratch { _dir: dir, env })
}

fn print_plan(out: &mut dyn Write, plan: &Plan) -> io::Result<()> {
    writeln!(out, "# state as of {}", rfc3339_nano(plan.at_ns))?;
    for i in &plan.instances {
        for o in &i.objects {
            writeln!(out, "{:12}\t{}", o.size, o.name)?;
        }
    }
    for (inst, n) in &plan.without_base {
        writeln!(
            out,
            "# instance {inst} left out: {n} objects but no full snapshot at or before that moment"
        )?;
    }
    Ok(())
}

pub fn run(cfg: &Config, cmd: &RestoreCmd, instance: Option<&str>) -> anyhow::Result<()> {
    let archive = restore_source(cfg)?;
    let (db, l) = db_config(cfg, cmd.db.as_deref())?;
    let plan = plan_for(&archive, db, &cmd.at, instance)?;
    let mut out = BufWriter::new(io::stdout().lock());
    if cmd.into_live {
        if cmd.to.is_some() {
            bail!("--to and --into-live exclude each other");
        }
        let dbi = cmd
            .dbi
            .as_deref()
            .context("--into-live needs --dbi (the DBI whose keys are restored)")?;
        let prefixes = cmd
            .key_prefix
            .iter()
            .map(|h| parse_hex(h).with_context(|| format!("--key-prefix {h:?}")))
            .collect::<anyhow::Result<Vec<_>>>()?;
        native_only(db, l)?;
        let scratch = build_scratch(cfg, &archive, l, &plan)?;
        let live = super::open_lmdb(db, l)?;
        let sel = Selection {
            dbi: dbi.as_bytes().to_vec(),
            prefixes,
        };
        let changes = plan_changes(&scratch.env, &live, &sel)?;
        write_changes(&mut out, &live, &changes, cmd.dry_run, &plan, |c| {
            hex(&c.key)
        })?;
        return Ok(());
    }
    if cmd.dry_run {
        print_plan(&mut out, &plan)?;
        let mut entries = 0;
        let keys = super::open_keyring(cfg)?;
        for o in plan.objects() {
            let f = crate::import::load::fetch(
                archive.storage.as_ref(),
                &o.name,
                &keys,
                cfg.snapshot_max_uncompressed_size,
                None,
            )
            .map_err(|e| anyhow::anyhow!("retained object {}: {e}", o.name))?;
            let n: u64 = f.index.dbis.iter().map(|d| d.entries).sum();
            entries += n;
            writeln!(out, "# {}: valid, {n} entries", o.name)?;
        }
        writeln!(
            out,
            "# would read {} objects, {} bytes, {entries} entries (keys before merging; \
             the same key in several objects counts once per object)",
            plan.objects().count(),
            plan.bytes()
        )?;
        out.flush()?;
        return Ok(());
    }
    let Some(to) = &cmd.to else {
        bail!("say where the restored LMDB goes (--to PATH), or use --into-live or --dry-run");
    };
    let stats = build_new(
        archive.storage.as_ref(),
        &plan,
        std::path::Path::new(to),
        &super::env_options(l),
        &build_options(cfg, l)?,
    )?;
    writeln!(
        out,
        "restored db {db} as of {} into {to}: {} objects, {} bytes, {} entries merged, {} keys written",
        rfc3339_nano(plan.at_ns),
        stats.objects,
        stats.bytes,
        stats.entries,
        stats.written
    )?;
    log::info!(db = db, at = rfc3339_nano(plan.at_ns), path = to, objects = stats.objects; "Restored LMDB written");
    out.flush()?;
    Ok(())
}

fn native_only(db: &str, l: &LmdbConfig) -> anyhow::Result<()> {
    if !l.schema_tracks_changes {
        bail!(
            "db {db:?}: restoring into the live LMDB needs native mode (schema_tracks_changes: true, \
             PowerDNS Auth 4.8+); restore into a new LMDB with --to instead"
        );
    }
    Ok(())
}

fn parse_hex(s: &str) -> anyhow::Result<Vec<u8>> {
    let s = s.strip_prefix("0x").unwrap_or(s);
    if !s.len().is_multiple_of(2) {
        bail!("odd number of hex digits");
    }
    (0..s.len())
        .step_by(2)
        .map(|i| {
            u8::from_str_radix(&s[i..i + 2], 16)
                .map_err(|_| anyhow::anyhow!("not hex: {:?}", &s[i..i + 2]))
        })
        .collect()
}

/// Prints the changes (and applies them unless `dry_run`), one line each:
/// `restore|delete <dbi> <key>`.
fn write_changes(
    out: &mut dyn Write,
    live: &Env,
    changes: &[Change],
    dry_run: bool,
    plan: &Plan,
    describe: impl Fn(&Change) -> String,
) -> anyhow::Result<()> {
    let line = |c: &Change| {
        let what = match c.action {
            Action::Restore => "restore",
            Action::Delete => "delete",
        };
        format!(
            "{what}\t{}\t{}",
            String::from_utf8_lossy(&c.dbi),
            describe(c)
        )
    };
    let at = rfc3339_nano(plan.at_ns);
    if dry_run {
        for c in changes {
            writeln!(out, "{}", line(c))?;
        }
        writeln!(
            out,
            "# dry run: {} keys of {} would change back to their state as of {at}",
            changes.len(),
            live.path().display()
        )?;
        out.flush()?;
        return Ok(());
    }
    let mut io_err = None;
    let done = apply(live, changes, LIVE_BATCH, |c| {
        log::info!(lmdb = live.path().display().to_string(), dbi = String::from_utf8_lossy(&c.dbi).into_owned(), key = hex(&c.key), action = format!("{:?}", c.action); "Restored key");
        if let Err(e) = writeln!(out, "{}", line(c)) {
            io_err.get_or_insert(e);
        }
    })?;
    if let Some(e) = io_err {
        return Err(e.into());
    }
    writeln!(
        out,
        "# {}: {} keys restored, {} deleted as of {at} ({} already so), in {} write transactions",
        live.path().display(),
        done.restored,
        done.deleted,
        done.unchanged,
        done.write_txns
    )?;
    out.flush()?;
    Ok(())
}

/// `pdns restore-zone`.
pub fn run_zone(cfg: &Config, cmd: &RestoreZoneCmd) -> anyhow::Result<()> {
    let archive = restore_source(cfg)?;
    let (main_db, main_l) = db_config(cfg, Some(&cmd.main_db))?;
    let (shard_db, shard_l) = db_config(cfg, Some(&cmd.shard_db))?;
    native_only(main_db, main_l)?;
    native_only(shard_db, shard_l)?;
    let main_plan = plan_for(&archive, main_db, &cmd.at, None)?;
    let at = rfc3339_nano(main_plan.at_ns);
    // The shard at the same resolved moment as the main file.
    let shard_plan = plan_for(&archive, shard_db, &at, None)?;
    let restored_main = build_scratch(cfg, &archive, main_l, &main_plan)?;
    let live_main = super::open_lmdb(main_db, main_l)?;
    let keys = pdns::zone_keys(&restored_main.env, &live_main, &cmd.zone, &at)?;
    let restored_shard = build_scratch(cfg, &archive, shard_l, &shard_plan)?;
    let live_shard = super::open_lmdb(shard_db, shard_l)?;

    let mut shard_changes = Vec::new();
    for sel in &keys.shard {
        shard_changes.extend(plan_changes(&restored_shard.env, &live_shard, sel)?);
    }
    let mut main_changes = Vec::new();
    for sel in &keys.main {
        main_changes.extend(plan_changes(&restored_main.env, &live_main, sel)?);
    }
    // The domain entry last: Auth sees the zone only once its records and keys are back.
    main_changes.sort_by_key(|c| c.dbi == pdns::DOMAINS || c.dbi == pdns::DOMAINS_INDEX);
    let describe = |c: &Change| {
        if c.dbi == pdns::RECORDS {
            pdns::describe_record_key(&c.key)
        } else if c.dbi.ends_with(b"_0") {
            format!("{} ({})", pdns::index_key_name(&c.key), hex(&c.key))
        } else {
            format!("id {}", hex(&c.key))
        }
    };
    let mut out = BufWriter::new(io::stdout().lock());
    writeln!(
        out,
        "# zone {} (domain id {}) as of {at}",
        cmd.zone, keys.id
    )?;
    if shard_changes.is_empty() && main_changes.is_empty() {
        writeln!(out, "# nothing to do: the zone is as it was then")?;
        out.flush()?;
        return Ok(());
    }
    write_changes(
        &mut out,
        &live_shard,
        &shard_changes,
        cmd.dry_run,
        &shard_plan,
        describe,
    )?;
    write_changes(
        &mut out,
        &live_main,
        &main_changes,
        cmd.dry_run,
        &main_plan,
        describe,
    )?;
    Ok(())
}
