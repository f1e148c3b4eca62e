//! `snapshots list|get|put|remove|dump`: operations on the objects in storage, with the Go
//! version's output formats (spec/cli.md §5.3) so that scripts written for it keep working.
//! Encrypted objects (`encryption`): `get` writes an object as stored, so that `put` can restore
//! it byte for byte and `age -d` can decrypt it, or decrypted with `--decrypt`; `dump` decrypts
//! with the configured identities, a storage object by its name and a `--local` file by its
//! content.

use std::fs::File;
use std::io::{self, BufReader, BufWriter, Seek, Write};
use std::path::Path;

use anyhow::{Context, bail};
use jiff::tz::TimeZone;
use serde::Serialize;

use crate::base::now_ns;
use crate::cli::{GetCmd, ListCmd, PutCmd, SnapshotDumpCmd, SnapshotsCommand};
use crate::config::{Config, GoDuration};
use crate::core::display::{display_ascii, go_time_string};
use crate::core::flags::dbi_flags_string;
use crate::core::name::{SnapshotName, is_encrypted_name};
use crate::crypt::Keyring;
use crate::snapshot::decode::{EntryReader, SnapshotIndex, scan};
use crate::storage::{Storage, put_file};

/// Each `snapshots` operation must finish within a minute, as in the Go version, so a script
/// never hangs on an unreachable bucket.
const OPERATION_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(60);

pub fn run(cfg: &Config, cmd: &SnapshotsCommand) -> anyhow::Result<()> {
    std::thread::spawn(|| {
        std::thread::sleep(OPERATION_TIMEOUT);
        log::error!("snapshots operation timed out after 1m0s");
        eprintln!("Error: context deadline exceeded (snapshots operations time out after 1m0s)");
        std::process::exit(1);
    });
    if let SnapshotsCommand::List(c) = cmd
        && c.retained
    {
        return list_retained(cfg, c);
    }
    let storage = super::open_storage(cfg)?;
    let storage = storage.as_ref();
    let keys = super::open_keyring(cfg)?;
    match cmd {
        SnapshotsCommand::List(c) => list(storage, c),
        SnapshotsCommand::Get(c) => get(storage, &keys, c),
        SnapshotsCommand::Put(c) => put(storage, c),
        SnapshotsCommand::Remove(c) => storage
            .delete(&c.name)
            .with_context(|| format!("removing {:?}", c.name)),
        SnapshotsCommand::Dump(c) => dump(storage, &keys, c),
    }
}

fn list(storage: &dyn Storage, c: &ListCmd) -> anyhow::Result<()> {
    let mut objects = storage.list(&c.prefix)?;
    if c.time {
        // Unparseable names first (by name), then snapshots and our deltas by their time.
        objects.sort_by_key(|o| match SnapshotName::parse_object(&o.name) {
            Ok((n, _)) => (1, n.timestamp_ns, o.name.clone()),
            Err(_) => (0, 0, o.name.clone()),
        });
    }
    let mut out = BufWriter::new(io::stdout().lock());
    for o in objects {
        if c.long {
            writeln!(out, "{:12}\t{}", o.size, o.name)?;
        } else {
            writeln!(out, "{}", o.name)?;
        }
    }
    out.flush()?;
    Ok(())
}

/// `list --retained`: the retained objects as `list` prints them, then per db the count, the
/// space used and the moments retention can rebuild.
fn list_retained(cfg: &Config, c: &ListCmd) -> anyhow::Result<()> {
    let archive = super::open_archive(cfg)?;
    list(archive.storage.as_ref(), c)?;
    let objects = archive.storage.list(&c.prefix)?;
    let now = now_ns();
    let mut out = BufWriter::new(io::stdout().lock());
    for db in cfg.lmdbs.keys() {
        let (mut n, mut bytes, mut oldest) = (0usize, 0u64, None::<i64>);
        for o in &objects {
            if let Ok((name, _)) = SnapshotName::parse_object(&o.name)
                && &name.syncer == db
            {
                n += 1;
                bytes += o.size;
                oldest = Some(oldest.map_or(name.timestamp_ns, |t| t.min(name.timestamp_ns)));
            }
        }
        let since = oldest.map_or("-".to_string(), crate::core::display::rfc3339_nano);
        writeln!(
            out,
            "# retained {db}: {n} objects, {bytes} bytes ({}), oldest {since}; keeps {}",
            crate::core::display::human_size(bytes),
            crate::restore::plan::describe_window(now, &cfg.retention)
        )?;
    }
    out.flush()?;
    Ok(())
}

