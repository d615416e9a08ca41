//! Native Redis (`redis://`, `rediss://`) through a `ConnectionManager`: one multiplexed
//! connection shared by every request, reconnected in the background after Redis restarts.
//!
//! The connection is made lazily on first use and retried on the next call when Redis was
//! down, so a process started while Redis is away starts using it once it is back.

use std::time::Duration;

use bytes::Bytes;
use redis::aio::{ConnectionManager, ConnectionManagerConfig};

use super::script::{Script, ScriptValue};
use super::CacheError;

/// Connection attempts per (re)connect before a call gives up; the next call tries again.
pub const CONNECT_RETRIES: usize = 1;

pub struct RedisStore {
    client: redis::Client,
    conn: tokio::sync::OnceCell<ConnectionManager>,
    timeout: Duration,
}

impl RedisStore {
    pub fn new(url: &str, timeout: Duration) -> Result<Self, CacheError> {
        let client =
            redis::Client::open(url).map_err(|e| CacheError::Unreachable(e.to_string()))?;
        Ok(RedisStore {
            client,
            conn: tokio::sync::OnceCell::new(),
            timeout,
        })
    }

    async fn conn(&self) -> Result<ConnectionManager, CacheError> {
        let config = ConnectionManagerConfig::new()
            .set_connection_timeout(self.timeout)
            .set_response_timeout(self.timeout)
            .set_number_of_retries(CONNECT_RETRIES)
            .set_max_delay(self.timeout.as_millis() as u64);
        let conn = tokio::time::timeout(
            self.timeout,
            self.conn.get_or_try_init(|| {
                ConnectionManager::new_with_config(self.client.clone(), config)
            }),
        )
        .await
        .map_err(|_| CacheError::Timeout)?
        .map_err(map_err)?;
        Ok(conn.clone())
    }

    async fn query<T: redis::FromRedisValue>(&self, cmd: &redis::Cmd) -> Result<T, CacheError> {
        let mut conn = self.conn().await?;
        tokio::time::timeout(self.timeout, cmd.query_async(&mut conn))
            .await
            .map_err(|_| CacheError::Timeout)?
            .map_err(map_err)
    }

    pub async fn mget(&self, keys: &[String]) -> Result<Vec<Option<Bytes>>, CacheError> {
        let values: Vec<Option<Vec<u8>>> = self.query(redis::cmd("MGET").arg(keys)).await?;
        Ok(values.into_iter().map(|v| v.map(Bytes::from)).collect())
    }

    pub async fn set_many(&self, items: &[(String, Bytes, Duration)]) -> Result<(), CacheError> {
        let mut pipe = redis::pipe();
        for (key, value, ttl) in items {
            pipe.cmd("SET")
                .arg(key)
                .arg(value.as_ref())
                .arg("PX")
                .arg(ttl.as_millis().max(1) as u64)
                .ignore();
        }
        let mut conn = self.conn().await?;
        tokio::time::timeout(self.timeout, pipe.query_async::<()>(&mut conn))
            .await
            .map_err(|_| CacheError::Timeout)?
            .map_err(map_err)
    }

    pub async fn del(&self, keys: &[String]) -> Result<u64, CacheError> {
        self.query(redis::cmd("DEL").arg(keys)).await
    }

    pub async fn incr(&self, key: &str) -> Result<i64, CacheError> {
        self.query(redis::cmd("INCR").arg(key)).await
    }

    pub async fn set_nx_px(
        &self,
        key: &str,
        value: &str,
        ttl: Duration,
    ) -> Result<bool, CacheError> {
        let reply: Option<String> = self
            .query(
                redis::cmd("SET")
                    .arg(key)
                    .arg(value)
                    .arg("NX")
                    .arg("PX")
                    .arg(ttl.as_millis().max(1) as u64),
            )
            .await?;
        Ok(reply.is_some())
    }

    pub async fn scan(
        &self,
        cursor: &str,
        pattern: &str,
        batch: usize,
    ) -> Result<(String, Vec<String>), CacheError> {
        self.query(
            redis::cmd("SCAN")
                .arg(cursor)
                .arg("MATCH")
                .arg(pattern)
                .arg("COUNT")
                .arg(batch),
        )
        .await
    }

