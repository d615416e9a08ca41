//! `gcbb db drift`: replays the migration history into a shadow database, introspects it and the
//! target, and reports the difference in Prisma's drift-summary wording and order.
//!
//! Direction, as Prisma: the history (shadow) is "before", the target (the real database) is
//! "after". `[+] Added index` means the target has an index the history never created: an index
//! built by hand, as production's were before `20250311000000_add_performance_indexes` recorded
//! them.
//!
//! Compared: tables, columns, primary keys, indexes, foreign keys, enums, views, materialized
//! views and extensions. Not compared: functions, triggers, sequence options, grants and comments.
//! `diff` finds the steps, `render` words them as Prisma does, `write` turns the ones that have an
//! `IF NOT EXISTS` form into a migration; the shadow's safety is `super::shadow`.

mod diff;
mod render;
mod write;

use std::path::Path;

use gcbb::db::DbConfig;
use serde::Serialize;

pub use diff::{default_kind, diff, Step, TableChange};
pub use render::render_summary;
pub use write::{if_not_exists, migration_sql, write_migration};

use super::config::MigrateSettings;
use super::error::MigrateError;
use super::introspect::{self, Schema};
use super::{apply, files, shadow};

/// What `gcbb db drift` found.
#[derive(Debug, Clone, Serialize)]
pub struct DriftReport {
    pub drift: bool,
    pub steps: Vec<Step>,
    pub summary: String,
    /// Local migrations replayed into the shadow.
    pub migrations: usize,
}

/// Replays `dir` into the emptied `shadow`, introspects both, and diffs. Leaves the shadow empty.
pub async fn drift(
    target: &DbConfig,
    shadow: &DbConfig,
    dir: &Path,
    force: bool,
) -> Result<(DriftReport, Schema), MigrateError> {
    shadow::check_shadow(target, shadow, force)?;
    let local = files::load_migrations(dir)?;
    let (target_client, shadow_client) = shadow::open(target, shadow, force).await?;
    shadow::empty_database(&shadow_client).await?;
    // History is replayed as it is: linting old files belongs to `deploy`, not to a comparison.
    let replayed = apply::apply_pending(shadow, dir, &MigrateSettings::default()).await;
    let result = match replayed {
        Ok(_) => {
            let before = introspect::introspect(&shadow_client).await;
            let after = introspect::introspect(&target_client).await;
            before.and_then(|b| after.map(|a| (b, a)))
        }
        Err(e) => Err(e),
    };
    let cleaned = shadow::empty_database(&shadow_client).await;
    let (history_schema, target_schema) = result?;
    cleaned?;
    let steps = diff(&history_schema, &target_schema);
    let summary = render_summary(&steps);
    Ok((
        DriftReport {
            drift: !steps.is_empty(),
            summary,
            steps,
            migrations: local.len(),
        },
        target_schema,
    ))
}
