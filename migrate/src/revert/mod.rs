//! `gcbb db revert <migration>`: the seed's emergency rollback, "a new migration that reverts the
//! problematic changes", computed instead of written by hand.
//!
//! Computed on the shadow database: the history up to the migration is replayed and read, the
//! history before it likewise, and the difference between the two (`drift`'s diff, turned around)
//! is rendered as SQL that turns the first into the second. The SQL is laid out as `deploy` runs
//! it: an index built or dropped `CONCURRENTLY` alone in a file of its own (drops before the main
//! file, builds after it), everything else in one transactional file, in an order where nothing is
//! dropped before what depends on it.
//!
//! The files are linted like any file. A statement that destroys data written since the migration
//! ran (a `DROP COLUMN` of the column it added, a `DROP TABLE` of its table, a type change) breaks
//! a lint rule, and the revert is refused, nothing written, until the caller says why the data may
//! go (`--allow RULE=REASON`, written above each such statement as `-- gcbb:allow RULE REASON`).
//! Drops that lose nothing (a view, a type, created by the migration itself) carry an allow that
//! says so. Before anything is written the files are replayed on the shadow on top of the whole
//! history: a revert that does not apply there (a later migration depends on what it drops) is
//! refused, and what it leaves different from a history without the migration is reported.
//!
//! Only schema is reverted: rows a migration inserted or updated are data, which no diff of two
//! schemas can see, and data a migration dropped is not brought back (that is Neon's
//! point-in-time restore, or `pg_restore` of a `--backup` archive).

mod allows;
mod plan;
mod sql;

use std::path::{Path, PathBuf};

use chrono::{DateTime, Duration as ChronoDuration, NaiveDateTime, Utc};
use serde::Serialize;

use gcbb::db::DbConfig;

use crate::apply::{deploy_locked, with_lock};
use crate::config::MigrateSettings;
use crate::drift::{diff, render_summary};
use crate::error::MigrateError;
use crate::files::{self, LocalMigration};
use crate::history;
use crate::introspect;
use crate::lint::{self, Finding};
use crate::lint_gate::lint_context;
use crate::shadow;

use allows::apply_allows;
pub use allows::{parse_allow, DATA_DESTROYING_RULES};
use plan::Renderer;
use sql::{header, render_file};

/// What `gcbb db revert` is asked.
#[derive(Debug, Clone, Default)]
pub struct RevertOptions {
    /// `(rule, reason)`: why a statement breaking `rule` is acceptable here.
    pub allows: Vec<(String, String)>,
    /// Accept a shadow whose name lacks `shadow` or that holds a history (as `drift --force`).
    pub force: bool,
}

/// One file of the revert.
#[derive(Debug, Clone, Serialize)]
pub struct RevertFile {
    /// The migration directory's name, `<timestamp>_revert_<name>…`.
    pub name: String,
    pub sql: String,
}

/// The computed revert, not written yet.
#[derive(Debug, Clone, Serialize)]
pub struct Revert {
    pub migration: String,
    /// What the revert changes, in drift's words (the history up to the migration → before it).
    pub summary: String,
    /// Each file's statements, shortened, in order: what the revert does.
    pub statements: Vec<String>,
    pub files: Vec<RevertFile>,
    /// Lint warnings of the files (errors refuse the revert).
    #[serde(skip)]
    pub warnings: Vec<Finding>,
    pub notes: Vec<String>,
}

/// The migration's name without its timestamp, for the revert's name.
fn short_name(migration: &str) -> &str {
    match migration.split_once('_') {
        Some((ts, rest)) if ts.len() == 14 && ts.chars().all(|c| c.is_ascii_digit()) => rest,
        _ => migration,
    }
}

/// The first timestamp after every local migration's and not before `now`: the revert must sort
/// after the history, or a replay (drift, a fresh deploy) would run it before what it reverts.
fn first_timestamp(local: &[LocalMigration], now: DateTime<Utc>) -> DateTime<Utc> {
    let last = local
        .iter()
        .filter_map(|m| m.name.get(..14))
        .filter_map(|ts| NaiveDateTime::parse_from_str(ts, "%Y%m%d%H%M%S").ok())
        .map(|t| t.and_utc())
        .max();
    match last {
        Some(last) if last >= now => last + ChronoDuration::seconds(1),
        _ => now,
    }
}

