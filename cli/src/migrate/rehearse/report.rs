//! A rehearsal in words: one table per migration (a row per statement: time, the strongest lock
//! it took that its transaction did not already hold, the table it was on and its size, how long
//! it was held, rewrite, rows), then verify, drift and the verdict with each breach's statement,
//! lock, time and safer rewrite. `--json` prints the report itself instead.

use std::fmt::Write as _;

use super::measure::{MigrationRun, StatementRun};
use super::verdict::{pretty_size, Breach, Safer};
use super::RehearsalReport;

fn quoted(schema: &str, table: &str) -> String {
    if schema == "public" {
        format!("\"{table}\"")
    } else {
        format!("\"{schema}\".\"{table}\"")
    }
}

fn millis(ms: f64) -> String {
    if ms >= 1000.0 {
        format!("{:.1} s", ms / 1000.0)
    } else if ms >= 100.0 {
        format!("{ms:.0} ms")
    } else {
        format!("{ms:.1} ms")
    }
}

fn size(bytes: Option<i64>) -> String {
    bytes.map(pretty_size).unwrap_or_else(|| "-".to_owned())
}

/// The report as text.
pub fn render_text(report: &RehearsalReport) -> String {
    let mut out = String::new();
    if report.nothing_to_rehearse() {
        let _ = writeln!(
            out,
            "Nothing to rehearse: {} has no pending migration ({} found).",
            report.target, report.found
        );
        return out;
    }
    let n = report.pending.len();
    let _ = writeln!(
        out,
        "Rehearsal of {n} pending migration{} for {}{}",
        if n == 1 { "" } else { "s" },
        report.target,
        if report.schema_only {
            " (schema only: times are those of empty tables; locks and rewrites are real)"
        } else {
            ""
        }
    );
    if let Some(copy) = &report.copy {
        let _ = writeln!(
            out,
            "Copy: {} — {}{}",
            copy.database,
            copy.made_by,
            if copy.given {
                String::new()
            } else {
                format!(", {:.1} s", copy.seconds)
            }
        );
    }
    if !report.migrations.is_empty() {
        let _ = writeln!(
            out,
            "(new lock: the strongest lock a statement took that its transaction did not hold yet; \
             held: from the statement's start until its transaction ended)"
        );
    }
    for run in &report.migrations {
        out.push('\n');
        render_migration(&mut out, run);
    }
    let not_run: Vec<&String> = report
        .pending
        .iter()
        .filter(|p| !report.migrations.iter().any(|m| &&m.name == p))
        .collect();
    if !not_run.is_empty() {
        let _ = writeln!(
            out,
            "\nNot run (after the failure): {}",
            not_run
                .iter()
                .map(|s| s.as_str())
                .collect::<Vec<_>>()
                .join(", ")
        );
    }
    let mut after = String::new();
    if let Some(v) = &report.verify {
        if report.verify_regressions.is_empty() {
            let _ = writeln!(
                after,
                "Verify on the copy: {} hot quer{} use their index{}.",
                v.passed.len(),
                if v.passed.len() == 1 { "y" } else { "ies" },
                if v.problems.is_empty() {
                    ""
                } else {
                    "; the other problems were there before the migrations (notes)"
                }
            );
        } else {
            let _ = writeln!(after, "Verify on the copy: the migrations broke something:");
            for p in &report.verify_regressions {
                let _ = writeln!(after, "  {p}");
            }
        }
    }
    if let Some(d) = &report.drift {
        let _ = writeln!(after, "Drift between the copy and the migrations:");
        for line in d.summary.lines() {
            let _ = writeln!(after, "  {line}");
        }
    }
    for note in &report.notes {
        let _ = writeln!(after, "Note: {note}");
    }
    if !after.is_empty() {
        out.push('\n');
        out.push_str(&after);
    }
    out.push('\n');
    render_verdict(&mut out, report);
    if let Some(copy) = &report.copy {
        out.push('\n');
        if copy.given {
            let _ = writeln!(
                out,
                "The copy {} was given with --into and now holds the migrations: delete it (a Neon branch: \
                 `neonctl branches delete <branch>`).",
                copy.database
            );
        } else if copy.kept {
            let name = copy.database.rsplit('/').next().unwrap_or_default();
            let _ = writeln!(
                out,
                "The copy was kept: {} (drop it with: DROP DATABASE \"{name}\" WITH (FORCE);)",
                copy.database
            );
        } else {
            let _ = writeln!(out, "The copy {} was dropped.", copy.database);
        }
    }
    out
}

