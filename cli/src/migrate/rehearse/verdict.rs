//! The verdict of a rehearsal: which of its figures stop a deploy, and what to write instead.
//!
//! A deploy is stopped by what would hurt production when it runs there: an ACCESS EXCLUSIVE lock
//! (no reads, no writes) held longer than the budget on a table big enough to matter; optionally
//! a write-blocking lock held too long; a statement that failed on the copy's data; a lint error
//! (`deploy` would refuse the file anyway); and a hot query the migrations left without its index.
//! Small tables are not judged: their locks are short whatever the statement, and a new table has
//! no traffic to block. The safer rewrite comes from the lint rules the statement breaks, allowed
//! or not: an allow records a reviewer's judgement, and the rehearsal is what checks it.

use serde::Serialize;

use super::measure::{LockMode, MigrationRun, StatementRun};
use crate::migrate::lint;

/// Default of `--max-lock-ms`: a few hundred milliseconds is what a request queued behind the
/// lock can absorb without timing out.
pub const DEFAULT_MAX_LOCK_MS: u64 = 300;

/// Default of `--min-table-size`: 1 MiB.
pub const DEFAULT_MIN_TABLE_BYTES: i64 = 1 << 20;

/// What a rehearsal allows.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Budget {
    /// Longest ACCESS EXCLUSIVE lock on a judged table.
    pub max_lock_ms: u64,
    /// Longest SHARE, SHARE ROW EXCLUSIVE or EXCLUSIVE lock (they stop writes) on a judged
    /// table; `None`: not judged.
    pub max_write_lock_ms: Option<u64>,
    /// Tables smaller than this on the target are not judged.
    pub min_table_bytes: i64,
}

impl Default for Budget {
    fn default() -> Self {
        Budget {
            max_lock_ms: DEFAULT_MAX_LOCK_MS,
            max_write_lock_ms: None,
            min_table_bytes: DEFAULT_MIN_TABLE_BYTES,
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

/// Judges the runs of a rehearsal against `budget`.
pub fn judge(
    runs: &[MigrationRun],
    budget: &Budget,
    schema_only: bool,
    lint_refusals: &[String],
    verify_regressions: &[String],
) -> Verdict {
    let mut breaches = Vec::new();
    if !lint_refusals.is_empty() {
        breaches.push(Breach::LintRefused {
            findings: lint_refusals.to_vec(),
        });
    }
    for run in runs {
        for s in &run.statements {
            judge_statement(&run.name, s, budget, schema_only, &mut breaches);
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
    }
    if !verify_regressions.is_empty() {
        breaches.push(Breach::VerifyRegressed {
            problems: verify_regressions.to_vec(),
        });
    }
    Verdict {
        passed: breaches.is_empty(),
        breaches,
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
            mode if mode.blocks_writes() => budget.max_write_lock_ms,
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
mod tests {
    use super::super::measure::{LockHeld, Rewrite};
    use super::*;

    fn statement(
        mode: LockMode,
        held_ms: f64,
        bytes: i64,
        rules: Vec<&'static str>,
    ) -> StatementRun {
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
        }
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
        let verdict = judge(&runs, &Budget::default(), false, &[], &[]);
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
            statement(LockMode::Share, 5000.0, 24 << 20, vec![]),
        ] {
            assert!(judge(&run(vec![s]), &budget, false, &[], &[]).passed);
        }
        let strict = Budget {
            max_write_lock_ms: Some(1000),
            ..budget
        };
        let verdict = judge(
            &run(vec![statement(LockMode::Share, 5000.0, 24 << 20, vec![])]),
            &strict,
            false,
            &[],
            &[],
        );
        assert!(!verdict.passed);
    }

    #[test]
    fn a_schema_only_rehearsal_fails_on_the_rewrite_of_a_big_table_whatever_its_time() {
        let runs = run(vec![statement(
            LockMode::AccessExclusive,
            1.0,
            24 << 20,
            vec![],
        )]);
        let verdict = judge(&runs, &Budget::default(), true, &[], &[]);
        assert!(matches!(
            &verdict.breaches[..],
            [Breach::RewriteOfLargeTable { safer, .. }] if safer[0].fix == REWRITE_ADVICE
        ));
    }

    #[test]
    fn lint_refusals_and_verify_regressions_fail_the_verdict() {
        let verdict = judge(&[], &Budget::default(), false, &["x".to_owned()], &[]);
        assert!(!verdict.passed);
        let verdict = judge(&[], &Budget::default(), false, &[], &["y".to_owned()]);
        assert!(!verdict.passed);
        assert!(judge(&[], &Budget::default(), false, &[], &[]).passed);
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
}
