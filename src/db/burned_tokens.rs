//! Token accounting: `"Companion"."tokensBurned"` and the per-user `"UserBurnedTokens"`.

use tokio_postgres::types::Type;

use super::{DbError, Querier};

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
            "WITH c AS ( \
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
                 \"updatedAt\" = EXCLUDED.\"updatedAt\"",
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
