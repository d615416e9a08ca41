//! Lua scripts written for Upstash, made acceptable to open-source Redis. Upstash knows
//! shebang flags Redis refuses (`#!lua flags=allow-key-locking`, which every script of
//! `@upstash/ratelimit` starts with), so those flags are dropped before a script reaches Redis,
//! keeping the flags Redis knows. Redis then caches the script under the digest of the text it
//! got, while clients call EVALSHA with the digest of the text they sent: the proxy remembers
//! which is which, so EVALSHA, SCRIPT EXISTS and SCRIPT LOAD's reply speak the client's digest.
//!
//! It remembers only the scripts that came through it, checked ([`super::lua`]): EVALSHA of any
//! other digest — a script someone loaded into the shared Redis directly, unchecked — answers
//! NOSCRIPT, as Upstash does for a script its database never saw, and the SDKs send the script
//! again with EVAL, where it is checked.

use std::collections::HashMap;
use std::sync::Mutex;

use super::commands::Command;

/// Shebang flags only Upstash knows (its key-based locking); Redis refuses a script naming one.
pub const UPSTASH_ONLY_FLAGS: &[&str] = &["allow-key-locking"];

/// Digests remembered at most; past that the map starts again (a client whose digest was
/// forgotten gets NOSCRIPT and sends the script again, as it must after any Redis restart).
pub const MAX_REMEMBERED_DIGESTS: usize = 10_000;

/// What EVALSHA and SCRIPT EXISTS send Redis for a digest the proxy never checked: 40
/// characters that are no SHA-1 in hex, so Redis answers NOSCRIPT (or 0) whatever it caches.
pub const UNCHECKED_DIGEST: &str = "not-a-script-checked-by-upstash-proxy!!!";

/// The script without Upstash-only shebang flags, or `None` when it has none to drop.
pub fn strip_upstash_flags(source: &str) -> Option<String> {
    if !source.starts_with("#!") {
        return None;
    }
    let end = source.find('\n').unwrap_or(source.len());
    let (line, rest) = source.split_at(end);
    let (line, cr) = match line.strip_suffix('\r') {
        Some(l) => (l, "\r"),
        None => (line, ""),
    };
    let mut changed = false;
    let mut tokens = Vec::new();
    for token in line.split_whitespace() {
        let Some(flags) = token.strip_prefix("flags=") else {
            tokens.push(token.to_owned());
            continue;
        };
        let all: Vec<&str> = flags.split(',').collect();
        let kept: Vec<&str> = all
            .iter()
            .copied()
            .filter(|f| !UPSTASH_ONLY_FLAGS.contains(f))
            .collect();
        changed |= kept.len() != all.len();
        // `#!lua` alone and `#!lua flags=` mean the same to Redis: a shebang, no flags.
        if !kept.is_empty() {
            tokens.push(format!("flags={}", kept.join(",")));
        }
    }
    changed.then(|| format!("{}{cr}{rest}", tokens.join(" ")))
}

/// SHA-1 of a script's text, in hex, as Redis and the SDKs compute it.
pub fn digest(source: impl AsRef<[u8]>) -> String {
    let sha1 = ring::digest::digest(&ring::digest::SHA1_FOR_LEGACY_USE_ONLY, source.as_ref());
    hex::encode(sha1.as_ref())
}

/// The client's digest of each script that came through the proxy → the digest Redis knows it
/// by (the same unless the proxy rewrote the script).
#[derive(Default)]
pub struct ScriptDigests {
    redis_digest: Mutex<HashMap<String, String>>,
}

impl ScriptDigests {
    /// Rewrites `command` for Redis in place: Upstash-only flags dropped from a script, a
    /// client's digest replaced by Redis's. Returns the digest to answer instead of Redis's for
    /// a SCRIPT LOAD whose script was rewritten.
    pub fn prepare(&self, command: &mut Command) -> Option<String> {
        let name = command.first().map(|n| n.to_ascii_uppercase())?;
        let sub = command.get(1).map(|s| s.to_ascii_uppercase());
        match (name.as_slice(), sub.as_deref()) {
            (b"EVAL" | b"EVAL_RO", _) => {
                self.admit_script(command.get_mut(1)?);
                None
            }
            (b"EVALSHA" | b"EVALSHA_RO", _) => {
                self.translate(command.get_mut(1)?);
                None
            }
            (b"SCRIPT", Some(b"LOAD")) => self.admit_script(command.get_mut(2)?),
            (b"SCRIPT", Some(b"EXISTS")) => {
                command.iter_mut().skip(2).for_each(|d| self.translate(d));
                None
            }
            _ => None,
        }
    }