    /// One round trip: `RPUSH` (+ `PEXPIRE` with a time to live) when there are items, else
    /// `LLEN`; the lease's `SET … PX`; the watched key's `GET`.
    pub async fn append_list(
        &self,
        append: &super::list::ListAppend<'_>,
    ) -> Result<super::list::Appended, CacheError> {
        let mut pipe = redis::pipe();
        if append.items.is_empty() {
            pipe.cmd("LLEN").arg(append.key);
        } else {
            pipe.cmd("RPUSH").arg(append.key);
            for item in append.items {
                pipe.arg(item.as_ref());
            }
            if let Some(ttl) = append.ttl {
                pipe.cmd("PEXPIRE")
                    .arg(append.key)
                    .arg(ttl.as_millis().max(1) as u64)
                    .ignore();
            }
        }
        if let Some((lease, ttl)) = append.lease {
            pipe.cmd("SET")
                .arg(lease)
                .arg("1")
                .arg("PX")
                .arg(ttl.as_millis().max(1) as u64)
                .ignore();
        }
        if let Some(watch) = append.watch {
            pipe.cmd("GET").arg(watch);
        }
        let mut conn = self.conn().await?;
        let mut replies: Vec<redis::Value> =
            tokio::time::timeout(self.timeout, pipe.query_async(&mut conn))
                .await
                .map_err(|_| CacheError::Timeout)?
                .map_err(map_err)?;
        let watched = match append.watch {
            Some(_) => match replies.pop() {
                Some(redis::Value::Nil) | None => None,
                Some(v) => Some(Bytes::from(
                    redis::from_redis_value::<Vec<u8>>(&v).map_err(map_err)?,
                )),
            },
            None => None,
        };
        let len = match replies.first() {
            Some(v) => redis::from_redis_value::<u64>(v).map_err(map_err)?,
            None => return Err(CacheError::Protocol("no reply to RPUSH".into())),
        };
        Ok(super::list::Appended { len, watched })
    }

    pub async fn list_range(&self, key: &str, start: usize) -> Result<Vec<Bytes>, CacheError> {
        let values: Vec<Vec<u8>> = self
            .query(redis::cmd("LRANGE").arg(key).arg(start).arg(-1))
            .await?;
        Ok(values.into_iter().map(Bytes::from).collect())
    }

    pub async fn expire(&self, key: &str, ttl: Duration) -> Result<bool, CacheError> {
        self.query(
            redis::cmd("PEXPIRE")
                .arg(key)
                .arg(ttl.as_millis().max(1) as u64),
        )
        .await
    }

    pub async fn zadd(&self, key: &str, score: i64, member: &str) -> Result<(), CacheError> {
        let _: i64 = self
            .query(redis::cmd("ZADD").arg(key).arg(score).arg(member))
            .await?;
        Ok(())
    }

    pub async fn zrange_by_score(
        &self,
        key: &str,
        max: i64,
        limit: usize,
    ) -> Result<Vec<String>, CacheError> {
        self.query(
            redis::cmd("ZRANGEBYSCORE")
                .arg(key)
                .arg("-inf")
                .arg(max)
                .arg("LIMIT")
                .arg(0)
                .arg(limit),
        )
        .await
    }

    pub async fn zrem(&self, key: &str, member: &str) -> Result<bool, CacheError> {
        let n: i64 = self.query(redis::cmd("ZREM").arg(key).arg(member)).await?;
        Ok(n > 0)
    }

    pub async fn ping(&self) -> Result<(), CacheError> {
        let pong: String = self.query(&redis::cmd("PING")).await?;
        if pong == "PONG" {
            Ok(())
        } else {
            Err(CacheError::Server(pong))
        }
    }

    pub async fn run_script(
        &self,
        script: &Script,
        keys: &[String],
        args: &[String],
    ) -> Result<ScriptValue, CacheError> {
        let mut conn = self.conn().await?;
        let mut invocation = script.redis().prepare_invoke();
        for key in keys {
            invocation.key(key);
        }
        for arg in args {
            invocation.arg(arg);
        }
        let value: redis::Value =
            tokio::time::timeout(self.timeout, invocation.invoke_async(&mut conn))
                .await
                .map_err(|_| CacheError::Timeout)?
                .map_err(map_err)?;
        from_redis_value(value)
    }
}

impl super::breaker::Probe for RedisStore {
    fn probe(&self) -> impl std::future::Future<Output = Result<(), CacheError>> + Send {
        self.ping()
    }
}

fn from_redis_value(value: redis::Value) -> Result<ScriptValue, CacheError> {
    Ok(match value {
        redis::Value::Nil => ScriptValue::Nil,
        redis::Value::Int(n) => ScriptValue::Int(n),
        redis::Value::BulkString(b) => ScriptValue::Data(Bytes::from(b)),
        redis::Value::SimpleString(s) => ScriptValue::Data(Bytes::from(s)),
        redis::Value::Okay => ScriptValue::Data(Bytes::from_static(b"OK")),
        redis::Value::Boolean(b) => ScriptValue::Int(b as i64),
        redis::Value::Array(items) | redis::Value::Set(items) => ScriptValue::Array(
            items
                .into_iter()
                .map(from_redis_value)
                .collect::<Result<_, _>>()?,
        ),
        redis::Value::ServerError(e) => {
            return Err(CacheError::Server(redis::RedisError::from(e).to_string()))
        }
        other => return Err(CacheError::Protocol(format!("unexpected reply {other:?}"))),
    })
}

fn map_err(e: redis::RedisError) -> CacheError {
    if e.is_timeout() {
        CacheError::Timeout
    } else if e.is_io_error() || e.is_connection_dropped() || e.is_connection_refusal() {
        CacheError::Unreachable(e.to_string())
    } else {
        CacheError::Server(e.to_string())
    }
}
