//! `gcbb db verify` on bench-seeded data (plans are only meaningful on realistic volumes), and
//! `gcbb db backup` / `deploy --backup` with the real `pg_dump`.

use std::path::PathBuf;
use std::process::Output;

use gcbb_cli::bench::seed::{self, Scale};

use crate::common::{fresh_db, gcbb, stderr, stdout, ScratchDir, TestDb};

/// Enough companions for the planner to prefer the dashboard's indexes; few messages, for speed.
const VERIFY_SCALE: Scale = Scale {
    companions: 2_000,
    messages: 5_000,
    group_chats: 100,
    users: 200,
};

async fn seeded_db() -> TestDb {
    let db = fresh_db().await;
    let mut client = db.client().await;
    seed::seed(&mut client, VERIFY_SCALE, "system", false)
        .await
        .expect("seed the database");
    db
}

fn run(db: &TestDb, args: &[&str]) -> Output {
    gcbb()
        .env("DATABASE_URL", &db.url)
        .arg("db")
        .args(args)
        .output()
        .expect("run gcbb")
}

#[tokio::test]
async fn verify_passes_on_seeded_data_and_names_the_query_whose_index_was_dropped() {
    let db = seeded_db().await;
    let out = run(&db, &["verify"]);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}{}",
        stdout(&out),
        stderr(&out)
    );
    for q in gcbb::db::hot_queries() {
        assert!(
            stdout(&out).contains(&format!("ok: {}", q.name)),
            "{}",
            stdout(&out)
        );
    }

    db.client()
        .await
        .batch_execute("DROP INDEX \"CompanionDashboard_isSystem_createdAt_id_idx\"")
        .await
        .expect("drop the index");
    let out = run(&db, &["verify"]);
    assert_eq!(out.status.code(), Some(1));
    let err = stderr(&out);
    assert!(
        err.contains("hot query `dashboard.public_page` does not use index `CompanionDashboard_isSystem_createdAt_id_idx`; plan node: "),
        "{err}"
    );
    assert!(
        err.contains("on \"CompanionDashboard\""),
        "the plan node is shown: {err}"
    );
    assert!(
        err.contains("missing index `CompanionDashboard_isSystem_createdAt_id_idx`"),
        "{err}"
    );
    assert!(stdout(&out).contains("ok: dashboard.public_page_by_category"));

    let out = run(&db, &["verify", "--json"]);
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).expect("JSON");
    let regressed: Vec<&serde_json::Value> = json["problems"]
        .as_array()
        .expect("problems")
        .iter()
        .filter(|p| p["kind"] == "plan_regressed")
        .collect();
    assert!(regressed
        .iter()
        .any(|p| p["query"] == "dashboard.public_page"));
}

