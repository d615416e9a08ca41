//! The linter against SQL fixtures (`tests/fixtures/lint/`) and inline files.

use std::path::{Path, PathBuf};

use super::*;

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/fixtures/lint")
}

fn read(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

fn lint(sql: &str) -> Vec<Finding> {
    lint_sql("m.sql", sql, &LintContext::default()).expect("the SQL parses")
}

/// (rule, line) of every finding, in order.
fn hits(findings: &[Finding]) -> Vec<(&'static str, usize)> {
    findings.iter().map(|f| (f.rule, f.line)).collect()
}

/// Every rule that statements can break, and the lines its `flagged.sql` fixture breaks it on.
const FLAGGED: &[(&str, &[usize])] = &[
    ("drop-table", &[2]),
    ("drop-column", &[1]),
    ("drop-schema", &[3]),
    ("drop-materialized-view", &[1]),
    ("drop-view", &[1]),
    ("drop-type", &[1]),
    ("truncate", &[2]),
    ("rename-table", &[1]),
    ("rename-column", &[1]),
    ("alter-column-type", &[1]),
    ("set-not-null", &[1]),
    ("add-column-not-null-without-default", &[1]),
    ("delete-without-where", &[1]),
    ("update-without-where", &[1]),
    ("create-index-not-concurrently", &[1]),
    ("drop-index-not-concurrently", &[1]),
    ("foreign-key-without-not-valid", &[1]),
    ("check-without-not-valid", &[1]),
    ("unique-constraint-not-using-index", &[1]),
    ("volatile-default", &[1, 2, 3, 4]),
    ("refresh-materialized-view-not-concurrently", &[1]),
    ("vacuum-full", &[1]),
    ("cluster", &[1]),
    ("index-without-if-not-exists", &[1]),
    ("transaction-control-in-file", &[1, 3]),
    ("concurrently-mixed-with-other-statements", &[3]),
];

#[test]
fn every_rule_flags_its_fixture_on_the_statements_first_line() {
    for (rule, lines) in FLAGGED {
        let path = fixtures().join("rules").join(rule).join("flagged.sql");
        let findings = lint_sql(rule, &read(&path), &LintContext::default()).expect("parses");
        let expected: Vec<(&str, usize)> = lines.iter().map(|&line| (*rule, line)).collect();
        assert_eq!(hits(&findings), expected, "{}", path.display());
    }
}

#[test]
fn every_safe_rewrite_passes_without_any_finding() {
    for (rule, _) in FLAGGED {
        let path = fixtures().join("rules").join(rule).join("safe.sql");
        let findings = lint_sql(rule, &read(&path), &LintContext::default()).expect("parses");
        assert!(findings.is_empty(), "{}: {findings:#?}", path.display());
    }
}

#[test]
fn every_statement_rule_of_the_catalog_has_fixtures() {
    for rule in RULES.iter().filter(|r| !rules::META_RULES.contains(&r.id)) {
        assert!(
            FLAGGED.iter().any(|(id, _)| *id == rule.id),
            "{} has no fixture",
            rule.id
        );
    }
}

#[test]
fn the_catalog_has_unique_kebab_case_ids_with_why_and_fix() {
    let mut ids: Vec<&str> = RULES.iter().map(|r| r.id).collect();
    for rule in RULES {
        assert!(
            rule.id
                .chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-'),
            "{}",
            rule.id
        );
        assert!(!rule.summary.is_empty() && !rule.why.is_empty() && !rule.fix.is_empty());
        assert_eq!(find_rule(rule.id), Some(rule));
    }
    ids.sort_unstable();
    ids.dedup();
    assert_eq!(ids.len(), RULES.len());
    assert_eq!(find_rule("no-such-rule"), None);
    assert_eq!(
        find_rule("index-without-if-not-exists").map(|r| r.severity),
        Some(Severity::Warning)
    );
}

#[test]
fn an_allow_with_a_reason_silences_its_rule() {
    let sql = "-- gcbb:allow drop-table replaced by UserBurnedTokens in release 41\nDROP TABLE \"TokenLog\";\n";
    assert_eq!(lint(sql), vec![]);
}

#[test]
fn an_allow_without_a_reason_is_an_error_and_silences_nothing() {
    let sql = "-- gcbb:allow drop-table\nDROP TABLE \"TokenLog\";\n";
    assert_eq!(
        hits(&lint(sql)),
        vec![("allow-without-reason", 1), ("drop-table", 2)]
    );
}

#[test]
fn an_allow_naming_an_unknown_rule_is_an_error() {
    let sql = "-- gcbb:allow drop-tables it is unused\nDROP TABLE \"TokenLog\";\n";
    let findings = lint(sql);
    assert_eq!(
        hits(&findings),
        vec![("unknown-rule", 1), ("drop-table", 2)]
    );
    assert!(findings[0].message.contains("drop-tables"));
    assert!(findings[0].is_error());
}

#[test]
fn an_allow_naming_no_rule_is_an_error() {
    assert_eq!(
        hits(&lint("-- gcbb:allow\nSELECT 1;\n")),
        vec![("unknown-rule", 1)]
    );
}

#[test]
fn an_allow_cannot_silence_the_allow_rules_themselves() {
    let sql =
        "-- gcbb:allow allow-without-reason because\n-- gcbb:allow drop-table\nDROP TABLE t;\n";
    assert_eq!(
        hits(&lint(sql)),
        vec![
            ("unknown-rule", 1),
            ("allow-without-reason", 2),
            ("drop-table", 3)
        ]
    );
}

#[test]
fn an_allow_for_another_rule_does_not_silence_and_is_reported_unused() {
    let sql = "-- gcbb:allow truncate old rows are worthless\nDROP TABLE \"TokenLog\";\n";
    let findings = lint(sql);
    assert_eq!(
        hits(&findings),
        vec![("unused-allow", 1), ("drop-table", 2)]
    );
    assert_eq!(findings[0].severity, Severity::Warning);
}

#[test]
fn stacked_allows_silence_several_rules_of_one_statement() {
    let sql = "\
-- Explains the change.
-- gcbb:allow drop-column \"greeting\" was never read
-- gcbb:allow alter-column-type varchar(200) to text is binary-compatible, no rewrite
ALTER TABLE \"Companion\"
  DROP COLUMN \"greeting\",
  ALTER COLUMN \"name\" TYPE TEXT;
";
    assert_eq!(lint(sql), vec![]);
}

#[test]
fn an_allow_applies_only_to_the_statement_right_below() {
    let sql = "\
-- gcbb:allow drop-table archived
DROP TABLE a;
DROP TABLE b;
-- gcbb:allow drop-table archived

DROP TABLE c;
";
    assert_eq!(
        hits(&lint(sql)),
        vec![("drop-table", 3), ("unused-allow", 4), ("drop-table", 6)]
    );
}

#[test]
fn an_allow_inside_a_block_comment_or_after_code_does_not_count() {
    let sql = "/* gcbb:allow drop-table archived */\nDROP TABLE a;\nSELECT 1; -- gcbb:allow drop-table archived\nDROP TABLE b;\n";
    let found = hits(&lint(sql));
    assert!(found.contains(&("drop-table", 2)), "{found:?}");
    assert!(found.contains(&("drop-table", 4)), "{found:?}");
}

#[test]
fn tables_created_in_the_same_file_are_exempt_from_lock_and_data_rules() {
    let sql = r#"
CREATE TABLE "Tag" ("id" TEXT NOT NULL, "name" TEXT);
CREATE INDEX "Tag_name_idx" ON public."Tag" ("name");
ALTER TABLE public."Tag" ADD COLUMN "slug" TEXT NOT NULL;
ALTER TABLE "Tag" ALTER COLUMN "name" SET NOT NULL;
ALTER TABLE "public"."Tag" ADD CONSTRAINT "Tag_pkey" PRIMARY KEY ("id");
ALTER TABLE "Tag" ADD CONSTRAINT "Tag_name_check" CHECK (length("name") > 0);
ALTER TABLE "Tag" ADD COLUMN "uid" UUID DEFAULT gen_random_uuid();
ALTER TABLE "Tag" ADD CONSTRAINT "Tag_fk" FOREIGN KEY ("name") REFERENCES "Category"("id");
CREATE MATERIALIZED VIEW "TagCount" AS SELECT count(*) FROM "Tag";
REFRESH MATERIALIZED VIEW "TagCount";
CREATE TABLE reporting.daily (day DATE);
CREATE INDEX daily_day_idx ON reporting.daily (day);
DROP INDEX reporting.daily_day_idx;
DROP TABLE reporting.daily;
"#;
    assert_eq!(lint(sql), vec![]);
}

#[test]
fn a_table_created_if_not_exists_may_already_hold_rows_so_is_not_exempt() {
    let sql = r#"CREATE TABLE IF NOT EXISTS "Tag" ("id" TEXT);
CREATE INDEX IF NOT EXISTS "Tag_id_idx" ON "Tag" ("id");
CREATE MATERIALIZED VIEW IF NOT EXISTS "TagCount" AS SELECT count(*) FROM "Tag";
REFRESH MATERIALIZED VIEW "TagCount";
"#;
    assert_eq!(
        hits(&lint(sql)),
        vec![
            ("create-index-not-concurrently", 2),
            ("refresh-materialized-view-not-concurrently", 4)
        ]
    );
}

#[test]
fn analyze_runs_in_a_transaction_so_it_mixes_with_other_statements() {
    assert_eq!(lint("ANALYZE \"Message\";\nSELECT 1;\n"), vec![]);
}

#[test]
fn names_resolve_like_postgres_case_and_schema() {
    // Unquoted names fold to lower case; quoted names keep it; no schema means public.
    let sql = r#"CREATE TABLE companion (id TEXT);
CREATE INDEX IF NOT EXISTS c_idx ON "Companion" (id);
CREATE INDEX IF NOT EXISTS c2_idx ON "companion" (id);
CREATE INDEX IF NOT EXISTS c3_idx ON public.COMPANION (id);
CREATE INDEX IF NOT EXISTS c4_idx ON other.companion (id);
"#;
    assert_eq!(
        hits(&lint(sql)),
        vec![
            ("create-index-not-concurrently", 2),
            ("create-index-not-concurrently", 5)
        ]
    );
}

#[test]
fn multi_line_statements_report_their_first_line() {
    let sql = "SELECT 1;\n\n-- a note\n/* block\n   comment */\nALTER TABLE\n  \"Companion\"\n  DROP COLUMN \"src\";\n";
    let findings = lint(sql);
    assert_eq!(hits(&findings), vec![("drop-column", 6)]);
    assert_eq!(
        findings[0].statement,
        "ALTER TABLE \"Companion\" DROP COLUMN \"src\""
    );
}

#[test]
fn comments_strings_and_dollar_quoted_bodies_do_not_shift_lines() {
    let sql = r#"-- DROP TABLE "Companion"; in a comment
/* TRUNCATE "Message"; in a block
   comment; spanning lines */
CREATE OR REPLACE FUNCTION refresh_dashboard() RETURNS void AS $body$
BEGIN
  -- a ; inside the body
  DELETE FROM "Message";
  RAISE NOTICE 'done; really';
END;
$body$ LANGUAGE plpgsql;
SELECT 'DROP TABLE x;
still a string';
DROP TABLE "Old";
"#;
    assert_eq!(hits(&lint(sql)), vec![("drop-table", 13)]);
}

#[test]
fn statements_sharing_a_line_each_report_it() {
    let sql = "SELECT 1;\nDROP TABLE a; TRUNCATE b;\n";
    assert_eq!(hits(&lint(sql)), vec![("drop-table", 2), ("truncate", 2)]);
}

#[test]
fn a_file_that_does_not_parse_is_an_error_with_the_statements_line() {
    let sql = "CREATE TABLE a (id INT);\n\n-- next\nALTER TABLE a\n  ADD COLUM b INT;\nSELECT 1;\n";
    match lint_sql("bad.sql", sql, &LintContext::default()) {
        Err(LintError::Parse {
            file,
            line,
            message,
        }) => {
            assert_eq!((file.as_str(), line), ("bad.sql", 4));
            assert!(message.contains("syntax error"), "{message}");
        }
        other => panic!("expected a parse error, got {other:?}"),
    }
}

#[test]
fn an_unterminated_string_is_an_error_on_the_line_it_opens() {
    let sql = "SELECT 1;\nSELECT 2;\nSELECT 'open\nand never closed;\n";
    let err = lint_sql("bad.sql", sql, &LintContext::default()).expect_err("must not parse");
    assert!(matches!(err, LintError::Parse { line: 3, .. }), "{err:?}");
    assert!(err.to_string().starts_with("bad.sql:3: "), "{err}");
}

#[test]
fn hostile_input_is_an_error_not_a_panic() {
    for sql in [
        "\0DROP TABLE a;",
        "$$",
        "CREATE FUNCTION f() AS $x$ ;",
        "\u{feff}ÿ;;;'",
    ] {
        assert!(
            lint_sql("x.sql", sql, &LintContext::default()).is_err(),
            "{sql:?}"
        );
    }
    assert_eq!(lint(""), vec![]);
    assert_eq!(lint("-- only a comment\n"), vec![]);
}

#[test]
fn a_finding_prints_file_line_rule_message_why_and_fix() {
    let findings = lint_sql(
        "migrations/x/migration.sql",
        "\nTRUNCATE \"Message\";",
        &LintContext::default(),
    )
    .expect("parses");
    let text = findings[0].to_string();
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(
        lines[0],
        "migrations/x/migration.sql:2: error[truncate]: truncates \"Message\""
    );
    assert_eq!(lines[1], "    statement: TRUNCATE \"Message\"");
    assert!(lines[2].starts_with("    why: removes every row"));
    assert!(lines[3].starts_with("    fix: delete the rows"));
}

#[test]
fn only_truly_volatile_defaults_are_flagged() {
    let sql = r#"CREATE FUNCTION new_code() RETURNS TEXT AS $$ SELECT md5(random()::text) $$ LANGUAGE sql;
CREATE FUNCTION fixed_code() RETURNS TEXT IMMUTABLE AS $$ SELECT 'x' $$ LANGUAGE sql;
ALTER TABLE "Companion" ADD COLUMN "a" TEXT DEFAULT new_code();
ALTER TABLE "Companion" ADD COLUMN "b" TEXT DEFAULT fixed_code();
ALTER TABLE "Companion" ADD COLUMN "c" TIMESTAMPTZ DEFAULT statement_timestamp();
ALTER TABLE "Companion" ADD COLUMN "d" TEXT DEFAULT COALESCE(NULL, pg_catalog.gen_random_uuid()::text);
ALTER TABLE "Companion" ADD COLUMN "e" BIGINT DEFAULT nextval('seq'::regclass);
ALTER TABLE "Companion" ADD COLUMN "f" INT GENERATED ALWAYS AS IDENTITY;
ALTER TABLE "Companion" ADD COLUMN "g" INT GENERATED ALWAYS AS ("tokensBurned" * 2) STORED;
"#;
    assert_eq!(
        hits(&lint(sql)),
        vec![
            ("volatile-default", 3),
            ("volatile-default", 6),
            ("volatile-default", 7),
            ("volatile-default", 8),
            ("volatile-default", 9)
        ]
    );
}

#[test]
fn before_postgres_11_any_added_default_rewrites() {
    let sql = "ALTER TABLE \"Companion\" ADD COLUMN \"rating\" INT DEFAULT 0;";
    let old = LintContext { server_major: 10 };
    let found = lint_sql("m.sql", sql, &old).expect("parses");
    assert_eq!(hits(&found), vec![("volatile-default", 1)]);
    assert_eq!(lint(sql), vec![]);
}

#[test]
fn inline_constraints_on_an_added_column_are_flagged() {
    let sql = r#"ALTER TABLE "Message" ADD COLUMN "groupId" TEXT REFERENCES "GroupChat"("id");
ALTER TABLE "Message" ADD COLUMN "n" INT CHECK ("n" > 0);
ALTER TABLE "Message" ADD COLUMN "slug" TEXT UNIQUE;
"#;
    assert_eq!(
        hits(&lint(sql)),
        vec![
            ("foreign-key-without-not-valid", 1),
            ("check-without-not-valid", 2),
            ("unique-constraint-not-using-index", 3)
        ]
    );
}

#[test]
fn vacuum_and_reindex_concurrently_count_as_non_transactional() {
    let sql = "VACUUM \"Message\";\nREINDEX INDEX CONCURRENTLY \"Message_pkey\";\n";
    assert_eq!(
        hits(&lint(sql)),
        vec![
            ("concurrently-mixed-with-other-statements", 1),
            ("concurrently-mixed-with-other-statements", 2)
        ]
    );
}

fn project_migrations() -> std::path::PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../migrations")
}

