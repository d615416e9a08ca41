//! Connection settings parsed from a `postgres://` URL the way Neon hands them out.
//!
//! Written here rather than with `tokio_postgres::Config::from_str` because that parser rejects
//! `sslmode=verify-ca|verify-full` and knows nothing of `sslrootcert`, and because its errors can't
//! be worded for the operator. Semantics follow libpq where they matter; the differences are noted
//! on the fields.

use std::fmt;
use std::net::IpAddr;
use std::path::PathBuf;
use std::time::Duration;

use percent_encoding::percent_decode_str;

/// How long one connection attempt may take; a suspended Neon compute wakes in well under this.
pub const DEFAULT_DB_CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// `application_name` when the URL names none; shows up in `pg_stat_activity`.
pub const DEFAULT_APPLICATION_NAME: &str = "gcbb";
/// Port when the URL names none.
pub const DEFAULT_PORT: u16 = 5432;
/// User when the URL names none (libpq would take the operating-system user).
pub const DEFAULT_USER: &str = "postgres";
/// Host when the URL names none.
pub const DEFAULT_HOST: &str = "localhost";

/// `sslmode` of libpq. `allow` parses as [`SslMode::Prefer`]: both end up unverified and
/// encrypted whenever the server offers TLS, which every server we talk to does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SslMode {
    Disable,
    /// Encrypt if the server offers TLS, else plaintext; the certificate is not checked.
    Prefer,
    /// Encrypt; the certificate is not checked (libpq semantics).
    Require,
    /// Encrypt and check the certificate chain, but not the host name.
    VerifyCa,
    /// Encrypt and check the chain and that the certificate names the host.
    VerifyFull,
}

impl SslMode {
    pub fn as_str(self) -> &'static str {
        match self {
            SslMode::Disable => "disable",
            SslMode::Prefer => "prefer",
            SslMode::Require => "require",
            SslMode::VerifyCa => "verify-ca",
            SslMode::VerifyFull => "verify-full",
        }
    }

    fn parse(raw: &str) -> Result<Self, DbUrlError> {
        Ok(match raw {
            "disable" => SslMode::Disable,
            "allow" | "prefer" => SslMode::Prefer,
            "require" => SslMode::Require,
            "verify-ca" => SslMode::VerifyCa,
            "verify-full" => SslMode::VerifyFull,
            other => {
                return Err(DbUrlError(format!(
                    "unknown sslmode `{other}` (expected disable, allow, prefer, require, \
                     verify-ca or verify-full)"
                )))
            }
        })
    }
}

impl fmt::Display for SslMode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// `channel_binding` of libpq: SCRAM bound to the TLS server certificate (`tls-server-end-point`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ChannelBinding {
    Disable,
    Prefer,
    Require,
}

impl ChannelBinding {
    pub fn as_str(self) -> &'static str {
        match self {
            ChannelBinding::Disable => "disable",
            ChannelBinding::Prefer => "prefer",
            ChannelBinding::Require => "require",
        }
    }

    fn parse(raw: &str) -> Result<Self, DbUrlError> {
        Ok(match raw {
            "disable" => ChannelBinding::Disable,
            "prefer" => ChannelBinding::Prefer,
            "require" => ChannelBinding::Require,
            other => {
                return Err(DbUrlError(format!(
                    "unknown channel_binding `{other}` (expected disable, prefer or require)"
                )))
            }
        })
    }
}

/// Why a database URL was refused. The message never contains the password.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("{0}")]
pub struct DbUrlError(pub String);

/// A parsed database URL.
///
/// `Debug` hides the password, so the struct may be logged as a whole.
#[derive(Clone, PartialEq, Eq)]
pub struct DbConfig {
    /// Host name, IP address (IPv6 without brackets), or the directory of a Unix socket.
    pub host: String,
    pub port: u16,
    pub user: String,
    pub password: Option<String>,
    /// Defaults to the user name, as in libpq.
    pub dbname: String,
    pub sslmode: SslMode,
    pub channel_binding: ChannelBinding,
    /// Server `options` (Neon: `endpoint=<id>` for clients without SNI).
    pub options: Option<String>,
    pub application_name: String,
    /// Bound on one connection attempt (TCP, TLS and start-up together). `connect_timeout=0`
    /// means the default here, not "wait forever" as in libpq: nothing may hang a request.
    pub connect_timeout: Duration,
    /// PEM file of extra trusted roots for `verify-ca`/`verify-full`, added to the compiled-in
    /// web PKI roots (libpq would use this file *instead*); `system` means none.
    pub sslrootcert: Option<PathBuf>,
}

impl fmt::Debug for DbConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DbConfig")
            .field("host", &self.host)
            .field("port", &self.port)
            .field("user", &self.user)
            .field("password", &self.password.as_ref().map(|_| "<redacted>"))
            .field("dbname", &self.dbname)
            .field("sslmode", &self.sslmode)
            .field("channel_binding", &self.channel_binding)
            .field("options", &self.options)
            .field("application_name", &self.application_name)
            .field("connect_timeout", &self.connect_timeout)
            .field("sslrootcert", &self.sslrootcert)
            .finish()
    }
}

