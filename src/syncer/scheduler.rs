//! What the syncer does next, decided without doing it: a pure state machine that takes the
//! bucket listings, download results and merge results of one LMDB and answers with actions
//! (download this object, adopt that full snapshot without downloading it, report a chain gap
//! or a corrupt object, stop waiting for an instance). It owns the per-instance bookkeeping —
//! what was requested, merged, found corrupt, what waits for a retry, each instance's delta
//! chain — and start-up readiness (the instances still waited for). Time comes in as an
//! argument, so every rule here is unit-tested without threads, sockets or sleeps; the executor
//! (`syncer/mod.rs`) runs the actions and reports them through the observer.

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use super::chain::{self, Chain, Step};
use crate::core::name::SnapshotName;

/// Valid object names per instance from a listing, oldest first.
pub type Listing = BTreeMap<String, Vec<String>>;

/// One decision of the scheduler, for the executor to carry out or report.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Action {
    /// Fetch and validate this object (one per instance at a time).
    Download { instance: String, name: String },
    /// A full snapshot covered by the delta chain already merged: taken as the chain's new
    /// base without downloading it.
    Adopted { instance: String, name: String },
    /// The instance's delta chain is broken before `name` (reported once per gap).
    Gap {
        instance: String,
        name: String,
        chain_end: u64,
    },
    /// An object that cannot be merged: never tried again.
    Corrupt {
        instance: String,
        name: String,
        reason: String,
    },
    /// Start-up no longer waits for this instance: its chain is complete.
    DoneWaiting { instance: String },
    /// Start-up no longer waits for this instance: its objects disappeared.
    Vanished { instance: String },
    /// A listing showed a newer object of this instance than the previous one did.
    NewLatest { instance: String, name: String },
    /// Each instance's newest object in the listing just taken (corrupt ones included).
    Listed { latest: BTreeMap<String, String> },
}

/// The scheduler of one LMDB's syncer. See the module documentation.
#[derive(Debug)]
pub struct Scheduler {
    /// This instance's name: its own objects are merged only while start-up waits for them.
    instance: String,
    /// How long a failed download waits before it is asked for again.
    retry_interval: Duration,
    /// The last listing, corrupt names removed.
    listing: Listing,
    /// Per instance, the object handed to the downloaders and not back yet.
    requested: BTreeMap<String, String>,
    /// Per instance, the object last merged (or adopted).
    processed: BTreeMap<String, String>,
    corrupt: BTreeSet<String>,
    retry_at: BTreeMap<String, Instant>,
    /// Instances with a validated object waiting for its merge.
    pending: BTreeSet<String>,
    /// Instances start-up still waits for.
    waiting: BTreeSet<String>,
    chains: BTreeMap<String, Chain>,
    /// Per instance, the delta at which its chain was last found broken, the number of the
    /// listing that showed it first, and whether the gap was reported (once).
    gaps: BTreeMap<String, (String, u64, bool)>,
    /// Listings taken since start-up (numbers them for `gaps`).
    listings: u64,
}

impl Scheduler {
    pub fn new(instance: &str, retry_interval: Duration) -> Scheduler {
        Scheduler {
            instance: instance.to_string(),
            retry_interval,
            listing: Listing::new(),
            requested: BTreeMap::new(),
            processed: BTreeMap::new(),
            corrupt: BTreeSet::new(),
            retry_at: BTreeMap::new(),
            pending: BTreeSet::new(),
            waiting: BTreeSet::new(),
            chains: BTreeMap::new(),
            gaps: BTreeMap::new(),
            listings: 0,
        }
    }

    /// The start-up listing: every instance in it is waited for until its chain is complete.
    /// Nothing is requested yet ([`Scheduler::tick`] does that once the downloaders run).
    pub fn start(&mut self, listing: Listing) -> Vec<Action> {
        self.waiting = listing.keys().cloned().collect();
        let mut out = Vec::new();
        self.set_listing(listing, &mut out);
        out
    }

    /// A new listing from the lister.
    pub fn listed(&mut self, listing: Listing, now: Instant) -> Vec<Action> {
        self.listings += 1;
        let mut out = Vec::new();
        self.set_listing(listing, &mut out);
        self.request_downloads(now, &mut out);
        out
    }

    /// A download came back valid. Returns whether the object is still wanted (the executor
    /// keeps it for [`Scheduler::take_pending`]) and what follows.
    pub fn fetched(&mut self, instance: &str, name: &str, now: Instant) -> (bool, Vec<Action>) {
        let wanted = self.requested.get(instance).map(String::as_str) == Some(name);
        if wanted {
            self.requested.remove(instance);
            self.pending.insert(instance.to_string());
        }
        let mut out = Vec::new();
        self.request_downloads(now, &mut out);
        (wanted, out)
    }

