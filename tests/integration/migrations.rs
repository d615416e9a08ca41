//! `gcbb db` against the real Postgres, through the real binary: printed lines, exit codes, and
//! what ends up in `_prisma_migrations` and the schema.

use std::path::Path;
use std::process::Output;
use std::time::Duration;

/// The project's migration names, in order.
use crate::common::project_migration_names as local_names;
use crate::common::{
    self, assert_contains_all, code, empty_db, fresh_db, gcbb, gcbb_db, stderr, stdout, unique,
    TestDb,
};

/// A copy of the project's migrations plus extra files, removed on drop.
type TempMigrations = crate::common::MigrationsDir;

fn db_cmd(db: &TestDb, dir: &Path, args: &[&str]) -> std::process::Command {
    let mut cmd = gcbb_db(db, dir);
    cmd.args(args);
    cmd
}

fn run(db: &TestDb, dir: &Path, args: &[&str]) -> Output {
    db_cmd(db, dir, args).output().expect("run gcbb")
}

fn text(o: &Output) -> (String, String) {
    (stdout(o), stderr(o))
}

#[derive(Debug)]
struct Row {
    name: String,
    checksum: String,
    finished: bool,
    rolled_back: bool,
    logs: Option<String>,
    steps: i32,
    id: String,
}

async fn rows(db: &TestDb) -> Vec<Row> {
    db.client()
        .await
        .query(
            "SELECT migration_name, checksum, finished_at IS NOT NULL, rolled_back_at IS NOT NULL, logs, \
             applied_steps_count, id FROM _prisma_migrations ORDER BY started_at, migration_name",
            &[],
        )
        .await
        .expect("read _prisma_migrations")
        .iter()
        .map(|r| Row {
            name: r.get(0),
            checksum: r.get(1),
            finished: r.get(2),
            rolled_back: r.get(3),
            logs: r.get(4),
            steps: r.get(5),
            id: r.get(6),
        })
        .collect()
}

async fn table_exists(db: &TestDb, name: &str) -> bool {
    let sql = "SELECT to_regclass($1) IS NOT NULL";
    db.one(sql, &[&format!("public.\"{name}\"")]).await
}

fn sha256_file(path: &Path) -> String {
    gcbb_migrate::files::checksum(&std::fs::read(path).expect("read file"))
}

#[tokio::test]
async fn deploy_into_an_empty_database_applies_everything_and_status_is_up_to_date() {
    let db = empty_db().await;
    let dir = common::migrations_dir();
    let names = local_names();

    let out = run(&db, &dir, &["deploy"]);
    let (stdout, stderr) = text(&out);
    assert_eq!(code(&out), 0, "{stdout}{stderr}");
    let mut expected = format!(
        "\n{} migrations found in {}\n\nThe following migration(s) have been applied:\n\nmigrations/\n",
        names.len(),
        dir.display()
    );
    for n in &names {
        expected.push_str(&format!("  └─ {n}/\n    └─ migration.sql\n"));
    }
    expected.push_str("      \nAll migrations have been successfully applied.\n");
    assert_eq!(stdout, expected);

    let stored = rows(&db).await;
    assert_eq!(
        stored.iter().map(|r| r.name.clone()).collect::<Vec<_>>(),
        names
    );
    for (r, n) in stored.iter().zip(&names) {
        assert!(
            r.finished && !r.rolled_back && r.logs.is_none() && r.steps == 1,
            "{r:?}"
        );
        assert_eq!(r.checksum, sha256_file(&dir.join(n).join("migration.sql")));
        let id = uuid::Uuid::parse_str(&r.id).expect("id is a UUID");
        assert_eq!(id.get_version_num(), 4);
    }
    assert!(table_exists(&db, "Companion").await && table_exists(&db, "UserBurnedTokens").await);

    let out = run(&db, &dir, &["status"]);
    let (stdout, _) = text(&out);
    assert_eq!(code(&out), 0);
    assert_eq!(
        stdout,
        format!(
            "\n{} migrations found in {}\n\nDatabase schema is up to date!\n",
            names.len(),
            dir.display()
        )
    );

    let out = run(&db, &dir, &["deploy"]);
    assert_eq!(code(&out), 0);
    assert!(text(&out)
        .0
        .ends_with("\nNo pending migrations to apply.\n"));
    assert_eq!(rows(&db).await.len(), names.len());
}

