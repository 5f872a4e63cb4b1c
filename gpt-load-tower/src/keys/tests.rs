//! Pool behaviour under concurrency and at scale.

use std::{collections::HashSet, sync::Arc, thread, time::Duration};

use super::*;

fn pool_with(n: u64) -> MemoryKeyPool {
    let pool = MemoryKeyPool::new();
    pool.set_group(
        "g".into(),
        (0..n).map(|i| KeySlot::new(KeyId(i), format!("key-{i}").into())),
    );
    pool
}

#[test]
fn round_robin_over_active_keys() {
    let pool = pool_with(3);
    let picks: Vec<u64> = (0..6)
        .map(|_| pool.select("g", &ExcludedKeys::new()).unwrap().id().0)
        .collect();
    assert_eq!(picks, [0, 1, 2, 0, 1, 2]);
}

#[test]
fn unknown_group_and_empty_group_have_no_key() {
    let pool = pool_with(0);
    assert!(pool.select("g", &ExcludedKeys::new()).is_none());
    assert!(pool.select("nope", &ExcludedKeys::new()).is_none());
    assert!(!pool.has_candidate("g", &ExcludedKeys::new()));
}

#[test]
fn blacklists_after_threshold_consecutive_failures_and_success_resets() {
    let pool = pool_with(2);
    let key = pool.select("g", &ExcludedKeys::new()).unwrap();
    let fail = Report::Failure {
        blacklist_threshold: 3,
    };
    pool.report(&key, fail);
    pool.report(&key, fail);
    pool.report(&key, Report::Success);
    assert_eq!(key.slot().consecutive_failures(), 0);
    pool.report(&key, fail);
    pool.report(&key, fail);
    assert_eq!(key.slot().state(), KeyState::Degraded);
    pool.report(&key, fail);
    assert_eq!(key.slot().state(), KeyState::Invalid);
    for _ in 0..10 {
        assert_ne!(pool.select("g", &ExcludedKeys::new()).unwrap().id(), key.id());
    }
}

#[test]
fn threshold_zero_never_blacklists() {
    let pool = pool_with(1);
    let key = pool.select("g", &ExcludedKeys::new()).unwrap();
    for _ in 0..100 {
        pool.report(
            &key,
            Report::Failure {
                blacklist_threshold: 0,
            },
        );
    }
    assert_eq!(key.slot().state(), KeyState::Degraded);
    assert_eq!(key.slot().consecutive_failures(), 100);
}

fn picks_of(pool: &MemoryKeyPool, n: usize) -> std::collections::HashMap<KeyId, usize> {
    let mut counts = std::collections::HashMap::new();
    for _ in 0..n {
        *counts
            .entry(pool.select("g", &ExcludedKeys::new()).unwrap().id())
            .or_default() += 1;
    }
    counts
}

#[test]
fn degraded_keys_are_selected_less_often_and_recover_on_success() {
    let pool = pool_with(2);
    let degraded = pool.get("g", KeyId(0)).unwrap();
    let key = SelectedKey::new("g".into(), degraded.clone());
    pool.report(
        &key,
        Report::Failure {
            blacklist_threshold: 3,
        },
    );
    assert_eq!(degraded.state(), KeyState::Degraded);
    assert_eq!(pool.stats("g").unwrap().degraded, 1);
    // Half the turns are key 0's; by default it takes one in four of them.
    let counts = picks_of(&pool, 400);
    assert_eq!(counts[&KeyId(0)], 50, "{counts:?}");
    assert_eq!(counts[&KeyId(1)], 350, "{counts:?}");

    pool.set_degraded_weight(&"g".into(), 1.0);
    let counts = picks_of(&pool, 400);
    assert_eq!(counts[&KeyId(0)], 200, "weight 1: as often as a healthy key");

    pool.set_degraded_weight(&"g".into(), 0.25);
    pool.report(&key, Report::Success);
    assert_eq!(degraded.state(), KeyState::Active);
    assert_eq!(
        picks_of(&pool, 400)[&KeyId(0)],
        200,
        "a success makes it healthy again"
    );
}

