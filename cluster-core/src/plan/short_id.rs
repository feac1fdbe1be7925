//! Choosing a short id: the lowest positive integer not in use.

use std::collections::BTreeSet;

use crate::id::ShortId;

/// The lowest short id not in `in_use`; `None` only when all 2³²−1 are taken.
///
/// ```
/// use cluster_core::{plan::lowest_free_short_id, ShortId};
/// let ids = [1, 2, 4].map(|n| ShortId::new(n).unwrap());
/// assert_eq!(lowest_free_short_id(ids).unwrap().get(), 3);
/// ```
pub fn lowest_free_short_id(in_use: impl IntoIterator<Item = ShortId>) -> Option<ShortId> {
    let used: BTreeSet<ShortId> = in_use.into_iter().collect();
    let mut candidate = ShortId::MIN;
    for id in used {
        // `used` is sorted: the first gap is the answer.
        if id > candidate {
            break;
        }
        candidate = id.next()?;
    }
    Some(candidate)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn ids(ns: &[u32]) -> Vec<ShortId> {
        ns.iter().map(|n| ShortId::new(*n).unwrap()).collect()
    }

    #[test]
    fn examples() {
        assert_eq!(lowest_free_short_id(ids(&[])).unwrap().get(), 1);
        assert_eq!(lowest_free_short_id(ids(&[1, 2, 3])).unwrap().get(), 4);
        assert_eq!(lowest_free_short_id(ids(&[2, 3])).unwrap().get(), 1);
        assert_eq!(lowest_free_short_id(ids(&[3, 1, 1, 5])).unwrap().get(), 2);
        assert_eq!(lowest_free_short_id(ids(&[u32::MAX])).unwrap().get(), 1);
    }

    proptest! {
        #[test]
        fn is_the_lowest_free(used in proptest::collection::btree_set(1u32..64, 0..64)) {
            let got = lowest_free_short_id(ids(&used.iter().copied().collect::<Vec<_>>())).unwrap().get();
            prop_assert!(!used.contains(&got));
            prop_assert!((1..got).all(|n| used.contains(&n)));
        }
    }
}
