//! Typed configuration, read from the environment only, with named defaults.
//!
//! Everything is parsed once at start-up; a bad value stops the process with the variable's
//! name instead of failing in the middle of a request.

use std::collections::HashMap;
use std::time::Duration;

use crate::db::config::DEFAULT_DB_CONNECT_TIMEOUT;
use crate::db::DbConfig;
pub use crate::db::DEFAULT_QUERY_TIMEOUT as DEFAULT_DB_QUERY_TIMEOUT;

/// Largest request body any handler accepts unless a route says otherwise.
pub const DEFAULT_BODY_LIMIT_BYTES: usize = 64 * 1024;
/// Connections each process keeps to Postgres (Neon's pooler multiplexes them further).
pub const DEFAULT_DB_POOL_SIZE: usize = 4;
/// How long the dashboard's exact count may take before the page answers with an estimate.
pub const DEFAULT_DASHBOARD_COUNT_TIMEOUT: Duration = Duration::from_millis(150);
/// Timeout for one cache round trip; a slower cache is treated as down.
pub const DEFAULT_CACHE_TIMEOUT: Duration = Duration::from_millis(500);
/// How long background database writes (token accounting) retry through an outage: Vercel
/// lets `wait_until` work run until the function's `maxDuration` (300 s for chat), and a
/// minute covers the blips a failover or a restart causes.
pub const DEFAULT_BACKGROUND_WRITE_BUDGET: Duration = Duration::from_secs(60);
/// First segment of every cache key; unless `CACHE_KEY_PREFIX` says otherwise, followed by a
/// digest of the database's identity (`gcbb-1a2b3c4d`), so deployments on different databases
/// (a preview on a Neon branch, production) never share entries through one Redis.
pub const DEFAULT_CACHE_KEY_PREFIX: &str = "gcbb";
/// How long cached pages are served under the last confirmed privacy epoch while the database
/// can't be reached (`PRIVACY_OUTAGE_WINDOW_MS`; see `platform::privacy`).
pub const DEFAULT_PRIVACY_OUTAGE_WINDOW: Duration = Duration::from_secs(120);
/// Vercel's REST API, where CDN purges go.
pub const DEFAULT_VERCEL_API_URL: &str = "https://api.vercel.com";
/// Owner id of platform-made companions and demo group chats.
pub const DEFAULT_SYSTEM_USER_ID: &str = "system";
/// Port of `gcbb dev`.
pub const DEFAULT_DEV_PORT: u16 = 3000;
/// Database `gcbb dev` creates and uses when `DATABASE_URL` is unset.
pub const DEFAULT_DEV_DATABASE_URL: &str = "postgres://postgres@127.0.0.1:5432/gcbb_dev";
/// Clock skew allowed on `exp`, `nbf` and `iat` of session tokens.
pub const DEFAULT_CLERK_LEEWAY: Duration = Duration::from_secs(5);
/// Any OpenAI-compatible chat-completions server.
pub const DEFAULT_OPENAI_BASE_URL: &str = "https://api.openai.com/v1";
/// Model asked for when `LLM_MODEL` is unset.
pub const DEFAULT_LLM_MODEL: &str = "gpt-4o-mini";
/// How long connecting to the model server may take.
pub const DEFAULT_LLM_CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// How long the model may take to send its first token (it is thinking; be generous).
pub const DEFAULT_LLM_FIRST_TOKEN_TIMEOUT: Duration = Duration::from_secs(30);
/// Longest silence allowed between two chunks once the reply has started.
pub const DEFAULT_LLM_IDLE_TIMEOUT: Duration = Duration::from_secs(20);
/// Largest reply (`max_tokens`) asked of the model.
pub const DEFAULT_LLM_MAX_TOKENS: u32 = 1024;
/// Pause between the scripted model's chunks.
pub const DEFAULT_SCRIPTED_CHUNK_DELAY: Duration = Duration::from_millis(20);
/// Stored messages of (companion, user) sent to the model as context.
pub const DEFAULT_CHAT_CONTEXT_MESSAGES: i64 = 20;
/// Largest body `POST /api/chat/:chatId` accepts: the AI SDK's `useChat` sends the whole
/// conversation on every turn, so a long one outgrows the general limit.
pub const DEFAULT_CHAT_BODY_LIMIT_BYTES: usize = 1024 * 1024;
/// An anonymous viewer's own earlier messages (sent by `useChat`) that become context: at most
/// this many of the most recent…
pub const DEFAULT_CHAT_CLIENT_CONTEXT_MESSAGES: usize = 10;
/// …holding at most this many bytes of text together.
pub const DEFAULT_CHAT_CLIENT_CONTEXT_BYTES: usize = 16 * 1024;
/// The chat functions' `maxDuration` (vercel.json): a reply still generating this long after its
/// request arrived is ended and stored as interrupted, so it never outlives its function.
pub const DEFAULT_CHAT_MAX_DURATION: Duration = Duration::from_secs(300);
/// Companions that answer one group-chat prompt when nobody is mentioned.
pub const DEFAULT_GROUP_MAX_RESPONDERS: usize = 2;
/// Signed-in chat: requests per window per user.
pub const DEFAULT_RATE_LIMIT_USER_REQUESTS: u32 = 20;
pub const DEFAULT_RATE_LIMIT_USER_WINDOW: Duration = Duration::from_secs(10);
/// Anonymous chat: requests per window per client address.
pub const DEFAULT_RATE_LIMIT_ANON_REQUESTS: u32 = 5;
pub const DEFAULT_RATE_LIMIT_ANON_WINDOW: Duration = Duration::from_secs(60);
/// Signed-in dashboard: requests per window per user (each distinct page is a database build).
pub const DEFAULT_RATE_LIMIT_DASHBOARD_REQUESTS: u32 = 60;
pub const DEFAULT_RATE_LIMIT_DASHBOARD_WINDOW: Duration = Duration::from_secs(10);
/// Companion edits (PATCH): requests per window per user.
pub const DEFAULT_RATE_LIMIT_COMPANION_EDIT_REQUESTS: u32 = 20;
pub const DEFAULT_RATE_LIMIT_COMPANION_EDIT_WINDOW: Duration = Duration::from_secs(60);
/// Anonymous dashboard searches (`q`) that reach the function: requests per window per client
/// bucket (an IPv4 address, an IPv6 /64). A search box sends one per pause in typing.
pub const DEFAULT_RATE_LIMIT_SEARCH_REQUESTS: u32 = 30;
pub const DEFAULT_RATE_LIMIT_SEARCH_WINDOW: Duration = Duration::from_secs(10);

