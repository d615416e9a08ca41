//! Replies cached for anonymous viewers: the same (companion, prompt) asked again within five
//! minutes is replayed from the cache instead of asking the model.

use crate::cache::keys::{self, Key};
use crate::chat::stream::ReplyPart;
use crate::platform::app::App;
use crate::platform::input::Prompt;

/// Size of the pieces a cached reply is replayed in.
pub const REPLAY_PIECE_BYTES: usize = 256;

/// A companion's reply to an anonymous prompt, cached per (companion, normalized prompt).
pub fn anonymous_reply_key(companion_id: &str, prompt: &Prompt) -> Key {
    keys::bot_reply(companion_id, &prompt.normalized())
}

/// A demo group's reply, cached per (group, companion, normalized prompt).
pub fn demo_reply_key(group_id: &str, companion_id: &str, prompt: &Prompt) -> Key {
    keys::bot_reply(
        companion_id,
        &format!("group:{group_id}:{}", prompt.normalized()),
    )
}

/// The cached reply under `key`, if there is one (a cache that fails is a miss).
pub async fn cached_reply(app: &App, key: &Key) -> Option<String> {
    let found = app.cache.get(key).await.value?;
    String::from_utf8(found.to_vec()).ok()
}

/// A cached reply cut into pieces on character boundaries, to replay as a stream.
pub fn replay_pieces(text: String) -> Vec<ReplyPart> {
    let mut pieces = Vec::new();
    let mut rest = text.as_str();
    while !rest.is_empty() {
        let mut end = rest.len().min(REPLAY_PIECE_BYTES);
        while !rest.is_char_boundary(end) {
            end += 1;
        }
        pieces.push(ReplyPart::Text(rest[..end].to_owned()));
        rest = &rest[end..];
    }
    pieces
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_replay_cuts_on_character_boundaries_and_loses_nothing() {
        let text = "é".repeat(300);
        let pieces = replay_pieces(text.clone());
        assert!(pieces.len() > 1);
        let joined: String = pieces
            .into_iter()
            .map(|p| match p {
                ReplyPart::Text(t) => t,
                ReplyPart::Error(_) => unreachable!(),
            })
            .collect();
        assert_eq!(joined, text);
    }
}
