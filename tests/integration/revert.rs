//! `gcbb db revert` against the real Postgres: a deployed migration's revert is computed on the
//! shadow database, refused until the data it destroys is allowed with a reason, written as files
//! `deploy` runs (index drops and builds `CONCURRENTLY`, alone in their files), and once deployed
//! `drift` finds the database equal to the history without the migration. Bad input (a migration
//! not applied, unknown, failed, one that changed no schema, one later migrations depend on)
//! is refused with nothing written.

use std::path::Path;
use std::process::Output;

use crate::common::{
    assert_contains_all, empty_db, empty_db_named, fresh_db, gcbb, gcbb_db, text, MigrationsDir,
    TestDb,
};

fn db(target: &TestDb, shadow: Option<&TestDb>, dir: &Path, args: &[&str]) -> Output {
    let mut cmd = gcbb_db(target, dir);
    cmd.args(args);
    if let Some(shadow) = shadow {
        cmd.env("SHADOW_DATABASE_URL", &shadow.url);
    }
    cmd.output().expect("run gcbb")
}

/// `gcbb db drift` of `target` against the history in `dir` exits 0 and finds no difference.
fn assert_no_drift(target: &TestDb, shadow: &TestDb, dir: &Path) {
    let out = db(target, Some(shadow), dir, &["drift"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        "No difference detected.\n"
    );
}

async fn exists(target: &TestDb, sql: &str) -> bool {
    target.one(&format!("SELECT EXISTS ({sql})"), &[]).await
}

async fn shadow_is_empty(shadow: &TestDb) -> bool {
    !exists(
        shadow,
        "SELECT 1 FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace WHERE n.nspname = 'public'",
    )
    .await
}

/// A feature as a migration: a column, a table with its key, index, foreign key and trigger, a
/// view over it, a function, and an index of "Message" dropped.
const FEATURE: (&str, &str) = (
    "20990101000000_bookmarks",
    r#"ALTER TABLE "Message" ADD COLUMN "editedAt" TIMESTAMP(3);
CREATE TABLE "Bookmark" (
    "id" TEXT NOT NULL,
    "companionId" TEXT NOT NULL,
    "createdAt" TIMESTAMP(3) NOT NULL DEFAULT CURRENT_TIMESTAMP,
    CONSTRAINT "Bookmark_pkey" PRIMARY KEY ("id")
);
CREATE INDEX "Bookmark_companionId_idx" ON "Bookmark"("companionId");
ALTER TABLE "Bookmark" ADD CONSTRAINT "Bookmark_companionId_fkey" FOREIGN KEY ("companionId") REFERENCES "Companion"("id") ON DELETE CASCADE ON UPDATE CASCADE;
CREATE VIEW "RecentBookmark" AS SELECT "id", "companionId" FROM "Bookmark" WHERE "createdAt" > now() - interval '1 day';
CREATE FUNCTION gcbb_touch_bookmark() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN NEW."createdAt" := now(); RETURN NEW; END $$;
CREATE TRIGGER "Bookmark_touch" BEFORE UPDATE ON "Bookmark" FOR EACH ROW EXECUTE FUNCTION gcbb_touch_bookmark();
-- gcbb:allow drop-index-not-concurrently the bookmarks' index replaces it
DROP INDEX "Message_companionId_idx";
"#,
);

#[tokio::test]
async fn a_revert_computed_on_the_shadow_undoes_a_deployed_migration_and_drift_confirms_it() {
    let target = fresh_db().await;
    let shadow = empty_db_named("gcbb_shadow").await;
    let dir = MigrationsDir::with(&[FEATURE]);
    let out = db(&target, None, &dir.path, &["deploy"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    // Data written since the migration: what a revert would destroy.
    target
        .client()
        .await
        .batch_execute(
            "UPDATE \"Message\" SET \"editedAt\" = now() WHERE \"id\" IN (SELECT \"id\" FROM \"Message\" LIMIT 1)",
        )
        .await
        .expect("write since");

    // Without a reason for the data it destroys: refused, nothing written.
    let before = dir.names();
    let out = db(&target, Some(&shadow), &dir.path, &["revert", FEATURE.0]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    let err = String::from_utf8_lossy(&out.stderr);
    assert_contains_all(
        &err,
        &[
        "Error: refusing to revert: the revert of `20990101000000_bookmarks` is not written: 2 statement(s) break lint rules, 2 of them destroying data written since `20990101000000_bookmarks` was deployed:",
        "  ALTER TABLE \"Message\" DROP COLUMN \"editedAt\"  -- drop-column (destroys data)",
        "    -- gcbb:allow drop-column <reason: why the data written since may go>",
        "  DROP TABLE \"Bookmark\"  -- drop-table (destroys data)",
        "Nothing was written.",
        "gcbb db revert 20990101000000_bookmarks --allow drop-column=\"<reason>\" --allow drop-table=\"<reason>\"",
        ],
    );
    assert_eq!(dir.names(), before);
    assert!(shadow_is_empty(&shadow).await);

    // With the reasons: written, each above its statement.
    let out = db(
        &target,
        Some(&shadow),
        &dir.path,
        &[
            "revert",
            FEATURE.0,
            "--allow",
            "drop-column=editedAt was never shown to anyone",
            "--allow",
            "drop-table=bookmarks were a beta of a week",
        ],
    );
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let written: Vec<String> = dir
        .names()
        .into_iter()
        .filter(|n| !before.contains(n))
        .collect();
    assert_eq!(
        written,
        vec![
            "20990101000001_revert_bookmarks".to_owned(),
            "20990101000002_revert_bookmarks_create_message_companionid_idx".to_owned()
        ],
        "{}",
        text(&out)
    );
    let main = dir.sql(&written[0]);
    assert_contains_all(
        &main,
        &[
        "-- Written by `gcbb db revert 20990101000000_bookmarks` at ",
        "-- gcbb:allow drop-view created by 20990101000000_bookmarks, which this file reverts; a view holds no data of its own\nDROP VIEW \"RecentBookmark\";",
        "-- added by 20990101000000_bookmarks\n-- gcbb:allow drop-column editedAt was never shown to anyone\nALTER TABLE \"Message\" DROP COLUMN \"editedAt\";",
        "-- created by 20990101000000_bookmarks\n-- gcbb:allow drop-table bookmarks were a beta of a week\nDROP TABLE \"Bookmark\";",
        "DROP ROUTINE \"gcbb_touch_bookmark\"();",
        ],
    );
    assert!(
        main.find("DROP VIEW").expect("view") < main.find("DROP TABLE").expect("table"),
        "the view goes before the table it reads: {main}"
    );
    assert!(dir.sql(&written[1]).ends_with(
        "\nCREATE INDEX CONCURRENTLY IF NOT EXISTS \"Message_companionId_idx\" ON public.\"Message\" USING btree (\"companionId\");\n"
    ));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        stdout.contains("20990101000001_revert_bookmarks: DROP TABLE \"Bookmark\"")
            && stdout.contains(&format!(
                "Wrote {}",
                dir.path.join(&written[0]).join("migration.sql").display()
            )),
        "{stdout}"
    );
    assert!(shadow_is_empty(&shadow).await);

    // Linted like any file, and deployed like any file.
    let lint = gcbb()
        .args(["db", "lint"])
        .arg(dir.path.join(&written[0]))
        .arg(dir.path.join(&written[1]))
        .output()
        .expect("lint");
    assert_eq!(lint.status.code(), Some(0), "{}", text(&lint));
    let out = db(&target, None, &dir.path, &["deploy"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    assert!(
        !exists(
            &target,
            "SELECT 1 FROM pg_tables WHERE tablename = 'Bookmark'"
        )
        .await
    );
    assert!(
        !exists(
            &target,
            "SELECT 1 FROM information_schema.columns WHERE table_name = 'Message' AND column_name = 'editedAt'"
        )
        .await
    );
    assert!(
        exists(
            &target,
            "SELECT 1 FROM pg_indexes WHERE indexname = 'Message_companionId_idx'"
        )
        .await
    );

    // drift: the database now equals the history without the migration (nor its revert)…
    let without = MigrationsDir::with(&[]);
    assert_no_drift(&target, &shadow, &without.path);
    // …and the history with both replays to it too.
    assert_no_drift(&target, &shadow, &dir.path);
}

#[tokio::test]
async fn the_revert_of_a_migration_that_replaced_functions_brings_their_old_bodies_back() {
    // The history up to the migration, so no later one has replaced the functions again.
    let plans = "20261201000000_dashboard_search_plans";
    let target = empty_db().await;
    let shadow = empty_db_named("gcbb_shadow").await;
    let dir = MigrationsDir::up_to(plans, &[]);
    let out = db(&target, None, &dir.path, &["deploy"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let out = db(&target, Some(&shadow), &dir.path, &["revert", plans]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let name = dir
        .names()
        .into_iter()
        .find(|n| n.contains("_revert_dashboard_search_plans"))
        .expect("written");
    let sql = dir.sql(&name);
    assert!(
        sql.contains("CREATE OR REPLACE FUNCTION public.gcbb_count_dashboard(p_category_id text, p_name_contains text)\n RETURNS bigint\n LANGUAGE sql"),
        "{sql}"
    );
    let out = db(&target, None, &dir.path, &["deploy"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    // The functions are those of the history before it.
    let before = MigrationsDir::up_to("20261128000000_privacy_epoch", &[]);
    assert_no_drift(&target, &shadow, &before.path);
}

#[tokio::test]
async fn a_revert_of_what_is_not_applied_or_cannot_be_reverted_is_refused_and_writes_nothing() {
    let target = fresh_db().await;
    let shadow = empty_db_named("gcbb_shadow").await;
    let pending = (
        "20990101000000_pending",
        "ALTER TABLE \"Message\" ADD COLUMN \"x\" INTEGER;\n",
    );
    let data_only = (
        "20990101000001_data_only",
        "UPDATE \"Companion\" SET \"isFree\" = true WHERE \"id\" = 'nope';\n",
    );
    let dir = MigrationsDir::with(&[data_only]);
    let out = db(&target, None, &dir.path, &["deploy"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    dir.write(pending.0, pending.1);
    // A failed one: its row started, never finished.
    let failed = "20240615000000_failed";
    dir.write(failed, "SELECT 1;\n");
    target
        .client()
        .await
        .batch_execute(&format!(
            "INSERT INTO _prisma_migrations (id, checksum, migration_name, started_at) \
             VALUES ('00000000-0000-4000-8000-000000000001', 'x', '{failed}', now())"
        ))
        .await
        .expect("a failed row");
    let before = dir.names();
    for (args, expected) in [
        (
            vec!["revert", pending.0],
            format!(
                "Error: refusing to revert: `{}` is not applied to 127.0.0.1:5432/{}: it is pending: it never ran there",
                pending.0, target.name
            ),
        ),
        (
            vec!["revert", failed],
            format!("`{failed}` is not applied to 127.0.0.1:5432/{}: it failed", target.name),
        ),
        (
            vec!["revert", "20990101000009_nope"],
            "Error: P3017".to_owned(),
        ),
        (
            vec!["revert", data_only.0],
            "changed no schema (tables, columns, keys, indexes, views, functions, triggers, types, extensions): nothing to revert".to_owned(),
        ),
        (
            vec!["revert", "20261201000000_dashboard_search_plans", "--allow", "drop-table=just in case"],
            "--allow given for rule(s) no statement of the revert breaks: drop-table".to_owned(),
        ),
        (
            vec!["revert", "20240101000000_init", "--allow", "drop-table=start over"],
            "does not apply on top of the whole history (checked on the shadow database; a later migration may depend on what it drops); nothing was written".to_owned(),
        ),
        (
            vec!["revert", "20261201000000_dashboard_search_plans", "--allow", "drop-tabel=typo"],
            "`drop-tabel` is not a rule of `gcbb db lint --rules`".to_owned(),
        ),
    ] {
        let out = db(&target, Some(&shadow), &dir.path, &args);
        assert_eq!(out.status.code(), Some(if expected.contains("drop-tabel") { 2 } else { 1 }), "{args:?}: {}", text(&out));
        assert!(
            String::from_utf8_lossy(&out.stderr).contains(&expected),
            "{args:?}: missing {expected:?} in {}",
            text(&out)
        );
        assert_eq!(dir.names(), before, "{args:?} wrote something");
        assert!(shadow_is_empty(&shadow).await, "{args:?} left the shadow full");
    }
    // Without a shadow database it says which variable to set.
    let out = db(&target, None, &dir.path, &["revert", data_only.0]);
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr)
        .contains("no shadow database: set SHADOW_DATABASE_URL"));
    // The target itself is never the shadow.
    let out = db(
        &target,
        Some(&target),
        &dir.path,
        &["revert", data_only.0, "--force"],
    );
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("it is the target database itself"));
    assert_eq!(dir.names(), before);
}
