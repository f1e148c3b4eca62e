//! Dumping an LMDB transaction into the objects one store needs: the plan's choice of a delta,
//! a full snapshot, or a bridging delta followed by a full snapshot, each streamed through the
//! parallel gzip pipeline into an anonymous temporary file, ready to upload. Memory stays flat:
//! entries are encoded one at a time and compressed in bounded chunks.

use std::io::{BufWriter, Write};
use std::time::Instant;

use anyhow::Context;

use super::{DeltaSettings, Plan, SnapshotStats, Stored, plan, write_delta, write_snapshot};
use crate::core::name::SnapshotName;
use crate::lmdb::Txn;
use crate::pipeline::ParallelGzip;
use crate::snapshot::Meta;

/// An object dumped to a temporary file, ready to store.
pub struct Dumped {
    pub file: std::fs::File,
    pub stats: SnapshotStats,
    pub name: String,
    pub delta: bool,
    /// The time in its name.
    pub ts: i64,
}

/// Who is dumping what: the names and metadata of one instance's objects of one LMDB.
pub struct Dumper {
    pub db: String,
    pub instance: String,
    pub hostname: String,
    /// Shadow mode: dump the `_sync_shadow_*` DBIs under their main names.
    pub shadow: bool,
    pub dupsort_hack: bool,
    /// Deltas between full snapshots; `None` dumps full snapshots only.
    pub deltas: Option<DeltaSettings>,
}

impl Dumper {
    fn meta(&self, txn_id: u64, ts: i64, from: u64) -> Meta {
        Meta {
            generation_id: b"GX".to_vec(),
            instance_id: self.instance.as_bytes().to_vec(),
            hostname: self.hostname.as_bytes().to_vec(),
            lmdb_txn_id: txn_id as i64,
            timestamp_nano: ts as u64,
            database_name: self.db.as_bytes().to_vec(),
            from_lmdb_txn_id: from as i64,
        }
    }

    /// Streams what `txn` sees into a temporary gzip file: a full snapshot, or with `after`
    /// a delta of the entries written after that transaction (`None` if it is too large).
    fn dump<T: Txn>(
        &self,
        txn: &T,
        meta: &Meta,
        after: Option<u64>,
    ) -> anyhow::Result<Option<(std::fs::File, SnapshotStats)>> {
        let file = tempfile::tempfile().context("creating a temporary file for the snapshot")?;
        // Compression runs on worker threads, beside the LMDB reading and encoding.
        let threads = std::thread::available_parallelism().map_or(2, |n| n.get().min(4));
        let gz = ParallelGzip::new(BufWriter::with_capacity(256 * 1024, file), threads)
            .context("starting the compression threads")?;
        let (shadow, hack) = (self.shadow, self.dupsort_hack);
        let written = match after {
            Some(a) => write_delta(txn, meta, gz, shadow, hack, a),
            None => write_snapshot(txn, meta, gz, shadow, hack).map(Some),
        }
        .with_context(|| format!("creating snapshot of LMDB {:?}", self.db))?;
        let Some((gz, stats)) = written else {
            return Ok(None);
        };
        let file = gz
            .finish()
            .and_then(|mut w| w.flush().map(|_| w))
            .and_then(|w| w.into_inner().map_err(|e| e.into_error()))
            .context("compressing snapshot")?;
        Ok(Some((file, stats)))
    }

    /// Dumps what the plan asks for at `txn_id`, in storing order: a delta if one is due and
    /// not too large, else a full snapshot, after a bridging delta when the plan says so.
    /// Nothing when there is nothing to store (an empty delta).
    pub fn dump_planned<T: Txn>(
        &self,
        txn: &T,
        stored: Option<&Stored>,
        txn_id: u64,
        ts: i64,
        forced: bool,
    ) -> anyhow::Result<Vec<Dumped>> {
        let plan = plan(self.deltas.as_ref(), stored, txn_id, forced, Instant::now());
        let mut out = Vec::new();
        let (reason, bridge) = match plan {
            Plan::Nothing => return Ok(out),
            Plan::Delta { from } => match self.dump_delta(txn, txn_id, ts, from)? {
                // Nothing new (a change that left no header behind): nothing to say.
                Some(d) if d.stats.entries == 0 => return Ok(out),
                Some(d) => return Ok(vec![d]),
                None => ("delta too large", None),
            },
            Plan::Bridge { from, reason } => (reason, Some(from)),
            Plan::Full(reason) => (reason, None),
        };
        // The bridging delta is stored even when empty: it says the chain reaches `txn_id`.
        if let Some(from) = bridge
            && let Some(d) = self.dump_delta(txn, txn_id, ts, from)?
        {
            out.push(d);
        }
        let name = if self.deltas.is_some() {
            log::info!(db = self.db, reason = reason, bridged = !out.is_empty(); "Writing a full snapshot");
            // One nanosecond after the bridging delta, so that it sorts after it.
            SnapshotName::full_covering(&self.db, &self.instance, ts + 1, txn_id)
        } else {
            SnapshotName::new(&self.db, &self.instance, ts)
        };
        let (file, stats) = self
            .dump(txn, &self.meta(txn_id, name.timestamp_ns, 0), None)?
            .context("a full snapshot has no size limit")?;
        out.push(Dumped {
            file,
            stats,
            name: name.object_name(),
            delta: false,
            ts: name.timestamp_ns,
        });
        Ok(out)
    }

    /// A delta of the entries written after `from` (`None` if too large).
    fn dump_delta<T: Txn>(
        &self,
        txn: &T,
        txn_id: u64,
        ts: i64,
        from: u64,
    ) -> anyhow::Result<Option<Dumped>> {
        let dumped = self.dump(txn, &self.meta(txn_id, ts, from), Some(from))?;
        Ok(dumped.map(|(file, stats)| Dumped {
            file,
            stats,
            name: SnapshotName::delta(&self.db, &self.instance, ts, from, txn_id).object_name(),
            delta: true,
            ts,
        }))
    }
}