fn render_migration(out: &mut String, run: &MigrationRun) {
    let how = if run.transaction {
        "one transaction"
    } else {
        "autocommit"
    };
    let outcome = match (run.applied, run.transaction) {
        (true, true) => format!("committed after {}", millis(run.ms)),
        (true, false) => format!("done in {}", millis(run.ms)),
        (false, true) => format!("FAILED, rolled back after {}", millis(run.ms)),
        (false, false) => format!("FAILED after {}", millis(run.ms)),
    };
    let _ = writeln!(out, "{} ({how}, {outcome})", run.name);
    let header = [
        "line",
        "time",
        "new lock",
        "on",
        "size",
        "held",
        "rewrite",
        "rows",
        "statement",
    ];
    let rows: Vec<[String; 9]> = run.statements.iter().map(statement_row).collect();
    let mut widths = header.map(str::len);
    for row in &rows {
        for (w, cell) in widths.iter_mut().zip(row.iter()) {
            *w = (*w).max(cell.chars().count());
        }
    }
    // Numbers right-aligned; the statement, last, is not padded.
    let right = [true, true, false, false, true, true, false, true, false];
    let line = |cells: &[String]| {
        let mut s = String::from("  ");
        for (i, cell) in cells.iter().enumerate() {
            let pad = widths[i].saturating_sub(cell.chars().count());
            if i == cells.len() - 1 {
                s.push_str(cell);
            } else if right[i] {
                s.push_str(&" ".repeat(pad));
                s.push_str(cell);
                s.push_str("  ");
            } else {
                s.push_str(cell);
                s.push_str(&" ".repeat(pad + 2));
            }
        }
        s.trim_end().to_owned()
    };
    let _ = writeln!(out, "{}", line(&header.map(str::to_owned)));
    let indent = " ".repeat(2 + widths[0] + 2);
    for (row, s) in rows.iter().zip(&run.statements) {
        let _ = writeln!(out, "{}", line(row));
        for extra in s.locks.iter().skip(1) {
            let _ = writeln!(
                out,
                "{indent}also {} on {} ({}), held {}",
                extra.mode.name(),
                quoted(&extra.schema, &extra.table),
                size(extra.table_bytes),
                millis(extra.held_ms)
            );
        }
        for r in &s.rewrites {
            let _ = writeln!(
                out,
                "{indent}rewrote {} ({}) and {} of its indexes",
                quoted(&r.schema, &r.table),
                size(r.table_bytes),
                r.indexes_rebuilt
            );
        }
        for i in &s.indexes_built {
            let _ = writeln!(
                out,
                "{indent}built index {} on \"{}\": {}",
                quoted(&i.schema, &i.index),
                i.table,
                pretty_size(i.bytes)
            );
        }
        if let Some(e) = &s.error {
            for l in e.message.lines() {
                let _ = writeln!(out, "{indent}{l}");
            }
        }
    }
    if let Some(e) = &run.error {
        for l in e.message.lines() {
            let _ = writeln!(out, "{indent}{l}");
        }
    }
}

fn statement_row(s: &StatementRun) -> [String; 9] {
    let (lock, on, bytes, held) = match s.strongest_lock() {
        Some(l) => (
            l.mode.name().to_owned(),
            quoted(&l.schema, &l.table),
            size(l.table_bytes),
            millis(l.held_ms),
        ),
        None => ("-".into(), "-".into(), "-".into(), "-".into()),
    };
    [
        s.line.to_string(),
        millis(s.ms),
        lock,
        on,
        bytes,
        held,
        if s.rewrites.is_empty() { "no" } else { "yes" }.to_owned(),
        s.rows.map_or_else(|| "-".to_owned(), |r| r.to_string()),
        if s.error.is_some() {
            format!("FAILED: {}", s.statement)
        } else {
            s.statement.clone()
        },
    ]
}

fn render_safer(out: &mut String, safer: &[Safer]) {
    for s in safer {
        let _ = match s.rule {
            Some(rule) => writeln!(out, "    safer ({rule}): {}", s.fix),
            None => writeln!(out, "    safer: {}", s.fix),
        };
    }
}

