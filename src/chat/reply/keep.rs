//! What happens to a reply when it ends, the same way for chat and group chat: a signed-in
//! viewer's reply is stored (what was produced, even if it broke off) and its tokens accounted;
//! an anonymous one is cached for everyone asking the same, if it completed.
//!
//! Database writes retry transient failures with capped exponential backoff and jitter, each
//! within a budget of time: the reply's own row briefly (the stream's end waits for it), the
//! token accounting, which runs after the response through `wait_until`, for as long as the
//! platform lets background work run (`BACKGROUND_WRITE_BUDGET_MS`, default 60 s, well within
//! the chat functions' `maxDuration`). A write that finally fails is logged at error level with
//! what it takes to replay it (companion id, user id, token count; never the text).

use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use chrono::NaiveDateTime;

use super::ReplyOutcome;
use crate::cache::keys::Key;
use crate::cache::ANONYMOUS_BOT_REPLY_TTL;
use crate::db::group_chats::{self, StoredGroupMessage};
use crate::db::messages::{self, MessageRole};
use crate::db::{burned_tokens, DbError, Pool, PooledClient};
use crate::platform::app::App;
use crate::platform::background::Background;

/// Pause before the first retry; doubled before each next one, up to the cap.
pub const WRITE_RETRY_PAUSE: Duration = Duration::from_millis(200);
/// Longest pause between two attempts: a database back from an outage is used within this.
pub const WRITE_RETRY_MAX_PAUSE: Duration = Duration::from_secs(5);
/// Budget of storing the reply itself: the end of the stream (and the history) waits for it.
pub const REPLY_STORE_BUDGET: Duration = Duration::from_secs(5);

/// Where a finished reply goes.
#[derive(Debug, Clone)]
pub enum Keep {
    /// Signed-in chat: the companion's message in the viewer's conversation, stamped after the
    /// prompt; the tokens go to the companion and the viewer.
    ChatMessage {
        companion_id: String,
        user_id: String,
        after: NaiveDateTime,
    },
    /// A group's creator: the companion's message in the group, stamped after `after`; the
    /// tokens go to the companion and the creator.
    GroupMessage {
        group_id: String,
        companion_id: String,
        user_id: String,
        after: NaiveDateTime,
    },
    /// Anonymous and demo replies: nothing stored; a complete reply is cached under `key`.
    CachedReply { key: Key },
}

/// The row a kept reply became, when it was stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Stored {
    ChatMessage,
    GroupMessage(StoredGroupMessage),
}

impl Keep {
    /// Keeps `outcome` as this says; `tokens` is what it cost. Storing is awaited (a reply is in
    /// the history before its stream ends); accounting and caching run in the background.
    pub(super) async fn apply(
        self,
        app: &Arc<App>,
        bg: &Background,
        outcome: ReplyOutcome,
        tokens: i32,
    ) -> Option<Stored> {
        let produced = !outcome.text.is_empty();
        let (companion_id, user_id, stored) = match self {
            Keep::CachedReply { key } => {
                if outcome.completed() && produced {
                    let app = app.clone();
                    bg.wait_until(async move {
                        let _ = app
                            .cache
                            .put(&key, Bytes::from(outcome.text), ANONYMOUS_BOT_REPLY_TTL)
                            .await;
                    });
                }
                return None;
            }
            Keep::ChatMessage {
                companion_id,
                user_id,
                after,
            } => {
                let stored = produced
                    && store_chat_message(&app.db, &companion_id, &user_id, &outcome.text, after)
                        .await;
                (companion_id, user_id, stored.then_some(Stored::ChatMessage))
            }
            Keep::GroupMessage {
                group_id,
                companion_id,
                user_id,
                after,
            } => {
                let stored = if produced {
                    store_group_message(&app.db, &group_id, &companion_id, &outcome.text, after)
                        .await
                        .map(Stored::GroupMessage)
                } else {
                    None
                };
                (companion_id, user_id, stored)
            }
        };
        let app = app.clone();
        bg.wait_until(async move {
            let budget = app.config.background_write_budget;
            account_tokens(&app.db, budget, &companion_id, &user_id, tokens).await;
        });
        stored
    }
}

async fn store_chat_message(
    db: &Pool,
    companion_id: &str,
    user_id: &str,
    text: &str,
    after: NaiveDateTime,
) -> bool {
    write_with_retry(db, "store reply", REPLY_STORE_BUDGET, |client| async move {
        messages::insert_message(
            &client,
            companion_id,
            user_id,
            MessageRole::Assistant,
            text,
            Some(after),
        )
        .await
        .map(drop)
    })
    .await
}

async fn store_group_message(
    db: &Pool,
    group_id: &str,
    companion_id: &str,
    text: &str,
    after: NaiveDateTime,
) -> Option<StoredGroupMessage> {
    let row = std::sync::Mutex::new(None);
    let row_ref = &row;
    let ok = write_with_retry(
        db,
        "store group reply",
        REPLY_STORE_BUDGET,
        |client| async move {
            let stored = group_chats::insert_group_message(
                &client,
                group_id,
                companion_id,
                true,
                text,
                Some(after),
            )
            .await?;
            *row_ref
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner) = Some(stored);
            Ok(())
        },
    )
    .await;
    let stored = row
        .into_inner()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    ok.then_some(stored).flatten()
}

/// Adds a reply's tokens to the companion's total and the user's row for it: the one token
/// accounting path of every reply. Retries transient failures for up to `budget`; returns
/// whether the tokens were added.
pub async fn account_tokens(
    db: &Pool,
    budget: Duration,
    companion_id: &str,
    user_id: &str,
    tokens: i32,
) -> bool {
    if tokens <= 0 {
        return true;
    }
    let ok = write_with_retry(db, "account tokens", budget, |client| async move {
        burned_tokens::add_tokens_burned(&client, companion_id, user_id, tokens).await
    })
    .await;
    if ok {
        tracing::debug!(tokens, "tokens accounted");
    } else {
        // What a replay needs, and nothing of the conversation.
        tracing::error!(
            replay = "account_tokens",
            companion_id,
            user_id,
            tokens,
            budget_ms = budget.as_millis() as u64,
            "token accounting lost: add these tokens by hand (UPDATE \"Companion\" and \"UserBurnedTokens\")"
        );
    }
    ok
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
/// pause would end past the budget). Returns whether it was written.
pub async fn write_with_retry<F, Fut>(
    db: &Pool,
    what: &'static str,
    budget: Duration,
    write: F,
) -> bool
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
                return true;
            }
            Err(e) => e,
        };
        // Full jitter over the upper half: instances that failed together don't retry together.
        let wait = pause.mul_f64(0.5 + rand::random::<f64>() * 0.5);
        let elapsed = started.elapsed();
        if !is_transient(&e) || elapsed + wait > budget {
            tracing::error!(
                what,
                attempt,
                elapsed_ms = elapsed.as_millis() as u64,
                error = %e,
                "background write failed"
            );
            return false;
        }
        tracing::warn!(what, attempt, error = %e, "background write failed; retrying");
        tokio::time::sleep(wait).await;
        pause = (pause * 2).min(WRITE_RETRY_MAX_PAUSE);
    }
}