/// A secret from the environment (`CRON_SECRET`, `OPENAI_API_KEY`, an Upstash token). `Debug`
/// prints nothing of it, so a `Config` can be logged whole; the value is read with
/// [`Secret::expose`], at the one place that sends or compares it.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    pub fn new(value: impl Into<String>) -> Secret {
        Secret(value.into())
    }

    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl From<&str> for Secret {
    fn from(value: &str) -> Secret {
        Secret(value.to_owned())
    }
}

impl From<String> for Secret {
    fn from(value: String) -> Secret {
        Secret(value)
    }
}

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Secret(<redacted>)")
    }
}

/// Where CDN purges go: `VERCEL_TOKEN`, `VERCEL_PROJECT_ID`, `VERCEL_TEAM_ID` (optional),
/// `VERCEL_API_URL` (tests point it at a local server). Without a token, purging is off.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CdnConfig {
    pub token: Secret,
    pub project: String,
    pub team: Option<String>,
    pub api_url: String,
    /// Purges asked for within this window go out as one request per kind
    /// (`CDN_PURGE_COALESCE_MS`), so a burst of edits spends one call of the API quota.
    pub coalesce_window: Duration,
}

/// How long this process gathers purges into one request (see [`CdnConfig::coalesce_window`]).
pub const DEFAULT_CDN_PURGE_COALESCE_WINDOW: Duration = Duration::from_millis(1000);

/// A configuration problem, always naming the variable at fault.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ConfigError {
    #[error("{name} is required but not set")]
    Missing { name: &'static str },
    #[error("{name} is invalid: {reason}")]
    Invalid { name: &'static str, reason: String },
}

/// Where the cache lives, chosen from the environment in this order: Upstash REST
/// (`UPSTASH_REDIS_REST_*`, else `KV_REST_API_*`), native Redis (`REDIS_URL`), in-process memory.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CacheBackend {
    /// Upstash REST (`UPSTASH_REDIS_REST_*`, else `KV_REST_API_*`).
    Upstash { url: String, token: Secret },
    /// Native Redis protocol (`REDIS_URL`).
    Redis { url: String },
    /// In-process memory only.
    Memory,
}

impl CacheBackend {
    pub fn name(&self) -> &'static str {
        match self {
            CacheBackend::Upstash { .. } => "upstash",
            CacheBackend::Redis { .. } => "redis",
            CacheBackend::Memory => "memory",
        }
    }
}

