//! A set of blob ids that stays compact at a million members: a sorted vector (33 bytes a
//! member) and a small hash set of the newest, merged into the vector when it fills. A
//! hash set of the same members takes about twice the memory, and three times while it
//! grows; a first backup of a million items keeps one of these.

use std::collections::HashSet;
use std::hash::Hash;

/// Members added since the last merge, at most (a few MiB).
const RECENT_MAX: usize = 64 * 1024;

#[derive(Debug)]
pub(crate) struct IdSet<K> {
    sorted: Vec<K>,
    recent: HashSet<K>,
}

impl<K> Default for IdSet<K> {
    fn default() -> Self {
        IdSet {
            sorted: Vec::new(),
            recent: HashSet::new(),
        }
    }
}

impl<K: Ord + Hash + Copy> IdSet<K> {
    pub(crate) fn contains(&self, k: &K) -> bool {
        self.recent.contains(k) || self.sorted.binary_search(k).is_ok()
    }

    pub(crate) fn insert(&mut self, k: K) {
        if self.contains(&k) {
            return;
        }
        self.recent.insert(k);
        if self.recent.len() >= RECENT_MAX {
            // In place: the vector grows at its end and is sorted again (no second copy).
            self.sorted.extend(self.recent.drain());
            self.sorted.sort_unstable();
        }
    }

    pub(crate) fn extend(&mut self, ks: impl IntoIterator<Item = K>) {
        for k in ks {
            self.insert(k);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn members_stay_members_across_merges() {
        let mut s = IdSet::default();
        for i in (0..200_000u64).step_by(2) {
            s.insert(i.wrapping_mul(0x9e37_79b9_7f4a_7c15));
        }
        s.insert(2u64.wrapping_mul(0x9e37_79b9_7f4a_7c15));
        for i in 0..200_000u64 {
            assert_eq!(
                s.contains(&i.wrapping_mul(0x9e37_79b9_7f4a_7c15)),
                i % 2 == 0,
                "{i}"
            );
        }
        assert_eq!(s.sorted.len() + s.recent.len(), 100_000);
    }
}