#[tokio::test]
async fn dropping_any_index_of_the_seed_fails_verify_naming_the_index_and_its_queries() {
    let db = seeded_db().await;
    let client = db.client().await;
    let seed = crate::common::migrations_dir().join("20250311000000_add_performance_indexes");
    let declared = gcbb_migrate::verify::declared_indexes(&crate::common::migrations_dir())
        .expect("read the migrations");
    let seed_indexes: Vec<_> = declared
        .iter()
        .filter(|d| d.migration == "20250311000000_add_performance_indexes")
        .collect();
    assert_eq!(seed_indexes.len(), 11, "{seed:?}: {declared:?}");
    for index in seed_indexes {
        let definition: String = client
            .query_one(
                "SELECT pg_get_indexdef(to_regclass($1))",
                &[&format!("\"{}\"", index.name)],
            )
            .await
            .expect("the index exists")
            .get(0);
        client
            .batch_execute(&format!("DROP INDEX \"{}\"", index.name))
            .await
            .expect("drop the index");
        let out = run(&db, &["verify"]);
        assert_eq!(
            out.status.code(),
            Some(1),
            "{}: {}",
            index.name,
            stdout(&out)
        );
        let err = stderr(&out);
        assert!(
            err.contains(&format!(
                "index `{}` on `{}`, created by migration `20250311000000_add_performance_indexes`, is missing",
                index.name, index.table
            )),
            "{err}"
        );
        if index.name == "Message_companionId_userId_createdAt_idx" {
            assert!(
                err.contains("hot queries that need it: messages.history_page, messages.recent"),
                "{err}"
            );
        }
        client.batch_execute(&definition).await.expect("rebuild it");
    }
    let out = run(&db, &["verify"]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
}

#[tokio::test]
async fn verify_reports_invalid_indexes_and_unpopulated_views() {
    let db = seeded_db().await;
    db.client()
        .await
        .batch_execute(
            "UPDATE pg_index SET indisvalid = false WHERE indexrelid = '\"Companion_name_trgm_idx\"'::regclass;
             REFRESH MATERIALIZED VIEW \"CompanionCategoryCount\" WITH NO DATA;",
        )
        .await
        .expect("break things");
    let out = run(&db, &["verify"]);
    assert_eq!(out.status.code(), Some(1));
    let err = stderr(&out);
    assert!(
        err.contains("index `Companion_name_trgm_idx` is not usable (indisvalid = false"),
        "{err}"
    );
    assert!(
        err.contains("materialized view `CompanionCategoryCount` is not populated"),
        "{err}"
    );
}

#[tokio::test]
async fn verify_refuses_to_judge_plans_on_an_empty_database() {
    let db = fresh_db().await;
    let out = run(&db, &["verify"]);
    assert_eq!(out.status.code(), Some(1));
    let err = stderr(&out);
    assert!(err.contains("`Companion` has 0 rows"), "{err}");
    assert!(err.contains("gcbb bench seed"), "{err}");
    assert!(!stdout(&out).contains("ok: "), "no plan was judged");
}

fn temp_dir() -> ScratchDir {
    ScratchDir::new("gcbb_backup")
}

fn restore_list(archive: &std::path::Path) -> String {
    let out = std::process::Command::new("pg_restore")
        .arg("--list")
        .arg(archive)
        .output()
        .expect("run pg_restore");
    assert!(out.status.success(), "pg_restore --list: {}", stderr(&out));
    stdout(&out)
}

#[tokio::test]
async fn a_backup_is_a_custom_format_archive_of_the_database() {
    let db = fresh_db().await;
    let dir = temp_dir();
    let file = dir.join("nested").join("x.dump");
    let out = run(&db, &["backup", "--out", &file.display().to_string()]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let list = restore_list(&file);
    assert!(list.contains("TABLE public Companion"), "{list}");
    assert!(
        list.contains("MATERIALIZED VIEW public CompanionDashboard"),
        "{list}"
    );
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test]
async fn deploy_with_backup_writes_the_archive_under_backups_first() {
    let db = fresh_db().await;
    let dir = temp_dir();
    let out = gcbb()
        .current_dir(&dir)
        .env("DATABASE_URL", &db.url)
        .args(["db", "--migrations-dir"])
        .arg(crate::common::migrations_dir())
        .args(["deploy", "--backup"])
        .output()
        .expect("run gcbb");
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let dumps: Vec<PathBuf> = std::fs::read_dir(dir.join("backups"))
        .expect("backups dir")
        .filter_map(|e| e.ok().map(|e| e.path()))
        .collect();
    assert_eq!(dumps.len(), 1);
    let name = dumps[0]
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    assert!(
        name.starts_with(&format!("{}-", db.name)) && name.ends_with("Z.dump"),
        "{name}"
    );
    assert!(restore_list(&dumps[0]).contains("TABLE public Message"));
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test]
async fn a_missing_pg_dump_is_a_clear_error_and_leaves_no_file() {
    let db = fresh_db().await;
    let dir = temp_dir();
    let empty_path = dir.join("empty-bin");
    std::fs::create_dir_all(&empty_path).expect("empty PATH dir");
    let file = dir.join("x.dump");
    let out = gcbb()
        .env("PATH", &empty_path)
        .env("DATABASE_URL", &db.url)
        .args(["db", "backup", "--out"])
        .arg(&file)
        .output()
        .expect("run gcbb");
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr(&out).contains("`pg_dump` was not found on PATH"),
        "{}",
        stderr(&out)
    );
    assert!(!file.exists());
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test]
async fn verify_explains_the_search_path_and_fails_when_a_search_would_scan() {
    let db = seeded_db().await;
    let out = run(&db, &["verify"]);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}{}",
        stdout(&out),
        stderr(&out)
    );
    for name in [
        "dashboard.public_page_search",
        "dashboard.public_page_search_by_category",
        "dashboard.count_search",
        "dashboard.count_search_by_category",
    ] {
        assert!(
            stdout(&out).contains(&format!("ok: {name}")),
            "{}",
            stdout(&out)
        );
    }

    db.client()
        .await
        .batch_execute("DROP INDEX \"CompanionDashboard_name_trgm_idx\"")
        .await
        .expect("drop the trigram index");
    let out = run(&db, &["verify"]);
    assert_eq!(out.status.code(), Some(1));
    let err = stderr(&out);
    assert!(
        err.contains(
            "hot query `dashboard.count_search` does not use index `CompanionDashboard_name_trgm_idx`; \
             plan node: Seq Scan on \"CompanionDashboard\""
        ),
        "{err}"
    );
}

#[tokio::test]
async fn verify_fails_when_the_count_function_no_longer_plans_each_search_with_its_pattern() {
    let db = seeded_db().await;
    // The function as it was: a SQL function, planned without the pattern, scanning every row.
    db.client()
        .await
        .batch_execute(
            "CREATE OR REPLACE FUNCTION gcbb_count_dashboard(p_category_id text, p_name_contains text)
             RETURNS bigint LANGUAGE sql STABLE AS $$
             SELECT count(*) FROM \"CompanionDashboard\"
             WHERE (p_category_id IS NULL OR \"categoryId\" = p_category_id)
               AND (p_name_contains IS NULL OR \"name\" ILIKE '%' || p_name_contains || '%')
             $$",
        )
        .await
        .expect("replace the function");
    let out = run(&db, &["verify"]);
    assert_eq!(out.status.code(), Some(1), "{}", stdout(&out));
    let err = stderr(&out);
    assert!(
        err.contains(&format!(
            "function `gcbb_count_dashboard` no longer runs `{}`",
            gcbb::db::companions::COUNT_SEARCH_SQL
        )),
        "{err}"
    );
}
