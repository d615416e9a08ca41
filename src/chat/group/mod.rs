//! `api/group-chat`: `POST /api/group-chat/:groupId/chat` streams the replies of the responding
//! companions as SSE events; `GET /api/group-chat/:groupId/messages` pages the history
//! (DESIGN.md §4, Group chat).
//!
//! Who may: the group's creator; anyone for demo groups (created by `SYSTEM_USER_ID`), which
//! take the fast path: one responder chosen without any model call, nothing stored. Everyone
//! else gets 404 (a group's existence is not revealed).
//!
//! Responders: the members named in the prompt (case-insensitive), else the ones who spoke
//! least recently; at most `GROUP_MAX_RESPONDERS`, one after the other in one stream.

use std::sync::Arc;

use axum::extract::State;
use axum::http::{HeaderMap, Uri};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Extension, Router};
use bytes::Bytes;
use serde::Serialize;

use crate::chat::input::{self, PromptBody};
use crate::chat::reply::{self, generate, model_error_response, start_reply, ReplyGuard, Sender};
use crate::chat::stream::{sse_event, streaming_response, SSE_DONE};
use crate::chat::{private_json, ratelimit_guard};
use crate::db::burned_tokens;
use crate::db::group_chats::{self, GroupChat, GroupMember, StoredGroupMessage};
use crate::llm::{ChatMessage, Role};
use crate::platform::app::App;
use crate::platform::auth::Viewer;
use crate::platform::background::Background;
use crate::platform::error::{ApiError, ApiResult};
use crate::platform::http::{query_params, BodyLimit, JsonBody};

pub fn router(app: Arc<App>) -> Router {
    let limit = BodyLimit(app.config.body_limit);
    crate::platform::routing::any_path(get(messages).post(chat))
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

/// The members who answer `prompt`: those it names, else the least recently spoken.
pub fn pick_responders(members: &[GroupMember], prompt: &str, max: usize) -> Vec<GroupMember> {
    let lower = prompt.to_lowercase();
    let mut named: Vec<(usize, &GroupMember)> = members
        .iter()
        .filter_map(|m| {
            let name = m.name.trim().to_lowercase();
            (!name.is_empty())
                .then(|| lower.find(&name))
                .flatten()
                .map(|at| (at, m))
        })
        .collect();
    named.sort_by_key(|(at, _)| *at);
    if !named.is_empty() {
        return named
            .into_iter()
            .take(max)
            .map(|(_, m)| m.clone())
            .collect();
    }
    members.iter().take(max).cloned().collect()
}

/// The demo fast path's one responder: the first one named, else one chosen by the prompt
/// (stable, so its cached reply is found again).
fn pick_demo_responder(members: &[GroupMember], prompt: &str) -> Option<GroupMember> {
    if let Some(m) = pick_responders(members, prompt, 1)
        .into_iter()
        .next()
        .filter(|m| {
            prompt
                .to_lowercase()
                .contains(&m.name.trim().to_lowercase())
        })
    {
        return Some(m);
    }
    let mut sorted: Vec<&GroupMember> = members.iter().collect();
    sorted.sort_by(|a, b| a.companion_id.cmp(&b.companion_id));
    let hash = input::normalize_prompt(prompt)
        .bytes()
        .fold(0u64, |h, b| h.wrapping_mul(31).wrapping_add(b as u64));
    let n = sorted.len() as u64;
    (n > 0).then(|| sorted[(hash % n) as usize].clone())
}

#[derive(Serialize)]
#[serde(tag = "type", rename_all = "kebab-case")]
enum GroupEvent<'a> {
    MessageStart {
        #[serde(rename = "companionId")]
        companion_id: &'a str,
        name: &'a str,
    },
    TextDelta {
        #[serde(rename = "companionId")]
        companion_id: &'a str,
        delta: &'a str,
    },
    MessageEnd {
        #[serde(rename = "companionId")]
        companion_id: &'a str,
    },
    Error {
        message: &'a str,
    },
}

