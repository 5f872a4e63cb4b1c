//! `policies` and `group_policies`.

use diesel::prelude::*;
use diesel_async::RunQueryDsl;

use crate::{
    db::{
        Db, DbError,
        schema::{group_policies, policies},
        with_conn, write_transaction,
    },
    models::{GroupPolicyRow, NewPolicy, PolicyRow, now},
};

/// Every policy, by priority then id.
pub(crate) async fn list(db: &Db) -> Result<Vec<PolicyRow>, DbError> {
    with_conn!(db, |conn| {
        Ok(policies::table
            .order((policies::priority, policies::id))
            .select(PolicyRow::as_select())
            .load(conn)
            .await?)
    })
}

/// A policy by id.
pub(crate) async fn find(db: &Db, id: i64) -> Result<Option<PolicyRow>, DbError> {
    with_conn!(db, |conn| {
        Ok(policies::table
            .find(id)
            .select(PolicyRow::as_select())
            .first(conn)
            .await
            .optional()?)
    })
}

/// Inserts a policy and returns it as stored. Fails with a unique violation when the name is
/// taken.
pub(crate) async fn insert(db: &Db, policy: &NewPolicy<'_>) -> Result<PolicyRow, DbError> {
    let created_at = policy.updated_at;
    with_conn!(db, |conn| {
        // MySQL has no RETURNING: insert, then read back by the unique name.
        diesel::insert_into(policies::table)
            .values((policy, policies::created_at.eq(created_at)))
            .execute(conn)
            .await?;
        Ok(policies::table
            .filter(policies::name.eq(policy.name))
            .select(PolicyRow::as_select())
            .first(conn)
            .await?)
    })
}

/// Replaces a policy's columns; `None` when it does not exist.
pub(crate) async fn update(db: &Db, id: i64, policy: &NewPolicy<'_>) -> Result<Option<PolicyRow>, DbError> {
    with_conn!(db, |conn| {
        let changed = diesel::update(policies::table.find(id))
            .set(policy)
            .execute(conn)
            .await?;
        if changed == 0 {
            return Ok(None);
        }
        Ok(Some(
            policies::table
                .find(id)
                .select(PolicyRow::as_select())
                .first(conn)
                .await?,
        ))
    })
}

/// Deletes a policy and its attachments; returns the groups it was attached to, or `None` when
/// it did not exist.
pub(crate) async fn delete(db: &Db, id: i64) -> Result<Option<Vec<i64>>, DbError> {
    write_transaction!(db, |conn| {
        let groups: Vec<i64> = group_policies::table
            .filter(group_policies::policy_id.eq(id))
            .select(group_policies::group_id)
            .load(conn)
            .await?;
        // Explicit rather than ON DELETE CASCADE, which SQLite enforces only when asked to.
        diesel::delete(group_policies::table.filter(group_policies::policy_id.eq(id)))
            .execute(conn)
            .await?;
        let deleted = diesel::delete(policies::table.find(id)).execute(conn).await?;
        Ok::<_, DbError>((deleted == 1).then_some(groups))
    })
}

/// The groups a policy is attached to.
pub(crate) async fn groups_of(db: &Db, policy_id: i64) -> Result<Vec<i64>, DbError> {
    with_conn!(db, |conn| {
        Ok(group_policies::table
            .filter(group_policies::policy_id.eq(policy_id))
            .order(group_policies::group_id)
            .select(group_policies::group_id)
            .load(conn)
            .await?)
    })
}

/// The attachments of one group (`Some`) or of every group, each with its policy, in evaluation
/// order: the attachment's priority, then the policy's, then the policy id.
pub(crate) async fn attached(
    db: &Db,
    group_id: Option<i64>,
) -> Result<Vec<(GroupPolicyRow, PolicyRow)>, DbError> {
    with_conn!(db, |conn| {
        let mut query = group_policies::table
            .inner_join(policies::table)
            .order((
                group_policies::group_id,
                group_policies::priority,
                policies::priority,
                policies::id,
            ))
            .select((GroupPolicyRow::as_select(), PolicyRow::as_select()))
            .into_boxed();
        filter_some!(query, group_id, |id| group_policies::group_id.eq(id));
        Ok(query.load(conn).await?)
    })
}

/// Replaces a group's attachments with `(policy id, priority, active)` in one transaction.
pub(crate) async fn set_for_group(
    db: &Db,
    group_id: i64,
    attach: &[(i64, i32, bool)],
) -> Result<(), DbError> {
    write_transaction!(db, |conn| {
        diesel::delete(group_policies::table.filter(group_policies::group_id.eq(group_id)))
            .execute(conn)
            .await?;
        let at = now();
        for &(policy_id, priority, is_active) in attach {
            let row = GroupPolicyRow {
                group_id,
                policy_id,
                priority,
                is_active,
                created_at: at,
            };
            diesel::insert_into(group_policies::table)
                .values(&row)
                .execute(conn)
                .await?;
        }
        Ok::<_, DbError>(())
    })
}
