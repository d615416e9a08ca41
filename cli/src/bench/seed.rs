//! `gcbb bench seed`: a deterministic, realistic data set loaded with COPY.
//!
//! Realistic means the heavy columns are as heavy as production's: `instructions` ~2 KB and each
//! JSONB config ~1 KB (the reason the old dashboard payload was 5.4 MB), message counts skewed
//! towards popular companions, some private companions and some platform-owned ones.
//!
//! One idea, kept in one file on purpose (over 600 lines): the data set, table by table, and the
//! COPY that loads it; its shape is read as one.

use std::fmt::Write as _;
use std::time::Instant;

use bytes::Bytes;
use futures_util::SinkExt;
use indicatif::{ProgressBar, ProgressStyle};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use tokio_postgres::Client;

use crate::demo::CATEGORIES;

/// Seed of the generator: the same flags always produce the same rows.
pub const SEED: u64 = 0x6362_6262;
/// Rows per COPY batch sent to the server.
const COPY_BATCH_ROWS: usize = 20_000;

/// Sizes of a data set.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Scale {
    pub companions: usize,
    pub messages: usize,
    pub group_chats: usize,
    pub users: usize,
}

impl Scale {
    /// The issue's benchmark scale.
    pub const BENCH: Scale = Scale {
        companions: 20_000,
        messages: 2_000_000,
        group_chats: 2_000,
        users: 2_000,
    };
    /// Enough to exercise every query plan in tests.
    pub const SMALL: Scale = Scale {
        companions: 2_000,
        messages: 50_000,
        group_chats: 100,
        users: 200,
    };
    pub const TINY: Scale = Scale {
        companions: 200,
        messages: 2_000,
        group_chats: 10,
        users: 20,
    };

    pub fn named(name: &str) -> Option<Scale> {
        match name {
            "bench" => Some(Scale::BENCH),
            "small" => Some(Scale::SMALL),
            "tiny" => Some(Scale::TINY),
            _ => None,
        }
    }
}

const WORDS: &[&str] = &[
    "the", "a", "friendly", "curious", "ancient", "bright", "story", "answer", "question", "world",
    "music", "dream", "secret", "journey", "light", "river", "mountain", "city", "kind", "brave",
    "quiet", "remember", "explain", "imagine", "wonder", "together", "always", "never", "because",
    "however", "and", "but", "with", "without", "about", "through", "between", "science",
    "history", "game", "film", "book", "friend", "teacher", "voice", "memory", "future", "past",
    "today", "tomorrow", "laugh", "help", "learn", "create", "listen",
];

/// Public id of the platform user in the generated set.
pub const SYSTEM_USER: &str = "system";

pub fn user_id(i: usize) -> String {
    format!("user_{i:05}")
}

pub fn companion_id(i: usize) -> String {
    format!("cmp_{i:06}")
}

/// What `seed` loaded, for the report.
#[derive(Debug, Default)]
pub struct SeedReport {
    pub companions: usize,
    pub messages: usize,
    pub group_chats: usize,
    pub group_messages: usize,
    pub burned_rows: usize,
    /// Of `seconds`, the final `VACUUM ANALYZE`.
    pub vacuum_seconds: f64,
    pub seconds: f64,
}

/// A group chat to load: who made it, its name, its members (companion indexes), when.
struct PlannedChat {
    creator: String,
    name: String,
    members: Vec<usize>,
    created: String,
}

/// The group chats and token rows, drawn from a generator of their own before anything is
/// loaded, so the progress bar knows every row it will count (members and token rows vary).
struct Plan {
    chats: Vec<PlannedChat>,
    /// (user index, companion index, tokens).
    burned: Vec<(usize, usize, u32)>,
}