fn render_verdict(out: &mut String, report: &RehearsalReport) {
    let budget = &report.budget;
    if report.verdict.passed {
        let _ = writeln!(
            out,
            "Verdict: PASS — nothing failed, and no ACCESS EXCLUSIVE lock was held over {} ms on a table of {} or more{}.",
            budget.max_lock_ms,
            pretty_size(budget.min_table_bytes),
            budget
                .max_write_lock_ms
                .map(|ms| format!(", nor a write-blocking lock over {ms} ms"))
                .unwrap_or_default()
        );
        return;
    }
    let _ = writeln!(out, "Verdict: FAIL");
    for breach in &report.verdict.breaches {
        match breach {
            Breach::LockOverBudget {
                migration,
                line,
                statement,
                schema,
                table,
                mode,
                held_ms,
                budget_ms,
                table_bytes,
                rewrote,
                safer,
            } => {
                let _ = writeln!(
                    out,
                    "  {migration}, line {line}: {} on {} ({}) held {}, over the budget of {budget_ms} ms \
                     (it blocks {})",
                    mode.name(),
                    quoted(schema, table),
                    size(*table_bytes),
                    millis(*held_ms),
                    mode.blocks()
                );
                let _ = writeln!(out, "    statement: {statement}");
                if *rewrote {
                    let _ = writeln!(
                        out,
                        "    it rewrote {} under that lock",
                        quoted(schema, table)
                    );
                }
                render_safer(out, safer);
            }
            Breach::RewriteOfLargeTable {
                migration,
                line,
                statement,
                schema,
                table,
                table_bytes,
                safer,
            } => {
                let _ = writeln!(
                    out,
                    "  {migration}, line {line}: rewrites {} ({} on the target) under ACCESS EXCLUSIVE; \
                     a schema-only copy cannot time it, production would hold the lock for the whole rewrite",
                    quoted(schema, table),
                    size(*table_bytes)
                );
                let _ = writeln!(out, "    statement: {statement}");
                render_safer(out, safer);
            }
            Breach::Failed {
                migration,
                line,
                statement,
                code,
                message,
            } => {
                let at = line.map(|l| format!(", line {l}")).unwrap_or_default();
                let _ = writeln!(
                    out,
                    "  {migration}{at} failed on the copy{}:",
                    code.as_ref()
                        .map(|c| format!(" (SQLSTATE {c})"))
                        .unwrap_or_default()
                );
                for l in message.lines() {
                    let _ = writeln!(out, "    {l}");
                }
                if let Some(statement) = statement {
                    let _ = writeln!(out, "    statement: {statement}");
                }
            }
            Breach::LintRefused { findings } => {
                let _ = writeln!(
                    out,
                    "  deploy would refuse the pending files: {} lint error(s)",
                    findings.len()
                );
                for f in findings {
                    for l in f.lines() {
                        let _ = writeln!(out, "    {l}");
                    }
                }
            }
            Breach::VerifyRegressed { problems } => {
                let _ = writeln!(
                    out,
                    "  verify on the copy found problems the migrations made:"
                );
                for p in problems {
                    let _ = writeln!(out, "    {p}");
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::measure::{LockHeld, LockMode, Rewrite};
    use super::super::verdict::{judge, Budget};
    use super::super::{CopyReport, RehearsalReport};
    use super::*;

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
            }),
            verdict: judge(&migrations, &budget, false, &[], &[]),
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
(new lock: the strongest lock a statement took that its transaction did not hold yet; held: from the statement's start until its transaction ended)

20990101000000_role_as_text (one transaction, committed after 680 ms)
  line    time  new lock          on          size    held  rewrite  rows  statement
     2  644 ms  ACCESS EXCLUSIVE  \"Message\"  23 MB  680 ms  yes         -  ALTER TABLE \"Message\" ALTER COLUMN \"role\" TYPE TEXT
        rewrote \"Message\" (23 MB) and 5 of its indexes

Verdict: FAIL
  20990101000000_role_as_text, line 2: ACCESS EXCLUSIVE on \"Message\" (23 MB) held 680 ms, over the budget of 300 ms (it blocks reads and writes)
    statement: ALTER TABLE \"Message\" ALTER COLUMN \"role\" TYPE TEXT
    it rewrote \"Message\" under that lock
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
}
