//! `gcbb db drift` against the real Postgres: every kind of hand-made difference prints Prisma's
//! line (and functions and triggers, which Prisma does not see, lines of the same shape); production's drift (indexes built by hand before a migration recorded them) prints the
//! lines Prisma printed for it, and writing the migration and resolving it closes the drift; the
//! shadow safety rules hold; and `deploy`/`lint` refuse destructive files.

use std::path::{Path, PathBuf};
use std::process::Output;

use crate::common::{self, fresh_db, gcbb_db, stderr, stdout, MigrationsDir, TestDb};

/// A shadow database for one test (its name holds `shadow`, as drift requires), dropped afterwards.
async fn shadow_db() -> TestDb {
    common::empty_db_named("gcbb_shadow").await
}

const INIT: &str = "20240101000000_init";

fn db_cmd(target: &TestDb, shadow: Option<&str>, dir: &Path, args: &[&str]) -> Output {
    let mut cmd = gcbb_db(target, dir);
    cmd.args(args);
    if let Some(shadow) = shadow {
        cmd.env("SHADOW_DATABASE_URL", shadow);
    }
    cmd.output().expect("run gcbb")
}

/// Runs drift on a fresh fully-migrated database changed by `sql`; returns the output.
async fn drift_after(sql: &str) -> Output {
    let target = fresh_db().await;
    target
        .client()
        .await
        .batch_execute(sql)
        .await
        .expect("change the database by hand");
    let shadow = shadow_db().await;
    let dir = common::migrations_dir();
    db_cmd(&target, Some(&shadow.url), &dir, &["drift"])
}

async fn table_count(client: &tokio_postgres::Client) -> i64 {
    client
        .query_one(
            "SELECT count(*) FROM pg_catalog.pg_class c JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace \
             WHERE n.nspname = 'public' AND c.relkind IN ('r', 'm', 'v')",
            &[],
        )
        .await
        .expect("count tables")
        .get(0)
}

#[tokio::test]
async fn a_freshly_migrated_database_has_no_drift_and_the_shadow_is_left_empty() {
    let target = fresh_db().await;
    let shadow = shadow_db().await;
    let out = db_cmd(
        &target,
        Some(&shadow.url),
        &common::migrations_dir(),
        &["drift"],
    );
    assert_eq!(
        stdout(&out),
        "No difference detected.\n",
        "{}",
        stderr(&out)
    );
    assert_eq!(out.status.code(), Some(0));
    assert_eq!(table_count(&shadow.client().await).await, 0);
    assert!(table_count(&target.client().await).await > 5);
}