#[tokio::test]
async fn the_schema_matches_prismas_names_for_tables_indexes_and_constraints() {
    let db = fresh_db().await;
    let client = db.client().await;
    let indexes: Vec<String> = client
        .query(
            "SELECT indexname::text FROM pg_indexes WHERE schemaname = 'public'",
            &[],
        )
        .await
        .expect("indexes")
        .iter()
        .map(|r| r.get(0))
        .collect();
    for name in [
        "Companion_pkey",
        "Companion_categoryId_idx",
        "Message_companionId_idx",
        "GroupChatMember_groupChatId_companionId_key",
        "UserBurnedTokens_userId_companionId_key",
        "Message_companionId_userId_createdAt_idx",
        "GroupMessage_groupChatId_senderId_createdAt_idx",
        "Companion_private_userId_createdAt_idx",
        "UserBurnedTokens_userId_updatedAt_idx",
    ] {
        assert!(indexes.iter().any(|i| i == name), "missing index {name}");
    }
    let fk: (String, String) = client
        .query_one(
            "SELECT confdeltype::text, confupdtype::text FROM pg_constraint WHERE conname = 'Message_companionId_fkey'",
            &[],
        )
        .await
        .map(|r| (r.get(0), r.get(1)))
        .expect("fk");
    assert_eq!(fk, ("c".to_owned(), "c".to_owned()));
    let updated_at_default: Option<String> = client
        .query_one(
            "SELECT column_default FROM information_schema.columns WHERE table_name = 'Companion' AND column_name = 'updatedAt'",
            &[],
        )
        .await
        .expect("column")
        .get(0);
    assert_eq!(
        updated_at_default, None,
        "updatedAt has no default: every write sets it"
    );
}

/// name, data_type, character_maximum_length, is_nullable, column_default.
type ColumnShape = (String, String, Option<i32>, String, Option<String>);

#[tokio::test]
async fn the_migrations_table_has_prismas_exact_columns() {
    let db = fresh_db().await;
    let client = db.client().await;
    let cols: Vec<ColumnShape> = client
        .query(
            "SELECT column_name::text, data_type::text, character_maximum_length, is_nullable::text, column_default::text \
             FROM information_schema.columns WHERE table_name = '_prisma_migrations' ORDER BY ordinal_position",
            &[],
        )
        .await
        .expect("columns")
        .iter()
        .map(|r| (r.get(0), r.get(1), r.get(2), r.get(3), r.get(4)))
        .collect();
    let s = |v: &str| v.to_owned();
    let expected = vec![
        (s("id"), s("character varying"), Some(36), s("NO"), None),
        (
            s("checksum"),
            s("character varying"),
            Some(64),
            s("NO"),
            None,
        ),
        (
            s("finished_at"),
            s("timestamp with time zone"),
            None,
            s("YES"),
            None,
        ),
        (
            s("migration_name"),
            s("character varying"),
            Some(255),
            s("NO"),
            None,
        ),
        (s("logs"), s("text"), None, s("YES"), None),
        (
            s("rolled_back_at"),
            s("timestamp with time zone"),
            None,
            s("YES"),
            None,
        ),
        (
            s("started_at"),
            s("timestamp with time zone"),
            None,
            s("NO"),
            Some(s("now()")),
        ),
        (
            s("applied_steps_count"),
            s("integer"),
            None,
            s("NO"),
            Some(s("0")),
        ),
    ];
    assert_eq!(cols, expected);
    let pk: String = client
        .query_one(
            "SELECT conname::text FROM pg_constraint WHERE conrelid = '_prisma_migrations'::regclass AND contype = 'p'",
            &[],
        )
        .await
        .expect("pk")
        .get(0);
    assert_eq!(pk, "_prisma_migrations_pkey");
}

#[tokio::test]
async fn a_pending_migration_makes_status_exit_1_with_prismas_singular_wording() {
    let db = fresh_db().await;
    let dir = TempMigrations::with(&[(
        "29990101000000_pending",
        "CREATE TABLE \"Pending\" (id int);\n",
    )]);
    let out = run(&db, &dir.path, &["status"]);
    let (stdout, _) = text(&out);
    assert_eq!(code(&out), 1);
    assert!(
        stdout.contains(
            "Following migration have not yet been applied:\n29990101000000_pending\n\n\
             To apply migrations in development run prisma migrate dev.\n\
             To apply migrations in production run prisma migrate deploy.\n"
        ),
        "{stdout}"
    );
    assert!(
        !table_exists(&db, "Pending").await,
        "status must not apply anything"
    );
}

