use super::super::measure::{LockHeld, Rewrite};
use super::*;

fn statement(mode: LockMode, held_ms: f64, bytes: i64, rules: Vec<&'static str>) -> StatementRun {
    StatementRun {
        line: 3,
        statement: "ALTER TABLE \"Message\" ALTER COLUMN \"role\" TYPE TEXT".to_owned(),
        ms: held_ms,
        rows: None,
        locks: vec![LockHeld {
            schema: "public".to_owned(),
            table: "Message".to_owned(),
            mode,
            blocks: mode.blocks(),
            held_ms,
            table_bytes: Some(bytes),
        }],
        rewrites: vec![Rewrite {
            schema: "public".to_owned(),
            table: "Message".to_owned(),
            table_bytes: Some(bytes),
            indexes_rebuilt: 5,
        }],
        indexes_built: Vec::new(),
        lint_rules: rules,
        error: None,
        started: None,
        reader_wait: None,
        writer_wait: None,
        concurrently: None,
    }
}

fn judge_runs(runs: &[MigrationRun], budget: &Budget, schema_only: bool) -> Verdict {
    judge(
        &Findings {
            runs,
            schema_only,
            lint_refusals: &[],
            verify_regressions: &[],
            speed: &[],
        },
        budget,
    )
}

fn run(statements: Vec<StatementRun>) -> Vec<MigrationRun> {
    vec![MigrationRun {
        name: "20990101000000_retype".to_owned(),
        transaction: true,
        ms: 1.0,
        applied: true,
        statements,
        error: None,
    }]
}

#[test]
fn an_access_exclusive_lock_over_budget_on_a_big_table_fails_with_the_lints_rewrite() {
    let runs = run(vec![statement(
        LockMode::AccessExclusive,
        412.0,
        24 << 20,
        vec!["alter-column-type"],
    )]);
    let verdict = judge_runs(&runs, &Budget::default(), false);
    assert!(!verdict.passed);
    let Breach::LockOverBudget { rewrote, safer, .. } = &verdict.breaches[0] else {
        panic!("{:?}", verdict.breaches)
    };
    assert!(rewrote);
    assert_eq!(safer[0].rule, Some("alter-column-type"));
    assert!(safer[0].fix.starts_with("add a column of the new type"));
}

#[test]
fn short_locks_small_tables_and_unbudgeted_modes_pass() {
    let budget = Budget::default();
    for s in [
        statement(LockMode::AccessExclusive, 299.0, 24 << 20, vec![]),
        statement(LockMode::AccessExclusive, 5000.0, 8192, vec![]),
        statement(LockMode::Share, 999.0, 24 << 20, vec![]),
        statement(LockMode::ShareUpdateExclusive, 60_000.0, 24 << 20, vec![]),
    ] {
        assert!(judge_runs(&run(vec![s]), &budget, false).passed);
    }
}

#[test]
fn a_write_blocking_lock_over_a_second_fails_by_default_with_the_concurrently_rewrite() {
    let mut s = statement(
        LockMode::Share,
        16_500.0,
        600 << 20,
        vec!["create-index-not-concurrently"],
    );
    s.rewrites.clear();
    s.concurrently = Some("CREATE INDEX CONCURRENTLY IF NOT EXISTS i ON t (c)".to_owned());
    let verdict = judge_runs(&run(vec![s]), &Budget::default(), false);
    let [Breach::LockOverBudget {
        budget_ms,
        rewrite,
        safer,
        ..
    }] = &verdict.breaches[..]
    else {
        panic!("{:?}", verdict.breaches)
    };
    assert_eq!(*budget_ms, DEFAULT_MAX_WRITE_LOCK_MS);
    assert_eq!(
        rewrite.as_deref(),
        Some("CREATE INDEX CONCURRENTLY IF NOT EXISTS i ON t (c)")
    );
    assert_eq!(safer[0].rule, Some("create-index-not-concurrently"));
}

