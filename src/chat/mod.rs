//! `api/chat`: `POST /api/chat/:chatId` streams a companion's reply to `{"prompt"}`;
//! `GET /api/chat/:chatId` pages the viewer's history with it (DESIGN.md §4, Chat).
//!
//! Signed-in: the prompt is stored before the model is asked, the context is the companion's
//! instructions plus the conversation's last messages, the reply is stored when it ends (what
//! was produced, if it broke off or the client left), and tokens are accounted afterwards
//! through `wait_until`. Anonymous: nothing is stored.

pub mod group;
pub mod input;
pub mod reply;
pub mod stream;

use std::sync::Arc;

use axum::extract::State;
use axum::http::{header, HeaderMap, HeaderValue, Uri};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Extension, Json, Router};
use serde::Serialize;

use bytes::Bytes;

use crate::cache::keys::{self, Key};
use crate::cache::ratelimit::{self, Decision};
use crate::cache::{ANONYMOUS_BOT_REPLY_TTL, ANONYMOUS_TTL};
use crate::chat::stream::{reply_response, ReplyPart, StreamFormat};
use crate::db::burned_tokens;
use crate::db::companions::{find_visible_companion, CompanionPrompt};
use crate::db::messages::{self, MessageRole, StoredMessage};
use crate::llm::{ChatMessage, Role};
use crate::platform::app::App;
use crate::platform::auth::Viewer;
use crate::platform::background::Background;
use crate::platform::error::{ApiError, ApiResult};
use crate::platform::http::{query_params, BodyLimit, JsonBody};
use input::PromptBody;
use reply::{generate, model_error_response, start_reply, ReplyGuard, ReplyOutcome};

/// The router of `api/chat`.
pub fn router(app: Arc<App>) -> Router {
    let limit = BodyLimit(app.config.body_limit);
    crate::platform::routing::any_path(get(history).post(chat))
        .layer(Extension(limit))
        .with_state(app)
}

/// `POST`: stream the companion's reply.
async fn chat(
    State(app): State<Arc<App>>,
    viewer: Viewer,
    bg: Background,
    uri: Uri,
    headers: HeaderMap,
    JsonBody(body): JsonBody<PromptBody>,
) -> ApiResult<Response> {
    let chat_id = input::id_param(&query_params(&uri), "chatId")?;
    input::validate_prompt(&body.prompt)?;
    let format = StreamFormat::from_accept(&headers);
    let limited = match ratelimit_guard(&app, &viewer, &headers).await {
        Ok(l) => l,
        Err(too_many) => return Ok(too_many),
    };
    let response = match viewer {
        Viewer::User { user_id } => {
            chat_signed_in(app, bg, chat_id, user_id, body.prompt, format).await?
        }
        Viewer::Anonymous => chat_anonymous(app, bg, chat_id, body.prompt, format).await?,
    };
    Ok(limited.apply(response))
}

async fn chat_signed_in(
    app: Arc<App>,
    bg: Background,
    chat_id: String,
    user_id: String,
    prompt: String,
    format: StreamFormat,
) -> ApiResult<Response> {
    let db = app.db.get().await?;
    let companion = find_visible_companion(&db, &chat_id, Some(&user_id))
        .await?
        .ok_or(ApiError::NotFound)?;
    // One round trip: both statements are pipelined on the connection, and the second runs
    // after the first committed, so the context includes the new prompt.
    let (prompt_row, history) = tokio::try_join!(
        messages::insert_message(
            &db,
            &companion.id,
            &user_id,
            MessageRole::User,
            &prompt,
            None
        ),
        messages::list_recent_messages(
            &db,
            &companion.id,
            &user_id,
            app.config.chat.context_messages
        ),
    )?;
    drop(db);
    let context = context_of(&companion, &history);
    let mut started = match start_reply(&app.llm, &context).await {
        Ok(s) => s,
        Err(e) => return Ok(model_error_response(&e)),
    };
    let on_end = {
        let app = app.clone();
        let bg = bg.clone();
        let after = prompt_row.created_at_naive();
        move |outcome: ReplyOutcome| async move {
            store_reply(&app, &companion.id, &user_id, after, &outcome).await;
            let tokens = outcome.tokens(&context);
            let app2 = app.clone();
            bg.wait_until(async move {
                account_tokens(&app2, &companion.id, &user_id, tokens).await;
            });
        }
    };
    let mut guard = ReplyGuard::new(bg, on_end);
    let parts = generate(move |tx| async move {
        let error = guard.relay(&mut started, &tx, ReplyPart::Text).await;
        guard.finish(error.clone()).await;
        if let Some(e) = error {
            tracing::warn!(kind = e.kind(), "model failed mid-stream");
            tx.send(ReplyPart::Error(reply::client_message(&e))).await;
        }
    });
    Ok(reply_response(format, parts))
}