/// Where the session-token verification key comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ClerkKey {
    /// `CLERK_JWT_KEY`: the instance's public key as PEM.
    Pem(String),
    /// `CLERK_JWKS_URL`: fetched once, cached, refetched on an unknown `kid`.
    JwksUrl(String),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClerkConfig {
    /// None: nobody can sign in, every request is anonymous, and any token is 401.
    pub key: Option<ClerkKey>,
    pub issuer: Option<String>,
    pub authorized_parties: Vec<String>,
    pub leeway: Duration,
}

/// Which model answers chat.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LlmProvider {
    /// Any OpenAI-compatible `POST {base_url}/chat/completions`.
    OpenAi {
        base_url: String,
        /// None for local servers that need no key (never on Vercel).
        api_key: Option<Secret>,
    },
    /// The built-in offline model: a deterministic streamed reply.
    Scripted,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LlmConfig {
    pub provider: LlmProvider,
    pub model: String,
    pub connect_timeout: Duration,
    pub first_token_timeout: Duration,
    pub idle_timeout: Duration,
    pub max_tokens: u32,
    pub scripted_chunk_delay: Duration,
}

/// A sliding-window limit: at most `requests` in any `window`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RateLimit {
    pub requests: u32,
    pub window: Duration,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChatConfig {
    pub context_messages: i64,
    pub group_max_responders: usize,
    pub user_rate_limit: RateLimit,
    pub anonymous_rate_limit: RateLimit,
    /// Body limit of one-on-one chat (`CHAT_BODY_LIMIT_BYTES`).
    pub body_limit: usize,
    /// How much of an anonymous client's own history becomes context
    /// (`CHAT_CLIENT_CONTEXT_MESSAGES`, `CHAT_CLIENT_CONTEXT_BYTES`).
    pub client_context_messages: usize,
    pub client_context_bytes: usize,
    /// How long a reply may run, from its request (`CHAT_MAX_DURATION_MS`, the functions'
    /// `maxDuration`).
    pub max_duration: Duration,
    /// Whether replies in flight are journaled in the cache (`CHAT_RESUME_STREAMS`, default
    /// true): resume from any instance, and replies whose database write failed written later.
    pub resume_streams: bool,
}

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

/// Image hosts companion avatars may be on (`AVATAR_HOSTS` unset): Clerk's image CDN (and its
/// older name), where Clerk serves the images uploaded through it, and Cloudinary's delivery
/// host, where the GCBB app's image upload puts companion pictures.
pub const DEFAULT_AVATAR_HOSTS: &str = "img.clerk.com,images.clerk.dev,res.cloudinary.com";

/// Where avatars may be fetched from (`AVATAR_HOSTS`): `https:` only, a host exactly as listed
/// (no sub-domains), optionally under a path (`res.cloudinary.com/my-cloud/`: only that
/// account's images). Every viewer's browser fetches an avatar, so anything else would let an
/// owner track viewers or aim their browsers at internal addresses.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AvatarHosts(Vec<AvatarHost>);

#[derive(Debug, Clone, PartialEq, Eq)]
struct AvatarHost {
    host: String,
    /// `/` or a prefix ending in `/`.
    path: String,
}

impl AvatarHosts {
    /// A comma-separated list of `host[/path/]` (an `https://` in front is allowed).
    pub fn parse(raw: &str) -> Result<AvatarHosts, String> {
        let mut hosts = Vec::new();
        for entry in raw.split(',').map(str::trim).filter(|e| !e.is_empty()) {
            let with_scheme = if entry.contains("://") {
                entry.to_owned()
            } else {
                format!("https://{entry}")
            };
            let url = url::Url::parse(&with_scheme).map_err(|e| format!("`{entry}`: {e}"))?;
            let host = match url.host() {
                Some(url::Host::Domain(d)) if d.contains('.') => d.to_owned(),
                _ => return Err(format!("`{entry}` must be a domain name (no IP address)")),
            };
            if url.scheme() != "https"
                || url.port().is_some()
                || !url.username().is_empty()
                || url.password().is_some()
                || url.query().is_some()
                || url.fragment().is_some()
            {
                return Err(format!(
                    "`{entry}` must be a host, optionally with a path (https only, no port)"
                ));
            }
            let mut path = url.path().to_owned();
            if !path.ends_with('/') {
                path.push('/');
            }
            hosts.push(AvatarHost { host, path });
        }
        if hosts.is_empty() {
            return Err("lists no host".into());
        }
        Ok(AvatarHosts(hosts))
    }

