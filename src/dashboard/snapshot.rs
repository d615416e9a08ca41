//! The cron's static snapshots: the first anonymous page of "all" and of each category, written
//! for every instance to serve when its own cache misses. This module owns their key, their
//! lifetime, reading one, and rebuilding them all.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;

use super::page::PageBody;
use super::{build_anonymous_page_with, DashboardParams};
use crate::cache::keys::{self, Key};
use crate::cache::CacheError;
use crate::db::{categories, DbError};
use crate::id::CategoryId;
use crate::platform::app::App;
use crate::platform::error::ApiError;

/// Lifetime of the snapshots (rebuilt by every cron run); they are generation-checked, so an
/// edit still invalidates them at once.
pub const SNAPSHOT_TTL: Duration = Duration::from_secs(24 * 60 * 60);

/// The snapshot of a category's first page (or of all), under the privacy epoch like the pages.
pub fn key(category_id: Option<&str>, epoch: i64) -> Key {
    keys::dashboard_snapshot(category_id).at_privacy_epoch(epoch)
}

/// The snapshot of `category_id`'s first page, if one is cached and readable.
pub async fn read(app: &App, category_id: Option<&str>, epoch: i64) -> Option<Bytes> {
    app.cache
        .get(&key(category_id, epoch))
        .await
        .value
        .filter(|raw| PageBody::from_cached(raw).is_some())
}

/// Why a rebuild did not write every snapshot.
#[derive(Debug, thiserror::Error)]
pub enum RebuildError {
    #[error(transparent)]
    Db(#[from] DbError),
    #[error("page build: {}", .0.code())]
    Page(ApiError),
    #[error("cache: {}; {failed} of {total} snapshots not written", .kind.kind())]
    Cache {
        kind: CacheError,
        failed: usize,
        total: usize,
    },
}

/// Writes the first page of "all" and of each category (the categories listed once, for all
/// of them); returns how many were written.
pub async fn rebuild_all(app: &Arc<App>) -> Result<usize, RebuildError> {
    // Read now, not the process's recent view: snapshots are served by every instance, and one
    // written under an epoch older than the database's would never be read anyway.
    let epoch = app.privacy.read_now(app.as_ref()).await?;
    let categories = async {
        let client = app.db.get().await?;
        categories::list_categories(&client).await
    }
    .await?;
    let pages = std::iter::once(None).chain(categories.iter().map(|c| Some(c.id.clone())));
    let (mut written, mut failed, mut last_error) = (0, 0, None);
    for category_id in pages {
        let params = DashboardParams::first_page_of(category_id.clone());
        let page = build_anonymous_page_with(app, &params, categories.clone())
            .await
            .map_err(RebuildError::Page)?;
        let at = key(category_id.as_ref().map(CategoryId::as_str), epoch);
        match app.cache.put(&at, page.to_cached(), SNAPSHOT_TTL).await {
            Ok(()) => written += 1,
            Err(e) => {
                failed += 1;
                last_error = Some(e);
            }
        }
    }
    match last_error {
        None => Ok(written),
        Some(kind) => Err(RebuildError::Cache {
            kind,
            failed,
            total: written + failed,
        }),
    }
}
