//! `api/group-chat`: `POST /api/group-chat/:groupId/chat` streams the replies of the responding
//! companions as SSE events ([`events`]); `GET /api/group-chat/:groupId/messages` pages the
//! history.
//!
//! Who may: the group's creator; anyone for demo groups (created by `SYSTEM_USER_ID`), which
//! take the fast path: one responder chosen without any model call, nothing stored, the reply
//! cached for everyone. Everyone else gets 404 (a group's existence is not revealed).
//!
//! Responders ([`responders`]): the members named in the prompt, else the ones who spoke least
//! recently; at most `GROUP_MAX_RESPONDERS`, one after the other in one stream, each reply
//! through the same pipeline as one-on-one chat ([`crate::chat::reply`]).

pub mod events;
pub mod responders;

use std::sync::Arc;

use axum::extract::State;
use axum::http::Uri;
use axum::response::Response;
use axum::routing::get;
use axum::{Extension, Router};
use serde::Serialize;

use crate::chat::input::PromptBody;
use crate::chat::reply::cached::{cached_reply, demo_reply_key};
use crate::chat::reply::{self, generate, Keep, Stored};
use crate::chat::{chat_limit, private_json};
use crate::db::group_chats::{self, GroupChat, StoredGroupMessage};
use crate::db::PooledClient;
use crate::platform::app::App;
use crate::platform::auth::Viewer;
use crate::platform::background::Background;
use crate::platform::error::{ApiError, ApiResult};
use crate::platform::http::{BodyLimit, JsonBody};
use crate::platform::input::{HistoryPage, Id, Prompt, Query};
use crate::platform::ratelimit::{self, Client};
use crate::platform::routing::any_path;
use events::{done, send, sse_response, GroupEvent};
use responders::{context_for, demo_context_for, pick_demo_responder, pick_responders};

pub fn router(app: Arc<App>) -> Router {
    let limit = BodyLimit(app.config.body_limit);
    // Any other method is answered by the route the path names, so each route's `Allow` (and
    // with it a CORS preflight's answer) lists its own methods, not the function's.
    any_path(
        "group-chat",
        get(messages).post(chat).fallback(wrong_method),
    )
    .layer(Extension(limit))
    .with_state(app)
}

/// Which of the two routes a path is (the original path arrives on Vercel).
#[derive(Debug, PartialEq, Eq)]
enum Route {
    Chat,
    Messages,
}

fn route_of(uri: &Uri) -> Option<Route> {
    let path = uri.path().trim_end_matches('/');
    if path.ends_with("/chat") {
        Some(Route::Chat)
    } else if path.ends_with("/messages") {
        Some(Route::Messages)
    } else {
        None
    }
}

fn wrong_route(uri: &Uri) -> ApiError {
    match route_of(uri) {
        Some(Route::Chat) => ApiError::MethodNotAllowed {
            allow: "POST".into(),
        },
        Some(Route::Messages) => ApiError::MethodNotAllowed {
            allow: "GET,HEAD".into(),
        },
        None => ApiError::RouteNotFound,
    }
}

async fn wrong_method(uri: Uri) -> ApiError {
    wrong_route(&uri)
}

/// How the viewer may use the group.
#[derive(Debug, PartialEq, Eq)]
enum Access {
    Creator { user_id: String },
    Demo,
}

fn access(group: &GroupChat, viewer: &Viewer, system_user_id: &str) -> ApiResult<Access> {
    match viewer.user_id() {
        Some(u) if u == group.creator_id => Ok(Access::Creator {
            user_id: u.to_owned(),
        }),
        _ if group.creator_id == system_user_id => Ok(Access::Demo),
        _ => Err(ApiError::NotFound),
    }
}

async fn chat(
    State(app): State<Arc<App>>,
    viewer: Viewer,
    bg: Background,
    uri: Uri,
    client: Client,
    body: Result<JsonBody<PromptBody>, ApiError>,
) -> ApiResult<Response> {
    if route_of(&uri) != Some(Route::Chat) {
        return Err(wrong_route(&uri));
    }
    let group_id = Query::of(&uri).id("groupId")?;
    let JsonBody(body) = body?;
    let prompt = body.into_prompt()?;
    let allowed = ratelimit::check(&app, chat_limit(&app), &viewer, &client).await?;
    let db = app.db.get().await?;
    let group = find_group(&db, &group_id).await?;
    let response = match access(&group, &viewer, &app.config.system_user_id)? {
        Access::Creator { user_id } => chat_creator(app, bg, db, group, user_id, prompt).await?,
        Access::Demo => {
            drop(db);
            chat_demo(app, bg, group, prompt).await?
        }
    };
    Ok(ratelimit::apply(allowed, response))
}

async fn find_group(db: &PooledClient, id: &Id) -> ApiResult<GroupChat> {
    group_chats::find_group_chat(db, id.as_str())
        .await?
        .ok_or(ApiError::NotFound)
}

