//! Which object of a remote instance to merge next when it publishes deltas (pure, no I/O).
//! An instance's objects form chains: a full snapshot covering its LMDB up to transaction `X`,
//! then deltas `(X, Y]`, `(Y, Z]`, ... in name (= time) order. A receiver merges the newest full
//! snapshot it has not merged, then every delta that continues the chain it holds. A delta that
//! does not continue it (one missing, cleaned or corrupt, or the writer restarted) is a gap: the
//! instance's data is incomplete here until its next full snapshot, which is merged as soon as
//! it appears. The listing order does not matter; names are sorted here.

use crate::snapshot::name::{Kind, SnapshotName};

/// What this process has merged of one instance.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Chain {
    /// The full snapshot the chain starts from.
    pub base: Option<String>,
    /// The object merged last (the base or a delta).
    pub last: Option<String>,
    /// The instance's LMDB transaction ID the merged objects cover up to.
    pub end: u64,
}

/// The next step for one instance.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Step {
    /// Merge this object next.
    Load(String),
    /// Everything listed is merged.
    UpToDate,
    /// The chain is broken before this delta; wait for a newer full snapshot.
    Gap(String),
}

impl Chain {
    /// The state after merging `name`, whose snapshot metadata says it covers transactions up
    /// to `meta_txn_id` (for full snapshots; a delta's range comes from its name).
    pub fn applied(&self, name: &str, meta_txn_id: u64) -> Chain {
        match SnapshotName::parse_object(name).map(|(_, k)| k) {
            Ok(Kind::Delta { to, .. }) => Chain {
                base: self.base.clone(),
                last: Some(name.to_string()),
                end: to,
            },
            _ => Chain {
                base: Some(name.to_string()),
                last: Some(name.to_string()),
                end: meta_txn_id,
            },
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

    /// Follows the steps from an empty state until there is nothing left, returning the
    /// objects merged and the final step. `txn` maps a full snapshot to its Meta txn ID.
    fn walk(names: &[String], txn: impl Fn(&str) -> u64) -> (Vec<String>, Step, Chain) {
        let mut chain = Chain::default();
        let mut merged = Vec::new();
        loop {
            match next_step(names, &chain) {
                Step::Load(n) => {
                    chain = chain.applied(&n, txn(&n));
                    merged.push(n);
                }
                other => return (merged, other, chain),
            }
        }
    }

    #[test]
    fn chain_in_order_whatever_the_listing_order() {
        let f = full(0);
        let (d1, d2, d3) = (delta(1, 10, 12), delta(2, 12, 13), delta(3, 13, 20));
        let old = full(-5);
        let mut names = vec![d3.clone(), old, f.clone(), d1.clone(), d2.clone()];
        let (merged, step, chain) = walk(&names, |_| 10);
        assert_eq!(merged, [f.clone(), d1.clone(), d2.clone(), d3.clone()]);
        assert_eq!(step, Step::UpToDate);
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
        let mut names = vec![f.clone(), d1.clone(), d3.clone()];
        let (merged, step, chain) = walk(&names, |_| 10);
        assert_eq!(merged, [f, d1]);
        assert_eq!(step, Step::Gap(d3));
        // The next full snapshot repairs it, and its deltas follow.
        let f2 = full(5);
        let d6 = delta(6, 25, 26);
        names.extend([f2.clone(), d6.clone()]);
        assert_eq!(next_step(&names, &chain), Step::Load(f2.clone()));
        let chain = chain.applied(&f2, 25);
        assert_eq!(next_step(&names, &chain), Step::Load(d6));
    }

    #[test]
    fn restarted_writer_and_txn_ids_going_backwards() {
        // The first delta after a full snapshot must start at the full snapshot's txn ID:
        // a writer whose LMDB was replaced by an older copy starts at a lower ID, with a full.
        let f = full(0);
        let d1 = delta(1, 50, 60);
        let f2 = full(2); // the replaced LMDB is at txn 30
        let d3 = delta(3, 30, 31);
        let names = vec![f.clone(), d1.clone(), f2.clone(), d3.clone()];
        let txn = |n: &str| if n == f { 50 } else { 30 };
        let (merged, step, chain) = walk(&names, txn);
        // Only the newest full snapshot and its chain are needed.
        assert_eq!(merged, [f2, d3]);
        assert_eq!((step, chain.end), (Step::UpToDate, 31));
        // A delta of the old chain listed after the new full does not continue it.
        let mut state = Chain::default().applied(&f, 50);
        state = state.applied(&d1, 0);
        let stale = delta(4, 60, 61);
        let names = vec![f.clone(), d1, stale.clone()];
        assert_eq!(next_step(&names, &state), Step::Load(stale));
        let names = vec![f.clone(), delta(5, 70, 71)];
        let state = Chain::default().applied(&f, 50);
        assert!(matches!(next_step(&names, &state), Step::Gap(_)));
    }

    #[test]
    fn only_deltas_or_nothing() {
        assert_eq!(next_step(&[], &Chain::default()), Step::UpToDate);
        let d = delta(1, 1, 2);
        assert_eq!(
            next_step(std::slice::from_ref(&d), &Chain::default()),
            Step::Gap(d)
        );
        // Unparseable names are not objects of the chain.
        let f = full(0);
        let names = vec![f.clone(), "main__a__garbage.delta.pb.gz".to_string()];
        let (merged, step, _) = walk(&names, |_| 3);
        assert_eq!((merged, step), (vec![f], Step::UpToDate));
    }
}
