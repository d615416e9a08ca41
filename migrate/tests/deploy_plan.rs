//! The deploy plan on a real Postgres (`TEST_DATABASE_URL`, else the local server): the steps in
//! their order, the backup taken before anything is applied, a lint error stopping the plan
//! before the backup, and a reset plan. The `gcbb db` command line over it is tested by the
//! tool's integration tests (`tests/integration/migrations.rs`, `rehearse.rs`).

use std::path::{Path, PathBuf};

use gcbb_migrate::deploy::{self, Apply, Backup, DeployPlan, Step};
use gcbb_migrate::{DbConfig, MigrateError};

const DEFAULT_TEST_DATABASE_URL: &str =
    "postgres://postgres@127.0.0.1:5432/postgres?sslmode=disable";

const KEEP: (&str, &str) = (
    "20250101000000_keep",
    r#"CREATE TABLE "Keep" ("id" TEXT NOT NULL, CONSTRAINT "Keep_pkey" PRIMARY KEY ("id"));"#,
);
const LATER: (&str, &str) = (
    "20250102000000_later",
    r#"CREATE TABLE "Later" ("id" TEXT NOT NULL, CONSTRAINT "Later_pkey" PRIMARY KEY ("id"));"#,
);
const DROP_KEEP: (&str, &str) = ("20250103000000_drop_keep", r#"DROP TABLE "Keep";"#);

/// A database and a scratch folder of one test, both removed when it ends.
struct Scratch {
    server: DbConfig,
    db: DbConfig,
    dir: PathBuf,
}

impl Scratch {
    async fn new() -> Scratch {
        let url = std::env::var("TEST_DATABASE_URL")
            .ok()
            .filter(|v| !v.trim().is_empty())
            .unwrap_or_else(|| DEFAULT_TEST_DATABASE_URL.to_owned());
        let server = DbConfig::parse(&url).expect("TEST_DATABASE_URL is a postgres URL");
        let name = format!("gcbb_migrate_plan_{}", uuid::Uuid::new_v4().simple());
        gcbb::db::connect(&server)
            .await
            .expect("connect to the test server")
            .batch_execute(&format!("CREATE DATABASE \"{name}\""))
            .await
            .expect("create the test database");
        let dir = std::env::temp_dir().join(&name);
        std::fs::create_dir_all(dir.join("migrations")).expect("create the scratch folder");
        Scratch {
            db: server.with_dbname(&name),
            server,
            dir,
        }
    }

    fn migrations(&self) -> PathBuf {
        self.dir.join("migrations")
    }

    fn add(&self, (name, sql): (&str, &str)) {
        let folder = self.migrations().join(name);
        std::fs::create_dir_all(&folder).expect("create the migration folder");
        std::fs::write(folder.join("migration.sql"), sql).expect("write the migration");
    }

    async fn tables(&self) -> Vec<String> {
        gcbb::db::connect(&self.db)
            .await
            .expect("connect")
            .query(
                "SELECT tablename::text FROM pg_tables WHERE schemaname = 'public' \
                 ORDER BY tablename",
                &[],
            )
            .await
            .expect("list tables")
            .iter()
            .map(|r| r.get(0))
            .collect()
    }

    async fn recorded(&self) -> Vec<String> {
        gcbb::db::connect(&self.db)
            .await
            .expect("connect")
            .query(
                "SELECT migration_name FROM _prisma_migrations \
                 WHERE finished_at IS NOT NULL AND rolled_back_at IS NULL ORDER BY migration_name",
                &[],
            )
            .await
            .expect("read the history")
            .iter()
            .map(|r| r.get(0))
            .collect()
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
        let (server, name) = (self.server.clone(), self.db.dbname().to_owned());
        // Drop runs outside any runtime that could be awaited here: a thread of its own.
        let _ = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("a runtime");
            rt.block_on(async {
                if let Ok(client) = gcbb::db::connect(&server).await {
                    let _ = client
                        .batch_execute(&format!("DROP DATABASE IF EXISTS \"{name}\" WITH (FORCE)"))
                        .await;
                }
            });
        })
        .join();
    }
}

/// The steps a plan reported, as short names (the lint's with its finding count).
fn step_name(step: &Step<'_>) -> String {
    match step {
        Step::Found { migrations } => format!("found {migrations}"),
        Step::Linted { findings } => format!("linted {}", findings.len()),
        Step::Rehearsed { .. } => "rehearsed".to_owned(),
        Step::BackedUp { .. } => "backed up".to_owned(),
    }
}

