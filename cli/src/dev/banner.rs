//! What `gcbb dev` prints once it listens: the settings it chose, the database it prepared,
//! and every route it serves.

use std::sync::Arc;

use gcbb::config::ClerkKey;
use gcbb::db::DbConfig;
use gcbb::platform::app::App;
use gcbb::routes::{VercelJson, FUNCTIONS};

use super::host::AllowedHosts;
use super::session::{DevSigner, SESSION_PATH};
use super::DevArgs;

/// What start-up did to the database, for the banner.
pub(super) struct Prepared<'a> {
    /// The database migrated (the direct URL when one is given).
    pub database: &'a DbConfig,
    /// Migrations applied now.
    pub applied: usize,
    pub seeded: bool,
}

pub(super) fn print_banner(
    app: &Arc<App>,
    vercel: &VercelJson,
    args: &DevArgs,
    addr: std::net::SocketAddr,
    prepared: &Prepared,
    signer: Option<&DevSigner>,
    allowed_hosts: &AllowedHosts,
) {
    let c = &app.config;
    let auth = match (&c.clerk.key, signer) {
        (_, Some(_)) => {
            "dev sign-in: no Clerk key, so gcbb dev signs tokens for the demo users itself"
        }
        (Some(ClerkKey::Pem(_)), None) => "Clerk (CLERK_JWT_KEY)",
        (Some(ClerkKey::JwksUrl(_)), None) => "Clerk (CLERK_JWKS_URL)",
        (None, None) => "none: every request is anonymous",
    };
    println!("gcbb dev");
    println!("  database    {}", prepared.database.redacted());
    println!("  migrations  {} applied now", prepared.applied);
    println!(
        "  demo data   {}",
        if prepared.seeded {
            "inserted"
        } else {
            "unchanged"
        }
    );
    println!("  cache       {}", c.cache.name());
    println!(
        "  cache keys  {}:… (CACHE_KEY_PREFIX, else scoped to the database)",
        c.cache_key_prefix
    );
    println!(
        "  cdn purge   {}",
        match &c.cdn {
            Some(cdn) => format!("on (project {})", cdn.project),
            None => "off: VERCEL_TOKEN unset".to_owned(),
        }
    );
    println!("  auth        {auth}");
    println!("  client      {}", c.trusted_proxy.describe());
    println!("  hosts       {}", allowed_hosts.describe());
    println!(
        "  cron        {}",
        if c.cron_secret.is_some() {
            "CRON_SECRET set"
        } else {
            "CRON_SECRET unset: /api/cron/refresh refuses every call"
        }
    );
    println!("  static      {}/", args.public_dir.display());
    println!("routes");
    for r in &vercel.rewrites {
        println!(
            "  {:<36} → api{}.rs",
            r.source,
            r.destination.trim_start_matches("/api")
        );
    }
    for f in FUNCTIONS {
        println!("  /api/{:<31} → api/{}.rs", f.name, f.name);
    }
    if signer.is_some() {
        println!(
            "  {SESSION_PATH:<36} → gcbb dev only: GET the demo users, POST {{\"userId\"}} for a token"
        );
        if !addr.ip().is_loopback() {
            println!("  note: {addr} is reachable from other machines, and so is dev sign-in");
        }
    }
    println!("listening on http://{addr}");
}