impl Plan {
    fn draw(scale: Scale, system_user_id: &str) -> Plan {
        let mut rng = StdRng::seed_from_u64(SEED + 1);
        let chats = (0..scale.group_chats)
            .map(|g| {
                let creator = if g % 20 == 0 {
                    system_user_id.to_owned()
                } else {
                    user_id(rng.random_range(0..scale.users))
                };
                let name = format!("Group {}", companion_name(&mut rng));
                let n = rng.random_range(2..=4).min(scale.companions);
                let mut members: Vec<usize> = Vec::new();
                while members.len() < n {
                    let c = rng.random_range(0..scale.companions);
                    if !members.contains(&c) {
                        members.push(c);
                    }
                }
                PlannedChat {
                    creator,
                    name,
                    members,
                    created: timestamp(g as f64 / scale.group_chats.max(1) as f64),
                }
            })
            .collect();
        let mut burned = Vec::new();
        for u in 0..scale.users {
            let mut seen = Vec::new();
            for _ in 0..5 {
                let c = skewed_index(&mut rng, scale.companions);
                if seen.contains(&c) {
                    continue;
                }
                seen.push(c);
                burned.push((u, c, rng.random_range(1..50_000)));
            }
        }
        Plan { chats, burned }
    }

    fn members(&self) -> usize {
        self.chats.iter().map(|c| c.members.len()).sum()
    }
}

/// Group messages per group chat.
const GROUP_MESSAGES_PER_CHAT: usize = 5;

/// Every row `seed` loads, table by table: what the progress bar counts to.
fn rows_to_load(scale: Scale, plan: &Plan) -> u64 {
    (CATEGORIES.len()
        + scale.companions
        + scale.messages
        + plan.chats.len()
        + plan.members()
        + plan.chats.len() * GROUP_MESSAGES_PER_CHAT
        + plan.burned.len()) as u64
}

