//! Typed inputs: what clients send, parsed once into types that can only hold valid values.
//!
//! Each rule lives here once, so the same bad value gets the same answer on every route: a 400
//! `invalid_parameter` naming the parameter or field, before any cache or database work. (The
//! rule of ids lives with their types, in [`crate::id`], which the database layer shares.)

use std::collections::HashMap;

use axum::http::Uri;

use crate::id::{Id, MessageId};
use crate::platform::error::ApiError;

/// Longest prompt, in characters (Unicode scalar values).
pub const MAX_PROMPT_CHARS: usize = 4000;
/// History page size when `limit` is not given, and the largest allowed.
pub const DEFAULT_PAGE_LIMIT: i64 = 50;
pub const MAX_PAGE_LIMIT: i64 = 100;

/// The query string as a map; a parameter given twice keeps its first value.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Query(HashMap<String, String>);

impl Query {
    pub fn of(uri: &Uri) -> Query {
        let mut map = HashMap::new();
        if let Some(q) = uri.query() {
            for (k, v) in url::form_urlencoded::parse(q.as_bytes()) {
                map.entry(k.into_owned()).or_insert_with(|| v.into_owned());
            }
        }
        Query(map)
    }

    /// A present, non-empty parameter; an empty value (`?q=`) counts as absent.
    pub fn get(&self, name: &str) -> Option<&str> {
        self.0
            .get(name)
            .map(String::as_str)
            .filter(|v| !v.is_empty())
    }

    /// A required id: a rewrite appends the path's id to the query string (`?chatId=…`).
    pub fn id<K>(&self, name: &'static str) -> Result<Id<K>, ApiError> {
        let raw = self
            .get(name)
            .ok_or_else(|| ApiError::bad_parameter(name, "is required"))?;
        Ok(Id::parse(name, raw)?)
    }

    /// An optional id.
    pub fn optional_id<K>(&self, name: &'static str) -> Result<Option<Id<K>>, ApiError> {
        Ok(self.get(name).map(|raw| Id::parse(name, raw)).transpose()?)
    }
}

impl From<HashMap<String, String>> for Query {
    fn from(map: HashMap<String, String>) -> Self {
        Query(map)
    }
}

/// What a user asks a companion: 1–4000 characters, not only whitespace, no NUL (Postgres text
/// can't hold it). Kept exactly as sent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Prompt(String);

impl Prompt {
    pub fn parse(raw: String) -> Result<Prompt, ApiError> {
        Self::parse_as("prompt", raw)
    }

    /// The same rules, for a prompt that arrives in another field (the text of the last user
    /// message of an AI SDK chat request); errors name `param`.
    pub fn parse_as(param: &str, raw: String) -> Result<Prompt, ApiError> {
        if raw.trim().is_empty() {
            return Err(ApiError::bad_parameter(param, "must not be empty"));
        }
        if raw.chars().count() > MAX_PROMPT_CHARS {
            return Err(ApiError::bad_parameter(
                param,
                format!("must be at most {MAX_PROMPT_CHARS} characters"),
            ));
        }
        if raw.contains('\0') {
            return Err(ApiError::bad_parameter(
                param,
                "must not contain NUL characters",
            ));
        }
        Ok(Prompt(raw))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    pub fn into_string(self) -> String {
        self.0
    }

    /// The prompt as reply caches key it: trimmed, inner whitespace collapsed, lower-cased.
    pub fn normalized(&self) -> String {
        self.0
            .split_whitespace()
            .collect::<Vec<_>>()
            .join(" ")
            .to_lowercase()
    }
}

/// A name people read (a companion's name, a group's title): trimmed, 1–`max` characters, and
/// nothing that could make it look like another: no control characters, no bidirectional
/// overrides or isolates, no zero-width or invisible filler characters.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DisplayName(String);

impl DisplayName {
    pub fn parse(field: &'static str, raw: &str, max: usize) -> Result<DisplayName, ApiError> {
        let name = raw.trim();
        let chars = name.chars().count();
        if chars == 0 || chars > max {
            return Err(ApiError::bad_parameter(
                field,
                format!("`{field}` must be 1–{max} characters"),
            ));
        }
        if let Some(bad) = name.chars().find(|&c| is_deceptive(c)) {
            return Err(ApiError::bad_parameter(
                field,
                format!(
                    "`{field}` may not contain control, bidirectional or invisible characters \
                     (U+{:04X})",
                    bad as u32
                ),
            ));
        }
        Ok(DisplayName(name.to_owned()))
    }

    pub fn into_string(self) -> String {
        self.0
    }
}

/// Characters that render as nothing or reorder what follows them: how one name is made to look
/// like another. (Variation selectors stay allowed: emoji need them.)
fn is_deceptive(c: char) -> bool {
    c.is_control()
        || matches!(
            c,
            '\u{00AD}'                     // soft hyphen
            | '\u{034F}'                   // combining grapheme joiner
            | '\u{061C}'                   // Arabic letter mark
            | '\u{115F}' | '\u{1160}'      // Hangul fillers
            | '\u{17B4}' | '\u{17B5}'      // Khmer inherent vowels
            | '\u{180B}'..='\u{180F}'      // Mongolian free variation selectors, vowel separator
            | '\u{200B}'..='\u{200F}'      // zero-width space/non-joiner/joiner, LRM, RLM
            | '\u{202A}'..='\u{202E}'      // bidi embeddings and overrides
            | '\u{2060}'..='\u{2064}'      // word joiner, invisible operators
            | '\u{2066}'..='\u{206F}'      // bidi isolates, deprecated format characters
            | '\u{3164}'                   // Hangul filler
            | '\u{FEFF}'                   // zero-width no-break space
            | '\u{FFA0}'                   // halfwidth Hangul filler
            | '\u{FFF9}'..='\u{FFFB}'      // interlinear annotations
            | '\u{E0000}'..='\u{E007F}'    // tag characters
        )
}

/// A page of history: the `limit` (1–100) messages before message `before` (or the newest).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HistoryPage {
    pub before: Option<MessageId>,
    pub limit: i64,
}

