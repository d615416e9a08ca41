//! `gcbb bench seed` and `gcbb bench chat` as the processes they are: what they print when their
//! output is a file, and what they leave in the database.

use gcbb_cli::bench::chat::Fingerprint;
use gcbb_cli::bench::seed::{self, Scale};

use crate::common::{eventually, fresh_db, gcbb, TestDb};

async fn count(db: &TestDb, sql: &str) -> i64 {
    db.client().await.query_one(sql, &[]).await.unwrap().get(0)
}

#[tokio::test]
async fn bench_seed_into_a_file_prints_plain_progress_to_the_exact_total_and_ends_vacuumed() {
    let db = fresh_db().await;
    let out = gcbb()
        .env("DATABASE_URL", &db.url)
        .args(["bench", "seed", "--scale", "tiny"])
        .output()
        .expect("run gcbb bench seed");
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert_eq!(out.status.code(), Some(0), "{stdout}{stderr}");
    assert!(
        !stdout.contains('\u{1b}') && !stderr.contains('\u{1b}'),
        "no control codes in output that isn't a terminal: {stderr:?}"
    );
    assert!(stderr.contains("seed: loading Companion"), "{stderr}");
    assert!(
        stderr.contains("seed: VACUUM ANALYZE"),
        "the seed says it vacuums: {stderr}"
    );

    // The progress counts every row it loads, and ends at exactly that many.
    let loaded = count(
        &db,
        "SELECT (SELECT count(*) FROM \"Category\") + (SELECT count(*) FROM \"Companion\") \
         + (SELECT count(*) FROM \"Message\") + (SELECT count(*) FROM \"GroupChat\") \
         + (SELECT count(*) FROM \"GroupChatMember\") + (SELECT count(*) FROM \"GroupMessage\") \
         + (SELECT count(*) FROM \"UserBurnedTokens\")",
    )
    .await;
    let last = stderr
        .lines()
        .rfind(|l| l.ends_with(" %)"))
        .unwrap_or_else(|| panic!("no progress line: {stderr}"));
    assert_eq!(last, format!("seed: {loaded} of {loaded} rows (100 %)"));

    let vacuumed = "SELECT count(*) FROM pg_stat_user_tables \
                    WHERE relname IN ('Companion', 'Message', 'CompanionDashboard') \
                    AND last_vacuum IS NOT NULL";
    assert!(
        eventually(|| async { count(&db, vacuumed).await == 3 }).await,
        "the seeded tables were vacuumed"
    );
}

#[tokio::test]
async fn bench_chat_leaves_the_bench_database_as_it_found_it() {
    let db = fresh_db().await;
    let mut client = db.client().await;
    seed::seed(&mut client, Scale::TINY, "system", false)
        .await
        .expect("seed the database");
    let newest = "SELECT id FROM \"Companion\" ORDER BY \"createdAt\" DESC, id LIMIT 1";
    let newest_before: String = client.query_one(newest, &[]).await.unwrap().get(0);
    let before = Fingerprint::read(&client).await.unwrap();

    let out = gcbb()
        .env("DATABASE_URL", &db.url)
        .args(["bench", "chat", "--requests", "3", "--streams", "3"])
        .args(["--ttft-ms", "1"])
        .output()
        .expect("run gcbb bench chat");
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert_eq!(out.status.code(), Some(0), "{stdout}{stderr}");
    assert!(stdout.contains("database left as found: yes"), "{stdout}");

    let after = Fingerprint::read(&client).await.unwrap();
    assert_eq!(before.differences(&after), Vec::<String>::new());
    let newest_after: String = client.query_one(newest, &[]).await.unwrap().get(0);
    assert_eq!(
        newest_after, newest_before,
        "no companion became the newest"
    );
    assert_eq!(
        count(
            &db,
            "SELECT count(*) FROM \"Message\" WHERE \"userId\" = 'user_bench_chat'"
        )
        .await,
        0
    );
}
