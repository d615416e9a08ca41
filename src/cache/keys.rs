//! Every cache key, built in one place: `{prefix}:v{SCHEMA}:{area}:{…}`.
//!
//! User-supplied parts (search text, category names, ids) go through [`part`]: short strings of
//! safe characters stay readable, anything else is replaced by a hash, so no input can reach
//! another key, a glob pattern or a separator.

use sha2::{Digest, Sha256};

/// Bumped when the stored format of any entry changes; old entries are then simply never read.
pub const SCHEMA: u32 = 1;
/// `:v{SCHEMA}:`, between the prefix and the area.
const SCHEMA_SEGMENT: &str = ":v1:";
/// First segment of every key in production.
pub const DEFAULT_PREFIX: &str = "gcbb";
/// Longest user-supplied part kept verbatim; longer ones are hashed.
pub const MAX_VERBATIM_PART: usize = 64;

/// A family of entries invalidated together by one generation counter.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Area {
    /// Dashboard pages (companion lists, categories).
    Dashboard,
    /// One companion's public profile.
    Companion,
    /// Cached replies of a companion to anonymous users.
    BotReply,
    /// Rate-limit counters (never generation-checked; listed so the key space is in one place).
    RateLimit,
    /// Locks of scheduled jobs (the cron refresh), so runs never overlap.
    Job,
    /// Replies in flight and their journals (resume, stop, writes retried later); never
    /// generation-checked.
    Reply,
}

impl Area {
    pub const ALL: [Area; 6] = [
        Area::Dashboard,
        Area::Companion,
        Area::BotReply,
        Area::RateLimit,
        Area::Job,
        Area::Reply,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Area::Dashboard => "dashboard",
            Area::Companion => "companion",
            Area::BotReply => "botreply",
            Area::RateLimit => "ratelimit",
            Area::Job => "job",
            Area::Reply => "reply",
        }
    }
}

/// Who a response is for; decides the TTL and whether the key is per user.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Audience {
    Anonymous,
    SignedIn { user_id: String },
}

impl Audience {
    /// How long an entry for this audience is fresh: anonymous pages 10 minutes (the CDN's
    /// window too), a signed-in viewer's 60 seconds.
    pub fn ttl(&self) -> std::time::Duration {
        match self {
            Audience::Anonymous => super::ANONYMOUS_TTL,
            Audience::SignedIn { .. } => super::SIGNED_IN_TTL,
        }
    }

    fn key_part(&self) -> String {
        match self {
            Audience::Anonymous => "anon".to_owned(),
            Audience::SignedIn { user_id } => format!("u.{}", part(user_id)),
        }
    }
}

/// A key relative to the key space: its area (for the generation counter) and the rest.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Key {
    pub area: Area,
    rest: String,
}

impl Key {
    /// The part after `{area}:`; only this module builds it.
    pub fn rest(&self) -> &str {
        &self.rest
    }

    /// The same key under a privacy epoch: an entry built before a companion was hidden lives
    /// under an older epoch's key and is never read again (see `platform::privacy`).
    pub fn at_privacy_epoch(mut self, epoch: i64) -> Key {
        use std::fmt::Write;
        // Writing into the key itself: no intermediate string.
        let _ = write!(self.rest, ":e{epoch}");
        self
    }
}

/// `parts` concatenated into one string allocated once (keys are built on every cached
/// request; `format!` costs several times as much for the same bytes).
fn concat(parts: &[&str]) -> String {
    let mut out = String::with_capacity(parts.iter().map(|p| p.len()).sum());
    for p in parts {
        out.push_str(p);
    }
    out
}

/// One page of the dashboard list.
pub fn dashboard_page(
    audience: &Audience,
    category: Option<&str>,
    q: Option<&str>,
    page: u32,
    page_size: u32,
) -> Key {
    let category = category.map(part);
    let q = q.map(part);
    let mut rest = concat(&[
        "page:",
        &audience.key_part(),
        ":c.",
        category.as_deref().unwrap_or("all"),
        ":q.",
        q.as_deref().unwrap_or("-"),
    ]);
    use std::fmt::Write;
    let _ = write!(rest, ":p{page}:s{page_size}");
    Key {
        area: Area::Dashboard,
        rest,
    }
}

/// The cron job's static snapshot of the first anonymous page of a category (or of all).
/// In the dashboard area, so an edit's generation bump invalidates snapshots too; read and
/// written under the privacy epoch like the pages.
pub fn dashboard_snapshot(category: Option<&str>) -> Key {
    let category = category.map(part).unwrap_or_else(|| "all".to_owned());
    Key {
        area: Area::Dashboard,
        rest: format!("snapshot:c.{category}"),
    }
}