/// Size of the pieces a cached reply is replayed in.
const REPLAY_PIECE_BYTES: usize = 256;

async fn chat_anonymous(
    app: Arc<App>,
    bg: Background,
    chat_id: String,
    prompt: String,
    format: StreamFormat,
) -> ApiResult<Response> {
    let companion = find_public_companion(&app, &bg, &chat_id).await?;
    let key = anonymous_reply_key(&companion.id, &prompt);
    if let Some(text) = cached_reply(&app, &key).await {
        let mut response = reply_response(format, futures_util::stream::iter(replay_pieces(text)));
        response
            .headers_mut()
            .insert("x-cache", HeaderValue::from_static("hit"));
        return Ok(response);
    }
    let context = vec![
        ChatMessage::new(Role::System, companion.instructions.clone()),
        ChatMessage::new(Role::User, prompt),
    ];
    let mut started = match start_reply(&app.llm, &context).await {
        Ok(s) => s,
        Err(e) => return Ok(model_error_response(&e)),
    };
    let on_end = {
        let app = app.clone();
        let bg = bg.clone();
        move |outcome: ReplyOutcome| async move {
            if outcome.completed() && !outcome.text.is_empty() {
                bg.wait_until(async move { cache_reply(&app, &key, outcome.text).await });
            }
        }
    };
    let mut guard = ReplyGuard::new(bg, on_end);
    let parts = generate(move |tx| async move {
        let error = guard.relay(&mut started, &tx, ReplyPart::Text).await;
        guard.finish(error.clone()).await;
        if let Some(e) = error {
            tx.send(ReplyPart::Error(reply::client_message(&e))).await;
        }
    });
    let mut response = reply_response(format, parts);
    response
        .headers_mut()
        .insert("x-cache", HeaderValue::from_static("miss"));
    Ok(response)
}

/// A cached reply cut into pieces on character boundaries.
fn replay_pieces(text: String) -> Vec<ReplyPart> {
    let mut pieces = Vec::new();
    let mut rest = text.as_str();
    while !rest.is_empty() {
        let mut end = rest.len().min(REPLAY_PIECE_BYTES);
        while !rest.is_char_boundary(end) {
            end += 1;
        }
        pieces.push(ReplyPart::Text(rest[..end].to_owned()));
        rest = &rest[end..];
    }
    pieces
}

/// The model's context: the companion's instructions, then the conversation.
fn context_of(companion: &CompanionPrompt, history: &[StoredMessage]) -> Vec<ChatMessage> {
    std::iter::once(ChatMessage::new(
        Role::System,
        companion.instructions.clone(),
    ))
    .chain(history.iter().map(|m| {
        let role = match m.role.as_str() {
            "assistant" => Role::Assistant,
            "system" => Role::System,
            _ => Role::User,
        };
        ChatMessage::new(role, m.content.clone())
    }))
    .collect()
}

/// Stores what the model produced (possibly partial); nothing when it produced nothing.
async fn store_reply(
    app: &App,
    companion_id: &str,
    user_id: &str,
    after: chrono::NaiveDateTime,
    outcome: &ReplyOutcome,
) {
    if outcome.text.is_empty() {
        return;
    }
    reply::write_with_retry(&app.db, "store reply", |client| async move {
        messages::insert_message(
            &client,
            companion_id,
            user_id,
            MessageRole::Assistant,
            &outcome.text,
            Some(after),
        )
        .await
        .map(drop)
    })
    .await;
}

