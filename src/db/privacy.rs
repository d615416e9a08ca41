//! The privacy epoch (`"PrivacyEpoch"`): a counter the database bumps, by trigger, in the same
//! transaction that hides a companion (made private, or deleted), whoever writes it, and the
//! purge outbox the same trigger fills (`"PrivacyPurgeOutbox"`: the CDN purges each hidden
//! companion owes).

use tokio_postgres::types::Type;

use super::{DbError, Querier};
use crate::id::CompanionId;

/// The current epoch, as of this statement's snapshot.
pub async fn current_privacy_epoch(client: &impl Querier) -> Result<i64, DbError> {
    let rows = client
        .query_typed(r#"SELECT "epoch" FROM "PrivacyEpoch" WHERE "id" = 1"#, &[])
        .await?;
    rows.first().map(|r| r.get(0)).ok_or(DbError::NotFound)
}

/// A CDN purge owed for a hidden companion (`"PrivacyPurgeOutbox"`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PendingPurge {
    pub id: i64,
    pub companion_id: CompanionId,
}

/// Claims up to `limit` pending purges, oldest first, for the caller's transaction: rows
/// another drainer holds are skipped (`FOR UPDATE SKIP LOCKED`), so two drainers never take
/// the same row, and a drainer that dies releases its rows with its transaction.
pub async fn claim_pending_purges(
    tx: &impl Querier,
    limit: i64,
) -> Result<Vec<PendingPurge>, DbError> {
    let rows = tx
        .query_typed(
            r#"SELECT "id", "companionId" FROM "PrivacyPurgeOutbox"
               WHERE "purgedAt" IS NULL
               ORDER BY "id"
               LIMIT $1
               FOR UPDATE SKIP LOCKED"#,
            &[(&limit, Type::INT8)],
        )
        .await?;
    Ok(rows
        .iter()
        .map(|r| PendingPurge {
            id: r.get(0),
            companion_id: r.get(1),
        })
        .collect())
}

/// Marks claimed purges as done.
pub async fn mark_purged(tx: &impl Querier, ids: &[i64]) -> Result<u64, DbError> {
    let rows = tx
        .query_typed(
            r#"WITH done AS (
                   UPDATE "PrivacyPurgeOutbox" SET "purgedAt" = (now() AT TIME ZONE 'UTC')
                   WHERE "id" = ANY($1) AND "purgedAt" IS NULL
                   RETURNING 1
               )
               SELECT count(*) FROM done"#,
            &[(&ids, Type::INT8_ARRAY)],
        )
        .await?;
    Ok(rows.first().map_or(0, |r| r.get::<_, i64>(0) as u64))
}

/// How many purges are still owed.
pub async fn count_pending_purges(client: &impl Querier) -> Result<i64, DbError> {
    let rows = client
        .query_typed(
            r#"SELECT count(*) FROM "PrivacyPurgeOutbox" WHERE "purgedAt" IS NULL"#,
            &[],
        )
        .await?;
    Ok(rows.first().map_or(0, |r| r.get(0)))
}

/// Deletes purged rows the read model no longer needs subtracted: hidden over a minute before
/// its last refresh began (the margin covers a hiding transaction that started before the
/// refresh and committed after its snapshot). Returns how many went.
pub async fn prune_purged(client: &impl Querier) -> Result<u64, DbError> {
    let rows = client
        .query_typed(
            r#"WITH gone AS (
                   DELETE FROM "PrivacyPurgeOutbox"
                   WHERE "purgedAt" IS NOT NULL
                     AND "hiddenAt" < (
                         SELECT max("startedAt") AT TIME ZONE 'UTC' - interval '1 minute'
                         FROM "DashboardRefreshLog")
                   RETURNING 1
               )
               SELECT count(*) FROM gone"#,
            &[],
        )
        .await?;
    Ok(rows.first().map_or(0, |r| r.get::<_, i64>(0) as u64))
}