#[test]
fn degraded_keys_serve_when_no_healthy_key_is_left() {
    let pool = pool_with(2);
    for slot in pool.keys("g") {
        pool.report(
            &SelectedKey::new("g".into(), slot),
            Report::Failure {
                blacklist_threshold: 3,
            },
        );
    }
    let counts = picks_of(&pool, 100);
    assert_eq!(counts.values().sum::<usize>(), 100, "every request gets a key");
    assert_eq!(counts.len(), 2);
    // And one excluded: the other, degraded, still serves.
    let mut tried = ExcludedKeys::new();
    tried.insert(KeyId(0));
    for _ in 0..8 {
        assert_eq!(pool.select("g", &tried).unwrap().id(), KeyId(1));
    }
}

#[test]
fn one_request_at_a_time_probes_a_key_whose_rest_is_over() {
    let pool = pool_with(1);
    let before = pool.select("g", &ExcludedKeys::new()).unwrap();
    let cooled = pool.select("g", &ExcludedKeys::new()).unwrap();
    pool.report(
        &cooled,
        Report::CoolDown {
            duration: Duration::from_secs(10),
        },
    );
    // A request that started before the rest succeeds: the rest goes on.
    pool.report(&before, Report::Success);
    assert_eq!(cooled.slot().state(), KeyState::Cooling);
    assert!(pool.select("g", &ExcludedKeys::new()).is_none());

    crate::clock::advance(Duration::from_secs(10));
    assert!(
        pool.has_candidate("g", &ExcludedKeys::new()),
        "looking takes nothing"
    );
    let probe = pool.select("g", &ExcludedKeys::new()).unwrap();
    assert!(probe.is_probe());
    assert!(
        pool.select("g", &ExcludedKeys::new()).is_none(),
        "one probe at a time"
    );
    assert!(!pool.has_candidate("g", &ExcludedKeys::new()));

    // The probe never answered (its client went away): after the window another request probes.
    crate::clock::advance(super::slot::PROBE_WINDOW);
    let second = pool.select("g", &ExcludedKeys::new()).unwrap();
    assert!(second.is_probe());
    pool.report(&second, Report::Success);
    assert_eq!(second.slot().state(), KeyState::Active);
    assert_eq!(second.slot().backoff_level(), 0);
    assert!(!pool.select("g", &ExcludedKeys::new()).unwrap().is_probe());
}

#[test]
fn a_failed_probe_counts_like_any_failure() {
    let pool = pool_with(1);
    let key = pool.select("g", &ExcludedKeys::new()).unwrap();
    pool.report(
        &key,
        Report::CoolDown {
            duration: Duration::from_secs(1),
        },
    );
    crate::clock::advance(Duration::from_secs(1));
    let probe = pool.select("g", &ExcludedKeys::new()).unwrap();
    pool.report(
        &probe,
        Report::Failure {
            blacklist_threshold: 1,
        },
    );
    assert_eq!(probe.slot().state(), KeyState::Invalid);
    assert!(probe.slot().last_failure_at().is_some());
}

#[test]
fn cooling_keys_rest_until_their_deadline() {
    let pool = pool_with(2);
    let key = pool.select("g", &ExcludedKeys::new()).unwrap();
    pool.report(
        &key,
        Report::CoolDown {
            duration: Duration::from_secs(60),
        },
    );
    assert_eq!(key.slot().state(), KeyState::Cooling);
    assert_eq!(key.slot().consecutive_failures(), 0);
    for _ in 0..5 {
        assert_ne!(pool.select("g", &ExcludedKeys::new()).unwrap().id(), key.id());
    }
    pool.report(
        &key,
        Report::CoolDown {
            duration: Duration::ZERO,
        },
    );
    assert!(key.slot().is_usable());
    let ids: HashSet<_> = (0..4)
        .map(|_| pool.select("g", &ExcludedKeys::new()).unwrap().id())
        .collect();
    assert!(ids.contains(&key.id()));
}

#[test]
fn all_cooling_fails_fast_until_restored() {
    let pool = pool_with(3);
    for slot in pool.keys("g") {
        pool.report(
            &SelectedKey::new("g".into(), slot),
            Report::CoolDown {
                duration: Duration::from_secs(60),
            },
        );
    }
    assert!(pool.select("g", &ExcludedKeys::new()).is_none());
    assert!(pool.select("g", &ExcludedKeys::new()).is_none());
    assert!(pool.set_state("g", KeyId(1), KeyState::Active));
    assert_eq!(pool.select("g", &ExcludedKeys::new()).unwrap().id(), KeyId(1));
}