#[tokio::test]
async fn a_failing_migration_is_recorded_blocks_deploys_and_recovers_after_resolve_rolled_back() {
    let db = fresh_db().await;
    let broken = "29990101000000_broken";
    let dir = TempMigrations::with(&[(
        broken,
        "CREATE TABLE \"Partial\" (id int);\nSELECT * FROM \"Nope\";\n",
    )]);

    let out = run(&db, &dir.path, &["deploy"]);
    let (_, stderr) = text(&out);
    assert_eq!(code(&out), 1);
    assert_contains_all(
        &stderr,
        &[
        "Error: P3018",
        "A migration failed to apply. New migrations cannot be applied before the error is recovered from.",
        &format!("Migration name: {broken}"),
        "Database error code: 42P01",
        "relation \"Nope\" does not exist",
        ],
    );
    assert!(
        !table_exists(&db, "Partial").await,
        "the file ran in one transaction"
    );
    let failed = rows(&db)
        .await
        .into_iter()
        .find(|r| r.name == broken)
        .expect("a row for the failed migration");
    assert!(
        !failed.finished && !failed.rolled_back && failed.steps == 0,
        "{failed:?}"
    );
    let logs = failed.logs.clone().unwrap_or_default();
    assert!(
        logs.contains("42P01") && logs.contains("\"Nope\"") && logs.contains(broken),
        "{logs}"
    );

    let out = run(&db, &dir.path, &["deploy"]);
    let (_, stderr) = text(&out);
    assert_eq!(code(&out), 1);
    assert!(stderr.contains("Error: P3009"), "{stderr}");
    assert!(stderr.contains("migrate found failed migrations in the target database, new migrations will not be applied."));
    assert!(
        stderr.contains(&format!("The `{broken}` migration started at "))
            && stderr.contains(" UTC failed")
    );

    let out = run(&db, &dir.path, &["status"]);
    assert_eq!(code(&out), 1);
    assert!(text(&out)
        .1
        .contains(&format!("Following migration have failed:\n{broken}\n")));

    let out = run(&db, &dir.path, &["resolve", "--rolled-back", broken]);
    assert_eq!(code(&out), 0, "{:?}", text(&out));
    assert!(text(&out)
        .0
        .contains(&format!("Migration {broken} marked as rolled back.")));
    let r = rows(&db)
        .await
        .into_iter()
        .find(|r| r.name == broken)
        .expect("row");
    assert!(r.rolled_back && !r.finished);

    // Rolling back twice is refused: the row is no longer failed.
    let out = run(&db, &dir.path, &["resolve", "--rolled-back", broken]);
    assert_eq!(code(&out), 1);
    assert!(text(&out).1.contains(&format!(
        "Migration `{broken}` cannot be rolled back because it is not in a failed state."
    )));

    dir.write(broken, "CREATE TABLE \"Partial\" (id int);\n");
    let out = run(&db, &dir.path, &["deploy"]);
    assert_eq!(code(&out), 0, "{:?}", text(&out));
    assert!(text(&out).0.contains(&format!("  └─ {broken}/\n")));
    let attempts: Vec<Row> = rows(&db)
        .await
        .into_iter()
        .filter(|r| r.name == broken)
        .collect();
    assert_eq!(attempts.len(), 2);
    assert!(
        attempts[0].rolled_back
            && attempts[1].finished
            && !attempts[1].rolled_back
            && attempts[1].steps == 1
    );
    assert!(table_exists(&db, "Partial").await);
    assert_eq!(code(&run(&db, &dir.path, &["status"])), 0);
}

#[tokio::test]
async fn resolve_applied_baselines_a_database_whose_schema_was_built_by_hand() {
    let db = empty_db().await;
    let dir = common::migrations_dir();
    let client = db.client().await;
    for n in local_names() {
        let sql = std::fs::read_to_string(dir.join(&n).join("migration.sql")).expect("read");
        client
            .batch_execute(&sql)
            .await
            .expect("build the schema by hand");
    }

    let out = run(&db, &dir, &["deploy"]);
    assert_eq!(
        code(&out),
        1,
        "an unmanaged, non-empty schema needs a baseline first"
    );

    for n in local_names() {
        let out = run(&db, &dir, &["resolve", "--applied", &n]);
        assert_eq!(code(&out), 0, "{:?}", text(&out));
        assert!(text(&out)
            .0
            .contains(&format!("Migration {n} marked as applied.")));
    }
    let stored = rows(&db).await;
    assert_eq!(stored.len(), local_names().len());
    assert!(
        stored
            .iter()
            .all(|r| r.finished && !r.rolled_back && r.steps == 0),
        "{stored:?}"
    );

    assert_eq!(code(&run(&db, &dir, &["status"])), 0);
    let out = run(&db, &dir, &["deploy"]);
    assert_eq!(code(&out), 0);
    assert!(text(&out).0.contains("No pending migrations to apply."));

    let first = &local_names()[0];
    let out = run(&db, &dir, &["resolve", "--applied", first]);
    assert_eq!(code(&out), 1);
    assert!(text(&out).1.contains(&format!(
        "Error: P3008\n\nThe migration `{first}` is already recorded as applied in the database."
    )));

    for hostile in [
        "29990101000000_nope",
        "../../etc/passwd",
        "'; DROP TABLE \"Companion\"; --",
    ] {
        let out = run(&db, &dir, &["resolve", "--applied", hostile]);
        assert_eq!(code(&out), 1);
        assert!(text(&out).1.contains("Error: P3017"), "{:?}", text(&out));
    }
    assert_eq!(rows(&db).await.len(), local_names().len());
    assert!(table_exists(&db, "Companion").await);
}