/// Computes the revert of `migration` (of the migrations in `dir`, applied to `db`) on `shadow`,
/// lints it, and checks it on the shadow on top of the whole history. Writes nothing: see
/// [`write`]. The shadow is left empty.
pub async fn revert(
    db: &DbConfig,
    shadow_db: &DbConfig,
    dir: &Path,
    migration: &str,
    options: &RevertOptions,
    now: DateTime<Utc>,
) -> Result<Revert, MigrateError> {
    let local = files::load_migrations(dir)?;
    let at = local
        .iter()
        .position(|m| m.name == migration)
        .ok_or_else(|| MigrateError::NotFoundLocally {
            name: migration.to_owned(),
        })?;
    shadow::check_shadow(db, shadow_db, options.force)?;
    let (target_client, shadow_client) = shadow::open(db, shadow_db, options.force).await?;
    let rows = if history::migrations_table_exists(&target_client).await? {
        history::list_rows(&target_client).await?
    } else {
        Vec::new()
    };
    let same: Vec<_> = rows
        .iter()
        .filter(|r| r.migration_name == migration)
        .collect();
    if !same.iter().any(|r| r.is_applied()) {
        let state = if same.iter().any(|r| r.is_failed()) {
            "it failed and is not applied: fix the database by hand, then `gcbb db resolve --rolled-back` it"
        } else if same.is_empty() {
            "it is pending: it never ran there, so there is nothing to revert; change or remove the file before it is deployed"
        } else {
            "it was rolled back"
        };
        return Err(MigrateError::RevertRefused(format!(
            "`{migration}` is not applied to {}: {state}",
            db.redacted()
        )));
    }
    let ctx = lint_context(&target_client).await?;
    drop(target_client);

    let settings = MigrateSettings::default();
    let replay = |ms: Vec<LocalMigration>| {
        let client = &shadow_client;
        let settings = &settings;
        async move {
            shadow::empty_database(client).await?;
            with_lock(client, settings, deploy_locked(client, &ms, settings)).await?;
            introspect::introspect(client).await
        }
    };
    let result = async {
        let without = replay(local[..at].to_vec()).await?;
        let with = replay(local[..=at].to_vec()).await?;
        let steps = diff(&with, &without);
        if steps.is_empty() {
            return Err(MigrateError::RevertRefused(format!(
                "`{migration}` changed no schema (tables, columns, keys, indexes, views, functions, triggers, \
                 types, extensions): nothing to revert. Rows it changed are data: restore them from a backup \
                 or Neon's point-in-time restore"
            )));
        }
        let renderer = Renderer {
            migration,
            with: &with,
            without: &without,
            steps: &steps,
        };
        let (mut planned, impossible) = renderer.plan();
        if !impossible.is_empty() {
            return Err(MigrateError::RevertRefused(format!(
                "`{migration}` cannot be reverted by a migration; nothing was written. What it did that no \
                 statement undoes:\n  {}",
                impossible.join("\n  ")
            )));
        }
        let findings = apply_allows(&mut planned, &options.allows, &ctx, migration, now)?;
        let first = first_timestamp(&local, now);
        let parts = planned.len();
        let short = short_name(migration);
        let files: Vec<RevertFile> = planned
            .iter()
            .enumerate()
            .map(|(i, p)| {
                let ts = first + ChronoDuration::seconds(i as i64);
                let raw = if p.suffix.is_empty() {
                    format!("revert_{short}")
                } else {
                    format!("revert_{short}_{}", p.suffix)
                };
                let name = format!(
                    "{}_{}",
                    ts.format("%Y%m%d%H%M%S"),
                    files::sanitize_name(&raw).unwrap_or_else(|| "revert".to_owned())
                );
                let (sql, _) = render_file(&header(migration, &p.what, i + 1, parts, now), &p.stmts);
                RevertFile { name, sql }
            })
            .collect();

        // Checked on the shadow: the whole history, then the revert.
        let mut all = local.clone();
        all.extend(files.iter().map(|f| LocalMigration {
            name: f.name.clone(),
            path: dir.join(&f.name).join(files::MIGRATION_FILE),
            checksum: files::checksum(f.sql.as_bytes()),
            script: f.sql.clone(),
        }));
        let reverted = replay(all).await.map_err(|e| {
            MigrateError::RevertRefused(format!(
                "the revert of `{migration}` does not apply on top of the whole history (checked on the \
                 shadow database; a later migration may depend on what it drops); nothing was written:\n{e}"
            ))
        })?;
        let mut notes = Vec::new();
        let mut rest = local.clone();
        rest.remove(at);
        match replay(rest).await {
            Ok(without_it) => {
                let left = diff(&without_it, &reverted);
                if !left.is_empty() {
                    notes.push(format!(
                        "after the revert the schema still differs from the history without `{migration}` \
                         (later migrations changed what it made):{}",
                        render_summary(&left).replace('\n', "\n  ")
                    ));
                }
            }
            Err(e) => notes.push(format!(
                "the history without `{migration}` does not replay (later migrations need it), so the \
                 result could not be compared with it: {e}"
            )),
        }
        let statements = planned
            .iter()
            .zip(&files)
            .flat_map(|(p, f)| {
                p.stmts
                    .iter()
                    .map(move |s| format!("{}: {}", f.name, lint::excerpt(&s.sql)))
            })
            .collect();
        Ok(Revert {
            migration: migration.to_owned(),
            summary: render_summary(&steps),
            statements,
            files,
            warnings: findings,
            notes,
        })
    }
    .await;
    let cleaned = shadow::empty_database(&shadow_client).await;
    let revert = result?;
    cleaned?;
    Ok(revert)
}

/// Writes each file of `revert` as `<dir>/<name>/migration.sql`; returns their paths. Refuses to
/// overwrite a directory that exists.
pub fn write(dir: &Path, revert: &Revert) -> Result<Vec<PathBuf>, MigrateError> {
    let mut written = Vec::new();
    for f in &revert.files {
        let folder = dir.join(&f.name);
        let io = |path: &Path, e: std::io::Error| MigrateError::Files {
            path: path.to_path_buf(),
            message: e.to_string(),
        };
        std::fs::create_dir(&folder).map_err(|e| io(&folder, e))?;
        let file = folder.join(files::MIGRATION_FILE);
        std::fs::write(&file, &f.sql).map_err(|e| io(&file, e))?;
        written.push(file);
    }
    Ok(written)
}

#[cfg(test)]
mod tests;
