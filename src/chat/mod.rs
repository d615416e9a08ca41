//! `api/chat`: `POST /api/chat/:chatId` streams a companion's reply to `{"prompt"}`
//! (`useCompletion`) or to the AI SDK's chat request (`useChat`; see [`input`]);
//! `GET /api/chat/:chatId` pages the viewer's history with it; `GET /api/chat/:chatId/stream`
//! resumes the viewer's reply in flight and `POST /api/chat/:chatId/stop` stops it ([`resume`]).
//! Group chat lives in [`group`].
//!
//! A reply runs to its end as background work whether or not its client stays ([`reply`]): a
//! client that goes away (a reload, a closed tab, the SDK's `stop()`) only disconnects, and may
//! resume; only `POST …/stop` stops it.
//!
//! Signed-in: the prompt is stored before the model is asked, the context is the companion's
//! instructions plus the conversation's last stored messages (a chat request's own copy of the
//! conversation is not read: the stored history is the truth, so sending only the new message is
//! enough), and the reply is stored under the id its stream announced, and its tokens accounted,
//! when it ends. A regenerate replaces the last answer instead of asking the prompt again.
//! Anonymous: nothing is stored; the context is the instructions, the client's own recent
//! messages if it sent any (bounded), and the prompt; a complete reply is cached and replayed to
//! the next anonymous viewer asking the same after the same turns.

pub mod group;
pub mod input;
pub mod reply;
pub mod resume;
pub mod stream;

use std::sync::Arc;
use std::time::Instant;

use axum::extract::{FromRequest, Request, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, MethodRouter};
use axum::Json;
use bytes::Bytes;
use serde::Serialize;

use crate::cache::keys;
use crate::cache::ANONYMOUS_TTL;
use crate::db::companions::{find_visible_companion, CompanionPrompt};
use crate::db::messages::{self, MessageRole, StoredMessage};
use crate::id::{CompanionId, MessageId, UserId};
use crate::llm::{ChatMessage, Role};
use crate::platform::app::App;
use crate::platform::auth::Viewer;
use crate::platform::background::Background;
use crate::platform::error::{ApiError, ApiResult};
use crate::platform::http::{optional_json_body, BodyLimit, JsonBody};
use crate::platform::input::{HistoryPage, Query};
use crate::platform::ratelimit::{self, Client, RouteLimit};
use input::{ChatBody, ChatRequest};
use reply::cached::{anonymous_conversation_key, cached_reply, replay_records};
use reply::journal::{self, Record};
use reply::keep::to_ms;
use reply::keep::{RowSpec, RowTarget};
use reply::producer::{viewer_key, MessageSpec, Producer, StreamTarget};
use reply::Keep;
use resume::{find_stream, stop_stream, StopBody};
use stream::{reply_response, StreamFormat};

/// The router of `api/chat`.
pub fn router(app: Arc<App>) -> MethodRouter {
    // Its own limit: `useChat` sends the whole conversation with every message.
    let limit = BodyLimit(app.config.chat.body_limit);
    // Any other method is answered by the route the path names, so each route's `Allow` (and
    // with it a CORS preflight's answer) lists its own methods.
    get(read)
        .post(write)
        .fallback(wrong_method)
        .layer(limit)
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

/// Which route of the function a path is (the original path arrives on Vercel):
/// `…/chat/:chatId`, `…/chat/:chatId/stream` or `…/chat/:chatId/stop`. A companion whose id is
/// `stream` is still reached at `/api/chat/stream`: the suffix counts only after an id.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Route {
    Chat,
    Stream,
    Stop,
}

fn route_of(uri: &Uri) -> Route {
    let segments: Vec<&str> = uri.path().split('/').filter(|s| !s.is_empty()).collect();
    match segments.as_slice() {
        [.., "chat", _, "stream"] => Route::Stream,
        [.., "chat", _, "stop"] => Route::Stop,
        _ => Route::Chat,
    }
}

fn wrong_route(route: Route) -> ApiError {
    let allow = match route {
        Route::Chat => "GET,HEAD,POST",
        Route::Stream => "GET,HEAD",
        Route::Stop => "POST",
    };
    ApiError::MethodNotAllowed {
        allow: allow.into(),
    }
}

async fn wrong_method(uri: Uri) -> ApiError {
    wrong_route(route_of(&uri))
}

/// `GET`: the history, or the reply in flight.
async fn read(
    State(app): State<Arc<App>>,
    viewer: Viewer,
    bg: Background,
    uri: Uri,
    headers: HeaderMap,
    client: Client,
) -> ApiResult<Response> {
    match route_of(&uri) {
        Route::Chat => history(app, viewer, uri).await,
        Route::Stream => resume_reply(app, viewer, bg, uri, headers, client).await,
        Route::Stop => Err(wrong_route(Route::Stop)),
    }
}

