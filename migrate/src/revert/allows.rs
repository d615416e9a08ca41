//! The revert's lint gate: each planned file linted as any migration is, the caller's `--allow`s
//! written above the statements that break their rules, and the refusal that names what is left.

use std::collections::BTreeSet;
use std::fmt::Write as _;

use chrono::{DateTime, Utc};

use crate::error::MigrateError;
use crate::lint::{self, Finding, LintContext};

use super::sql::{header, render_file, Planned};

/// Lint rules whose statements destroy data written since the migration ran.
pub const DATA_DESTROYING_RULES: &[&str] = &[
    "drop-table",
    "drop-column",
    "alter-column-type",
    "truncate",
    "delete-without-where",
    "drop-schema",
];

/// Parses `RULE=REASON` of `--allow`.
pub fn parse_allow(raw: &str) -> Result<(String, String), String> {
    let (rule, reason) = raw.split_once('=').ok_or_else(|| {
        format!("`{raw}`: write RULE=REASON (e.g. drop-column=\"unused since the last release\")")
    })?;
    let (rule, reason) = (rule.trim(), reason.trim());
    if lint::find_rule(rule).is_none() {
        return Err(format!("`{rule}` is not a rule of `gcbb db lint --rules`"));
    }
    if reason.is_empty() {
        return Err(format!("--allow {rule}= needs a reason after the `=`"));
    }
    Ok((rule.to_owned(), reason.to_owned()))
}

/// The error findings of one file (the runner-enforced rule aside).
fn errors(findings: &[Finding]) -> Vec<&Finding> {
    findings.iter().filter(|f| f.is_error()).collect()
}

/// Lints every planned file, adding the caller's allows above the statements that break their
/// rules; refuses when an error finding is left. Returns the warnings.
pub(super) fn apply_allows(
    planned: &mut [Planned],
    allows: &[(String, String)],
    ctx: &LintContext,
    migration: &str,
    now: DateTime<Utc>,
) -> Result<Vec<Finding>, MigrateError> {
    let mut used: BTreeSet<&str> = BTreeSet::new();
    let mut left: Vec<(String, Finding)> = Vec::new();
    let mut warnings = Vec::new();
    for p in planned.iter_mut() {
        let (sql, lines) = render_file(&header(migration, &p.what, 0, 0, now), &p.stmts);
        let findings = lint::lint_sql(&p.suffix, &sql, ctx)
            .map_err(|e| MigrateError::RevertRefused(format!("the revert does not parse: {e}")))?;
        for f in errors(&findings) {
            let Some(at) = lines.iter().position(|l| *l == f.line) else {
                left.push((sql.clone(), f.clone()));
                continue;
            };
            match allows.iter().find(|(rule, _)| rule == f.rule) {
                Some((rule, reason)) => {
                    used.insert(rule.as_str());
                    p.stmts[at].allows.push((rule.clone(), reason.clone()));
                }
                None => left.push((p.stmts[at].sql.clone(), f.clone())),
            }
        }
        let (sql, _) = render_file(&header(migration, &p.what, 0, 0, now), &p.stmts);
        let findings = lint::lint_sql(&p.suffix, &sql, ctx)
            .map_err(|e| MigrateError::RevertRefused(format!("the revert does not parse: {e}")))?;
        warnings.extend(findings.into_iter().filter(|f| !f.is_error()));
    }
    let unused: Vec<&str> = allows
        .iter()
        .map(|(r, _)| r.as_str())
        .filter(|r| !used.contains(r))
        .collect();
    if left.is_empty() && unused.is_empty() {
        return Ok(warnings);
    }
    let mut message = format!("the revert of `{migration}` is not written");
    if !left.is_empty() {
        let destroying = left
            .iter()
            .filter(|(_, f)| DATA_DESTROYING_RULES.contains(&f.rule))
            .count();
        let _ = write!(
            message,
            ": {} statement(s) break lint rules{}:",
            left.len(),
            if destroying > 0 {
                format!(
                    ", {destroying} of them destroying data written since `{migration}` was deployed"
                )
            } else {
                String::new()
            }
        );
        for (sql, f) in &left {
            let _ = write!(
                message,
                "\n  {}  -- {}{}\n    -- gcbb:allow {} <reason: {}>",
                lint::excerpt(sql),
                f.rule,
                if DATA_DESTROYING_RULES.contains(&f.rule) {
                    " (destroys data)"
                } else {
                    ""
                },
                f.rule,
                if DATA_DESTROYING_RULES.contains(&f.rule) {
                    "why the data written since may go"
                } else {
                    "why it is safe here"
                }
            );
        }
        let rules: BTreeSet<&str> = left.iter().map(|(_, f)| f.rule).collect();
        let _ = write!(
            message,
            "\nNothing was written. Each such statement would carry the allow line above it, with your reason: \
             say why, once per rule, and run it again:\n  gcbb db revert {migration} {}",
            rules
                .iter()
                .map(|r| format!("--allow {r}=\"<reason>\""))
                .collect::<Vec<_>>()
                .join(" ")
        );
    }
    if !unused.is_empty() {
        let _ = write!(
            message,
            "\n--allow given for rule(s) no statement of the revert breaks: {} (nothing was written)",
            unused.join(", ")
        );
    }
    Err(MigrateError::RevertRefused(message))
}
