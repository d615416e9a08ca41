//! Validation of what chat clients send: the prompt, ids from the query string, history
//! paging, and the client address rate limits key on.

use std::collections::HashMap;

use axum::http::HeaderMap;
use serde::Deserialize;

use crate::platform::error::ApiError;

/// Longest prompt, in characters (Unicode scalar values).
pub const MAX_PROMPT_CHARS: usize = 4000;
/// Longest id accepted in a path; real ids are 25–36 characters.
pub const MAX_ID_CHARS: usize = 128;
/// History page size when `limit` is not given, and the largest allowed.
pub const DEFAULT_PAGE_LIMIT: i64 = 50;
pub const MAX_PAGE_LIMIT: i64 = 100;

/// The body of `useCompletion`: `{"prompt": "…"}` (other fields it may add are ignored).
#[derive(Debug, Deserialize)]
pub struct PromptBody {
    pub prompt: String,
}

/// The prompt, checked: 1–4000 characters, not only whitespace, no NUL (Postgres text can't
/// hold it). Stored exactly as sent.
pub fn validate_prompt(prompt: &str) -> Result<(), ApiError> {
    if prompt.trim().is_empty() {
        return Err(ApiError::bad_parameter("prompt", "must not be empty"));
    }
    if prompt.chars().count() > MAX_PROMPT_CHARS {
        return Err(ApiError::bad_parameter(
            "prompt",
            format!("must be at most {MAX_PROMPT_CHARS} characters"),
        ));
    }
    if prompt.contains('\0') {
        return Err(ApiError::bad_parameter(
            "prompt",
            "must not contain NUL characters",
        ));
    }
    Ok(())
}

/// The prompt as the anonymous reply cache keys it: trimmed, inner whitespace collapsed,
/// lower-cased.
pub fn normalize_prompt(prompt: &str) -> String {
    prompt
        .split_whitespace()
        .collect::<Vec<_>>()
        .join(" ")
        .to_lowercase()
}

/// A required id parameter of the query string (rewrites append it there).
pub fn id_param(query: &HashMap<String, String>, name: &'static str) -> Result<String, ApiError> {
    let raw = query
        .get(name)
        .ok_or_else(|| ApiError::bad_parameter(name, "is required"))?;
    check_id(name, raw)?;
    Ok(raw.clone())
}

fn check_id(name: &str, raw: &str) -> Result<(), ApiError> {
    if raw.is_empty() || raw.chars().count() > MAX_ID_CHARS || raw.chars().any(char::is_control) {
        return Err(ApiError::bad_parameter(
            name,
            format!("must be 1–{MAX_ID_CHARS} printable characters"),
        ));
    }
    Ok(())
}

/// `before` (a message id) and `limit` (1–100) of a history request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PageParams {
    pub before: Option<String>,
    pub limit: i64,
}

pub fn page_params(query: &HashMap<String, String>) -> Result<PageParams, ApiError> {
    let before = match query.get("before") {
        None => None,
        Some(b) => {
            check_id("before", b)?;
            Some(b.clone())
        }
    };
    let limit = match query.get("limit") {
        None => DEFAULT_PAGE_LIMIT,
        Some(raw) => match raw.parse::<i64>() {
            Ok(n) if (1..=MAX_PAGE_LIMIT).contains(&n) => n,
            _ => {
                return Err(ApiError::bad_parameter(
                    "limit",
                    format!("must be an integer from 1 to {MAX_PAGE_LIMIT}"),
                ))
            }
        },
    };
    Ok(PageParams { before, limit })
}

/// The client's address as Vercel reports it (`x-forwarded-for`'s first entry, else
/// `x-real-ip`); anonymous rate limits key on it.
pub fn client_address(headers: &HeaderMap) -> String {
    let first = |name: &str| {
        headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.split(',').next())
            .map(str::trim)
            .filter(|v| !v.is_empty() && v.len() <= 64)
            .map(str::to_owned)
    };
    first("x-forwarded-for")
        .or_else(|| first("x-real-ip"))
        .unwrap_or_else(|| "unknown".to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prompts_are_checked_by_characters_not_bytes() {
        assert!(validate_prompt(&"é".repeat(MAX_PROMPT_CHARS)).is_ok());
        assert!(validate_prompt(&"é".repeat(MAX_PROMPT_CHARS + 1)).is_err());
        assert!(validate_prompt(" \n\t").is_err());
        assert!(validate_prompt("a\0b").is_err());
        assert!(validate_prompt("'; DROP TABLE \"Message\"; --").is_ok());
    }

    #[test]
    fn normalized_prompts_ignore_case_and_spacing() {
        assert_eq!(normalize_prompt("  Hello\n  WORLD "), "hello world");
    }

    #[test]
    fn limits_outside_one_to_a_hundred_are_refused() {
        let q = |v: &str| HashMap::from([("limit".to_owned(), v.to_owned())]);
        assert_eq!(page_params(&q("100")).unwrap().limit, 100);
        for bad in ["0", "101", "-1", "ten", ""] {
            assert!(page_params(&q(bad)).is_err(), "{bad}");
        }
    }

    #[test]
    fn the_first_forwarded_address_is_the_client() {
        let mut h = HeaderMap::new();
        h.insert("x-forwarded-for", "203.0.113.9, 10.0.0.1".parse().unwrap());
        assert_eq!(client_address(&h), "203.0.113.9");
        assert_eq!(client_address(&HeaderMap::new()), "unknown");
    }
}