fn get(storage: &dyn Storage, keys: &Keyring, c: &GetCmd) -> anyhow::Result<()> {
    if c.decrypt && !is_encrypted_name(&c.name) {
        bail!(
            "{:?} is not an encrypted object (its name does not end in .age)",
            c.name
        );
    }
    let output = c.output.clone().unwrap_or_else(|| match c.decrypt {
        // The plaintext object's name.
        true => c.name.trim_end_matches(".age").to_string(),
        false => c.name.clone(),
    });
    // The size, for the percentage: the listing has it (one request; no size, no percentage).
    let size = storage
        .list(&c.name)
        .ok()
        .and_then(|l| l.into_iter().find(|o| o.name == c.name).map(|o| o.size));
    let body: Box<dyn io::Read + '_> = if c.decrypt {
        Box::new(
            crate::import::load::get_decrypted(storage, &c.name, keys)
                .with_context(|| format!("getting {:?}", c.name))?
                .0,
        )
    } else {
        storage
            .get(&c.name)
            .with_context(|| format!("getting {:?}", c.name))?
    };
    let mut file = File::create(&output).with_context(|| format!("creating {output:?}"))?;
    let progress = crate::progress::Progress::new(&c.name, size);
    io::copy(&mut progress.reader(body), &mut file)
        .with_context(|| format!("writing {output:?}"))?;
    progress.finish();
    file.sync_all()
        .with_context(|| format!("writing {output:?}"))?;
    Ok(())
}

fn put(storage: &dyn Storage, c: &PutCmd) -> anyhow::Result<()> {
    let name = match &c.name {
        Some(n) => n.clone(),
        None => Path::new(&c.file)
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .with_context(|| format!("{:?} has no file name", c.file))?,
    };
    if let Err(e) = SnapshotName::parse_object(&name) {
        if !c.force {
            bail!(
                "invalid snapshot name (use -n to specify a different one, or --force to skip this check): {e}"
            );
        }
        log::warn!(name = name; "Invalid snapshot name forced");
    }
    let mut file = File::open(&c.file).with_context(|| format!("opening {:?}", c.file))?;
    put_file(storage, &name, &mut file).with_context(|| format!("storing {name:?}"))?;
    Ok(())
}

#[derive(Serialize)]
#[serde(rename_all = "PascalCase")]
struct MetaJson {
    #[serde(rename = "GenerationID")]
    generation_id: String,
    #[serde(rename = "InstanceID")]
    instance_id: String,
    hostname: String,
    #[serde(rename = "LmdbTxnID")]
    lmdb_txn_id: i64,
    timestamp_nano: u64,
    database_name: String,
    #[serde(rename = "FromLmdbTxnID")]
    from_lmdb_txn_id: i64,
}

#[derive(Serialize)]
#[serde(rename_all = "PascalCase")]
struct HeaderJson {
    format_version: u32,
    compat_version: u32,
    meta: MetaJson,
}

fn header_json(index: &SnapshotIndex) -> String {
    let s = |b: &[u8]| String::from_utf8_lossy(b).into_owned();
    let m = &index.meta;
    let h = HeaderJson {
        format_version: index.format_version,
        compat_version: index.compat_version,
        meta: MetaJson {
            generation_id: s(&m.generation_id),
            instance_id: s(&m.instance_id),
            hostname: s(&m.hostname),
            lmdb_txn_id: m.lmdb_txn_id,
            timestamp_nano: m.timestamp_nano,
            database_name: s(&m.database_name),
            from_lmdb_txn_id: m.from_lmdb_txn_id,
        },
    };
    serde_json::to_string_pretty(&h).unwrap_or_default()
}

