//! Key selection from the in-memory pool: one `select` per iteration, for small and very large
//! groups, with a request that already tried some keys, and with most of the group blacklisted.
//!
//! Run with `cargo bench -p gpt-load-tower --bench select`.

use std::hint::black_box;

use criterion::{BenchmarkId, Criterion, criterion_group, criterion_main};
use gpt_load_tower::{
    context::GroupName,
    keys::{ExcludedKeys, KeyId, KeyPool, KeySlot, KeyState, MemoryKeyPool, Report, SelectedKey},
};

const GROUP: &str = "bench";

/// A pool holding one group of `size` active keys with ids `0..size`.
fn pool_of(size: u64) -> MemoryKeyPool {
    let pool = MemoryKeyPool::new();
    pool.set_group(
        GroupName::from(GROUP),
        (0..size).map(|i| KeySlot::new(KeyId(i), format!("sk-bench-{i:08}").into())),
    );
    pool
}

fn select(c: &mut Criterion) {
    let mut group = c.benchmark_group("select");
    let none = ExcludedKeys::new();
    let mut three = ExcludedKeys::new();
    for id in 1..=3 {
        three.insert(KeyId(id));
    }

    for size in [1_u64, 1_000, 1_000_000] {
        let pool = pool_of(size);
        assert!(pool.select(GROUP, &none).is_some());
        group.bench_function(BenchmarkId::from_parameter(size), |b| {
            b.iter(|| black_box(pool.select(black_box(GROUP), black_box(&none))));
        });
        if size < 1_000 {
            continue;
        }

        // A retry: the request already tried three keys, which the cursor meets on its way round.
        group.bench_function(BenchmarkId::new("excluded3", size), |b| {
            b.iter(|| black_box(pool.select(black_box(GROUP), black_box(&three))));
        });

        // Nine keys in ten blacklisted; every tenth key (ids 0, 10, 20, ...) stays active.
        for slot in pool.keys(GROUP) {
            if slot.id().0 % 10 != 0 {
                pool.report(&SelectedKey::new(GROUP.into(), slot), Report::Invalidate);
            }
        }
        // The first selection after the burst rebuilds the view without the dead keys.
        let first = pool.select(GROUP, &none).expect("an active key is left");
        assert_eq!(first.id().0 % 10, 0);
        assert_eq!(
            pool.get(GROUP, KeyId(1)).map(|s| s.state()),
            Some(KeyState::Invalid)
        );
        group.bench_function(BenchmarkId::new("blacklisted90", size), |b| {
            b.iter(|| black_box(pool.select(black_box(GROUP), black_box(&none))));
        });
    }
    group.finish();
}

criterion_group!(benches, select);
criterion_main!(benches);
