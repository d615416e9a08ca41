//! `api/group-chat`: `POST /api/group-chat/:groupId/chat` streams the replies of the responding
//! companions as SSE events ([`events`]); `GET /api/group-chat/:groupId/messages` pages the
//! history; `GET …/stream` resumes the viewer's replies in flight and `POST …/stop` stops them
//! ([`crate::chat::resume`]).
//!
//! Who may: the group's creator; anyone for demo groups (created by `SYSTEM_USER_ID`), which
//! take the fast path: one responder chosen without any model call, nothing stored, the reply
//! cached for everyone. Everyone else gets 404 (a group's existence is not revealed).
//!
//! Responders ([`responders`]): the members named in the prompt, else the ones who spoke least
//! recently; at most `GROUP_MAX_RESPONDERS`, one after the other in one stream, each reply
//! through the same pipeline as one-on-one chat ([`crate::chat::reply`]): run to its end as
//! background work, journaled for resume, stored under the id its `message-start` announced.
//! A stop ends the responder speaking (kept, as stopped) and the ones after it.

pub mod events;
pub mod responders;

use std::sync::Arc;
use std::time::Instant;

use axum::extract::{FromRequest, Request, State};
use axum::http::Uri;
use axum::response::Response;
use axum::routing::{get, MethodRouter};
use serde::Serialize;

use crate::chat::input::PromptBody;
use crate::chat::reply::cached::{cached_reply, demo_reply_key, replay_records};
use crate::chat::reply::journal::{self, Record};
use crate::chat::reply::keep::to_ms;
use crate::chat::reply::keep::{RowSpec, RowTarget};
use crate::chat::reply::producer::{viewer_key, MessageSpec, Producer, StreamTarget};
use crate::chat::reply::{self, Keep};
use crate::chat::resume::{find_stream, stop_stream, StopBody};
use crate::chat::{chat_limit, no_content, private_json, stopped_response};
use crate::db::group_chats::{self, GroupChat, GroupMember, GroupSender, StoredGroupMessage};
use crate::db::PooledClient;
use crate::id::{GroupId, MessageId, UserId};
use crate::platform::app::App;
use crate::platform::auth::Viewer;
use crate::platform::background::Background;
use crate::platform::error::{ApiError, ApiResult};
use crate::platform::http::{optional_json_body, BodyLimit, JsonBody};
use crate::platform::input::{HistoryPage, Prompt, Query};
use crate::platform::ratelimit::{self, Client};
use events::group_stream;
use responders::{context_for, demo_context_for, pick_demo_responder, pick_responders};

pub fn router(app: Arc<App>) -> MethodRouter {
    let limit = BodyLimit(app.config.body_limit);
    // Any other method is answered by the route the path names, so each route's `Allow` (and
    // with it a CORS preflight's answer) lists its own methods, not the function's.
    get(read)
        .post(write)
        .fallback(wrong_method)
        .layer(limit)
        .with_state(app)
}

/// Which of the routes a path is (the original path arrives on Vercel).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Route {
    Chat,
    Messages,
    Stream,
    Stop,
}

fn route_of(uri: &Uri) -> Option<Route> {
    let path = uri.path().trim_end_matches('/');
    if path.ends_with("/chat") {
        Some(Route::Chat)
    } else if path.ends_with("/messages") {
        Some(Route::Messages)
    } else if path.ends_with("/stream") {
        Some(Route::Stream)
    } else if path.ends_with("/stop") {
        Some(Route::Stop)
    } else {
        None
    }
}

fn wrong_route(uri: &Uri) -> ApiError {
    let allow = match route_of(uri) {
        Some(Route::Chat | Route::Stop) => "POST",
        Some(Route::Messages | Route::Stream) => "GET,HEAD",
        None => return ApiError::RouteNotFound,
    };
    ApiError::MethodNotAllowed {
        allow: allow.into(),
    }
}

