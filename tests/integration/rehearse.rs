//! `gcbb db rehearse` and `gcbb db deploy --rehearse` on real data made by `gcbb bench seed
//! --scale small` (2 000 companions, 50 000 messages): a harmless migration passes; a type change
//! that rewrites "Message" is caught with its lock time; a `SET NOT NULL` on a column with nulls
//! fails in the copy while the target stays as it was; an index built without `CONCURRENTLY` is
//! shown holding its lock; the copy is gone afterwards. Beside every run a workload of the hot
//! queries and writes runs on the copy: a write blocked for over a second fails the verdict, naming
//! the statement and its `CONCURRENTLY` rewrite, and the same index built concurrently blocks no
//! one; a query the migrations break is reported, not a crash; a hot query that loses its index is
//! caught by the before/after timing. `--neon-branch` makes its copy through a local stand-in of
//! Neon's API, and the branch is deleted however the rehearsal ends: passed, failed, the API
//! erring or too slow, or interrupted by Ctrl-C. Every test checks the output and the databases:
//! the target's columns, data files and history, and which copies still exist.

use std::path::Path;
use std::process::Output;
use std::time::Duration;

use serde_json::Value;
use sha2::{Digest, Sha256};
use tokio::sync::OnceCell;

use crate::common::neon::{Mode, NeonStandIn};
/// The project's own migrations, oldest first.
use crate::common::project_migration_names as project_history;
use crate::common::{
    self, empty_db, fresh_db, gcbb, gcbb_db, quote_ident, stdout, text, unique, url_for, TestDb,
};

/// Advisory lock key (on the `postgres` database) serialising builds of the seeded template.
const SEEDED_TEMPLATE_LOCK_KEY: i64 = 0x6763_6262_7470_6c01; // "gcbbtpl\x01"

static SEEDED_TEMPLATE: OnceCell<String> = OnceCell::const_new();

async fn admin() -> tokio_postgres::Client {
    gcbb::db::connect(&common::server().with_dbname("postgres"))
        .await
        .expect("connect to the test server's postgres database")
}

/// The migrated template's name, `_small_`, and a hash of the seed's source: a changed seed or
/// history gets a new template.
fn seeded_template_name() -> String {
    let seed_source = std::fs::read(common::project_root().join("cli/src/bench/seed.rs"))
        .expect("read the seed's source");
    let hash = hex::encode(Sha256::digest(seed_source));
    format!(
        "{}_small_{}",
        common::template_name(&common::migrations_dir()),
        &hash[..8]
    )
}