#[tokio::test]
async fn the_seeds_hand_built_indexes_print_the_seeds_lines_and_the_resolution_path_closes_the_drift(
) {
    // Production's situation before the performance-indexes migration: a database migrated
    // without it, on which the indexes were then built by hand. UserBurnedTokens' index keys on an expression
    // (per-day usage), which Prisma cannot name: "on some columns".
    let dir = MigrationsDir::with_project(&[INIT]);
    let target = common::empty_db().await;
    gcbb_migrate::deploy(&target.config, &dir.path)
        .await
        .expect("migrate the target with init only");
    target
        .client()
        .await
        .batch_execute(
            "CREATE INDEX \"Companion_categoryId_private_idx\" ON \"Companion\"(\"categoryId\", \"private\");
             CREATE INDEX \"Companion_private_userId_createdAt_idx\" ON \"Companion\"(\"private\", \"userId\", \"createdAt\");
             CREATE INDEX \"Message_companionId_userId_idx\" ON \"Message\"(\"companionId\", \"userId\");
             CREATE INDEX \"UserBurnedTokens_userId_day_idx\" ON \"UserBurnedTokens\"(\"userId\", date_trunc('day', \"updatedAt\"));",
        )
        .await
        .expect("build the indexes by hand");
    let shadow = shadow_db().await;

    let out = db_cmd(&target, Some(&shadow.url), &dir.path, &["drift"]);
    assert_eq!(
        stdout(&out),
        "
[*] Changed the `Companion` table
  [+] Added index on columns (categoryId, private)
  [+] Added index on columns (private, userId, createdAt)

[*] Changed the `Message` table
  [+] Added index on columns (companionId, userId)

[*] Changed the `UserBurnedTokens` table
  [+] Added index on some columns

",
        "{}",
        stderr(&out)
    );
    assert_eq!(out.status.code(), Some(2));

    // Resolution: write the IF NOT EXISTS migration, mark it applied, drift is gone.
    let out = db_cmd(
        &target,
        Some(&shadow.url),
        &dir.path,
        &["drift", "--write-migration", "record hand-built indexes"],
    );
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    let written: Vec<PathBuf> = std::fs::read_dir(&dir.path)
        .expect("read dir")
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.to_string_lossy().ends_with("_record_hand_built_indexes"))
        .collect();
    assert_eq!(written.len(), 1, "one migration written: {written:?}");
    let name = written[0]
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .expect("dir name");
    let sql = std::fs::read_to_string(written[0].join("migration.sql")).expect("read it");
    assert_eq!(
        sql.matches("CREATE INDEX IF NOT EXISTS").count(),
        4,
        "{sql}"
    );
    assert!(
        sql.contains("date_trunc('day'::text, \"updatedAt\")"),
        "the exact definition is kept: {sql}"
    );
    let findings =
        gcbb_migrate::lint::lint_sql("written", &sql, &gcbb_migrate::lint::LintContext::default())
            .expect("the written file parses");
    assert!(
        findings.is_empty(),
        "the written file lints clean: {findings:?}"
    );
    assert!(stderr(&out).contains(&format!("gcbb db resolve --applied {name}")));

    let out = db_cmd(&target, None, &dir.path, &["resolve", "--applied", &name]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));

    let out = db_cmd(&target, Some(&shadow.url), &dir.path, &["drift"]);
    assert_eq!(
        stdout(&out),
        "No difference detected.\n",
        "{}",
        stderr(&out)
    );
    assert_eq!(out.status.code(), Some(0));

    let out = db_cmd(&target, None, &dir.path, &["status"]);
    assert!(
        stdout(&out).contains("Database schema is up to date!"),
        "{}",
        stdout(&out)
    );
    assert_eq!(out.status.code(), Some(0));
    let recorded: i64 = target
        .client()
        .await
        .query_one(
            "SELECT count(*) FROM _prisma_migrations WHERE migration_name = $1 AND finished_at IS NOT NULL",
            &[&name],
        )
        .await
        .expect("row")
        .get(0);
    assert_eq!(recorded, 1);
}

#[tokio::test]
async fn column_changes_print_prismas_column_lines() {
    let out = drift_after(
        "ALTER TABLE \"Companion\" ADD COLUMN \"mood\" text;
         ALTER TABLE \"Companion\" DROP COLUMN \"toolConfig\";
         ALTER TABLE \"Companion\" ALTER COLUMN \"customIntroduction\" SET NOT NULL;
         ALTER TABLE \"Companion\" ALTER COLUMN \"isFree\" SET DEFAULT false;
         ALTER TABLE \"Category\" ALTER COLUMN \"name\" TYPE varchar(100);",
    )
    .await;
    assert_eq!(
        stdout(&out),
        "
[*] Changed the `Category` table
  [*] Altered column `name` (type changed)

[*] Changed the `Companion` table
  [+] Added column `mood`
  [*] Altered column `isFree` (default changed from `Some(Value(Boolean(true)))` to `Some(Value(Boolean(false)))`)
  [*] Altered column `customIntroduction` (changed from Nullable to Required)
  [-] Removed column `toolConfig`

",
        "{}",
        stderr(&out)
    );
    assert_eq!(out.status.code(), Some(2));
}