    /// Whether an avatar at `url` may be stored and shown.
    pub fn allows(&self, url: &url::Url) -> bool {
        url.scheme() == "https"
            && url.username().is_empty()
            && url.password().is_none()
            && url.port().is_none()
            && matches!(url.host(), Some(url::Host::Domain(_)))
            && self.0.iter().any(|h| {
                url.host_str() == Some(h.host.as_str()) && url.path().starts_with(h.path.as_str())
            })
    }

    /// The Content-Security-Policy sources of these hosts (`https://img.clerk.com`,
    /// `https://res.cloudinary.com/my-cloud/`).
    pub fn csp_sources(&self) -> Vec<String> {
        self.0
            .iter()
            .map(|h| match h.path.as_str() {
                "/" => format!("https://{}", h.host),
                path => format!("https://{}{path}", h.host),
            })
            .collect()
    }

    /// The entries, for messages: `img.clerk.com, res.cloudinary.com/my-cloud/`.
    pub fn describe(&self) -> String {
        self.0
            .iter()
            .map(|h| match h.path.as_str() {
                "/" => h.host.clone(),
                path => format!("{}{path}", h.host),
            })
            .collect::<Vec<_>>()
            .join(", ")
    }
}

impl Default for AvatarHosts {
    fn default() -> Self {
        AvatarHosts::parse(DEFAULT_AVATAR_HOSTS).expect("the default avatar hosts parse")
    }
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

/// Whose forwarding headers are believed (`TRUSTED_PROXY`).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum TrustedProxy {
    /// No header: the peer's address.
    #[default]
    None,
    /// Vercel's edge: `x-vercel-forwarded-for`, then `x-forwarded-for`.
    Vercel,
    /// CloudFront: `CloudFront-Viewer-Address`, else the peer's address.
    CloudFront,
    /// `X-Forwarded-For` from peers in these ranges.
    Addresses(Vec<crate::ip::IpRange>),
}

impl TrustedProxy {
    /// `none`, `vercel`, `cloudfront`, or a comma-separated list of IPs and CIDR ranges.
    pub fn parse(raw: &str) -> Result<TrustedProxy, String> {
        match raw.trim().to_ascii_lowercase().as_str() {
            "" | "none" => Ok(TrustedProxy::None),
            "vercel" => Ok(TrustedProxy::Vercel),
            "cloudfront" => Ok(TrustedProxy::CloudFront),
            _ => {
                let ranges = raw
                    .split(',')
                    .map(str::trim)
                    .filter(|e| !e.is_empty())
                    .map(crate::ip::IpRange::parse)
                    .collect::<Result<Vec<_>, _>>()
                    .map_err(|e| {
                        format!("{e}; expected none, vercel, cloudfront or a list of IPs/CIDRs")
                    })?;
                Ok(TrustedProxy::Addresses(ranges))
            }
        }
    }

    /// How the client's address is found, for banners and logs.
    pub fn describe(&self) -> String {
        match self {
            TrustedProxy::None => "the connection's peer (forwarding headers ignored)".into(),
            TrustedProxy::Vercel => "Vercel's x-vercel-forwarded-for / x-forwarded-for".into(),
            TrustedProxy::CloudFront => "CloudFront-Viewer-Address, else the peer".into(),
            TrustedProxy::Addresses(ranges) => format!(
                "X-Forwarded-For from {}, else the peer",
                ranges
                    .iter()
                    .map(ToString::to_string)
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
        }
    }
}

#[derive(Debug, Clone)]
pub struct Config {
    /// `DATABASE_URL`: the request path's database (on Neon, the pooled URL).
    pub database: DbConfig,
    pub cache: CacheBackend,
    /// First segment of every cache key: `CACHE_KEY_PREFIX`, else [`DEFAULT_CACHE_KEY_PREFIX`]
    /// and a digest of the database's identity ([`default_cache_key_prefix`]).
    pub cache_key_prefix: String,
    /// How long cached pages outlive a database outage (`PRIVACY_OUTAGE_WINDOW_MS`).
    pub privacy_outage_window: Duration,
    pub cron_secret: Option<Secret>,
    pub clerk: ClerkConfig,
    pub system_user_id: String,
    pub body_limit: usize,
    pub db_pool_size: usize,
    pub db_connect_timeout: Duration,
    /// Deadline of each request-path statement and of opening a connection
    /// (`DB_QUERY_TIMEOUT_MS`); an overrun is cancelled on the server and answers 503.
    pub db_query_timeout: Duration,
    pub cache_timeout: Duration,
    /// How long a write handed to `wait_until` (token accounting) keeps retrying through a
    /// database outage (`BACKGROUND_WRITE_BUDGET_MS`).
    pub background_write_budget: Duration,
    /// How long the dashboard's exact count may take before an estimate is used.
    pub dashboard_count_timeout: Duration,
    /// `VERCEL_ENV`, set on Vercel (production, preview, development).
    pub vercel_env: Option<String>,
    pub llm: LlmConfig,
    pub chat: ChatConfig,
    /// CDN purges; `None` when `VERCEL_TOKEN` is unset.
    pub cdn: Option<CdnConfig>,
    /// Per-user limits of the signed-in dashboard and of companion edits.
    pub dashboard_rate_limit: RateLimit,
    pub companion_edit_rate_limit: RateLimit,
    pub cors: CorsConfig,
    /// Whose forwarding headers name the client (`TRUSTED_PROXY`; Vercel's on Vercel, none
    /// elsewhere): see `platform::client`.
    pub trusted_proxy: TrustedProxy,
    /// Per-client limit of anonymous dashboard searches (`RATE_LIMIT_SEARCH_*`).
    pub anonymous_search_rate_limit: RateLimit,
    /// Where companion avatars may be (`AVATAR_HOSTS`).
    pub avatar_hosts: AvatarHosts,
}

impl Config {
    /// Reads the process environment.
    pub fn from_env() -> Result<Self, ConfigError> {
        Self::from_vars(&std::env::vars().collect())
    }

