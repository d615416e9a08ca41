//! Who answers a group prompt, and what each responder is told: the members named in the
//! prompt (case-insensitive, in the order named), else those who spoke least recently; a demo
//! group's one responder is chosen without asking the model.

use crate::db::group_chats::{GroupChat, GroupMember, StoredGroupMessage};
use crate::llm::{ChatMessage, Role};
use crate::platform::input::Prompt;

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
pub fn pick_demo_responder(members: &[GroupMember], prompt: &Prompt) -> Option<GroupMember> {
    let lower = prompt.as_str().to_lowercase();
    if let Some(m) = pick_responders(members, prompt.as_str(), 1)
        .into_iter()
        .next()
        .filter(|m| lower.contains(&m.name.trim().to_lowercase()))
    {
        return Some(m);
    }
    let mut sorted: Vec<&GroupMember> = members.iter().collect();
    sorted.sort_by(|a, b| a.companion_id.cmp(&b.companion_id));
    let hash = prompt
        .normalized()
        .bytes()
        .fold(0u64, |h, b| h.wrapping_mul(31).wrapping_add(b as u64));
    let n = sorted.len() as u64;
    (n > 0).then(|| sorted[(hash % n) as usize].clone())
}

/// The model's context for one responder: who it is, then the group's conversation.
pub fn context_for(
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
        if m.is_bot && m.sender_id == member.companion_id.as_str() {
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

/// A demo group's context: the responder's instructions and the one prompt (nothing is stored
/// for demo groups, so there is no conversation).
pub fn demo_context_for(
    member: &GroupMember,
    group: &GroupChat,
    prompt: &Prompt,
) -> Vec<ChatMessage> {
    vec![
        ChatMessage::new(
            Role::System,
            format!(
                "{}\n\nYou are {} in the group chat \"{}\". Reply as {} only.",
                member.instructions, member.name, group.name, member.name
            ),
        ),
        ChatMessage::new(Role::User, prompt.as_str()),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::id::CompanionId;

    fn member(id: &str, name: &str) -> GroupMember {
        GroupMember {
            companion_id: CompanionId::issued(id),
            name: name.into(),
            instructions: String::new(),
            last_spoke: None,
        }
    }

    fn prompt(p: &str) -> Prompt {
        Prompt::parse(p.to_owned()).unwrap()
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
            .map(|m| m.companion_id.to_string())
            .collect();
        assert_eq!(ids, ["a", "b"]);
    }

    #[test]
    fn the_demo_responder_is_stable_for_a_prompt() {
        let members = [member("a", "Ada"), member("b", "Bob")];
        let one = pick_demo_responder(&members, &prompt("Hello  there"));
        assert_eq!(one, pick_demo_responder(&members, &prompt("hello there")));
        assert_eq!(
            pick_demo_responder(&members, &prompt("bob?"))
                .unwrap()
                .companion_id,
            "b"
        );
        assert_eq!(pick_demo_responder(&[], &prompt("x")), None);
    }
}
