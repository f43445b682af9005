//! Properties of batching: every epoch a permutation, resumable from any point, and slices
//! that cover a batch evenly.

use burn_peft_train::{Batcher, split_evenly};
use proptest::prelude::*;

proptest! {
    #[test]
    fn each_epoch_is_a_permutation_and_resuming_continues_it(
        len in 1usize..60,
        seed in any::<u64>(),
        sizes in prop::collection::vec(1usize..9, 1..40),
        stop in 0usize..40,
    ) {
        let mut batcher = Batcher::new(len, seed);
        let drawn: Vec<usize> = sizes.iter().flat_map(|&n| batcher.next_batch(n)).collect();
        prop_assert_eq!(drawn.len(), sizes.iter().sum::<usize>());
        for epoch in drawn.chunks(len).filter(|c| c.len() == len) {
            let mut sorted = epoch.to_vec();
            sorted.sort_unstable();
            prop_assert_eq!(sorted, (0..len).collect::<Vec<_>>());
        }
        // Stopped after any batch, a batcher resumed from its state draws the same rest.
        let stop = stop.min(sizes.len());
        let mut first = Batcher::new(len, seed);
        for &n in &sizes[..stop] {
            first.next_batch(n);
        }
        let mut resumed = Batcher::resume(len, seed, first.state());
        let rest: Vec<usize> = sizes[stop..].iter().flat_map(|&n| resumed.next_batch(n)).collect();
        let already: usize = sizes[..stop].iter().sum();
        prop_assert_eq!(&rest[..], &drawn[already..]);
    }

    #[test]
    fn slices_cover_the_batch_in_order_and_differ_by_at_most_one(
        len in 0usize..200,
        parts in 0usize..20,
    ) {
        let slices = split_evenly(len, parts);
        prop_assert_eq!(slices.len(), parts.max(1).min(len));
        let mut next = 0;
        for s in &slices {
            prop_assert_eq!(s.start, next);
            prop_assert!(!s.is_empty());
            next = s.end;
        }
        prop_assert_eq!(next, len);
        let sizes: Vec<usize> = slices.iter().map(|s| s.len()).collect();
        if let (Some(min), Some(max)) = (sizes.iter().min(), sizes.iter().max()) {
            prop_assert!(max - min <= 1);
        }
    }
}
