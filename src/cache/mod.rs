//! The cache in front of Postgres. For now only what `/api/health` needs: a reachability check
//! of the configured backend (in-process memory, native Redis, or Upstash REST).

use std::time::{Duration, Instant};

use crate::config::CacheBackend;

#[derive(Debug, thiserror::Error)]
pub enum CacheError {
    #[error("cache timed out")]
    Timeout,
    #[error("cache unreachable: {0}")]
    Unreachable(String),
    #[error("cache answered an error: {0}")]
    Server(String),
}

pub struct Cache {
    backend: Backend,
    timeout: Duration,
}

enum Backend {
    Memory,
    Redis(Box<RedisBackend>),
    Upstash {
        url: String,
        token: String,
        http: reqwest::Client,
    },
}

struct RedisBackend {
    client: redis::Client,
    conn: tokio::sync::OnceCell<redis::aio::MultiplexedConnection>,
}

impl Cache {
    pub fn new(backend: &CacheBackend, http: reqwest::Client, timeout: Duration) -> Self {
        let backend = match backend {
            CacheBackend::Memory => Backend::Memory,
            CacheBackend::Redis { url } => match redis::Client::open(url.as_str()) {
                Ok(client) => Backend::Redis(Box::new(RedisBackend {
                    client,
                    conn: tokio::sync::OnceCell::new(),
                })),
                Err(e) => {
                    tracing::warn!(error = %e, "REDIS_URL unusable; using the in-process cache");
                    Backend::Memory
                }
            },
            CacheBackend::Upstash { url, token } => Backend::Upstash {
                url: url.clone(),
                token: token.clone(),
                http,
            },
        };
        Cache { backend, timeout }
    }

    pub fn backend_name(&self) -> &'static str {
        match self.backend {
            Backend::Memory => "memory",
            Backend::Redis(_) => "redis",
            Backend::Upstash { .. } => "upstash",
        }
    }

    /// Round-trips a PING and returns how long it took.
    pub async fn ping(&self) -> Result<Duration, CacheError> {
        let started = Instant::now();
        tokio::time::timeout(self.timeout, self.ping_inner())
            .await
            .map_err(|_| CacheError::Timeout)??;
        Ok(started.elapsed())
    }

    async fn ping_inner(&self) -> Result<(), CacheError> {
        match &self.backend {
            Backend::Memory => Ok(()),
            Backend::Redis(redis) => {
                let conn = redis
                    .conn
                    .get_or_try_init(|| redis.client.get_multiplexed_async_connection())
                    .await
                    .map_err(|e| CacheError::Unreachable(e.to_string()))?;
                let mut conn = conn.clone();
                let pong: String = redis::cmd("PING")
                    .query_async(&mut conn)
                    .await
                    .map_err(|e| CacheError::Unreachable(e.to_string()))?;
                if pong == "PONG" {
                    Ok(())
                } else {
                    Err(CacheError::Server(pong))
                }
            }
            Backend::Upstash { url, token, http } => {
                let resp = http
                    .post(url)
                    .bearer_auth(token)
                    .json(&["PING"])
                    .send()
                    .await
                    .map_err(|e| CacheError::Unreachable(e.without_url().to_string()))?;
                let body: serde_json::Value = resp
                    .json()
                    .await
                    .map_err(|e| CacheError::Unreachable(e.without_url().to_string()))?;
                match (body.get("result"), body.get("error")) {
                    (Some(_), _) => Ok(()),
                    (_, Some(err)) => Err(CacheError::Server(err.to_string())),
                    _ => Err(CacheError::Server("unexpected reply".into())),
                }
            }
        }
    }
}
