//! `api/chat`: `POST /api/chat/:chatId` streams a companion's reply to `{"prompt"}`
//! (`useCompletion`) or to the AI SDK's chat request (`useChat`; see [`input`]);
//! `GET /api/chat/:chatId` pages the viewer's history with it. Group chat lives in [`group`].
//!
//! Signed-in: the prompt is stored before the model is asked, the context is the companion's
//! instructions plus the conversation's last stored messages (a chat request's own copy of the
//! conversation is not read: the stored history is the truth), and the reply is stored and its
//! tokens accounted when it ends ([`reply::Keep`]). Anonymous: nothing is stored; the context is
//! the instructions, the client's own recent messages if it sent any (bounded), and the prompt;
//! a complete reply is cached and replayed to the next anonymous viewer asking the same after
//! the same turns.

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
use bytes::Bytes;
use serde::Serialize;

use crate::cache::keys;
use crate::cache::ANONYMOUS_TTL;
use crate::db::companions::{find_visible_companion, CompanionPrompt};
use crate::db::messages::{self, MessageRole, StoredMessage};
use crate::llm::{ChatMessage, Role};
use crate::platform::app::App;
use crate::platform::auth::Viewer;
use crate::platform::background::Background;
use crate::platform::error::{ApiError, ApiResult};
use crate::platform::http::{BodyLimit, JsonBody};
use crate::platform::input::{HistoryPage, Id, Prompt, Query};
use crate::platform::ratelimit::{self, Client, RouteLimit};
use crate::platform::routing::any_path;
use input::{ChatBody, ChatRequest};
use reply::cached::{anonymous_conversation_key, cached_reply, replay_pieces};
use reply::{generate, Keep};
use stream::{reply_response, ReplyPart, StreamFormat};

/// The router of `api/chat`.
pub fn router(app: Arc<App>) -> Router {
    // Its own limit: `useChat` sends the whole conversation with every message.
    let limit = BodyLimit(app.config.chat.body_limit);
    any_path("chat", get(history).post(chat))
        .layer(Extension(limit))
        .with_state(app)
}

/// The chat routes' rate limits (shared by one-on-one and group chat).
pub fn chat_limit(app: &App) -> RouteLimit {
    RouteLimit {
        route: "chat",
        signed_in: app.config.chat.user_rate_limit,
        anonymous: Some(app.config.chat.anonymous_rate_limit),
    }
}

/// `POST`: stream the companion's reply.
async fn chat(
    State(app): State<Arc<App>>,
    viewer: Viewer,
    bg: Background,
    uri: Uri,
    headers: HeaderMap,
    client: Client,
    JsonBody(body): JsonBody<ChatBody>,
) -> ApiResult<Response> {
    let chat_id = Query::of(&uri).id("chatId")?;
    let request = body.into_request()?;
    let format = request.stream_format(&headers);
    let allowed = ratelimit::check(&app, chat_limit(&app), &viewer, &client).await?;
    let response = match viewer {
        Viewer::User { user_id } => {
            chat_signed_in(app, bg, chat_id, user_id, request.prompt, format).await?
        }
        Viewer::Anonymous => chat_anonymous(app, bg, chat_id, request, format).await?,
    };
    Ok(ratelimit::apply(allowed, response))
}

async fn chat_signed_in(
    app: Arc<App>,
    bg: Background,
    chat_id: Id,
    user_id: String,
    prompt: Prompt,
    format: StreamFormat,
) -> ApiResult<Response> {
    let db = app.db.get().await?;
    let companion = find_visible_companion(&db, chat_id.as_str(), Some(&user_id))
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
            prompt.as_str(),
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
    let reply = reply::start(&app.llm, context_of(&companion, &history)).await?;
    let keep = Keep::ChatMessage {
        companion_id: companion.id,
        user_id,
        after: prompt_row.created_at_naive(),
    };
    Ok(reply_response(format, stream_reply(app, bg, reply, keep)))
}

