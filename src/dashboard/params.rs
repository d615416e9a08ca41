//! The dashboard's query parameters, validated: anything out of range is a 400 naming the
//! parameter, before any cache or database work.

use crate::id::CategoryId;
use crate::platform::error::ApiError;
use crate::platform::input::Query;

/// Companions per page unless `pageSize` says otherwise.
pub const DEFAULT_PAGE_SIZE: u32 = 10;
/// Largest `pageSize` accepted.
pub const MAX_PAGE_SIZE: u32 = 50;
/// Deepest page accepted: nobody pages this far by hand, and deep offsets are costly.
pub const MAX_PAGE: u32 = 1_000;
/// Deepest page the shared cache keeps; deeper pages are built for whoever asks.
pub const MAX_SHARED_PAGE: u32 = 5;
/// Longest `q` accepted, in characters.
pub const MAX_QUERY_CHARS: usize = 64;
/// Punctuation a companion name search may contain besides letters, digits and spaces.
const QUERY_PUNCTUATION: &str = "'-.&,!?():";

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct DashboardParams {
    pub category_id: Option<CategoryId>,
    pub q: Option<String>,
    pub page: u32,
    pub page_size: u32,
}

impl DashboardParams {
    pub fn parse(query: &Query) -> Result<Self, ApiError> {
        Ok(DashboardParams {
            category_id: query.optional_id("categoryId")?,
            q: query.get("q").map(parse_query).transpose()?,
            page: parse_number(query, "page", 1, 1, MAX_PAGE)?,
            page_size: parse_number(query, "pageSize", DEFAULT_PAGE_SIZE, 1, MAX_PAGE_SIZE)?,
        })
    }

    /// The default first page of a category (or of all): what the cron job snapshots.
    pub fn first_page_of(category_id: Option<CategoryId>) -> Self {
        DashboardParams {
            category_id,
            q: None,
            page: 1,
            page_size: DEFAULT_PAGE_SIZE,
        }
    }

    /// Whether this is a page the cron job snapshots ([`DashboardParams::first_page_of`]).
    pub fn is_snapshot_page(&self) -> bool {
        self.q.is_none() && self.page == 1 && self.page_size == DEFAULT_PAGE_SIZE
    }

    /// Whether the shared cache should keep this page: the pages many visitors ask for (no
    /// search, the first [`MAX_SHARED_PAGE`] pages), so a stream of distinct URLs can't grow
    /// the shared cache without bound. (Unknown categories are checked by the caller.)
    pub fn is_worth_sharing(&self) -> bool {
        self.q.is_none() && self.page <= MAX_SHARED_PAGE
    }

    pub fn offset(&self) -> i64 {
        i64::from(self.page - 1) * i64::from(self.page_size)
    }
}

fn parse_number(
    query: &Query,
    name: &str,
    default: u32,
    min: u32,
    max: u32,
) -> Result<u32, ApiError> {
    let Some(raw) = query.get(name) else {
        return Ok(default);
    };
    let n: u32 = raw
        .parse()
        .ok()
        .filter(|_| raw.bytes().all(|b| b.is_ascii_digit()))
        .ok_or_else(|| ApiError::bad_parameter(name, format!("`{name}` must be a whole number")))?;
    if !(min..=max).contains(&n) {
        return Err(ApiError::bad_parameter(
            name,
            format!("`{name}` must be between {min} and {max}"),
        ));
    }
    Ok(n)
}