#[test]
fn manual_states_and_restore() {
    let pool = pool_with(2);
    assert!(pool.set_state("g", KeyId(0), KeyState::Disabled));
    assert!(!pool.set_state("g", KeyId(9), KeyState::Disabled));
    for _ in 0..4 {
        assert_eq!(pool.select("g", &ExcludedKeys::new()).unwrap().id(), KeyId(1));
    }
    pool.report(
        &pool.select("g", &ExcludedKeys::new()).unwrap(),
        Report::Invalidate,
    );
    assert!(pool.select("g", &ExcludedKeys::new()).is_none());
    assert_eq!(
        pool.set_states("g", [(KeyId(0), KeyState::Active), (KeyId(1), KeyState::Active)]),
        2
    );
    let ids: HashSet<_> = (0..4)
        .map(|_| pool.select("g", &ExcludedKeys::new()).unwrap().id())
        .collect();
    assert_eq!(ids.len(), 2);
    let stats = pool.stats("g").unwrap();
    assert_eq!((stats.total, stats.active, stats.invalid), (2, 2, 0));
}

#[test]
fn membership_changes_keep_live_state() {
    let pool = pool_with(2);
    let key = pool.select("g", &ExcludedKeys::new()).unwrap();
    pool.report(
        &key,
        Report::Failure {
            blacklist_threshold: 1,
        },
    );
    pool.set_group(
        "g".into(),
        (0..3).map(|i| KeySlot::new(KeyId(i), format!("key-{i}").into())),
    );
    assert_eq!(pool.get("g", key.id()).unwrap().state(), KeyState::Invalid);
    assert_eq!(
        pool.add_keys(
            "g".into(),
            [
                KeySlot::new(KeyId(2), "dup".into()),
                KeySlot::new(KeyId(3), "k3".into())
            ]
        ),
        1
    );
    assert_eq!(pool.remove_keys("g", [KeyId(0), KeyId(42)]), 1);
    assert_eq!(pool.keys("g").len(), 3);
    assert!(pool.remove_group("g"));
    assert!(!pool.remove_group("g"));
    assert!(pool.groups().is_empty());
}

#[test]
fn keys_are_found_by_id_whatever_order_they_came_in() {
    let pool = MemoryKeyPool::new();
    pool.set_group(
        "g".into(),
        [5, 1, 9, 1].map(|i| KeySlot::new(KeyId(i), format!("key-{i}").into())),
    );
    // The first of two slots with one id is the one kept.
    assert_eq!(pool.get("g", KeyId(1)).unwrap().secret().expose(), "key-1");
    assert_eq!(pool.keys("g").len(), 3);
    let added = pool.add_keys(
        "g".into(),
        [7, 3, 7, 9].map(|i| KeySlot::new(KeyId(i), format!("new-{i}").into())),
    );
    assert_eq!(added, 2, "9 was there already and 7 came twice");
    let ids: Vec<u64> = pool.keys("g").iter().map(|slot| slot.id().0).collect();
    assert_eq!(ids, [1, 3, 5, 7, 9]);
    assert_eq!(pool.get("g", KeyId(7)).unwrap().secret().expose(), "new-7");
    assert_eq!(pool.get("g", KeyId(9)).unwrap().secret().expose(), "key-9");
    assert!(pool.get("g", KeyId(4)).is_none());
    assert_eq!(
        pool.set_states(
            "g",
            [(KeyId(3), KeyState::Disabled), (KeyId(4), KeyState::Disabled)]
        ),
        1
    );
    assert_eq!(pool.get("g", KeyId(3)).unwrap().state(), KeyState::Disabled);
    assert_eq!(pool.remove_keys("g", [KeyId(1), KeyId(9)]), 2);
    let ids: Vec<u64> = pool.keys("g").iter().map(|slot| slot.id().0).collect();
    assert_eq!(ids, [3, 5, 7]);
}

