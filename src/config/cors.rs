//! Cross-origin callers (`CORS_ALLOWED_ORIGINS`): [`CorsConfig`], [`OriginPattern`] and how a
//! browser's `Origin` matches one.

use super::{ConfigError, Env};

/// Browser origins that may call the functions from another origin (`CORS_ALLOWED_ORIGINS`,
/// comma-separated, each `scheme://host[:port]`, or a pattern with one `*` in its first DNS
/// label: `https://*.example.com`, `https://gcbb-*-acme.vercel.app`); empty: same-origin only.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct CorsConfig {
    /// Serialized as browsers send `Origin`: lower-case, no default port, no trailing slash.
    pub allowed_origins: Vec<String>,
    /// The entries with a `*`.
    pub allowed_patterns: Vec<OriginPattern>,
}

/// Suffixes under which anyone can get a name (hosting platforms): a bare `*` label over one
/// of them would allow every other customer's sites, so such a pattern must fix part of the
/// label (`https://gcbb-*.vercel.app`).
pub const SHARED_HOSTING_SUFFIXES: &[&str] = &[
    "vercel.app",
    "now.sh",
    "netlify.app",
    "pages.dev",
    "workers.dev",
    "github.io",
    "herokuapp.com",
    "onrender.com",
    "fly.dev",
    "web.app",
    "firebaseapp.com",
    "amplifyapp.com",
    "cloudfront.net",
    "azurewebsites.net",
    "appspot.com",
];

/// An origin pattern: `scheme://<prefix>*<suffix>.<domain>[:port]`, where `*` stands for what
/// is left of exactly one DNS label (one or more letters, digits or `-`; never a dot).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OriginPattern {
    scheme: String,
    prefix: String,
    suffix: String,
    /// The labels after the first, lower-case, without a leading dot.
    domain: String,
    port: Option<u16>,
}

impl OriginPattern {
    /// Parses `entry` (which holds a `*`); the error says what is wrong with it.
    pub fn parse(entry: &str) -> Result<OriginPattern, String> {
        let lower = entry.trim().trim_end_matches('/').to_ascii_lowercase();
        let (scheme, rest) = lower
            .split_once("://")
            .ok_or("must start with https:// or http://")?;
        if !matches!(scheme, "http" | "https") {
            return Err("must start with https:// or http://".into());
        }
        if rest.contains(['/', '?', '#', '@']) {
            return Err("must be an origin pattern only (scheme://host[:port]), without a path or credentials".into());
        }
        let (host, port) = match rest.rsplit_once(':') {
            Some((host, port)) => (
                host,
                Some(
                    port.parse::<u16>()
                        .ok()
                        .filter(|p| *p != 0)
                        .ok_or("has a port that is not a number from 1 to 65535")?,
                ),
            ),
            None => (rest, None),
        };
        let default_port = if scheme == "https" { 443 } else { 80 };
        let port = port.filter(|p| *p != default_port);
        let (first, domain) = host
            .split_once('.')
            .ok_or("needs a domain after its first label (https://*.example.com)")?;
        if first.matches('*').count() != 1 || domain.contains('*') {
            return Err("may hold one `*`, in its first DNS label only".into());
        }
        let (prefix, suffix) = first.split_once('*').unwrap_or_default();
        let labels: Vec<&str> = domain.split('.').collect();
        if labels.len() < 2 {
            return Err(
                "must name a domain of at least two labels after the `*` (https://*.example.com, not https://*.com)".into(),
            );
        }
        if !labels.iter().all(|l| is_dns_label(l))
            || !(prefix.is_empty() || is_label_part(prefix))
            || !(suffix.is_empty() || is_label_part(suffix))
        {
            return Err("holds characters no DNS name has (letters, digits, `-` and dots only; IDNs as punycode)".into());
        }
        if prefix.is_empty() && suffix.is_empty() && SHARED_HOSTING_SUFFIXES.contains(&domain) {
            return Err(format!(
                "would allow every site anyone hosts on {domain}: fix part of the label (https://<project>-*.{domain})"
            ));
        }
        Ok(OriginPattern {
            scheme: scheme.to_owned(),
            prefix: prefix.to_owned(),
            suffix: suffix.to_owned(),
            domain: domain.to_owned(),
            port,
        })
    }

