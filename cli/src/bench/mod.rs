//! `gcbb bench`: a realistic data set, and the figures of the optimized paths against the
//! seed's "before", measured in one run on the same data. Build with `--release` to measure.

pub mod anchor;
pub mod cached;
pub mod chat;
pub mod coldstart;
pub mod dashboard;
pub mod faults;
pub mod http;
pub mod seed;
pub mod stats;

use std::process::ExitCode;

use gcbb::config::DEFAULT_DEV_DATABASE_URL;
use gcbb::db::DbConfig;

#[derive(Debug, clap::Args)]
pub struct BenchArgs {
    #[command(subcommand)]
    pub command: BenchCommand,
    /// Print machine-readable JSON instead of a table.
    #[arg(long, global = true)]
    pub json: bool,
}

#[derive(Debug, clap::Subcommand)]
pub enum BenchCommand {
    /// Load a deterministic, realistic data set into an empty database (COPY).
    Seed(SeedArgs),
    /// The seed's "before" against the optimized dashboard paths, on the same data.
    Dashboard(dashboard::DashboardArgs),
    /// Drive a running server with N keep-alive connections for T seconds.
    Http(http::HttpArgs),
    /// The minimal server `bench http --anchor` compares with: a page's bytes, served as is.
    Anchor(anchor::AnchorArgs),
    /// Chat: time to first byte added to the model's, and N concurrent streams held open.
    Chat(chat::ChatArgs),
    /// The fast path under real Postgres faults: cached page latencies, transactions per
    /// request, the breaker, a plain-SQL hide leaving every cache layer.
    Faults(faults::FaultsArgs),
    /// The cached anonymous page through the whole router in this process (for profilers).
    Cached(cached::CachedArgs),
    /// Each function binary started as Vercel starts it: start → first response, size, RSS.
    Coldstart(coldstart::ColdstartArgs),
}

#[derive(Debug, clap::Args)]
pub struct SeedArgs {
    /// Named size: bench (20 000 companions, 2 000 000 messages, 2 000 group chats), small, tiny.
    #[arg(long, default_value = "small")]
    pub scale: String,
    #[arg(long)]
    pub companions: Option<usize>,
    #[arg(long)]
    pub messages: Option<usize>,
    #[arg(long)]
    pub group_chats: Option<usize>,
    #[arg(long)]
    pub users: Option<usize>,
}

pub async fn run(args: BenchArgs) -> ExitCode {
    let outcome = match args.command {
        BenchCommand::Seed(seed_args) => run_seed(seed_args, args.json).await,
        BenchCommand::Dashboard(d) => dashboard::run(&d, args.json).await,
        BenchCommand::Http(h) => http::run(&h, args.json).await,
        BenchCommand::Anchor(a) => anchor::run(&a).await,
        BenchCommand::Chat(c) => chat::run(&c, args.json).await,
        BenchCommand::Cached(c) => cached::run(&c, args.json).await,
        BenchCommand::Faults(f) => faults::run(&f, args.json).await,
        BenchCommand::Coldstart(c) => coldstart::run(&c, args.json).await,
    };
    match outcome {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("gcbb bench: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// The database benchmarks use: the direct URL when given, else `DATABASE_URL`, else the dev one.
pub fn bench_database() -> anyhow::Result<DbConfig> {
    Ok(DbConfig::parse(&bench_database_url())?)
}

/// [`bench_database`]'s URL, as given.
pub fn bench_database_url() -> String {
    ["DATABASE_URL_UNPOOLED", "DIRECT_URL", "DATABASE_URL"]
        .iter()
        .find_map(|v| std::env::var(v).ok().filter(|s| !s.is_empty()))
        .unwrap_or_else(|| DEFAULT_DEV_DATABASE_URL.to_owned())
}

async fn run_seed(args: SeedArgs, json: bool) -> anyhow::Result<()> {
    let base = seed::Scale::named(&args.scale)
        .ok_or_else(|| anyhow::anyhow!("unknown --scale `{}` (bench, small, tiny)", args.scale))?;
    let scale = seed::Scale {
        companions: args.companions.unwrap_or(base.companions).max(1),
        messages: args.messages.unwrap_or(base.messages),
        group_chats: args.group_chats.unwrap_or(base.group_chats),
        users: args.users.unwrap_or(base.users).max(1),
    };
    let db = bench_database()?;
    let system_user_id = std::env::var("SYSTEM_USER_ID")
        .ok()
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| gcbb::config::DEFAULT_SYSTEM_USER_ID.to_owned());
    gcbb_migrate::deploy(
        &db,
        std::path::Path::new(gcbb_migrate::config::DEFAULT_MIGRATIONS_DIR),
    )
    .await?;
    let mut client = gcbb::db::connect(&db).await?;
    let report = seed::seed(&mut client, scale, &system_user_id, !json).await?;
    if json {
        println!(
            "{}",
            serde_json::json!({
                "database": db.redacted(),
                "companions": report.companions,
                "messages": report.messages,
                "groupChats": report.group_chats,
                "groupMessages": report.group_messages,
                "userBurnedTokens": report.burned_rows,
                "seconds": report.seconds,
            })
        );
    } else {
        println!(
            "seeded {}: {} companions, {} messages, {} group chats ({} group messages), {} token rows in {:.1} s",
            db.redacted(),
            report.companions,
            report.messages,
            report.group_chats,
            report.group_messages,
            report.burned_rows,
            report.seconds
        );
    }
    Ok(())
}
