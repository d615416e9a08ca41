//! Connection settings parsed from a `postgres://` URL the way Neon hands them out.

use std::time::Duration;

/// `sslmode` of libpq, as far as it matters here.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SslMode {
    Disable,
    Prefer,
    Require,
    VerifyCa,
    VerifyFull,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("{0}")]
pub struct DbUrlError(pub String);

/// A parsed database URL. STUB: the db helper replaces this with the full parser.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DbConfig {
    pub host: String,
    pub port: u16,
    pub user: String,
    pub password: Option<String>,
    pub dbname: String,
    pub sslmode: SslMode,
    pub application_name: String,
    pub connect_timeout: Duration,
}

impl DbConfig {
    pub fn parse(raw: &str) -> Result<Self, DbUrlError> {
        let url = url::Url::parse(raw).map_err(|e| DbUrlError(e.to_string()))?;
        if !matches!(url.scheme(), "postgres" | "postgresql") {
            return Err(DbUrlError(
                "scheme must be postgres:// or postgresql://".into(),
            ));
        }
        let mut sslmode = SslMode::Prefer;
        for (k, v) in url.query_pairs() {
            if k == "sslmode" {
                sslmode = match &*v {
                    "disable" => SslMode::Disable,
                    "prefer" | "allow" => SslMode::Prefer,
                    "require" => SslMode::Require,
                    "verify-ca" => SslMode::VerifyCa,
                    "verify-full" => SslMode::VerifyFull,
                    other => return Err(DbUrlError(format!("unknown sslmode `{other}`"))),
                }
            }
        }
        Ok(DbConfig {
            host: url.host_str().unwrap_or("localhost").to_owned(),
            port: url.port().unwrap_or(5432),
            user: if url.username().is_empty() {
                "postgres".into()
            } else {
                url.username().into()
            },
            password: url.password().map(str::to_owned),
            dbname: url.path().trim_start_matches('/').to_owned(),
            sslmode,
            application_name: "gcbb".into(),
            connect_timeout: crate::config::DEFAULT_DB_CONNECT_TIMEOUT,
        })
    }

    pub fn dbname(&self) -> &str {
        &self.dbname
    }

    pub fn with_dbname(&self, dbname: &str) -> Self {
        DbConfig {
            dbname: dbname.to_owned(),
            ..self.clone()
        }
    }

    /// True for localhost, loopback addresses and Unix sockets.
    pub fn is_local(&self) -> bool {
        matches!(
            self.host.as_str(),
            "localhost" | "127.0.0.1" | "::1" | "[::1]"
        ) || self.host.starts_with('/')
    }

    /// True for a Neon pooler (PgBouncer) endpoint.
    pub fn is_pooled(&self) -> bool {
        self.host.contains("-pooler")
    }

    /// `host:port/dbname` without credentials, for logs and messages.
    pub fn redacted(&self) -> String {
        format!("{}:{}/{}", self.host, self.port, self.dbname)
    }

    pub fn to_pg_config(&self) -> tokio_postgres::Config {
        let mut c = tokio_postgres::Config::new();
        c.host(&self.host)
            .port(self.port)
            .user(&self.user)
            .dbname(&self.dbname)
            .application_name(&self.application_name)
            .connect_timeout(self.connect_timeout);
        if let Some(p) = &self.password {
            c.password(p);
        }
        c
    }
}