    /// Reads a given set of variables; empty values count as unset.
    pub fn from_vars(vars: &HashMap<String, String>) -> Result<Self, ConfigError> {
        let env = Env(vars);
        // DB_CONNECT_TIMEOUT_MS, when set, wins over a `connect_timeout` in the URLs.
        let connect_timeout = env
            .get("DB_CONNECT_TIMEOUT_MS")
            .map(|_| env.millis("DB_CONNECT_TIMEOUT_MS", DEFAULT_DB_CONNECT_TIMEOUT))
            .transpose()?;
        let db_url = |name| -> Result<Option<DbConfig>, ConfigError> {
            Ok(env.db_url(name)?.map(|db| match connect_timeout {
                Some(t) => db.with_connect_timeout(t),
                None => db,
            }))
        };
        let database = db_url("DATABASE_URL")?.ok_or(ConfigError::Missing {
            name: "DATABASE_URL",
        })?;
        let cache_key_prefix = env
            .get("CACHE_KEY_PREFIX")
            .unwrap_or_else(|| default_cache_key_prefix(&database));
        Ok(Config {
            db_connect_timeout: database.connect_timeout,
            database,
            cache: cache_backend(&env)?,
            cache_key_prefix,
            privacy_outage_window: env
                .millis("PRIVACY_OUTAGE_WINDOW_MS", DEFAULT_PRIVACY_OUTAGE_WINDOW)?,
            cron_secret: env.get("CRON_SECRET").map(Secret::new),
            clerk: clerk_config(&env)?,
            system_user_id: env
                .get("SYSTEM_USER_ID")
                .unwrap_or_else(|| DEFAULT_SYSTEM_USER_ID.to_owned()),
            body_limit: env.parse("BODY_LIMIT_BYTES", DEFAULT_BODY_LIMIT_BYTES)?,
            db_pool_size: env.parse("DB_POOL_SIZE", DEFAULT_DB_POOL_SIZE)?,
            db_query_timeout: positive_millis(
                &env,
                "DB_QUERY_TIMEOUT_MS",
                DEFAULT_DB_QUERY_TIMEOUT,
            )?,
            cache_timeout: env.millis("CACHE_TIMEOUT_MS", DEFAULT_CACHE_TIMEOUT)?,
            background_write_budget: env.millis(
                "BACKGROUND_WRITE_BUDGET_MS",
                DEFAULT_BACKGROUND_WRITE_BUDGET,
            )?,
            dashboard_count_timeout: env.millis(
                "DASHBOARD_COUNT_TIMEOUT_MS",
                DEFAULT_DASHBOARD_COUNT_TIMEOUT,
            )?,
            vercel_env: env.get("VERCEL_ENV"),
            llm: llm_config(&env)?,
            chat: chat_config(&env)?,
            cdn: cdn_config(&env)?,
            dashboard_rate_limit: rate_limit(
                &env,
                "RATE_LIMIT_DASHBOARD_REQUESTS",
                "RATE_LIMIT_DASHBOARD_WINDOW_MS",
                DEFAULT_RATE_LIMIT_DASHBOARD_REQUESTS,
                DEFAULT_RATE_LIMIT_DASHBOARD_WINDOW,
            )?,
            companion_edit_rate_limit: rate_limit(
                &env,
                "RATE_LIMIT_COMPANION_EDIT_REQUESTS",
                "RATE_LIMIT_COMPANION_EDIT_WINDOW_MS",
                DEFAULT_RATE_LIMIT_COMPANION_EDIT_REQUESTS,
                DEFAULT_RATE_LIMIT_COMPANION_EDIT_WINDOW,
            )?,
            cors: cors_config(&env)?,
            trusted_proxy: trusted_proxy(&env)?,
            anonymous_search_rate_limit: rate_limit(
                &env,
                "RATE_LIMIT_SEARCH_REQUESTS",
                "RATE_LIMIT_SEARCH_WINDOW_MS",
                DEFAULT_RATE_LIMIT_SEARCH_REQUESTS,
                DEFAULT_RATE_LIMIT_SEARCH_WINDOW,
            )?,
            avatar_hosts: match env.get("AVATAR_HOSTS") {
                None => AvatarHosts::default(),
                Some(raw) => AvatarHosts::parse(&raw).map_err(|reason| ConfigError::Invalid {
                    name: "AVATAR_HOSTS",
                    reason,
                })?,
            },
        })
    }
}

/// Parsing helpers over a variable map; every error names its variable.
pub struct Env<'a>(pub &'a HashMap<String, String>);