/// The list of categories, which decides whether a page's category exists.
pub fn dashboard_categories() -> Key {
    Key {
        area: Area::Dashboard,
        rest: "categories".to_owned(),
    }
}

/// The lock of a scheduled job (take it with `Cache::try_lock`).
pub fn job_lock(job: &str) -> Key {
    Key {
        area: Area::Job,
        rest: part(job),
    }
}

/// One companion's public profile.
pub fn companion(companion_id: &str) -> Key {
    Key {
        area: Area::Companion,
        rest: format!("profile:{}", part(companion_id)),
    }
}

/// A companion's reply to an anonymous user's prompt; the prompt is always hashed (never
/// stored readable in a key).
pub fn bot_reply(companion_id: &str, prompt: &str) -> Key {
    Key {
        area: Area::BotReply,
        rest: format!("{}:{}", part(companion_id), digest(prompt)),
    }
}

/// A rate-limit counter for `subject` (user id or client address) under `scope` (route name).
pub fn rate_limit(scope: &str, subject: &str) -> Key {
    Key {
        area: Area::RateLimit,
        rest: format!("{}:{}", part(scope), part(subject)),
    }
}

/// The journal of a reply stream (a list of its records, in order): what a resume replays, and
/// what a reply whose database write failed is written from later.
pub fn reply_journal(stream_id: &str) -> Key {
    Key {
        area: Area::Reply,
        rest: format!("j:{}", part(stream_id)),
    }
}

/// The lease the producer of a stream renews while it runs.
pub fn reply_lease(stream_id: &str) -> Key {
    Key {
        area: Area::Reply,
        rest: format!("live:{}", part(stream_id)),
    }
}

/// A request to stop a stream, for its producer, whichever instance runs it.
pub fn reply_stop(stream_id: &str) -> Key {
    Key {
        area: Area::Reply,
        rest: format!("stop:{}", part(stream_id)),
    }
}

/// The stream in flight for one viewer in one chat (`scope`: `chat` or `group`); its value is
/// the stream's id. `viewer` is `u.<user id>` or `ip.<address>`, as the rate limiter tells
/// viewers apart; both parts are user input and go through [`part`].
pub fn reply_active(scope: &str, chat_id: &str, viewer: &str) -> Key {
    Key {
        area: Area::Reply,
        rest: format!("active:{}:{}:{}", part(scope), part(chat_id), part(viewer)),
    }
}

/// The journals whose replies are not all in the database yet (a sorted set, by when a drain
/// may take them).
pub fn reply_pending() -> Key {
    Key {
        area: Area::Reply,
        rest: "pending".to_owned(),
    }
}

/// Turns a [`Key`] into the stored key names of this deployment (or of one test).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Keyspace {
    prefix: String,
    /// The generation counters' keys, by [`Area`] (in the order of [`Area::ALL`]).
    generations: Vec<String>,
}

impl Default for Keyspace {
    fn default() -> Self {
        Keyspace::with_prefix(DEFAULT_PREFIX)
    }
}

impl Keyspace {
    /// A key space under another first segment (tests use a random one); the prefix itself
    /// goes through [`part`].
    pub fn with_prefix(prefix: &str) -> Self {
        let prefix = part(prefix);
        let generations = Area::ALL
            .iter()
            .map(|area| concat(&[&prefix, SCHEMA_SEGMENT, "gen:", area.as_str()]))
            .collect();
        Keyspace {
            prefix,
            generations,
        }
    }

    pub fn prefix(&self) -> &str {
        &self.prefix
    }

    /// `{prefix}:v{SCHEMA}:{area}:{rest}`.
    pub fn entry(&self, key: &Key) -> String {
        concat(&[
            &self.prefix,
            SCHEMA_SEGMENT,
            key.area.as_str(),
            ":",
            &key.rest,
        ])
    }

    /// The generation counter of an area: `{prefix}:v{SCHEMA}:gen:{area}` (made once: every
    /// cached request reads one).
    pub fn generation(&self, area: Area) -> &str {
        &self.generations[area as usize]
    }

    /// The shared copy of the database's privacy epoch, with when it was confirmed:
    /// `{prefix}:v{SCHEMA}:privacy:epoch` (see `platform::privacy`).
    pub fn privacy_epoch(&self) -> String {
        concat(&[&self.prefix, SCHEMA_SEGMENT, "privacy:epoch"])
    }

    /// The rebuild lock of an entry.
    pub fn lock(&self, key: &Key) -> String {
        format!(
            "{}:v{SCHEMA}:lock:{}:{}",
            self.prefix,
            key.area.as_str(),
            key.rest
        )
    }