fn sse_response<S>(events: S) -> Response
where
    S: futures_util::Stream<Item = Bytes> + Send + 'static,
{
    use futures_util::StreamExt;
    streaming_response(
        axum::body::Body::from_stream(events.map(Ok::<_, std::convert::Infallible>)),
        "text/event-stream",
        false,
    )
}

/// The model's context for one responder: who it is, then the group's conversation.
fn context_for(
    member: &GroupMember,
    group: &GroupChat,
    members: &[GroupMember],
    transcript: &[StoredGroupMessage],
) -> Vec<ChatMessage> {
    let others: Vec<&str> = members
        .iter()
        .filter(|m| m.companion_id != member.companion_id)
        .map(|m| m.name.as_str())
        .collect();
    let mut context = vec![ChatMessage::new(
        Role::System,
        format!(
            "{}\n\nYou are {} in the group chat \"{}\" with the user and {}. Reply as {} only.",
            member.instructions,
            member.name,
            group.name,
            if others.is_empty() {
                "nobody else".to_owned()
            } else {
                others.join(", ")
            },
            member.name
        ),
    )];
    for m in transcript {
        if m.is_bot && m.sender_id == member.companion_id {
            context.push(ChatMessage::new(Role::Assistant, m.content.clone()));
        } else {
            let who = m.sender_name.as_deref().unwrap_or("User");
            context.push(ChatMessage::new(
                Role::User,
                format!("{who}: {}", m.content),
            ));
        }
    }
    context
}

async fn chat(
    State(app): State<Arc<App>>,
    viewer: Viewer,
    bg: Background,
    uri: Uri,
    headers: HeaderMap,
    body: Result<JsonBody<PromptBody>, ApiError>,
) -> ApiResult<Response> {
    if route_of(&uri) != Some(Route::Chat) {
        return Err(wrong_route(&uri));
    }
    let group_id = input::id_param(&query_params(&uri), "groupId")?;
    let JsonBody(body) = body?;
    input::validate_prompt(&body.prompt)?;
    let limited = match ratelimit_guard(&app, &viewer, &headers).await {
        Ok(l) => l,
        Err(too_many) => return Ok(too_many),
    };
    let db = app.db.get().await?;
    let group = group_chats::find_group_chat(&db, &group_id)
        .await?
        .ok_or(ApiError::NotFound)?;
    let access = access(&group, &viewer, &app.config.system_user_id)?;
    let response = match access {
        Access::Creator { user_id } => {
            chat_creator(app.clone(), bg, db, group, user_id, body.prompt).await?
        }
        Access::Demo => {
            drop(db);
            chat_demo(app.clone(), bg, group, body.prompt).await?
        }
    };
    Ok(limited.apply(response))
}