impl Env<'_> {
    pub fn get(&self, name: &str) -> Option<String> {
        self.0
            .get(name)
            .map(|v| v.trim().to_owned())
            .filter(|v| !v.is_empty())
    }

    pub fn parse<T>(&self, name: &'static str, default: T) -> Result<T, ConfigError>
    where
        T: std::str::FromStr,
        T::Err: std::fmt::Display,
    {
        match self.get(name) {
            None => Ok(default),
            Some(raw) => raw.parse().map_err(|e: T::Err| ConfigError::Invalid {
                name,
                reason: e.to_string(),
            }),
        }
    }

    pub fn millis(&self, name: &'static str, default: Duration) -> Result<Duration, ConfigError> {
        let ms: u64 = self.parse(name, default.as_millis() as u64)?;
        Ok(Duration::from_millis(ms))
    }

    /// A Postgres URL (`postgres://…`), parsed; `None` when unset.
    pub fn db_url(&self, name: &'static str) -> Result<Option<DbConfig>, ConfigError> {
        self.get(name)
            .map(|raw| {
                DbConfig::parse(&raw).map_err(|e| ConfigError::Invalid {
                    name,
                    reason: e.to_string(),
                })
            })
            .transpose()
    }

    fn http_url(&self, name: &'static str) -> Result<Option<String>, ConfigError> {
        let Some(raw) = self.get(name) else {
            return Ok(None);
        };
        let parsed = url::Url::parse(&raw).map_err(|e| ConfigError::Invalid {
            name,
            reason: e.to_string(),
        })?;
        if !matches!(parsed.scheme(), "http" | "https") {
            return Err(ConfigError::Invalid {
                name,
                reason: "must be an http(s) URL".into(),
            });
        }
        Ok(Some(raw.trim_end_matches('/').to_owned()))
    }
}

fn cache_backend(env: &Env) -> Result<CacheBackend, ConfigError> {
    for (url_var, token_var) in [
        ("UPSTASH_REDIS_REST_URL", "UPSTASH_REDIS_REST_TOKEN"),
        ("KV_REST_API_URL", "KV_REST_API_TOKEN"),
    ] {
        if let Some(url) = env.http_url(url_var)? {
            let token = env
                .get(token_var)
                .ok_or(ConfigError::Missing { name: token_var })?;
            return Ok(CacheBackend::Upstash {
                url,
                token: Secret::new(token),
            });
        }
    }
    if let Some(url) = env.get("REDIS_URL") {
        if !(url.starts_with("redis://") || url.starts_with("rediss://")) {
            return Err(ConfigError::Invalid {
                name: "REDIS_URL",
                reason: "must start with redis:// or rediss://".into(),
            });
        }
        return Ok(CacheBackend::Redis { url });
    }
    Ok(CacheBackend::Memory)
}