impl DbConfig {
    /// Parses `postgres://` / `postgresql://` URLs as libpq does, including the query parameters
    /// `sslmode`, `channel_binding`, `options`, `application_name`, `connect_timeout`,
    /// `sslrootcert`, `host` (a `/path` is a Unix socket directory), `port`, `user`, `password`
    /// and `dbname`. Other parameters are ignored (logged at debug level).
    pub fn parse(raw: &str) -> Result<Self, DbUrlError> {
        let raw = with_placeholder_host(raw.trim());
        let url = url::Url::parse(&raw).map_err(|e| match e {
            url::ParseError::InvalidPort => {
                DbUrlError("invalid port in database URL (expected 1-65535)".into())
            }
            url::ParseError::RelativeUrlWithoutBase => DbUrlError(
                "not a database URL (expected postgres://user:password@host:port/dbname)".into(),
            ),
            other => DbUrlError(format!("invalid database URL: {other}")),
        })?;
        if !matches!(url.scheme(), "postgres" | "postgresql") {
            return Err(DbUrlError(format!(
                "database URL scheme must be postgres:// or postgresql://, not {}://",
                url.scheme()
            )));
        }
        if url.fragment().is_some() {
            // An unencoded `#` in a password starts a fragment; say so instead of connecting
            // with half a password.
            return Err(DbUrlError(
                "database URL contains `#`; percent-encode it (%23) in the password".into(),
            ));
        }

        let mut host = match url.host() {
            None => None,
            Some(url::Host::Domain("")) => None,
            Some(url::Host::Domain(d)) => Some(decode(d, "host")?),
            Some(url::Host::Ipv4(ip)) => Some(ip.to_string()),
            Some(url::Host::Ipv6(ip)) => Some(ip.to_string()),
        };
        let mut port = match url.port() {
            Some(0) => {
                return Err(DbUrlError(
                    "port 0 in database URL (expected 1-65535)".into(),
                ))
            }
            Some(p) => p,
            None => DEFAULT_PORT,
        };
        let mut user = match url.username() {
            "" => DEFAULT_USER.to_owned(),
            u => decode(u, "user name")?,
        };
        let mut password = url.password().map(|p| decode(p, "password")).transpose()?;
        let mut dbname = match url.path().trim_start_matches('/') {
            "" => None,
            d => Some(decode(d, "database name")?),
        };

        let mut sslmode = SslMode::Prefer;
        let mut channel_binding = ChannelBinding::Prefer;
        let mut options = None;
        let mut application_name = DEFAULT_APPLICATION_NAME.to_owned();
        let mut connect_timeout = DEFAULT_DB_CONNECT_TIMEOUT;
        let mut sslrootcert = None;
        for (key, value) in url.query_pairs() {
            match &*key {
                "sslmode" => sslmode = SslMode::parse(&value)?,
                "channel_binding" => channel_binding = ChannelBinding::parse(&value)?,
                "options" => options = Some(value.into_owned()).filter(|o| !o.is_empty()),
                "application_name" => application_name = value.into_owned(),
                "connect_timeout" => {
                    let secs: u64 = value.trim().parse().map_err(|_| {
                        DbUrlError(format!(
                            "connect_timeout must be a whole number of seconds, not `{value}`"
                        ))
                    })?;
                    if secs > 0 {
                        connect_timeout = Duration::from_secs(secs);
                    }
                }
                "sslrootcert" => {
                    sslrootcert = match &*value {
                        "" | "system" => None,
                        path => Some(PathBuf::from(path)),
                    }
                }
                "host" if !value.is_empty() => host = Some(value.into_owned()),
                "port" => {
                    port = match value.parse::<u16>() {
                        Ok(p) if p > 0 => p,
                        _ => {
                            return Err(DbUrlError(format!(
                                "invalid port `{value}` in database URL (expected 1-65535)"
                            )))
                        }
                    }
                }
                "user" if !value.is_empty() => user = value.into_owned(),
                "password" => password = Some(value.into_owned()),
                "dbname" if !value.is_empty() => dbname = Some(value.into_owned()),
                other => {
                    // The key only: a value could be a secret (`sslpassword`).
                    tracing::debug!(param = other, "ignoring unknown database URL parameter");
                }
            }
        }

        let host = host.unwrap_or_else(|| DEFAULT_HOST.to_owned());
        if host.contains(',') {
            return Err(DbUrlError(
                "several hosts in one database URL are not supported".into(),
            ));
        }
        Ok(DbConfig {
            dbname: dbname.unwrap_or_else(|| user.clone()),
            host,
            port,
            user,
            password,
            sslmode,
            channel_binding,
            options,
            application_name,
            connect_timeout,
            sslrootcert,
        })
    }