async fn wrong_method(uri: Uri) -> ApiError {
    wrong_route(&uri)
}

/// How the viewer may use the group.
#[derive(Debug, PartialEq, Eq)]
enum Access {
    Creator { user_id: UserId },
    Demo,
}

fn access(group: &GroupChat, viewer: &Viewer, system_user_id: &UserId) -> ApiResult<Access> {
    match viewer.user_id() {
        Some(u) if *u == group.creator_id => Ok(Access::Creator { user_id: u.clone() }),
        _ if group.creator_id == *system_user_id => Ok(Access::Demo),
        _ => Err(ApiError::NotFound),
    }
}

/// `GET`: the history, or the replies in flight.
async fn read(
    State(app): State<Arc<App>>,
    viewer: Viewer,
    uri: Uri,
    client: Client,
) -> ApiResult<Response> {
    match route_of(&uri) {
        Some(Route::Messages) => messages(app, viewer, uri).await,
        Some(Route::Stream) => resume_replies(app, viewer, uri, client).await,
        _ => Err(wrong_route(&uri)),
    }
}

/// `POST`: a prompt, or a stop.
async fn write(
    State(app): State<Arc<App>>,
    viewer: Viewer,
    bg: Background,
    uri: Uri,
    client: Client,
    request: Request,
) -> ApiResult<Response> {
    match route_of(&uri) {
        Some(Route::Chat) => chat(app, viewer, bg, uri, &client, request).await,
        Some(Route::Stop) => stop_replies(app, viewer, uri, &client, request).await,
        _ => Err(wrong_route(&uri)),
    }
}

async fn chat(
    app: Arc<App>,
    viewer: Viewer,
    bg: Background,
    uri: Uri,
    client: &Client,
    request: Request,
) -> ApiResult<Response> {
    let received = Instant::now();
    let group_id = Query::of(&uri).id("groupId")?;
    let JsonBody(body) = JsonBody::<PromptBody>::from_request(request, &()).await?;
    let prompt = body.into_prompt()?;
    let allowed = ratelimit::check(&app, chat_limit(&app), &viewer, client).await?;
    journal::drain_soon(&app, &bg);
    let target = group_target(&group_id, &viewer, client);
    let db = app.db.get().await?;
    let group = find_group(&db, &group_id).await?;
    let response = match access(&group, &viewer, &app.system_user_id)? {
        Access::Creator { user_id } => {
            chat_creator(app, bg, received, target, db, group, user_id, prompt).await?
        }
        Access::Demo => {
            drop(db);
            chat_demo(app, bg, received, target, group, prompt).await?
        }
    };
    Ok(ratelimit::apply(allowed, response))
}

async fn find_group(db: &PooledClient, id: &GroupId) -> ApiResult<GroupChat> {
    group_chats::find_group_chat(db, id)
        .await?
        .ok_or(ApiError::NotFound)
}

fn group_target(group_id: &GroupId, viewer: &Viewer, client: &Client) -> StreamTarget {
    StreamTarget {
        scope: "group",
        chat_id: group_id.as_str().to_owned(),
        viewer: viewer_key(viewer, client),
    }
}

/// A responder's message, kept in the creator's group.
fn creator_message(
    member: &GroupMember,
    group: &GroupChat,
    user_id: &UserId,
    after: chrono::NaiveDateTime,
    reply: &reply::Reply,
) -> MessageSpec {
    MessageSpec {
        id: MessageId::generate(),
        companion_id: Some(member.companion_id.clone()),
        name: Some(member.name.clone()),
        keep: Keep::Row(RowSpec {
            target: RowTarget::Group {
                group_id: group.id.clone(),
                companion_id: member.companion_id.clone(),
                user_id: user_id.clone(),
            },
            after_ms: to_ms(after),
            context_tokens: reply.context_tokens(),
        }),
    }
}