/// `LLM_PROVIDER=scripted` picks the offline model; otherwise the OpenAI-compatible server,
/// which needs `OPENAI_API_KEY` unless `OPENAI_BASE_URL` points at a key-less local server.
/// On Vercel (`VERCEL_ENV` set) a missing key is a start-up error, never a silent fallback.
fn llm_config(env: &Env) -> Result<LlmConfig, ConfigError> {
    let on_vercel = env.get("VERCEL_ENV").is_some();
    let api_key = env.get("OPENAI_API_KEY").map(Secret::new);
    let base_url = env.http_url("OPENAI_BASE_URL")?;
    let provider = match env.get("LLM_PROVIDER").as_deref() {
        Some("scripted") if on_vercel => {
            return Err(ConfigError::Invalid {
                name: "LLM_PROVIDER",
                reason: "the scripted model is for local development only (VERCEL_ENV is set)"
                    .into(),
            })
        }
        Some("scripted") => LlmProvider::Scripted,
        Some("openai") | None => {
            if on_vercel && api_key.is_none() {
                return Err(ConfigError::Missing {
                    name: "OPENAI_API_KEY",
                });
            }
            LlmProvider::OpenAi {
                base_url: base_url.unwrap_or_else(|| DEFAULT_OPENAI_BASE_URL.to_owned()),
                api_key,
            }
        }
        Some(other) => {
            return Err(ConfigError::Invalid {
                name: "LLM_PROVIDER",
                reason: format!("`{other}` is not one of: openai, scripted"),
            })
        }
    };
    Ok(LlmConfig {
        provider,
        model: env
            .get("LLM_MODEL")
            .unwrap_or_else(|| DEFAULT_LLM_MODEL.to_owned()),
        connect_timeout: env.millis("LLM_CONNECT_TIMEOUT_MS", DEFAULT_LLM_CONNECT_TIMEOUT)?,
        first_token_timeout: env.millis(
            "LLM_FIRST_TOKEN_TIMEOUT_MS",
            DEFAULT_LLM_FIRST_TOKEN_TIMEOUT,
        )?,
        idle_timeout: env.millis("LLM_IDLE_TIMEOUT_MS", DEFAULT_LLM_IDLE_TIMEOUT)?,
        max_tokens: env.parse("LLM_MAX_TOKENS", DEFAULT_LLM_MAX_TOKENS)?,
        scripted_chunk_delay: env
            .millis("LLM_SCRIPTED_CHUNK_DELAY_MS", DEFAULT_SCRIPTED_CHUNK_DELAY)?,
    })
}

fn cdn_config(env: &Env) -> Result<Option<CdnConfig>, ConfigError> {
    let Some(token) = env.get("VERCEL_TOKEN") else {
        return Ok(None);
    };
    let project = env.get("VERCEL_PROJECT_ID").ok_or(ConfigError::Missing {
        name: "VERCEL_PROJECT_ID",
    })?;
    let api_url = env
        .http_url("VERCEL_API_URL")?
        .unwrap_or_else(|| DEFAULT_VERCEL_API_URL.to_owned());
    Ok(Some(CdnConfig {
        token: Secret::new(token),
        project,
        team: env.get("VERCEL_TEAM_ID"),
        api_url,
        coalesce_window: env.millis("CDN_PURGE_COALESCE_MS", DEFAULT_CDN_PURGE_COALESCE_WINDOW)?,
    }))
}

fn positive(name: &'static str, v: u64) -> Result<u64, ConfigError> {
    if v == 0 {
        Err(ConfigError::Invalid {
            name,
            reason: "must be at least 1".into(),
        })
    } else {
        Ok(v)
    }
}

/// A duration in ms that must be at least 1 (a zero deadline would fail every request).
/// `gcbb-` and 32 bits of a SHA-256 of the database's identity (see `DbConfig::identity`).
pub fn default_cache_key_prefix(database: &DbConfig) -> String {
    use sha2::{Digest, Sha256};
    let digest = Sha256::digest(database.identity().as_bytes());
    format!("{DEFAULT_CACHE_KEY_PREFIX}-{}", hex::encode(&digest[..4]))
}

fn positive_millis(
    env: &Env<'_>,
    name: &'static str,
    default: Duration,
) -> Result<Duration, ConfigError> {
    let ms = positive(name, env.millis(name, default)?.as_millis() as u64)?;
    Ok(Duration::from_millis(ms))
}

/// A rate limit from `{requests}` and `{window}` (ms), both at least 1.
fn rate_limit(
    env: &Env,
    requests: &'static str,
    window: &'static str,
    default_requests: u32,
    default_window: Duration,
) -> Result<RateLimit, ConfigError> {
    let n = positive(requests, env.parse(requests, default_requests)?.into())? as u32;
    let w = env.millis(window, default_window)?;
    positive(window, w.as_millis() as u64)?;
    Ok(RateLimit {
        requests: n,
        window: w,
    })
}

