//! Where a request carries its session token: the `Authorization` header or Clerk's
//! `__session` cookie.
//!
//! The Cookie header is split by hand (RFC 6265 §5.4 `name=value; name=value`): the `cookie`
//! crate would be a dependency for ten lines, and we only ever read one cookie by exact name.

use axum::http::{header, HeaderMap};

use super::AuthError;

/// Clerk's session cookie (same-origin front ends send it instead of a header).
pub const SESSION_COOKIE: &str = "__session";

/// The session token of a request, or why the request's credentials are unusable.
///
/// - `Authorization: Bearer <t>` wins; any other scheme, an empty bearer, or several
///   Authorization headers is an error (401), never anonymous.
/// - Otherwise the first non-empty `__session` cookie across all Cookie headers. An empty
///   `__session` value counts as signed out, as in Clerk's own SDK (browsers keep such a
///   cookie after sign-out on some setups).
/// - Otherwise `Ok(None)`: anonymous.
pub fn read_session_token(headers: &HeaderMap) -> Result<Option<String>, AuthError> {
    let mut authorizations = headers.get_all(header::AUTHORIZATION).iter();
    if let Some(value) = authorizations.next() {
        if authorizations.next().is_some() {
            return Err(AuthError::BadAuthorizationHeader);
        }
        return parse_bearer(value.as_bytes()).map(Some);
    }
    Ok(session_cookie(headers).filter(|t| !t.is_empty()))
}

/// The session token of a request, if it carries a usable one.
///
/// A request whose Authorization header is unusable (Basic, empty bearer) yields `None` here;
/// decisions about who is asking belong to the `Viewer` extractor, which answers 401 for it.
pub fn session_token(headers: &HeaderMap) -> Option<String> {
    read_session_token(headers).ok().flatten()
}

/// True when the request carries any credential at all (header or cookie), valid or not.
/// A response to such a request must never be publicly cacheable.
pub fn has_credentials(headers: &HeaderMap) -> bool {
    headers.contains_key(header::AUTHORIZATION) || session_cookie(headers).is_some()
}

fn parse_bearer(value: &[u8]) -> Result<String, AuthError> {
    let value = std::str::from_utf8(value).map_err(|_| AuthError::BadAuthorizationHeader)?;
    let value = value.trim();
    let (scheme, rest) = value.split_once(' ').unwrap_or((value, ""));
    // Auth schemes are case-insensitive (RFC 9110 §11.1).
    if !scheme.eq_ignore_ascii_case("bearer") {
        return Err(AuthError::UnsupportedScheme);
    }
    let token = rest.trim();
    if token.is_empty() {
        return Err(AuthError::EmptyToken);
    }
    Ok(token.to_owned())
}

/// The value of the first `__session` cookie (possibly empty), if the request has one.
fn session_cookie(headers: &HeaderMap) -> Option<String> {
    let mut found: Option<String> = None;
    for header_value in headers.get_all(header::COOKIE) {
        for pair in header_value.as_bytes().split(|b| *b == b';') {
            let pair = pair.trim_ascii();
            let Some(eq) = pair.iter().position(|b| *b == b'=') else {
                continue;
            };
            if pair[..eq].trim_ascii() != SESSION_COOKIE.as_bytes() {
                continue;
            }
            let raw = pair[eq + 1..].trim_ascii();
            let raw = raw
                .strip_prefix(b"\"")
                .and_then(|r| r.strip_suffix(b"\""))
                .unwrap_or(raw);
            // Non-UTF-8 bytes can't be a JWT; keep them (lossily) so verification says 401.
            let value = String::from_utf8_lossy(raw).into_owned();
            match &found {
                Some(first) if !first.is_empty() => {}
                _ => found = Some(value),
            }
        }
    }
    found
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;

    fn headers(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.append(
                axum::http::HeaderName::from_bytes(k.as_bytes()).unwrap(),
                HeaderValue::from_str(v).unwrap(),
            );
        }
        h
    }

    #[test]
    fn a_bearer_token_is_read_case_insensitively() {
        let h = headers(&[("authorization", "bearer  abc.def.ghi ")]);
        assert_eq!(
            read_session_token(&h).unwrap().as_deref(),
            Some("abc.def.ghi")
        );
    }

    #[test]
    fn basic_auth_is_an_error_not_anonymous() {
        let h = headers(&[("authorization", "Basic dXNlcjpwYXNz")]);
        assert!(matches!(
            read_session_token(&h),
            Err(AuthError::UnsupportedScheme)
        ));
        assert_eq!(session_token(&h), None);
        assert!(has_credentials(&h));
    }

    #[test]
    fn an_empty_bearer_is_an_error() {
        for v in ["Bearer", "Bearer ", "Bearer    "] {
            let h = headers(&[("authorization", v)]);
            assert!(
                matches!(read_session_token(&h), Err(AuthError::EmptyToken)),
                "{v:?}"
            );
        }
    }

    #[test]
    fn two_authorization_headers_are_an_error() {
        let h = headers(&[("authorization", "Bearer a"), ("authorization", "Bearer b")]);
        assert!(read_session_token(&h).is_err());
    }

    #[test]
    fn the_header_wins_over_the_cookie() {
        let h = headers(&[("authorization", "Bearer h"), ("cookie", "__session=c")]);
        assert_eq!(read_session_token(&h).unwrap().as_deref(), Some("h"));
    }

    #[test]
    fn the_session_cookie_is_found_among_others_and_across_headers() {
        let h = headers(&[
            ("cookie", "theme=dark;x__session=no; __session_abc=no"),
            ("cookie", "a=1;   __session=tok.en.value ; b=2"),
        ]);
        assert_eq!(
            read_session_token(&h).unwrap().as_deref(),
            Some("tok.en.value")
        );
        assert!(has_credentials(&h));
    }

    #[test]
    fn lookalike_cookies_are_not_the_session() {
        let h = headers(&[(
            "cookie",
            "__session_xyz=a; x__session=b; __sessionx=c; __session",
        )]);
        assert_eq!(read_session_token(&h).unwrap(), None);
        assert!(!has_credentials(&h));
    }

    #[test]
    fn a_quoted_cookie_value_is_unquoted() {
        let h = headers(&[("cookie", "__session=\"t.o.k\"")]);
        assert_eq!(session_token(&h).as_deref(), Some("t.o.k"));
    }

    #[test]
    fn an_empty_session_cookie_is_anonymous_but_still_a_credential() {
        let h = headers(&[("cookie", "__session=; other=1")]);
        assert_eq!(read_session_token(&h).unwrap(), None);
        assert!(has_credentials(&h));
    }

    #[test]
    fn the_first_non_empty_session_cookie_is_used() {
        let h = headers(&[
            ("cookie", "__session=; __session=first"),
            ("cookie", "__session=second"),
        ]);
        assert_eq!(session_token(&h).as_deref(), Some("first"));
    }

    #[test]
    fn no_credentials_is_anonymous() {
        let h = headers(&[("cookie", "a=b"), ("accept", "*/*")]);
        assert_eq!(read_session_token(&h).unwrap(), None);
        assert!(!has_credentials(&h));
    }

    #[test]
    fn a_non_utf8_cookie_value_is_kept_for_verification_to_refuse() {
        let mut h = HeaderMap::new();
        h.insert(
            header::COOKIE,
            HeaderValue::from_bytes(b"__session=\xff\xfe").unwrap(),
        );
        assert!(session_token(&h).is_some());
    }
}