/// Go's `%q` for the strings we print (names and flag text are plain ASCII in practice).
fn go_quote(b: &[u8]) -> String {
    serde_json::to_string(&String::from_utf8_lossy(b)).unwrap_or_default()
}

fn dump(storage: &dyn Storage, keys: &Keyring, c: &SnapshotDumpCmd) -> anyhow::Result<()> {
    if c.format != "debug" && c.format != "text" {
        bail!("output format not supported: {}", c.format);
    }
    // Two passes (validate, then print) need a seekable copy; storage objects go to a temp file,
    // decrypted when encrypted.
    let mut file = if c.local {
        let mut f = File::open(&c.name).with_context(|| format!("opening {:?}", c.name))?;
        if crate::crypt::looks_encrypted(BufReader::new(&mut f))? {
            f.seek(io::SeekFrom::Start(0))?;
            let mut plain = tempfile::tempfile()?;
            let mut out = BufWriter::new(&mut plain);
            keys.decrypt_to(BufReader::new(f), &mut out)
                .with_context(|| format!("decrypting {:?}", c.name))?;
            out.flush()?;
            drop(out);
            plain
        } else {
            f
        }
    } else if is_encrypted_name(&c.name) {
        crate::import::load::get_decrypted(storage, &c.name, keys)
            .with_context(|| format!("getting {:?}", c.name))?
            .0
    } else {
        crate::storage::get_as_file(storage, &c.name)
            .with_context(|| format!("getting {:?}", c.name))?
            .0
    };
    file.seek(io::SeekFrom::Start(0))?;
    let index =
        scan(BufReader::new(&mut file)).with_context(|| format!("decoding {:?}", c.name))?;
    file.seek(io::SeekFrom::Start(0))?;
    let mut out = BufWriter::new(io::stdout().lock());
    writeln!(out, "{}", header_json(&index))?;

    let tz = TimeZone::system();
    let now = now_ns();
    let wanted = |i: usize| {
        c.dbi
            .as_ref()
            .is_none_or(|d| index.dbis[i].info.name == d.as_bytes())
    };
    let mut printed = 0usize; // DBI headers printed so far (by message index)
    let mut print_headers_up_to = |out: &mut dyn Write, upto: usize| -> io::Result<()> {
        while printed <= upto && printed < index.dbis.len() {
            if wanted(printed) {
                let info = &index.dbis[printed].info;
                write!(
                    out,
                    "\n### {} (transform={}, flags={})\n\n",
                    String::from_utf8_lossy(&info.name),
                    go_quote(&info.transform),
                    go_quote(dbi_flags_string(info.flags).as_bytes())
                )?;
            }
            printed += 1;
        }
        Ok(())
    };
    let mut reader = EntryReader::new(BufReader::new(file));
    while let Some((i, kv)) = reader.next_entry()? {
        print_headers_up_to(&mut out, i)?;
        if !wanted(i) {
            continue;
        }
        let ts = kv.timestamp_nano as i64;
        let age_ns = now.saturating_sub(ts);
        // Go rounds the age to whole seconds, halves away from zero.
        let age = GoDuration(
            ((age_ns as i128 + 500_000_000 * age_ns.signum() as i128) / 1_000_000_000
                * 1_000_000_000) as i64,
        );
        writeln!(
            out,
            "{}  =  {}  ({}, {} ago; flags={:02x})",
            display_ascii(kv.key, now),
            display_ascii(kv.value, now),
            go_time_string(ts, &tz),
            age,
            kv.flags
        )?;
    }
    print_headers_up_to(&mut out, usize::MAX - 1)?;
    out.flush()?;
    Ok(())
}