#[tokio::test]
async fn index_changes_print_prismas_index_lines() {
    let out = drift_after(
        "CREATE UNIQUE INDEX \"Category_name_key\" ON \"Category\"(\"name\");
         DROP INDEX \"Message_companionId_idx\";
         ALTER INDEX \"GroupChat_creatorId_idx\" RENAME TO \"GroupChat_creator_idx\";
         CREATE INDEX \"Message_user_createdAt_idx\" ON \"Message\"(\"createdAt\") WHERE \"role\" = 'user';",
    )
    .await;
    assert_eq!(
        stdout(&out),
        "
[*] Changed the `Category` table
  [+] Added unique index on columns (name)

[*] Changed the `GroupChat` table
  [*] Renamed index `GroupChat_creatorId_idx` to `GroupChat_creator_idx`

[*] Changed the `Message` table
  [-] Removed index on columns (companionId)
  [+] Added index on columns (createdAt)

",
        "{}",
        stderr(&out)
    );
    assert_eq!(out.status.code(), Some(2));
}

#[tokio::test]
async fn key_changes_print_prismas_key_lines() {
    let out = drift_after(
        "ALTER TABLE \"UserBurnedTokens\" DROP CONSTRAINT \"UserBurnedTokens_companionId_fkey\";
         ALTER TABLE \"GroupMessage\" ADD CONSTRAINT \"GroupMessage_senderId_fkey\"
             FOREIGN KEY (\"senderId\") REFERENCES \"Companion\"(\"id\");
         ALTER TABLE \"GroupChatMember\" RENAME CONSTRAINT \"GroupChatMember_groupChatId_fkey\" TO \"GroupChatMember_group_fkey\";
         ALTER TABLE \"DashboardRefreshLog\" DROP CONSTRAINT \"DashboardRefreshLog_pkey\";
         ALTER TABLE \"Category\" RENAME CONSTRAINT \"Category_pkey\" TO \"Category_id_pkey\";",
    )
    .await;
    assert_eq!(
        stdout(&out),
        "
[*] Changed the `Category` table
  [*] Renamed the primary key on columns (id)

[*] Changed the `DashboardRefreshLog` table
  [-] Dropped the primary key on columns (id)

[*] Changed the `GroupChatMember` table
  [*] Renamed the foreign key \"GroupChatMember_groupChatId_fkey\" to \"GroupChatMember_group_fkey\"

[*] Changed the `GroupMessage` table
  [+] Added foreign key on columns (senderId)

[*] Changed the `UserBurnedTokens` table
  [-] Removed foreign key on columns (companionId)

",
        "{}",
        stderr(&out)
    );
    assert_eq!(out.status.code(), Some(2));
}

#[tokio::test]
async fn enums_tables_extensions_and_views_print_prismas_sections_in_prismas_order() {
    let out = drift_after(
        "CREATE EXTENSION citext;
         CREATE TYPE \"Mood\" AS ENUM ('calm', 'curious');
         ALTER TYPE \"Role\" ADD VALUE 'tool';
         CREATE TABLE \"Note\" (\"id\" TEXT PRIMARY KEY, \"body\" TEXT NOT NULL);
         DROP TABLE \"GroupMessage\";
         DROP MATERIALIZED VIEW \"CompanionCategoryCount\";
         CREATE VIEW \"RecentMessage\" AS SELECT \"id\" FROM \"Message\" ORDER BY \"createdAt\" DESC LIMIT 10;",
    )
    .await;
    assert_eq!(
        stdout(&out),
        "
[+] Added extensions
  - citext

[+] Added enums
  - Mood

[+] Added tables
  - Note

[-] Removed tables
  - GroupMessage

[-] Removed views

[*] Changed the `Role` enum
  [+] Added variant `tool`

[+] Added views
  - RecentMessage

",
        "{}",
        stderr(&out)
    );
    assert_eq!(out.status.code(), Some(2));
}

#[tokio::test]
async fn json_output_lists_the_steps() {
    let target = fresh_db().await;
    target
        .client()
        .await
        .batch_execute("ALTER TABLE \"Message\" ADD COLUMN \"x\" int")
        .await
        .expect("change");
    let shadow = shadow_db().await;
    let out = db_cmd(
        &target,
        Some(&shadow.url),
        &common::migrations_dir(),
        &["drift", "--json"],
    );
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).expect("JSON on stdout");
    assert_eq!(json["drift"], true);
    assert_eq!(json["steps"][0]["kind"], "alter_table");
    assert_eq!(json["steps"][0]["table"], "Message");
    assert_eq!(json["steps"][0]["changes"][0]["column"], "x");
    assert_eq!(out.status.code(), Some(2));
}

