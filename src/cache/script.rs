//! Scripts: a Lua source (run by `EVALSHA`/`EVAL` on Redis and Upstash, one atomic round trip)
//! paired with an equivalent Rust function run under the memory store's lock, so a rate limiter
//! behaves the same on every backend; and the reply values scripts return.

use bytes::Bytes;

use super::memory::LocalTxn;
use super::CacheError;

/// A reply of a script (or any command): the Redis value types we use.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ScriptValue {
    Nil,
    Int(i64),
    Data(Bytes),
    Array(Vec<ScriptValue>),
}

impl ScriptValue {
    pub fn as_int(&self) -> Option<i64> {
        match self {
            ScriptValue::Int(n) => Some(*n),
            ScriptValue::Data(b) => std::str::from_utf8(b).ok()?.parse().ok(),
            _ => None,
        }
    }
}

/// The in-process twin of a Lua script: same keys, same arguments, same reply.
pub type LocalScript =
    fn(&mut LocalTxn<'_>, &[String], &[String]) -> Result<ScriptValue, CacheError>;

/// A Lua script with its in-process equivalent. Build once (e.g. in a `LazyLock`).
pub struct Script {
    lua: &'static str,
    redis: redis::Script,
    local: LocalScript,
}

impl Script {
    pub fn new(lua: &'static str, local: LocalScript) -> Self {
        Script {
            lua,
            redis: redis::Script::new(lua),
            local,
        }
    }

    /// Runs the in-process twin (the memory store calls it under its lock).
    pub(crate) fn run_local(
        &self,
        txn: &mut LocalTxn<'_>,
        keys: &[String],
        args: &[String],
    ) -> Result<ScriptValue, CacheError> {
        (self.local)(txn, keys, args)
    }

    pub fn lua(&self) -> &'static str {
        self.lua
    }

    /// SHA-1 of the source, for `EVALSHA`.
    pub fn sha1(&self) -> &str {
        self.redis.get_hash()
    }

    pub(crate) fn redis(&self) -> &redis::Script {
        &self.redis
    }
}
