//! The verdict of a rehearsal: which of its figures stop a deploy, and what to write instead.
//!
//! A deploy is stopped by what would hurt production when it runs there: a query of the workload
//! (a reader or a writer of production's hot queries) that waited longer than `max_blocked_ms`
//! while a migration ran; an ACCESS EXCLUSIVE lock (no reads, no writes) held longer than
//! `max_lock_ms`, or a lock that blocks writes held longer than `max_write_lock_ms`, on a table big
//! enough to matter; a statement that failed on the copy's data; a lint error (`deploy` would
//! refuse the file anyway); a hot query the migrations left without its index; and a hot query
//! slower after the migrations than before, beyond the speed budget.
//! Small tables are not judged: their locks are short whatever the statement, and a new table has
//! no traffic to block. The safer rewrite comes from the lint rules the statement breaks, allowed
//! or not: an allow records a reviewer's judgement, and the rehearsal is what checks it.

use serde::Serialize;

use super::measure::Waited;
use super::measure::{LockHeld, LockMode, MigrationRun, StatementRun};
use super::speed::{QuerySpeed, Regression, SpeedBudget};
use super::workload::Role;
use crate::lint;

/// Default of `--max-lock-ms`: a few hundred milliseconds is what a request queued behind the
/// lock can absorb without timing out.
pub const DEFAULT_MAX_LOCK_MS: u64 = 300;

/// Default of `--max-write-lock-ms`: a chat reply's insert that waits a second is already felt.
pub const DEFAULT_MAX_WRITE_LOCK_MS: u64 = 1000;

/// Default of `--max-blocked-ms`: the longest a query of the workload may wait.
pub const DEFAULT_MAX_BLOCKED_MS: u64 = 1000;

/// Default of `--min-table-size`: 1 MiB.
pub const DEFAULT_MIN_TABLE_BYTES: i64 = 1 << 20;

/// What a rehearsal allows.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Budget {
    /// Longest a query of the workload may wait while a migration runs.
    pub max_blocked_ms: u64,
    /// Longest ACCESS EXCLUSIVE lock on a judged table.
    pub max_lock_ms: u64,
    /// Longest SHARE, SHARE ROW EXCLUSIVE or EXCLUSIVE lock (they stop writes) on a judged table.
    pub max_write_lock_ms: u64,
    /// Tables smaller than this on the target are not judged.
    pub min_table_bytes: i64,
    /// How much slower a hot query may get.
    pub speed: SpeedBudget,
}

impl Default for Budget {
    fn default() -> Self {
        Budget {
            max_blocked_ms: DEFAULT_MAX_BLOCKED_MS,
            max_lock_ms: DEFAULT_MAX_LOCK_MS,
            max_write_lock_ms: DEFAULT_MAX_WRITE_LOCK_MS,
            min_table_bytes: DEFAULT_MIN_TABLE_BYTES,
            speed: SpeedBudget::default(),
        }
    }
}

/// A safer way to write a statement.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Safer {
    /// The lint rule it comes from (`None`: the rehearsal's own advice).
    pub rule: Option<&'static str>,
    pub fix: &'static str,
}

/// What the rehearsal says when no lint rule covers a rewrite.
const REWRITE_ADVICE: &str = "don't rewrite the table under the lock: add a new column (nullable, or \
with a constant default), backfill it in batches outside the migration, switch the code, drop the old \
column in a later migration";

/// What the rehearsal says when no lint rule covers a long lock.
const LOCK_ADVICE: &str = "hold the lock for less time: move the slow part out from under it \
(NOT VALID then VALIDATE, CONCURRENTLY, batched backfills outside the migration) or split the \
statement so each part is short";

/// One reason the rehearsal fails.
#[derive(Debug, Clone, Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Breach {
    /// A lock held longer than the budget on a judged table.
    LockOverBudget {
        migration: String,
        line: usize,
        statement: String,
        schema: String,
        table: String,
        mode: LockMode,
        held_ms: f64,
        budget_ms: u64,
        table_bytes: Option<i64>,
        /// The statement rewrote this table.
        rewrote: bool,
        safer: Vec<Safer>,
        /// The statement written with `CONCURRENTLY`, when that is the fix.
        rewrite: Option<String>,
    },
    /// A query of the workload waited longer than `max_blocked_ms` while a migration ran.
    QueryBlocked {
        migration: String,
        /// The statement running when the query was sent.
        line: usize,
        statement: String,
        role: Role,
        query: String,
        waited_ms: f64,
        budget_ms: u64,
        /// The lock of the file's transaction that blocks this role, when the sampler saw one:
        /// `SHARE on "Message"`, and the line of the statement that took it.
        lock: Option<String>,
        lock_line: Option<usize>,
        safer: Vec<Safer>,
        rewrite: Option<String>,
    },
    /// A hot query slower after the migrations than before, beyond the speed budget.
    QueryRegressed {
        query: String,
        before_ms: f64,
        after_ms: f64,
        before_plan: Vec<String>,
        after_plan: Vec<String>,
        regressions: Vec<Regression>,
    },
    /// A schema-only rehearsal saw a judged table rewritten: the copy is empty, so the time
    /// says nothing, but on the target the rewrite reads and writes every byte of the table.
    RewriteOfLargeTable {
        migration: String,
        line: usize,
        statement: String,
        schema: String,
        table: String,
        table_bytes: Option<i64>,
        safer: Vec<Safer>,
    },
    /// A statement (or the file's COMMIT, or a concurrent build's validity) failed on the copy.
    Failed {
        migration: String,
        line: Option<usize>,
        statement: Option<String>,
        code: Option<String>,
        message: String,
    },
    /// `deploy` would refuse these pending files: lint errors.
    LintRefused { findings: Vec<String> },
    /// Problems `gcbb db verify` finds on the copy after the migrations and not before.
    VerifyRegressed { problems: Vec<String> },
}

