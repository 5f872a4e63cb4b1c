//! `system_settings`: seeding defaults, reading, updating.

use diesel::prelude::*;
use diesel_async::RunQueryDsl;

use crate::{
    db::{Db, DbError, schema::system_settings, with_conn, write_transaction},
    models::{NewSetting, SettingRow, now},
};

/// Every setting row.
pub(crate) async fn list(db: &Db) -> Result<Vec<SettingRow>, DbError> {
    with_conn!(db, |conn| {
        Ok(system_settings::table
            .order(system_settings::setting_key)
            .select(SettingRow::as_select())
            .load(conn)
            .await?)
    })
}

/// Inserts the settings in `defaults` (`key`, `value`, `description`) that have no row yet;
/// returns how many were inserted. Existing values are never overwritten.
pub(crate) async fn ensure_defaults(db: &Db, defaults: &[(&str, &str, &str)]) -> Result<usize, DbError> {
    write_transaction!(db, |conn| {
        let existing: Vec<String> = system_settings::table
            .select(system_settings::setting_key)
            .load(conn)
            .await?;
        let at = now();
        let missing: Vec<NewSetting<'_>> = defaults
            .iter()
            .filter(|(key, ..)| !existing.iter().any(|e| e == key))
            .map(|&(setting_key, setting_value, description)| NewSetting {
                setting_key,
                setting_value,
                description,
                created_at: at,
                updated_at: at,
            })
            .collect();
        let mut inserted = 0;
        for row in &missing {
            inserted += diesel::insert_into(system_settings::table)
                .values(row)
                .execute(conn)
                .await?;
        }
        Ok::<_, DbError>(inserted)
    })
}

/// Sets the values of several settings in one transaction (inserting rows that are missing).
pub(crate) async fn update(db: &Db, values: &[(&str, &str)]) -> Result<(), DbError> {
    write_transaction!(db, |conn| {
        let at = now();
        for &(key, value) in values {
            let changed = diesel::update(system_settings::table.filter(system_settings::setting_key.eq(key)))
                .set((
                    system_settings::setting_value.eq(value),
                    system_settings::updated_at.eq(at),
                ))
                .execute(conn)
                .await?;
            if changed == 0 {
                let row = NewSetting {
                    setting_key: key,
                    setting_value: value,
                    description: "",
                    created_at: at,
                    updated_at: at,
                };
                diesel::insert_into(system_settings::table)
                    .values(&row)
                    .execute(conn)
                    .await?;
            }
        }
        Ok::<_, DbError>(())
    })
}