/// `POST`: a reply, or a stop.
async fn write(
    State(app): State<Arc<App>>,
    viewer: Viewer,
    bg: Background,
    uri: Uri,
    headers: HeaderMap,
    client: Client,
    request: Request,
) -> ApiResult<Response> {
    match route_of(&uri) {
        Route::Chat => {
            let JsonBody(body) = JsonBody::<ChatBody>::from_request(request, &()).await?;
            chat(app, viewer, bg, uri, headers, &client, body).await
        }
        Route::Stop => stop_reply(app, viewer, bg, uri, &client, request).await,
        Route::Stream => Err(wrong_route(Route::Stream)),
    }
}

/// Stream the companion's reply.
async fn chat(
    app: Arc<App>,
    viewer: Viewer,
    bg: Background,
    uri: Uri,
    headers: HeaderMap,
    client: &Client,
    body: ChatBody,
) -> ApiResult<Response> {
    let received = Instant::now();
    let query = Query::of(&uri);
    let request = body.into_request()?;
    // The path names the companion; `POST /api/chat` with `useChat({ id })` names it in the body.
    let chat_id = match (query.optional_id("chatId")?, &request.chat_id) {
        (Some(id), _) => id,
        (None, Some(id)) => CompanionId::parse("id", id)?,
        (None, None) => query.id("chatId")?,
    };
    let format = request.stream_format(&headers);
    let allowed = ratelimit::check(&app, chat_limit(&app), &viewer, client).await?;
    journal::drain_soon(&app, &bg);
    let target = chat_target(&chat_id, &viewer, client);
    let response = match viewer {
        Viewer::User { user_id } => {
            chat_signed_in(app, bg, received, target, chat_id, user_id, request, format).await?
        }
        Viewer::Anonymous => {
            chat_anonymous(app, bg, received, target, chat_id, request, format).await?
        }
    };
    Ok(ratelimit::apply(allowed, response))
}

#[allow(clippy::too_many_arguments)]
async fn chat_signed_in(
    app: Arc<App>,
    bg: Background,
    received: Instant,
    target: StreamTarget,
    chat_id: CompanionId,
    user_id: UserId,
    request: ChatRequest,
    format: StreamFormat,
) -> ApiResult<Response> {
    let db = app.db.get().await?;
    let companion = find_visible_companion(&db, &chat_id, Some(&user_id))
        .await?
        .ok_or(ApiError::NotFound)?;
    let limit = app.config.chat.context_messages;
    let recent = || messages::list_recent_messages(&db, &companion.id, &user_id, limit);
    // A regenerate replaces the last answer and asks the stored prompt again; only when nothing
    // is stored to answer is the client's prompt stored.
    let mut context = None;
    if request.regenerate {
        // Pipelined: the history is read after the delete ran.
        let (_, history) = tokio::try_join!(
            messages::delete_last_reply(&db, &companion.id, &user_id),
            recent()
        )?;
        if let Some(last) = history.last().filter(|m| m.role == "user") {
            context = Some((last.created_at_naive(), history));
        }
    }
    let (prompt_at, history) = match context {
        Some(found) => found,
        None => {
            // One round trip: both statements are pipelined on the connection, and the second
            // runs after the first committed, so the context includes the new prompt.
            let (prompt_row, history) = tokio::try_join!(
                messages::insert_message(
                    &db,
                    &companion.id,
                    &user_id,
                    MessageRole::User,
                    request.prompt.as_str(),
                    None
                ),
                recent(),
            )?;
            (prompt_row.created_at_naive(), history)
        }
    };
    drop(db);
    let reply = reply::start(&app.llm, context_of(&companion, &history)).await?;
    let row = RowSpec {
        target: RowTarget::Chat {
            companion_id: companion.id,
            user_id,
        },
        after_ms: to_ms(prompt_at),
        context_tokens: reply.context_tokens(),
    };
    Ok(start_stream(
        &app,
        &bg,
        received,
        &target,
        Keep::Row(row),
        reply,
        format,
    ))
}