async fn chat_creator(
    app: Arc<App>,
    bg: Background,
    db: crate::db::PooledClient,
    group: GroupChat,
    user_id: String,
    prompt: String,
) -> ApiResult<Response> {
    let (members, prompt_row, transcript) = tokio::try_join!(
        group_chats::list_members_by_last_spoken(&db, &group.id),
        group_chats::insert_group_message(&db, &group.id, &user_id, false, &prompt, None),
        group_chats::list_recent_group_messages(&db, &group.id, app.config.chat.context_messages),
    )?;
    drop(db);
    let responders = pick_responders(&members, &prompt, app.config.chat.group_max_responders);
    let Some(first) = responders.first() else {
        return Ok(sse_response(futures_util::stream::iter([
            Bytes::from_static(SSE_DONE),
        ])));
    };
    let context = context_for(first, &group, &members, &transcript);
    let started = match start_reply(&app.llm, &context).await {
        Ok(s) => s,
        Err(e) => return Ok(model_error_response(&e)),
    };
    let events = generate(move |tx| async move {
        let mut transcript = transcript;
        let mut after = prompt_row.created_at_naive();
        let mut started = Some((started, context));
        for member in &responders {
            let (mut reply, context) = match started.take() {
                Some(s) => s,
                None => {
                    let context = context_for(member, &group, &members, &transcript);
                    match start_reply(&app.llm, &context).await {
                        Ok(r) => (r, context),
                        Err(e) => {
                            send_error(&tx, &e).await;
                            break;
                        }
                    }
                }
            };
            send(
                &tx,
                &GroupEvent::MessageStart {
                    companion_id: &member.companion_id,
                    name: &member.name,
                },
            )
            .await;
            let stored = Arc::new(tokio::sync::Mutex::new(None));
            let guard = {
                let app = app.clone();
                let bg = bg.clone();
                let group_id = group.id.clone();
                let companion_id = member.companion_id.clone();
                let user_id = user_id.clone();
                let stored = stored.clone();
                ReplyGuard::new(bg.clone(), move |outcome: reply::ReplyOutcome| async move {
                    if !outcome.text.is_empty() {
                        let row =
                            store_bot_message(&app, &group_id, &companion_id, &outcome.text, after)
                                .await;
                        *stored.lock().await = row;
                    }
                    let tokens = outcome.tokens(&context);
                    bg.wait_until(async move {
                        if tokens > 0 {
                            reply::write_with_retry(&app.db, "account tokens", |client| {
                                let (c, u) = (companion_id.clone(), user_id.clone());
                                async move {
                                    burned_tokens::add_tokens_burned(&client, &c, &u, tokens).await
                                }
                            })
                            .await;
                        }
                    });
                })
            };
            let mut guard = guard;
            let id = member.companion_id.clone();
            let error = guard
                .relay(&mut reply, &tx, |t| {
                    sse_event(&GroupEvent::TextDelta {
                        companion_id: &id,
                        delta: &t,
                    })
                })
                .await;
            guard.finish(error.clone()).await;
            if let Some(row) = stored.lock().await.take() {
                after = row.created_at_naive();
                transcript.push(row);
            }
            send(
                &tx,
                &GroupEvent::MessageEnd {
                    companion_id: &member.companion_id,
                },
            )
            .await;
            if let Some(e) = error {
                send_error(&tx, &e).await;
                break;
            }
        }
        tx.send(Bytes::from_static(SSE_DONE)).await;
    });
    Ok(sse_response(events))
}

async fn store_bot_message(
    app: &App,
    group_id: &str,
    companion_id: &str,
    text: &str,
    after: chrono::NaiveDateTime,
) -> Option<StoredGroupMessage> {
    let row = Arc::new(std::sync::Mutex::new(None));
    let ok = reply::write_with_retry(&app.db, "store group reply", |client| {
        let row = row.clone();
        async move {
            let stored = group_chats::insert_group_message(
                &client,
                group_id,
                companion_id,
                true,
                text,
                Some(after),
            )
            .await?;
            *row.lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner) = Some(stored);
            Ok(())
        }
    })
    .await;
    if !ok {
        return None;
    }
    let stored = row
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
        .take();
    stored
}

async fn send(tx: &Sender<Bytes>, event: &GroupEvent<'_>) {
    tx.send(sse_event(event)).await;
}

async fn send_error(tx: &Sender<Bytes>, e: &crate::llm::ModelError) {
    tracing::warn!(kind = e.kind(), "group reply failed");
    send(
        tx,
        &GroupEvent::Error {
            message: &reply::client_message(e),
        },
    )
    .await;
}