#[tokio::test]
async fn a_database_not_managed_yet_is_refused_with_p3005_and_left_untouched() {
    let db = empty_db().await;
    db.client()
        .await
        .batch_execute("CREATE TABLE legacy (id int)")
        .await
        .expect("create");
    let out = run(&db, &common::migrations_dir(), &["deploy"]);
    let (_, stderr) = text(&out);
    assert_eq!(code(&out), 1);
    assert!(
        stderr.contains(
            "Error: P3005\n\nThe database schema is not empty. Read more about how to baseline an existing production database: https://pris.ly/d/migrate-baseline"
        ),
        "{stderr}"
    );
    assert!(!table_exists(&db, "_prisma_migrations").await);
    assert!(!table_exists(&db, "Companion").await);
}

#[tokio::test]
async fn an_edited_applied_file_is_warned_about_but_a_crlf_checkout_is_not() {
    let db = fresh_db().await;
    let last = local_names().pop().expect("a migration");
    let dir = TempMigrations::with(&[]);
    let original = std::fs::read_to_string(dir.file(&last)).expect("read");

    std::fs::write(dir.file(&last), original.replace('\n', "\r\n")).expect("write crlf");
    let out = run(&db, &dir.path, &["status"]);
    assert_eq!(code(&out), 0);
    assert!(!text(&out).1.contains("was modified"), "{:?}", text(&out));

    std::fs::write(dir.file(&last), format!("{original}-- edited\n")).expect("write edit");
    let out = run(&db, &dir.path, &["status"]);
    assert_eq!(code(&out), 0);
    assert!(text(&out).1.contains(&format!(
        "The migration `{last}` was modified after it was applied."
    )));
    let out = run(&db, &dir.path, &["deploy"]);
    assert_eq!(code(&out), 0);
    assert!(text(&out).1.contains(&format!(
        "The migration `{last}` was modified after it was applied."
    )));
    assert_eq!(
        rows(&db).await.len(),
        local_names().len(),
        "an edited file is never re-run"
    );
}

#[tokio::test]
async fn two_deploys_started_together_apply_every_migration_exactly_once() {
    let db = empty_db().await;
    // A slow first migration keeps the first deploy busy long enough for the second to overlap.
    let slow = "00000000000000_slow";
    let tmp = TempMigrations::with(&[(slow, "SELECT pg_sleep(1);\n")]);
    let dir = tmp.path.clone();
    let a = db_cmd(&db, &dir, &["deploy"])
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("spawn a");
    let b = db_cmd(&db, &dir, &["deploy"])
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("spawn b");
    let (a, b) = (
        a.wait_with_output().expect("a"),
        b.wait_with_output().expect("b"),
    );
    assert_eq!(
        (code(&a), code(&b)),
        (0, 0),
        "{:?} {:?}",
        text(&a),
        text(&b)
    );

    let mut names = local_names();
    names.insert(0, slow.to_owned());
    let stored = rows(&db).await;
    assert_eq!(
        stored.iter().map(|r| r.name.clone()).collect::<Vec<_>>(),
        names,
        "one row per migration"
    );
    let applied_lines = |o: &Output| text(o).0.lines().filter(|l| l.starts_with("  └─ ")).count();
    assert_eq!(
        applied_lines(&a) + applied_lines(&b),
        names.len(),
        "each migration reported applied once"
    );
}