#[tokio::test]
async fn the_target_itself_is_never_used_as_the_shadow_even_with_force() {
    let target = fresh_db().await;
    let dir = common::migrations_dir();
    for args in [&["drift"][..], &["drift", "--force"][..]] {
        let out = db_cmd(&target, Some(&target.url), &dir, args);
        assert_eq!(out.status.code(), Some(1));
        assert!(
            stderr(&out).contains("it is the target database itself"),
            "{}",
            stderr(&out)
        );
    }
    let rows: i64 = target
        .client()
        .await
        .query_one("SELECT count(*) FROM _prisma_migrations", &[])
        .await
        .expect("history still there")
        .get(0);
    assert_eq!(rows, migration_count());
}

#[tokio::test]
async fn a_shadow_without_shadow_in_its_name_is_refused_without_force() {
    let target = fresh_db().await;
    let other = fresh_db().await; // named gcbb_test_…, holding a history
    let out = db_cmd(
        &target,
        Some(&other.url),
        &common::migrations_dir(),
        &["drift"],
    );
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr(&out).contains("does not contain `shadow`"),
        "{}",
        stderr(&out)
    );
    assert!(
        table_count(&other.client().await).await > 5,
        "nothing was dropped"
    );
}

#[tokio::test]
async fn a_shadow_holding_a_history_is_refused_unless_forced() {
    let target = fresh_db().await;
    let shadow = shadow_db().await;
    gcbb_migrate::deploy(
        &common::server().with_dbname(&shadow.name),
        &common::migrations_dir(),
    )
    .await
    .expect("give the shadow a history");
    let dir = common::migrations_dir();
    let out = db_cmd(&target, Some(&shadow.url), &dir, &["drift"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr(&out).contains(&format!(
            "holds a migration history ({} row(s)",
            migration_count()
        )),
        "{}",
        stderr(&out)
    );
    assert!(
        table_count(&shadow.client().await).await > 5,
        "nothing was dropped"
    );

    let out = db_cmd(&target, Some(&shadow.url), &dir, &["drift", "--force"]);
    assert_eq!(
        stdout(&out),
        "No difference detected.\n",
        "{}",
        stderr(&out)
    );
    assert_eq!(table_count(&shadow.client().await).await, 0);
}

#[tokio::test]
async fn drift_without_a_shadow_url_names_the_variable() {
    let target = fresh_db().await;
    let out = db_cmd(&target, None, &common::migrations_dir(), &["drift"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr(&out).contains("SHADOW_DATABASE_URL"),
        "{}",
        stderr(&out)
    );
}

const DESTRUCTIVE: &str = "29990101000000_drop_tool_config";

async fn has_column(target: &TestDb, table: &str, column: &str) -> bool {
    target
        .client()
        .await
        .query_opt(
            "SELECT 1 FROM information_schema.columns WHERE table_name = $1 AND column_name = $2",
            &[&table, &column],
        )
        .await
        .expect("look up column")
        .is_some()
}

async fn recorded(target: &TestDb, name: &str) -> i64 {
    target
        .client()
        .await
        .query_one(
            "SELECT count(*) FROM _prisma_migrations WHERE migration_name = $1",
            &[&name],
        )
        .await
        .expect("count rows")
        .get(0)
}

#[tokio::test]
async fn deploy_refuses_a_destructive_file_without_an_allow_comment_and_runs_it_with_one() {
    let target = fresh_db().await;
    let dir = MigrationsDir::with(&[]);
    let file = dir.write(
        DESTRUCTIVE,
        "ALTER TABLE \"Companion\" DROP COLUMN \"toolConfig\";\n",
    );

    let out = db_cmd(&target, None, &dir.path, &["deploy"]);
    assert_eq!(out.status.code(), Some(1));
    let err = stderr(&out);
    assert!(err.contains("error[drop-column]"), "{err}");
    assert!(err.contains(&format!("{}:1", file.display())), "{err}");
    assert!(err.contains("nothing was applied"), "{err}");
    assert!(has_column(&target, "Companion", "toolConfig").await);
    assert_eq!(recorded(&target, DESTRUCTIVE).await, 0);

    // The library deploy (used by `gcbb dev`) refuses too.
    let refused = gcbb_migrate::deploy(&target.config, &dir.path).await;
    assert!(
        matches!(
            refused,
            Err(gcbb_migrate::MigrateError::Lint { count: 1, .. })
        ),
        "{refused:?}"
    );
    assert!(has_column(&target, "Companion", "toolConfig").await);

    std::fs::write(
        &file,
        "-- gcbb:allow drop-column the column has been unused since the configs moved to their own table\n\
         ALTER TABLE \"Companion\" DROP COLUMN \"toolConfig\";\n",
    )
    .expect("add the allow comment");
    let out = db_cmd(&target, None, &dir.path, &["deploy"]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert!(stdout(&out).contains(DESTRUCTIVE));
    assert!(!has_column(&target, "Companion", "toolConfig").await);
    assert_eq!(recorded(&target, DESTRUCTIVE).await, 1);
}

#[tokio::test]
async fn lint_exits_1_on_errors_0_on_warnings_and_prints_the_catalog() {
    let target = fresh_db().await;
    let project = common::migrations_dir();
    let out = db_cmd(&target, None, &project, &["lint"]);
    assert_eq!(out.status.code(), Some(0), "{}", stdout(&out));
    assert!(stdout(&out).contains("0 error(s)"));

    let dir = MigrationsDir::empty();
    let bad = dir.write(DESTRUCTIVE, "DROP TABLE \"GroupMessage\";\n");
    let out = db_cmd(&target, None, &dir.path, &["lint"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stdout(&out).contains("error[drop-table]"),
        "{}",
        stdout(&out)
    );

    let warn_only = dir.write(
        "29990102000000_name_idx",
        "CREATE INDEX CONCURRENTLY \"Companion_name_idx\" ON \"Companion\"(\"name\");\n",
    );
    let out = db_cmd(
        &target,
        None,
        &dir.path,
        &["lint", &warn_only.display().to_string()],
    );
    assert_eq!(out.status.code(), Some(0), "{}", stdout(&out));
    assert!(stdout(&out).contains("warning[index-without-if-not-exists]"));
    let out = db_cmd(
        &target,
        None,
        &dir.path,
        &["lint", &bad.display().to_string()],
    );
    assert_eq!(out.status.code(), Some(1));

    let out = db_cmd(&target, None, &dir.path, &["lint", "--rules"]);
    assert_eq!(out.status.code(), Some(0));
    for rule in gcbb_migrate::lint::RULES {
        assert!(stdout(&out).contains(rule.id), "catalog lists {}", rule.id);
    }
}

/// How many migrations the project's history holds.
fn migration_count() -> i64 {
    std::fs::read_dir(common::migrations_dir())
        .expect("read the migrations directory")
        .filter_map(Result::ok)
        .filter(|e| e.path().join("migration.sql").is_file())
        .count() as i64
}

#[tokio::test]
async fn a_function_replaced_or_a_trigger_dropped_by_hand_is_drift() {
    let out = drift_after(
        "CREATE OR REPLACE FUNCTION gcbb_system_user_id() RETURNS text LANGUAGE sql STABLE AS $$ SELECT 'root' $$;\n\
         DROP TRIGGER \"Companion_deleted_bumps_privacy_epoch\" ON \"Companion\";\n\
         CREATE FUNCTION gcbb_hand_made(x int) RETURNS int LANGUAGE sql AS $$ SELECT x $$;",
    )
    .await;
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert_eq!(
        stdout(&out),
        "\n[*] Changed the `Companion` table\n  [-] Removed trigger `Companion_deleted_bumps_privacy_epoch`\n\
         \n[+] Added functions\n  - gcbb_hand_made(x integer)\n\
         \n[*] Changed the `gcbb_system_user_id()` function\n  [*] Redefined the function\n\n"
    );
}
