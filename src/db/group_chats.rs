//! Queries of `"GroupChat"`, its members and its `"GroupMessage"`s.
//!
//! Messages are read by (groupChatId, createdAt) and "who spoke last" by
//! (groupChatId, senderId, createdAt): the `GroupMessage_*` indexes of migration
//! `20250311000000_add_performance_indexes`.

use chrono::{DateTime, NaiveDateTime, Utc};
use serde::Serialize;
use tokio_postgres::types::Type;
use tokio_postgres::Row;

use super::page::{fetch_page, Keyset, Page};
use super::{DbError, Querier};
use crate::id::{CompanionId, GroupId, MessageId, UserId};

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GroupChat {
    pub id: GroupId,
    pub name: String,
    pub creator_id: UserId,
}

pub async fn find_group_chat(
    client: &impl Querier,
    id: &GroupId,
) -> Result<Option<GroupChat>, DbError> {
    let rows = client
        .query_typed(
            r#"SELECT "id", "name", "creatorId" FROM "GroupChat" WHERE "id" = $1"#,
            &[(&id, Type::TEXT)],
        )
        .await?;
    Ok(rows.first().map(|r| GroupChat {
        id: r.get(0),
        name: r.get(1),
        creator_id: r.get(2),
    }))
}

/// A companion of the group, with when it last spoke there.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GroupMember {
    pub companion_id: CompanionId,
    pub name: String,
    pub instructions: String,
    pub last_spoke: Option<NaiveDateTime>,
}

const MEMBERS_SQL: &str = r#"SELECT c."id", c."name", c."instructions",
              (SELECT max(g."createdAt") FROM "GroupMessage" g
               WHERE g."groupChatId" = m."groupChatId" AND g."senderId" = c."id"
                 AND g."isBot") AS "lastSpoke"
       FROM "GroupChatMember" m JOIN "Companion" c ON c."id" = m."companionId"
       WHERE m."groupChatId" = $1 AND (NOT c."private" OR c."userId" = $2)
       ORDER BY "lastSpoke" ASC NULLS FIRST, m."joinedAt", c."id""#;

/// The group's companions that `viewer_id` may see (public, or the viewer's own), least
/// recently spoken first (never-spoken first of all, then by when they joined). Another
/// user's private companion is never listed: it must not answer, nor have its instructions
/// sent anywhere, whoever added it to the group.
pub async fn list_members_by_last_spoken(
    client: &impl Querier,
    group_id: &GroupId,
    viewer_id: Option<&UserId>,
) -> Result<Vec<GroupMember>, DbError> {
    let rows = client
        .query_typed(
            MEMBERS_SQL,
            &[(&group_id, Type::TEXT), (&viewer_id, Type::TEXT)],
        )
        .await?;
    Ok(rows
        .iter()
        .map(|r| GroupMember {
            companion_id: r.get(0),
            name: r.get(1),
            instructions: r.get(2),
            last_spoke: r.get(3),
        })
        .collect())
}

/// A group message as one viewer may see it. A bot message whose companion the viewer may not
/// see (another user's private companion, or one since deleted) keeps its place in the history
/// but is `available: false`: its words and its sender's name are withheld by the query itself.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct StoredGroupMessage {
    pub id: MessageId,
    pub content: String,
    pub is_bot: bool,
    pub sender_id: String,
    /// The companion's name for bot messages.
    pub sender_name: Option<String>,
    pub available: bool,
    pub created_at: DateTime<Utc>,
    /// How a bot message ended (`finished`, `stopped`, `interrupted`); absent on the user's.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub status: Option<String>,
}

impl StoredGroupMessage {
    pub fn created_at_naive(&self) -> NaiveDateTime {
        self.created_at.naive_utc()
    }
}

fn stored(r: &Row) -> StoredGroupMessage {
    StoredGroupMessage {
        id: r.get("id"),
        content: r.get("content"),
        is_bot: r.get("isBot"),
        sender_id: r.get("senderId"),
        sender_name: r.get("senderName"),
        available: r.get("available"),
        created_at: r.get::<_, NaiveDateTime>("createdAt").and_utc(),
        status: r.get("status"),
    }
}