    /// Chunk `index` of the chunk set `set_id` of the entry stored at `entry`.
    pub fn chunk(entry: &str, set_id: u64, index: u32) -> String {
        format!("{entry}:chunk:{set_id:016x}:{index}")
    }

    /// A SCAN pattern matching every entry of an area (not its generation counter).
    pub fn area_pattern(&self, area: Area) -> String {
        format!("{}:v{SCHEMA}:{}:*", self.prefix, area.as_str())
    }

    /// A SCAN pattern matching everything in this key space.
    pub fn all_pattern(&self) -> String {
        format!("{}:*", self.prefix)
    }
}

/// A user-supplied key part made safe: kept when short and made of `[A-Za-z0-9_.-]`,
/// else `~` and a hash (`~` can't occur in a kept part, so the two forms never collide).
pub fn part(raw: &str) -> String {
    let safe = !raw.is_empty()
        && raw.len() <= MAX_VERBATIM_PART
        && raw
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'-'));
    if safe {
        raw.to_owned()
    } else {
        format!("~{}", digest(raw))
    }
}

/// 128 bits of SHA-256, hex: enough to never collide among cache keys.
fn digest(raw: &str) -> String {
    let hash = Sha256::digest(raw.as_bytes());
    hex::encode(&hash[..16])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_schema_segment_names_the_schema() {
        assert_eq!(SCHEMA_SEGMENT, format!(":v{SCHEMA}:"));
        let ks = Keyspace::with_prefix("p");
        assert_eq!(ks.entry(&companion("c1")), "p:v1:companion:profile:c1");
    }

    #[test]
    fn safe_parts_stay_readable() {
        assert_eq!(part("romance"), "romance");
        assert_eq!(part("user_2abc-XYZ.1"), "user_2abc-XYZ.1");
    }

    #[test]
    fn hostile_parts_are_hashed_into_safe_characters() {
        for raw in [
            "",
            "a:b",
            "*",
            "x?[a-z]\\",
            "gcbb:v1:gen:dashboard",
            "日本語",
            "🦀\u{0}\n",
            &"a".repeat(65),
        ] {
            let p = part(raw);
            assert!(p.starts_with('~'), "{raw:?} -> {p}");
            assert_eq!(p.len(), 33);
            assert!(p[1..].bytes().all(|b| b.is_ascii_hexdigit()));
        }
    }

    #[test]
    fn a_hashed_part_never_equals_a_kept_one() {
        let hashed = part("a b");
        assert_ne!(part(&hashed), hashed, "a kept part can't contain ~");
    }

    #[test]
    fn different_inputs_give_different_keys() {
        let ks = Keyspace::default();
        let a = ks.entry(&dashboard_page(
            &Audience::Anonymous,
            Some("a"),
            None,
            1,
            20,
        ));
        let b = ks.entry(&dashboard_page(
            &Audience::Anonymous,
            Some("a"),
            Some(""),
            1,
            20,
        ));
        let c = ks.entry(&dashboard_page(
            &Audience::SignedIn {
                user_id: "u1".into(),
            },
            Some("a"),
            None,
            1,
            20,
        ));
        assert_ne!(a, b);
        assert_ne!(a, c);
        assert_eq!(a, "gcbb:v1:dashboard:page:anon:c.a:q.-:p1:s20");
    }

    #[test]
    fn the_generation_counter_is_outside_every_area_pattern() {
        let ks = Keyspace::with_prefix("t1");
        assert_eq!(ks.generation(Area::Dashboard), "t1:v1:gen:dashboard");
        assert!(!ks
            .generation(Area::Dashboard)
            .starts_with(ks.area_pattern(Area::Dashboard).trim_end_matches('*')));
    }

    #[test]
    fn a_viewers_stream_key_keeps_chats_and_viewers_apart() {
        let ks = Keyspace::with_prefix("p");
        assert_eq!(
            ks.entry(&reply_active("chat", "c1", "u.alice")),
            "p:v1:reply:active:chat:c1:u.alice"
        );
        // An address with a colon (IPv6) is hashed, so it can't run into the next part.
        let v6 = ks.entry(&reply_active("chat", "c1", "ip.2001:db8::1"));
        assert!(v6.starts_with("p:v1:reply:active:chat:c1:~"), "{v6}");
        assert_ne!(
            ks.entry(&reply_active("chat", "c1", "u.alice")),
            ks.entry(&reply_active("group", "c1", "u.alice"))
        );
        assert_eq!(ks.entry(&reply_journal("s-1")), "p:v1:reply:j:s-1");
    }

    #[test]
    fn prompts_never_appear_in_keys() {
        let k = Keyspace::default().entry(&bot_reply("c1", "hello"));
        assert!(!k.contains("hello"));
    }
}