/// Loads a data set of `scale` into an empty, migrated database, then refreshes the read model
/// and runs `VACUUM ANALYZE`, so plans and timings are those of a database in service: analyzed
/// (plans of real data) and vacuumed (the visibility map that index-only scans rely on, which
/// a freshly loaded table lacks until autovacuum gets to it; without it the seed's "before"
/// query takes three times longer, which flattered every "before/after" ratio).
pub async fn seed(
    client: &mut Client,
    scale: Scale,
    system_user_id: &str,
    show_progress: bool,
) -> anyhow::Result<SeedReport> {
    let started = Instant::now();
    let existing: i64 = client
        .query_one("SELECT count(*) FROM \"Companion\"", &[])
        .await?
        .get(0);
    anyhow::ensure!(
        existing == 0,
        "the database already has {existing} companions; seed an empty one (gcbb db reset --force)"
    );
    let plan = Plan::draw(scale, system_user_id);
    let bar = Progress::new(rows_to_load(scale, &plan), show_progress);
    let mut rng = StdRng::seed_from_u64(SEED);
    let mut report = SeedReport::default();

    let tx = client.transaction().await?;
    let mut copy = Copy::new(&tx, "\"Category\" (\"id\", \"name\")", &bar);
    for (i, name) in CATEGORIES.iter().enumerate() {
        copy.row(&[&format!("cat_{i:02}"), name]).await?;
    }
    copy.finish().await?;

    let mut copy = Copy::new(
        &tx,
        "\"Companion\" (\"id\", \"userId\", \"userName\", \"src\", \"name\", \"instructions\", \
         \"private\", \"createdAt\", \"updatedAt\", \"categoryId\", \"isFree\", \"tokensBurned\", \
         \"customIntroduction\", \"personalityConfig\", \"knowledgeConfig\", \"interactionConfig\", \
         \"toolConfig\")",
        &bar,
    );
    let mut owners = Vec::with_capacity(scale.companions);
    for i in 0..scale.companions {
        let system = rng.random_bool(0.1);
        let owner = if system {
            system_user_id.to_owned()
        } else {
            user_id(rng.random_range(0..scale.users))
        };
        let private = !system && rng.random_bool(0.2);
        let name = companion_name(&mut rng);
        let created = timestamp(i as f64 / scale.companions as f64);
        copy.row(&[
            &companion_id(i),
            &owner,
            &if system {
                "GCBB".to_owned()
            } else {
                owner.clone()
            },
            &format!("https://img.example.invalid/avatars/{i}.webp"),
            &name,
            &sentences(&mut rng, 2_000),
            bool_text(private),
            &created,
            &created,
            &format!("cat_{:02}", rng.random_range(0..CATEGORIES.len())),
            bool_text(rng.random_bool(0.7)),
            &rng.random_range(0..500_000).to_string(),
            &sentences(&mut rng, 200),
            &json_config(&mut rng, "personality"),
            &json_config(&mut rng, "knowledge"),
            &json_config(&mut rng, "interaction"),
            &json_config(&mut rng, "tools"),
        ])
        .await?;
        owners.push(owner);
    }
    copy.finish().await?;
    report.companions = scale.companions;

    let mut copy = Copy::new(
        &tx,
        "\"Message\" (\"id\", \"role\", \"content\", \"createdAt\", \"updatedAt\", \
         \"companionId\", \"userId\")",
        &bar,
    );
    for i in 0..scale.messages {
        // Popular companions get most messages (a power law), as on the real site.
        let companion = skewed_index(&mut rng, scale.companions);
        let role = if i % 2 == 0 { "user" } else { "assistant" };
        let len = if role == "user" { 80 } else { 260 };
        let created = timestamp(i as f64 / scale.messages as f64);
        copy.row(&[
            &format!("msg_{i:08}"),
            role,
            &sentences(&mut rng, len),
            &created,
            &created,
            &companion_id(companion),
            &user_id(rng.random_range(0..scale.users)),
        ])
        .await?;
    }
    copy.finish().await?;
    report.messages = scale.messages;

    let mut chats = Copy::new(
        &tx,
        "\"GroupChat\" (\"id\", \"name\", \"createdAt\", \"updatedAt\", \"creatorId\")",
        &bar,
    );
    for (g, chat) in plan.chats.iter().enumerate() {
        chats
            .row(&[
                &format!("grp_{g:05}"),
                &chat.name,
                &chat.created,
                &chat.created,
                &chat.creator,
            ])
            .await?;
    }
    chats.finish().await?;
    report.group_chats = plan.chats.len();

    let mut members = Copy::new(
        &tx,
        "\"GroupChatMember\" (\"id\", \"groupChatId\", \"companionId\", \"joinedAt\")",
        &bar,
    );
    for (g, chat) in plan.chats.iter().enumerate() {
        for c in &chat.members {
            members
                .row(&[
                    &format!("gcm_{g:05}_{c}"),
                    &format!("grp_{g:05}"),
                    &companion_id(*c),
                    &chat.created,
                ])
                .await?;
        }
    }
    members.finish().await?;

    let mut group_messages = Copy::new(
        &tx,
        "\"GroupMessage\" (\"id\", \"content\", \"createdAt\", \"updatedAt\", \"groupChatId\", \
         \"isBot\", \"senderId\")",
        &bar,
    );
    for (g, chat) in plan.chats.iter().enumerate() {
        for k in 0..GROUP_MESSAGES_PER_CHAT {
            let bot = k % 2 == 1;
            let sender = if bot {
                companion_id(chat.members[k % chat.members.len()])
            } else {
                user_id(g % scale.users.max(1))
            };
            let created = timestamp(
                0.5 + (g as f64 * 5.0 + k as f64) / (scale.group_chats.max(1) * 10) as f64,
            );
            group_messages
                .row(&[
                    &format!("gm_{g:05}_{k}"),
                    &sentences(&mut rng, if bot { 200 } else { 60 }),
                    &created,
                    &created,
                    &format!("grp_{g:05}"),
                    bool_text(bot),
                    &sender,
                ])
                .await?;
            report.group_messages += 1;
        }
    }
    group_messages.finish().await?;

    let mut burned = Copy::new(
        &tx,
        "\"UserBurnedTokens\" (\"id\", \"userId\", \"companionId\", \"tokensBurned\", \
         \"createdAt\", \"updatedAt\")",
        &bar,
    );
    let created = timestamp(0.9);
    for (u, c, tokens) in &plan.burned {
        burned
            .row(&[
                &format!("ubt_{u:05}_{c}"),
                &user_id(*u),
                &companion_id(*c),
                &tokens.to_string(),
                &created,
                &created,
            ])
            .await?;
        report.burned_rows += 1;
    }
    burned.finish().await?;
    tx.commit().await?;
    bar.finish();

    bar.step("refreshing the read model");
    client
        .query(
            "SELECT * FROM gcbb_refresh_dashboard($1)",
            &[&system_user_id],
        )
        .await?;
    let vacuum = Instant::now();
    bar.step("VACUUM ANALYZE (visibility map and statistics, as a database in service has)");
    client.batch_execute("VACUUM ANALYZE").await?;
    report.vacuum_seconds = vacuum.elapsed().as_secs_f64();
    report.seconds = started.elapsed().as_secs_f64();
    Ok(report)
}