/// The creator's group: the prompt is stored, then each responder's reply streams in turn and
/// is stored, so the next responder hears it.
#[allow(clippy::too_many_arguments)]
async fn chat_creator(
    app: Arc<App>,
    bg: Background,
    received: Instant,
    target: StreamTarget,
    db: PooledClient,
    group: GroupChat,
    user_id: UserId,
    prompt: Prompt,
) -> ApiResult<Response> {
    // Only members the creator may see answer, and only what they may see is context: another
    // user's private companion in the group is silent and its words are never sent anywhere.
    let viewer = Some(&user_id);
    let (members, prompt_row, mut transcript) = tokio::try_join!(
        group_chats::list_members_by_last_spoken(&db, &group.id, viewer),
        group_chats::insert_group_message(
            &db,
            &group.id,
            GroupSender::User(&user_id),
            prompt.as_str(),
            None
        ),
        group_chats::list_recent_group_messages(
            &db,
            &group.id,
            viewer,
            app.config.chat.context_messages
        ),
    )?;
    drop(db);
    let responders = pick_responders(
        &members,
        prompt.as_str(),
        app.config.chat.group_max_responders,
    );
    let Some(first) = responders.first() else {
        return Ok(group_stream(futures_util::stream::iter([vec![
            Record::Done,
        ]])));
    };
    // The first reply is started before answering, so a model that fails at once is a 502/504.
    let mut first_reply =
        reply::start(&app.llm, context_for(first, &group, &members, &transcript)).await?;
    let stream_id = uuid::Uuid::new_v4().to_string();
    let mut producer = Producer::open(&app, &bg, &target, &stream_id, received);
    let mut after = prompt_row.created_at_naive();
    producer.begin(
        creator_message(first, &group, &user_id, after, &first_reply),
        &mut first_reply,
    );
    let records = producer.reader();
    bg.wait_until(async move {
        let mut next = Some(first_reply);
        for member in &responders {
            let reply = match next.take() {
                Some(r) => r,
                None => {
                    let context = context_for(member, &group, &members, &transcript);
                    match producer.ask(&app.llm, context).await {
                        // Stopped while the model was thinking: nothing of this one was said.
                        None => break,
                        Some(Ok(mut r)) => {
                            producer.begin(
                                creator_message(member, &group, &user_id, after, &r),
                                &mut r,
                            );
                            r
                        }
                        Some(Err(e)) => {
                            tracing::warn!(error = %e, "group reply failed to start");
                            producer.fail(e.to_string());
                            break;
                        }
                    }
                }
            };
            let ended = producer.run(reply).await;
            // The next responder hears this one, stored or not yet.
            after = ended.at.max(after + chrono::Duration::milliseconds(1));
            if !ended.text.is_empty() {
                transcript.push(StoredGroupMessage {
                    id: MessageId::issued(""),
                    content: ended.text.clone(),
                    is_bot: true,
                    sender_id: member.companion_id.to_string(),
                    sender_name: Some(member.name.clone()),
                    available: true,
                    created_at: after.and_utc(),
                    status: Some(ended.status.as_str().to_owned()),
                });
            }
            if !ended.finished() {
                break;
            }
        }
        producer.finish().await;
    });
    Ok(group_stream(records))
}

