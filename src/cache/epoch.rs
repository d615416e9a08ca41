//! The privacy epoch shared through the cache: the last confirmation any instance made from the
//! database, kept beside the pages so that one cache round trip yields both, and moved forward
//! only (a Lua script on Redis and Upstash, the same function under the memory store's lock).

use std::time::Duration;

use bytes::Bytes;

use super::script::{Script, ScriptValue};
use super::store::Store;
use super::{Cache, CacheError};

/// How long the shared privacy epoch is kept without being confirmed again; an old copy is
/// only an old confirmation (readers judge it by its time), so it may outlive any outage.
pub const SHARED_EPOCH_TTL: Duration = Duration::from_secs(24 * 60 * 60);

/// The privacy epoch as one instance confirmed it from the database, shared through the cache
/// (stored as `epoch:unix_ms`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SharedEpoch {
    pub epoch: i64,
    /// When the confirming query was sent, in Unix milliseconds of the confirming instance.
    pub confirmed_at_ms: u64,
}

impl SharedEpoch {
    fn parse(raw: &[u8]) -> Option<SharedEpoch> {
        let (epoch, at) = std::str::from_utf8(raw).ok()?.split_once(':')?;
        Some(SharedEpoch {
            epoch: epoch.parse().ok()?,
            confirmed_at_ms: at.parse().ok()?,
        })
    }

    /// The later of two confirmations: the higher epoch, and the later time (a higher epoch
    /// reflects every bump a lower one does, so it is confirmed at least as late).
    fn merge(self, other: SharedEpoch) -> SharedEpoch {
        SharedEpoch {
            epoch: self.epoch.max(other.epoch),
            confirmed_at_ms: self.confirmed_at_ms.max(other.confirmed_at_ms),
        }
    }
}

/// Moves the shared epoch forward: `KEYS[1]` = the key, `ARGV` = epoch, confirmed-at (ms),
/// TTL (ms). Replies 1 when it wrote.
static SHARE_EPOCH: std::sync::LazyLock<Script> = std::sync::LazyLock::new(|| {
    Script::new(
        "local e = tonumber(ARGV[1]) local t = tonumber(ARGV[2]) \
         local cur = redis.call('GET', KEYS[1]) \
         if cur then \
           local ce, ct = string.match(cur, '^(%d+):(%d+)$') \
           ce = tonumber(ce) ct = tonumber(ct) \
           if ce and ct then \
             if ce > e then e = ce end \
             if ct > t then t = ct end \
             if string.format('%d:%d', e, t) == cur then return 0 end \
           end \
         end \
         redis.call('SET', KEYS[1], string.format('%d:%d', e, t), 'PX', ARGV[3]) \
         return 1",
        |txn, keys, args| {
            let (Some(key), [epoch, at, ttl]) = (keys.first(), args) else {
                return Ok(ScriptValue::Int(0));
            };
            let (Ok(epoch), Ok(at), Ok(ttl)) = (epoch.parse(), at.parse(), ttl.parse::<u64>())
            else {
                return Ok(ScriptValue::Int(0));
            };
            let ours = SharedEpoch {
                epoch,
                confirmed_at_ms: at,
            };
            let merged = match txn.get(key).and_then(|raw| SharedEpoch::parse(&raw)) {
                Some(current) if current.merge(ours) == current => return Ok(ScriptValue::Int(0)),
                Some(current) => current.merge(ours),
                None => ours,
            };
            txn.set(
                key,
                Bytes::from(format!("{}:{}", merged.epoch, merged.confirmed_at_ms)),
                Some(Duration::from_millis(ttl)),
            );
            Ok(ScriptValue::Int(1))
        },
    )
});

impl Cache {
    /// The privacy epoch as some instance last confirmed it from the database, and when (Unix
    /// milliseconds of that instance's clock): `None` when none is shared, or the cache is this
    /// process's memory (nothing to share it with).
    pub async fn shared_privacy_epoch(&self) -> Result<Option<SharedEpoch>, CacheError> {
        if matches!(self.store, Store::Memory(_)) {
            return Ok(None);
        }
        let got = self.store.mget(&[self.keyspace.privacy_epoch()]).await?;
        Ok(got
            .into_iter()
            .next()
            .flatten()
            .and_then(|raw| SharedEpoch::parse(&raw)))
    }

    /// Shares a confirmation of the privacy epoch with every instance: the stored copy moves
    /// forward only (the higher epoch, the later confirmation), so writers racing each other
    /// never step it back. Nothing to do for the memory store.
    pub async fn share_privacy_epoch(&self, shared: SharedEpoch) -> Result<(), CacheError> {
        if matches!(self.store, Store::Memory(_)) {
            return Ok(());
        }
        self.store
            .run_script(
                &SHARE_EPOCH,
                &[self.keyspace.privacy_epoch()],
                &[
                    shared.epoch.to_string(),
                    shared.confirmed_at_ms.to_string(),
                    SHARED_EPOCH_TTL.as_millis().to_string(),
                ],
            )
            .await
            .map(|_| ())
    }
}