async fn chat_anonymous(
    app: Arc<App>,
    bg: Background,
    received: Instant,
    target: StreamTarget,
    chat_id: CompanionId,
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
    let key = anonymous_conversation_key(companion.id.as_str(), &earlier, &request.prompt);
    // Asked to regenerate, the client wants another answer than the one it has.
    if !request.regenerate {
        if let Some(text) = cached_reply(&app, &key).await {
            let message = Record::Message {
                id: MessageId::generate(),
                companion_id: None,
                name: None,
                row: None,
            };
            let records = futures_util::stream::iter([replay_records(message, &text)]);
            return Ok(with_cache_status(reply_response(format, records), "hit"));
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
    let keep = Keep::CachedReply { key };
    let response = start_stream(&app, &bg, received, &target, keep, reply, format);
    Ok(with_cache_status(response, "miss"))
}

/// Hands the reply to its producer, which runs it to its end as background work, and answers
/// with the stream it produces (its first text already in it).
fn start_stream(
    app: &Arc<App>,
    bg: &Background,
    received: Instant,
    target: &StreamTarget,
    keep: Keep,
    mut reply: reply::Reply,
    format: StreamFormat,
) -> Response {
    // A chat's stream is its one message: the stream's id is the reply's, the stored row's.
    let id = MessageId::generate();
    let mut producer = Producer::open(app, bg, target, id.as_str(), received);
    let message = MessageSpec {
        id,
        companion_id: None,
        name: None,
        keep,
    };
    producer.begin(message, &mut reply);
    let records = producer.reader();
    bg.wait_until(async move {
        producer.run(reply).await;
        producer.finish().await;
    });
    reply_response(format, records)
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
    next_cursor: Option<MessageId>,
}

/// `GET`: the viewer's own messages with the companion, newest page first, oldest first within
/// a page.
async fn history(app: Arc<App>, viewer: Viewer, uri: Uri) -> ApiResult<Response> {
    let query = Query::of(&uri);
    let chat_id = query.id("chatId")?;
    let page = HistoryPage::parse(&query)?;
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
        page.before.as_ref(),
        page.limit,
    )
    .await?
    .ok_or_else(|| ApiError::bad_parameter("before", "is not a message of this conversation"))?;
    Ok(private_json(HistoryResponse {
        next_cursor: found.next_cursor(|m| &m.id),
        messages: found.items,
    }))
}

/// Whether the viewer may see the chat at all: the companion is public or the viewer's own
/// (404 otherwise, as the history and the chat answer).
async fn check_access(
    app: &Arc<App>,
    bg: &Background,
    viewer: &Viewer,
    chat_id: &CompanionId,
) -> ApiResult<()> {
    match viewer {
        Viewer::User { user_id } => {
            let db = app.db.get().await?;
            find_visible_companion(&db, chat_id, Some(user_id))
                .await?
                .ok_or(ApiError::NotFound)?;
        }
        Viewer::Anonymous => {
            find_public_companion(app, bg, chat_id).await?;
        }
    }
    Ok(())
}

fn chat_target(chat_id: &CompanionId, viewer: &Viewer, client: &Client) -> StreamTarget {
    StreamTarget {
        scope: "chat",
        chat_id: chat_id.as_str().to_owned(),
        viewer: viewer_key(viewer, client),
    }
}

/// `GET …/stream`: the viewer's reply in flight, replayed from its start and followed to its end
/// (on any instance); 204 when nothing is in flight.
async fn resume_reply(
    app: Arc<App>,
    viewer: Viewer,
    bg: Background,
    uri: Uri,
    headers: HeaderMap,
    client: Client,
) -> ApiResult<Response> {
    let chat_id = Query::of(&uri).id("chatId")?;
    let target = chat_target(&chat_id, &viewer, &client);
    let (access, stream) = tokio::join!(
        check_access(&app, &bg, &viewer, &chat_id),
        find_stream(&app, &target)
    );
    match (access, stream) {
        // A viewer who may not see the chat learns nothing more than the history would say.
        (Err(ApiError::NotFound), _) => Err(ApiError::NotFound),
        // The database can't say, but the stream is the viewer's own (it is under their key).
        (Err(e), None) => Err(e),
        (_, None) => Ok(no_content()),
        (_, Some(records)) => {
            let format = StreamFormat::negotiate(&headers, StreamFormat::UiMessage);
            Ok(reply_response(format, records))
        }
    }
}

/// `POST …/stop`: stops the viewer's reply in flight, keeping what it said (stored as stopped);
/// 204 when nothing is in flight.
async fn stop_reply(
    app: Arc<App>,
    viewer: Viewer,
    bg: Background,
    uri: Uri,
    client: &Client,
    request: Request,
) -> ApiResult<Response> {
    let chat_id = Query::of(&uri).id("chatId")?;
    let body: StopBody = optional_json_body(request).await?.unwrap_or_default();
    let expected = body.expected()?;
    match check_access(&app, &bg, &viewer, &chat_id).await {
        Err(ApiError::NotFound) => return Err(ApiError::NotFound),
        // Stopping needs no database: the stream is found under the viewer's own key.
        Err(e) => tracing::warn!(error = %e, "stop: access check failed; stopping anyway"),
        Ok(()) => {}
    }
    let target = chat_target(&chat_id, &viewer, client);
    Ok(stopped_response(
        stop_stream(&app, &target, expected.as_ref()).await,
    ))
}

/// 200 with what was stopped; 202 when its producer didn't end it within the wait; 204 when
/// nothing was in flight.
pub fn stopped_response(stopped: Option<resume::Stopped>) -> Response {
    match stopped {
        None => no_content(),
        Some(s) => {
            let status = if s.status.is_some() {
                StatusCode::OK
            } else {
                StatusCode::ACCEPTED
            };
            let mut response = private_json(s);
            *response.status_mut() = status;
            response
        }
    }
}

/// 204, for no one else's eyes.
pub fn no_content() -> Response {
    let mut response = StatusCode::NO_CONTENT.into_response();
    response.headers_mut().insert(
        header::CACHE_CONTROL,
        HeaderValue::from_static("private, no-store"),
    );
    response
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
    id: &CompanionId,
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
