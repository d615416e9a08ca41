//! What the chat bench may change in the bench database, read before and after, and the
//! clean-up that puts it back.

use anyhow::Context;

use super::BENCH_USER;

/// What the bench may change, read before and after it: the row count of each table it writes
/// or could be blamed for, and the token totals it adds to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Fingerprint(Vec<(String, i64)>);

impl Fingerprint {
    pub async fn read(client: &tokio_postgres::Client) -> anyhow::Result<Fingerprint> {
        let mut parts = Vec::new();
        for (name, sql) in [
            ("Companion rows", "SELECT count(*) FROM \"Companion\""),
            ("Category rows", "SELECT count(*) FROM \"Category\""),
            ("Message rows", "SELECT count(*) FROM \"Message\""),
            (
                "UserBurnedTokens rows",
                "SELECT count(*) FROM \"UserBurnedTokens\"",
            ),
            ("ReplyTokens rows", "SELECT count(*) FROM \"ReplyTokens\""),
            (
                "Companion tokens",
                "SELECT COALESCE(sum(\"tokensBurned\"), 0)::bigint FROM \"Companion\"",
            ),
            (
                "privacy epoch",
                "SELECT \"epoch\" FROM \"PrivacyEpoch\" WHERE \"id\" = 1",
            ),
        ] {
            let n: i64 = client.query_one(sql, &[]).await?.get(0);
            parts.push((name.to_owned(), n));
        }
        Ok(Fingerprint(parts))
    }

    /// What differs, `name: before → after`.
    pub fn differences(&self, after: &Fingerprint) -> Vec<String> {
        self.0
            .iter()
            .zip(&after.0)
            .filter(|(a, b)| a != b)
            .map(|((name, a), (_, b))| format!("{name}: {a} → {b}"))
            .collect()
    }
}

/// The seeded companion to chat with: public, owned by a user (not the platform), the first by
/// id, so every run picks the same one.
pub(super) async fn pick_companion(
    client: &tokio_postgres::Client,
) -> anyhow::Result<(String, i32)> {
    let row = client
        .query_opt(
            "SELECT \"id\", \"tokensBurned\" FROM \"Companion\" \
             WHERE NOT \"private\" AND \"userId\" <> $1 ORDER BY \"id\" LIMIT 1",
            &[&gcbb::config::DEFAULT_SYSTEM_USER_ID],
        )
        .await?
        .context(
            "the bench database has no public companion to chat with: seed it first \
             (gcbb bench seed)",
        )?;
    Ok((row.get(0), row.get(1)))
}

/// Deletes what the bench stored (its user's messages and token rows) and puts the companion's
/// token total back; returns how many rows were deleted.
pub(super) async fn remove_scratch(
    client: &tokio_postgres::Client,
    companion_id: &str,
    tokens_before: i32,
) -> anyhow::Result<u64> {
    let messages = client
        .execute(
            "DELETE FROM \"Message\" WHERE \"userId\" = $1",
            &[&BENCH_USER],
        )
        .await?;
    let tokens = client
        .execute(
            "DELETE FROM \"UserBurnedTokens\" WHERE \"userId\" = $1",
            &[&BENCH_USER],
        )
        .await?;
    let ledger = client
        .execute(
            "DELETE FROM \"ReplyTokens\" WHERE \"userId\" = $1",
            &[&BENCH_USER],
        )
        .await?;
    client
        .execute(
            "UPDATE \"Companion\" SET \"tokensBurned\" = $2 WHERE \"id\" = $1",
            &[&companion_id, &tokens_before],
        )
        .await?;
    Ok(messages + tokens + ledger)
}