#[tokio::test]
async fn a_concurrently_file_runs_outside_a_transaction_and_leaves_a_valid_index() {
    let db = fresh_db().await;
    let name = "29990101000000_message_user_idx";
    let dir = TempMigrations::with(&[(
        name,
        "-- Built without blocking writes.\nCREATE INDEX CONCURRENTLY \"Message_userId_idx\" ON \"Message\"(\"userId\");\n",
    )]);
    let out = run(&db, &dir.path, &["deploy"]);
    assert_eq!(code(&out), 0, "{:?}", text(&out));
    let valid: Option<bool> = db
        .client()
        .await
        .query_opt("SELECT indisvalid FROM pg_index WHERE indexrelid = to_regclass('public.\"Message_userId_idx\"')", &[])
        .await
        .expect("pg_index")
        .map(|r| r.get(0));
    assert_eq!(
        valid,
        Some(true),
        "inside a transaction Postgres refuses CREATE INDEX CONCURRENTLY"
    );
    let r = rows(&db)
        .await
        .into_iter()
        .find(|r| r.name == name)
        .expect("row");
    assert!(r.finished && r.steps == 1);
}

#[tokio::test]
async fn a_file_mixing_concurrently_with_other_statements_is_refused_before_anything_runs() {
    let db = empty_db().await;
    let name = "29990101000000_mixed";
    let dir = TempMigrations::with(&[(
        name,
        "CREATE TABLE \"Extra\" (id int);\nCREATE INDEX CONCURRENTLY \"Extra_id_idx\" ON \"Extra\"(id);\n",
    )]);
    let out = run(&db, &dir.path, &["deploy"]);
    let (_, stderr) = text(&out);
    assert_eq!(code(&out), 1);
    assert!(stderr.contains(&format!(
        "The migration `{name}` holds CREATE INDEX CONCURRENTLY and 1 other statement(s)."
    )));
    assert!(
        stderr.contains("Prisma sends a whole migration file as one batch"),
        "{stderr}"
    );
    assert!(
        rows(&db).await.is_empty(),
        "nothing applied, not even the earlier migrations"
    );
    assert!(!table_exists(&db, "Companion").await && !table_exists(&db, "Extra").await);
}

#[tokio::test]
async fn an_invalid_index_left_by_a_concurrent_build_fails_with_how_to_fix_it() {
    let db = fresh_db().await;
    db.client()
        .await
        .batch_execute("INSERT INTO \"Category\" (id, name) VALUES ('a', 'Same'), ('b', 'Same')")
        .await
        .expect("duplicates");
    let name = "29990101000000_category_name_key";
    let dir = TempMigrations::with(&[(
        name,
        "CREATE UNIQUE INDEX CONCURRENTLY \"Category_name_key\" ON \"Category\"(\"name\");\n",
    )]);
    let out = run(&db, &dir.path, &["deploy"]);
    let (_, stderr) = text(&out);
    assert_eq!(code(&out), 1);
    assert!(stderr.contains("Database error code: 23505"), "{stderr}");
    assert!(stderr.contains("INVALID index"), "{stderr}");
    assert!(
        stderr.contains("DROP INDEX CONCURRENTLY IF EXISTS \"public\".\"Category_name_key\";"),
        "{stderr}"
    );
    let r = rows(&db)
        .await
        .into_iter()
        .find(|r| r.name == name)
        .expect("row");
    assert!(!r.finished && r.logs.unwrap_or_default().contains("Category_name_key"));
}

/// Readers of `"Companion"` in a loop on sessions of their own, each query timed, until `stop`:
/// what the application's traffic feels while a deploy queues for its lock.
fn spawn_readers(
    db: &TestDb,
    readers: usize,
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
) -> Vec<tokio::task::JoinHandle<(Duration, usize)>> {
    (0..readers)
        .map(|_| {
            let config = db.config.clone();
            let stop = stop.clone();
            tokio::spawn(async move {
                let client = gcbb::db::connect(&config).await.expect("reader connects");
                let (mut longest, mut queries) = (Duration::ZERO, 0);
                while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                    let started = std::time::Instant::now();
                    client
                        .query_one("SELECT count(*) FROM \"Companion\"", &[])
                        .await
                        .expect("a reader's query");
                    longest = longest.max(started.elapsed());
                    queries += 1;
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
                (longest, queries)
            })
        })
        .collect()
}

/// Holds an ACCESS SHARE lock on `"Companion"` in an open transaction, as a long report or a
/// forgotten `psql` session would.
async fn hold_companion(db: &TestDb) -> tokio_postgres::Client {
    let blocker = db.client().await;
    blocker
        .batch_execute("BEGIN; SELECT count(*) FROM \"Companion\"")
        .await
        .expect("hold a lock");
    blocker
}

const ADD_EXTRA: (&str, &str) = (
    "29990101000000_add_column",
    "CREATE TABLE \"Extra\" (\"id\" INTEGER);\n\
     ALTER TABLE \"Companion\" ADD COLUMN \"extra\" INTEGER;\n",
);

