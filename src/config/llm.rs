//! The model section: which model answers chat (`LLM_*`, `OPENAI_*`) and its timeouts.

use std::time::Duration;

use super::{ConfigError, Env, Secret};

/// Any OpenAI-compatible chat-completions server.
pub const DEFAULT_OPENAI_BASE_URL: &str = "https://api.openai.com/v1";
/// Model asked for when `LLM_MODEL` is unset.
pub const DEFAULT_LLM_MODEL: &str = "gpt-4o-mini";
/// How long connecting to the model server may take.
pub const DEFAULT_LLM_CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// How long the model may take to send its first token (it is thinking; be generous).
pub const DEFAULT_LLM_FIRST_TOKEN_TIMEOUT: Duration = Duration::from_secs(30);
/// Longest silence allowed between two chunks once the reply has started.
pub const DEFAULT_LLM_IDLE_TIMEOUT: Duration = Duration::from_secs(20);
/// Largest reply (`max_tokens`) asked of the model.
pub const DEFAULT_LLM_MAX_TOKENS: u32 = 1024;
/// Pause between the scripted model's chunks.
pub const DEFAULT_SCRIPTED_CHUNK_DELAY: Duration = Duration::from_millis(20);

/// Which model answers chat.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LlmProvider {
    /// Any OpenAI-compatible `POST {base_url}/chat/completions`.
    OpenAi {
        base_url: String,
        /// None for local servers that need no key (never on Vercel).
        api_key: Option<Secret>,
    },
    /// The built-in offline model: a deterministic streamed reply.
    Scripted,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LlmConfig {
    pub provider: LlmProvider,
    pub model: String,
    pub connect_timeout: Duration,
    pub first_token_timeout: Duration,
    pub idle_timeout: Duration,
    pub max_tokens: u32,
    pub scripted_chunk_delay: Duration,
}

/// `LLM_PROVIDER=scripted` picks the offline model; otherwise the OpenAI-compatible server,
/// which needs `OPENAI_API_KEY` unless `OPENAI_BASE_URL` points at a key-less local server.
/// On Vercel (`VERCEL_ENV` set) a missing key is a start-up error, never a silent fallback.
pub(super) fn llm_config(env: &Env) -> Result<LlmConfig, ConfigError> {
    let on_vercel = env.get("VERCEL_ENV").is_some();
    let api_key = env.get("OPENAI_API_KEY").map(Secret::new);
    let base_url = env.http_url("OPENAI_BASE_URL")?;
    let provider = match env.get("LLM_PROVIDER").as_deref() {
        Some("scripted") if on_vercel => {
            return Err(ConfigError::Invalid {
                name: "LLM_PROVIDER",
                reason: "the scripted model is for local development only (VERCEL_ENV is set)"
                    .into(),
            })
        }
        Some("scripted") => LlmProvider::Scripted,
        Some("openai") | None => {
            if on_vercel && api_key.is_none() {
                return Err(ConfigError::Missing {
                    name: "OPENAI_API_KEY",
                });
            }
            LlmProvider::OpenAi {
                base_url: base_url.unwrap_or_else(|| DEFAULT_OPENAI_BASE_URL.to_owned()),
                api_key,
            }
        }
        Some(other) => {
            return Err(ConfigError::Invalid {
                name: "LLM_PROVIDER",
                reason: format!("`{other}` is not one of: openai, scripted"),
            })
        }
    };
    Ok(LlmConfig {
        provider,
        model: env
            .get("LLM_MODEL")
            .unwrap_or_else(|| DEFAULT_LLM_MODEL.to_owned()),
        connect_timeout: env.millis("LLM_CONNECT_TIMEOUT_MS", DEFAULT_LLM_CONNECT_TIMEOUT)?,
        first_token_timeout: env.millis(
            "LLM_FIRST_TOKEN_TIMEOUT_MS",
            DEFAULT_LLM_FIRST_TOKEN_TIMEOUT,
        )?,
        idle_timeout: env.millis("LLM_IDLE_TIMEOUT_MS", DEFAULT_LLM_IDLE_TIMEOUT)?,
        max_tokens: env.parse("LLM_MAX_TOKENS", DEFAULT_LLM_MAX_TOKENS)?,
        scripted_chunk_delay: env
            .millis("LLM_SCRIPTED_CHUNK_DELAY_MS", DEFAULT_SCRIPTED_CHUNK_DELAY)?,
    })
}
