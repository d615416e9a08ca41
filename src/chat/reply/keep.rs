//! What happens to a reply when it ends, the same way for chat and group chat: a signed-in
//! viewer's reply is stored (what was produced, even if it broke off or was stopped, with how it
//! ended) and its tokens accounted; an anonymous one is cached for everyone asking the same, if
//! it finished.
//!
//! Both writes are idempotent by the reply's message id (the id its stream announced): the row
//! is `INSERT … ON CONFLICT DO NOTHING`, the tokens go through the `"ReplyTokens"` ledger. So a
//! write that timed out after it had committed can be retried, and a reply written from the
//! journal later ([`super::journal`]) can't be stored or counted twice.
//!
//! Database writes retry transient failures with capped exponential backoff and jitter, each
//! within a budget of time: the reply's own row briefly (the stream's end waits for it), the
//! token accounting, which runs after the end in its own background task, for as long as the
//! platform lets background work run (`BACKGROUND_WRITE_BUDGET_MS`, default 60 s, well within
//! the chat functions' `maxDuration`). What still fails stays in the journal for later.

use std::future::Future;
use std::time::{Duration, Instant};

use chrono::{DateTime, NaiveDateTime};
use serde::{Deserialize, Serialize};

use crate::cache::keys::Key;
use crate::db::messages::{self, ReplyStatus};
use crate::db::{burned_tokens, group_chats, DbError, Pool, PooledClient};
use crate::id::{CompanionId, GroupId, MessageId, UserId};

/// Pause before the first retry; doubled before each next one, up to the cap.
pub const WRITE_RETRY_PAUSE: Duration = Duration::from_millis(200);
/// Longest pause between two attempts: a database back from an outage is used within this.
pub const WRITE_RETRY_MAX_PAUSE: Duration = Duration::from_secs(5);
/// Budget of storing the reply itself: the end of the stream waits for it. Past it the reply is
/// kept in the journal, and the stream's end says it is not stored yet.
pub const REPLY_STORE_BUDGET: Duration = Duration::from_secs(5);

/// Where a finished reply goes.
#[derive(Debug, Clone)]
pub enum Keep {
    /// Signed-in chat and a group's creator: a row of the database, and the tokens.
    Row(RowSpec),
    /// Anonymous and demo replies: nothing stored; a complete reply is cached under `key`.
    CachedReply { key: Key },
}

/// A reply's row, as the journal records it so a drain can write it without the request.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RowSpec {
    pub target: RowTarget,
    /// The prompt's time (ms since the epoch): the reply is stamped after it.
    pub after_ms: i64,
    /// The context's tokens, estimated: what a reply that ended without the model's count cost.
    pub context_tokens: u32,
}

/// Which table, and whose tokens.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "kebab-case")]
pub enum RowTarget {
    /// The companion's message in the viewer's conversation.
    Chat {
        companion_id: CompanionId,
        user_id: UserId,
    },
    /// The companion's message in the creator's group.
    Group {
        group_id: GroupId,
        companion_id: CompanionId,
        user_id: UserId,
    },
}

impl RowTarget {
    pub fn companion_id(&self) -> &CompanionId {
        match self {
            RowTarget::Chat { companion_id, .. } | RowTarget::Group { companion_id, .. } => {
                companion_id
            }
        }
    }

    pub fn user_id(&self) -> &UserId {
        match self {
            RowTarget::Chat { user_id, .. } | RowTarget::Group { user_id, .. } => user_id,
        }
    }
}

/// How a write ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WriteOutcome {
    /// Written, now or before (the id was there).
    Written,
    /// Nothing to write to: the companion or group was deleted meanwhile.
    Gone,
    /// Still failing when the budget ran out: try again later.
    Failed,
}

impl RowSpec {
    /// Stores the reply's text under `id`, stamped `at` (after its prompt), retrying for
    /// `budget` (zero: one attempt).
    pub async fn store(
        &self,
        db: &Pool,
        budget: Duration,
        id: &MessageId,
        text: &str,
        status: ReplyStatus,
        at: chrono::NaiveDateTime,
    ) -> WriteOutcome {
        let after = from_ms(self.after_ms);
        let result = write_with_retry(db, "store reply", budget, |client| async move {
            match &self.target {
                RowTarget::Chat {
                    companion_id,
                    user_id,
                } => {
                    messages::insert_reply(
                        &client,
                        id,
                        companion_id,
                        user_id,
                        text,
                        status,
                        after,
                        at,
                    )
                    .await
                }
                RowTarget::Group {
                    group_id,
                    companion_id,
                    ..
                } => {
                    group_chats::insert_group_reply(
                        &client,
                        id,
                        group_id,
                        companion_id,
                        text,
                        status,
                        after,
                        at,
                    )
                    .await
                }
            }
            .map(|inserted| {
                if !inserted {
                    tracing::info!("reply already stored (an earlier write had committed)");
                }
            })
        })
        .await;
        outcome_of(result, "store reply")
    }
}

