//! `PATCH /api/companion/:companionId`: the owner edits a companion; everything that cached it
//! is invalidated so the next dashboard request shows the change.

use std::sync::Arc;

use axum::extract::State;
use axum::http::Uri;
use axum::routing::patch;
use axum::{Json, Router};
use serde::Deserialize;

use crate::cache::keys::{self, Area};
use crate::db::categories;
use crate::db::companions::{self, CompanionChanges, OwnedCompanion};
use crate::platform::app::App;
use crate::platform::auth::Viewer;
use crate::platform::error::ApiError;
use crate::platform::http::JsonBody;
use crate::platform::input::{Id, Query};

/// Longest companion name, in characters.
pub const MAX_NAME_CHARS: usize = 100;
/// Longest avatar URL.
pub const MAX_SRC_CHARS: usize = 2_048;
/// Longest instructions, in characters (the body limit bounds the bytes anyway).
pub const MAX_INSTRUCTIONS_CHARS: usize = 20_000;

pub fn router(app: Arc<App>) -> Router {
    crate::platform::routing::any_path("companion", patch(update_companion)).with_state(app)
}

/// The body: every field optional, unknown fields refused (so a typo isn't silently ignored).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct CompanionPatch {
    name: Option<String>,
    src: Option<String>,
    instructions: Option<String>,
    category_id: Option<String>,
    private: Option<bool>,
}

async fn update_companion(
    State(app): State<Arc<App>>,
    viewer: Viewer,
    uri: Uri,
    JsonBody(patch): JsonBody<CompanionPatch>,
) -> Result<Json<OwnedCompanion>, ApiError> {
    let Viewer::User { user_id } = viewer else {
        return Err(ApiError::Unauthorized(
            "sign in to edit a companion".to_owned(),
        ));
    };
    let companion_id = Query::of(&uri).id("companionId")?;
    let changes = validate(patch)?;
    let client = app.db.get().await?;
    if let Some(category_id) = &changes.category_id {
        if !categories::category_exists(&client, category_id).await? {
            return Err(ApiError::bad_parameter(
                "categoryId",
                "no category with this id",
            ));
        }
    }
    let updated =
        companions::update_owned_companion(&client, companion_id.as_str(), &user_id, &changes)
            .await?
            .ok_or(ApiError::NotFound)?;
    invalidate_caches(&app, companion_id.as_str(), changes.private == Some(true)).await;
    Ok(Json(updated))
}

fn validate(patch: CompanionPatch) -> Result<CompanionChanges, ApiError> {
    let name = patch
        .name
        .map(|n| {
            let n = n.trim().to_owned();
            let len = n.chars().count();
            if len == 0 || len > MAX_NAME_CHARS || n.chars().any(char::is_control) {
                Err(ApiError::bad_parameter(
                    "name",
                    format!(
                        "`name` must be 1–{MAX_NAME_CHARS} characters without control characters"
                    ),
                ))
            } else {
                Ok(n)
            }
        })
        .transpose()?;
    let src = patch
        .src
        .map(|s| {
            let s = s.trim().to_owned();
            let valid = s.len() <= MAX_SRC_CHARS
                && url::Url::parse(&s).is_ok_and(|u| {
                    matches!(u.scheme(), "https" | "http") && u.host_str().is_some()
                });
            if valid {
                Ok(s)
            } else {
                Err(ApiError::bad_parameter(
                    "src",
                    "`src` must be an http(s) URL of at most 2048 characters",
                ))
            }
        })
        .transpose()?;
    let instructions = patch
        .instructions
        .map(|i| {
            let len = i.trim().chars().count();
            if len == 0 || len > MAX_INSTRUCTIONS_CHARS || i.contains('\0') {
                Err(ApiError::bad_parameter(
                    "instructions",
                    format!("`instructions` must be 1–{MAX_INSTRUCTIONS_CHARS} characters"),
                ))
            } else {
                Ok(i)
            }
        })
        .transpose()?;
    let category_id = patch
        .category_id
        .map(|c| Id::parse("categoryId", &c).map(Id::into_string))
        .transpose()?;
    let changes = CompanionChanges {
        name,
        src,
        instructions,
        category_id,
        private: patch.private,
    };
    if changes == CompanionChanges::default() {
        return Err(ApiError::bad_parameter(
            "body",
            "nothing to change: give at least one of name, src, instructions, categoryId, private",
        ));
    }
    Ok(changes)
}

/// Drops the companion's own entries and makes every dashboard page and cached reply stale.
/// When the companion became private, stale pages are deleted outright: a stale entry may be
/// served while another request rebuilds it, and it must not list a now-private companion.
/// A cache failure is logged (by the cache) and not fatal: entries expire on their own, and
/// a cache that is down is bypassed anyway.
async fn invalidate_caches(app: &App, companion_id: &str, made_private: bool) {
    let _ = app.cache.invalidate(&keys::companion(companion_id)).await;
    let _ = app.cache.bump_generation(Area::Dashboard).await;
    let _ = app.cache.bump_generation(Area::BotReply).await;
    if made_private {
        let pattern = app.cache.keyspace().area_pattern(Area::Dashboard);
        let _ = app.cache.clear_pattern(&pattern).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn patch(json: &str) -> Result<CompanionChanges, ApiError> {
        validate(serde_json::from_str(json).unwrap())
    }

    fn rejected(json: &str) -> String {
        match patch(json) {
            Err(ApiError::BadParameter { param, .. }) => param,
            other => panic!("{json}: {other:?}"),
        }
    }

    #[test]
    fn valid_changes_are_trimmed_and_kept() {
        let c = patch(r#"{"name":"  Ada  ","private":true}"#).unwrap();
        assert_eq!(c.name.as_deref(), Some("Ada"));
        assert_eq!(c.private, Some(true));
        assert_eq!(c.src, None);
    }

    #[test]
    fn bad_fields_are_named() {
        assert_eq!(rejected(r#"{"name":""}"#), "name");
        assert_eq!(
            rejected(&format!(r#"{{"name":"{}"}}"#, "x".repeat(101))),
            "name"
        );
        assert_eq!(rejected(r#"{"name":"a\u0007b"}"#), "name");
        assert_eq!(rejected(r#"{"src":"javascript:alert(1)"}"#), "src");
        assert_eq!(rejected(r#"{"src":"not a url"}"#), "src");
        assert_eq!(rejected(r#"{"instructions":"   "}"#), "instructions");
        assert_eq!(rejected(r#"{"categoryId":"x' OR 1=1 --"}"#), "categoryId");
        assert_eq!(rejected(r#"{}"#), "body");
    }
}
