//! `access_keys`.

use diesel::prelude::*;
use diesel_async::RunQueryDsl;

use crate::{
    db::{Db, DbError, schema::access_keys, with_conn},
    models::{AccessKeyFields, AccessKeyRow},
};

/// Every access key, by id.
pub(crate) async fn list(db: &Db) -> Result<Vec<AccessKeyRow>, DbError> {
    with_conn!(db, |conn| {
        Ok(access_keys::table
            .order(access_keys::id)
            .select(AccessKeyRow::as_select())
            .load(conn)
            .await?)
    })
}

/// An access key by id.
pub(crate) async fn find(db: &Db, id: i64) -> Result<Option<AccessKeyRow>, DbError> {
    with_conn!(db, |conn| {
        Ok(access_keys::table
            .find(id)
            .select(AccessKeyRow::as_select())
            .first(conn)
            .await
            .optional()?)
    })
}

/// Inserts an access key whose key hashes to `key_hash`, and returns it as stored. Fails with a
/// unique violation when the name is taken.
pub(crate) async fn insert(
    db: &Db,
    fields: &AccessKeyFields<'_>,
    key_hash: &str,
    key_hint: &str,
) -> Result<AccessKeyRow, DbError> {
    let created_at = fields.updated_at;
    with_conn!(db, |conn| {
        // MySQL has no RETURNING: insert, then read back by the unique hash.
        diesel::insert_into(access_keys::table)
            .values((
                fields,
                access_keys::key_hash.eq(key_hash),
                access_keys::key_hint.eq(key_hint),
                access_keys::created_at.eq(created_at),
            ))
            .execute(conn)
            .await?;
        Ok(access_keys::table
            .filter(access_keys::key_hash.eq(key_hash))
            .select(AccessKeyRow::as_select())
            .first(conn)
            .await?)
    })
}

/// Replaces an access key's fields (not its key); `None` when it does not exist.
pub(crate) async fn update(
    db: &Db,
    id: i64,
    fields: &AccessKeyFields<'_>,
) -> Result<Option<AccessKeyRow>, DbError> {
    with_conn!(db, |conn| {
        let changed = diesel::update(access_keys::table.find(id))
            .set(fields)
            .execute(conn)
            .await?;
        if changed == 0 {
            return Ok(None);
        }
        Ok(access_keys::table
            .find(id)
            .select(AccessKeyRow::as_select())
            .first(conn)
            .await
            .optional()?)
    })
}

/// Gives an access key a new key (the old one stops working); `None` when it does not exist.
pub(crate) async fn set_key(
    db: &Db,
    id: i64,
    key_hash: &str,
    key_hint: &str,
) -> Result<Option<AccessKeyRow>, DbError> {
    let at = crate::models::now();
    with_conn!(db, |conn| {
        let changed = diesel::update(access_keys::table.find(id))
            .set((
                access_keys::key_hash.eq(key_hash),
                access_keys::key_hint.eq(key_hint),
                access_keys::updated_at.eq(at),
            ))
            .execute(conn)
            .await?;
        if changed == 0 {
            return Ok(None);
        }
        Ok(access_keys::table
            .find(id)
            .select(AccessKeyRow::as_select())
            .first(conn)
            .await
            .optional()?)
    })
}

/// Deletes an access key; returns whether it existed. Its usage rows stay (they are history).
pub(crate) async fn delete(db: &Db, id: i64) -> Result<bool, DbError> {
    with_conn!(db, |conn| {
        Ok(diesel::delete(access_keys::table.find(id)).execute(conn).await? == 1)
    })
}