    pub fn dbname(&self) -> &str {
        &self.dbname
    }

    /// The same server and settings, another database.
    pub fn with_dbname(&self, dbname: &str) -> Self {
        DbConfig {
            dbname: dbname.to_owned(),
            ..self.clone()
        }
    }

    /// The same settings with another connect timeout (e.g. `DB_CONNECT_TIMEOUT_MS`).
    pub fn with_connect_timeout(&self, timeout: Duration) -> Self {
        DbConfig {
            connect_timeout: timeout,
            ..self.clone()
        }
    }

    /// True when `host` is the directory of a Unix socket.
    pub fn is_unix_socket(&self) -> bool {
        self.host.starts_with('/')
    }

    /// True for localhost, loopback addresses and Unix sockets.
    pub fn is_local(&self) -> bool {
        if self.is_unix_socket() || self.host.eq_ignore_ascii_case("localhost") {
            return true;
        }
        let bare = self.host.trim_start_matches('[').trim_end_matches(']');
        bare.parse::<IpAddr>().is_ok_and(|ip| ip.is_loopback())
    }

    /// True for a Neon pooler (PgBouncer) endpoint, whose first label ends in `-pooler`.
    pub fn is_pooled(&self) -> bool {
        self.host
            .split('.')
            .next()
            .is_some_and(|label| label.ends_with("-pooler"))
    }

    /// Which database this is, as a stable string (`host:port/dbname`, the Neon pooler's
    /// `-pooler` left out, so its pooled and direct URLs name the same database): what cache
    /// keys are scoped by, so deployments on different databases sharing one Redis never read
    /// each other's entries. Each Neon branch has endpoints of its own, hence hosts of its own.
    pub fn identity(&self) -> String {
        let host = self.host.to_ascii_lowercase();
        let host = match host.split_once('.') {
            Some((first, rest)) if first.ends_with("-pooler") => {
                format!("{}.{rest}", first.trim_end_matches("-pooler"))
            }
            _ => host,
        };
        format!("{host}:{}/{}", self.port, self.dbname)
    }

    /// `host:port/dbname` without credentials, for logs and messages.
    pub fn redacted(&self) -> String {
        if self.host.contains(':') {
            format!("[{}]:{}/{}", self.host, self.port, self.dbname)
        } else {
            format!("{}:{}/{}", self.host, self.port, self.dbname)
        }
    }

    /// The `tokio_postgres` settings. TLS is negotiated as `sslmode` says except over a Unix
    /// socket, where libpq never uses it; certificate checks live in [`super::tls`].
    pub fn to_pg_config(&self) -> tokio_postgres::Config {
        use tokio_postgres::config::{ChannelBinding as PgBinding, SslMode as PgSsl};
        let mut c = tokio_postgres::Config::new();
        c.host(&self.host)
            .port(self.port)
            .user(&self.user)
            .dbname(&self.dbname)
            .application_name(&self.application_name)
            .connect_timeout(self.connect_timeout)
            .ssl_mode(match self.sslmode {
                _ if self.is_unix_socket() => PgSsl::Disable,
                SslMode::Disable => PgSsl::Disable,
                SslMode::Prefer => PgSsl::Prefer,
                SslMode::Require | SslMode::VerifyCa | SslMode::VerifyFull => PgSsl::Require,
            })
            .channel_binding(match self.channel_binding {
                ChannelBinding::Disable => PgBinding::Disable,
                ChannelBinding::Prefer => PgBinding::Prefer,
                ChannelBinding::Require => PgBinding::Require,
            });
        if let Some(p) = &self.password {
            c.password(p);
        }
        if let Some(o) = &self.options {
            c.options(o);
        }
        c
    }
}

/// libpq accepts an empty host after the user (`postgres://user@/db?host=/run/pg`); the `url`
/// crate does not, so the default host is filled in (a `host` parameter still wins).
fn with_placeholder_host(raw: &str) -> std::borrow::Cow<'_, str> {
    let Some(start) = raw.find("://").map(|i| i + 3) else {
        return raw.into();
    };
    let end = raw[start..]
        .find(['/', '?', '#'])
        .map_or(raw.len(), |i| start + i);
    let Some(at) = raw[start..end].rfind('@').map(|i| start + i + 1) else {
        return raw.into();
    };
    if at == end || raw[at..end].starts_with(':') {
        format!("{}{DEFAULT_HOST}{}", &raw[..at], &raw[at..]).into()
    } else {
        raw.into()
    }
}

/// Percent-decodes one URL component; `what` names it in the error (never its value).
fn decode(raw: &str, what: &str) -> Result<String, DbUrlError> {
    percent_decode_str(raw)
        .decode_utf8()
        .map(|s| s.into_owned())
        .map_err(|_| DbUrlError(format!("{what} in database URL is not UTF-8 once decoded")))
}

#[cfg(test)]
mod tests;
