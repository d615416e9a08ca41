//! One model reply, start to end, the same for chat and group chat: ask the model and wait for
//! its first text (so a model that fails early is a clean 502/504 before any byte is sent), then
//! hand it to a [`producer::Producer`], which runs it to its end as background work
//! (`wait_until`), whether or not anyone still reads it: a client that goes away is a
//! disconnect, not a stop. What it produces goes to the stream's readers in this process
//! ([`live`]) and to the journal in the cache ([`journal`]), from which any instance resumes it;
//! when it ends it is kept ([`keep::Keep`]) exactly once.

pub mod cached;
pub mod journal;
pub mod keep;
pub mod live;
pub mod producer;

use std::collections::VecDeque;

use futures_util::StreamExt;

use crate::llm::{estimate_tokens, ChatMessage, Llm, ModelError, ModelEvent, ReplyStream, Usage};
use crate::platform::error::ApiError;
pub use keep::Keep;

/// A reply whose first text has arrived (or that ended without any), with the context it was
/// asked with (its tokens count too).
pub struct Reply {
    context: Vec<ChatMessage>,
    buffered: VecDeque<ModelEvent>,
    rest: Option<ReplyStream>,
}

/// Asks the model and waits for the first text. A failure before it is an [`ApiError`] (502, or
/// 504 on a timeout), so the handler can still answer with a status code.
pub async fn start(llm: &Llm, context: Vec<ChatMessage>) -> Result<Reply, ApiError> {
    let mut stream = llm.stream_reply(&context).await?;
    let mut buffered = VecDeque::new();
    loop {
        match stream.next().await {
            None => {
                return Ok(Reply {
                    context,
                    buffered,
                    rest: None,
                })
            }
            Some(Err(e)) => return Err(e.into()),
            Some(Ok(event)) => {
                let is_text = matches!(event, ModelEvent::Text(_));
                buffered.push_back(event);
                if is_text {
                    return Ok(Reply {
                        context,
                        buffered,
                        rest: Some(stream),
                    });
                }
            }
        }
    }
}

impl Reply {
    /// The next event: what arrived with the first text, then the model's stream.
    async fn next(&mut self) -> Option<Result<ModelEvent, ModelError>> {
        if let Some(e) = self.buffered.pop_front() {
            return Some(Ok(e));
        }
        self.rest.as_mut()?.next().await
    }

    /// The events that arrived with the first text (the first text among them).
    fn take_buffered(&mut self) -> VecDeque<ModelEvent> {
        std::mem::take(&mut self.buffered)
    }

    /// The context's tokens, estimated (what a reply the model didn't count cost, with its text).
    pub fn context_tokens(&self) -> u32 {
        self.context
            .iter()
            .map(|m| estimate_tokens(&m.content))
            .sum()
    }
}

/// Tokens a reply cost: the model's count, else an estimate from the context and the text.
pub fn tokens_of(usage: Option<Usage>, context_tokens: u32, text: &str) -> i32 {
    let total = match usage {
        Some(u) => u.total(),
        None => context_tokens.saturating_add(estimate_tokens(text)),
    };
    i32::try_from(total).unwrap_or(i32::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_are_the_models_count_or_an_estimate() {
        let estimated = tokens_of(None, 3, "general kenobi");
        assert_eq!(estimated, 3 + estimate_tokens("general kenobi") as i32);
        let usage = Usage {
            prompt_tokens: 7,
            completion_tokens: 5,
            total_tokens: 12,
        };
        assert_eq!(tokens_of(Some(usage), 3, "general kenobi"), 12);
    }
}
