//! Ids of rows, typed by what they name: an [`Id<K>`] of a companion can't be passed where a
//! user's is expected, so two adjacent ids of a query can't be swapped unseen.
//!
//! An id enters once, either from a client ([`Id::parse`]: refused unless it could be an id we
//! issued) or as one we issued ([`Id::issued`]: a row read back, a verified token's subject, the
//! configuration), and stays typed down to the SQL, where it binds as `text`.
//!
//! Ids in the right places:
//!
//! ```
//! use gcbb::chat::reply::cached::demo_reply_key;
//! use gcbb::id::{CompanionId, GroupId};
//! use gcbb::platform::input::Prompt;
//!
//! let (group, companion) = (GroupId::issued("grp_1"), CompanionId::issued("cmp_1"));
//! let prompt = Prompt::parse("hi".into()).unwrap();
//! demo_reply_key(&group, &companion, &prompt);
//! ```
//!
//! The same two swapped don't compile:
//!
//! ```compile_fail,E0308
//! use gcbb::chat::reply::cached::demo_reply_key;
//! use gcbb::id::{CompanionId, GroupId};
//! use gcbb::platform::input::Prompt;
//!
//! let (group, companion) = (GroupId::issued("grp_1"), CompanionId::issued("cmp_1"));
//! let prompt = Prompt::parse("hi".into()).unwrap();
//! demo_reply_key(&companion, &group, &prompt);
//! ```

use std::error::Error as StdError;
use std::fmt;
use std::hash::{Hash, Hasher};
use std::marker::PhantomData;

use bytes::BytesMut;
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use tokio_postgres::types::{to_sql_checked, FromSql, IsNull, ToSql, Type};

/// Longest id accepted; the ids we store are 12–36 characters (cuid, uuid, our readable ones).
pub const MAX_ID_CHARS: usize = 64;

/// What an id names. Uninhabited: only the type is used.
pub mod kind {
    pub enum Companion {}
    pub enum User {}
    pub enum Group {}
    pub enum Category {}
    pub enum Message {}
}

pub type CompanionId = Id<kind::Companion>;
/// A Clerk user (the `sub` of a verified session token), or the platform's own owner of
/// system companions (`SYSTEM_USER_ID`).
pub type UserId = Id<kind::User>;
pub type GroupId = Id<kind::Group>;
pub type CategoryId = Id<kind::Category>;
/// A message of a chat or a group chat (also a reply's stream id).
pub type MessageId = Id<kind::Message>;

/// The id of a row of kind `K`: 1–64 ASCII letters, digits, `_` or `-` when a client sent it.
pub struct Id<K> {
    raw: String,
    // `fn() -> K`: no `K` is held, so the id is `Send`/`Sync` whatever `K` is.
    kind: PhantomData<fn() -> K>,
}

/// An id a client sent that can't be one we issued; `param` names where it came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InvalidId {
    pub param: &'static str,
}

impl fmt::Display for InvalidId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "must be 1–{MAX_ID_CHARS} letters, digits, `_` or `-`")
    }
}

impl StdError for InvalidId {}

impl<K> Id<K> {
    /// A client's id, checked; anything else can't be an id we issued, so it is refused rather
    /// than looked up. `param` names the parameter or field in the error.
    pub fn parse(param: &'static str, raw: &str) -> Result<Self, InvalidId> {
        let valid = !raw.is_empty()
            && raw.len() <= MAX_ID_CHARS
            && raw
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-');
        if valid {
            Ok(Self::issued(raw))
        } else {
            Err(InvalidId { param })
        }
    }

    /// An id we (or Clerk) issued: read back from a row, a verified token's subject, the
    /// configuration. Not checked again: it names what it names even where it breaks the
    /// rules of [`Id::parse`].
    pub fn issued(raw: impl Into<String>) -> Self {
        Id {
            raw: raw.into(),
            kind: PhantomData,
        }
    }

