//! `gcbb db lint`: flags destructive and long-locking statements in migration files before they
//! reach production, parsing SQL with Postgres's own grammar (`pg_query`).
//!
//! A file is parsed whole; each statement's first line is found with Postgres's scanner (so
//! comments, strings and dollar-quoted bodies never shift line numbers). Objects created earlier in
//! the same file are new and empty, so the lock and data-loss rules leave them alone.
//!
//! An exception is written on the comment lines directly above a statement (no blank line between):
//! `-- gcbb:allow <rule-id> <reason>`. Several may stack. Only `--` comments count. Known limit:
//! statements inside function bodies and `DO` blocks are not linted.

mod check;
mod rules;
mod source;

#[cfg(test)]
mod tests;

use std::fmt;
use std::path::{Path, PathBuf};

pub use rules::{find_rule, Rule, Severity, RULES};

use check::FileState;
use source::{AllowDirective, Source};

/// What the linter may assume about the target database.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LintContext {
    /// Major version of the target server. Before 11, any `ADD COLUMN … DEFAULT` rewrites the
    /// table; from 11 on, only volatile defaults do.
    pub server_major: u32,
}

/// Neon runs 15–17; everything from 11 on behaves the same for these rules.
pub const DEFAULT_SERVER_MAJOR: u32 = 15;

impl Default for LintContext {
    fn default() -> Self {
        LintContext {
            server_major: DEFAULT_SERVER_MAJOR,
        }
    }
}

/// One rule broken by one statement (or one bad allow comment).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Finding {
    pub rule: &'static str,
    pub severity: Severity,
    /// Display path of the file.
    pub file: String,
    /// 1-based line where the statement (or the allow comment) starts.
    pub line: usize,
    /// What exactly is wrong, naming the objects.
    pub message: String,
    /// The statement, whitespace collapsed, shortened.
    pub statement: String,
    pub why: &'static str,
    /// The safe rewrite.
    pub fix: &'static str,
}

impl Finding {
    pub fn is_error(&self) -> bool {
        self.severity == Severity::Error
    }
}

impl fmt::Display for Finding {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "{}:{}: {}[{}]: {}",
            self.file, self.line, self.severity, self.rule, self.message
        )?;
        if !self.statement.is_empty() {
            writeln!(f, "    statement: {}", self.statement)?;
        }
        writeln!(f, "    why: {}", self.why)?;
        write!(f, "    fix: {}", self.fix)
    }
}

/// Why a file could not be linted.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum LintError {
    /// The SQL does not parse; `line` is where the offending statement starts.
    #[error("{file}:{line}: SQL does not parse: {message}")]
    Parse {
        file: String,
        line: usize,
        message: String,
    },
    #[error("{file}: cannot read: {message}")]
    Read { file: String, message: String },
}

/// Longest statement excerpt kept in a finding.
const EXCERPT_CHARS: usize = 120;

/// Lints one migration file's SQL. `file` is only used for display.
pub fn lint_sql(file: &str, sql: &str, ctx: &LintContext) -> Result<Vec<Finding>, LintError> {
    let source = Source::parse(sql).map_err(|(line, message)| LintError::Parse {
        file: file.to_owned(),
        line,
        message,
    })?;
    let mut findings = Vec::new();
    let mut used_allows = vec![false; source.allows.len()];
    let mut state = FileState::default();
    let statement_count = source.statements.len();

    for statement in &source.statements {
        let mut hits = check::check_statement(&statement.node, &mut state, ctx);
        if statement_count > 1 && check::is_non_transactional(&statement.node) {
            hits.push(check::Hit {
                rule: rules::CONCURRENTLY_MIXED_WITH_OTHER_STATEMENTS,
                message: format!(
                    "cannot run inside a transaction block, and this file has {} other statement(s)",
                    statement_count - 1
                ),
            });
        }
        for hit in hits {
            let allowed_by = statement.allows.iter().copied().find(|&index| {
                let allow = &source.allows[index];
                allow.rule == hit.rule && !allow.reason.is_empty()
            });
            if let Some(index) = allowed_by {
                used_allows[index] = true;
                continue;
            }
            findings.push(finding(file, statement.line, &statement.excerpt, hit));
        }
    }

    for (allow, used) in source.allows.iter().zip(used_allows) {
        if let Some(hit) = check_allow(allow, used) {
            findings.push(finding(file, allow.line, "", hit));
        }
    }
    findings.sort_by(|a, b| a.line.cmp(&b.line).then(a.rule.cmp(b.rule)));
    Ok(findings)
}

