//! History paging, one way for every conversation: keyset pages by (`createdAt`, `id`), newest
//! page first and oldest first within a page, with a cursor that is a message id (a client can't
//! forge a position, and rows stored in the same millisecond still have one order).

use chrono::NaiveDateTime;
use tokio_postgres::types::{ToSql, Type};
use tokio_postgres::Row;

use super::{DbError, Querier};
use crate::id::MessageId;

/// One page, oldest first, and whether older rows exist.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Page<T> {
    pub items: Vec<T>,
    pub has_older: bool,
}

impl<T> Page<T> {
    /// The cursor of the next (older) page: the id of this page's oldest row, if older rows exist.
    pub fn next_cursor(&self, id: impl Fn(&T) -> &MessageId) -> Option<MessageId> {
        self.has_older
            .then(|| self.items.first().map(|t| id(t).clone()))
            .flatten()
    }
}

/// The SQL of one conversation's pages. Both statements take the conversation's scope as
/// their first parameters (`$1`…`$n`, `n = scope.len()`):
/// - `cursor_sql` reads `"createdAt"` of the row whose id is `$n+1`, within the scope;
/// - `page_sql` selects the scope's rows with `($n+1::timestamp IS NULL OR ("createdAt", "id") <
///   ($n+1::timestamp, $n+2::text))`, newest first, `LIMIT $n+3`.
pub struct Keyset<'a> {
    pub cursor_sql: &'static str,
    pub page_sql: &'a str,
    pub scope: &'a [(&'a (dyn ToSql + Sync), Type)],
}

/// The `limit` rows before the row `before` (or the newest), oldest first; `None` when `before`
/// is not a row of this conversation.
pub async fn fetch_page<T>(
    client: &impl Querier,
    keyset: &Keyset<'_>,
    before: Option<&MessageId>,
    limit: i64,
    row: impl Fn(&Row) -> T,
) -> Result<Option<Page<T>>, DbError> {
    let cursor: Option<NaiveDateTime> = match before {
        None => None,
        Some(id) => {
            let mut params = keyset.scope.to_vec();
            params.push((&id, Type::TEXT));
            match client
                .query_typed(keyset.cursor_sql, &params)
                .await?
                .first()
            {
                Some(r) => Some(r.get(0)),
                None => return Ok(None),
            }
        }
    };
    let fetch = limit + 1;
    let mut params = keyset.scope.to_vec();
    params.push((&cursor, Type::TIMESTAMP));
    params.push((&before, Type::TEXT));
    params.push((&fetch, Type::INT8));
    let rows = client.query_typed(keyset.page_sql, &params).await?;
    let mut items: Vec<T> = rows.iter().map(row).collect();
    let has_older = items.len() as i64 > limit;
    items.truncate(limit as usize);
    items.reverse();
    Ok(Some(Page { items, has_older }))
}