#[tokio::test]
async fn a_deploy_behind_a_long_transaction_never_stalls_readers_much_longer_than_lock_timeout_and_completes_after_it(
) {
    let db = fresh_db().await;
    let blocker = hold_companion(&db).await;
    let dir = TempMigrations::with(&[ADD_EXTRA]);
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let readers = spawn_readers(&db, 3, stop.clone());
    // The default settings: no MIGRATE_* variable is set.
    let deploy = db_cmd(&db, &dir.path, &["deploy"]);
    let deploy = tokio::task::spawn_blocking(move || {
        let mut deploy = deploy;
        deploy.output().expect("run gcbb db deploy")
    });
    // The blocker's transaction outlives several lock_timeouts, then ends.
    tokio::time::sleep(Duration::from_secs(5)).await;
    blocker
        .batch_execute("COMMIT")
        .await
        .expect("end the blocker");
    let out = deploy.await.expect("the deploy ran");
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let mut longest = Duration::ZERO;
    let mut queries = 0;
    for r in readers {
        let (l, q) = r.await.expect("a reader");
        longest = longest.max(l);
        queries += q;
    }
    eprintln!(
        "longest reader wait behind the deploy: {} ms ({queries} queries; lock_timeout {} ms)",
        longest.as_millis(),
        gcbb_migrate::config::DEFAULT_LOCK_TIMEOUT.as_millis()
    );

    let (stdout, stderr) = text(&out);
    assert_eq!(code(&out), 0, "{stdout}{stderr}");
    assert!(
        stdout.contains(&format!("  └─ {}/\n", ADD_EXTRA.0)),
        "{stdout}"
    );
    let reported = stderr
        .lines()
        .find(|l| {
            l.starts_with(&format!(
                "warning: {} hit lock_timeout (1000 ms) ",
                ADD_EXTRA.0
            ))
        })
        .unwrap_or_else(|| panic!("the retries are reported: {stderr}"));
    assert!(
        reported.contains("applied after retrying for "),
        "{reported}"
    );
    // The readers really queued behind the deploy's lock request, and never for much longer
    // than one lock_timeout (the old default, 5 s, stalled them for 5 s at each attempt).
    assert!(
        longest > Duration::from_millis(300),
        "the readers were never blocked: {longest:?}"
    );
    assert!(
        longest < gcbb_migrate::config::DEFAULT_LOCK_TIMEOUT * 2,
        "a reader waited {longest:?}"
    );
    assert!(table_exists(&db, "Extra").await);
    let r = rows(&db)
        .await
        .into_iter()
        .find(|r| r.name == ADD_EXTRA.0)
        .expect("row");
    assert!(r.finished && r.logs.is_none() && r.steps == 1, "{r:?}");
}

#[tokio::test]
async fn when_the_retry_budget_runs_out_the_deploy_fails_cleanly_and_the_history_says_what_prisma_would(
) {
    let db = fresh_db().await;
    let blocker = hold_companion(&db).await;
    let dir = TempMigrations::with(&[ADD_EXTRA]);
    let started = std::time::Instant::now();
    let out = db_cmd(&db, &dir.path, &["deploy"])
        .env("MIGRATE_LOCK_TIMEOUT_MS", "300")
        .env("MIGRATE_LOCK_RETRY_BUDGET_MS", "2500")
        .output()
        .expect("run");
    let took = started.elapsed();
    let (_, stderr) = text(&out);
    assert_eq!(code(&out), 1, "{stderr}");
    assert_contains_all(
        &stderr,
        &[
            "Error: P3018",
            &format!("Migration name: {}", ADD_EXTRA.0),
            "Database error code: 55P03",
            "ERROR: canceling statement due to lock timeout",
            "lock_timeout (300 ms) fired on each of ",
            "the retry budget (MIGRATE_LOCK_RETRY_BUDGET_MS=2500)",
            "nothing of this file was applied",
        ],
    );
    assert!(
        took >= Duration::from_millis(2000),
        "the budget was spent: {took:?}"
    );
    // Nothing half-applied: the table the file creates first was rolled back with the rest.
    assert!(!table_exists(&db, "Extra").await);
    let columns = db
        .count("SELECT count(*) FROM information_schema.columns WHERE table_name = 'Companion' AND column_name = 'extra'")
        .await;
    assert_eq!(columns, 0);
    // The row Prisma leaves for a failed migration: started, not finished, no steps, the error
    // in its logs; status then says so in Prisma's words.
    let r = rows(&db)
        .await
        .into_iter()
        .find(|r| r.name == ADD_EXTRA.0)
        .expect("row");
    assert!(!r.finished && !r.rolled_back && r.steps == 0, "{r:?}");
    let logs = r.logs.unwrap_or_default();
    assert!(
        logs.contains("55P03") && logs.contains("nothing of this file was applied"),
        "{logs}"
    );
    let out = run(&db, &dir.path, &["status"]);
    assert_eq!(code(&out), 1);
    assert!(text(&out).1.contains(&format!(
        "Following migration have failed:\n{}\n",
        ADD_EXTRA.0
    )));

    // Once the blocker is gone: rolled back, deployed again.
    blocker.batch_execute("ROLLBACK").await.expect("release");
    let out = run(&db, &dir.path, &["resolve", "--rolled-back", ADD_EXTRA.0]);
    assert_eq!(code(&out), 0, "{:?}", text(&out));
    let out = run(&db, &dir.path, &["deploy"]);
    assert_eq!(code(&out), 0, "{:?}", text(&out));
    assert!(table_exists(&db, "Extra").await);
}

