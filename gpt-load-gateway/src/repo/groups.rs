//! `groups`.

use chrono::NaiveDateTime;
use diesel::prelude::*;
use diesel_async::RunQueryDsl;

use crate::{
    db::{
        Db, DbError,
        schema::{group_sub_groups, groups},
        with_conn, write_transaction,
    },
    models::{GroupRow, NewGroup, SealedKey, now},
};

/// Inserts a group and returns it as stored. Fails with a unique violation when the name is
/// taken.
pub(crate) async fn insert(db: &Db, group: &NewGroup<'_>) -> Result<GroupRow, DbError> {
    with_conn!(db, |conn| {
        // MySQL has no RETURNING: insert, then read back by the unique name.
        diesel::insert_into(groups::table)
            .values(group)
            .execute(conn)
            .await?;
        Ok(groups::table
            .filter(groups::name.eq(group.name))
            .select(GroupRow::as_select())
            .first(conn)
            .await?)
    })
}

/// A group by name.
pub(crate) async fn find_by_name(db: &Db, name: &str) -> Result<Option<GroupRow>, DbError> {
    with_conn!(db, |conn| {
        Ok(groups::table
            .filter(groups::name.eq(name))
            .select(GroupRow::as_select())
            .first(conn)
            .await
            .optional()?)
    })
}

/// Every group in display order (`sort`, then id).
pub(crate) async fn list(db: &Db) -> Result<Vec<GroupRow>, DbError> {
    with_conn!(db, |conn| {
        Ok(groups::table
            .order((groups::sort, groups::id))
            .select(GroupRow::as_select())
            .load(conn)
            .await?)
    })
}

/// Deletes a group (its keys and sub-group links go with it); returns whether it existed.
pub(crate) async fn delete(db: &Db, id: i64) -> Result<bool, DbError> {
    use crate::db::schema::{api_keys, group_policies, group_sub_groups};
    write_transaction!(db, |conn| {
        // Explicit deletes rather than relying on ON DELETE CASCADE, which an imported
        // gpt-load database does not have.
        diesel::delete(api_keys::table.filter(api_keys::group_id.eq(id)))
            .execute(conn)
            .await?;
        diesel::delete(
            group_sub_groups::table.filter(
                group_sub_groups::group_id
                    .eq(id)
                    .or(group_sub_groups::sub_group_id.eq(id)),
            ),
        )
        .execute(conn)
        .await?;
        diesel::delete(group_policies::table.filter(group_policies::group_id.eq(id)))
            .execute(conn)
            .await?;
        let deleted = diesel::delete(groups::table.find(id)).execute(conn).await?;
        Ok::<_, DbError>(deleted == 1)
    })
}

/// An aggregate's link to one sub-group.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Queryable)]
pub(crate) struct SubGroupLink {
    pub(crate) group_id: i64,
    pub(crate) sub_group_id: i64,
    pub(crate) weight: i32,
}

/// A new `group_sub_groups` row.
#[derive(Insertable)]
#[diesel(table_name = group_sub_groups)]
struct NewLink {
    group_id: i64,
    sub_group_id: i64,
    weight: i32,
    created_at: NaiveDateTime,
    updated_at: NaiveDateTime,
}

impl NewLink {
    fn new(group_id: i64, sub_group_id: i64, weight: i32, at: NaiveDateTime) -> Self {
        Self {
            group_id,
            sub_group_id,
            weight,
            created_at: at,
            updated_at: at,
        }
    }
}

/// Links `sub_group_id` to the aggregate `group_id` with `weight` (replacing an existing link).
pub(crate) async fn set_sub_group(
    db: &Db,
    group_id: i64,
    sub_group_id: i64,
    weight: i32,
) -> Result<(), DbError> {
    write_transaction!(db, |conn| {
        let at = now();
        let link = group_sub_groups::table.filter(
            group_sub_groups::group_id
                .eq(group_id)
                .and(group_sub_groups::sub_group_id.eq(sub_group_id)),
        );
        let changed = diesel::update(link)
            .set((
                group_sub_groups::weight.eq(weight),
                group_sub_groups::updated_at.eq(at),
            ))
            .execute(conn)
            .await?;
        if changed == 0 {
            diesel::insert_into(group_sub_groups::table)
                .values(NewLink::new(group_id, sub_group_id, weight, at))
                .execute(conn)
                .await?;
        }
        Ok::<_, DbError>(())
    })
}

/// Every aggregate link.
pub(crate) async fn sub_group_links(db: &Db) -> Result<Vec<SubGroupLink>, DbError> {
    with_conn!(db, |conn| {
        Ok(group_sub_groups::table
            .order((group_sub_groups::group_id, group_sub_groups::id))
            .select((
                group_sub_groups::group_id,
                group_sub_groups::sub_group_id,
                group_sub_groups::weight,
            ))
            .load(conn)
            .await?)
    })
}

/// Replaces every column of group `id` (except `created_at`) with `group`'s; returns the row, or
/// `None` when the group does not exist.
pub(crate) async fn update(db: &Db, id: i64, group: &NewGroup<'_>) -> Result<Option<GroupRow>, DbError> {
    with_conn!(db, |conn| {
        let changed = diesel::update(groups::table.find(id))
            .set((
                groups::name.eq(group.name),
                groups::display_name.eq(group.display_name),
                groups::proxy_keys.eq(group.proxy_keys),
                groups::description.eq(group.description),
                groups::group_type.eq(group.group_type),
                groups::upstreams.eq(group.upstreams),
                groups::validation_endpoint.eq(group.validation_endpoint),
                groups::channel_type.eq(group.channel_type),
                groups::sort.eq(group.sort),
                groups::test_model.eq(group.test_model),
                groups::param_overrides.eq(group.param_overrides),
                groups::config.eq(group.config),
                groups::header_rules.eq(group.header_rules),
                groups::model_redirect_rules.eq(group.model_redirect_rules),
                groups::model_redirect_strict.eq(group.model_redirect_strict),
                groups::updated_at.eq(group.updated_at),
            ))
            .execute(conn)
            .await?;
        if changed == 0 {
            return Ok(None);
        }
        Ok(Some(
            groups::table
                .find(id)
                .select(GroupRow::as_select())
                .first(conn)
                .await?,
        ))
    })
}