    /// A download failed: a corrupt object (`reason`) is never asked for again; any other
    /// failure is retried after the retry interval.
    pub fn fetch_failed(
        &mut self,
        instance: &str,
        name: &str,
        corrupt: Option<&str>,
        now: Instant,
    ) -> Vec<Action> {
        let mut out = Vec::new();
        match corrupt {
            Some(reason) => self.mark_corrupt(instance, name, reason, &mut out),
            None => {
                self.requested.remove(instance);
                self.retry_at
                    .insert(instance.to_string(), now + self.retry_interval);
            }
        }
        self.request_downloads(now, &mut out);
        out
    }

    /// The executor begins merging the instance's pending object.
    pub fn take_pending(&mut self, instance: &str) {
        self.pending.remove(instance);
    }

    /// The object was merged; `meta_txn_id` is the transaction its metadata says it covers.
    pub fn merged(
        &mut self,
        instance: &str,
        name: &str,
        meta_txn_id: u64,
        now: Instant,
    ) -> Vec<Action> {
        let chain = self.chains.get(instance).cloned().unwrap_or_default();
        self.chains
            .insert(instance.to_string(), chain.applied(name, meta_txn_id));
        self.processed
            .insert(instance.to_string(), name.to_string());
        let mut out = Vec::new();
        self.request_downloads(now, &mut out);
        out
    }

    /// The merge found the object corrupt (the merge pass re-reads it).
    pub fn merge_corrupt(
        &mut self,
        instance: &str,
        name: &str,
        reason: &str,
        now: Instant,
    ) -> Vec<Action> {
        let mut out = Vec::new();
        self.mark_corrupt(instance, name, reason, &mut out);
        self.request_downloads(now, &mut out);
        out
    }

    /// The merge could not read our temporary copy: fetch the object again later.
    pub fn merge_retry(&mut self, instance: &str, now: Instant) {
        self.retry_at
            .insert(instance.to_string(), now + self.retry_interval);
    }

    /// Whether a failed download's retry time has come.
    pub fn retry_due(&self, now: Instant) -> bool {
        self.retry_at.values().any(|t| *t <= now)
    }

    /// Asks for whatever is due now (the first requests, retries whose time has come).
    pub fn tick(&mut self, now: Instant) -> Vec<Action> {
        let mut out = Vec::new();
        self.request_downloads(now, &mut out);
        out
    }

    /// Whether start-up still waits for this instance.
    pub fn is_waiting_for(&self, instance: &str) -> bool {
        self.waiting.contains(instance)
    }

    /// The instances start-up still waits for; empty once start-up is complete.
    pub fn waiting(&self) -> &BTreeSet<String> {
        &self.waiting
    }

    /// What has been merged of the instance (an empty chain before anything).
    pub fn chain(&self, instance: &str) -> &Chain {
        static EMPTY: Chain = Chain {
            base: None,
            last: None,
            end: 0,
            broken: false,
        };
        self.chains.get(instance).unwrap_or(&EMPTY)
    }

    /// Per instance, the object last merged or adopted.
    pub fn processed(&self) -> &BTreeMap<String, String> {
        &self.processed
    }

    /// Takes a new listing: corrupt names stay out, vanished instances are no longer waited for.
    fn set_listing(&mut self, mut listing: Listing, out: &mut Vec<Action>) {
        for (inst, names) in &listing {
            let Some(latest) = names.last() else { continue };
            let known = self.listing.get(inst).and_then(|n| n.last()) == Some(latest);
            if known || (*inst == self.instance && !self.waiting.contains(inst)) {
                continue;
            }
            out.push(Action::NewLatest {
                instance: inst.clone(),
                name: latest.clone(),
            });
        }
        out.push(Action::Listed {
            latest: listing
                .iter()
                .filter_map(|(i, n)| n.last().map(|l| (i.clone(), l.clone())))
                .collect(),
        });
        for names in listing.values_mut() {
            names.retain(|n| !self.corrupt.contains(n));
        }
        listing.retain(|_, names| !names.is_empty());
        self.listing = listing;
        self.drop_vanished(out);
    }

    fn drop_vanished(&mut self, out: &mut Vec<Action>) {
        let gone: Vec<String> = self
            .waiting
            .iter()
            .filter(|i| !self.listing.contains_key(*i))
            .cloned()
            .collect();
        for instance in gone {
            self.waiting.remove(&instance);
            out.push(Action::Vanished { instance });
        }
    }

