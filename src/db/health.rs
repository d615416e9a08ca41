//! The one query of `/api/health`.

use super::{DbError, Pool, Querier};

/// Round-trips a trivial query on a pooled connection.
pub async fn ping(pool: &Pool) -> Result<(), DbError> {
    let client = pool.get().await?;
    client.query_typed("SELECT 1", &[]).await?;
    Ok(())
}
