//! The built-in offline model: a deterministic reply streamed word by word, so `gcbb dev`
//! works without a key or network. It reports usage like a real server (estimated counts).

use std::time::Duration;

use super::{estimate_tokens, ChatMessage, ModelEvent, ReplyStream, Role, Usage};

/// Longest part of the prompt the scripted reply quotes.
const QUOTE_CHARS: usize = 120;

/// The reply the scripted model gives to `messages`.
pub fn reply_text(messages: &[ChatMessage]) -> String {
    let prompt = messages
        .iter()
        .rev()
        .find(|m| m.role == Role::User)
        .map(|m| m.content.as_str())
        .unwrap_or_default();
    let mut quote: String = prompt.chars().take(QUOTE_CHARS).collect();
    if prompt.chars().count() > QUOTE_CHARS {
        quote.push('…');
    }
    format!(
        "You said: \"{quote}\". This is the scripted offline model of gcbb dev; set \
         OPENAI_API_KEY for real replies."
    )
}

pub fn reply(messages: &[ChatMessage], delay: Duration) -> ReplyStream {
    let text = reply_text(messages);
    let prompt_tokens = messages.iter().map(|m| estimate_tokens(&m.content)).sum();
    let completion_tokens = estimate_tokens(&text);
    let mut words: Vec<String> = text.split_inclusive(' ').map(str::to_owned).collect();
    words.reverse();
    let usage = Usage {
        prompt_tokens,
        completion_tokens,
        total_tokens: prompt_tokens + completion_tokens,
    };
    Box::pin(futures_util::stream::unfold(
        (words, Some(usage), true),
        move |(mut words, mut usage, first)| async move {
            if let Some(word) = words.pop() {
                if !first && !delay.is_zero() {
                    tokio::time::sleep(delay).await;
                }
                return Some((Ok(ModelEvent::Text(word)), (words, usage, false)));
            }
            let usage = usage.take()?;
            Some((Ok(ModelEvent::Usage(usage)), (words, None, false)))
        },
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures_util::StreamExt;

    #[tokio::test]
    async fn the_scripted_reply_is_deterministic_and_ends_with_usage() {
        let messages = [
            ChatMessage::new(Role::System, "be kind"),
            ChatMessage::new(Role::User, "hello ✨"),
        ];
        let events: Vec<_> = reply(&messages, Duration::ZERO).collect().await;
        let text: String = events
            .iter()
            .filter_map(|e| match e {
                Ok(ModelEvent::Text(t)) => Some(t.as_str()),
                _ => None,
            })
            .collect();
        assert_eq!(text, reply_text(&messages));
        assert!(text.contains("hello ✨"));
        assert!(matches!(events.last(), Some(Ok(ModelEvent::Usage(u))) if u.total() > 0));
    }
}
