use super::super::measure::{LockHeld, LockMode, Rewrite};
use super::super::speed::QuerySpeed;
use super::super::verdict::{judge, Budget, Findings};
use super::super::{CopyReport, RehearsalReport, SpeedRow};
use super::*;

fn timing(ms: f64, plan: &str) -> super::super::speed::Timing {
    super::super::speed::Timing {
        median_ms: ms,
        min_ms: ms,
        runs: 7,
        plan: vec![plan.to_owned()],
        indexed: Vec::new(),
        sequential: Vec::new(),
    }
}

fn report() -> RehearsalReport {
    let statement = StatementRun {
        line: 2,
        statement: "ALTER TABLE \"Message\" ALTER COLUMN \"role\" TYPE TEXT".to_owned(),
        ms: 644.0,
        rows: None,
        locks: vec![LockHeld {
            schema: "public".to_owned(),
            table: "Message".to_owned(),
            mode: LockMode::AccessExclusive,
            blocks: LockMode::AccessExclusive.blocks(),
            held_ms: 680.0,
            table_bytes: Some(23 << 20),
        }],
        rewrites: vec![Rewrite {
            schema: "public".to_owned(),
            table: "Message".to_owned(),
            table_bytes: Some(23 << 20),
            indexes_rebuilt: 5,
        }],
        indexes_built: Vec::new(),
        lint_rules: vec!["alter-column-type"],
        error: None,
        started: None,
        reader_wait: Some(super::super::measure::Waited {
            query: "messages.recent",
            ms: 671.0,
        }),
        writer_wait: Some(super::super::measure::Waited {
            query: "messages.insert",
            ms: 1234.5,
        }),
        concurrently: None,
    };
    let migrations = vec![MigrationRun {
        name: "20990101000000_role_as_text".to_owned(),
        transaction: true,
        ms: 680.0,
        applied: true,
        statements: vec![statement],
        error: None,
    }];
    let budget = Budget::default();
    RehearsalReport {
        target: "127.0.0.1:5432/app".to_owned(),
        schema_only: false,
        budget,
        found: 4,
        pending: vec!["20990101000000_role_as_text".to_owned()],
        copy: Some(CopyReport {
            database: "127.0.0.1:5432/gcbb_rehearse_app_0123456789ab".to_owned(),
            made_by: "pg_dump | pg_restore".to_owned(),
            seconds: 3.9,
            kept: false,
            given: false,
            neon_branch: None,
        }),
        verdict: judge(
            &Findings {
                runs: &migrations,
                schema_only: false,
                lint_refusals: &[],
                verify_regressions: &[],
                speed: &[],
            },
            &budget,
        ),
        workload: Some(WorkloadReport {
            readers: 2,
            writes: vec!["messages.insert", "companions.update_owned"],
            queries_during: 62,
            usual: Vec::new(),
            errors: Vec::new(),
        }),
        speed: vec![
            SpeedRow {
                speed: QuerySpeed {
                    query: "messages.recent",
                    before: Ok(timing(0.4, "Index Scan using Message_role_idx on \"Message\"")),
                    after: Ok(timing(0.5, "Index Scan using Message_companionId_userId_createdAt_idx on \"Message\"")),
                },
                regressions: Vec::new(),
            },
            SpeedRow {
                speed: QuerySpeed {
                    query: "dashboard.public_page",
                    before: Err("ERROR: relation \"CompanionDashboard\" does not exist".to_owned()),
                    after: Ok(timing(1.25, "Index Scan using CompanionDashboard_isSystem_createdAt_id_idx on \"CompanionDashboard\"")),
                },
                regressions: Vec::new(),
            },
        ],
        migrations,
        lint_refusals: Vec::new(),
        verify: None,
        verify_regressions: Vec::new(),
        drift: None,
        notes: Vec::new(),
    }
}

#[test]
fn a_report_shows_a_row_per_statement_and_each_breach_with_its_safer_rewrite() {
    let text = render_text(&report());
    let expected = "\
Rehearsal of 1 pending migration for 127.0.0.1:5432/app
Copy: 127.0.0.1:5432/gcbb_rehearse_app_0123456789ab — pg_dump | pg_restore, 3.9 s
Workload beside the run: 2 readers looping the hot queries, 2 writers in transactions rolled back (messages.insert, companions.update_owned); 62 queries sent while the migrations ran
(new lock: the strongest lock a statement took that its transaction did not hold yet; held: from the statement's start until its transaction ended; readers, writers: the longest a query of the workload sent while the statement ran waited)

20990101000000_role_as_text (one transaction, committed after 680 ms)
  line    time  new lock          on          size    held  rewrite  rows  readers  writers  statement
     2  644 ms  ACCESS EXCLUSIVE  \"Message\"  23 MB  680 ms  yes         -   671 ms    1.2 s  ALTER TABLE \"Message\" ALTER COLUMN \"role\" TYPE TEXT
        rewrote \"Message\" (23 MB) and 5 of its indexes

Hot queries before and after the migrations (median of up to 7 runs each on the copy, nothing else running):
  query                     before      after
  messages.recent           0.4 ms     0.5 ms  plan changed
      before: Index Scan using Message_role_idx on \"Message\"
      after:  Index Scan using Message_companionId_userId_createdAt_idx on \"Message\"
  dashboard.public_page          -     1.2 ms  not measured before: ERROR: relation \"CompanionDashboard\" does not exist

Verdict: FAIL
  20990101000000_role_as_text, line 2: ACCESS EXCLUSIVE on \"Message\" (23 MB) held 680 ms, over the budget of 300 ms (it blocks reads and writes)
    statement: ALTER TABLE \"Message\" ALTER COLUMN \"role\" TYPE TEXT
    it rewrote \"Message\" under that lock
    safer (alter-column-type): add a column of the new type, backfill in batches, switch the code, drop the old column later (or allow it with a reason when the change is binary-compatible, e.g. widening varchar)
  20990101000000_role_as_text, line 2: a writer of the workload waited 1.2 s (messages.insert, sent while this statement ran), over the budget of 1000 ms
    statement: ALTER TABLE \"Message\" ALTER COLUMN \"role\" TYPE TEXT
    it waited on ACCESS EXCLUSIVE on \"Message\", which this statement took and its transaction held until it ended
    safer (alter-column-type): add a column of the new type, backfill in batches, switch the code, drop the old column later (or allow it with a reason when the change is binary-compatible, e.g. widening varchar)

The copy 127.0.0.1:5432/gcbb_rehearse_app_0123456789ab was dropped.
";
    assert_eq!(text, expected);
}

#[test]
fn nothing_pending_is_one_line() {
    let mut r = report();
    r.pending.clear();
    assert_eq!(
        render_text(&r),
        "Nothing to rehearse: 127.0.0.1:5432/app has no pending migration (4 found).\n"
    );
}