/// Adds a reply's tokens to the companion's total and the user's row for it, once per message
/// id: the one token accounting path of every reply. Retries transient failures for `budget`.
pub async fn account_tokens(
    db: &Pool,
    budget: Duration,
    row: &RowSpec,
    message_id: &MessageId,
    tokens: i32,
) -> WriteOutcome {
    if tokens <= 0 {
        return WriteOutcome::Written;
    }
    let (companion_id, user_id) = (row.target.companion_id(), row.target.user_id());
    let result = write_with_retry(db, "account tokens", budget, |client| async move {
        burned_tokens::add_reply_tokens(&client, message_id, companion_id, user_id, tokens)
            .await
            .map(|added| {
                if !added {
                    tracing::info!("tokens already accounted (an earlier write had committed)");
                }
            })
    })
    .await;
    let outcome = outcome_of(result, "account tokens");
    if outcome == WriteOutcome::Written {
        tracing::debug!(tokens, "tokens accounted");
    }
    outcome
}

fn outcome_of(result: Result<(), DbError>, what: &'static str) -> WriteOutcome {
    match result {
        Ok(()) => WriteOutcome::Written,
        // 23503: the companion or group it belongs to was deleted; nothing will ever take it.
        Err(e) if e.sqlstate().is_some_and(|s| s.code() == "23503") => {
            tracing::warn!(
                what,
                "the reply's companion or group is gone; nothing written"
            );
            WriteOutcome::Gone
        }
        Err(_) => WriteOutcome::Failed,
    }
}

/// Whether a failed write may work when tried again.
pub fn is_transient(e: &DbError) -> bool {
    match e {
        DbError::Timeout
        | DbError::PoolExhausted
        | DbError::Unavailable(_)
        | DbError::CircuitOpen => true,
        // Class 40: serialization failure, deadlock.
        other => other.sqlstate().is_some_and(|s| s.code().starts_with("40")),
    }
}

/// Runs a database write with a pooled connection, retrying transient failures with capped
/// exponential backoff and jitter while `budget` lasts (an attempt is not started when its
/// pause would end past the budget). Returns the last error when it was not written.
pub async fn write_with_retry<F, Fut>(
    db: &Pool,
    what: &'static str,
    budget: Duration,
    write: F,
) -> Result<(), DbError>
where
    F: Fn(PooledClient) -> Fut,
    Fut: Future<Output = Result<(), DbError>>,
{
    let started = Instant::now();
    let mut pause = WRITE_RETRY_PAUSE;
    let mut attempt = 0u32;
    loop {
        attempt += 1;
        let result = match db.get().await {
            Ok(client) => write(client).await,
            Err(e) => Err(e),
        };
        let e = match result {
            Ok(()) => {
                if attempt > 1 {
                    tracing::info!(what, attempt, "background write succeeded after retrying");
                }
                return Ok(());
            }
            Err(e) => e,
        };
        // Full jitter over the upper half: instances that failed together don't retry together.
        let wait = pause.mul_f64(0.5 + rand::random::<f64>() * 0.5);
        let elapsed = started.elapsed();
        if !is_transient(&e) || elapsed + wait > budget {
            tracing::warn!(
                what,
                attempt,
                elapsed_ms = elapsed.as_millis() as u64,
                error = %e,
                "background write failed"
            );
            return Err(e);
        }
        tracing::debug!(what, attempt, error = %e, "background write failed; retrying");
        tokio::time::sleep(wait).await;
        pause = (pause * 2).min(WRITE_RETRY_MAX_PAUSE);
    }
}

/// A stored timestamp as the journal carries it: Unix milliseconds.
pub fn to_ms(t: NaiveDateTime) -> i64 {
    t.and_utc().timestamp_millis()
}

/// Unix milliseconds from the journal as the timestamp a row stores.
pub fn from_ms(ms: i64) -> NaiveDateTime {
    DateTime::from_timestamp_millis(ms)
        .unwrap_or_default()
        .naive_utc()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_go_to_milliseconds_and_back() {
        let t = from_ms(1_765_000_000_123);
        assert_eq!(to_ms(t), 1_765_000_000_123);
    }

    #[test]
    fn a_row_reads_back_from_its_journal_form() {
        let row = RowSpec {
            target: RowTarget::Group {
                group_id: GroupId::issued("g"),
                companion_id: CompanionId::issued("c"),
                user_id: UserId::issued("u"),
            },
            after_ms: 5,
            context_tokens: 9,
        };
        let json = serde_json::to_string(&row).unwrap();
        assert!(json.contains(r#""kind":"group""#), "{json}");
        // Ids are the plain strings they were: journals written before still read.
        assert!(json.contains(r#""group_id":"g""#), "{json}");
        assert_eq!(serde_json::from_str::<RowSpec>(&json).unwrap(), row);
        assert_eq!(row.target.companion_id(), "c");
        assert_eq!(row.target.user_id(), "u");
    }
}