/// A group by id.
pub(crate) async fn find(db: &Db, id: i64) -> Result<Option<GroupRow>, DbError> {
    with_conn!(db, |conn| {
        Ok(groups::table
            .find(id)
            .select(GroupRow::as_select())
            .first(conn)
            .await
            .optional()?)
    })
}

/// Removes one aggregate link; returns whether it existed.
pub(crate) async fn remove_sub_group(db: &Db, group_id: i64, sub_group_id: i64) -> Result<bool, DbError> {
    with_conn!(db, |conn| {
        let link = group_sub_groups::table.filter(
            group_sub_groups::group_id
                .eq(group_id)
                .and(group_sub_groups::sub_group_id.eq(sub_group_id)),
        );
        Ok(diesel::delete(link).execute(conn).await? == 1)
    })
}

/// Adds several links to an aggregate in one transaction.
pub(crate) async fn add_sub_groups(db: &Db, group_id: i64, links: &[(i64, i32)]) -> Result<(), DbError> {
    write_transaction!(db, |conn| {
        let at = now();
        for &(sub_group_id, weight) in links {
            diesel::insert_into(group_sub_groups::table)
                .values(NewLink::new(group_id, sub_group_id, weight, at))
                .execute(conn)
                .await?;
        }
        Ok::<_, DbError>(())
    })
}

/// Sets the `sort` of several groups in one transaction: `(id, sort)` pairs with unique ids.
/// When any id does not exist nothing is written and that id is returned.
pub(crate) async fn reorder(db: &Db, items: &[(i64, i32)]) -> Result<Option<i64>, DbError> {
    let ids: Vec<i64> = items.iter().map(|&(id, _)| id).collect();
    write_transaction!(db, |conn| {
        let found: Vec<i64> = groups::table
            .filter(groups::id.eq_any(ids.clone()))
            .select(groups::id)
            .load(conn)
            .await?;
        if let Some(&missing) = ids.iter().find(|id| !found.contains(id)) {
            return Ok::<_, DbError>(Some(missing));
        }
        let at = now();
        for &(id, sort) in items {
            diesel::update(groups::table.find(id))
                .set((groups::sort.eq(sort), groups::updated_at.eq(at)))
                .execute(conn)
                .await?;
        }
        Ok(None)
    })
}

/// Inserts a copied group with its aggregate links and returns it with the rows of its keys
/// (active, fresh counters), inside the caller's transaction.
macro_rules! insert_copy_parts {
    ($conn:expr, $group:expr, $links:expr, $keys:expr) => {{
        let conn = $conn;
        let group: &NewGroup<'_> = $group;
        diesel::insert_into(groups::table)
            .values(group)
            .execute(&mut *conn)
            .await?;
        let row: GroupRow = groups::table
            .filter(groups::name.eq(group.name))
            .select(GroupRow::as_select())
            .first(&mut *conn)
            .await?;
        let at = now();
        for &(sub_group_id, weight) in $links {
            diesel::insert_into(group_sub_groups::table)
                .values(NewLink::new(row.id, sub_group_id, weight, at))
                .execute(&mut *conn)
                .await?;
        }
        let keys: &[SealedKey] = $keys;
        let fresh: Vec<NewApiKey<'_>> = keys.iter().map(|k| k.row(row.id, at)).collect();
        (row, fresh)
    }};
}

/// Creates `group` with these aggregate links (`(sub_group_id, weight)`) and keys (active, with
/// fresh counters) in one transaction; returns the new group as stored.
pub(crate) async fn insert_copy(
    db: &Db,
    group: &NewGroup<'_>,
    links: &[(i64, i32)],
    keys: &[SealedKey],
) -> Result<GroupRow, DbError> {
    use crate::{db::schema::api_keys, models::NewApiKey};
    with_conn!(
        db,
        // SQLite has no multi-row insert in diesel; row by row is cheap on a local file.
        sqlite | conn | {
            conn.immediate_transaction(async |conn| {
                let (row, fresh) = insert_copy_parts!(&mut *conn, group, links, keys);
                for key in &fresh {
                    diesel::insert_into(api_keys::table)
                        .values(key)
                        .execute(conn)
                        .await?;
                }
                Ok::<_, DbError>(row)
            })
            .await
        },
        server | conn | {
            diesel_async::AsyncConnection::transaction(conn, async |conn| {
                let (row, fresh) = insert_copy_parts!(&mut *conn, group, links, keys);
                // 9 bind parameters a row: well under every backend's limit.
                for chunk in fresh.chunks(1_000) {
                    diesel::insert_into(api_keys::table)
                        .values(chunk)
                        .execute(conn)
                        .await?;
                }
                Ok::<_, DbError>(row)
            })
            .await
        }
    )
}

/// Sets when a group's keys were last validated.
pub(crate) async fn set_last_validated(db: &Db, id: i64, at: NaiveDateTime) -> Result<(), DbError> {
    with_conn!(db, |conn| {
        diesel::update(groups::table.find(id))
            .set(groups::last_validated_at.eq(Some(at)))
            .execute(conn)
            .await?;
        Ok(())
    })
}
