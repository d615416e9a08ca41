//! A rehearsal in words: what ran beside it (the workload), one table per migration (a row per
//! statement: time, the strongest lock it took that its transaction did not already hold, the
//! table it was on and its size, how long it was held, rewrite, rows, and the longest a reader
//! and a writer of the workload waited meanwhile), the workload's failures, the hot queries
//! before and after, then verify, drift and the verdict with each breach's statement, lock, time
//! and safer rewrite. `--json` prints the report itself instead.
//!
//! One idea, kept in one file on purpose (over 600 lines): the report's text, section by section,
//! in the order it prints.

use std::fmt::Write as _;

use super::measure::{MigrationRun, StatementRun};
use super::outcome::{RehearsalReport, SpeedRow};
use super::verdict::{pretty_size, Breach, Safer};
use super::workload::WorkloadReport;

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
    if let Some(w) = &report.workload {
        render_workload_line(&mut out, w);
    }
    if !report.migrations.is_empty() {
        let _ = writeln!(
            out,
            "(new lock: the strongest lock a statement took that its transaction did not hold yet; \
             held: from the statement's start until its transaction ended{})",
            if report.workload.is_some() {
                "; readers, writers: the longest a query of the workload sent while the statement ran waited"
            } else {
                ""
            }
        );
    }
    for run in &report.migrations {
        out.push('\n');
        render_migration(&mut out, run, report.workload.is_some());
    }
    if let Some(w) = &report.workload {
        render_workload_errors(&mut out, w);
    }
    if !report.speed.is_empty() {
        render_speed(&mut out, &report.speed);
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
        if let Some(branch) = &copy.neon_branch {
            if branch.deleted {
                let _ = writeln!(
                    out,
                    "The Neon branch {} ({}) was deleted.",
                    branch.name, branch.id
                );
            } else {
                let _ = writeln!(
                    out,
                    "The Neon branch {} ({}) could NOT be deleted: delete it by hand (neonctl branches delete {}).",
                    branch.name, branch.id, branch.id
                );
            }
        } else if copy.given {
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

fn render_workload_line(out: &mut String, w: &WorkloadReport) {
    let writes = &w.writes;
    let _ = writeln!(
        out,
        "Workload beside the run: {} reader{} looping the hot queries, {} writer{} in transactions \
         rolled back{}; {} queries sent while the migrations ran",
        w.readers,
        if w.readers == 1 { "" } else { "s" },
        writes.len(),
        if writes.len() == 1 { "" } else { "s" },
        if writes.is_empty() {
            String::new()
        } else {
            format!(" ({})", writes.join(", "))
        },
        w.queries_during
    );
}

fn render_workload_errors(out: &mut String, w: &WorkloadReport) {
    if w.errors.is_empty() {
        return;
    }
    let _ = writeln!(out, "\nQueries of the workload that failed on the copy:");
    for e in &w.errors {
        let first = e.first_error.lines().next().unwrap_or_default();
        let _ = writeln!(
            out,
            "  {} ({}) failed {} time{}, first {}: {first}{}",
            e.query,
            e.role.noun(),
            e.failures,
            if e.failures == 1 { "" } else { "s" },
            if e.before_migrations && e.first_seen == "before the migrations" {
                "before the migrations ran".to_owned()
            } else {
                format!("while {} ran", e.first_seen)
            },
            if e.before_migrations {
                " (it failed before any migration ran: the copy's schema or data, not these migrations, made it fail)"
            } else {
                ""
            }
        );
    }
}

fn render_speed(out: &mut String, rows: &[SpeedRow]) {
    let _ = writeln!(
        out,
        "\nHot queries before and after the migrations (median of up to {} runs each on the copy, nothing else running):",
        super::speed::RUNS
    );
    let width = rows
        .iter()
        .map(|r| r.speed.query.len())
        .max()
        .unwrap_or(5)
        .max(5);
    let _ = writeln!(
        out,
        "  {:<width$}  {:>9}  {:>9}",
        "query", "before", "after"
    );
    for row in rows {
        let q = &row.speed;
        let cell = |t: &Result<super::speed::Timing, String>| match t {
            Ok(t) => millis(t.median_ms),
            Err(_) => "-".to_owned(),
        };
        let mut line = format!(
            "  {:<width$}  {:>9}  {:>9}",
            q.query,
            cell(&q.before),
            cell(&q.after)
        );
        match (&q.before, &q.after) {
            (Ok(b), Ok(a)) if b.plan != a.plan => line.push_str("  plan changed"),
            (Err(e), Ok(_)) => line.push_str(&format!(
                "  not measured before: {}",
                e.lines().next().unwrap_or_default()
            )),
            (_, Err(e)) => line.push_str(&format!(
                "  FAILED after: {}",
                e.lines().next().unwrap_or_default()
            )),
            _ => {}
        }
        if !row.regressions.is_empty() {
            line.push_str("  REGRESSED");
        }
        let _ = writeln!(out, "{}", line.trim_end());
        if let (Ok(b), Ok(a)) = (&q.before, &q.after) {
            if b.plan != a.plan {
                // Only the scans that changed: the others read the same relation the same way.
                let (gone, new) = changed_nodes(&b.plan, &a.plan);
                let _ = writeln!(out, "      before: {}", gone.join("; "));
                let _ = writeln!(out, "      after:  {}", new.join("; "));
            }
        }
    }
}

/// The scan nodes of `before` that `after` lacks, and those of `after` that `before` lacks, each
/// counted as often as it occurs.
fn changed_nodes(before: &[String], after: &[String]) -> (Vec<String>, Vec<String>) {
    let mut rest: Vec<&String> = after.iter().collect();
    let mut gone = Vec::new();
    for node in before {
        match rest.iter().position(|n| *n == node) {
            Some(at) => {
                rest.remove(at);
            }
            None => gone.push(node.clone()),
        }
    }
    (gone, rest.into_iter().cloned().collect())
}

fn render_migration(out: &mut String, run: &MigrationRun, with_waits: bool) {
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
    let mut header = vec![
        "line", "time", "new lock", "on", "size", "held", "rewrite", "rows",
    ];
    // Numbers right-aligned; the statement, last, is not padded.
    let mut right = vec![true, true, false, false, true, true, false, true];
    if with_waits {
        header.extend(["readers", "writers"]);
        right.extend([true, true]);
    }
    header.push("statement");
    right.push(false);
    let rows: Vec<Vec<String>> = run
        .statements
        .iter()
        .map(|s| statement_row(s, with_waits))
        .collect();
    let mut widths: Vec<usize> = header.iter().map(|h| h.len()).collect();
    for row in &rows {
        for (w, cell) in widths.iter_mut().zip(row.iter()) {
            *w = (*w).max(cell.chars().count());
        }
    }
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
    let header: Vec<String> = header.iter().map(|h| (*h).to_owned()).collect();
    let _ = writeln!(out, "{}", line(&header));
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

fn statement_row(s: &StatementRun, with_waits: bool) -> Vec<String> {
    let (lock, on, bytes, held) = match s.strongest_lock() {
        Some(l) => (
            l.mode.name().to_owned(),
            quoted(&l.schema, &l.table),
            size(l.table_bytes),
            millis(l.held_ms),
        ),
        None => ("-".into(), "-".into(), "-".into(), "-".into()),
    };
    let mut row = vec![
        s.line.to_string(),
        millis(s.ms),
        lock,
        on,
        bytes,
        held,
        if s.rewrites.is_empty() { "no" } else { "yes" }.to_owned(),
        s.rows.map_or_else(|| "-".to_owned(), |r| r.to_string()),
    ];
    if with_waits {
        for w in [&s.reader_wait, &s.writer_wait] {
            row.push(w.as_ref().map_or_else(|| "-".to_owned(), |w| millis(w.ms)));
        }
    }
    row.push(if s.error.is_some() {
        format!("FAILED: {}", s.statement)
    } else {
        s.statement.clone()
    });
    row
}

fn render_rewrite(out: &mut String, rewrite: &Option<String>) {
    if let Some(r) = rewrite {
        let _ = writeln!(
            out,
            "    rewrite (alone in a migration file of its own): {r}"
        );
    }
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
            "Verdict: PASS — nothing failed; {}no ACCESS EXCLUSIVE lock was held over {} ms, nor a \
             write-blocking lock over {} ms, on a table of {} or more{}.",
            if report.workload.is_some() {
                format!("no query of the workload waited over {} ms; ", budget.max_blocked_ms)
            } else {
                String::new()
            },
            budget.max_lock_ms,
            budget.max_write_lock_ms,
            pretty_size(budget.min_table_bytes),
            if report.speed.is_empty() {
                String::new()
            } else {
                format!(
                    "; no hot query got {}× slower and {} ms more, nor lost its index scan",
                    budget.speed.max_slowdown, budget.speed.min_slowdown_ms
                )
            }
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
                rewrite,
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
                render_rewrite(out, rewrite);
            }
            Breach::QueryBlocked {
                migration,
                line,
                statement,
                role,
                query,
                waited_ms,
                budget_ms,
                lock,
                lock_line,
                safer,
                rewrite,
            } => {
                let _ = writeln!(
                    out,
                    "  {migration}, line {line}: a {} of the workload waited {} ({query}, sent while this \
                     statement ran), over the budget of {budget_ms} ms",
                    role.noun(),
                    millis(*waited_ms)
                );
                let _ = writeln!(out, "    statement: {statement}");
                match (lock, lock_line) {
                    (Some(lock), Some(l)) if l == line => {
                        let _ = writeln!(
                            out,
                            "    it waited on {lock}, which this statement took and its transaction held until it ended"
                        );
                    }
                    (Some(lock), Some(l)) => {
                        let _ = writeln!(
                            out,
                            "    it waited on {lock}, taken at line {l} and held until the file's transaction ended"
                        );
                    }
                    _ => {}
                }
                render_safer(out, safer);
                render_rewrite(out, rewrite);
            }
            Breach::QueryRegressed {
                query,
                before_ms,
                after_ms,
                before_plan,
                after_plan,
                regressions,
            } => {
                let _ = writeln!(
                    out,
                    "  hot query {query}: {} before the migrations, {} after ({})",
                    millis(*before_ms),
                    millis(*after_ms),
                    regressions
                        .iter()
                        .map(ToString::to_string)
                        .collect::<Vec<_>>()
                        .join("; ")
                );
                let _ = writeln!(out, "    plan before: {}", before_plan.join("; "));
                let _ = writeln!(out, "    plan after:  {}", after_plan.join("; "));
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
mod tests;
