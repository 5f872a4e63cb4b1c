//! The registry against real databases: loading, one-group changes, keys entering and leaving
//! the pool, and the write-behind of their state.

use std::sync::Arc;

use gpt_load_tower::keys::{ExcludedKeys, KeyPool, Report};

use super::{persist, *};
use crate::db::test_support::TestDb;

fn new_group<'a>(name: &'a str, group_type: &'a str, at: NaiveDateTime) -> NewGroup<'a> {
    NewGroup {
        name,
        display_name: "",
        proxy_keys: "",
        description: "",
        group_type,
        upstreams: r#"[{"url":"http://127.0.0.1:9","weight":1}]"#,
        validation_endpoint: "",
        channel_type: "openai",
        sort: 0,
        test_model: "m",
        param_overrides: "{}",
        config: "{}",
        header_rules: "[]",
        model_redirect_rules: "{}",
        model_redirect_strict: false,
        created_at: at,
        updated_at: at,
    }
}

/// Group `g` with an active and an invalid key, written straight to the database (as another
/// node or an older version would have).
async fn seed(db: &Db, cipher: &KeyCipher) -> GroupRow {
    let at = now();
    let group = group_rows::insert(db, &new_group("g", "standard", at))
        .await
        .unwrap();
    let sealed = [
        SealedKey::seal(cipher, "sk-one-0123456789"),
        SealedKey::seal(cipher, "sk-two-0123456789"),
    ];
    let rows = [
        sealed[0].row(group.id, at),
        sealed[1].row_with_status(group.id, KeyStatus::Invalid, at),
    ];
    key_rows::insert_many(db, &rows).await.unwrap();
    group
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn loads_states_and_persists_events() {
    let cipher = KeyCipher::disabled();
    for t in TestDb::all("loads_states_and_persists_events").await {
        let db = t.db.clone();
        let group = seed(&db, &cipher).await;
        let (registry, events) = Registry::loaded(&db, &cipher).await;
        let summary = registry.load_all().await.unwrap();
        assert_eq!(
            summary,
            LoadSummary {
                groups: 1,
                keys: 2,
                undecryptable: 0
            }
        );
        let pool = registry.pool();
        let stats = pool.stats("g").unwrap();
        assert_eq!((stats.active, stats.invalid), (1, 1), "{}", db.backend());

        let (stop, stopped) = tokio::sync::watch::channel(false);
        let writer = tokio::spawn(persist::run(db.clone(), events, stopped));
        let key = pool.select("g", &ExcludedKeys::new()).unwrap();
        for _ in 0..3 {
            pool.report(
                &key,
                Report::Failure {
                    blacklist_threshold: 3,
                },
            );
        }
        stop.send(true).unwrap();
        let written = writer.await.unwrap();
        assert_eq!(written.unwritten, 0);
        let rows = key_rows::list_by_group(&db, group.id).await.unwrap();
        let row = rows.iter().find(|r| r.id as u64 == key.id().0).unwrap();
        assert_eq!(
            (row.status.as_str(), row.failure_count, row.request_count),
            ("invalid", 3, 1)
        );
        assert!(row.last_used_at.is_some());

        // A restart reads the same state back.
        let (reloaded, _events) = Registry::loaded(&db, &cipher).await;
        assert_eq!(reloaded.pool().stats("g").unwrap().invalid, 2);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn undecryptable_keys_are_left_out() {
    let t = TestDb::sqlite().await;
    seed(
        &t.db,
        &KeyCipher::from_password(Some("one-encryption-key-0123456789")),
    )
    .await;
    let other = KeyCipher::from_password(Some("another-encryption-key-0123456789"));
    let (registry, _events) = Registry::loaded(&t.db, &other).await;
    let summary = registry.load_all().await.unwrap();
    assert_eq!((summary.keys, summary.undecryptable), (0, 2));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_change_to_one_group_leaves_the_others_untouched() {
    let cipher = KeyCipher::from_password(Some("registry-encryption-key-0123456789"));
    for t in TestDb::all("registry_one_group_changes").await {
        let backend = t.db.backend();
        let (registry, _events) = Registry::loaded(&t.db, &cipher).await;
        let at = now();
        let a = registry
            .create_group(&new_group("a", "standard", at))
            .await
            .unwrap();
        let b = registry
            .create_group(&new_group("b", "standard", at))
            .await
            .unwrap();
        registry
            .add_keys(a.id, &["sk-a-0123456789".to_owned()])
            .await
            .unwrap();
        let added = registry
            .add_keys(
                b.id,
                &["sk-b1-0123456789".to_owned(), "sk-b2-0123456789".to_owned()],
            )
            .await
            .unwrap();
        assert_eq!(added, Added { added: 2, total: 2 }, "{backend}");
        let b_keys = registry.pool().keys("b");
        let b_policy = registry.catalog().policy("b").unwrap();
        let b_group = registry.group(b.id).unwrap();

        // Rename A, change its settings, add and delete its keys.
        let mut renamed = new_group("a2", "standard", at);
        renamed.config = r#"{"max_retries":7}"#;
        registry.update_group(a.id, &renamed).await.unwrap().unwrap();
        let more = registry
            .add_keys(
                a.id,
                &["sk-a-0123456789".to_owned(), "sk-a3-0123456789".to_owned()],
            )
            .await
            .unwrap();
        assert_eq!(more, Added { added: 1, total: 2 }, "a key it has is ignored");
        let deleted = registry.delete_keys(a.id, &["sk-a-0123456789".to_owned()]).await;
        assert_eq!(deleted.unwrap(), (1, 1));

        assert!(
            registry.pool().keys("a").is_empty(),
            "{backend}: the old name is gone"
        );
        assert!(registry.catalog().policy("a").is_none());
        let a_keys = registry.pool().keys("a2");
        assert_eq!(a_keys.len(), 1);
        assert_eq!(a_keys[0].secret().expose(), "sk-a3-0123456789");
        assert_eq!(registry.catalog().policy("a2").unwrap().retry.max_retries, 7);

        let b_after = registry.pool().keys("b");
        assert_eq!(b_after.len(), b_keys.len());
        for (before, after) in b_keys.iter().zip(&b_after) {
            assert!(Arc::ptr_eq(before, after), "{backend}: B's slots are the same");
        }
        assert!(Arc::ptr_eq(&b_policy, &registry.catalog().policy("b").unwrap()));
        assert!(
            Arc::ptr_eq(&b_group, &registry.group(b.id).unwrap()),
            "B was not parsed again"
        );

        // Deleting A forgets it; B is still untouched.
        assert!(registry.delete_group(a.id).await.unwrap());
        assert!(registry.pool().stats("a2").is_none());
        assert!(registry.catalog().policy("a2").is_none());
        assert!(Arc::ptr_eq(&b_policy, &registry.catalog().policy("b").unwrap()));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn aggregates_follow_their_members() {
    let cipher = KeyCipher::disabled();
    let t = TestDb::sqlite().await;
    let (registry, _events) = Registry::loaded(&t.db, &cipher).await;
    let at = now();
    let member = registry
        .create_group(&new_group("m", "standard", at))
        .await
        .unwrap();
    let mut aggregate = new_group("agg", "aggregate", at);
    aggregate.upstreams = "[]";
    let agg = registry.create_group(&aggregate).await.unwrap();
    registry.add_sub_groups(agg.id, &[(member.id, 5)]).await.unwrap();
    assert_eq!(registry.state().members(agg.id), [(GroupName::from("m"), 5)]);
    assert!(registry.pool().stats("agg").is_none(), "an aggregate has no keys");

    registry
        .update_group(member.id, &new_group("m2", "standard", at))
        .await
        .unwrap();
    assert_eq!(registry.state().members(agg.id), [(GroupName::from("m2"), 5)]);
    registry.set_sub_group(agg.id, member.id, 9).await.unwrap();
    assert_eq!(registry.state().members(agg.id), [(GroupName::from("m2"), 9)]);
    assert!(registry.remove_sub_group(agg.id, member.id).await.unwrap());
    assert!(registry.state().members(agg.id).is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn key_statuses_reach_the_pool_and_the_table() {
    let cipher = KeyCipher::disabled();
    for t in TestDb::all("registry_key_statuses").await {
        let group = seed(&t.db, &cipher).await;
        let (registry, _events) = Registry::loaded(&t.db, &cipher).await;
        let stored = key_rows::list_by_group(&t.db, group.id).await.unwrap();
        let (active, invalid) = (stored[0].id, stored[1].id);

        assert!(
            registry
                .set_key_status(active, KeyStatus::Disabled)
                .await
                .unwrap()
        );
        assert!(!registry.set_key_status(999_999, KeyStatus::Active).await.unwrap());
        assert_eq!(registry.restore_keys(group.id, None).await.unwrap(), (1, 2));
        let stats = registry.pool().stats("g").unwrap();
        assert_eq!((stats.active, stats.disabled, stats.invalid), (1, 1, 0));
        let picked = registry.pool().select("g", &ExcludedKeys::new()).unwrap();
        assert_eq!(picked.id(), KeyId(invalid as u64), "the restored key serves");

        assert_eq!(
            registry
                .clear_keys(group.id, Some(KeyStatus::Disabled))
                .await
                .unwrap(),
            1
        );
        assert_eq!(registry.pool().stats("g").unwrap().total, 1);
        let left = key_rows::list_by_group(&t.db, group.id).await.unwrap();
        assert_eq!(left.len(), 1);
        assert_eq!(left[0].status, "active");

        let at = now();
        registry.mark_validated(group.id, at).await.unwrap();
        assert_eq!(registry.group(group.id).unwrap().last_validated_at, Some(at));
        let row = group_rows::find(&t.db, group.id).await.unwrap().unwrap();
        assert_eq!(row.last_validated_at, Some(at), "{}", t.db.backend());
    }
}

/// What another node (or an older process) wrote reaches this registry through `reload_group`,
/// the seam cluster invalidation calls: a new group with its keys, a changed one, a deleted one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reloading_one_group_picks_up_changes_made_elsewhere() {
    let cipher = KeyCipher::disabled();
    for t in TestDb::all("registry_reload_group").await {
        let backend = t.db.backend();
        let (registry, _events) = Registry::loaded(&t.db, &cipher).await;
        let other = registry
            .create_group(&new_group("other", "standard", now()))
            .await
            .unwrap();
        let other_policy = registry.catalog().policy("other").unwrap();

        let group = seed(&t.db, &cipher).await;
        assert!(
            registry.catalog().policy("g").is_none(),
            "{backend}: not seen yet"
        );
        registry.reload_group(group.id).await.unwrap();
        assert_eq!(
            registry.pool().stats("g").unwrap().total,
            2,
            "{backend}: its keys came along"
        );
        assert!(registry.catalog().policy("g").is_some());

        let mut changed = new_group("g", "standard", now());
        changed.config = r#"{"max_retries":9}"#;
        group_rows::update(&t.db, group.id, &changed).await.unwrap();
        registry.reload_group(group.id).await.unwrap();
        assert_eq!(registry.catalog().policy("g").unwrap().retry.max_retries, 9);

        group_rows::delete(&t.db, group.id).await.unwrap();
        registry.reload_group(group.id).await.unwrap();
        assert!(registry.catalog().policy("g").is_none(), "{backend}: forgotten");
        assert!(registry.pool().stats("g").is_none());
        assert!(
            Arc::ptr_eq(&other_policy, &registry.catalog().policy("other").unwrap()),
            "{backend}: the other group was left alone"
        );
        assert_eq!(other.name, "other");
    }
}
