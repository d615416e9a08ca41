//! Queries of `"Category"`.

use serde::Serialize;

use super::{DbError, Querier};
use crate::id::CategoryId;

#[derive(Debug, Clone, Serialize, serde::Deserialize, PartialEq, Eq)]
pub struct Category {
    pub id: CategoryId,
    pub name: String,
}

/// Every category, by name.
pub async fn list_categories(client: &impl Querier) -> Result<Vec<Category>, DbError> {
    let rows = client
        .query_typed(
            r#"SELECT "id", "name" FROM "Category" ORDER BY "name", "id""#,
            &[],
        )
        .await?;
    Ok(rows
        .iter()
        .map(|r| Category {
            id: r.get(0),
            name: r.get(1),
        })
        .collect())
}

/// Whether a category with this id exists.
pub async fn category_exists(client: &impl Querier, id: &CategoryId) -> Result<bool, DbError> {
    let rows = client
        .query_typed(
            r#"SELECT 1 FROM "Category" WHERE "id" = $1"#,
            &[(&id, tokio_postgres::types::Type::TEXT)],
        )
        .await?;
    Ok(!rows.is_empty())
}