/// How `seed` shows its progress: a bar on a terminal; on anything else (a log file, CI) plain
/// lines, one when a table starts and one per tenth of the rows, with no control codes.
struct Progress {
    bar: ProgressBar,
    plain: Option<PlainProgress>,
}

struct PlainProgress {
    total: u64,
    done: std::sync::atomic::AtomicU64,
    next_tenth: std::sync::atomic::AtomicU64,
}

impl Progress {
    fn new(total: u64, show: bool) -> Progress {
        use std::io::IsTerminal;
        if !show {
            return Progress {
                bar: ProgressBar::hidden(),
                plain: None,
            };
        }
        if !std::io::stderr().is_terminal() {
            return Progress {
                bar: ProgressBar::hidden(),
                plain: Some(PlainProgress {
                    total,
                    done: 0.into(),
                    next_tenth: 1.into(),
                }),
            };
        }
        let bar = ProgressBar::new(total);
        bar.set_style(
            ProgressStyle::with_template("{spinner} {msg:<16} [{bar:40}] {pos}/{len} rows ({eta})")
                .unwrap_or_else(|_| ProgressStyle::default_bar())
                .progress_chars("=> "),
        );
        Progress { bar, plain: None }
    }

    /// A table starts loading.
    fn table(&self, name: &str) {
        self.bar.set_message(name.to_owned());
        if let Some(p) = &self.plain {
            eprintln!(
                "seed: loading {name} ({} of {} rows so far)",
                p.done.load(std::sync::atomic::Ordering::Relaxed),
                p.total
            );
        }
    }

    fn inc(&self, rows: u64) {
        use std::sync::atomic::Ordering;
        self.bar.inc(rows);
        let Some(p) = &self.plain else { return };
        let done = p.done.fetch_add(rows, Ordering::Relaxed) + rows;
        let tenth = p.next_tenth.load(Ordering::Relaxed);
        if tenth <= 10 && done * 10 >= p.total * tenth {
            let reached = (done * 10 / p.total.max(1)).min(10);
            p.next_tenth.store(reached + 1, Ordering::Relaxed);
            eprintln!(
                "seed: {done} of {} rows ({} %)",
                p.total,
                done * 100 / p.total.max(1)
            );
        }
    }

    fn finish(&self) {
        self.bar.finish_and_clear();
    }

    /// A step after the rows are loaded.
    fn step(&self, what: &str) {
        if !self.bar.is_hidden() || self.plain.is_some() {
            eprintln!("seed: {what}");
        }
    }
}

/// One `COPY … FROM STDIN` in text format, sent in batches.
struct Copy<'a> {
    tx: &'a tokio_postgres::Transaction<'a>,
    target: &'static str,
    buf: String,
    /// Rows added to `buf` since the last batch was sent.
    pending: usize,
    sink: Option<std::pin::Pin<Box<tokio_postgres::CopyInSink<Bytes>>>>,
    bar: &'a Progress,
}

impl<'a> Copy<'a> {
    fn new(
        tx: &'a tokio_postgres::Transaction<'a>,
        target: &'static str,
        bar: &'a Progress,
    ) -> Self {
        let table = target.split(' ').next().unwrap_or(target);
        bar.table(table.trim_matches('"'));
        Copy {
            tx,
            target,
            buf: String::new(),
            pending: 0,
            sink: None,
            bar,
        }
    }

    async fn row(&mut self, fields: &[&str]) -> Result<(), tokio_postgres::Error> {
        for (i, f) in fields.iter().enumerate() {
            if i > 0 {
                self.buf.push('\t');
            }
            escape_copy_text(&mut self.buf, f);
        }
        self.buf.push('\n');
        self.pending += 1;
        if self.pending == COPY_BATCH_ROWS {
            self.flush().await?;
        }
        Ok(())
    }

