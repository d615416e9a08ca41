//! The privacy epoch (`"PrivacyEpoch"`): a counter the database bumps, by trigger, in the same
//! transaction that hides a companion (made private, or deleted), whoever writes it.

use super::{DbError, Querier};

/// The current epoch, as of this statement's snapshot.
pub async fn current_privacy_epoch(client: &impl Querier) -> Result<i64, DbError> {
    let rows = client
        .query_typed(
            "SELECT \"epoch\" FROM \"PrivacyEpoch\" WHERE \"id\" = 1",
            &[],
        )
        .await?;
    rows.first().map(|r| r.get(0)).ok_or(DbError::NotFound)
}
