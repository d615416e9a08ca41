//! Token accounting: `"Companion"."tokensBurned"` and the per-user `"UserBurnedTokens"`.

use tokio_postgres::types::Type;

use super::{DbError, Querier};

const ADD_TOKENS_SQL: &str = "WITH c AS ( \
     UPDATE \"Companion\" \
     SET \"tokensBurned\" = LEAST(\"tokensBurned\"::bigint + $3, 2147483647)::integer \
     WHERE \"id\" = $1 RETURNING \"id\" \
 ) \
 INSERT INTO \"UserBurnedTokens\" (\"id\", \"userId\", \"companionId\", \"tokensBurned\", \
                                  \"createdAt\", \"updatedAt\") \
 SELECT $4, $2, c.\"id\", $3, now() AT TIME ZONE 'UTC', now() AT TIME ZONE 'UTC' FROM c \
 ON CONFLICT (\"userId\", \"companionId\") DO UPDATE \
 SET \"tokensBurned\" = LEAST(\"UserBurnedTokens\".\"tokensBurned\"::bigint \
                            + EXCLUDED.\"tokensBurned\", 2147483647)::integer, \
     \"updatedAt\" = EXCLUDED.\"updatedAt\"";

/// Adds `tokens` to the companion's total and to the user's row for it (created on first use),
/// in one statement so the two never disagree. Totals saturate at the column's maximum.
pub async fn add_tokens_burned(
    client: &impl Querier,
    companion_id: &str,
    user_id: &str,
    tokens: i32,
) -> Result<(), DbError> {
    let id = uuid::Uuid::new_v4().to_string();
    client
        .query_typed(
            ADD_TOKENS_SQL,
            &[
                (&companion_id, Type::TEXT),
                (&user_id, Type::TEXT),
                (&tokens, Type::INT4),
                (&id, Type::TEXT),
            ],
        )
        .await?;
    Ok(())
}

/// Token accounting's hot query (see [`super::hot`]): the per-user row is found by its unique
/// key, the arbiter of the `ON CONFLICT`.
pub const HOT_QUERIES: &[super::hot::HotQuery] = {
    use super::hot::{HotParam, HotQuery};
    &[HotQuery {
        name: "tokens.add_tokens_burned",
        sql: ADD_TOKENS_SQL,
        params: &[
            HotParam::Text(Some("cmp_000042")),
            HotParam::Text(Some("user_00007")),
            HotParam::Int4(120),
            HotParam::Text(Some("hot-query-sample")),
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
        name: "tokens.add_tokens_burned",
        sql: ADD_TOKENS_SQL,
        params: &[
            HotParam::Text(Some("cmp_000042")),
            HotParam::Text(Some("user_00007")),
            HotParam::Int4(120),
            HotParam::Text(Some("hot-query-sample")),
        ],
        table: "UserBurnedTokens",
    }]
};
