//! One model reply, start to end, the same for chat and group chat: ask the model and wait for
//! its first text (so a model that fails early is a clean 502/504 before any byte is sent),
//! forward each delta to the client, then keep what was produced ([`Keep`]) exactly once:
//! inline when the reply ends, or through `wait_until` when the client went away first.

pub mod cached;
pub mod generate;
pub mod keep;

use std::collections::VecDeque;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use futures_util::StreamExt;

use crate::llm::{estimate_tokens, ChatMessage, Llm, ModelError, ModelEvent, ReplyStream, Usage};
use crate::platform::app::App;
use crate::platform::background::Background;
use crate::platform::error::ApiError;
pub use generate::{generate, Sender};
pub use keep::{Keep, Stored};

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

/// How a forwarded reply ended.
#[derive(Debug)]
pub struct Ended {
    /// The model's failure after the first text, if any (the client gets an error part).
    pub error: Option<ModelError>,
    /// The row the reply became, when it was stored.
    pub stored: Option<Stored>,
}

impl Reply {
    /// Forwards the reply's text to `tx` (each delta wrapped by `wrap`) until it ends, then keeps
    /// it as `keep` says. If the stream is dropped first (the client left), what was produced is
    /// kept in the background.
    pub async fn forward<T>(
        mut self,
        app: &Arc<App>,
        bg: &Background,
        keep: Keep,
        tx: &Sender<T>,
        wrap: impl Fn(String) -> T,
    ) -> Ended {
        let mut guard = EndGuard {
            app: app.clone(),
            bg: bg.clone(),
            keep: Some(keep),
            context: std::mem::take(&mut self.context),
            text: String::new(),
            usage: None,
        };
        let mut error = None;
        let mut abandoned = false;
        while let Some(event) = self.next().await {
            match event {
                Ok(ModelEvent::Text(t)) => {
                    guard.text.push_str(&t);
                    if !tx.send(wrap(t)).await {
                        abandoned = true;
                        break;
                    }
                }
                Ok(ModelEvent::Usage(u)) => guard.usage = Some(u),
                Err(e) => {
                    tracing::warn!(kind = e.kind(), "model failed mid-stream");
                    error = Some(e);
                    break;
                }
            }
        }
        let stored = guard.end(error.clone(), abandoned).await;
        Ended { error, stored }
    }

    async fn next(&mut self) -> Option<Result<ModelEvent, ModelError>> {
        if let Some(e) = self.buffered.pop_front() {
            return Some(Ok(e));
        }
        self.rest.as_mut()?.next().await
    }
}

/// How a reply ended, as [`Keep`] sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReplyOutcome {
    /// The text that was produced (all of it, or what came before the failure).
    pub text: String,
    pub usage: Option<Usage>,
    pub error: Option<ModelError>,
    /// The client went away before the end.
    pub abandoned: bool,
}

impl ReplyOutcome {
    pub fn completed(&self) -> bool {
        self.error.is_none() && !self.abandoned
    }

    /// Tokens to account: the model's count, else an estimate from the context and the text.
    pub fn tokens(&self, context: &[ChatMessage]) -> i32 {
        let total = match self.usage {
            Some(u) => u.total(),
            None => {
                context
                    .iter()
                    .map(|m| estimate_tokens(&m.content))
                    .sum::<u32>()
                    + estimate_tokens(&self.text)
            }
        };
        i32::try_from(total).unwrap_or(i32::MAX)
    }
}

/// Collects a reply's text and keeps it once: [`EndGuard::end`] inline, or from `Drop` through
/// `wait_until` when the reply was abandoned.
struct EndGuard {
    app: Arc<App>,
    bg: Background,
    keep: Option<Keep>,
    context: Vec<ChatMessage>,
    text: String,
    usage: Option<Usage>,
}

impl EndGuard {
    fn outcome(&mut self, error: Option<ModelError>, abandoned: bool) -> ReplyOutcome {
        ReplyOutcome {
            text: std::mem::take(&mut self.text),
            usage: self.usage,
            error,
            abandoned,
        }
    }

    fn ending(
        &mut self,
        error: Option<ModelError>,
        abandoned: bool,
    ) -> Option<Pin<Box<dyn Future<Output = Option<Stored>> + Send>>> {
        let keep = self.keep.take()?;
        let outcome = self.outcome(error, abandoned);
        let tokens = outcome.tokens(&self.context);
        let (app, bg) = (self.app.clone(), self.bg.clone());
        Some(Box::pin(async move {
            keep.apply(&app, &bg, outcome, tokens).await
        }))
    }

    async fn end(mut self, error: Option<ModelError>, abandoned: bool) -> Option<Stored> {
        self.ending(error, abandoned)?.await
    }
}

impl Drop for EndGuard {
    fn drop(&mut self) {
        let chars = self.text.len();
        if let Some(ending) = self.ending(None, true) {
            tracing::info!(chars, "client went away; reply cancelled");
            self.bg.wait_until(async move {
                ending.await;
            });
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::llm::Role;

    #[test]
    fn tokens_are_the_models_count_or_an_estimate() {
        let context = [ChatMessage::new(Role::User, "hello there")];
        let mut outcome = ReplyOutcome {
            text: "general kenobi".into(),
            usage: None,
            error: None,
            abandoned: false,
        };
        let estimated = outcome.tokens(&context);
        assert!(estimated > 0);
        outcome.usage = Some(Usage {
            prompt_tokens: 7,
            completion_tokens: 5,
            total_tokens: 12,
        });
        assert_eq!(outcome.tokens(&context), 12);
    }

    #[test]
    fn only_a_reply_that_ended_cleanly_completed() {
        let base = ReplyOutcome {
            text: "x".into(),
            usage: None,
            error: None,
            abandoned: false,
        };
        assert!(base.completed());
        assert!(!ReplyOutcome {
            abandoned: true,
            ..base.clone()
        }
        .completed());
        assert!(!ReplyOutcome {
            error: Some(ModelError::Interrupted),
            ..base
        }
        .completed());
    }
}