/// The rules one statement of a file breaks, allow comments ignored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StatementRules {
    /// 1-based line where the statement starts.
    pub line: usize,
    pub rules: Vec<&'static Rule>,
}

/// Every statement of a file, in order, with every rule it breaks, allowed or not. A rehearsal
/// quotes these rewrites when a statement held a lock too long on real data: an allow records
/// that a reviewer judged the statement safe, and the rehearsal is what checks that judgement.
pub fn rules_by_statement(sql: &str, ctx: &LintContext) -> Result<Vec<StatementRules>, LintError> {
    let source = Source::parse(sql).map_err(|(line, message)| LintError::Parse {
        file: String::new(),
        line,
        message,
    })?;
    let mut state = FileState::default();
    let mut out = Vec::with_capacity(source.statements.len());
    for statement in &source.statements {
        let rules = check::check_statement(&statement.node, &mut state, ctx)
            .into_iter()
            .filter_map(|hit| find_rule(hit.rule))
            .collect();
        out.push(StatementRules {
            line: statement.line,
            rules,
        });
    }
    Ok(out)
}

/// The finding an allow comment itself deserves, if any.
fn check_allow(allow: &AllowDirective, used: bool) -> Option<check::Hit> {
    let known = find_rule(&allow.rule).is_some_and(|r| !rules::META_RULES.contains(&r.id));
    let (rule, message) = if allow.rule.is_empty() {
        (rules::UNKNOWN_RULE, "gcbb:allow names no rule".to_owned())
    } else if !known {
        (
            rules::UNKNOWN_RULE,
            format!("gcbb:allow names unknown rule \"{}\"", allow.rule),
        )
    } else if allow.reason.is_empty() {
        (
            rules::ALLOW_WITHOUT_REASON,
            format!("gcbb:allow {} gives no reason", allow.rule),
        )
    } else if !used {
        (
            rules::UNUSED_ALLOW,
            format!("gcbb:allow {} silences nothing", allow.rule),
        )
    } else {
        return None;
    };
    Some(check::Hit { rule, message })
}

fn finding(file: &str, line: usize, excerpt: &str, hit: check::Hit) -> Finding {
    // Every id the checks emit is in the catalog; the fallback only keeps this total.
    let (severity, why, fix) = match find_rule(hit.rule) {
        Some(rule) => (rule.severity, rule.why, rule.fix),
        None => (Severity::Error, "", ""),
    };
    Finding {
        rule: hit.rule,
        severity,
        file: file.to_owned(),
        line,
        message: hit.message,
        statement: excerpt.to_owned(),
        why,
        fix,
    }
}

/// Collapses whitespace and shortens a statement for display.
pub(crate) fn excerpt(statement: &str) -> String {
    let collapsed = statement.split_whitespace().collect::<Vec<_>>().join(" ");
    if collapsed.chars().count() <= EXCERPT_CHARS {
        return collapsed;
    }
    let mut short: String = collapsed.chars().take(EXCERPT_CHARS - 1).collect();
    short.push('…');
    short
}

/// Lints every given path: a `.sql` file directly, or a directory of migrations (every `*.sql`
/// under it, in name order — Prisma's `<timestamp>_<name>/migration.sql` layout sorts in
/// history order). Stops at the first file that cannot be read or parsed.
pub fn lint_paths<P: AsRef<Path>>(
    paths: &[P],
    ctx: &LintContext,
) -> Result<Vec<Finding>, LintError> {
    let mut files = Vec::new();
    for path in paths {
        collect_sql_files(path.as_ref(), &mut files)?;
    }
    let mut findings = Vec::new();
    for file in files {
        let display = file.display().to_string();
        let sql = std::fs::read_to_string(&file).map_err(|e| LintError::Read {
            file: display.clone(),
            message: e.to_string(),
        })?;
        findings.extend(lint_sql(&display, &sql, ctx)?);
    }
    Ok(findings)
}

fn collect_sql_files(path: &Path, files: &mut Vec<PathBuf>) -> Result<(), LintError> {
    let read_error = |e: std::io::Error| LintError::Read {
        file: path.display().to_string(),
        message: e.to_string(),
    };
    if !path.is_dir() {
        files.push(path.to_owned());
        return Ok(());
    }
    let mut entries: Vec<PathBuf> = std::fs::read_dir(path)
        .map_err(read_error)?
        .map(|entry| entry.map(|e| e.path()))
        .collect::<Result<_, _>>()
        .map_err(read_error)?;
    entries.sort();
    for entry in entries {
        if entry.is_dir() {
            collect_sql_files(&entry, files)?;
        } else if entry.extension().is_some_and(|ext| ext == "sql") {
            files.push(entry);
        }
    }
    Ok(())
}