/// The table names an archive holds, from `pg_restore --list`.
fn archived_tables(archive: &Path) -> Vec<String> {
    let out = std::process::Command::new("pg_restore")
        .arg("--list")
        .arg(archive)
        .output()
        .expect("run pg_restore --list");
    assert!(out.status.success(), "{out:?}");
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter(|l| l.contains(" TABLE public "))
        .filter_map(|l| l.split(" TABLE public ").nth(1))
        .filter_map(|rest| rest.split_whitespace().next())
        .map(|t| t.trim_matches('"').to_owned())
        .collect()
}

#[tokio::test]
async fn a_plan_reports_its_steps_in_order_and_backs_up_before_it_applies() {
    let scratch = Scratch::new().await;
    scratch.add(KEEP);
    gcbb_migrate::deploy(&scratch.db, &scratch.migrations())
        .await
        .expect("the first deploy");
    scratch.add(LATER);
    let archive = scratch.dir.join("before-later.dump");
    let plan = DeployPlan {
        backup: Some(Backup {
            out: Some(archive.clone()),
        }),
        ..DeployPlan::new(scratch.db.clone(), scratch.migrations())
    };

    let mut steps = Vec::new();
    let outcome = deploy::run(&plan, |step| steps.push(step_name(&step)))
        .await
        .expect("the plan runs");

    assert_eq!(steps, ["found 2", "linted 0", "backed up"]);
    assert_eq!(outcome.applied, [LATER.0]);
    assert_eq!(
        scratch.tables().await,
        ["Keep", "Later", "_prisma_migrations"]
    );
    // The archive holds the database as it was before the apply step.
    let mut archived = archived_tables(&archive);
    archived.sort();
    assert_eq!(archived, ["Keep", "_prisma_migrations"]);
}

#[tokio::test]
async fn a_lint_error_stops_the_plan_before_the_backup_and_changes_nothing() {
    let scratch = Scratch::new().await;
    scratch.add(KEEP);
    gcbb_migrate::deploy(&scratch.db, &scratch.migrations())
        .await
        .expect("the first deploy");
    scratch.add(LATER);
    scratch.add(DROP_KEEP);
    let archive = scratch.dir.join("never.dump");
    let plan = DeployPlan {
        backup: Some(Backup {
            out: Some(archive.clone()),
        }),
        ..DeployPlan::new(scratch.db.clone(), scratch.migrations())
    };

    let mut steps = Vec::new();
    let mut errors = Vec::new();
    let result = deploy::run(&plan, |step| {
        if let Step::Linted { findings } = &step {
            errors.extend(
                findings
                    .iter()
                    .filter(|f| f.is_error())
                    .map(|f| f.rule.to_owned()),
            );
        }
        steps.push(step_name(&step));
    })
    .await;

    match result {
        Err(MigrateError::Lint { count, findings }) => {
            assert_eq!(count, 1);
            assert!(findings.contains(DROP_KEEP.0), "{findings}");
        }
        other => panic!("expected the lint to refuse, got {other:?}"),
    }
    assert_eq!(steps, ["found 3", "linted 1"]);
    assert_eq!(errors, ["drop-table"]);
    assert!(!archive.exists(), "no backup after a refusal");
    // Not even the harmless file before the refused one was applied.
    assert_eq!(scratch.tables().await, ["Keep", "_prisma_migrations"]);
    assert_eq!(scratch.recorded().await, [KEEP.0]);
}

#[tokio::test]
async fn a_reset_plan_drops_what_history_does_not_hold_and_applies_everything() {
    let scratch = Scratch::new().await;
    scratch.add(KEEP);
    scratch.add(LATER);
    gcbb::db::connect(&scratch.db)
        .await
        .expect("connect")
        .batch_execute(r#"CREATE TABLE "Stray" ("id" TEXT)"#)
        .await
        .expect("a table made by hand");
    let plan = DeployPlan {
        apply: Apply::ResetAll,
        ..DeployPlan::new(scratch.db.clone(), scratch.migrations())
    };

    let mut steps = Vec::new();
    let outcome = deploy::run(&plan, |step| steps.push(step_name(&step)))
        .await
        .expect("the reset runs");

    assert_eq!(steps, ["found 2", "linted 0"]);
    assert_eq!(outcome.applied, [KEEP.0, LATER.0]);
    assert_eq!(
        scratch.tables().await,
        ["Keep", "Later", "_prisma_migrations"]
    );
    assert_eq!(scratch.recorded().await, [KEEP.0, LATER.0]);
}