#[tokio::test]
async fn an_obsolete_retry_count_or_a_zero_lock_timeout_is_refused_by_name() {
    let db = fresh_db().await;
    let dir = TempMigrations::with(&[ADD_EXTRA]);
    for (var, value) in [
        ("MIGRATE_LOCK_RETRIES", "3"),
        ("MIGRATE_LOCK_TIMEOUT_MS", "0"),
        ("MIGRATE_LOCK_RETRY_BUDGET_MS", "two minutes"),
    ] {
        let out = db_cmd(&db, &dir.path, &["deploy"])
            .env(var, value)
            .output()
            .expect("run");
        let (_, stderr) = text(&out);
        assert_eq!(code(&out), 1, "{var}: {stderr}");
        assert!(stderr.contains(&format!("{var} is invalid: ")), "{stderr}");
    }
    assert!(!table_exists(&db, "Extra").await, "nothing was applied");
}

#[tokio::test]
async fn deploy_times_out_clearly_when_another_session_holds_the_advisory_lock() {
    let db = empty_db().await;
    let holder = db.client().await;
    holder
        .batch_execute("SELECT pg_advisory_lock(72707369)")
        .await
        .expect("take Prisma's lock");
    let out = db_cmd(&db, &common::migrations_dir(), &["deploy"])
        .env("MIGRATE_ADVISORY_LOCK_TIMEOUT_MS", "300")
        .output()
        .expect("run");
    let (_, stderr) = text(&out);
    assert_eq!(code(&out), 1);
    assert!(stderr.contains("Error: P1002"), "{stderr}");
    assert!(
        stderr.contains("Timed out trying to acquire a postgres advisory lock (SELECT pg_advisory_lock(72707369)). Timeout: 300ms."),
        "{stderr}"
    );
    assert!(
        !table_exists(&db, "_prisma_migrations").await,
        "nothing ran without the lock"
    );
}

#[tokio::test]
async fn status_reports_rows_whose_files_are_missing_locally_and_diverged_histories() {
    let db = fresh_db().await;
    let ghost = "29980101000000_ghost";
    db.client()
        .await
        .execute(
            "INSERT INTO _prisma_migrations (id, checksum, finished_at, migration_name, applied_steps_count) \
             VALUES ($1, repeat('0', 64), now(), $2, 1)",
            &[&uuid::Uuid::new_v4().to_string(), &ghost],
        )
        .await
        .expect("insert ghost row");
    let dir = TempMigrations::with(&[]);
    let out = run(&db, &dir.path, &["status"]);
    assert_eq!(code(&out), 1);
    assert!(
        text(&out).1.contains(&format!(
            "The migration from the database are not found locally in {}:\n{ghost}\n",
            dir.path.display()
        )),
        "{:?}",
        text(&out)
    );

    dir.write("29990101000000_local_only", "SELECT 1;\n");
    let out = run(&db, &dir.path, &["status"]);
    let (_, stderr) = text(&out);
    assert_eq!(code(&out), 1);
    let last = local_names().pop().expect("a migration");
    assert!(
        stderr.contains(&format!(
            "Your local migration history and the migrations table from your database are different:\n\n\
             The last common migration is: {last}\n\n\
             The migration have not yet been applied:\n29990101000000_local_only\n\n\
             The migration from the database are not found locally in {}:\n{ghost}\n",
            dir.path.display()
        )),
        "{stderr}"
    );
}

#[tokio::test]
async fn reset_refuses_a_remote_host_without_connecting() {
    let out = gcbb()
        .args(["db", "reset", "--force"])
        .env("DATABASE_URL", "postgres://u:secret@db.example.com:5432/x")
        .output()
        .expect("run");
    let (_, stderr) = text(&out);
    assert_eq!(code(&out), 1);
    assert!(
        stderr.contains("refusing to reset the database on `db.example.com`"),
        "{stderr}"
    );
    assert!(
        !stderr.contains("cannot connect"),
        "it must not even try: {stderr}"
    );
    assert!(!stderr.contains("secret"));
}