/// Demo groups: one responder, nothing stored, the reply cached for everyone.
async fn chat_demo(
    app: Arc<App>,
    bg: Background,
    group: GroupChat,
    prompt: String,
) -> ApiResult<Response> {
    let members = {
        let db = app.db.get().await?;
        group_chats::list_members_by_last_spoken(&db, &group.id).await?
    };
    let Some(member) = pick_demo_responder(&members, &prompt) else {
        return Ok(sse_response(futures_util::stream::iter([
            Bytes::from_static(SSE_DONE),
        ])));
    };
    let cache_key = crate::chat::demo_reply_key(&group.id, &member.companion_id, &prompt);
    if let Some(text) = crate::chat::cached_reply(&app, &cache_key).await {
        let events = [
            sse_event(&GroupEvent::MessageStart {
                companion_id: &member.companion_id,
                name: &member.name,
            }),
            sse_event(&GroupEvent::TextDelta {
                companion_id: &member.companion_id,
                delta: &text,
            }),
            sse_event(&GroupEvent::MessageEnd {
                companion_id: &member.companion_id,
            }),
            Bytes::from_static(SSE_DONE),
        ];
        return Ok(sse_response(futures_util::stream::iter(events)));
    }
    let context = vec![
        ChatMessage::new(
            Role::System,
            format!(
                "{}\n\nYou are {} in the group chat \"{}\". Reply as {} only.",
                member.instructions, member.name, group.name, member.name
            ),
        ),
        ChatMessage::new(Role::User, prompt),
    ];
    let mut started = match start_reply(&app.llm, &context).await {
        Ok(s) => s,
        Err(e) => return Ok(model_error_response(&e)),
    };
    let on_end = {
        let app = app.clone();
        let bg = bg.clone();
        move |outcome: reply::ReplyOutcome| async move {
            if outcome.completed() && !outcome.text.is_empty() {
                bg.wait_until(async move {
                    crate::chat::cache_reply(&app, &cache_key, outcome.text).await;
                });
            }
        }
    };
    let mut guard = ReplyGuard::new(bg, on_end);
    let events = generate(move |tx| async move {
        send(
            &tx,
            &GroupEvent::MessageStart {
                companion_id: &member.companion_id,
                name: &member.name,
            },
        )
        .await;
        let id = member.companion_id.clone();
        let error = guard
            .relay(&mut started, &tx, |t| {
                sse_event(&GroupEvent::TextDelta {
                    companion_id: &id,
                    delta: &t,
                })
            })
            .await;
        guard.finish(error.clone()).await;
        send(
            &tx,
            &GroupEvent::MessageEnd {
                companion_id: &member.companion_id,
            },
        )
        .await;
        if let Some(e) = error {
            send_error(&tx, &e).await;
        }
        tx.send(Bytes::from_static(SSE_DONE)).await;
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
    let query = query_params(&uri);
    let group_id = input::id_param(&query, "groupId")?;
    let page = input::page_params(&query)?;
    let db = app.db.get().await?;
    let group = group_chats::find_group_chat(&db, &group_id)
        .await?
        .ok_or(ApiError::NotFound)?;
    access(&group, &viewer, &app.config.system_user_id)?;
    let found =
        group_chats::list_group_messages_page(&db, &group.id, page.before.as_deref(), page.limit)
            .await?
            .ok_or_else(|| ApiError::bad_parameter("before", "is not a message of this group"))?;
    let next_cursor = found
        .has_older
        .then(|| found.messages.first().map(|m| m.id.clone()))
        .flatten();
    Ok(private_json(MessagesPage {
        messages: found.messages,
        next_cursor,
    })
    .into_response())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn member(id: &str, name: &str) -> GroupMember {
        GroupMember {
            companion_id: id.into(),
            name: name.into(),
            instructions: String::new(),
            last_spoke: None,
        }
    }

    #[test]
    fn named_members_answer_in_the_order_they_are_named() {
        let members = [member("a", "Ada"), member("b", "Bob"), member("c", "Cy")];
        let picked = pick_responders(&members, "hey CY and ada!", 2);
        let ids: Vec<&str> = picked.iter().map(|m| m.companion_id.as_str()).collect();
        assert_eq!(ids, ["c", "a"]);
    }

    #[test]
    fn without_a_name_the_least_recently_spoken_answer() {
        let members = [member("a", "Ada"), member("b", "Bob"), member("c", "Cy")];
        let ids: Vec<String> = pick_responders(&members, "hello all", 2)
            .into_iter()
            .map(|m| m.companion_id)
            .collect();
        assert_eq!(ids, ["a", "b"]);
    }

    #[test]
    fn the_demo_responder_is_stable_for_a_prompt() {
        let members = [member("a", "Ada"), member("b", "Bob")];
        let one = pick_demo_responder(&members, "Hello  there");
        assert_eq!(one, pick_demo_responder(&members, "hello there"));
        assert_eq!(
            pick_demo_responder(&members, "bob?").unwrap().companion_id,
            "b"
        );
        assert_eq!(pick_demo_responder(&[], "x"), None);
    }
}
