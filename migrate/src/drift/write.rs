//! `gcbb db drift --write-migration`: a migration that records in the history what was built by
//! hand on the target. Every statement is `IF NOT EXISTS`, so the one file is a no-op on the
//! drifted database (which is then marked applied with `gcbb db resolve --applied`) and a real
//! build everywhere else. Only indexes and extensions have such a form; every other step is listed
//! in a comment, for a person to decide.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use chrono::{DateTime, Utc};

use super::diff::Step;
use super::render::{header, item_lines, section_of};
use crate::error::MigrateError;
use crate::introspect::{Index, Schema};
use crate::{files, history};

/// The lint exception every written index carries.
const WRITTEN_INDEX_ALLOW: &str = "-- gcbb:allow create-index-not-concurrently already built by hand on the target database; IF NOT EXISTS makes it a no-op there";

/// `CREATE [UNIQUE] INDEX name ON …` → `CREATE [UNIQUE] INDEX IF NOT EXISTS name ON …`.
pub fn if_not_exists(definition: &str) -> Option<String> {
    for prefix in ["CREATE UNIQUE INDEX ", "CREATE INDEX "] {
        if let Some(rest) = definition.strip_prefix(prefix) {
            return Some(format!("{prefix}IF NOT EXISTS {rest}"));
        }
    }
    None
}

/// The SQL of a migration that records, in history, what was added by hand: indexes (on tables
/// and materialized views the history has) and extensions. Everything else is listed as a
/// comment to write by hand.
pub fn migration_sql(steps: &[Step], target: &Schema, now: DateTime<Utc>) -> String {
    let mut body = String::new();
    let mut skipped = Vec::new();
    let new_tables: Vec<&str> = steps
        .iter()
        .filter_map(|s| match s {
            Step::CreateTable { name } => Some(name.as_str()),
            _ => None,
        })
        .collect();
    for step in steps {
        match step {
            Step::CreateExtension { name } => {
                let schema = target
                    .extensions
                    .get(name)
                    .map(|e| format!(" SCHEMA {}", history::quote_ident(&e.schema)))
                    .unwrap_or_default();
                let _ = writeln!(
                    body,
                    "-- CreateExtension\nCREATE EXTENSION IF NOT EXISTS {}{schema};\n",
                    history::quote_ident(name)
                );
            }
            Step::CreateIndex { table, index } if !new_tables.contains(&table.as_str()) => {
                write_index(&mut body, index, &mut skipped);
            }
            Step::CreateViewIndex { index, .. } => write_index(&mut body, index, &mut skipped),
            other => {
                let mut line = String::new();
                item_lines(other, &mut line);
                let (section, name) = section_of(other);
                let head = header(section, name);
                skipped.push(format!("{} {}", head.trim(), line.trim()).trim().to_owned());
            }
        }
    }
    let mut out = format!(
        "-- Written by `gcbb db drift --write-migration` at {}.\n\
         -- Records in the history what was built by hand on the target database. Every statement is\n\
         -- IF NOT EXISTS: a no-op on the database that already has it, a real build everywhere else.\n\
         -- After reviewing, mark it applied on that database: gcbb db resolve --applied <this directory>\n",
        now.format("%Y-%m-%d %H:%M:%S UTC")
    );
    if !skipped.is_empty() {
        out.push_str(
            "--\n-- Not written (no safe IF NOT EXISTS form, or it needs a decision): write these by hand.\n",
        );
        for s in &skipped {
            let _ = writeln!(out, "--   {}", s.replace('\n', " "));
        }
    }
    out.push('\n');
    out.push_str(&body);
    out
}

fn write_index(body: &mut String, index: &Index, skipped: &mut Vec<String>) {
    match if_not_exists(&index.definition) {
        Some(sql) => {
            let _ = writeln!(body, "-- CreateIndex\n{WRITTEN_INDEX_ALLOW}\n{sql};\n");
        }
        None => skipped.push(format!("index {}: {}", index.name, index.definition)),
    }
}

/// Writes `<dir>/<timestamp>_<name>/migration.sql` with [`migration_sql`]; returns its path.
pub fn write_migration(
    dir: &Path,
    name: &str,
    steps: &[Step],
    target: &Schema,
    now: DateTime<Utc>,
) -> Result<PathBuf, MigrateError> {
    let path = files::create_migration(dir, name, now)?;
    std::fs::write(&path, migration_sql(steps, target, now)).map_err(|e| MigrateError::Files {
        path: path.clone(),
        message: e.to_string(),
    })?;
    Ok(path)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn index_definitions_gain_if_not_exists() {
        assert_eq!(
            if_not_exists("CREATE UNIQUE INDEX \"a\" ON public.t USING btree (x)").as_deref(),
            Some("CREATE UNIQUE INDEX IF NOT EXISTS \"a\" ON public.t USING btree (x)")
        );
        assert_eq!(
            if_not_exists("CREATE INDEX a ON public.t USING gin (x)").as_deref(),
            Some("CREATE INDEX IF NOT EXISTS a ON public.t USING gin (x)")
        );
        assert_eq!(if_not_exists("DROP INDEX a"), None);
    }
}