#[tokio::test]
async fn reset_on_a_local_database_needs_force_then_drops_everything_and_redeploys() {
    let db = fresh_db().await;
    let dir = common::migrations_dir();
    db.client()
        .await
        .batch_execute("CREATE TABLE \"Junk\" (id int); CREATE SCHEMA scratch; CREATE TABLE scratch.t (id int);")
        .await
        .expect("junk");

    let out = db_cmd(&db, &dir, &["reset"])
        .stdin(std::process::Stdio::null())
        .output()
        .expect("run");
    assert_eq!(code(&out), 1);
    assert!(text(&out).1.contains("--force"));
    assert!(
        table_exists(&db, "Junk").await,
        "nothing dropped without confirmation"
    );

    let out = run(&db, &dir, &["reset", "--force"]);
    assert_eq!(code(&out), 0, "{:?}", text(&out));
    assert!(!table_exists(&db, "Junk").await);
    let scratch: bool = db
        .client()
        .await
        .query_one(
            "SELECT EXISTS (SELECT 1 FROM pg_namespace WHERE nspname = 'scratch')",
            &[],
        )
        .await
        .expect("schema")
        .get(0);
    assert!(!scratch);
    assert!(table_exists(&db, "Companion").await);
    assert_eq!(rows(&db).await.len(), local_names().len());
}

#[tokio::test]
async fn a_missing_database_url_names_every_variable_and_the_unpooled_one_wins() {
    let out = gcbb().args(["db", "status"]).output().expect("run");
    assert_eq!(code(&out), 1);
    let (_, stderr) = text(&out);
    for var in ["DATABASE_URL_UNPOOLED", "DIRECT_URL", "DATABASE_URL"] {
        assert!(stderr.contains(var), "{stderr}");
    }

    let db = fresh_db().await;
    let out = gcbb()
        .args(["db", "status", "--migrations-dir"])
        .arg(common::migrations_dir())
        .env("DATABASE_URL_UNPOOLED", &db.url)
        .env(
            "DATABASE_URL",
            "postgres://nobody@127.0.0.1:1/none?sslmode=disable",
        )
        .output()
        .expect("run");
    assert_eq!(code(&out), 0, "{:?}", text(&out));
}

#[tokio::test]
async fn only_a_pooled_url_warns_that_advisory_locks_do_not_work_through_pgbouncer() {
    let out = gcbb()
        .args(["db", "status"])
        .env(
            "DATABASE_URL",
            "postgres://u:secret@ep-x-pooler.invalid/db?sslmode=disable",
        )
        .output()
        .expect("run");
    let (_, stderr) = text(&out);
    assert_eq!(code(&out), 1);
    assert!(
        stderr.contains("warning: DATABASE_URL points to a connection pooler"),
        "{stderr}"
    );
    assert!(
        stderr.contains("advisory locks and session settings"),
        "{stderr}"
    );
    assert!(stderr.contains("Error: P1001"), "{stderr}");
    assert!(
        !stderr.contains("secret"),
        "credentials never printed: {stderr}"
    );
}

#[tokio::test]
async fn new_creates_a_timestamped_file_and_refuses_an_empty_name() {
    let dir = std::env::temp_dir().join(unique("gcbb_new"));
    let out = gcbb()
        .args(["db", "new", "Add Users-Table!", "--migrations-dir"])
        .arg(&dir)
        .output()
        .expect("run");
    assert_eq!(code(&out), 0, "{:?}", text(&out));
    let created: Vec<String> = std::fs::read_dir(&dir)
        .expect("dir")
        .filter_map(|e| e.ok().map(|e| e.file_name().to_string_lossy().into_owned()))
        .collect();
    assert_eq!(created.len(), 1);
    let name = &created[0];
    assert!(
        name.ends_with("_add_users_table") && name.len() == 14 + "_add_users_table".len(),
        "{name}"
    );
    assert!(name[..14].chars().all(|c| c.is_ascii_digit()));
    let sql = std::fs::read_to_string(dir.join(name).join("migration.sql")).expect("file");
    assert!(sql.starts_with("-- "));

    let out = gcbb()
        .args(["db", "new", "../..", "--migrations-dir"])
        .arg(&dir)
        .output()
        .expect("run");
    assert_eq!(code(&out), 1);
    assert_eq!(std::fs::read_dir(&dir).expect("dir").count(), 1);
    let _ = std::fs::remove_dir_all(&dir);
}
