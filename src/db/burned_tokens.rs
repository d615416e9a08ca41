//! Token accounting: `"Companion"."tokensBurned"` and the per-user `"UserBurnedTokens"`, each
//! reply's tokens added once, by its message id (`"ReplyTokens"`).

use tokio_postgres::types::Type;

use super::{DbError, Querier};
use crate::id::{CompanionId, MessageId, UserId};

/// One statement: the reply's row in the ledger, and only when that row is new, its tokens
/// added to the companion's total and to the user's row for it (created on first use). A retry
/// of a write that timed out after committing finds the ledger row and adds nothing.
const ADD_REPLY_TOKENS_SQL: &str = r#"WITH l AS (
       INSERT INTO "ReplyTokens" ("messageId", "companionId", "userId", "tokens")
       VALUES ($5, $1, $2, $3)
       ON CONFLICT ("messageId") DO NOTHING RETURNING "tokens"
   ), c AS (
       UPDATE "Companion"
       SET "tokensBurned" = LEAST("tokensBurned"::bigint + $3, 2147483647)::integer
       WHERE "id" = $1 AND EXISTS (SELECT 1 FROM l) RETURNING "id"
   ), u AS (
       INSERT INTO "UserBurnedTokens" ("id", "userId", "companionId", "tokensBurned",
                                        "createdAt", "updatedAt")
       SELECT $4, $2, c."id", $3, now() AT TIME ZONE 'UTC', now() AT TIME ZONE 'UTC' FROM c
       ON CONFLICT ("userId", "companionId") DO UPDATE
       SET "tokensBurned" = LEAST("UserBurnedTokens"."tokensBurned"::bigint
                                  + EXCLUDED."tokensBurned", 2147483647)::integer,
           "updatedAt" = EXCLUDED."updatedAt"
       RETURNING 1
   )
   SELECT (SELECT count(*) FROM l) AS "added", (SELECT count(*) FROM u) AS "users""#;

/// Adds a reply's `tokens` to the companion's total and to the user's row for it, once per
/// `message_id`, in one statement so the three never disagree. Totals saturate at the column's
/// maximum. Returns whether they were added now (false: they had been already).
pub async fn add_reply_tokens(
    client: &impl Querier,
    message_id: &MessageId,
    companion_id: &CompanionId,
    user_id: &UserId,
    tokens: i32,
) -> Result<bool, DbError> {
    let id = uuid::Uuid::new_v4().to_string();
    let rows = client
        .query_typed(
            ADD_REPLY_TOKENS_SQL,
            &[
                (&companion_id, Type::TEXT),
                (&user_id, Type::TEXT),
                (&tokens, Type::INT4),
                (&id, Type::TEXT),
                (&message_id, Type::TEXT),
            ],
        )
        .await?;
    Ok(rows.first().map(|r| r.get::<_, i64>("added")).unwrap_or(0) > 0)
}

/// Token accounting's hot query (see [`super::hot`]): the per-user row is found by its unique
/// key, the arbiter of the `ON CONFLICT`.
pub const HOT_QUERIES: &[super::hot::HotQuery] = {
    use super::hot::{HotParam, HotQuery};
    &[HotQuery {
        name: "tokens.add_reply_tokens",
        sql: ADD_REPLY_TOKENS_SQL,
        params: &[
            HotParam::Text(Some("cmp_000042")),
            HotParam::Text(Some("user_00007")),
            HotParam::Int4(120),
            HotParam::Text(Some("hot-query-sample")),
            HotParam::Text(Some("hot-query-sample-reply")),
        ],
        expects_index: "UserBurnedTokens_userId_companionId_key",
        on_relation: "UserBurnedTokens",
    }]
};

/// Token accounting's hot write (see [`super::hot::HotWrite`]): the same upsert, run by `gcbb db
/// rehearse` beside the migrations.
pub const HOT_WRITES: &[super::hot::HotWrite] = {
    use super::hot::{HotParam, HotWrite};
    &[HotWrite {
        name: "tokens.add_reply_tokens",
        sql: ADD_REPLY_TOKENS_SQL,
        params: &[
            HotParam::Text(Some("cmp_000042")),
            HotParam::Text(Some("user_00007")),
            HotParam::Int4(120),
            HotParam::Text(Some("hot-write-sample")),
            HotParam::Text(Some("hot-write-sample-reply")),
        ],
        table: "UserBurnedTokens",
    }]
};