async fn chat_anonymous(
    app: Arc<App>,
    bg: Background,
    chat_id: Id,
    request: ChatRequest,
    format: StreamFormat,
) -> ApiResult<Response> {
    let companion = find_public_companion(&app, &bg, &chat_id).await?;
    let earlier = request
        .recent_history(
            app.config.chat.client_context_messages,
            app.config.chat.client_context_bytes,
        )
        .to_vec();
    let key = anonymous_conversation_key(&companion.id, &earlier, &request.prompt);
    // Asked to regenerate, the client wants another answer than the one it has.
    if !request.regenerate {
        if let Some(text) = cached_reply(&app, &key).await {
            let parts = futures_util::stream::iter(replay_pieces(text));
            return Ok(with_cache_status(reply_response(format, parts), "hit"));
        }
    }
    // Only the companion's instructions are a system message; the client's turns are the
    // user's and the assistant's, whatever they say.
    let context: Vec<ChatMessage> =
        std::iter::once(ChatMessage::new(Role::System, companion.instructions))
            .chain(earlier)
            .chain(std::iter::once(ChatMessage::new(
                Role::User,
                request.prompt.into_string(),
            )))
            .collect();
    let reply = reply::start(&app.llm, context).await?;
    let parts = stream_reply(app, bg, reply, Keep::CachedReply { key });
    Ok(with_cache_status(reply_response(format, parts), "miss"))
}

/// The reply's text as stream parts, then an error part if the model broke off.
fn stream_reply(
    app: Arc<App>,
    bg: Background,
    reply: reply::Reply,
    keep: Keep,
) -> impl futures_util::Stream<Item = ReplyPart> + Send {
    generate(move |tx| async move {
        let ended = reply.forward(&app, &bg, keep, &tx, ReplyPart::Text).await;
        if let Some(e) = ended.error {
            tx.send(ReplyPart::Error(e.to_string())).await;
        }
    })
}

fn with_cache_status(mut response: Response, status: &'static str) -> Response {
    response
        .headers_mut()
        .insert("x-cache", HeaderValue::from_static(status));
    response
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

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct HistoryResponse {
    messages: Vec<StoredMessage>,
    /// Pass as `before` for the next (older) page; null on the oldest page.
    next_cursor: Option<String>,
}

/// `GET`: the viewer's own messages with the companion, newest page first, oldest first within
/// a page.
async fn history(State(app): State<Arc<App>>, viewer: Viewer, uri: Uri) -> ApiResult<Response> {
    let query = Query::of(&uri);
    let chat_id = query.id("chatId")?;
    let page = HistoryPage::parse(&query)?;
    let Viewer::User { user_id } = viewer else {
        return Err(ApiError::Unauthorized(
            "sign in to read your chat history".into(),
        ));
    };
    let db = app.db.get().await?;
    let companion = find_visible_companion(&db, chat_id.as_str(), Some(&user_id))
        .await?
        .ok_or(ApiError::NotFound)?;
    let found = messages::list_messages_page(
        &db,
        &companion.id,
        &user_id,
        page.before.as_ref().map(Id::as_str),
        page.limit,
    )
    .await?
    .ok_or_else(|| ApiError::bad_parameter("before", "is not a message of this conversation"))?;
    Ok(private_json(HistoryResponse {
        next_cursor: found.next_cursor(|m| &m.id),
        messages: found.items,
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

/// A public companion's prompt data, from the cache when there (anonymous fast path). Only
/// public companions are cached, under the privacy epoch; a PATCH invalidates the entry.
async fn find_public_companion(
    app: &Arc<App>,
    bg: &Background,
    id: &Id,
) -> ApiResult<CompanionPrompt> {
    // Under the privacy epoch: a profile cached while the companion was public is never read
    // once it is hidden, whichever instance cached it and even if the cache was down meanwhile.
    let epoch = app.privacy.current(app).await?;
    let key = keys::companion(id.as_str()).at_privacy_epoch(epoch);
    if let Some(raw) = app.cache.get(&key).await.value {
        if let Ok(c) = serde_json::from_slice::<CompanionPrompt>(&raw) {
            if !c.private {
                return Ok(c);
            }
        }
    }
    let companion = {
        let db = app.db.get().await?;
        find_visible_companion(&db, id.as_str(), None)
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