#[test]
fn the_projects_own_migrations_lint_clean() {
    let findings =
        lint_paths(&[project_migrations()], &LintContext::default()).expect("migrations parse");
    let shown: Vec<String> = findings.iter().map(|f| f.to_string()).collect();
    assert!(findings.is_empty(), "{}", shown.join("\n"));
}

#[test]
fn the_index_migration_without_its_allows_is_flagged_on_every_index() {
    let path = project_migrations().join("20250311000000_add_performance_indexes/migration.sql");
    let stripped: String = read(&path)
        .lines()
        .filter(|line| !line.starts_with("-- gcbb:allow"))
        .map(|line| format!("{line}\n"))
        .collect();
    let findings = lint(&stripped);
    assert_eq!(findings.len(), 11);
    assert!(findings
        .iter()
        .all(|f| f.rule == "create-index-not-concurrently"));
}

#[test]
fn lint_paths_reports_unreadable_paths() {
    let missing = fixtures().join("no-such-file.sql");
    assert!(matches!(
        lint_paths(&[missing], &LintContext::default()),
        Err(LintError::Read { .. })
    ));
}

/// Prints how long a 200-statement file takes (never asserted: timing is not a contract).
#[test]
fn a_two_hundred_statement_file_is_linted() {
    let mut sql = String::from("CREATE TABLE \"Fresh\" (\"id\" TEXT);\n");
    for i in 0..199 {
        sql.push_str(&format!(
            "-- gcbb:allow create-index-not-concurrently built by hand already\nCREATE INDEX IF NOT EXISTS \"i{i}\" ON \"Message\" (\"companionId\", \"createdAt\")\n  WHERE \"userId\" <> 'u{i}';\n"
        ));
    }
    let started = std::time::Instant::now();
    let findings = lint(&sql);
    eprintln!("linted 200 statements in {:?}", started.elapsed());
    assert_eq!(findings, vec![]);
}

#[test]
fn rules_by_statement_reports_what_an_allow_silences_and_knows_new_tables() {
    let sql = "CREATE TABLE \"T\" (id int);\n\
               CREATE INDEX \"T_id\" ON \"T\"(id);\n\
               -- gcbb:allow alter-column-type reviewed\n\
               ALTER TABLE \"Message\" ALTER COLUMN \"role\" TYPE TEXT;\n";
    assert!(lint(sql).is_empty(), "{:?}", lint(sql));
    let by_statement = rules_by_statement(sql, &LintContext::default()).expect("parses");
    let ids: Vec<(usize, Vec<&str>)> = by_statement
        .iter()
        .map(|s| (s.line, s.rules.iter().map(|r| r.id).collect()))
        .collect();
    assert_eq!(
        ids,
        vec![(1, vec![]), (2, vec![]), (4, vec!["alter-column-type"]),]
    );
}