#[test]
fn a_writer_blocked_behind_an_earlier_statements_lock_names_that_statement_and_its_lock() {
    let mut index = statement(
        LockMode::Share,
        900.0,
        64 << 10,
        vec!["create-index-not-concurrently"],
    );
    index.line = 9;
    index.rewrites.clear();
    index.concurrently = Some("CREATE INDEX CONCURRENTLY IF NOT EXISTS i ON t (c)".to_owned());
    index.writer_wait = Some(Waited {
        query: "messages.insert",
        ms: 800.0,
    });
    let mut later = statement(LockMode::Share, 0.0, 0, vec![]);
    later.line = 13;
    later.locks.clear();
    later.rewrites.clear();
    later.writer_wait = Some(Waited {
        query: "messages.insert",
        ms: 1500.0,
    });
    later.reader_wait = Some(Waited {
        query: "messages.recent",
        ms: 2.0,
    });
    let runs = run(vec![index, later]);
    let verdict = judge_runs(&runs, &Budget::default(), false);
    let [Breach::QueryBlocked {
        line,
        role,
        query,
        waited_ms,
        lock,
        lock_line,
        rewrite,
        ..
    }] = &verdict.breaches[..]
    else {
        panic!("{:?}", verdict.breaches)
    };
    assert_eq!(
        (*line, *role, query.as_str()),
        (13, Role::Writer, "messages.insert")
    );
    assert_eq!(*waited_ms, 1500.0);
    assert_eq!(lock.as_deref(), Some("SHARE on \"Message\""));
    assert_eq!(*lock_line, Some(9));
    assert!(rewrite
        .as_deref()
        .is_some_and(|r| r.contains("CONCURRENTLY")));
    // Within the budget: nothing.
    let relaxed = Budget {
        max_blocked_ms: 2000,
        ..Budget::default()
    };
    assert!(judge_runs(&runs, &relaxed, false).passed);
}

#[test]
fn a_hot_query_slower_after_the_migrations_fails_with_both_timings_and_plans() {
    use super::super::speed::Timing;
    let timing = |ms: f64, plan: &str| Timing {
        median_ms: ms,
        min_ms: ms,
        runs: 7,
        plan: vec![plan.to_owned()],
        indexed: Vec::new(),
        sequential: Vec::new(),
    };
    let q = QuerySpeed {
        query: "messages.recent",
        before: Ok(timing(0.4, "Index Scan using i on \"Message\"")),
        after: Ok(timing(120.0, "Seq Scan on \"Message\"")),
    };
    let speed = vec![(
        q,
        vec![Regression::IndexScanTurnedSequential {
            relation: "Message".to_owned(),
        }],
    )];
    let verdict = judge(
        &Findings {
            runs: &[],
            schema_only: false,
            lint_refusals: &[],
            verify_regressions: &[],
            speed: &speed,
        },
        &Budget::default(),
    );
    let [Breach::QueryRegressed {
        before_ms,
        after_ms,
        before_plan,
        after_plan,
        ..
    }] = &verdict.breaches[..]
    else {
        panic!("{:?}", verdict.breaches)
    };
    assert_eq!((*before_ms, *after_ms), (0.4, 120.0));
    assert_eq!(before_plan[0], "Index Scan using i on \"Message\"");
    assert_eq!(after_plan[0], "Seq Scan on \"Message\"");
}

#[test]
fn a_schema_only_rehearsal_fails_on_the_rewrite_of_a_big_table_whatever_its_time() {
    let runs = run(vec![statement(
        LockMode::AccessExclusive,
        1.0,
        24 << 20,
        vec![],
    )]);
    let verdict = judge_runs(&runs, &Budget::default(), true);
    assert!(matches!(
        &verdict.breaches[..],
        [Breach::RewriteOfLargeTable { safer, .. }] if safer[0].fix == REWRITE_ADVICE
    ));
}

#[test]
fn lint_refusals_and_verify_regressions_fail_the_verdict() {
    let with = |lint: &[String], verify: &[String]| {
        judge(
            &Findings {
                runs: &[],
                schema_only: false,
                lint_refusals: lint,
                verify_regressions: verify,
                speed: &[],
            },
            &Budget::default(),
        )
    };
    assert!(!with(&["x".to_owned()], &[]).passed);
    assert!(!with(&[], &["y".to_owned()]).passed);
    assert!(with(&[], &[]).passed);
}

#[test]
fn sizes_parse_and_print_as_postgres_writes_them() {
    assert_eq!(parse_size("1MB"), Ok(1 << 20));
    assert_eq!(parse_size("512kB"), Ok(512 << 10));
    assert_eq!(parse_size(" 2 GB "), Ok(2 << 30));
    assert_eq!(parse_size("8192"), Ok(8192));
    assert_eq!(parse_size("1.5MiB"), Ok(3 << 19));
    assert!(parse_size("lots").is_err());
    assert!(parse_size("1 parsec").is_err());
    assert_eq!(pretty_size(512), "512 bytes");
    assert_eq!(pretty_size(10 * 1024), "10 kB");
    assert_eq!(pretty_size(24 << 20), "24 MB");
    assert_eq!(pretty_size(3 << 30), "3072 MB");
}
