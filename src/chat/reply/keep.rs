//! What happens to a reply when it ends, the same way for chat and group chat: a signed-in
//! viewer's reply is stored (what was produced, even if it broke off) and its tokens accounted;
//! an anonymous one is cached for everyone asking the same, if it completed.
//!
//! Database writes that outlive the response retry transient failures with backoff.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

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

/// Attempts of a background database write that failed transiently.
pub const BACKGROUND_WRITE_ATTEMPTS: u32 = 3;
/// Pause before the first retry; doubled before each next one.
pub const BACKGROUND_RETRY_PAUSE: Duration = Duration::from_millis(200);

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
            account_tokens(&app.db, &companion_id, &user_id, tokens).await;
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
    write_with_retry(db, "store reply", |client| async move {
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
    let ok = write_with_retry(db, "store group reply", |client| async move {
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
    })
    .await;
    let stored = row
        .into_inner()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    ok.then_some(stored).flatten()
}

/// Adds a reply's tokens to the companion's total and the user's row for it: the one token
/// accounting path of every reply.
pub async fn account_tokens(db: &Pool, companion_id: &str, user_id: &str, tokens: i32) {
    if tokens <= 0 {
        return;
    }
    let ok = write_with_retry(db, "account tokens", |client| async move {
        burned_tokens::add_tokens_burned(&client, companion_id, user_id, tokens).await
    })
    .await;
    if ok {
        tracing::debug!(tokens, "tokens accounted");
    }
}

/// Whether a failed write may work when tried again.
pub fn is_transient(e: &DbError) -> bool {
    match e {
        DbError::Timeout | DbError::PoolExhausted | DbError::Unavailable(_) => true,
        // Class 40: serialization failure, deadlock.
        other => other.sqlstate().is_some_and(|s| s.code().starts_with("40")),
    }
}

/// Runs a database write with a pooled connection, retrying transient failures.
pub async fn write_with_retry<F, Fut>(db: &Pool, what: &'static str, write: F) -> bool
where
    F: Fn(PooledClient) -> Fut,
    Fut: Future<Output = Result<(), DbError>>,
{
    let mut pause = BACKGROUND_RETRY_PAUSE;
    for attempt in 1..=BACKGROUND_WRITE_ATTEMPTS {
        let result = match db.get().await {
            Ok(client) => write(client).await,
            Err(e) => Err(e),
        };
        match result {
            Ok(()) => return true,
            Err(e) if is_transient(&e) && attempt < BACKGROUND_WRITE_ATTEMPTS => {
                tracing::warn!(what, attempt, error = %e, "background write failed; retrying");
                tokio::time::sleep(pause).await;
                pause *= 2;
            }
            Err(e) => {
                tracing::error!(what, attempt, error = %e, "background write failed");
                return false;
            }
        }
    }
    false
}
