//! The `gcbb` tool as a process: the command with the calling shell's database variables
//! removed, and `gcbb dev`, the local server for every route, started on a free port.

use std::path::Path;
use std::process::Command;

use crate::db::TestDb;
use crate::process::{binary, free_port, package_binary, Server};
use crate::project_root;

/// Variables that must not leak from the developer's shell into a `gcbb` child.
const SCRUBBED_VARS: [&str; 3] = ["DIRECT_URL", "GCBB_MIGRATIONS_DIR", "SHADOW_DATABASE_URL"];

/// The `gcbb` binary of this test run.
pub fn gcbb_binary() -> String {
    package_binary("gcbb")
}

/// The `gcbb` binary run from the project root (where `migrations/` and `vercel.json` are),
/// with the database variables of the calling shell removed.
pub fn gcbb() -> Command {
    let mut cmd = Command::new(gcbb_binary());
    cmd.current_dir(project_root());
    for (key, _) in std::env::vars_os() {
        if key.to_string_lossy().starts_with("DATABASE_") {
            cmd.env_remove(&key);
        }
    }
    for key in SCRUBBED_VARS {
        cmd.env_remove(key);
    }
    cmd.env("RUST_LOG", "warn");
    cmd
}

/// `gcbb db --migrations-dir <dir>` on `db` (as `DATABASE_URL`); the caller adds the command.
pub fn gcbb_db(db: &TestDb, dir: &Path) -> Command {
    let mut cmd = gcbb();
    cmd.env("DATABASE_URL", &db.url)
        .arg("db")
        .arg("--migrations-dir")
        .arg(dir);
    cmd
}

/// `gcbb dev` on `db` (created, migrated and seeded by it unless it exists), answering with
/// the offline scripted model, with `env` added.
pub async fn start_dev(db: &TestDb, env: &[(&str, String)]) -> Server {
    start_dev_with(db, &[], env).await
}

/// [`start_dev`] with `gcbb dev`'s own arguments (`--no-seed`, `--trusted-proxy …`) too.
pub async fn start_dev_with(db: &TestDb, args: &[&str], env: &[(&str, String)]) -> Server {
    let port = free_port();
    let mut cmd = binary(&gcbb_binary());
    cmd.current_dir(project_root())
        .args(["dev", "--port", &port.to_string()])
        .args(args)
        .env("DATABASE_URL", &db.url)
        // Never a real model, whatever the shell running the tests has set.
        .env("LLM_PROVIDER", "scripted");
    for (k, v) in env {
        cmd.env(k, v);
    }
    Server::start(cmd, port).await
}