    /// Whether a browser's `Origin` (already serialized: lower-case, no default port) matches.
    pub fn matches(&self, origin: &str) -> bool {
        let Some(rest) = origin
            .strip_prefix(self.scheme.as_str())
            .and_then(|r| r.strip_prefix("://"))
        else {
            return false;
        };
        let (host, port) = match rest.rsplit_once(':') {
            Some((host, port)) => match port.parse::<u16>() {
                Ok(p) => (host, Some(p)),
                Err(_) => return false,
            },
            None => (rest, None),
        };
        if port != self.port {
            return false;
        }
        let Some(label) = host
            .strip_suffix(self.domain.as_str())
            .and_then(|h| h.strip_suffix('.'))
        else {
            return false;
        };
        label.len() > self.prefix.len() + self.suffix.len()
            && is_dns_label(label)
            && label.starts_with(self.prefix.as_str())
            && label.ends_with(self.suffix.as_str())
    }
}

impl std::fmt::Display for OriginPattern {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{}://{}*{}.{}",
            self.scheme, self.prefix, self.suffix, self.domain
        )?;
        match self.port {
            Some(p) => write!(f, ":{p}"),
            None => Ok(()),
        }
    }
}

/// One DNS label as browsers serialize hosts: 1–63 lower-case letters, digits or `-`, not
/// starting or ending with `-`.
fn is_dns_label(label: &str) -> bool {
    is_label_part(label) && !label.starts_with('-') && !label.ends_with('-')
}

fn is_label_part(part: &str) -> bool {
    !part.is_empty()
        && part.len() <= 63
        && part
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
}

/// `CORS_ALLOWED_ORIGINS`: each entry must be an origin a browser could send (`https://app.example`,
/// `http://localhost:5173`); anything else stops start-up naming the variable and the entry.
pub(super) fn cors_config(env: &Env) -> Result<CorsConfig, ConfigError> {
    const NAME: &str = "CORS_ALLOWED_ORIGINS";
    let invalid = |entry: &str, why: &str| ConfigError::Invalid {
        name: NAME,
        reason: format!("`{entry}` {why}"),
    };
    let mut allowed_origins: Vec<String> = Vec::new();
    let mut allowed_patterns: Vec<OriginPattern> = Vec::new();
    for entry in env.get(NAME).unwrap_or_default().split(',') {
        let entry = entry.trim();
        if entry.is_empty() {
            continue;
        }
        if entry.contains('*') && entry != "*" {
            let pattern = OriginPattern::parse(entry).map_err(|why| invalid(entry, &why))?;
            if !allowed_patterns.contains(&pattern) {
                allowed_patterns.push(pattern);
            }
            continue;
        }
        // `*` would hand every site the signed-in answers too; `null` is what sandboxed
        // documents and files send, which anyone can make.
        if entry == "*" || entry.eq_ignore_ascii_case("null") {
            return Err(invalid(entry, "is not allowed: list each origin"));
        }
        let url =
            url::Url::parse(entry).map_err(|e| invalid(entry, &format!("is not a URL: {e}")))?;
        if !matches!(url.scheme(), "http" | "https") {
            return Err(invalid(entry, "must start with https:// or http://"));
        }
        if !url.username().is_empty() || url.password().is_some() {
            return Err(invalid(entry, "must not hold credentials"));
        }
        if url.path() != "/" || url.query().is_some() || url.fragment().is_some() {
            return Err(invalid(
                entry,
                "must be an origin only (scheme://host[:port]), without a path",
            ));
        }
        let origin = url.origin();
        if !origin.is_tuple() {
            return Err(invalid(entry, "has no host"));
        }
        let serialized = origin.ascii_serialization();
        if !allowed_origins.contains(&serialized) {
            allowed_origins.push(serialized);
        }
    }
    Ok(CorsConfig {
        allowed_origins,
        allowed_patterns,
    })
}
