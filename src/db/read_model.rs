//! The dashboard's read model: refreshing it (and its log).

use tokio_postgres::types::Type;

use super::{DbError, Querier};
use crate::id::UserId;

/// Refreshes the materialized views without blocking readers (the migration's
/// `gcbb_refresh_dashboard`, which also logs the run); returns how long the server took, in ms.
pub async fn refresh_read_model(
    client: &impl Querier,
    system_user_id: &UserId,
) -> Result<f64, DbError> {
    let rows = client
        .query_typed(
            r#"SELECT "durationMs" FROM gcbb_refresh_dashboard($1)"#,
            &[(&system_user_id, Type::TEXT)],
        )
        .await?;
    Ok(rows.first().map(|r| r.get(0)).unwrap_or_default())
}
