//! The chat section: context sizes, body limit, group responders, reply duration and the
//! signed-in and anonymous chat rate limits (`CHAT_*`, `GROUP_MAX_RESPONDERS`,
//! `RATE_LIMIT_USER_*`, `RATE_LIMIT_ANON_*`).

use std::time::Duration;

use super::env::{positive, positive_millis};
use super::rate_limit::rate_limit;
use super::{ConfigError, Env, RateLimit};

/// Stored messages of (companion, user) sent to the model as context.
pub const DEFAULT_CHAT_CONTEXT_MESSAGES: i64 = 20;
/// Largest body `POST /api/chat/:chatId` accepts: the AI SDK's `useChat` sends the whole
/// conversation on every turn, so a long one outgrows the general limit.
pub const DEFAULT_CHAT_BODY_LIMIT_BYTES: usize = 1024 * 1024;
/// An anonymous viewer's own earlier messages (sent by `useChat`) that become context: at most
/// this many of the most recent…
pub const DEFAULT_CHAT_CLIENT_CONTEXT_MESSAGES: usize = 10;
/// …holding at most this many bytes of text together.
pub const DEFAULT_CHAT_CLIENT_CONTEXT_BYTES: usize = 16 * 1024;
/// The chat functions' `maxDuration` (vercel.json): a reply still generating this long after its
/// request arrived is ended and stored as interrupted, so it never outlives its function.
pub const DEFAULT_CHAT_MAX_DURATION: Duration = Duration::from_secs(300);
/// Companions that answer one group-chat prompt when nobody is mentioned.
pub const DEFAULT_GROUP_MAX_RESPONDERS: usize = 2;
/// Signed-in chat: requests per window per user.
pub const DEFAULT_RATE_LIMIT_USER_REQUESTS: u32 = 20;
pub const DEFAULT_RATE_LIMIT_USER_WINDOW: Duration = Duration::from_secs(10);
/// Anonymous chat: requests per window per client address.
pub const DEFAULT_RATE_LIMIT_ANON_REQUESTS: u32 = 5;
pub const DEFAULT_RATE_LIMIT_ANON_WINDOW: Duration = Duration::from_secs(60);

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChatConfig {
    pub context_messages: i64,
    pub group_max_responders: usize,
    pub user_rate_limit: RateLimit,
    pub anonymous_rate_limit: RateLimit,
    /// Body limit of one-on-one chat (`CHAT_BODY_LIMIT_BYTES`).
    pub body_limit: usize,
    /// How much of an anonymous client's own history becomes context
    /// (`CHAT_CLIENT_CONTEXT_MESSAGES`, `CHAT_CLIENT_CONTEXT_BYTES`).
    pub client_context_messages: usize,
    pub client_context_bytes: usize,
    /// How long a reply may run, from its request (`CHAT_MAX_DURATION_MS`, the functions'
    /// `maxDuration`).
    pub max_duration: Duration,
    /// Whether replies in flight are journaled in the cache (`CHAT_RESUME_STREAMS`, default
    /// true): resume from any instance, and replies whose database write failed written later.
    pub resume_streams: bool,
}

pub(super) fn chat_config(env: &Env) -> Result<ChatConfig, ConfigError> {
    Ok(ChatConfig {
        context_messages: positive(
            "CHAT_CONTEXT_MESSAGES",
            env.parse(
                "CHAT_CONTEXT_MESSAGES",
                DEFAULT_CHAT_CONTEXT_MESSAGES as u64,
            )?,
        )?
        .min(1000) as i64,
        group_max_responders: positive(
            "GROUP_MAX_RESPONDERS",
            env.parse("GROUP_MAX_RESPONDERS", DEFAULT_GROUP_MAX_RESPONDERS as u64)?,
        )? as usize,
        user_rate_limit: rate_limit(
            env,
            "RATE_LIMIT_USER_REQUESTS",
            "RATE_LIMIT_USER_WINDOW_MS",
            DEFAULT_RATE_LIMIT_USER_REQUESTS,
            DEFAULT_RATE_LIMIT_USER_WINDOW,
        )?,
        anonymous_rate_limit: rate_limit(
            env,
            "RATE_LIMIT_ANON_REQUESTS",
            "RATE_LIMIT_ANON_WINDOW_MS",
            DEFAULT_RATE_LIMIT_ANON_REQUESTS,
            DEFAULT_RATE_LIMIT_ANON_WINDOW,
        )?,
        body_limit: positive(
            "CHAT_BODY_LIMIT_BYTES",
            env.parse(
                "CHAT_BODY_LIMIT_BYTES",
                DEFAULT_CHAT_BODY_LIMIT_BYTES as u64,
            )?,
        )? as usize,
        // Zero is allowed: no client history as context.
        client_context_messages: env.parse(
            "CHAT_CLIENT_CONTEXT_MESSAGES",
            DEFAULT_CHAT_CLIENT_CONTEXT_MESSAGES,
        )?,
        client_context_bytes: env.parse(
            "CHAT_CLIENT_CONTEXT_BYTES",
            DEFAULT_CHAT_CLIENT_CONTEXT_BYTES,
        )?,
        max_duration: positive_millis(env, "CHAT_MAX_DURATION_MS", DEFAULT_CHAT_MAX_DURATION)?,
        resume_streams: env.parse("CHAT_RESUME_STREAMS", true)?,
    })
}