/// Seeds a fresh database with `gcbb bench seed --scale small` and renames it into a template,
/// once per server (other test processes wait on the advisory lock).
async fn build_seeded_template() -> String {
    let name = seeded_template_name();
    let admin = admin().await;
    admin
        .execute("SELECT pg_advisory_lock($1)", &[&SEEDED_TEMPLATE_LOCK_KEY])
        .await
        .expect("seeded template lock");
    let exists = admin
        .query_opt("SELECT 1 FROM pg_database WHERE datname = $1", &[&name])
        .await
        .expect("look up the seeded template")
        .is_some();
    if !exists {
        let db = fresh_db().await;
        let out = gcbb()
            .env("DATABASE_URL", &db.url)
            .args(["bench", "seed", "--scale", "small", "--json"])
            .output()
            .expect("run gcbb bench seed");
        assert!(out.status.success(), "{}", text(&out));
        // Renamed only once complete: a crash mid-seed never leaves a half-seeded template.
        let rename = format!(
            "ALTER DATABASE {} RENAME TO {}",
            quote_ident(&db.name),
            quote_ident(&name)
        );
        let mut renamed = false;
        for _ in 0..50 {
            match admin.batch_execute(&rename).await {
                Ok(()) => {
                    renamed = true;
                    break;
                }
                Err(e) if e.code() == Some(&tokio_postgres::error::SqlState::OBJECT_IN_USE) => {
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
                Err(e) => panic!("rename the seeded database: {e}"),
            }
        }
        assert!(renamed, "the seeded database stayed in use");
        admin
            .batch_execute(&format!(
                "ALTER DATABASE {} IS_TEMPLATE true",
                quote_ident(&name)
            ))
            .await
            .expect("mark the seeded template");
    }
    admin
        .execute(
            "SELECT pg_advisory_unlock($1)",
            &[&SEEDED_TEMPLATE_LOCK_KEY],
        )
        .await
        .expect("seeded template unlock");
    name
}

/// A database of its own holding the whole history and the small bench data set.
async fn seeded_db() -> TestDb {
    let template = SEEDED_TEMPLATE
        .get_or_init(build_seeded_template)
        .await
        .clone();
    let name = unique("gcbb_test");
    admin()
        .await
        .batch_execute(&format!(
            "CREATE DATABASE {} TEMPLATE {}",
            quote_ident(&name),
            quote_ident(&template)
        ))
        .await
        .expect("clone the seeded template");
    TestDb {
        url: url_for(&name),
        config: common::server().with_dbname(&name),
        name,
    }
}

/// A migrations directory: the project's migrations plus the test's own, removed afterwards.
type Migrations = crate::common::MigrationsDir;

const ADD_EDITED_AT: (&str, &str) = (
    "20990101000000_add_message_edited_at",
    "-- A nullable column: a catalog change, no rewrite.\n\
     ALTER TABLE \"Message\" ADD COLUMN \"editedAt\" TIMESTAMP(3);\n",
);

const RETYPE_ROLE: (&str, &str) = (
    "20990101000000_role_as_text",
    "-- gcbb:allow alter-column-type reviewed: the code reads the role as text everywhere\n\
     ALTER TABLE \"Message\" ALTER COLUMN \"role\" TYPE TEXT;\n",
);

const TAGLINE: (&str, &str) = (
    "20990101000000_companion_tagline",
    "ALTER TABLE \"Companion\" ADD COLUMN \"tagline\" TEXT;\n\
     UPDATE \"Companion\" SET \"tagline\" = \"name\" WHERE NOT \"private\";\n\
     -- gcbb:allow set-not-null every companion has a tagline after the backfill above\n\
     ALTER TABLE \"Companion\" ALTER COLUMN \"tagline\" SET NOT NULL;\n",
);

const INDEX_LOCKING: (&str, &str) = (
    "20990101000000_message_user_index",
    "-- gcbb:allow create-index-not-concurrently built at night, we thought it would be quick\n\
     CREATE INDEX \"Message_userId_idx\" ON \"Message\"(\"userId\");\n",
);

const INDEX_CONCURRENTLY: (&str, &str) = (
    "20990102000000_message_user_created_index",
    "CREATE INDEX CONCURRENTLY IF NOT EXISTS \"Message_userId_createdAt_idx\" \
     ON \"Message\"(\"userId\", \"createdAt\");\n",
);

/// An index build whose transaction then holds its SHARE lock on "Message" for 1.5 s more, as a
/// file of several builds on a big table does (the project's own `add_performance_indexes` held
/// it 16.5 s on the bench data).
const INDEX_HELD: (&str, &str) = (
    "20990101000000_message_user_index_held",
    "-- gcbb:allow create-index-not-concurrently reviewed: we thought it would be quick\n\
     CREATE INDEX IF NOT EXISTS \"Message_userId_idx\" ON \"Message\"(\"userId\");\n\
     SELECT pg_sleep(1.5);\n",
);

const INDEX_CONCURRENTLY_THEN_WAIT: [(&str, &str); 2] = [
    (
        "20990101000000_message_user_index_concurrently",
        "CREATE INDEX CONCURRENTLY IF NOT EXISTS \"Message_userId_idx\" ON \"Message\"(\"userId\");\n",
    ),
    ("20990101000001_then_wait", "SELECT pg_sleep(1.5);\n"),
];

fn run(target: &TestDb, dir: &Path, args: &[&str]) -> Output {
    gcbb_db(target, dir).args(args).output().expect("run gcbb")
}

fn json(o: &Output) -> Value {
    serde_json::from_slice(&o.stdout).unwrap_or_else(|e| panic!("{e}: {}", text(o)))
}

/// The scratch database's name, from the report's `host:port/name`.
fn copy_name(report: &Value) -> String {
    report["copy"]["database"]
        .as_str()
        .and_then(|d| d.rsplit('/').next())
        .expect("the report names its copy")
        .to_owned()
}

/// Databases of the server whose names start with `prefix`.
async fn databases_like(prefix: &str) -> Vec<String> {
    common::databases_starting_with(prefix).await
}

/// The copies and shadows a rehearsal of `target` may have made.
async fn scratch_databases_of(target: &TestDb) -> Vec<String> {
    let mut found = databases_like(&format!("gcbb_rehearse_{}", target.name)).await;
    found.extend(databases_like(&format!("gcbb_rehearse_shadow_{}", target.name)).await);
    found
}

async fn column_type(db: &TestDb, table: &str, column: &str) -> Option<String> {
    let sql = "SELECT udt_name::text FROM information_schema.columns \
               WHERE table_schema = 'public' AND table_name = $1 AND column_name = $2";
    db.column(sql, &[&table, &column]).await.pop()
}

async fn history(db: &TestDb) -> Vec<String> {
    let sql = "SELECT migration_name::text FROM _prisma_migrations ORDER BY migration_name";
    db.column(sql, &[]).await
}

async fn relfilenode(db: &TestDb, table: &str) -> u32 {
    let sql = "SELECT relfilenode FROM pg_class WHERE oid = to_regclass($1)";
    db.one(sql, &[&quote_ident(table)]).await
}

#[tokio::test]
async fn a_harmless_migration_passes_on_a_seeded_copy_and_leaves_no_copy_behind() {
    let target = seeded_db().await;
    let dir = Migrations::with(&[ADD_EDITED_AT]);
    let out = run(&target, &dir.path, &["rehearse"]);
    let report = stdout(&out);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    assert!(
        report.contains("Rehearsal of 1 pending migration for ")
            && report.contains("CREATE DATABASE … TEMPLATE (file copy)"),
        "{report}"
    );
    let row = report
        .lines()
        .find(|l| l.contains("ADD COLUMN \"editedAt\""))
        .unwrap_or_else(|| panic!("a row for the statement: {report}"));
    assert!(
        row.contains("ACCESS EXCLUSIVE") && row.contains("\"Message\"") && row.contains(" no "),
        "the lock is shown, and no rewrite: {row}"
    );
    let verified = format!(
        "Verify on the copy: {} hot queries use their index.",
        gcbb::db::hot_queries().len()
    );
    assert!(report.contains(&verified), "{report}");
    assert!(report.contains("  No difference detected."), "{report}");
    assert!(report.contains("Verdict: PASS"), "{report}");
    assert!(report.contains(" was dropped."), "{report}");

    assert_eq!(column_type(&target, "Message", "editedAt").await, None);
    assert_eq!(history(&target).await, project_history());
    assert_eq!(scratch_databases_of(&target).await, Vec::<String>::new());
}

#[tokio::test]
async fn an_alter_column_type_that_rewrites_message_is_caught_with_its_lock_time() {
    let target = seeded_db().await;
    let before = relfilenode(&target, "Message").await;
    let dir = Migrations::with(&[RETYPE_ROLE]);
    // Dumped rather than file-copied, to exercise pg_dump | pg_restore; a budget far below
    // what rewriting 50 000 rows and their indexes takes.
    let out = run(
        &target,
        &dir.path,
        &[
            "rehearse",
            "--copy",
            "dump",
            "--max-lock-ms",
            "50",
            "--json",
        ],
    );
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    let report = json(&out);
    assert_eq!(report["copy"]["made_by"], "pg_dump | pg_restore");
    let statement = &report["migrations"][0]["statements"][0];
    assert_eq!(
        statement["statement"],
        "ALTER TABLE \"Message\" ALTER COLUMN \"role\" TYPE TEXT"
    );
    assert_eq!(statement["rewrites"][0]["table"], "Message");
    assert!(statement["rewrites"][0]["indexes_rebuilt"].as_u64() >= Some(5));
    let lock = &statement["locks"][0];
    assert_eq!(lock["mode"], "ACCESS EXCLUSIVE");
    assert_eq!(lock["table"], "Message");
    assert_eq!(lock["blocks"], "reads and writes");
    let held = lock["held_ms"].as_f64().expect("held_ms");
    assert!(
        held >= statement["ms"].as_f64().expect("ms") && held > 50.0,
        "{lock}"
    );
    assert!(lock["table_bytes"].as_i64() > Some(1 << 20), "{lock}");

    let breach = &report["verdict"]["breaches"][0];
    assert_eq!(report["verdict"]["passed"], false);
    assert_eq!(breach["kind"], "lock_over_budget");
    assert_eq!(breach["migration"], RETYPE_ROLE.0);
    assert_eq!(breach["line"], 2);
    assert_eq!(breach["rewrote"], true);
    assert_eq!(breach["budget_ms"], 50);
    assert_eq!(breach["safer"][0]["rule"], "alter-column-type");
    assert!(breach["safer"][0]["fix"]
        .as_str()
        .is_some_and(|f| f.starts_with("add a column of the new type")));

    assert_eq!(
        column_type(&target, "Message", "role").await.as_deref(),
        Some("Role")
    );
    assert_eq!(
        relfilenode(&target, "Message").await,
        before,
        "the target was not rewritten"
    );
    assert_eq!(history(&target).await, project_history());
    assert!(databases_like(&copy_name(&report)).await.is_empty());
}

#[tokio::test]
async fn a_set_not_null_on_a_column_with_nulls_fails_in_the_copy_and_production_is_untouched() {
    let target = seeded_db().await;
    let dir = Migrations::with(&[TAGLINE, INDEX_CONCURRENTLY]);
    let out = run(&target, &dir.path, &["rehearse"]);
    let report = stdout(&out);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(
        report.contains(&format!(
            "{}, line 4 failed on the copy (SQLSTATE 23502):\n    ERROR: column \"tagline\" of relation \"Companion\" contains null values\n    statement: ALTER TABLE \"Companion\" ALTER COLUMN \"tagline\" SET NOT NULL",
            TAGLINE.0
        )),
        "{report}"
    );
    assert!(
        report.contains("(one transaction, FAILED, rolled back after "),
        "{report}"
    );
    assert!(
        report.contains(&format!(
            "Not run (after the failure): {}",
            INDEX_CONCURRENTLY.0
        )),
        "{report}"
    );
    let backfill = report
        .lines()
        .find(|l| l.contains("UPDATE \"Companion\""))
        .expect("the backfill's row");
    assert!(
        backfill.contains("  1618  "),
        "private companions were left null: {backfill}"
    );
    assert!(report.contains(" was dropped."), "{report}");
    assert_eq!(column_type(&target, "Companion", "tagline").await, None);
    assert_eq!(history(&target).await, project_history());
    assert!(scratch_databases_of(&target).await.is_empty());

    // With --keep the copy stays, as the failed deploy would leave production's history.
    let out = run(&target, &dir.path, &["rehearse", "--keep", "--json"]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    let report = json(&out);
    let kept = copy_name(&report);
    // A TestDb of its own: dropped when the test ends, whatever happens.
    let copy = TestDb {
        url: url_for(&kept),
        config: common::server().with_dbname(&kept),
        name: kept.clone(),
    };
    assert_eq!(report["copy"]["kept"], true);
    assert_eq!(databases_like(&kept).await, vec![kept.clone()]);
    let failed = copy
        .client()
        .await
        .query_one(
            "SELECT finished_at IS NULL, logs FROM _prisma_migrations WHERE migration_name = $1",
            &[&TAGLINE.0],
        )
        .await
        .expect("the copy holds the failed row");
    assert!(failed.get::<_, bool>(0));
    assert!(failed.get::<_, String>(1).contains("contains null values"));
    assert_eq!(
        column_type(&copy, "Companion", "tagline").await,
        None,
        "rolled back"
    );
    assert_eq!(history(&target).await, project_history());
}

#[tokio::test]
async fn an_index_built_without_concurrently_is_shown_holding_its_share_lock() {
    let target = seeded_db().await;
    let dir = Migrations::with(&[INDEX_LOCKING, INDEX_CONCURRENTLY]);
    let out = run(&target, &dir.path, &["rehearse", "--json"]);
    // SHARE stops writes but not reads: shown, not judged by default.
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let report = json(&out);
    let locking = &report["migrations"][0];
    assert_eq!(locking["transaction"], true);
    let statement = &locking["statements"][0];
    assert_eq!(statement["locks"][0]["mode"], "SHARE");
    assert_eq!(statement["locks"][0]["table"], "Message");
    assert_eq!(statement["locks"][0]["blocks"], "writes");
    assert!(statement["locks"][0]["held_ms"].as_f64() >= statement["ms"].as_f64());
    assert_eq!(statement["indexes_built"][0]["index"], "Message_userId_idx");
    assert!(statement["indexes_built"][0]["bytes"].as_i64() > Some(8192));
    assert_eq!(statement["rewrites"], serde_json::json!([]));

    let concurrent = &report["migrations"][1];
    assert_eq!(concurrent["transaction"], false);
    let statement = &concurrent["statements"][0];
    assert_eq!(statement["locks"][0]["mode"], "SHARE UPDATE EXCLUSIVE");
    assert_eq!(statement["locks"][0]["blocks"], "schema changes and vacuum");
    assert_eq!(
        statement["indexes_built"][0]["index"],
        "Message_userId_createdAt_idx"
    );
    assert_eq!(report["verdict"]["passed"], true);

    // With a budget for write-blocking locks, the same build fails, with the lint's rewrite.
    let out = run(
        &target,
        &dir.path,
        &["rehearse", "--max-write-lock-ms", "1"],
    );
    let text_report = stdout(&out);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(
        text_report.contains(&format!(
            "{}, line 2: SHARE on \"Message\"",
            INDEX_LOCKING.0
        )) && text_report.contains("over the budget of 1 ms (it blocks writes)"),
        "{text_report}"
    );
    assert!(
        text_report.contains("    safer (create-index-not-concurrently): `CREATE INDEX CONCURRENTLY IF NOT EXISTS …` alone in its own migration file"),
        "{text_report}"
    );
    assert!(
        !text_report.contains("line 1: SHARE UPDATE EXCLUSIVE"),
        "the concurrent build blocks no writes: {text_report}"
    );

    let indexes: i64 = target
        .client()
        .await
        .query_one(
            "SELECT count(*) FROM pg_indexes WHERE indexname IN ('Message_userId_idx', 'Message_userId_createdAt_idx')",
            &[],
        )
        .await
        .expect("count indexes")
        .get(0);
    assert_eq!(indexes, 0, "the target has neither index");
    assert!(scratch_databases_of(&target).await.is_empty());
}

#[tokio::test]
async fn an_up_to_date_database_has_nothing_to_rehearse_and_no_copy_is_made() {
    let target = fresh_db().await;
    let out = run(&target, &common::migrations_dir(), &["rehearse"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    assert_eq!(
        stdout(&out),
        format!(
            "Nothing to rehearse: 127.0.0.1:5432/{} has no pending migration ({} found).\n",
            target.name,
            project_history().len()
        )
    );
    assert!(scratch_databases_of(&target).await.is_empty());
}

#[tokio::test]
async fn an_empty_database_rehearses_the_whole_history_and_stays_empty() {
    let target = empty_db().await;
    let out = run(&target, &common::migrations_dir(), &["rehearse", "--json"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let report = json(&out);
    assert_eq!(report["pending"], serde_json::json!(project_history()));
    assert_eq!(
        report["migrations"].as_array().map(Vec::len),
        Some(project_history().len())
    );
    assert!(report["notes"].as_array().expect("notes").iter().any(|n| n
        .as_str()
        .is_some_and(|n| n.starts_with("verify could not judge the plans"))));
    let tables = target
        .count("SELECT count(*) FROM pg_tables WHERE schemaname = 'public'")
        .await;
    assert_eq!(tables, 0);
    assert!(scratch_databases_of(&target).await.is_empty());
}

#[tokio::test]
async fn into_the_target_is_refused_however_the_url_spells_it() {
    let target = fresh_db().await;
    let dir = Migrations::with(&[ADD_EDITED_AT]);
    // `localhost` is caught by comparing URLs; `127.1` resolves to 127.0.0.1 but is not
    // recognised as local, so only the sighting of the target's session catches it.
    for into in [
        format!("postgres://postgres@localhost:5432/{}", target.name),
        format!(
            "postgres://postgres@127.1:5432/{}?sslmode=disable",
            target.name
        ),
    ] {
        let out = run(&target, &dir.path, &["rehearse", "--into", &into]);
        assert_eq!(out.status.code(), Some(1), "{}", text(&out));
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(
            err.contains("refusing to rehearse: --into `")
                && err.contains("is the target database itself"),
            "{into}: {err}"
        );
    }
    assert_eq!(column_type(&target, "Message", "editedAt").await, None);
    assert_eq!(history(&target).await, project_history());
}

#[tokio::test]
async fn into_a_branch_made_beforehand_runs_there_and_leaves_it_in_place() {
    let target = seeded_db().await;
    // What a Neon branch is: a copy of the target made beforehand, reached by its own URL.
    let branch = seeded_db().await;
    let dir = Migrations::with(&[ADD_EDITED_AT]);
    let into = format!(
        "postgres://postgres@127.1:5432/{}?sslmode=disable",
        branch.name
    );
    let out = run(&target, &dir.path, &["rehearse", "--into", &into]);
    let report = stdout(&out);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    assert!(report.contains("— given (--into)"), "{report}");
    assert!(
        report.contains("was given with --into and now holds the migrations: delete it"),
        "{report}"
    );
    assert_eq!(
        column_type(&branch, "Message", "editedAt").await.as_deref(),
        Some("timestamp")
    );
    assert!(history(&branch).await.contains(&ADD_EDITED_AT.0.to_owned()));
    assert_eq!(column_type(&target, "Message", "editedAt").await, None);
    assert_eq!(history(&target).await, project_history());
}

#[tokio::test]
async fn deploy_with_rehearse_applies_only_when_the_rehearsal_passes() {
    let target = seeded_db().await;
    let failing = Migrations::with(&[TAGLINE]);
    let out = run(&target, &failing.path, &["deploy", "--rehearse"]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(stdout(&out).contains("Verdict: FAIL"), "{}", text(&out));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains(&format!(
            "Error: the rehearsal failed; nothing was applied to 127.0.0.1:5432/{}.",
            target.name
        )),
        "{}",
        text(&out)
    );
    assert_eq!(column_type(&target, "Companion", "tagline").await, None);
    assert_eq!(history(&target).await, project_history());

    let harmless = Migrations::with(&[ADD_EDITED_AT]);
    let out = run(&target, &harmless.path, &["deploy", "--rehearse"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let printed = stdout(&out);
    let passed = printed.find("Verdict: PASS").expect("the verdict");
    let applied = printed
        .find("The following migration(s) have been applied")
        .unwrap_or_else(|| panic!("deploy's summary: {printed}"));
    assert!(passed < applied, "rehearsed before applying: {printed}");
    assert_eq!(
        column_type(&target, "Message", "editedAt").await.as_deref(),
        Some("timestamp")
    );
    assert!(history(&target).await.contains(&ADD_EDITED_AT.0.to_owned()));
    assert!(scratch_databases_of(&target).await.is_empty());

    let out = run(&target, &harmless.path, &["deploy", "--max-lock-ms", "5"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        String::from_utf8_lossy(&out.stderr)
            .contains("rehearsal options were given without --rehearse"),
        "{}",
        text(&out)
    );
}

#[tokio::test]
async fn a_backup_archive_and_a_schema_only_copy_are_rehearsed_too() {
    let target = seeded_db().await;
    let archive = std::env::temp_dir().join(format!("{}.dump", unique("gcbb_rehearse")));
    let out = gcbb()
        .env("DATABASE_URL", &target.url)
        .args(["db", "backup", "--out"])
        .arg(&archive)
        .output()
        .expect("run gcbb db backup");
    assert!(out.status.success(), "{}", text(&out));
    let dir = Migrations::with(&[RETYPE_ROLE]);

    let archive_arg = archive.to_string_lossy().into_owned();
    let out = run(
        &target,
        &dir.path,
        &[
            "rehearse",
            "--from-backup",
            &archive_arg,
            "--max-lock-ms",
            "50",
            "--json",
        ],
    );
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    let report = json(&out);
    assert_eq!(
        report["copy"]["made_by"],
        format!("pg_restore {archive_arg}")
    );
    assert_eq!(report["verdict"]["breaches"][0]["kind"], "lock_over_budget");
    assert_eq!(
        report["migrations"][0]["statements"][0]["rewrites"][0]["table"],
        "Message"
    );
    assert!(databases_like(&copy_name(&report)).await.is_empty());

    // Structure only: the rewrite is real even on empty tables, and judged by the target's size.
    let out = run(&target, &dir.path, &["rehearse", "--schema-only", "--json"]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    let report = json(&out);
    assert_eq!(
        report["copy"]["made_by"],
        "pg_dump --schema-only | pg_restore (+ the _prisma_migrations rows)"
    );
    assert_eq!(report["pending"], serde_json::json!([RETYPE_ROLE.0]));
    let breach = &report["verdict"]["breaches"][0];
    assert_eq!(breach["kind"], "rewrite_of_large_table");
    assert_eq!(breach["table"], "Message");
    assert!(breach["table_bytes"].as_i64() > Some(1 << 20));
    assert_eq!(report["verify"], Value::Null);
    assert!(databases_like(&copy_name(&report)).await.is_empty());

    assert_eq!(
        column_type(&target, "Message", "role").await.as_deref(),
        Some("Role")
    );
    assert_eq!(history(&target).await, project_history());
    let _ = std::fs::remove_file(&archive);
}

/// The longest wait of `role` (`reader_wait`/`writer_wait`) of a statement in a JSON report.
fn waited(statement: &Value, role: &str) -> f64 {
    statement[role]["ms"].as_f64().unwrap_or(0.0)
}

#[tokio::test]
async fn a_write_blocked_over_a_second_fails_by_default_naming_the_statement_and_its_concurrently_rewrite(
) {
    let target = seeded_db().await;
    let dir = Migrations::with(&[INDEX_HELD]);
    let out = run(&target, &dir.path, &["rehearse", "--json"]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    let report = json(&out);
    assert_eq!(report["workload"]["readers"], 2);
    assert_eq!(
        report["workload"]["writes"],
        serde_json::json!([
            "messages.insert",
            "companions.update_owned",
            "tokens.add_reply_tokens"
        ])
    );
    assert!(report["workload"]["queries_during"].as_u64() > Some(20));
    let index = &report["migrations"][0]["statements"][0];
    assert_eq!(index["locks"][0]["mode"], "SHARE");
    // Writers of "Message" waited for the whole transaction; readers were not blocked.
    assert!(waited(index, "writer_wait") > 1000.0, "{index}");
    assert!(waited(index, "reader_wait") < 1000.0, "{index}");
    let rewrite = "CREATE INDEX CONCURRENTLY IF NOT EXISTS \"Message_userId_idx\" ON \"Message\" USING btree (\"userId\")";
    assert_eq!(index["concurrently"], rewrite);
    let breaches = report["verdict"]["breaches"].as_array().expect("breaches");
    let lock = breaches
        .iter()
        .find(|b| b["kind"] == "lock_over_budget")
        .unwrap_or_else(|| panic!("the SHARE lock over 1 s fails by default: {breaches:?}"));
    assert_eq!(lock["mode"], "SHARE");
    assert_eq!(lock["budget_ms"], 1000);
    assert_eq!(lock["line"], 2);
    assert_eq!(lock["rewrite"], rewrite);
    let blocked = breaches
        .iter()
        .find(|b| b["kind"] == "query_blocked")
        .unwrap_or_else(|| panic!("the blocked writer fails too: {breaches:?}"));
    assert_eq!(blocked["role"], "writer");
    assert_eq!(blocked["budget_ms"], 1000);
    assert_eq!(blocked["lock"], "SHARE on \"Message\"");
    assert_eq!(blocked["lock_line"], 2);
    assert_eq!(blocked["rewrite"], rewrite);
    assert!(!breaches
        .iter()
        .any(|b| b["kind"] == "query_blocked" && b["role"] == "reader"));

    let out = run(&target, &dir.path, &["rehearse"]);
    let printed = stdout(&out);
    assert!(
        printed.contains(&format!("{}, line 2: SHARE on \"Message\"", INDEX_HELD.0))
            && printed.contains("over the budget of 1000 ms (it blocks writes)"),
        "{printed}"
    );
    assert!(
        printed.contains("a writer of the workload waited ")
            && printed.contains(&format!(
                "    rewrite (alone in a migration file of its own): {rewrite}"
            )),
        "{printed}"
    );
    // The target has nothing of it, and no copy is left.
    assert_eq!(history(&target).await, project_history());
    assert!(scratch_databases_of(&target).await.is_empty());
}

#[tokio::test]
async fn the_same_index_built_concurrently_blocks_no_reader_nor_writer() {
    let target = seeded_db().await;
    let dir = Migrations::with(&INDEX_CONCURRENTLY_THEN_WAIT);
    let out = run(&target, &dir.path, &["rehearse", "--json"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let report = json(&out);
    for run in report["migrations"].as_array().expect("runs") {
        for statement in run["statements"].as_array().expect("statements") {
            for role in ["reader_wait", "writer_wait"] {
                assert!(waited(statement, role) < 1000.0, "{statement}");
            }
        }
    }
    // The workload ran the whole time: during the wait file too, unblocked.
    let wait_file = &report["migrations"][1]["statements"][0];
    assert!(
        wait_file["writer_wait"]["ms"].as_f64().is_some(),
        "{wait_file}"
    );
    assert_eq!(report["verdict"]["passed"], true);
}

#[tokio::test]
async fn a_hot_query_the_migrations_break_is_reported_by_the_workload_not_a_crash() {
    let target = seeded_db().await;
    let rename = (
        "20990101000000_message_body",
        "-- gcbb:allow rename-column reviewed: the code reads \"body\" from this release\n\
         ALTER TABLE \"Message\" RENAME COLUMN \"content\" TO \"body\";\n",
    );
    // Time for every query of the workload to run against the renamed column.
    let wait = ("20990101000001_then_wait", "SELECT pg_sleep(1);\n");
    let dir = Migrations::with(&[rename, wait]);
    let out = run(&target, &dir.path, &["rehearse", "--json"]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    let report = json(&out);
    let errors = report["workload"]["errors"].as_array().expect("errors");
    let recent = errors
        .iter()
        .find(|e| e["query"] == "messages.recent")
        .unwrap_or_else(|| panic!("the broken read is reported: {errors:?}"));
    assert_eq!(recent["role"], "reader");
    assert_eq!(recent["before_migrations"], false);
    assert!(recent["failures"].as_u64() >= Some(1));
    // Sent while the rename's transaction held its lock, or after: never before the migrations.
    let first_seen = recent["first_seen"].as_str().unwrap_or_default();
    assert!(
        first_seen == format!("{}, line 2", rename.0)
            || first_seen == format!("{}, line 1", wait.0),
        "{first_seen}"
    );
    assert!(recent["first_error"]
        .as_str()
        .is_some_and(|e| e.contains("column \"content\" does not exist")));
    let insert = errors
        .iter()
        .find(|e| e["query"] == "messages.insert")
        .unwrap_or_else(|| panic!("the broken write is reported: {errors:?}"));
    assert_eq!(insert["role"], "writer");
    // After the run the same queries fail in the before/after timing and in verify, which fail
    // the verdict.
    let speed = report["speed"].as_array().expect("speed");
    let timed = speed
        .iter()
        .find(|q| q["query"] == "messages.recent")
        .expect("timed");
    assert!(timed["after"]["Err"].as_str().is_some(), "{timed}");
    assert!(report["verdict"]["breaches"]
        .as_array()
        .expect("breaches")
        .iter()
        .any(|b| b["kind"] == "verify_regressed"));
    let printed = stdout(&run(&target, &dir.path, &["rehearse"]));
    assert!(
        printed.contains("Queries of the workload that failed on the copy:")
            && printed.contains("messages.recent (reader) failed ")
            && printed.contains(" ran: ERROR: column \"content\" does not exist"),
        "{printed}"
    );
    assert_eq!(history(&target).await, project_history());
}

#[tokio::test]
async fn a_hot_query_that_loses_its_index_fails_with_both_timings_and_plans() {
    let target = seeded_db().await;
    let drop = (
        "20990101000000_drop_message_companion_indexes",
        "-- gcbb:allow drop-index-not-concurrently testing what the timing catches\n\
         DROP INDEX \"Message_companionId_userId_createdAt_idx\";\n\
         -- gcbb:allow drop-index-not-concurrently testing what the timing catches\n\
         DROP INDEX \"Message_companionId_userId_idx\";\n\
         -- gcbb:allow drop-index-not-concurrently testing what the timing catches\n\
         DROP INDEX \"Message_companionId_createdAt_idx\";\n\
         -- gcbb:allow drop-index-not-concurrently testing what the timing catches\n\
         DROP INDEX \"Message_companionId_idx\";\n",
    );
    let dir = Migrations::with(&[drop]);
    let out = run(&target, &dir.path, &["rehearse", "--json"]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    let report = json(&out);
    let recent = report["speed"]
        .as_array()
        .expect("speed")
        .iter()
        .find(|q| q["query"] == "messages.recent")
        .expect("messages.recent timed")
        .clone();
    let before = &recent["before"]["Ok"];
    let after = &recent["after"]["Ok"];
    assert!(before["runs"].as_u64() >= Some(3), "{recent}");
    assert!(
        before["plan"][0]
            .as_str()
            .is_some_and(|p| p.contains("Message_companionId_userId")),
        "{recent}"
    );
    assert!(
        after["plan"].as_array().expect("plan").iter().any(|p| p
            .as_str()
            .is_some_and(|p| p.contains("Seq Scan on \"Message\""))),
        "{recent}"
    );
    let breach = report["verdict"]["breaches"]
        .as_array()
        .expect("breaches")
        .iter()
        .find(|b| b["kind"] == "query_regressed" && b["query"] == "messages.recent")
        .unwrap_or_else(|| panic!("{}", text(&out)))
        .clone();
    assert_eq!(breach["before_ms"], before["median_ms"]);
    assert_eq!(breach["after_ms"], after["median_ms"]);
    assert_eq!(breach["before_plan"], before["plan"]);
    assert_eq!(breach["after_plan"], after["plan"]);
    assert!(breach["regressions"]
        .as_array()
        .expect("regressions")
        .iter()
        .any(|r| r["kind"] == "index_scan_turned_sequential" && r["relation"] == "Message"));
    let printed = stdout(&run(&target, &dir.path, &["rehearse"]));
    assert!(
        printed.contains("  hot query messages.recent: ")
            && printed.contains("\"Message\" was read through an index before and is read by a sequential scan after")
            && printed.contains("    plan before: ")
            && printed.contains("    plan after:  "),
        "{printed}"
    );
}

/// `gcbb db …` against the stand-in, off the test's runtime, which keeps closing the test's own
/// sessions meanwhile (a session left open on the target would stop the stand-in's copy of it).
async fn run_neon(
    target: &TestDb,
    dir: &Path,
    neon: &NeonStandIn,
    extra_env: &[(&str, &str)],
    args: &[&str],
) -> Output {
    let mut cmd = gcbb_db(target, dir);
    cmd.args(args);
    for (k, v) in neon.env() {
        cmd.env(k, v);
    }
    for (k, v) in extra_env {
        cmd.env(k, v);
    }
    tokio::task::spawn_blocking(move || cmd.output().expect("run gcbb"))
        .await
        .expect("join")
}

#[tokio::test]
async fn neon_branch_is_made_through_the_api_rehearsed_in_and_deleted_whether_the_rehearsal_passes_or_fails(
) {
    let target = seeded_db().await;
    let neon = NeonStandIn::start(&target).await;
    let dir = Migrations::with(&[ADD_EDITED_AT]);
    let out = run_neon(
        &target,
        &dir.path,
        &neon,
        &[],
        &["rehearse", "--neon-branch"],
    )
    .await;
    let printed = stdout(&out);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let (id, name) = {
        let created = neon
            .requests()
            .into_iter()
            .find(|r| r.method == "POST")
            .expect("a branch was created");
        assert_eq!(created.path, format!("/projects/{}/branches", neon.project));
        assert_eq!(created.authorization, Some(format!("Bearer {}", neon.key)));
        assert_eq!(
            created.body["endpoints"],
            serde_json::json!([{ "type": "read_write" }])
        );
        let name = created.body["branch"]["name"]
            .as_str()
            .expect("a name")
            .to_owned();
        assert!(
            name.starts_with(&format!("gcbb-rehearse-{}-", target.name.replace('_', "-"))),
            "{name}"
        );
        assert!(
            created.body["branch"].get("parent_id").is_none(),
            "the default branch is the parent"
        );
        let delete = neon
            .requests()
            .into_iter()
            .find(|r| r.method == "DELETE")
            .expect("the branch was deleted");
        let id = delete.path.rsplit('/').next().expect("an id").to_owned();
        (id, name)
    };
    let calls: Vec<String> = neon
        .requests()
        .iter()
        .map(|r| format!("{} {}", r.method, r.path.replace(&id, "{branch}")))
        .collect();
    let project = format!("/projects/{}", neon.project);
    assert_eq!(
        calls.first().map(String::as_str),
        Some(format!("POST {project}/branches").as_str())
    );
    assert!(
        calls
            .iter()
            .any(|c| c.starts_with(&format!("GET {project}/operations/op-"))),
        "{calls:?}"
    );
    assert_eq!(
        calls.last().map(String::as_str),
        Some(format!("DELETE {project}/branches/{{branch}}").as_str())
    );
    let uri = neon
        .requests()
        .into_iter()
        .find(|r| r.path.ends_with("/connection_uri"))
        .expect("the URI was read");
    assert_eq!(
        uri.query,
        format!(
            "branch_id={id}&database_name={}&pooled=false&role_name=postgres",
            target.name
        )
    );
    assert!(
        printed.contains(&format!(
            "— Neon branch {name} ({id}) of project {}, made through the Neon API",
            neon.project
        )) && printed.contains(&format!("The Neon branch {name} ({id}) was deleted.")),
        "{printed}"
    );
    assert!(printed.contains("Verdict: PASS"), "{printed}");
    assert!(neon.branches().is_empty());
    assert!(neon.branch_databases().await.is_empty());
    assert_eq!(column_type(&target, "Message", "editedAt").await, None);
    assert_eq!(history(&target).await, project_history());

    // A rehearsal that fails on the branch: the branch goes all the same.
    let failing = Migrations::with(&[TAGLINE]);
    let out = run_neon(
        &target,
        &failing.path,
        &neon,
        &[],
        &["rehearse", "--neon-branch", "--json"],
    )
    .await;
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    let report = json(&out);
    assert_eq!(report["copy"]["neon_branch"]["deleted"], true);
    assert_eq!(report["copy"]["kept"], false);
    assert!(neon.branches().is_empty());
    assert!(neon.branch_databases().await.is_empty());
    assert_eq!(column_type(&target, "Companion", "tagline").await, None);

    // Nothing pending: no branch is made at all.
    let before = neon.requests().len();
    let out = run_neon(
        &target,
        &common::migrations_dir(),
        &neon,
        &[],
        &["rehearse", "--neon-branch"],
    )
    .await;
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    assert!(stdout(&out).starts_with("Nothing to rehearse"));
    assert_eq!(neon.requests().len(), before);
}

#[tokio::test]
async fn a_neon_api_error_or_timeout_gives_a_clear_message_and_leaves_no_branch() {
    let target = seeded_db().await;
    let neon = NeonStandIn::start(&target).await;
    let dir = Migrations::with(&[ADD_EDITED_AT]);
    // How the API misbehaves, the environment of the run, what the error must say.
    type Case = (Mode, Vec<(&'static str, &'static str)>, Vec<String>);
    let cases: Vec<Case> = vec![
        (
            Mode::Normal,
            vec![("NEON_API_KEY", "napi_wrong")],
            vec![format!(
                "Error: Neon API: creating the branch: POST {}/projects/{}/branches answered 401 Unauthorized: authentication required",
                neon.url, neon.project
            )],
        ),
        (
            Mode::CreateFails(500),
            vec![],
            vec!["answered 500 Internal Server Error: branch creation failed".to_owned()],
        ),
        (
            Mode::CreateAnswersLate(Duration::from_secs(3)),
            vec![("NEON_API_TIMEOUT_MS", "800")],
            vec![
                "did not answer within 800 ms (NEON_API_TIMEOUT_MS)".to_owned(),
                "; the branch br-".to_owned(),
                " it made was found and deleted".to_owned(),
            ],
        ),
        (
            Mode::NeverReady,
            vec![("NEON_BRANCH_READY_TIMEOUT_MS", "1500")],
            vec![
                "the branch was not ready after 1 s".to_owned(),
                " was deleted".to_owned(),
            ],
        ),
        (
            Mode::UriFails,
            vec![],
            vec![
                "reading the branch's URL: GET ".to_owned(),
                "answered 500 Internal Server Error: internal error".to_owned(),
                " was deleted".to_owned(),
            ],
        ),
    ];
    for (mode, env, expected) in cases {
        neon.set_mode(mode);
        let out = run_neon(
            &target,
            &dir.path,
            &neon,
            &env,
            &["rehearse", "--neon-branch"],
        )
        .await;
        assert_eq!(out.status.code(), Some(1), "{mode:?}: {}", text(&out));
        let err = String::from_utf8_lossy(&out.stderr);
        for part in &expected {
            assert!(
                err.contains(part.as_str()),
                "{mode:?}: missing {part:?} in {err}"
            );
        }
        assert!(!err.contains(&neon.key), "the key is never shown: {err}");
        assert!(
            neon.branches().is_empty(),
            "{mode:?}: {:?}",
            neon.branches()
        );
        let left = neon.branch_databases().await;
        assert!(
            left.is_empty(),
            "{mode:?}: {left:?} {:?} {err}",
            neon.requests()
                .iter()
                .map(|r| format!("{} {}", r.method, r.path))
                .collect::<Vec<_>>()
        );
    }
    // Without the API key: the variable is named, nothing is called.
    let before = neon.requests().len();
    let out = gcbb()
        .env("DATABASE_URL", &target.url)
        .env("NEON_PROJECT_ID", &neon.project)
        .env("NEON_API_URL", &neon.url)
        .args(["db", "--migrations-dir"])
        .arg(&dir.path)
        .args(["rehearse", "--neon-branch"])
        .output()
        .expect("run");
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("NEON_API_KEY is required but not set"));
    assert_eq!(neon.requests().len(), before);
    assert_eq!(history(&target).await, project_history());
}

#[tokio::test]
async fn an_interrupted_rehearsal_in_a_neon_branch_deletes_the_branch() {
    let target = seeded_db().await;
    let neon = NeonStandIn::start(&target).await;
    let slow = ("20990101000000_slow", "SELECT pg_sleep(60);\n");
    let dir = Migrations::with(&[slow]);
    let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_gcbb"));
    cmd.current_dir(common::project_root())
        .env_remove("DIRECT_URL")
        .env_remove("DATABASE_URL_UNPOOLED")
        .env_remove("SHADOW_DATABASE_URL")
        .env("RUST_LOG", "warn")
        .env("DATABASE_URL", &target.url)
        .arg("db")
        .arg("--migrations-dir")
        .arg(&dir.path)
        .args(["rehearse", "--neon-branch"])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped());
    for (k, v) in neon.env() {
        cmd.env(k, v);
    }
    let child = cmd.spawn().expect("start gcbb");
    // Wait until the migration runs in the branch.
    let prefix = neon.prefix.clone();
    let admin = gcbb::db::connect(&common::server().with_dbname("postgres"))
        .await
        .expect("admin");
    let running = common::eventually(|| async {
        admin
            .query_one(
                "SELECT count(*) FROM pg_stat_activity WHERE starts_with(datname, $1) AND query LIKE 'SELECT pg_sleep(60)%'",
                &[&prefix],
            )
            .await
            .map(|r| r.get::<_, i64>(0) > 0)
            .unwrap_or(false)
    })
    .await;
    assert!(
        running,
        "the rehearsal never reached its migration: {:?}",
        neon.requests()
    );
    let killed = std::process::Command::new("kill")
        .args(["-INT", &child.id().to_string()])
        .status()
        .expect("kill");
    assert!(killed.success());
    let out = tokio::task::spawn_blocking(move || child.wait_with_output())
        .await
        .expect("join")
        .expect("wait");
    assert_eq!(out.status.code(), Some(130), "{}", text(&out));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("Error: interrupted: the rehearsal in the Neon branch gcbb-rehearse-")
            && err.contains("was stopped; the branch was deleted"),
        "{err}"
    );
    assert!(neon.requests().iter().any(|r| r.method == "DELETE"));
    assert!(neon.branches().is_empty());
    assert!(neon.branch_databases().await.is_empty());
    assert_eq!(history(&target).await, project_history());
}