/// Demo groups: one responder among the public members, nothing stored, the reply cached for
/// everyone (so never a private companion's, not even the viewer's own).
async fn chat_demo(
    app: Arc<App>,
    bg: Background,
    received: Instant,
    target: StreamTarget,
    group: GroupChat,
    prompt: Prompt,
) -> ApiResult<Response> {
    let members = {
        let db = app.db.get().await?;
        group_chats::list_members_by_last_spoken(&db, &group.id, None).await?
    };
    let Some(member) = pick_demo_responder(&members, &prompt) else {
        return Ok(group_stream(futures_util::stream::iter([vec![
            Record::Done,
        ]])));
    };
    let key = demo_reply_key(&group.id, &member.companion_id, &prompt);
    let message = |id: MessageId| MessageSpec {
        id,
        companion_id: Some(member.companion_id.clone()),
        name: Some(member.name.clone()),
        keep: Keep::CachedReply { key: key.clone() },
    };
    if let Some(text) = cached_reply(&app, &key).await {
        let spec = message(MessageId::generate());
        let record = Record::Message {
            id: spec.id,
            companion_id: spec.companion_id,
            name: spec.name,
            row: None,
        };
        let records = futures_util::stream::iter([replay_records(record, &text)]);
        return Ok(group_stream(records));
    }
    let mut reply = reply::start(&app.llm, demo_context_for(&member, &group, &prompt)).await?;
    let stream_id = uuid::Uuid::new_v4().to_string();
    let mut producer = Producer::open(&app, &bg, &target, &stream_id, received);
    producer.begin(message(MessageId::generate()), &mut reply);
    let records = producer.reader();
    bg.wait_until(async move {
        producer.run(reply).await;
        producer.finish().await;
    });
    Ok(group_stream(records))
}

/// The group, if the viewer may use it (404 otherwise).
async fn check_access(app: &App, viewer: &Viewer, group_id: &GroupId) -> ApiResult<()> {
    let db = app.db.get().await?;
    let group = find_group(&db, group_id).await?;
    access(&group, viewer, &app.system_user_id).map(drop)
}

/// `GET …/stream`: the viewer's replies in flight in the group, replayed from their start and
/// followed to their end; 204 when nothing is in flight.
async fn resume_replies(
    app: Arc<App>,
    viewer: Viewer,
    uri: Uri,
    client: Client,
) -> ApiResult<Response> {
    let group_id = Query::of(&uri).id("groupId")?;
    let target = group_target(&group_id, &viewer, &client);
    let (checked, stream) = tokio::join!(
        check_access(&app, &viewer, &group_id),
        find_stream(&app, &target)
    );
    match (checked, stream) {
        (Err(ApiError::NotFound), _) => Err(ApiError::NotFound),
        (Err(e), None) => Err(e),
        (_, None) => Ok(no_content()),
        (_, Some(records)) => Ok(group_stream(records)),
    }
}

/// `POST …/stop`: stops the viewer's replies in flight in the group; 204 when none.
async fn stop_replies(
    app: Arc<App>,
    viewer: Viewer,
    uri: Uri,
    client: &Client,
    request: Request,
) -> ApiResult<Response> {
    let group_id = Query::of(&uri).id("groupId")?;
    let body: StopBody = optional_json_body(request).await?.unwrap_or_default();
    let expected = body.expected()?;
    match check_access(&app, &viewer, &group_id).await {
        Err(ApiError::NotFound) => return Err(ApiError::NotFound),
        Err(e) => tracing::warn!(error = %e, "stop: access check failed; stopping anyway"),
        Ok(()) => {}
    }
    let target = group_target(&group_id, &viewer, client);
    Ok(stopped_response(
        stop_stream(&app, &target, expected.as_ref()).await,
    ))
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct MessagesPage {
    messages: Vec<StoredGroupMessage>,
    next_cursor: Option<MessageId>,
}

async fn messages(app: Arc<App>, viewer: Viewer, uri: Uri) -> ApiResult<Response> {
    let query = Query::of(&uri);
    let group_id = query.id("groupId")?;
    let page = HistoryPage::parse(&query)?;
    let db = app.db.get().await?;
    let group = find_group(&db, &group_id).await?;
    access(&group, &viewer, &app.system_user_id)?;
    let found = group_chats::list_group_messages_page(
        &db,
        &group.id,
        viewer.user_id(),
        page.before.as_ref(),
        page.limit,
    )
    .await?
    .ok_or_else(|| ApiError::bad_parameter("before", "is not a message of this group"))?;
    Ok(private_json(MessagesPage {
        next_cursor: found.next_cursor(|m| &m.id),
        messages: found.items,
    }))
}