/// Who wrote a group message: a user, or (a bot message) one of the group's companions.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GroupSender<'a> {
    User(&'a UserId),
    Companion(&'a CompanionId),
}

/// Stores a group message; with `after`, stamped at least 1 ms later than it.
pub async fn insert_group_message(
    client: &impl Querier,
    group_id: &GroupId,
    sender: GroupSender<'_>,
    content: &str,
    after: Option<NaiveDateTime>,
) -> Result<StoredGroupMessage, DbError> {
    let id = uuid::Uuid::new_v4().to_string();
    let (sender_id, is_bot) = match sender {
        GroupSender::User(user) => (user.as_str(), false),
        GroupSender::Companion(companion) => (companion.as_str(), true),
    };
    let rows = client
        .query_typed(
            r#"WITH ins AS (
                   INSERT INTO "GroupMessage" ("id", "content", "createdAt", "updatedAt",
                                                "groupChatId", "isBot", "senderId")
                   SELECT $1, $2, t.ts, t.ts, $3, $4, $5
                   FROM (SELECT GREATEST(clock_timestamp() AT TIME ZONE 'UTC',
                                $6::timestamp + interval '1 millisecond')::timestamp(3) AS ts) t
                   RETURNING *
               )
               SELECT ins."id", ins."content", ins."isBot", ins."senderId", ins."createdAt",
                      c."name" AS "senderName", TRUE AS "available",
                      CASE WHEN ins."isBot" THEN 'finished' END AS "status"
               FROM ins LEFT JOIN "Companion" c ON ins."isBot" AND c."id" = ins."senderId""#,
            &[
                (&id, Type::TEXT),
                (&content, Type::TEXT),
                (&group_id, Type::TEXT),
                (&is_bot, Type::BOOL),
                (&sender_id, Type::TEXT),
                (&after, Type::TIMESTAMP),
            ],
        )
        .await?;
    rows.first().map(stored).ok_or(DbError::NotFound)
}

/// Stores a companion's reply in a group under the id its stream announced, stamped `at` but
/// at least 1 ms after `after`. Idempotent by id, like [`super::messages::insert_reply`];
/// returns whether this call stored it.
#[allow(clippy::too_many_arguments)]
pub async fn insert_group_reply(
    client: &impl Querier,
    id: &MessageId,
    group_id: &GroupId,
    companion_id: &CompanionId,
    content: &str,
    status: super::messages::ReplyStatus,
    after: NaiveDateTime,
    at: NaiveDateTime,
) -> Result<bool, DbError> {
    let rows = client
        .query_typed(
            r#"INSERT INTO "GroupMessage" ("id", "content", "createdAt", "updatedAt",
                                           "groupChatId", "isBot", "senderId", "status")
               SELECT $1, $2, t.ts, t.ts, $3, TRUE, $4, $5
               FROM (SELECT GREATEST($6::timestamp, $7::timestamp + interval '1 millisecond')::timestamp(3) AS ts) t
               ON CONFLICT ("id") DO NOTHING
               RETURNING "id""#,
            &[
                (&id, Type::TEXT),
                (&content, Type::TEXT),
                (&group_id, Type::TEXT),
                (&companion_id, Type::TEXT),
                (&status.column(), Type::TEXT),
                (&at, Type::TIMESTAMP),
                (&after, Type::TIMESTAMP),
            ],
        )
        .await?;
    Ok(!rows.is_empty())
}

/// Messages of group `$1` as viewer `$2` may see them: whether the sender is visible is
/// computed here, and an unavailable bot message's content and sender name never leave the
/// database.
macro_rules! select_messages {
    () => {
        r#"
SELECT g."id", g."isBot", g."senderId", g."createdAt", v."available",
       CASE WHEN v."available" THEN g."content" ELSE '' END AS "content",
       CASE WHEN v."available" THEN c."name" END AS "senderName",
       CASE WHEN g."isBot" THEN COALESCE(g."status", 'finished') END AS "status"
FROM "GroupMessage" g
LEFT JOIN "Companion" c ON g."isBot" AND c."id" = g."senderId"
CROSS JOIN LATERAL (SELECT (NOT g."isBot" OR (c."id" IS NOT NULL
                            AND (NOT c."private" OR c."userId" = $2))) AS "available") v
WHERE g."groupChatId" = $1"#
    };
}