/// The creator's group: the prompt is stored, then each responder's reply streams in turn and
/// is stored, so the next responder hears it.
async fn chat_creator(
    app: Arc<App>,
    bg: Background,
    db: PooledClient,
    group: GroupChat,
    user_id: String,
    prompt: Prompt,
) -> ApiResult<Response> {
    // Only members the creator may see answer, and only what they may see is context: another
    // user's private companion in the group is silent and its words are never sent anywhere.
    let viewer = Some(user_id.as_str());
    let (members, prompt_row, mut transcript) = tokio::try_join!(
        group_chats::list_members_by_last_spoken(&db, &group.id, viewer),
        group_chats::insert_group_message(&db, &group.id, &user_id, false, prompt.as_str(), None),
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
        return Ok(sse_response(futures_util::stream::iter([done()])));
    };
    // The first reply is started before answering, so a model that fails at once is a 502/504.
    let first_reply =
        reply::start(&app.llm, context_for(first, &group, &members, &transcript)).await?;
    let events = generate(move |tx| async move {
        let mut after = prompt_row.created_at_naive();
        let mut first_reply = Some(first_reply);
        for member in &responders {
            let next = match first_reply.take() {
                Some(r) => Ok(r),
                None => {
                    let context = context_for(member, &group, &members, &transcript);
                    reply::start(&app.llm, context).await
                }
            };
            let reply = match next {
                Ok(r) => r,
                Err(e) => {
                    send_error(&tx, &e.to_string()).await;
                    break;
                }
            };
            let id = member.companion_id.as_str();
            send(
                &tx,
                GroupEvent::MessageStart {
                    companion_id: id,
                    name: &member.name,
                },
            )
            .await;
            let keep = Keep::GroupMessage {
                group_id: group.id.clone(),
                companion_id: member.companion_id.clone(),
                user_id: user_id.clone(),
                after,
            };
            let ended = reply
                .forward(&app, &bg, keep, &tx, |delta| {
                    GroupEvent::TextDelta {
                        companion_id: id,
                        delta: &delta,
                    }
                    .encode()
                })
                .await;
            if let Some(Stored::GroupMessage(row)) = ended.stored {
                after = row.created_at_naive();
                transcript.push(row);
            }
            send(&tx, GroupEvent::MessageEnd { companion_id: id }).await;
            if let Some(e) = ended.error {
                send_error(&tx, &e.to_string()).await;
                break;
            }
        }
        tx.send(done()).await;
    });
    Ok(sse_response(events))
}

async fn send_error(tx: &reply::Sender<bytes::Bytes>, message: &str) {
    tracing::warn!(message, "group reply failed");
    send(tx, GroupEvent::Error { message }).await;
}

/// Demo groups: one responder among the public members, nothing stored, the reply cached for
/// everyone (so never a private companion's, not even the viewer's own).
async fn chat_demo(
    app: Arc<App>,
    bg: Background,
    group: GroupChat,
    prompt: Prompt,
) -> ApiResult<Response> {
    let members = {
        let db = app.db.get().await?;
        group_chats::list_members_by_last_spoken(&db, &group.id, None).await?
    };
    let Some(member) = pick_demo_responder(&members, &prompt) else {
        return Ok(sse_response(futures_util::stream::iter([done()])));
    };
    let key = demo_reply_key(&group.id, &member.companion_id, &prompt);
    if let Some(text) = cached_reply(&app, &key).await {
        let id = member.companion_id.as_str();
        let events = [
            GroupEvent::MessageStart {
                companion_id: id,
                name: &member.name,
            }
            .encode(),
            GroupEvent::TextDelta {
                companion_id: id,
                delta: &text,
            }
            .encode(),
            GroupEvent::MessageEnd { companion_id: id }.encode(),
            done(),
        ];
        return Ok(sse_response(futures_util::stream::iter(events)));
    }
    let reply = reply::start(&app.llm, demo_context_for(&member, &group, &prompt)).await?;
    let events = generate(move |tx| async move {
        let id = member.companion_id.as_str();
        send(
            &tx,
            GroupEvent::MessageStart {
                companion_id: id,
                name: &member.name,
            },
        )
        .await;
        let ended = reply
            .forward(&app, &bg, Keep::CachedReply { key }, &tx, |delta| {
                GroupEvent::TextDelta {
                    companion_id: id,
                    delta: &delta,
                }
                .encode()
            })
            .await;
        send(&tx, GroupEvent::MessageEnd { companion_id: id }).await;
        if let Some(e) = ended.error {
            send_error(&tx, &e.to_string()).await;
        }
        tx.send(done()).await;
    });
    Ok(sse_response(events))
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct MessagesPage {
    messages: Vec<StoredGroupMessage>,
    next_cursor: Option<String>,
}

async fn messages(State(app): State<Arc<App>>, viewer: Viewer, uri: Uri) -> ApiResult<Response> {
    if route_of(&uri) != Some(Route::Messages) {
        return Err(wrong_route(&uri));
    }
    let query = Query::of(&uri);
    let group_id = query.id("groupId")?;
    let page = HistoryPage::parse(&query)?;
    let db = app.db.get().await?;
    let group = find_group(&db, &group_id).await?;
    access(&group, &viewer, &app.config.system_user_id)?;
    let found = group_chats::list_group_messages_page(
        &db,
        &group.id,
        viewer.user_id(),
        page.before.as_ref().map(Id::as_str),
        page.limit,
    )
    .await?
    .ok_or_else(|| ApiError::bad_parameter("before", "is not a message of this group"))?;
    Ok(private_json(MessagesPage {
        next_cursor: found.next_cursor(|m| &m.id),
        messages: found.items,
    }))
}
