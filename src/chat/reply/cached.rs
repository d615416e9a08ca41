//! Replies cached for anonymous viewers: the same (companion, prompt) asked again within five
//! minutes, after the same earlier turns if the client sent any, is replayed from the cache
//! instead of asking the model.

use crate::cache::keys::{self, Key};
use crate::chat::reply::journal::{now_ms, Record};
use crate::db::messages::ReplyStatus;
use crate::id::{CompanionId, GroupId};
use crate::llm::{ChatMessage, Role};
use crate::platform::app::App;
use crate::platform::input::Prompt;

/// Size of the pieces a cached reply is replayed in.
pub const REPLAY_PIECE_BYTES: usize = 256;

/// A companion's reply to an anonymous prompt, cached per (companion, normalized prompt).
pub fn anonymous_reply_key(companion_id: &str, prompt: &Prompt) -> Key {
    keys::bot_reply(companion_id, &prompt.normalized())
}

/// A companion's reply to an anonymous conversation: the prompt after the earlier turns the
/// model was given (the client's own, as `useChat` sends them). With no earlier turns it is
/// [`anonymous_reply_key`], so a first message shares its reply with `{"prompt"}`. The turns
/// are part of the key because the reply depends on them; each key still costs a model call
/// under the anonymous rate limit, so distinct histories can't fill the cache faster than
/// distinct prompts already could.
pub fn anonymous_conversation_key(
    companion_id: &str,
    earlier: &[ChatMessage],
    prompt: &Prompt,
) -> Key {
    if earlier.is_empty() {
        return anonymous_reply_key(companion_id, prompt);
    }
    // NUL separates the turns: no prompt or client text may hold one.
    let mut conversation = String::from("conversation");
    for turn in earlier {
        conversation.push('\0');
        conversation.push_str(match turn.role {
            Role::Assistant => "assistant:",
            Role::User | Role::System => "user:",
        });
        conversation.push_str(&normalize(&turn.content));
    }
    conversation.push('\0');
    conversation.push_str(&prompt.normalized());
    keys::bot_reply(companion_id, &conversation)
}

/// Text as reply caches compare it: [`Prompt::normalized`]'s rule.
fn normalize(text: &str) -> String {
    text.split_whitespace()
        .collect::<Vec<_>>()
        .join(" ")
        .to_lowercase()
}

/// A demo group's reply, cached per (group, companion, normalized prompt).
pub fn demo_reply_key(group_id: &GroupId, companion_id: &CompanionId, prompt: &Prompt) -> Key {
    keys::bot_reply(
        companion_id.as_str(),
        &format!("group:{group_id}:{}", prompt.normalized()),
    )
}

/// The cached reply under `key`, if there is one (a cache that fails is a miss).
pub async fn cached_reply(app: &App, key: &Key) -> Option<String> {
    let found = app.cache.get(key).await.value?;
    String::from_utf8(found.to_vec()).ok()
}

/// A cached reply as the records of a stream (its text cut into pieces on character
/// boundaries), to replay in any format: one message, finished, stored nowhere.
pub fn replay_records(message: Record, text: &str) -> Vec<Record> {
    let mut records = vec![
        Record::Start {
            at: now_ms(),
            deadline: now_ms(),
        },
        message,
    ];
    let mut rest = text;
    while !rest.is_empty() {
        let mut end = rest.len().min(REPLAY_PIECE_BYTES);
        while !rest.is_char_boundary(end) {
            end += 1;
        }
        records.push(Record::Text {
            t: rest[..end].to_owned(),
        });
        rest = &rest[end..];
    }
    records.push(Record::End {
        status: ReplyStatus::Finished,
        error: None,
        tokens: 0,
        stored: false,
        pending: false,
        at: now_ms(),
    });
    records.push(Record::Done);
    records
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::id::MessageId;

    #[test]
    fn a_conversation_key_depends_on_every_turn_and_on_nothing_else() {
        let prompt = Prompt::parse("And then?".into()).unwrap();
        let turns = |a: &str| {
            vec![
                ChatMessage::new(Role::User, "Tell me a story"),
                ChatMessage::new(Role::Assistant, a),
            ]
        };
        let key = anonymous_conversation_key("c1", &turns("Once upon a time"), &prompt);
        assert_eq!(
            key,
            anonymous_conversation_key("c1", &turns("  once UPON a time "), &prompt)
        );
        assert_ne!(
            key,
            anonymous_conversation_key("c1", &turns("Long ago"), &prompt)
        );
        assert_ne!(
            key,
            anonymous_conversation_key("c2", &turns("Once upon a time"), &prompt)
        );
        assert_ne!(key, anonymous_reply_key("c1", &prompt));
        assert_eq!(
            anonymous_conversation_key("c1", &[], &prompt),
            anonymous_reply_key("c1", &prompt)
        );
        // The same words in other roles are another conversation.
        let swapped = vec![
            ChatMessage::new(Role::Assistant, "Tell me a story"),
            ChatMessage::new(Role::User, "Once upon a time"),
        ];
        assert_ne!(key, anonymous_conversation_key("c1", &swapped, &prompt));
    }

    #[test]
    fn a_replay_cuts_on_character_boundaries_and_loses_nothing() {
        let text = "é".repeat(300);
        let message = Record::Message {
            id: MessageId::issued("m"),
            companion_id: None,
            name: None,
            row: None,
        };
        let records = replay_records(message, &text);
        let pieces: Vec<&str> = records
            .iter()
            .filter_map(|r| match r {
                Record::Text { t } => Some(t.as_str()),
                _ => None,
            })
            .collect();
        assert!(pieces.len() > 1);
        assert_eq!(pieces.concat(), text);
        assert!(matches!(records.last(), Some(Record::Done)));
    }
}
