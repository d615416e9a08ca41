//! Queries of `"Message"`: one user's conversation with one companion.
//!
//! Every query filters on (companionId, userId) and orders by createdAt: the index
//! `Message_companionId_userId_createdAt_idx` (migration `20250311000000_add_performance_indexes`). Pages are ordered by (createdAt, id) so messages
//! stored in the same millisecond still have one order.

use chrono::{DateTime, NaiveDateTime, Utc};
use serde::Serialize;
use tokio_postgres::types::Type;
use tokio_postgres::Row;

use super::page::{fetch_page, Keyset, Page};
use super::{DbError, Querier};
use crate::id::{CompanionId, MessageId, UserId};

/// `"Role"` of a stored message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MessageRole {
    User,
    Assistant,
}

impl MessageRole {
    fn as_str(self) -> &'static str {
        match self {
            MessageRole::User => "user",
            MessageRole::Assistant => "assistant",
        }
    }
}

/// How a stored reply ended (`"Message"."status"`, NULL for a reply that finished).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ReplyStatus {
    Finished,
    /// The user stopped it (`POST …/stop`).
    Stopped,
    /// It broke off: the model failed, its time ran out, or its process died.
    Interrupted,
}

impl ReplyStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            ReplyStatus::Finished => "finished",
            ReplyStatus::Stopped => "stopped",
            ReplyStatus::Interrupted => "interrupted",
        }
    }

    /// The column's value: NULL for a finished reply, like every row written before the column.
    pub fn column(self) -> Option<&'static str> {
        match self {
            ReplyStatus::Finished => None,
            other => Some(other.as_str()),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct StoredMessage {
    pub id: MessageId,
    /// `user`, `assistant` or `system`.
    pub role: String,
    pub content: String,
    pub created_at: DateTime<Utc>,
    /// How an assistant message ended (`finished`, `stopped`, `interrupted`); absent on the
    /// user's messages.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub status: Option<String>,
}

impl StoredMessage {
    pub fn created_at_naive(&self) -> NaiveDateTime {
        self.created_at.naive_utc()
    }
}

fn stored(r: &Row) -> StoredMessage {
    StoredMessage {
        id: r.get("id"),
        role: r.get("role"),
        content: r.get("content"),
        created_at: r.get::<_, NaiveDateTime>("createdAt").and_utc(),
        status: r.get("status"),
    }
}

const INSERT_SQL: &str = r#"
    INSERT INTO "Message" ("id", "role", "content", "createdAt", "updatedAt",
                           "companionId", "userId")
    SELECT $1, $2::text::"Role", $3, t.ts, t.ts, $4, $5
    FROM (SELECT GREATEST(clock_timestamp() AT TIME ZONE 'UTC',
                          $6::timestamp + interval '1 millisecond')::timestamp(3) AS ts) t
    RETURNING "id", "role"::text AS "role", "content", "createdAt",
              NULL::text AS "status""#;

/// Stores a message; when `after` is given it is stamped at least 1 ms later (a reply never
/// sorts before its prompt).
pub async fn insert_message(
    client: &impl Querier,
    companion_id: &CompanionId,
    user_id: &UserId,
    role: MessageRole,
    content: &str,
    after: Option<NaiveDateTime>,
) -> Result<StoredMessage, DbError> {
    let id = uuid::Uuid::new_v4().to_string();
    let rows = client
        .query_typed(
            INSERT_SQL,
            &[
                (&id, Type::TEXT),
                (&role.as_str(), Type::TEXT),
                (&content, Type::TEXT),
                (&companion_id, Type::TEXT),
                (&user_id, Type::TEXT),
                (&after, Type::TIMESTAMP),
            ],
        )
        .await?;
    rows.first().map(stored).ok_or(DbError::NotFound)
}

/// Stores a reply under the id its stream announced, stamped `at` (when it ended) but at least
/// 1 ms after `after` (its prompt). Idempotent: a second write of the same id (a retry of a
/// write that timed out after committing, a drain of the journal) stores nothing. Returns
/// whether this call stored it.
#[allow(clippy::too_many_arguments)]
pub async fn insert_reply(
    client: &impl Querier,
    id: &MessageId,
    companion_id: &CompanionId,
    user_id: &UserId,
    content: &str,
    status: ReplyStatus,
    after: NaiveDateTime,
    at: NaiveDateTime,
) -> Result<bool, DbError> {
    let rows = client
        .query_typed(
            r#"INSERT INTO "Message" ("id", "role", "content", "createdAt", "updatedAt",
                                        "companionId", "userId", "status")
               SELECT $1, 'assistant', $2, t.ts, t.ts, $3, $4, $5
               FROM (SELECT GREATEST($6::timestamp, $7::timestamp + interval '1 millisecond')::timestamp(3) AS ts) t
               ON CONFLICT ("id") DO NOTHING
               RETURNING "id""#,
            &[
                (&id, Type::TEXT),
                (&content, Type::TEXT),
                (&companion_id, Type::TEXT),
                (&user_id, Type::TEXT),
                (&status.column(), Type::TEXT),
                (&at, Type::TIMESTAMP),
                (&after, Type::TIMESTAMP),
            ],
        )
        .await?;
    Ok(!rows.is_empty())
}