/// A name search: letters and digits of any script, spaces, and a little punctuation. Control
/// and formatting characters (bidi overrides, zero-width), SQL punctuation and symbols are
/// refused rather than searched for: no companion name holds them.
fn parse_query(raw: &str) -> Result<String, ApiError> {
    let q = raw.trim();
    let chars = q.chars().count();
    if chars == 0 || chars > MAX_QUERY_CHARS {
        return Err(ApiError::bad_parameter(
            "q",
            format!("`q` must be 1–{MAX_QUERY_CHARS} characters"),
        ));
    }
    if let Some(bad) = q
        .chars()
        .find(|&c| !(c.is_alphanumeric() || c == ' ' || QUERY_PUNCTUATION.contains(c)))
    {
        return Err(ApiError::bad_parameter(
            "q",
            format!(
                "`q` may hold letters, digits, spaces and {QUERY_PUNCTUATION}; not U+{:04X}",
                bad as u32
            ),
        ));
    }
    if q.contains("--") {
        return Err(ApiError::bad_parameter("q", "`q` may not contain `--`"));
    }
    // The search is case-insensitive, so the same search in any case or spacing is one page
    // (one cache key, one build).
    Ok(q.split_whitespace()
        .collect::<Vec<_>>()
        .join(" ")
        .to_lowercase())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn parse(pairs: &[(&str, &str)]) -> Result<DashboardParams, ApiError> {
        let map: HashMap<String, String> = pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        DashboardParams::parse(&Query::from(map))
    }

    fn rejected_param(pairs: &[(&str, &str)]) -> String {
        match parse(pairs) {
            Err(ApiError::BadParameter { param, .. }) => param,
            other => panic!("expected a 400 for {pairs:?}, got {other:?}"),
        }
    }

    #[test]
    fn defaults_are_page_one_of_ten() {
        let p = parse(&[]).unwrap();
        assert_eq!(
            (p.page, p.page_size, p.category_id.clone(), p.q.clone()),
            (1, 10, None, None)
        );
        assert!(p.is_snapshot_page());
    }

    #[test]
    fn out_of_range_numbers_name_their_parameter() {
        assert_eq!(rejected_param(&[("page", "0")]), "page");
        assert_eq!(rejected_param(&[("page", "abc")]), "page");
        assert_eq!(rejected_param(&[("page", "-1")]), "page");
        assert_eq!(rejected_param(&[("page", "+2")]), "page");
        assert_eq!(rejected_param(&[("page", "99999999999")]), "page");
        assert_eq!(rejected_param(&[("pageSize", "1000")]), "pageSize");
        assert_eq!(rejected_param(&[("pageSize", "0")]), "pageSize");
        assert_eq!(rejected_param(&[("pageSize", "1.5")]), "pageSize");
    }

    #[test]
    fn a_query_longer_than_64_characters_is_refused() {
        let long = "a".repeat(65);
        assert_eq!(rejected_param(&[("q", &long)]), "q");
        let max = "é".repeat(64);
        assert_eq!(parse(&[("q", &max)]).unwrap().q.unwrap(), max);
    }

    #[test]
    fn sql_looking_and_odd_unicode_input_is_refused() {
        for q in [
            "'; DROP TABLE \"Companion\"; --",
            "a%",
            "x_y\\",
            "name\u{202e}",
            "zero\u{200b}width",
            "nul\0",
            "1=1 OR",
        ] {
            assert_eq!(rejected_param(&[("q", q)]), "q", "{q:?}");
        }
        for id in ["1 OR 1=1", "cat'--", "ca\u{0301}t", "😀", &"c".repeat(65)] {
            assert_eq!(
                rejected_param(&[("categoryId", id)]),
                "categoryId",
                "{id:?}"
            );
        }
    }

    #[test]
    fn ordinary_searches_in_any_script_pass() {
        for q in [
            "Ada",
            "O'Brien",
            "Søren Kierkegaard",
            "東京",
            "Dr. Who?",
            "Rock & Roll",
        ] {
            let lower = q.to_lowercase();
            assert_eq!(
                parse(&[("q", q)]).unwrap().q.as_deref(),
                Some(lower.as_str())
            );
        }
    }

    #[test]
    fn a_search_in_any_case_or_spacing_is_one_search() {
        let one = parse(&[("q", "  ada   LOVELACE ")]).unwrap();
        assert_eq!(one.q.as_deref(), Some("ada lovelace"));
        assert_eq!(one, parse(&[("q", "Ada Lovelace")]).unwrap());
    }

    #[test]
    fn only_shallow_pages_without_a_search_are_shared() {
        assert!(parse(&[]).unwrap().is_worth_sharing());
        assert!(parse(&[("page", "5"), ("pageSize", "50")])
            .unwrap()
            .is_worth_sharing());
        assert!(!parse(&[("page", "6")]).unwrap().is_worth_sharing());
        assert!(!parse(&[("q", "ada")]).unwrap().is_worth_sharing());
    }

    #[test]
    fn empty_values_count_as_absent() {
        let p = parse(&[("q", ""), ("categoryId", ""), ("page", "")]).unwrap();
        assert_eq!(p, parse(&[]).unwrap());
    }
}