    /// A new id (a v4 UUID) for a row about to be written.
    pub fn generate() -> Self {
        Self::issued(uuid::Uuid::new_v4().to_string())
    }

    pub fn as_str(&self) -> &str {
        &self.raw
    }
}

// Written out rather than derived: a derive would ask the same of `K`, which is never held.
impl<K> Clone for Id<K> {
    fn clone(&self) -> Self {
        Self::issued(self.raw.clone())
    }
}

impl<K> PartialEq for Id<K> {
    fn eq(&self, other: &Self) -> bool {
        self.raw == other.raw
    }
}

impl<K> Eq for Id<K> {}

impl<K> Hash for Id<K> {
    fn hash<H: Hasher>(&self, state: &mut H) {
        self.raw.hash(state)
    }
}

impl<K> PartialOrd for Id<K> {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}

impl<K> Ord for Id<K> {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        self.raw.cmp(&other.raw)
    }
}

impl<K> fmt::Debug for Id<K> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&self.raw, f)
    }
}

impl<K> fmt::Display for Id<K> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.raw)
    }
}

impl<K> AsRef<str> for Id<K> {
    fn as_ref(&self) -> &str {
        &self.raw
    }
}

impl<K> PartialEq<str> for Id<K> {
    fn eq(&self, other: &str) -> bool {
        self.raw == other
    }
}

impl<K> PartialEq<&str> for Id<K> {
    fn eq(&self, other: &&str) -> bool {
        self.raw == *other
    }
}

impl<K> PartialEq<String> for Id<K> {
    fn eq(&self, other: &String) -> bool {
        self.raw == *other
    }
}

/// As the string it is (the JSON of pages and of the reply journal is unchanged).
impl<K> Serialize for Id<K> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&self.raw)
    }
}

/// Only what we wrote is read back (the cache, the journal): taken as issued.
impl<'de, K> Deserialize<'de> for Id<K> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        String::deserialize(deserializer).map(Self::issued)
    }
}

/// Binds as the `text` it is.
impl<K> ToSql for Id<K> {
    fn to_sql(
        &self,
        ty: &Type,
        out: &mut BytesMut,
    ) -> Result<IsNull, Box<dyn StdError + Sync + Send>> {
        self.raw.as_str().to_sql(ty, out)
    }

    fn accepts(ty: &Type) -> bool {
        <&str as ToSql>::accepts(ty)
    }

    to_sql_checked!();
}

/// A row's id column, read as issued.
impl<'a, K> FromSql<'a> for Id<K> {
    fn from_sql(ty: &Type, raw: &'a [u8]) -> Result<Self, Box<dyn StdError + Sync + Send>> {
        <&str as FromSql>::from_sql(ty, raw).map(Self::issued)
    }

    fn accepts(ty: &Type) -> bool {
        <&str as FromSql>::accepts(ty)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_id_is_letters_digits_underscore_and_dash() {
        for ok in [
            "comp_demo_01",
            "cm1abc2def3",
            "0b8f-4c1e-9a2b",
            &"a".repeat(64),
        ] {
            assert_eq!(CompanionId::parse("chatId", ok).unwrap().as_str(), ok);
        }
        for bad in [
            "",
            &"a".repeat(65),
            "x' OR 1=1--",
            "a b",
            "a\0b",
            "\u{202e}abc",
            "é",
            "a/b",
        ] {
            assert_eq!(
                CompanionId::parse("chatId", bad).unwrap_err(),
                InvalidId { param: "chatId" },
                "{bad:?}"
            );
        }
    }

    #[test]
    fn an_id_travels_as_the_string_it_is() {
        let id = GroupId::parse("groupId", "grp_01").unwrap();
        let json = serde_json::to_string(&id).unwrap();
        assert_eq!(json, "\"grp_01\"");
        assert_eq!(serde_json::from_str::<GroupId>(&json).unwrap(), id);
        assert_eq!(id.to_string(), "grp_01");
    }
}