/// Adds the reply's tokens to the companion and to the user's row (background work).
async fn account_tokens(app: &App, companion_id: &str, user_id: &str, tokens: i32) {
    if tokens <= 0 {
        return;
    }
    let ok = reply::write_with_retry(&app.db, "account tokens", |client| async move {
        burned_tokens::add_tokens_burned(&client, companion_id, user_id, tokens).await
    })
    .await;
    if ok {
        tracing::debug!(tokens, "tokens accounted");
    }
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct HistoryPage {
    messages: Vec<StoredMessage>,
    /// Pass as `before` for the next (older) page; null on the oldest page.
    next_cursor: Option<String>,
}

/// `GET`: the viewer's own messages with the companion, newest page first, oldest first within
/// a page.
async fn history(State(app): State<Arc<App>>, viewer: Viewer, uri: Uri) -> ApiResult<Response> {
    let query = query_params(&uri);
    let chat_id = input::id_param(&query, "chatId")?;
    let page = input::page_params(&query)?;
    let Viewer::User { user_id } = viewer else {
        return Err(ApiError::Unauthorized(
            "sign in to read your chat history".into(),
        ));
    };
    let db = app.db.get().await?;
    let companion = find_visible_companion(&db, &chat_id, Some(&user_id))
        .await?
        .ok_or(ApiError::NotFound)?;
    let found = messages::list_messages_page(
        &db,
        &companion.id,
        &user_id,
        page.before.as_deref(),
        page.limit,
    )
    .await?;
    let Some(found) = found else {
        return Err(ApiError::bad_parameter(
            "before",
            "is not a message of this conversation",
        ));
    };
    let next_cursor = found
        .has_older
        .then(|| found.messages.first().map(|m| m.id.clone()))
        .flatten();
    Ok(private_json(HistoryPage {
        messages: found.messages,
        next_cursor,
    }))
}

/// A JSON answer for one user's eyes only.
pub fn private_json<T: Serialize>(value: T) -> Response {
    let mut response = Json(value).into_response();
    response.headers_mut().insert(
        header::CACHE_CONTROL,
        HeaderValue::from_static("private, no-store"),
    );
    response
}

/// The rate-limit decision of a request that was let through; its headers go on the response.
pub struct RateLimited(Decision);

impl RateLimited {
    pub fn apply(self, mut response: Response) -> Response {
        ratelimit_headers(response.headers_mut(), &self.0);
        response
    }
}

fn ratelimit_headers(headers: &mut HeaderMap, d: &Decision) {
    headers.insert("x-ratelimit-limit", HeaderValue::from(d.limit));
    headers.insert("x-ratelimit-remaining", HeaderValue::from(d.remaining));
    headers.insert(
        "x-ratelimit-reset",
        HeaderValue::from(d.reset_ms.div_ceil(1000)),
    );
}

/// Checks the viewer's chat rate limit (signed-in by user id, anonymous by client address):
/// 429 with `Retry-After` and `X-RateLimit-*` when over it.
pub async fn ratelimit_guard(
    app: &App,
    viewer: &Viewer,
    headers: &HeaderMap,
) -> Result<RateLimited, Response> {
    let (subject, limit) = match viewer {
        Viewer::User { user_id } => (format!("user:{user_id}"), app.config.chat.user_rate_limit),
        Viewer::Anonymous => (
            format!("ip:{}", input::client_address(headers)),
            app.config.chat.anonymous_rate_limit,
        ),
    };
    let decision = app
        .ratelimiter
        .check(&app.cache, "chat", &subject, limit)
        .await;
    if decision.allowed {
        return Ok(RateLimited(decision));
    }
    tracing::info!(
        limit = decision.limit,
        local = decision.local,
        "rate limited"
    );
    let mut response = ApiError::TooManyRequests {
        retry_after_secs: decision.retry_after_secs(ratelimit::now_ms()),
    }
    .into_response();
    ratelimit_headers(response.headers_mut(), &decision);
    Err(response)
}

/// Key of a cached anonymous reply.
pub type ReplyKey = Key;

/// A demo group's reply to a prompt, cached per (group, companion, normalized prompt).
pub fn demo_reply_key(group_id: &str, companion_id: &str, prompt: &str) -> ReplyKey {
    keys::bot_reply(
        companion_id,
        &format!("group:{group_id}:{}", input::normalize_prompt(prompt)),
    )
}

/// A companion's reply to an anonymous prompt, cached per (companion, normalized prompt).
pub fn anonymous_reply_key(companion_id: &str, prompt: &str) -> ReplyKey {
    keys::bot_reply(companion_id, &input::normalize_prompt(prompt))
}

pub async fn cached_reply(app: &App, key: &ReplyKey) -> Option<String> {
    let found = app.cache.get(key).await.value?;
    String::from_utf8(found.to_vec()).ok()
}

/// Stores a complete anonymous reply for [`ANONYMOUS_BOT_REPLY_TTL`] (background work).
pub async fn cache_reply(app: &App, key: &ReplyKey, text: String) {
    let _ = app
        .cache
        .put(key, Bytes::from(text), ANONYMOUS_BOT_REPLY_TTL)
        .await;
}

/// A public companion's prompt data, from the cache when there (anonymous fast path). Only
/// public companions are cached; a PATCH invalidates the entry.
async fn find_public_companion(
    app: &Arc<App>,
    bg: &Background,
    id: &str,
) -> ApiResult<CompanionPrompt> {
    let key = keys::companion(id);
    if let Some(raw) = app.cache.get(&key).await.value {
        if let Ok(c) = serde_json::from_slice::<CompanionPrompt>(&raw) {
            if !c.private {
                return Ok(c);
            }
        }
    }
    let companion = {
        let db = app.db.get().await?;
        find_visible_companion(&db, id, None)
            .await?
            .ok_or(ApiError::NotFound)?
    };
    if let Ok(raw) = serde_json::to_vec(&companion) {
        let app = app.clone();
        bg.wait_until(async move {
            let _ = app.cache.put(&key, Bytes::from(raw), ANONYMOUS_TTL).await;
        });
    }
    Ok(companion)
}
