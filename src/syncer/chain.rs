//! Which object of a remote instance to merge next when it publishes deltas (pure, no I/O).
//! An instance's objects form chains: a full snapshot covering its LMDB up to transaction `X`,
//! then deltas `(X, Y]`, `(Y, Z]`, ... in name (= time) order. A receiver merges the newest full
//! snapshot it has not merged, then every delta that continues the chain it holds. A delta that
//! does not continue it (one missing, cleaned or corrupt) is a gap: the instance's data is
//! incomplete here until its next full snapshot, which is merged as soon as it appears. The
//! deltas after a gap are still worth merging meanwhile (per-key last-writer-wins makes any
//! subset of an instance's entries a valid state), but the chain stays marked broken, so that
//! start-up does not count the instance as loaded. A full snapshot whose name says it covers
//! exactly the transaction our unbroken chain ends at (the writer stores a bridging delta up to
//! it first) holds nothing new for us: it is adopted as the chain's base without a download.
//! The listing order does not matter; names are sorted here.

use crate::core::name::{Kind, SnapshotName};

/// What this process has merged of one instance.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Chain {
    /// The full snapshot the chain starts from.
    pub base: Option<String>,
    /// The object merged last (the base or a delta).
    pub last: Option<String>,
    /// The instance's LMDB transaction ID the merged objects cover up to.
    pub end: u64,
    /// A delta was missing between the base and `last`.
    pub broken: bool,
}

/// The next step for one instance.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Step {
    /// Merge this object next.
    Load(String),
    /// Take this full snapshot as the base without merging it: the chain covers it.
    Adopt(String),
    /// Everything listed is merged.
    UpToDate,
    /// No listed delta continues the chain: this one, the next after it, starts a broken
    /// chain (merge it anyway; only a newer full snapshot repairs the chain).
    Gap(String),
}

impl Chain {
    /// The state after merging `name`, whose snapshot metadata says it covers transactions up
    /// to `meta_txn_id` (for full snapshots; a delta's range comes from its name).
    pub fn applied(&self, name: &str, meta_txn_id: u64) -> Chain {
        match SnapshotName::parse_object(name).map(|(_, k)| k) {
            Ok(Kind::Delta { from, to }) => Chain {
                base: self.base.clone(),
                last: Some(name.to_string()),
                end: to,
                broken: self.broken || self.base.is_none() || from != self.end,
            },
            _ => Chain {
                base: Some(name.to_string()),
                last: Some(name.to_string()),
                end: meta_txn_id,
                broken: false,
            },
        }
    }
}

impl Chain {
    /// The state after adopting the full snapshot `name` (see [`Step::Adopt`]).
    /// The chain in words, for the status page: how far it reaches and whether it is whole.
    pub fn describe(&self) -> String {
        let Some(last) = &self.last else {
            return "nothing merged yet".to_string();
        };
        let deltas = self.base.as_ref() != Some(last);
        match (self.broken, deltas) {
            (true, _) => format!(
                "broken: a delta is missing before txn {}; complete again with the next full snapshot",
                self.end
            ),
            (false, true) => format!("full snapshot + deltas, up to txn {}", self.end),
            (false, false) => format!("full snapshot, up to txn {}", self.end),
        }
    }

    pub fn adopted(&self, name: &str) -> Chain {
        Chain {
            base: Some(name.to_string()),
            last: Some(name.to_string()),
            end: self.end,
            broken: false,
        }
    }
}