fn chat_config(env: &Env) -> Result<ChatConfig, ConfigError> {
    Ok(ChatConfig {
        context_messages: positive(
            "CHAT_CONTEXT_MESSAGES",
            env.parse(
                "CHAT_CONTEXT_MESSAGES",
                DEFAULT_CHAT_CONTEXT_MESSAGES as u64,
            )?,
        )?
        .min(1000) as i64,
        group_max_responders: positive(
            "GROUP_MAX_RESPONDERS",
            env.parse("GROUP_MAX_RESPONDERS", DEFAULT_GROUP_MAX_RESPONDERS as u64)?,
        )? as usize,
        user_rate_limit: rate_limit(
            env,
            "RATE_LIMIT_USER_REQUESTS",
            "RATE_LIMIT_USER_WINDOW_MS",
            DEFAULT_RATE_LIMIT_USER_REQUESTS,
            DEFAULT_RATE_LIMIT_USER_WINDOW,
        )?,
        anonymous_rate_limit: rate_limit(
            env,
            "RATE_LIMIT_ANON_REQUESTS",
            "RATE_LIMIT_ANON_WINDOW_MS",
            DEFAULT_RATE_LIMIT_ANON_REQUESTS,
            DEFAULT_RATE_LIMIT_ANON_WINDOW,
        )?,
        body_limit: positive(
            "CHAT_BODY_LIMIT_BYTES",
            env.parse(
                "CHAT_BODY_LIMIT_BYTES",
                DEFAULT_CHAT_BODY_LIMIT_BYTES as u64,
            )?,
        )? as usize,
        // Zero is allowed: no client history as context.
        client_context_messages: env.parse(
            "CHAT_CLIENT_CONTEXT_MESSAGES",
            DEFAULT_CHAT_CLIENT_CONTEXT_MESSAGES,
        )?,
        client_context_bytes: env.parse(
            "CHAT_CLIENT_CONTEXT_BYTES",
            DEFAULT_CHAT_CLIENT_CONTEXT_BYTES,
        )?,
        max_duration: positive_millis(env, "CHAT_MAX_DURATION_MS", DEFAULT_CHAT_MAX_DURATION)?,
        resume_streams: env.parse("CHAT_RESUME_STREAMS", true)?,
    })
}

/// `CORS_ALLOWED_ORIGINS`: each entry must be an origin a browser could send (`https://app.example`,
/// `http://localhost:5173`); anything else stops start-up naming the variable and the entry.
fn cors_config(env: &Env) -> Result<CorsConfig, ConfigError> {
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

/// `TRUSTED_PROXY`: `vercel`, `cloudfront`, `none`, or IPs/CIDRs whose `X-Forwarded-For` is
/// believed. Unset: Vercel's headers on Vercel (`VERCEL` or `VERCEL_ENV` set), none elsewhere.
fn trusted_proxy(env: &Env) -> Result<TrustedProxy, ConfigError> {
    match env.get("TRUSTED_PROXY") {
        Some(raw) => TrustedProxy::parse(&raw).map_err(|reason| ConfigError::Invalid {
            name: "TRUSTED_PROXY",
            reason,
        }),
        None if env.get("VERCEL").is_some() || env.get("VERCEL_ENV").is_some() => {
            Ok(TrustedProxy::Vercel)
        }
        None => Ok(TrustedProxy::None),
    }
}

fn clerk_config(env: &Env) -> Result<ClerkConfig, ConfigError> {
    let key = match (env.get("CLERK_JWT_KEY"), env.http_url("CLERK_JWKS_URL")?) {
        (Some(pem), _) => {
            let pem = pem.replace("\\n", "\n");
            if !pem.contains("-----BEGIN PUBLIC KEY-----") {
                return Err(ConfigError::Invalid {
                    name: "CLERK_JWT_KEY",
                    reason: "must be a PEM public key (-----BEGIN PUBLIC KEY-----)".into(),
                });
            }
            jsonwebtoken::DecodingKey::from_rsa_pem(pem.as_bytes()).map_err(|e| {
                ConfigError::Invalid {
                    name: "CLERK_JWT_KEY",
                    reason: e.to_string(),
                }
            })?;
            Some(ClerkKey::Pem(pem))
        }
        (None, Some(url)) => Some(ClerkKey::JwksUrl(url)),
        (None, None) => None,
    };
    let authorized_parties = env
        .get("CLERK_AUTHORIZED_PARTIES")
        .map(|v| {
            v.split(',')
                .map(|p| p.trim().trim_end_matches('/').to_owned())
                .filter(|p| !p.is_empty())
                .collect()
        })
        .unwrap_or_default();
    Ok(ClerkConfig {
        key,
        issuer: env.get("CLERK_ISSUER"),
        authorized_parties,
        leeway: env.millis("CLERK_LEEWAY_MS", DEFAULT_CLERK_LEEWAY)?,
    })
}

#[cfg(test)]
mod tests;
