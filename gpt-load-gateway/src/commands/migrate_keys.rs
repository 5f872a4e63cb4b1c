//! `migrate-keys --from OLD --to NEW`: turn encryption of stored keys on (`--to`), off
//! (`--from`) or rotate it (both), for `api_keys`, the key columns of `request_logs` and the
//! proxy key lists (global and per group), in one transaction. It refuses before writing
//! anything when `--from` does not match the data.

use crate::{
    crypto::{CryptoError, KeyCipher, migrate},
    db::{Db, DbError},
    repo::reencrypt::{self, RewriteError},
};

/// Stored keys sampled to check `--from` before anything is written.
const SAMPLE: i64 = 20;

/// Why `migrate-keys` did nothing.
#[derive(Debug, thiserror::Error)]
pub(crate) enum MigrateKeysError {
    #[error("migrate-keys needs --from (current ENCRYPTION_KEY), --to (new ENCRYPTION_KEY), or both")]
    NothingToDo,
    #[error("--from and --to are the same key; nothing to migrate")]
    SameKey,
    #[error("refusing to migrate: {0}")]
    Refused(CryptoError),
    #[error(transparent)]
    Db(#[from] DbError),
    #[error("migration rolled back, nothing was changed: {0}")]
    RolledBack(RewriteError<CryptoError>),
}

/// Rows rewritten per table, and proxy key lists rewritten.
pub(crate) type MigrateKeysSummary = reencrypt::Rewritten;

/// Checks `from` against the stored keys, then re-encrypts everything with `to`.
pub(crate) async fn run(
    db: &Db,
    from: Option<&str>,
    to: Option<&str>,
) -> Result<MigrateKeysSummary, MigrateKeysError> {
    let (from, to) = (from.filter(|k| !k.is_empty()), to.filter(|k| !k.is_empty()));
    match (from, to) {
        (None, None) => return Err(MigrateKeysError::NothingToDo),
        (Some(a), Some(b)) if a == b => return Err(MigrateKeysError::SameKey),
        _ => {}
    }
    let (from, to) = (KeyCipher::from_password(from), KeyCipher::from_password(to));
    let samples = reencrypt::sample_keys(db, SAMPLE).await?;
    let values: Vec<&str> = samples.iter().map(|(v, _)| v.as_str()).collect();
    migrate::check_from_key(&values, &from).map_err(MigrateKeysError::Refused)?;
    let pairs: Vec<(&str, &str)> = samples.iter().map(|(v, h)| (v.as_str(), h.as_str())).collect();
    migrate::check_sample_hashes(&pairs, &from).map_err(MigrateKeysError::Refused)?;
    let lists = reencrypt::proxy_key_lists(db).await?;
    let lists: Vec<&str> = lists.iter().map(String::as_str).collect();
    migrate::check_proxy_key_lists(&lists, &from).map_err(MigrateKeysError::Refused)?;
    let rewrite = |stored: &str| migrate::reencrypt(stored, &from, &to);
    let reseal = |stored: &str| migrate::reseal_list(stored, &from, &to);
    reencrypt::rewrite_all(db, &rewrite, &reseal)
        .await
        .map_err(MigrateKeysError::RolledBack)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{
        bootstrap::Bootstrap,
        db::test_support::TestDb,
        models::now,
        repo::{
            groups, keys,
            request_logs::{self, RequestLogRow},
        },
    };

    async fn log_keys(db: &Db) -> Vec<(String, String)> {
        let mut rows: Vec<_> = request_logs::list_recent(db, 10)
            .await
            .unwrap()
            .into_iter()
            .map(|l| (l.key_value, l.key_hash))
            .collect();
        rows.sort();
        rows
    }

    async fn seed_logs(db: &Db, stored: &[(String, String)]) {
        let rows: Vec<RequestLogRow> = stored
            .iter()
            .enumerate()
            .map(|(i, (value, hash))| RequestLogRow {
                id: format!("00000000-0000-4000-8000-00000000000{i}"),
                timestamp: now(),
                group_id: 1,
                group_name: "g".to_owned(),
                parent_group_id: 0,
                parent_group_name: String::new(),
                key_value: value.clone(),
                key_hash: hash.clone(),
                model: "m".to_owned(),
                is_success: true,
                source_ip: String::new(),
                status_code: 200,
                request_path: "/proxy/g/v1/chat/completions".to_owned(),
                duration: 1,
                error_message: String::new(),
                user_agent: String::new(),
                request_type: "final".into(),
                upstream_addr: String::new(),
                is_stream: false,
                request_body: String::new(),
                key_id: None,
                attempt: 1,
                ttfb_ms: None,
                request_id: String::new(),
                prompt_tokens: None,
                completion_tokens: None,
                cached_tokens: None,
                reasoning_tokens: None,
                total_tokens: None,
                access_key_id: None,
            })
            .collect();
        request_logs::insert_many(db, rows.into(), crate::db::AppendPriority::Normal)
            .await
            .unwrap();
    }

    const OLD: &str = "old-encryption-key-0123456789";
    const NEW: &str = "new-encryption-key-0123456789";

    async fn stored_keys(db: &Db) -> Vec<(String, String)> {
        let group = groups::find_by_name(db, "g").await.unwrap().unwrap();
        keys::list_by_group(db, group.id)
            .await
            .unwrap()
            .into_iter()
            .map(|k| (k.key_value, k.key_hash))
            .collect()
    }

    async fn seed(db: &Db, cipher: &KeyCipher) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("b.json");
        std::fs::write(
            &path,
            r#"{"groups":[{"name":"g","channel_type":"openai","test_model":"m","upstreams":[{"url":"http://127.0.0.1:9"}],
               "keys":["sk-one-0123456789","sk-two-0123456789"]}]}"#,
        )
        .unwrap();
        let (registry, _events) = crate::registry::Registry::loaded(db, cipher).await;
        Bootstrap::read(&path).unwrap().apply(&registry).await.unwrap();
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn enable_rotate_disable_round_trip() {
        for t in TestDb::all("migrate_keys_round_trip").await {
            let db = &t.db;
            seed(db, &KeyCipher::disabled()).await;
            let plain = stored_keys(db).await;
            seed_logs(db, &plain).await;
            let plain_logs = log_keys(db).await;

            assert!(matches!(
                run(db, None, None).await,
                Err(MigrateKeysError::NothingToDo)
            ));
            assert!(matches!(
                run(db, Some(OLD), Some(OLD)).await,
                Err(MigrateKeysError::SameKey)
            ));
            let refused = run(db, Some(OLD), Some(NEW)).await.unwrap_err();
            assert!(
                matches!(refused, MigrateKeysError::Refused(_)),
                "{refused}: the data is not encrypted yet"
            );

            assert_eq!(
                run(db, None, Some(OLD)).await.unwrap().api_keys,
                2,
                "{}",
                db.backend()
            );
            let old = KeyCipher::from_password(Some(OLD));
            let encrypted = stored_keys(db).await;
            for ((value, hash), (plain_value, _)) in encrypted.iter().zip(&plain) {
                assert_eq!(&old.decrypt(value).unwrap(), plain_value);
                assert_eq!(hash, &old.hash(plain_value));
            }
            for (value, hash) in log_keys(db).await {
                let plain_value = old.decrypt(&value).unwrap();
                assert_eq!(hash, old.hash(&plain_value), "request logs are re-encrypted too");
            }
            assert!(
                matches!(run(db, None, Some(NEW)).await, Err(MigrateKeysError::Refused(_))),
                "already encrypted"
            );
            assert!(
                matches!(run(db, Some(NEW), None).await, Err(MigrateKeysError::Refused(_))),
                "wrong --from"
            );

            run(db, Some(OLD), Some(NEW)).await.unwrap();
            let new = KeyCipher::from_password(Some(NEW));
            assert_eq!(new.decrypt(&stored_keys(db).await[0].0).unwrap(), plain[0].0);

            run(db, Some(NEW), None).await.unwrap();
            assert_eq!(
                stored_keys(db).await,
                plain,
                "disabling restores plaintext and SHA-256 hashes"
            );
            assert_eq!(log_keys(db).await, plain_logs, "and the request logs too");
        }
    }
}