    /// A object that cannot be merged: never again, and the instance's previous one is next.
    fn mark_corrupt(&mut self, instance: &str, name: &str, reason: &str, out: &mut Vec<Action>) {
        out.push(Action::Corrupt {
            instance: instance.to_string(),
            name: name.to_string(),
            reason: reason.to_string(),
        });
        self.corrupt.insert(name.to_string());
        self.requested.remove(instance);
        for names in self.listing.values_mut() {
            names.retain(|n| n != name);
        }
        self.listing.retain(|_, names| !names.is_empty());
        self.drop_vanished(out);
    }

    /// Hands each instance's next object (chain.rs: its newest full snapshot not merged yet,
    /// else the delta continuing what we merged, or the one after a gap) to the downloaders,
    /// one per instance at a time, since what comes next depends on what was merged (and so
    /// that an instance writing faster than we download cannot pile up a queue of objects
    /// that are stale before their turn comes: seen with Garage under chaos). Our own
    /// objects only while we still wait for our own (start-up): then every own delta is merged,
    /// gap or not, so that our own data comes back before we write a new full snapshot. Also
    /// ends the wait for instances whose chain is complete, and adopts full snapshots the
    /// merged chain already covers (then looks again: their deltas may follow).
    fn request_downloads(&mut self, now: Instant, out: &mut Vec<Action>) {
        loop {
            let adopted = self.request_once(now, out);
            if adopted.is_empty() {
                return;
            }
            for (instance, name) in adopted {
                let chain = self.chains.get(&instance).cloned().unwrap_or_default();
                self.chains.insert(instance.clone(), chain.adopted(&name));
                self.processed.insert(instance.clone(), name.clone());
                out.push(Action::Adopted { instance, name });
            }
        }
    }

    /// One round of [`Scheduler::request_downloads`]; returns the full snapshots to adopt.
    fn request_once(&mut self, now: Instant, out: &mut Vec<Action>) -> Vec<(String, String)> {
        let own_allowed = self.waiting.contains(&self.instance);
        let mut complete = Vec::new();
        let mut adopted = Vec::new();
        for (inst, names) in &self.listing {
            if *inst == self.instance && !own_allowed {
                continue;
            }
            let chain = self.chains.get(inst).cloned().unwrap_or_default();
            let next = match chain::next_step(names, &chain) {
                Step::Load(n) => n,
                Step::Adopt(n) => {
                    adopted.push((inst.clone(), n));
                    continue;
                }
                Step::UpToDate => {
                    // A broken chain is complete only with the instance's next full snapshot;
                    // we alone write our own, and without any full snapshot there is none.
                    if !chain.broken || *inst == self.instance || chain.base.is_none() {
                        complete.push(inst.clone());
                    }
                    continue;
                }
                Step::Gap(n) => {
                    let listings = self.listings;
                    let gap = self
                        .gaps
                        .entry(inst.clone())
                        .or_insert_with(|| (n.clone(), listings, false));
                    if gap.0 != n {
                        *gap = (n.clone(), listings, false);
                    }
                    // A listing is not always a snapshot of the bucket: a directory read while
                    // objects are renamed into it, or S3 pages fetched seconds apart (a stalled
                    // request), can miss a delta stored before a later one they show. The next
                    // listing begins after this one arrived, so it has every delta stored by
                    // then: only a gap that it shows too is taken for real.
                    if self.listings <= gap.1 {
                        continue;
                    }
                    if !gap.2 {
                        gap.2 = true;
                        out.push(Action::Gap {
                            instance: inst.clone(),
                            name: n.clone(),
                            chain_end: chain.end,
                        });
                    }
                    n
                }
            };
            if self.requested.contains_key(inst)
                || self.pending.contains(inst)
                || self.retry_at.get(inst).is_some_and(|t| *t > now)
            {
                continue;
            }
            self.retry_at.remove(inst);
            self.requested.insert(inst.clone(), next.clone());
            out.push(Action::Download {
                instance: inst.clone(),
                name: next,
            });
        }
        for instance in complete {
            if self.waiting.remove(&instance) {
                out.push(Action::DoneWaiting { instance });
            }
        }
        adopted
    }
}

/// Whether an object name is a delta (for logs and metrics).
pub fn is_delta(name: &str) -> bool {
    matches!(
        SnapshotName::parse_object(name),
        Ok((_, crate::core::name::Kind::Delta { .. }))
    )
}

#[cfg(test)]
mod tests;