impl HistoryPage {
    pub fn parse(query: &Query) -> Result<HistoryPage, ApiError> {
        let before = query.optional_id("before")?;
        let limit = match query.0.get("limit") {
            None => DEFAULT_PAGE_LIMIT,
            Some(raw) => raw
                .parse::<i64>()
                .ok()
                .filter(|n| (1..=MAX_PAGE_LIMIT).contains(n))
                .ok_or_else(|| {
                    ApiError::bad_parameter(
                        "limit",
                        format!("must be an integer from 1 to {MAX_PAGE_LIMIT}"),
                    )
                })?,
        };
        Ok(HistoryPage { before, limit })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn query(pairs: &[(&str, &str)]) -> Query {
        Query::from(
            pairs
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect::<HashMap<_, _>>(),
        )
    }

    fn param_of(err: ApiError) -> String {
        match err {
            ApiError::BadParameter { param, .. } => param,
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn a_missing_id_is_named_and_an_empty_one_is_missing() {
        let group = |q: Query| q.id::<crate::id::kind::Group>("groupId");
        assert_eq!(param_of(group(query(&[])).unwrap_err()), "groupId");
        assert_eq!(
            param_of(group(query(&[("groupId", "")])).unwrap_err()),
            "groupId"
        );
        let bad = group(query(&[("groupId", "x;y")])).unwrap_err();
        assert_eq!(
            bad.to_string(),
            format!(
                "invalid parameter `groupId`: must be 1–{} letters, digits, `_` or `-`",
                crate::id::MAX_ID_CHARS
            )
        );
        assert_eq!(
            query(&[("x", "1")])
                .optional_id::<crate::id::kind::Message>("before")
                .unwrap(),
            None
        );
    }

    #[test]
    fn the_first_of_a_repeated_parameter_wins() {
        let q = Query::of(&"/p?chatId=a&chatId=b".parse().unwrap());
        assert_eq!(
            q.id::<crate::id::kind::Companion>("chatId")
                .unwrap()
                .as_str(),
            "a"
        );
    }

    #[test]
    fn a_display_name_refuses_what_could_impersonate_another() {
        for bad in [
            "a\u{202e}b",
            "Ada\u{200b}",
            "A\u{200d}da",
            "\u{2066}Ada\u{2069}",
            "Ada\u{feff}",
            "Ada\nLovelace",
            "\u{3164}",
            "x\u{e0041}",
        ] {
            assert_eq!(
                param_of(DisplayName::parse("name", bad, 100).unwrap_err()),
                "name",
                "{bad:?}"
            );
        }
        for (bad, max) in [("   ", 100), ("abc", 2)] {
            assert_eq!(
                param_of(DisplayName::parse("name", bad, max).unwrap_err()),
                "name"
            );
        }
    }

    #[test]
    fn a_display_name_keeps_every_script_and_emoji() {
        for ok in [
            "Ada Lovelace",
            "Søren",
            "東京の猫",
            "مرحبا",
            "Rock 🎸",
            "❤\u{FE0F} fan",
        ] {
            assert_eq!(
                DisplayName::parse("name", ok, 100).unwrap().into_string(),
                ok
            );
        }
        assert_eq!(
            DisplayName::parse("name", "  Ada  ", 100)
                .unwrap()
                .into_string(),
            "Ada"
        );
    }

    #[test]
    fn prompts_are_checked_by_characters_not_bytes() {
        assert!(Prompt::parse("é".repeat(MAX_PROMPT_CHARS)).is_ok());
        assert!(Prompt::parse("é".repeat(MAX_PROMPT_CHARS + 1)).is_err());
        assert!(Prompt::parse(" \n\t".into()).is_err());
        assert!(Prompt::parse("a\0b".into()).is_err());
        assert!(Prompt::parse("'; DROP TABLE \"Message\"; --".into()).is_ok());
    }

    #[test]
    fn normalized_prompts_ignore_case_and_spacing() {
        let p = Prompt::parse("  Hello\n  WORLD ".into()).unwrap();
        assert_eq!(p.normalized(), "hello world");
    }

    #[test]
    fn limits_outside_one_to_a_hundred_are_refused() {
        let page = |v: &str| HistoryPage::parse(&query(&[("limit", v)]));
        assert_eq!(page("100").unwrap().limit, 100);
        for bad in ["0", "101", "-1", "ten", ""] {
            assert_eq!(param_of(page(bad).unwrap_err()), "limit", "{bad}");
        }
        assert_eq!(
            param_of(HistoryPage::parse(&query(&[("before", "x;y")])).unwrap_err()),
            "before"
        );
    }
}
