//! Every node reads the access keys' token totals of the day and the month from `usage_hourly`
//! (which every node's log writer adds to), so a quota holds across a cluster within the time
//! the totals take to reach the table (docs/LIMITS.md, "Access keys"). Only while some access key
//! has a token quota; on a single node the in-memory count is ahead of the table anyway.

use std::{
    collections::HashMap,
    time::{Duration, SystemTime},
};

use chrono::{Datelike, Utc};
use tokio::sync::watch;

use crate::{
    db::{Db, DbError},
    registry::access_keys::AccessKeys,
    repo::usage::{self, UsageDim, UsageQuery},
};

/// Reads the totals once and hands them to `access`.
pub(crate) async fn refresh(db: &Db, access: &AccessKeys) -> Result<(), DbError> {
    if !access.has_quotas() {
        return Ok(());
    }
    let at = SystemTime::now();
    let now = Utc::now().naive_utc();
    let today = now.date();
    let month_start = today
        .with_day(1)
        .unwrap_or(today)
        .and_hms_opt(0, 0, 0)
        .unwrap_or(now);
    let query = UsageQuery {
        from: month_start,
        to: now + chrono::Duration::days(1),
        by: vec![UsageDim::AccessKey, UsageDim::Day],
        ..UsageQuery::default()
    };
    let mut totals: HashMap<i64, (u64, u64)> = HashMap::new();
    for line in usage::summary(db, &query).await? {
        if line.access_key_id == 0 {
            continue;
        }
        let tokens = u64::try_from(line.sums.total_tokens).unwrap_or(0);
        let entry = totals.entry(line.access_key_id).or_default();
        entry.1 += tokens;
        if line.time.date() == today {
            entry.0 += tokens;
        }
    }
    let totals: Vec<(i64, u64, u64)> = totals
        .into_iter()
        .map(|(id, (day, month))| (id, day, month))
        .collect();
    access.observe_totals(at, &totals);
    Ok(())
}

/// Refreshes every `every` until `shutdown` turns true.
pub(crate) async fn run(db: Db, access: AccessKeys, every: Duration, mut shutdown: watch::Receiver<bool>) {
    loop {
        if let Err(err) = refresh(&db, &access).await {
            tracing::warn!(%err, "could not read the access keys' token totals");
        }
        tokio::select! {
            () = tokio::time::sleep(every) => {}
            _ = shutdown.changed() => return,
        }
        if *shutdown.borrow() {
            return;
        }
    }
}