/// Passed, or the breaches.
#[derive(Debug, Clone, Serialize)]
pub struct Verdict {
    pub passed: bool,
    pub breaches: Vec<Breach>,
}

/// What a rehearsal found, to be judged.
pub struct Findings<'a> {
    pub runs: &'a [MigrationRun],
    pub schema_only: bool,
    pub lint_refusals: &'a [String],
    pub verify_regressions: &'a [String],
    /// Hot queries before and after, with their regressions against the budget.
    pub speed: &'a [(QuerySpeed, Vec<Regression>)],
}

/// Judges the findings of a rehearsal against `budget`.
pub fn judge(findings: &Findings<'_>, budget: &Budget) -> Verdict {
    let mut breaches = Vec::new();
    if !findings.lint_refusals.is_empty() {
        breaches.push(Breach::LintRefused {
            findings: findings.lint_refusals.to_vec(),
        });
    }
    for run in findings.runs {
        for s in &run.statements {
            judge_statement(&run.name, s, budget, findings.schema_only, &mut breaches);
        }
        if let Some(e) = &run.error {
            breaches.push(Breach::Failed {
                migration: run.name.clone(),
                line: None,
                statement: None,
                code: e.code.clone(),
                message: e.message.clone(),
            });
        }
        for role in [Role::Reader, Role::Writer] {
            judge_waits(run, role, budget, &mut breaches);
        }
    }
    if !findings.verify_regressions.is_empty() {
        breaches.push(Breach::VerifyRegressed {
            problems: findings.verify_regressions.to_vec(),
        });
    }
    for (q, regressions) in findings.speed {
        if regressions.is_empty() {
            continue;
        }
        let (Ok(before), Ok(after)) = (&q.before, &q.after) else {
            continue;
        };
        breaches.push(Breach::QueryRegressed {
            query: q.query.to_owned(),
            before_ms: before.median_ms,
            after_ms: after.median_ms,
            before_plan: before.plan.clone(),
            after_plan: after.plan.clone(),
            regressions: regressions.clone(),
        });
    }
    Verdict {
        passed: breaches.is_empty(),
        breaches,
    }
}

/// The longest wait of `role` in one migration, over the budget: one breach, naming the statement
/// that was running when that query was sent and the lock that held it (taken by that statement
/// or, in a transaction, by an earlier one: locks are held until `COMMIT`).
fn judge_waits(run: &MigrationRun, role: Role, budget: &Budget, out: &mut Vec<Breach>) {
    let wait_of = |s: &StatementRun| -> Option<Waited> {
        match role {
            Role::Reader => s.reader_wait.clone(),
            Role::Writer => s.writer_wait.clone(),
        }
    };
    let Some((at, waited)) = run
        .statements
        .iter()
        .enumerate()
        .filter_map(|(i, s)| wait_of(s).map(|w| (i, w)))
        .max_by(|a, b| a.1.ms.total_cmp(&b.1.ms))
    else {
        return;
    };
    if waited.ms <= budget.max_blocked_ms as f64 {
        return;
    }
    let blocks = |lock: &LockHeld| match role {
        Role::Reader => lock.mode == LockMode::AccessExclusive,
        Role::Writer => lock.mode.blocks_writes(),
    };
    // In autocommit a statement's locks end with it: only its own count.
    let earliest = if run.transaction { 0 } else { at };
    let culprit = run.statements[earliest..=at]
        .iter()
        .rev()
        .flat_map(|s| s.locks.iter().filter(|l| blocks(l)).map(move |l| (s, l)))
        .max_by_key(|(_, l)| l.mode);
    let statement = &run.statements[at];
    let (fix_from, lock) = match culprit {
        Some((s, l)) => (
            s,
            Some((
                format!("{} on {}", l.mode.name(), quoted(&l.schema, &l.table)),
                s.line,
            )),
        ),
        None => (statement, None),
    };
    out.push(Breach::QueryBlocked {
        migration: run.name.clone(),
        line: statement.line,
        statement: statement.statement.clone(),
        role,
        query: waited.query.to_owned(),
        waited_ms: waited.ms,
        budget_ms: budget.max_blocked_ms,
        lock_line: lock.as_ref().map(|l| l.1),
        lock: lock.map(|l| l.0),
        safer: safer(fix_from, false),
        rewrite: fix_from.concurrently.clone(),
    });
}