    /// Rewrites a script in place when it has Upstash-only flags, and remembers its digests;
    /// the client's digest if rewritten. Only scripts the proxy checked get here.
    fn admit_script(&self, source: &mut Vec<u8>) -> Option<String> {
        let rewritten = std::str::from_utf8(source)
            .ok()
            .and_then(strip_upstash_flags);
        let client = digest(&*source);
        let redis = rewritten.as_deref().map_or_else(|| client.clone(), digest);
        let mut map = self.redis_digest.lock().unwrap_or_else(|p| p.into_inner());
        if map.len() >= MAX_REMEMBERED_DIGESTS {
            map.clear();
        }
        map.insert(client.clone(), redis);
        drop(map);
        let rewritten = rewritten?;
        *source = rewritten.into_bytes();
        Some(client)
    }

    /// Replaces a client's digest by Redis's, or by [`UNCHECKED_DIGEST`] when no script of that
    /// digest came through the proxy.
    fn translate(&self, digest: &mut Vec<u8>) {
        let key = String::from_utf8_lossy(digest).to_ascii_lowercase();
        let map = self.redis_digest.lock().unwrap_or_else(|p| p.into_inner());
        *digest = map
            .get(&key)
            .map_or(UNCHECKED_DIGEST, String::as_str)
            .as_bytes()
            .to_vec();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn upstash_only_flags_are_dropped_and_redis_flags_kept() {
        assert_eq!(
            strip_upstash_flags("#!lua flags=allow-key-locking\n  return 1\n").as_deref(),
            Some("#!lua\n  return 1\n")
        );
        assert_eq!(
            strip_upstash_flags("#!lua flags=no-writes,allow-key-locking\r\nreturn 1").as_deref(),
            Some("#!lua flags=no-writes\r\nreturn 1")
        );
        assert_eq!(
            strip_upstash_flags("#!lua flags=allow-key-locking").as_deref(),
            Some("#!lua")
        );
        assert_eq!(strip_upstash_flags("#!lua flags=no-writes\nreturn 1"), None);
        assert_eq!(
            strip_upstash_flags("return 1 -- flags=allow-key-locking"),
            None
        );
    }

    #[test]
    fn digests_of_rewritten_scripts_are_translated() {
        let digests = ScriptDigests::default();
        let source = "#!lua flags=allow-key-locking\nreturn 1";
        let mut load: Command = vec![b"script".to_vec(), b"load".to_vec(), source.into()];
        assert_eq!(digests.prepare(&mut load), Some(digest(source)));
        assert_eq!(load[2], b"#!lua\nreturn 1");

        let mut evalsha: Command = vec![
            b"EVALSHA".to_vec(),
            digest(source).to_uppercase().into_bytes(),
            b"0".to_vec(),
        ];
        assert_eq!(digests.prepare(&mut evalsha), None);
        assert_eq!(evalsha[1], digest("#!lua\nreturn 1").into_bytes());

        let mut plain: Command = vec![b"EVAL".to_vec(), b"return 2".to_vec(), b"0".to_vec()];
        assert_eq!(digests.prepare(&mut plain), None);
        assert_eq!(plain[1], b"return 2");
        let mut again: Command = vec![b"EVALSHA".into(), digest("return 2").into(), b"0".into()];
        digests.prepare(&mut again);
        assert_eq!(again[1], digest("return 2").into_bytes());
    }

    #[test]
    fn a_digest_the_proxy_never_checked_is_sent_as_one_redis_does_not_know() {
        let digests = ScriptDigests::default();
        let unseen = digest("return redis.call('FLUSHALL')");
        let mut evalsha: Command = vec![b"EVALSHA".into(), unseen.clone().into(), b"0".into()];
        digests.prepare(&mut evalsha);
        assert_eq!(evalsha[1], UNCHECKED_DIGEST.as_bytes());
        assert_eq!(UNCHECKED_DIGEST.len(), 40);
        let mut exists: Command = vec![b"SCRIPT".into(), b"EXISTS".into(), unseen.into()];
        digests.prepare(&mut exists);
        assert_eq!(exists[2], UNCHECKED_DIGEST.as_bytes());
    }
}
