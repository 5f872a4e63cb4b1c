//! The repositories against every reachable backend.

use crate::{
    db::test_support::TestDb,
    models::{KeyLifecycleRow, NewApiKey, NewGroup, now},
    repo::{groups, keys, keys::KeyStateUpdate, settings},
};

fn new_group(name: &str) -> NewGroup<'_> {
    let at = now();
    NewGroup {
        name,
        display_name: "Display",
        proxy_keys: "",
        description: "",
        group_type: "standard",
        upstreams: r#"[{"url":"https://api.openai.com","weight":1}]"#,
        validation_endpoint: "",
        channel_type: "openai",
        sort: 0,
        test_model: "gpt-4.1-nano",
        param_overrides: "{}",
        config: "{}",
        header_rules: "[]",
        model_redirect_rules: "{}",
        model_redirect_strict: false,
        created_at: at,
        updated_at: at,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn settings_seed_once_and_update() {
    for t in TestDb::all("settings_seed_once_and_update").await {
        let db = &t.db;
        let defaults = [("max_retries", "3", "retries"), ("proxy_keys", "sk-a", "keys")];
        assert_eq!(
            settings::ensure_defaults(db, &defaults).await.unwrap(),
            2,
            "{}",
            db.backend()
        );
        assert_eq!(settings::ensure_defaults(db, &defaults).await.unwrap(), 0);
        settings::update(db, &[("max_retries", "5"), ("new_setting", "x")])
            .await
            .unwrap();
        let rows = settings::list(db).await.unwrap();
        let values: Vec<_> = rows
            .iter()
            .map(|r| (r.setting_key.as_str(), r.setting_value.as_str()))
            .collect();
        assert_eq!(
            values,
            [("max_retries", "5"), ("new_setting", "x"), ("proxy_keys", "sk-a")]
        );
        assert_eq!(
            settings::ensure_defaults(db, &defaults).await.unwrap(),
            0,
            "seeding never overwrites"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn groups_and_keys_round_trip() {
    for t in TestDb::all("groups_and_keys_round_trip").await {
        let db = &t.db;
        let backend = db.backend();
        let group = groups::insert(db, &new_group("openai")).await.unwrap();
        assert_eq!(group.name, "openai");
        assert!(
            groups::insert(db, &new_group("openai")).await.is_err(),
            "{backend}: names are unique"
        );
        assert_eq!(
            groups::find_by_name(db, "openai").await.unwrap().unwrap().id,
            group.id
        );
        assert!(groups::find_by_name(db, "missing").await.unwrap().is_none());

        let at = now();
        let values: Vec<String> = (0..2_500).map(|i| format!("sk-{i:06}")).collect();
        let new_keys: Vec<NewApiKey<'_>> = values
            .iter()
            .map(|v| NewApiKey {
                key_value: v,
                key_hash: v,
                group_id: group.id,
                status: "active",
                notes: "",
                request_count: 0,
                failure_count: 0,
                created_at: at,
                updated_at: at,
                state: "active",
            })
            .collect();
        assert_eq!(
            keys::insert_many(db, &new_keys).await.unwrap(),
            2_500,
            "{backend}"
        );
        let rows = keys::list_by_group(db, group.id).await.unwrap();
        assert_eq!(rows.len(), 2_500);
        assert_eq!(rows[0].created_at, at, "{backend}: timestamps keep microseconds");

        let used = now();
        let update = |id: i64, status: &'static str, failure_count: i64, new_requests: i64| KeyStateUpdate {
            id,
            status,
            failure_count,
            new_requests,
            last_used_at: (new_requests > 0).then_some(used),
            state: status,
            cooling_until: None,
            backoff_level: 0,
            last_error_message: String::new(),
            last_failure_at: None,
            last_success_at: None,
        };
        let cooled_until = used + chrono::Duration::seconds(90);
        let updates = [
            KeyStateUpdate {
                state: "cooling",
                cooling_until: Some(cooled_until),
                backoff_level: 2,
                last_error_message: "Rate limit reached; 你好".to_owned(),
                last_failure_at: Some(used),
                ..update(rows[0].id, "invalid", 3, 4)
            },
            KeyStateUpdate {
                last_success_at: Some(used),
                ..update(rows[1].id, "active", 0, 0)
            },
            update(-1, "active", 0, 1),
        ];
        assert_eq!(
            keys::apply_states(db, &updates, used).await.unwrap(),
            2,
            "{backend}: a deleted key is skipped"
        );
        keys::apply_states(db, &updates[..1], used).await.unwrap();
        let rows = keys::list_by_group(db, group.id).await.unwrap();
        assert_eq!(
            (
                rows[0].status.as_str(),
                rows[0].failure_count,
                rows[0].request_count
            ),
            ("invalid", 3, 8)
        );
        assert_eq!(rows[0].last_used_at, Some(used));
        assert_eq!(rows[1].last_used_at, None);

        // The lifecycle columns round-trip on every backend.
        assert_eq!(keys::mark_validated(db, &[rows[1].id], used).await.unwrap(), 1);
        let stored = keys::list_stored(db, Some(group.id)).await.unwrap();
        assert_eq!(stored.len(), 2_500, "{backend}");
        let (first, second) = (&stored[0].1, &stored[1].1);
        assert_eq!(
            (first.state.as_str(), first.cooling_until, first.backoff_level),
            ("cooling", Some(cooled_until), 2),
            "{backend}"
        );
        assert_eq!(first.last_error_message, "Rate limit reached; 你好", "{backend}");
        assert_eq!(
            (first.last_failure_at, first.last_validated_at),
            (Some(used), None)
        );
        assert_eq!(
            (second.last_success_at, second.last_validated_at),
            (Some(used), Some(used)),
            "{backend}"
        );
        assert_eq!(
            stored[2].1,
            KeyLifecycleRow {
                state: "active".to_owned(),
                ..KeyLifecycleRow::default()
            },
            "{backend}: new keys start active with no history"
        );

        // The pool reads the same keys a page at a time, by id, with the lifecycle columns.
        let pooled = keys::pool_keys(db, group.id).await.unwrap();
        let ids = |rows: &[keys::PoolKey]| rows.iter().map(|(row, _)| row.id).collect::<Vec<_>>();
        assert_eq!(
            ids(&pooled),
            stored.iter().map(|(row, _)| row.id).collect::<Vec<_>>()
        );
        assert_eq!(pooled[0].1, stored[0].1, "{backend}");
        assert_eq!(
            (
                pooled[0].0.status.as_str(),
                pooled[0].0.failure_count,
                pooled[0].0.key_value.as_str()
            ),
            ("invalid", 3, stored[0].0.key_value.as_str())
        );
        let mut paged = Vec::new();
        let mut sizes = Vec::new();
        loop {
            let after = paged.last().map_or(0, |(row, _): &keys::PoolKey| row.id);
            let page = keys::pool_keys_page(db, Some(group.id), after, 1_000)
                .await
                .unwrap();
            if page.is_empty() {
                break;
            }
            sizes.push(page.len());
            paged.extend(page);
        }
        assert_eq!(sizes, [1_000, 1_000, 500], "{backend}");
        assert_eq!(ids(&paged), ids(&pooled), "{backend}");
        assert!(
            keys::pool_keys_page(db, Some(group.id + 1), 0, 1_000)
                .await
                .unwrap()
                .is_empty(),
            "{backend}: another group's page"
        );

        assert!(groups::delete(db, group.id).await.unwrap());
        assert!(
            keys::list_stored(db, None).await.unwrap().is_empty(),
            "{backend}: keys go with their group"
        );
        assert!(!groups::delete(db, group.id).await.unwrap());
    }
}