fn quoted(schema: &str, table: &str) -> String {
    if schema == "public" {
        format!("\"{table}\"")
    } else {
        format!("\"{schema}\".\"{table}\"")
    }
}

fn judged(bytes: Option<i64>, budget: &Budget) -> bool {
    bytes.unwrap_or(0) >= budget.min_table_bytes
}

fn judge_statement(
    migration: &str,
    s: &StatementRun,
    budget: &Budget,
    schema_only: bool,
    out: &mut Vec<Breach>,
) {
    if let Some(e) = &s.error {
        out.push(Breach::Failed {
            migration: migration.to_owned(),
            line: Some(s.line),
            statement: Some(s.statement.clone()),
            code: e.code.clone(),
            message: e.message.clone(),
        });
    }
    for lock in &s.locks {
        let limit = match lock.mode {
            LockMode::AccessExclusive => Some(budget.max_lock_ms),
            mode if mode.blocks_writes() => Some(budget.max_write_lock_ms),
            _ => None,
        };
        let Some(limit) = limit else { continue };
        if !judged(lock.table_bytes, budget) || lock.held_ms <= limit as f64 {
            continue;
        }
        let rewrote = s
            .rewrites
            .iter()
            .any(|r| r.schema == lock.schema && r.table == lock.table);
        out.push(Breach::LockOverBudget {
            migration: migration.to_owned(),
            line: s.line,
            statement: s.statement.clone(),
            schema: lock.schema.clone(),
            table: lock.table.clone(),
            mode: lock.mode,
            held_ms: lock.held_ms,
            budget_ms: limit,
            table_bytes: lock.table_bytes,
            rewrote,
            safer: safer(s, rewrote),
            rewrite: s.concurrently.clone(),
        });
    }
    if schema_only {
        for r in s.rewrites.iter().filter(|r| judged(r.table_bytes, budget)) {
            out.push(Breach::RewriteOfLargeTable {
                migration: migration.to_owned(),
                line: s.line,
                statement: s.statement.clone(),
                schema: r.schema.clone(),
                table: r.table.clone(),
                table_bytes: r.table_bytes,
                safer: safer(s, true),
            });
        }
    }
}

/// The lint's rewrites for the statement, else the rehearsal's own advice.
pub fn safer(s: &StatementRun, rewrote: bool) -> Vec<Safer> {
    let from_lint: Vec<Safer> = s
        .lint_rules
        .iter()
        .filter_map(|id| lint::find_rule(id))
        .map(|rule| Safer {
            rule: Some(rule.id),
            fix: rule.fix,
        })
        .collect();
    if !from_lint.is_empty() {
        return from_lint;
    }
    vec![Safer {
        rule: None,
        fix: if rewrote { REWRITE_ADVICE } else { LOCK_ADVICE },
    }]
}

/// Parses a size as Postgres writes them: `8192`, `512kB`, `1MB`, `2 GB`, `1TB` (units of 1024;
/// `KiB`/`MiB`/`GiB`/`TiB` and a lowercase `b` accepted too).
pub fn parse_size(raw: &str) -> Result<i64, String> {
    let s = raw.trim();
    let split = s
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(s.len());
    let (number, unit) = s.split_at(split);
    let number: f64 = number
        .parse()
        .map_err(|_| format!("`{raw}` is not a size (examples: 1MB, 512kB, 2GB)"))?;
    let factor: i64 = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" | "bytes" => 1,
        "kb" | "kib" | "k" => 1 << 10,
        "mb" | "mib" | "m" => 1 << 20,
        "gb" | "gib" | "g" => 1 << 30,
        "tb" | "tib" | "t" => 1 << 40,
        other => {
            return Err(format!(
                "unknown size unit `{other}` in `{raw}` (kB, MB, GB, TB)"
            ))
        }
    };
    Ok((number * factor as f64).round() as i64)
}

/// Bytes as `pg_size_pretty` shows them (`512 bytes`, `24 MB`).
pub fn pretty_size(bytes: i64) -> String {
    const UNITS: [&str; 5] = ["bytes", "kB", "MB", "GB", "TB"];
    let mut value = bytes as f64;
    let mut unit = 0;
    // pg_size_pretty switches unit at 10 × the next one's size, keeping 4 significant digits.
    while value.abs() >= 10.0 * 1024.0 && unit < UNITS.len() - 1 {
        value /= 1024.0;
        unit += 1;
    }
    format!("{} {}", value.round() as i64, UNITS[unit])
}

#[cfg(test)]
mod tests;