#[test]
fn restored_slot_state_from_storage() {
    let pool = MemoryKeyPool::new();
    pool.set_group(
        "g".into(),
        [
            KeySlot::with_state(KeyId(1), "a".into(), KeyState::Invalid, 3),
            KeySlot::with_state(KeyId(2), "b".into(), KeyState::Active, 1),
        ],
    );
    assert_eq!(pool.select("g", &ExcludedKeys::new()).unwrap().id(), KeyId(2));
    assert_eq!(pool.get("g", KeyId(2)).unwrap().consecutive_failures(), 1);
}

#[test]
fn concurrent_selection_never_returns_invalid_or_excluded_keys() {
    let pool = Arc::new(pool_with(64));
    // Blacklist every third key up front.
    for id in (0..64).step_by(3) {
        let key = SelectedKey::new("g".into(), pool.get("g", KeyId(id)).unwrap());
        pool.report(&key, Report::Invalidate);
    }
    let threads: Vec<_> = (0..8)
        .map(|t| {
            let pool = pool.clone();
            thread::spawn(move || {
                for round in 0..2_000 {
                    // One request with up to three retries: never the same key twice.
                    let mut excluded = ExcludedKeys::new();
                    for _ in 0..4 {
                        let key = pool.select("g", &excluded).expect("usable keys remain");
                        assert_ne!(key.id().0 % 3, 0, "picked a blacklisted key");
                        assert!(!excluded.contains(key.id()), "picked a key twice in one request");
                        excluded.insert(key.id());
                        if (round + t) % 7 == 0 {
                            pool.report(
                                &key,
                                Report::Failure {
                                    blacklist_threshold: 0,
                                },
                            );
                        } else {
                            pool.report(&key, Report::Success);
                        }
                    }
                }
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
}

#[test]
fn concurrent_blacklisting_converges() {
    let pool = Arc::new(pool_with(1_000));
    let threads: Vec<_> = (0..4)
        .map(|_| {
            let pool = pool.clone();
            thread::spawn(move || {
                for _ in 0..5_000 {
                    if let Some(key) = pool.select("g", &ExcludedKeys::new())
                        && key.id().0 % 8 < 4
                    {
                        pool.report(
                            &key,
                            Report::Failure {
                                blacklist_threshold: 1,
                            },
                        );
                    }
                }
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
    // Every key whose id matched its thread was blacklisted at most once and never re-selected.
    let stats = pool.stats("g").unwrap();
    assert_eq!(stats.total, 1_000);
    assert_eq!(stats.active + stats.invalid, 1_000);
    assert_eq!(
        stats.invalid, 500,
        "every key with id % 8 < 4 was selected at least once and blacklisted"
    );
    for _ in 0..2_000 {
        let key = pool.select("g", &ExcludedKeys::new()).unwrap();
        assert_eq!(key.slot().state(), KeyState::Active);
        assert!(key.id().0 % 8 >= 4);
    }
}

#[test]
fn selection_stays_cheap_with_a_large_dead_prefix() {
    // 10,000 keys of which the first 9,990 are blacklisted: after the lazy rebuild the view
    // holds only the ten live keys.
    let pool = pool_with(10_000);
    for id in 0..9_990 {
        pool.report(
            &SelectedKey::new("g".into(), pool.get("g", KeyId(id)).unwrap()),
            Report::Invalidate,
        );
    }
    let ids: HashSet<_> = (0..20)
        .map(|_| pool.select("g", &ExcludedKeys::new()).unwrap().id().0)
        .collect();
    assert!(ids.iter().all(|id| *id >= 9_990));
    assert_eq!(ids.len(), 10);
}

#[tokio::test]
async fn events_are_coalesced_per_key() {
    let (pool, mut events) = MemoryKeyPool::with_events();
    pool.set_group("g".into(), [KeySlot::new(KeyId(1), "k".into())]);
    for _ in 0..5 {
        let key = pool.select("g", &ExcludedKeys::new()).unwrap();
        pool.report(
            &key,
            Report::Failure {
                blacklist_threshold: 0,
            },
        );
    }
    let event = events.recv().await.unwrap();
    assert_eq!(event.requests, 5);
    assert_eq!(event.consecutive_failures, 5);
    assert!(events.try_recv().is_none(), "one event for five changes");

    let key = pool.select("g", &ExcludedKeys::new()).unwrap();
    pool.report(
        &key,
        Report::CoolDown {
            duration: Duration::from_secs(30),
        },
    );
    let batch = events.recv_batch(10).await;
    assert_eq!(batch.len(), 1);
    assert_eq!(batch[0].state, KeyState::Cooling);
    assert!(batch[0].cooling_for.is_some());
}

#[test]
fn renaming_a_group_keeps_its_slots_and_states() {
    let pool = pool_with(3);
    let before = pool.keys("g");
    assert!(pool.set_state("g", KeyId(2), KeyState::Invalid));
    assert!(pool.rename_group("g", "h".into()));
    assert!(pool.keys("g").is_empty(), "the old name is gone");
    let after = pool.keys("h");
    assert_eq!(after.len(), 3);
    for (a, b) in before.iter().zip(&after) {
        assert!(Arc::ptr_eq(a, b), "the same slots move");
    }
    assert_eq!(pool.get("h", KeyId(2)).unwrap().state(), KeyState::Invalid);
    let picked = pool.select("h", &ExcludedKeys::new()).unwrap();
    assert_ne!(picked.id(), KeyId(2), "an invalid key stays out of selection");
    assert!(!pool.rename_group("missing", "x".into()));
}

/// A group with `active` usable keys (ids from 0) and `pending` new ones after them.
fn pool_with_pending(active: u64, pending: u64) -> MemoryKeyPool {
    let pool = pool_with(active);
    pool.add_keys(
        "g".into(),
        (active..active + pending)
            .map(|i| KeySlot::with_state(KeyId(i), format!("key-{i}").into(), KeyState::Pending, 0)),
    );
    pool
}

#[test]
fn pending_keys_wait_while_an_active_key_serves() {
    let pool = pool_with_pending(1, 3);
    let counts = picks_of(&pool, 50);
    assert_eq!(counts.keys().copied().collect::<Vec<_>>(), [KeyId(0)]);
    assert_eq!(pool.stats("g").unwrap().pending, 3);
    // The active key excluded (it just failed): a pending key is better than none.
    let mut tried = ExcludedKeys::new();
    tried.insert(KeyId(0));
    let fallback = pool.select("g", &tried).unwrap();
    assert_eq!(fallback.slot().state(), KeyState::Pending);
}

#[test]
fn pending_keys_serve_a_group_without_active_keys_and_a_success_activates_them() {
    let pool = pool_with_pending(0, 3);
    assert!(pool.has_candidate("g", &ExcludedKeys::new()));
    let first = pool.select("g", &ExcludedKeys::new()).unwrap();
    let second = pool.select("g", &ExcludedKeys::new()).unwrap();
    assert_ne!(first.id(), second.id(), "pending keys take turns");
    pool.report(&first, Report::Success);
    assert_eq!(first.slot().state(), KeyState::Active);
    // The key that proved itself now serves alone; the others wait for validation.
    for _ in 0..10 {
        assert_eq!(pool.select("g", &ExcludedKeys::new()).unwrap().id(), first.id());
    }
    let stats = pool.stats("g").unwrap();
    assert_eq!((stats.active, stats.pending), (1, 2));
}

#[test]
fn pending_keys_do_not_serve_when_the_group_forbids_it() {
    let pool = pool_with_pending(0, 2);
    pool.set_pending_fallback(&"g".into(), false);
    assert!(pool.select("g", &ExcludedKeys::new()).is_none());
    assert!(!pool.has_candidate("g", &ExcludedKeys::new()));
    // Validation activates them.
    assert!(pool.set_state("g", KeyId(1), KeyState::Active));
    assert_eq!(pool.select("g", &ExcludedKeys::new()).unwrap().id(), KeyId(1));
}

#[test]
fn a_pending_key_that_fails_is_counted_and_one_rate_limited_cools() {
    let pool = pool_with_pending(0, 2);
    let failing = pool.select("g", &ExcludedKeys::new()).unwrap();
    let fail = Report::Failure {
        blacklist_threshold: 2,
    };
    pool.report(&failing, fail);
    assert_eq!(
        failing.slot().state(),
        KeyState::Pending,
        "one failure proves nothing"
    );
    pool.report(&failing, fail);
    assert_eq!(failing.slot().state(), KeyState::Invalid);

    let limited = pool.select("g", &ExcludedKeys::new()).unwrap();
    assert_ne!(limited.id(), failing.id());
    pool.report(
        &limited,
        Report::CoolDown {
            duration: Duration::from_secs(30),
        },
    );
    // A rate limit means the provider knows the key: it rests, then is probed like any key.
    assert_eq!(limited.slot().state(), KeyState::Cooling);
    assert!(pool.select("g", &ExcludedKeys::new()).is_none());
    crate::clock::advance(Duration::from_secs(30));
    let probe = pool.select("g", &ExcludedKeys::new()).unwrap();
    assert!(probe.is_probe());
    assert_eq!(probe.id(), limited.id());
}

#[test]
fn a_provider_failure_leaves_a_pending_key_pending() {
    let pool = pool_with_pending(0, 1);
    let key = pool.select("g", &ExcludedKeys::new()).unwrap();
    pool.report(&key, Report::Transient);
    assert_eq!(key.slot().state(), KeyState::Pending);
    pool.report(&key, Report::Answered);
    assert_eq!(
        key.slot().state(),
        KeyState::Active,
        "the provider accepted the key"
    );
}

fn select(pool: &MemoryKeyPool) -> Option<SelectedKey> {
    pool.select("g", &ExcludedKeys::new())
}

#[test]
fn a_key_at_its_rpm_is_passed_over_while_the_others_serve() {
    let pool = pool_with(2);
    pool.set_limits_of(&"g".into(), KeyId(0), Some(KeyLimits::new().rpm(3)));
    let mut only_key_0 = ExcludedKeys::new();
    only_key_0.insert(KeyId(1));
    let taken_by_key_0 = |pool: &MemoryKeyPool| {
        (0..10)
            .filter(|_| pool.select("g", &only_key_0).is_some())
            .count()
    };
    // Key 1 has no limit, so the most headroom once key 0 took a request: it takes the traffic.
    let picks = picks_of(&pool, 20);
    assert_eq!(picks[&KeyId(0)], 1, "{picks:?}");
    assert_eq!(taken_by_key_0(&pool), 2, "three in all");
    // 59 seconds on, the three are still within the minute: never a fourth.
    crate::clock::advance(Duration::from_secs(59));
    assert_eq!(taken_by_key_0(&pool), 0);
    assert_eq!(picks_of(&pool, 10)[&KeyId(1)], 10);
    // A minute after they were taken, they have left the window.
    crate::clock::advance(Duration::from_secs(1));
    assert_eq!(taken_by_key_0(&pool), 3);
    assert_eq!(pool.get("g", KeyId(0)).unwrap().limit_usage(), (3, 0));
}

#[test]
fn with_every_key_at_a_limit_the_refusal_names_it_and_the_soonest_room() {
    let pool = pool_with(2);
    pool.set_key_limits(&"g".into(), KeyLimits::new().rpm(1));
    assert_eq!(select(&pool).unwrap().id(), KeyId(0));
    crate::clock::advance(Duration::from_secs(20));
    assert_eq!(select(&pool).unwrap().id(), KeyId(1));
    assert!(select(&pool).is_none());
    assert!(!pool.has_candidate("g", &ExcludedKeys::new()));
    let stats = pool.stats("g").unwrap();
    assert_eq!((stats.at_limit, stats.rpm_headroom), (2, 0));
    let refusal = pool.limit_refusal("g", &ExcludedKeys::new(), None).unwrap();
    assert_eq!(refusal.limit, "key_rpm");
    // Key 0 frees first, 40 seconds from now.
    assert!(
        refusal.retry_after <= Duration::from_secs(40) && refusal.retry_after > Duration::from_secs(38),
        "{refusal:?}"
    );
    crate::clock::advance(refusal.retry_after);
    let stats = pool.stats("g").unwrap();
    assert_eq!(
        (stats.at_limit, stats.rpm_headroom),
        (1, 1),
        "key 0 has room again"
    );
    assert_eq!(select(&pool).unwrap().id(), KeyId(0));
    // Limits removed: nothing is counted or refused any more.
    pool.set_key_limits(&"g".into(), KeyLimits::new());
    assert_eq!(picks_of(&pool, 4).len(), 2);
    assert_eq!(pool.limit_refusal("g", &ExcludedKeys::new(), None), None);
}

#[test]
fn a_refusal_is_only_given_when_limits_are_what_keeps_every_key_out() {
    let pool = pool_with(2);
    pool.set_key_limits(&"g".into(), KeyLimits::new().rpm(5));
    let mut excluded = ExcludedKeys::new();
    excluded.insert(KeyId(0));
    excluded.insert(KeyId(1));
    assert!(pool.select("g", &excluded).is_none());
    assert_eq!(
        pool.limit_refusal("g", &excluded, None),
        None,
        "no key: 503, not 429"
    );
    pool.set_state("g", KeyId(0), KeyState::Disabled);
    pool.set_state("g", KeyId(1), KeyState::Invalid);
    assert!(select(&pool).is_none());
    assert_eq!(pool.limit_refusal("g", &ExcludedKeys::new(), None), None);
}

#[test]
fn a_concurrency_limit_holds_until_the_request_ends() {
    let pool = pool_with(1);
    pool.set_key_limits(&"g".into(), KeyLimits::new().max_concurrency(1));
    let first = select(&pool).unwrap();
    let in_flight = first.begin_request();
    assert_eq!(pool.get("g", KeyId(0)).unwrap().in_flight(), 1, "counted once");
    assert!(select(&pool).is_none());
    let refusal = pool.limit_refusal("g", &ExcludedKeys::new(), None).unwrap();
    assert_eq!(refusal.limit, "key_concurrency");
    drop(in_flight);
    assert_eq!(pool.get("g", KeyId(0)).unwrap().in_flight(), 0);
    let second = select(&pool).unwrap();
    drop(second.begin_request());
    assert!(select(&pool).is_some());
}

#[test]
fn requests_per_day_run_until_utc_midnight() {
    let pool = pool_with(1);
    pool.set_key_limits(&"g".into(), KeyLimits::new().rpd(2).rpm(100));
    assert!(select(&pool).is_some() && select(&pool).is_some());
    assert!(select(&pool).is_none());
    let refusal = pool.limit_refusal("g", &ExcludedKeys::new(), None).unwrap();
    assert_eq!(refusal.limit, "key_rpd");
    assert!(refusal.retry_after <= Duration::from_secs(24 * 60 * 60));
    // The refused day took nothing from the minute.
    assert_eq!(pool.get("g", KeyId(0)).unwrap().limit_usage(), (2, 2));
    crate::clock::advance(refusal.retry_after);
    assert!(select(&pool).is_some());
}

#[test]
fn the_key_with_more_headroom_is_preferred() {
    let pool = pool_with(2);
    pool.set_limits_of(&"g".into(), KeyId(0), Some(KeyLimits::new().rpm(10)));
    pool.set_limits_of(&"g".into(), KeyId(1), Some(KeyLimits::new().rpm(100)));
    let picks = picks_of(&pool, 40);
    // Turn by turn, key 0 would take 10 of 40 and be spent; by headroom it keeps room.
    assert!(picks[&KeyId(0)] <= 5, "{picks:?}");
    assert!(pool.get("g", KeyId(0)).unwrap().limit_refusal().is_none());
}

#[test]
fn a_cooling_key_at_its_limit_leaves_the_probe_to_the_next_request() {
    let pool = pool_with(1);
    pool.set_key_limits(&"g".into(), KeyLimits::new().rpm(1));
    let key = select(&pool).unwrap();
    pool.report(
        &key,
        Report::CoolDown {
            duration: Duration::from_secs(10),
        },
    );
    crate::clock::advance(Duration::from_secs(10));
    // The rest is over but the minute is not: no probe is spent on a refused request.
    assert!(select(&pool).is_none());
    crate::clock::advance(Duration::from_secs(50));
    let probe = select(&pool).unwrap();
    assert!(probe.is_probe());
}

#[test]
fn many_threads_never_take_more_than_the_keys_allow() {
    let pool = pool_with(4);
    pool.set_key_limits(&"g".into(), KeyLimits::new().rpm(50));
    let taken: usize = (0..8)
        .map(|_| {
            let pool = pool.clone();
            thread::spawn(move || (0..100).filter(|_| select(&pool).is_some()).count())
        })
        .collect::<Vec<_>>()
        .into_iter()
        .map(|t| t.join().unwrap())
        .sum();
    assert_eq!(taken, 200);
    for id in 0..4 {
        assert_eq!(pool.get("g", KeyId(id)).unwrap().limit_usage().0, 50);
    }
}