/// Deletes the conversation's newest message if it is the assistant's (a regenerate replaces
/// it); returns its id.
pub async fn delete_last_reply(
    client: &impl Querier,
    companion_id: &CompanionId,
    user_id: &UserId,
) -> Result<Option<MessageId>, DbError> {
    let rows = client
        .query_typed(
            r#"DELETE FROM "Message" WHERE "id" = (
                   SELECT "id" FROM "Message"
                   WHERE "companionId" = $1 AND "userId" = $2
                   ORDER BY "createdAt" DESC, "id" DESC LIMIT 1)
               AND "role" = 'assistant' RETURNING "id""#,
            &[(&companion_id, Type::TEXT), (&user_id, Type::TEXT)],
        )
        .await?;
    Ok(rows.first().map(|r| r.get(0)))
}

const RECENT_SQL: &str = r#"
    SELECT "id", "role"::text AS "role", "content", "createdAt",
           CASE WHEN "role" = 'assistant' THEN COALESCE("status", 'finished') END AS "status"
    FROM "Message"
    WHERE "companionId" = $1 AND "userId" = $2
    ORDER BY "createdAt" DESC, "id" DESC LIMIT $3"#;

/// The last `limit` messages of the conversation, oldest first (the model's context).
pub async fn list_recent_messages(
    client: &impl Querier,
    companion_id: &CompanionId,
    user_id: &UserId,
    limit: i64,
) -> Result<Vec<StoredMessage>, DbError> {
    let rows = client
        .query_typed(
            RECENT_SQL,
            &[
                (&companion_id, Type::TEXT),
                (&user_id, Type::TEXT),
                (&limit, Type::INT8),
            ],
        )
        .await?;
    let mut messages: Vec<StoredMessage> = rows.iter().map(stored).collect();
    messages.reverse();
    Ok(messages)
}

/// Pages of one user's conversation with one companion.
const PAGE_CURSOR_SQL: &str = r#"SELECT "createdAt" FROM "Message"
       WHERE "companionId" = $1 AND "userId" = $2 AND "id" = $3"#;
const PAGE_SQL: &str = r#"SELECT "id", "role"::text AS "role", "content", "createdAt",
              CASE WHEN "role" = 'assistant' THEN COALESCE("status", 'finished') END AS "status"
       FROM "Message"
       WHERE "companionId" = $1 AND "userId" = $2
         AND ($3::timestamp IS NULL OR ("createdAt", "id") < ($3::timestamp, $4::text))
       ORDER BY "createdAt" DESC, "id" DESC LIMIT $5"#;

/// The `limit` messages before the message `before` (or the newest), or `None` when `before`
/// is not a message of this conversation.
pub async fn list_messages_page(
    client: &impl Querier,
    companion_id: &CompanionId,
    user_id: &UserId,
    before: Option<&MessageId>,
    limit: i64,
) -> Result<Option<Page<StoredMessage>>, DbError> {
    let keyset = Keyset {
        cursor_sql: PAGE_CURSOR_SQL,
        page_sql: PAGE_SQL,
        scope: &[(&companion_id, Type::TEXT), (&user_id, Type::TEXT)],
    };
    fetch_page(client, &keyset, before, limit, stored).await
}

/// The conversation's hot write (see [`super::hot::HotWrite`]): a chat message stored.
pub const HOT_WRITES: &[super::hot::HotWrite] = {
    use super::hot::{HotParam, HotWrite};
    &[HotWrite {
        name: "messages.insert",
        sql: INSERT_SQL,
        params: &[
            HotParam::Text(Some("hot-write-sample")),
            HotParam::Text(Some("user")),
            HotParam::Text(Some("hello")),
            HotParam::Text(Some("cmp_000042")),
            HotParam::Text(Some("user_00007")),
            HotParam::Text(None),
        ],
        table: "Message",
    }]
};

/// The conversation's hot queries (see [`super::hot`]), and the dashboard's per-companion
/// message counts (a viewer's own companions the read model doesn't hold yet are counted on
/// `"Message"` when their page is built).
pub const HOT_QUERIES: &[super::hot::HotQuery] = {
    use super::hot::{HotParam, HotQuery};
    &[
        HotQuery {
            name: "messages.history_page",
            sql: PAGE_SQL,
            params: &[
                HotParam::Text(Some("cmp_000042")),
                HotParam::Text(Some("user_00007")),
                HotParam::Text(None),
                HotParam::Text(None),
                HotParam::Int8(51),
            ],
            expects_index: "Message_companionId_userId_createdAt_idx|Message_companionId_userId_idx",
            on_relation: "Message",
        },
        HotQuery {
            name: "messages.recent",
            sql: RECENT_SQL,
            params: &[
                HotParam::Text(Some("cmp_000042")),
                HotParam::Text(Some("user_00007")),
                HotParam::Int8(20),
            ],
            expects_index: "Message_companionId_userId_createdAt_idx|Message_companionId_userId_idx",
            on_relation: "Message",
        },
        HotQuery {
            name: "messages.count_per_companion",
            sql: super::companions::VIEWER_PAGE_SQL,
            params: &[
                HotParam::Text(None),
                HotParam::Text(None),
                HotParam::Int8(24),
                HotParam::Int8(0),
                HotParam::Text(Some("system")),
                HotParam::Text(Some("user_00007")),
            ],
            expects_index: "Message_companionId_createdAt_idx|Message_companionId_idx|Message_companionId_userId_idx|Message_companionId_userId_createdAt_idx",
            on_relation: "Message",
        },
    ]
};