    async fn flush(&mut self) -> Result<(), tokio_postgres::Error> {
        if self.sink.is_none() {
            let sql = format!("COPY {} FROM STDIN", self.target);
            self.sink = Some(Box::pin(self.tx.copy_in(&sql).await?));
        }
        let data = std::mem::take(&mut self.buf);
        if let Some(sink) = self.sink.as_mut() {
            sink.send(Bytes::from(data)).await?;
        }
        self.bar.inc(std::mem::take(&mut self.pending) as u64);
        Ok(())
    }

    async fn finish(mut self) -> Result<u64, tokio_postgres::Error> {
        if !self.buf.is_empty() || self.sink.is_none() {
            self.flush().await?;
        }
        match self.sink.take() {
            Some(mut sink) => sink.as_mut().finish().await,
            None => Ok(0),
        }
    }
}

/// COPY text format: backslash, tab and newline are escaped.
fn escape_copy_text(out: &mut String, field: &str) {
    for ch in field.chars() {
        match ch {
            '\\' => out.push_str("\\\\"),
            '\t' => out.push_str("\\t"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            c => out.push(c),
        }
    }
}

fn bool_text(b: bool) -> &'static str {
    if b {
        "t"
    } else {
        "f"
    }
}

/// A timestamp between two years ago (0.0) and now-ish (1.0), deterministic.
fn timestamp(fraction: f64) -> String {
    let start = chrono::NaiveDate::from_ymd_opt(2024, 1, 1)
        .and_then(|d| d.and_hms_opt(0, 0, 0))
        .unwrap_or_default();
    let secs = (fraction.clamp(0.0, 1.0) * 2.0 * 365.0 * 86_400.0) as i64;
    (start + chrono::Duration::seconds(secs))
        .format("%Y-%m-%d %H:%M:%S%.3f")
        .to_string()
}

/// An index in `0..n` where low indexes are much more likely (popular companions).
fn skewed_index(rng: &mut StdRng, n: usize) -> usize {
    let u: f64 = rng.random();
    ((u.powf(3.0)) * n as f64) as usize % n.max(1)
}

fn companion_name(rng: &mut StdRng) -> String {
    const FIRST: &[&str] = &[
        "Ada", "Leo", "Mira", "Orion", "Zara", "Kai", "Nova", "Iris", "Felix", "Luna", "Atlas",
        "Sage", "Juno", "Ezra", "Vera", "Milo", "Cleo", "Hugo", "Lyra", "Theo", "Émile", "Søren",
        "Ngozi", "Aiko", "José",
    ];
    const LAST: &[&str] = &[
        "the Wise",
        "Stormborn",
        "of Avalon",
        "Nightingale",
        "the Bard",
        "Starlight",
        "Ironheart",
        "the Curious",
        "Moonwhisper",
        "the Scholar",
        "Quickfoot",
        "of the North",
    ];
    format!(
        "{} {}",
        FIRST[rng.random_range(0..FIRST.len())],
        LAST[rng.random_range(0..LAST.len())]
    )
}

/// Words until at least `len` bytes.
fn sentences(rng: &mut StdRng, len: usize) -> String {
    let mut s = String::with_capacity(len + 16);
    let mut start = true;
    while s.len() < len {
        let w = WORDS[rng.random_range(0..WORDS.len())];
        if start {
            let mut c = w.chars();
            if let Some(f) = c.next() {
                s.extend(f.to_uppercase());
                s.push_str(c.as_str());
            }
            start = false;
        } else {
            s.push_str(w);
        }
        if rng.random_range(0..12) == 0 {
            s.push_str(". ");
            start = true;
        } else {
            s.push(' ');
        }
    }
    s.truncate(s.trim_end().len());
    s.push('.');
    s
}

/// A JSON config object of about 1 KB.
fn json_config(rng: &mut StdRng, kind: &str) -> String {
    let mut s = String::with_capacity(1100);
    let _ = write!(s, "{{\"kind\":\"{kind}\",\"version\":2,\"traits\":[");
    for i in 0..6 {
        if i > 0 {
            s.push(',');
        }
        let _ = write!(
            s,
            "{{\"name\":\"{}\",\"weight\":{:.2},\"notes\":\"{}\"}}",
            WORDS[rng.random_range(0..WORDS.len())],
            rng.random::<f64>(),
            sentences(rng, 110)
        );
    }
    s.push_str("]}");
    s
}

#[cfg(test)]
mod tests;