/// Decides the next object to merge from one instance's listed objects (any order).
pub fn next_step(names: &[String], chain: &Chain) -> Step {
    let mut objects: Vec<(&String, Kind)> = names
        .iter()
        .filter_map(|n| SnapshotName::parse_object(n).ok().map(|(_, k)| (n, k)))
        .collect();
    objects.sort_by(|a, b| a.0.cmp(b.0));
    let newest_full = objects
        .iter()
        .rev()
        .find(|(_, k)| *k == Kind::Snapshot)
        .map(|(n, _)| *n);
    if let Some(full) = newest_full
        && chain.base.as_ref().is_none_or(|b| full > b)
    {
        let covers = SnapshotName::parse(full).ok().and_then(|n| n.covers());
        if let (Some(t), Some(last), false) = (covers, &chain.last, chain.broken) {
            if t == chain.end {
                return Step::Adopt(full.clone());
            }
            // Deltas before the full snapshot that continue our chain (the last one bridges
            // to it) are cheaper than the full snapshot.
            let bridge = objects.iter().find(|(n, k)| {
                *n > last
                    && *n < full
                    && matches!(k, Kind::Delta { from, to } if *from == chain.end && *to <= t)
            });
            if let Some((n, _)) = bridge {
                return Step::Load((*n).clone());
            }
        }
        return Step::Load(full.clone());
    }
    // Without any full snapshot merged, deltas have nothing to continue.
    let Some(last) = &chain.last else {
        return match objects.first() {
            Some((n, _)) => Step::Gap((*n).clone()),
            None => Step::UpToDate,
        };
    };
    let mut newer = objects.iter().filter(|(n, _)| *n > last).peekable();
    let first_newer = newer.peek().map(|(n, _)| (*n).clone());
    for (n, k) in newer {
        if let Kind::Delta { from, .. } = k
            && *from == chain.end
        {
            return Step::Load((*n).clone());
        }
    }
    match first_newer {
        Some(n) => Step::Gap(n),
        None => Step::UpToDate,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const T: i64 = 1_700_000_000_000_000_000;

    fn full(t: i64) -> String {
        SnapshotName::new("main", "a", T + t).object_name()
    }

    fn delta(t: i64, from: u64, to: u64) -> String {
        SnapshotName::delta("main", "a", T + t, from, to).object_name()
    }

    /// Follows the steps from `chain` as the syncer does (merging past gaps) until everything
    /// is merged; returns the objects merged, the gaps met, and the final state. `txn` maps a
    /// full snapshot to its Meta txn ID.
    fn walk_from(
        names: &[String],
        mut chain: Chain,
        txn: impl Fn(&str) -> u64,
    ) -> (Vec<String>, Vec<String>, Chain) {
        let (mut merged, mut gaps) = (Vec::new(), Vec::new());
        loop {
            let n = match next_step(names, &chain) {
                Step::Load(n) => n,
                Step::Adopt(n) => {
                    chain = chain.adopted(&n);
                    continue;
                }
                Step::Gap(n) => {
                    gaps.push(n.clone());
                    n
                }
                Step::UpToDate => return (merged, gaps, chain),
            };
            chain = chain.applied(&n, txn(&n));
            merged.push(n);
        }
    }

    fn walk(names: &[String], txn: impl Fn(&str) -> u64) -> (Vec<String>, Vec<String>, Chain) {
        walk_from(names, Chain::default(), txn)
    }

    #[test]
    fn describe_tells_base_deltas_and_breaks() {
        assert_eq!(Chain::default().describe(), "nothing merged yet");
        let c = Chain::default().applied(&full(1), 10);
        assert_eq!(c.describe(), "full snapshot, up to txn 10");
        let c = c.applied(&delta(2, 10, 12), 0);
        assert_eq!(c.describe(), "full snapshot + deltas, up to txn 12");
        let c = c.applied(&delta(3, 14, 15), 0);
        assert!(
            c.describe()
                .starts_with("broken: a delta is missing before txn 15")
        );
    }

    #[test]
    fn chain_in_order_whatever_the_listing_order() {
        let f = full(0);
        let (d1, d2, d3) = (delta(1, 10, 12), delta(2, 12, 13), delta(3, 13, 20));
        let old = full(-5);
        let mut names = vec![d3.clone(), old, f.clone(), d1.clone(), d2.clone()];
        let (merged, gaps, chain) = walk(&names, |_| 10);
        assert_eq!(merged, [f.clone(), d1.clone(), d2.clone(), d3.clone()]);
        assert!(gaps.is_empty() && !chain.broken);
        assert_eq!(chain.end, 20);
        names.reverse();
        assert_eq!(walk(&names, |_| 10).0, merged);
        // A delta appearing later continues the chain.
        let d4 = delta(4, 20, 21);
        names.push(d4.clone());
        assert_eq!(next_step(&names, &chain), Step::Load(d4));
    }

    #[test]
    fn missing_delta_is_a_gap_until_the_next_full_snapshot() {
        let f = full(0);
        let d1 = delta(1, 10, 12);
        let d3 = delta(3, 13, 20); // (12, 13] is missing
        let d4 = delta(4, 20, 22);
        let mut names = vec![f.clone(), d1.clone(), d3.clone(), d4.clone()];
        let before_gap = Chain::default().applied(&f, 10).applied(&d1, 0);
        assert_eq!(next_step(&names, &before_gap), Step::Gap(d3.clone()));
        // The deltas after the gap are merged too, but the chain stays broken.
        let (merged, gaps, chain) = walk(&names, |_| 10);
        assert_eq!(merged, [f, d1, d3.clone(), d4]);
        assert_eq!(gaps, [d3]);
        assert!(chain.broken);
        assert_eq!(next_step(&names, &chain), Step::UpToDate);
        // The next full snapshot repairs it, and its deltas follow.
        let f2 = full(5);
        let d6 = delta(6, 25, 26);
        names.extend([f2.clone(), d6.clone()]);
        let (merged, gaps, chain) = walk_from(&names, chain, |_| 25);
        assert_eq!((merged, gaps), (vec![f2, d6], vec![]));
        assert!(!chain.broken);
    }

    #[test]
    fn restarted_writer_and_txn_ids_going_backwards() {
        // A restarted writer, or one whose LMDB was replaced by an older copy (txn IDs lower),
        // starts with a full snapshot; only the newest full snapshot and its chain are needed.
        let f = full(0);
        let d1 = delta(1, 50, 60);
        let f2 = full(2); // the replaced LMDB is at txn 30
        let d3 = delta(3, 30, 31);
        let names = vec![f.clone(), d1.clone(), f2.clone(), d3.clone()];
        let txn = |n: &str| if n == f { 50 } else { 30 };
        let (merged, gaps, chain) = walk(&names, txn);
        assert_eq!(merged, [f2.clone(), d3.clone()]);
        assert!(gaps.is_empty());
        assert_eq!((chain.end, chain.broken), (31, false));
        // A receiver that was at the end of the old chain moves to the new one.
        let old = Chain::default().applied(&f, 50).applied(&d1, 0);
        let (merged, gaps, chain) = walk_from(&names, old, txn);
        assert_eq!((merged, gaps), (vec![f2, d3], vec![]));
        assert_eq!(chain.end, 31);
    }

    #[test]
    fn a_full_snapshot_the_chain_covers_is_adopted_not_loaded() {
        let covering = |t: i64, txn| SnapshotName::full_covering("main", "a", T + t, txn);
        let f = covering(0, 10).object_name();
        let (d1, bridge) = (delta(1, 10, 12), delta(2, 12, 15));
        let f2 = covering(3, 15).object_name();
        let d4 = delta(4, 15, 16);
        let names = vec![
            f.clone(),
            d1.clone(),
            bridge.clone(),
            f2.clone(),
            d4.clone(),
        ];
        // A receiver that followed the chain bridges to f2 and adopts it.
        let at_d1 = Chain::default().applied(&f, 10).applied(&d1, 0);
        assert_eq!(next_step(&names, &at_d1), Step::Load(bridge.clone()));
        let at_bridge = at_d1.applied(&bridge, 0);
        assert_eq!(next_step(&names, &at_bridge), Step::Adopt(f2.clone()));
        let adopted = at_bridge.adopted(&f2);
        assert_eq!(
            (adopted.end, adopted.base.as_deref()),
            (15, Some(f2.as_str()))
        );
        assert_eq!(next_step(&names, &adopted), Step::Load(d4.clone()));
        // A new receiver loads f2 directly; one whose chain is broken, or that lacks the bridge
        // (cleaned), loads it too.
        assert_eq!(next_step(&names, &Chain::default()), Step::Load(f2.clone()));
        let broken = Chain {
            broken: true,
            ..at_bridge.clone()
        };
        assert_eq!(next_step(&names, &broken), Step::Load(f2.clone()));
        let cleaned = vec![f.clone(), d1.clone(), f2.clone(), d4];
        assert_eq!(next_step(&cleaned, &at_d1), Step::Load(f2.clone()));
        // A full snapshot without the covered transaction (Go's, or a restart's) is loaded.
        let plain = full(3);
        let names = vec![f, d1, bridge, plain.clone()];
        assert_eq!(next_step(&names, &at_bridge), Step::Load(plain));
    }

    #[test]
    fn only_deltas_or_nothing() {
        assert_eq!(next_step(&[], &Chain::default()), Step::UpToDate);
        // Deltas without a full snapshot: merged, but never a complete chain.
        let d = delta(1, 1, 2);
        assert_eq!(
            next_step(std::slice::from_ref(&d), &Chain::default()),
            Step::Gap(d.clone())
        );
        let (_, _, chain) = walk(std::slice::from_ref(&d), |_| 0);
        assert!(chain.broken && chain.base.is_none());
        // Unparseable names are not objects of the chain.
        let f = full(0);
        let names = vec![f.clone(), "main__a__garbage.delta.pb.gz".to_string()];
        let (merged, gaps, _) = walk(&names, |_| 3);
        assert_eq!((merged, gaps), (vec![f], vec![]));
    }
}