const RECENT_SQL: &str = concat!(
    select_messages!(),
    r#" AND v."available" ORDER BY g."createdAt" DESC, g."id" DESC LIMIT $3"#
);

/// The last `limit` messages of the group that `viewer_id` may see, oldest first: the model's
/// context, which never holds what an unavailable companion said.
pub async fn list_recent_group_messages(
    client: &impl Querier,
    group_id: &GroupId,
    viewer_id: Option<&UserId>,
    limit: i64,
) -> Result<Vec<StoredGroupMessage>, DbError> {
    let rows = client
        .query_typed(
            RECENT_SQL,
            &[
                (&group_id, Type::TEXT),
                (&viewer_id, Type::TEXT),
                (&limit, Type::INT8),
            ],
        )
        .await?;
    let mut messages: Vec<StoredGroupMessage> = rows.iter().map(stored).collect();
    messages.reverse();
    Ok(messages)
}

const PAGE_SQL: &str = concat!(
    select_messages!(),
    r#" AND ($3::timestamp IS NULL OR (g."createdAt", g."id") < ($3::timestamp, $4::text))
       ORDER BY g."createdAt" DESC, g."id" DESC LIMIT $5"#
);

const PAGE_CURSOR_SQL: &str =
    r#"SELECT "createdAt" FROM "GroupMessage" WHERE "groupChatId" = $1 AND "id" = $3"#;

/// The `limit` messages before `before` (or the newest), oldest first, as `viewer_id` may see
/// them (unavailable ones marked, not dropped, so the conversation keeps its shape); `None`
/// when `before` is not a message of this group.
pub async fn list_group_messages_page(
    client: &impl Querier,
    group_id: &GroupId,
    viewer_id: Option<&UserId>,
    before: Option<&MessageId>,
    limit: i64,
) -> Result<Option<Page<StoredGroupMessage>>, DbError> {
    let keyset = Keyset {
        cursor_sql: PAGE_CURSOR_SQL,
        page_sql: PAGE_SQL,
        scope: &[(&group_id, Type::TEXT), (&viewer_id, Type::TEXT)],
    };
    fetch_page(client, &keyset, before, limit, stored).await
}

/// The group chat's hot queries (see [`super::hot`]).
pub const HOT_QUERIES: &[super::hot::HotQuery] = {
    use super::hot::{HotParam, HotQuery};
    &[
        HotQuery {
            name: "group_messages.page",
            sql: PAGE_SQL,
            params: &[
                HotParam::Text(Some("grp_00003")),
                HotParam::Text(Some("user_00003")),
                HotParam::Text(None),
                HotParam::Text(None),
                HotParam::Int8(51),
            ],
            expects_index: "GroupMessage_groupChatId_createdAt_idx|GroupMessage_groupChatId_idx",
            on_relation: "GroupMessage",
        },
        HotQuery {
            name: "group_messages.recent",
            sql: RECENT_SQL,
            params: &[
                HotParam::Text(Some("grp_00003")),
                HotParam::Text(Some("user_00003")),
                HotParam::Int8(20),
            ],
            expects_index: "GroupMessage_groupChatId_createdAt_idx|GroupMessage_groupChatId_idx",
            on_relation: "GroupMessage",
        },
        HotQuery {
            name: "group_chats.members_by_last_spoken",
            sql: MEMBERS_SQL,
            params: &[
                HotParam::Text(Some("grp_00003")),
                HotParam::Text(Some("user_00003")),
            ],
            expects_index: "GroupMessage_groupChatId_senderId_createdAt_idx|GroupMessage_groupChatId_senderId_idx|GroupMessage_groupChatId_idx",
            on_relation: "GroupMessage",
        },
    ]
};
