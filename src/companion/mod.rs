//! `PATCH /api/companion/:companionId`: the owner edits a companion; everything that cached it
//! is invalidated so the next dashboard request shows the change.
//!
//! Making a companion private is a write that reaches every cache or is seen to fail: the
//! database bumps its privacy epoch in the same transaction (a trigger, which also records the
//! CDN purge it owes in the purge outbox), every cache key that could list the companion carries
//! the epoch ([`crate::platform::privacy`]), the new epoch is shared through the cache at once,
//! and the PATCH answers only after every instance that can reach the database must have
//! confirmed it. The CDN's copies are deleted by draining the outbox after the response (and by
//! the cron, should that fail). Other edits are best-effort: cached pages are invalidated, and
//! where a cache is unreachable they expire on their own. Only what changed is invalidated and
//! purged: an edit that changes nothing costs no purge.

use std::sync::Arc;

use axum::extract::State;
use axum::http::Uri;
use axum::response::{IntoResponse, Response};
use axum::routing::{patch, MethodRouter};
use axum::Json;
use serde::Deserialize;

use crate::cache::keys::{self, Area};
use crate::cdn::{self, Purge};
use crate::config::AvatarHosts;
use crate::db::categories;
use crate::db::companions::{self, CompanionChanges, CompanionEdit};
use crate::id::{CategoryId, CompanionId};
use crate::platform::app::App;
use crate::platform::auth::Viewer;
use crate::platform::background::Background;
use crate::platform::error::ApiError;
use crate::platform::http::{BodyLimit, JsonBody};
use crate::platform::input::{DisplayName, Query};
use crate::platform::outbox;
use crate::platform::privacy::PRIVACY_PROPAGATION_WAIT;
use crate::platform::ratelimit::{self, Client, RouteLimit};

/// Longest companion name, in characters.
pub const MAX_NAME_CHARS: usize = 100;
/// Longest avatar URL.
pub const MAX_SRC_CHARS: usize = 2_048;
/// Longest instructions, in characters (the body limit bounds the bytes anyway).
pub const MAX_INSTRUCTIONS_CHARS: usize = 20_000;

pub fn router(app: Arc<App>) -> MethodRouter {
    // The limit is a layer so a declared oversized body is refused before auth or the database
    // (and `BODY_LIMIT_BYTES` applies here as on the other routes).
    let limit = BodyLimit(app.config.body_limit);
    patch(update_companion).with_state(app).layer(limit)
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
    bg: Background,
    uri: Uri,
    client: Client,
    JsonBody(patch): JsonBody<CompanionPatch>,
) -> Result<Response, ApiError> {
    let Viewer::User { user_id } = &viewer else {
        return Err(ApiError::Unauthorized(
            "sign in to edit a companion".to_owned(),
        ));
    };
    let companion_id: CompanionId = Query::of(&uri).id("companionId")?;
    let changes = validate(patch, &app.config.avatar_hosts)?;
    let allowed = ratelimit::check(&app, edit_limit(&app), &viewer, &client).await?;
    let client = app.db.get().await?;
    if let Some(category_id) = &changes.category_id {
        if !categories::category_exists(&client, category_id).await? {
            return Err(ApiError::bad_parameter(
                "categoryId",
                "no category with this id",
            ));
        }
    }
    let edit = companions::update_owned_companion(&client, &companion_id, user_id, &changes)
        .await?
        .ok_or(ApiError::NotFound)?;
    drop(client);
    if edit.changes_anything() {
        invalidate_caches(&app, &companion_id).await;
        purge_cdn_later(&app, &bg, &edit);
    }
    if edit.hides() {
        // Every instance that reaches the database serves under an epoch confirmed at most
        // EPOCH_CURRENT_FOR ago; once this wait is over, all of them have seen this change.
        tokio::time::sleep(PRIVACY_PROPAGATION_WAIT).await;
    }
    Ok(ratelimit::apply(allowed, Json(edit.after).into_response()))
}

/// Edits are limited per user.
fn edit_limit(app: &App) -> RouteLimit {
    RouteLimit {
        route: "companion-edit",
        signed_in: app.config.companion_edit_rate_limit,
        anonymous: None,
    }
}

fn validate(
    patch: CompanionPatch,
    avatar_hosts: &AvatarHosts,
) -> Result<CompanionChanges, ApiError> {
    let name = patch
        .name
        .map(|n| DisplayName::parse("name", &n, MAX_NAME_CHARS).map(DisplayName::into_string))
        .transpose()?;
    let src = patch
        .src
        .map(|s| avatar_url(&s, avatar_hosts))
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
        .map(|c| CategoryId::parse("categoryId", &c))
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

/// An avatar URL as stored: `https:` on an allowed image host ([`AvatarHosts`]), in the parsed
/// URL's serialization (so what is stored is what the rule was checked on: `"`, `<`, `>` and
/// spaces percent-encoded, the host lower-case), at most [`MAX_SRC_CHARS`].
fn avatar_url(raw: &str, hosts: &AvatarHosts) -> Result<String, ApiError> {
    let refused = || {
        ApiError::bad_parameter(
            "src",
            format!(
                "`src` must be an https URL on an allowed image host ({}), of at most \
                 {MAX_SRC_CHARS} characters",
                hosts.describe()
            ),
        )
    };
    let raw = raw.trim();
    if raw.len() > MAX_SRC_CHARS {
        return Err(refused());
    }
    let url = url::Url::parse(raw).map_err(|_| refused())?;
    if !hosts.allows(&url) || url.as_str().len() > MAX_SRC_CHARS {
        return Err(refused());
    }
    Ok(url.into())
}

/// Drops the companion's cached profile and makes every dashboard page and cached reply stale.
/// Best-effort: a cache failure is logged (by the cache) and not fatal. Privacy doesn't depend
/// on it: pages cached before a companion was hidden are under an older epoch's keys (reading
/// the epoch now also shares it with every instance).
async fn invalidate_caches(app: &App, companion_id: &CompanionId) {
    if let Ok(epoch) = app.privacy.read_now(app).await {
        let profile = keys::companion(companion_id.as_str()).at_privacy_epoch(epoch);
        let _ = app.cache.invalidate(&profile).await;
    }
    let _ = app.cache.bump_generation(Area::Dashboard).await;
    let _ = app.cache.bump_generation(Area::BotReply).await;
}

/// Tells Vercel's CDN what changed on public pages, after the response (retried, logged, never
/// failing the PATCH). A companion made private has its tag deleted by draining the purge
/// outbox (its row was written with the change). Otherwise, for what public pages show:
/// one made public marks every dashboard page stale; a public one renamed, re-pictured or moved
/// marks the pages listing it stale (and the category it moved to). A private companion, or an
/// edit of the instructions alone, is on no public page: nothing to purge.
fn purge_cdn_later(app: &Arc<App>, bg: &Background, edit: &CompanionEdit) {
    if !app.cdn.is_enabled() {
        return;
    }
    if edit.hides() {
        let app = Arc::clone(app);
        bg.wait_until(async move {
            outbox::log_outcome(outbox::drain(&app).await);
        });
        return;
    }
    let tags = stale_tags(edit);
    if tags.is_empty() {
        return;
    }
    let cdn = app.cdn.clone();
    bg.wait_until(async move {
        cdn.purge_coalesced(Purge::Invalidate, tags).await;
    });
}

/// The tags of public pages an edit (one that doesn't hide the companion) makes stale.
fn stale_tags(edit: &CompanionEdit) -> Vec<String> {
    let (before, after) = (&edit.before, &edit.after);
    if after.private {
        return Vec::new();
    }
    let mut tags = Vec::new();
    if before.private {
        tags.push(cdn::DASHBOARD_TAG.to_owned());
        tags.push(cdn::companion_tag(after.id.as_str()));
        return tags;
    }
    if before.name != after.name
        || before.src != after.src
        || before.category_id != after.category_id
    {
        tags.push(cdn::companion_tag(after.id.as_str()));
    }
    if before.category_id != after.category_id {
        tags.push(cdn::category_tag(after.category_id.as_str()));
    }
    tags
}

#[cfg(test)]
mod tests {
    use super::*;

    fn patch(json: &str) -> Result<CompanionChanges, ApiError> {
        validate(serde_json::from_str(json).unwrap(), &AvatarHosts::default())
    }

    fn rejected(json: &str) -> String {
        match patch(json) {
            Err(ApiError::BadParameter { param, .. }) => param,
            other => panic!("{json}: {other:?}"),
        }
    }

    fn owned(private: bool, name: &str, category: &str) -> companions::OwnedCompanion {
        companions::OwnedCompanion {
            id: CompanionId::issued("c1"),
            name: name.into(),
            src: "https://img.example/a.png".into(),
            instructions: "Be kind.".into(),
            category_id: CategoryId::issued(category),
            private,
            updated_at: chrono::NaiveDateTime::default(),
        }
    }

    fn edit(
        before: companions::OwnedCompanion,
        after: companions::OwnedCompanion,
    ) -> CompanionEdit {
        CompanionEdit { before, after }
    }

    #[test]
    fn only_what_public_pages_show_and_changed_is_marked_stale() {
        let same = edit(owned(false, "Ada", "cat_1"), owned(false, "Ada", "cat_1"));
        assert!(!same.changes_anything());
        assert!(stale_tags(&same).is_empty());
        let renamed = edit(owned(false, "Ada", "cat_1"), owned(false, "Eve", "cat_1"));
        assert_eq!(stale_tags(&renamed), ["companion:c1"]);
        let moved = edit(owned(false, "Ada", "cat_1"), owned(false, "Ada", "cat_2"));
        assert_eq!(
            stale_tags(&moved),
            ["companion:c1", "dashboard:category:cat_2"]
        );
        let published = edit(owned(true, "Ada", "cat_1"), owned(false, "Ada", "cat_1"));
        assert_eq!(stale_tags(&published), ["dashboard", "companion:c1"]);
        let private_edit = edit(owned(true, "Ada", "cat_1"), owned(true, "Eve", "cat_2"));
        assert!(private_edit.changes_anything());
        assert!(stale_tags(&private_edit).is_empty());
        let hidden = edit(owned(false, "Ada", "cat_1"), owned(true, "Ada", "cat_1"));
        assert!(hidden.hides());
        assert!(!renamed.hides());
        let mut instructions = owned(false, "Ada", "cat_1");
        instructions.instructions = "Be brief.".into();
        let instructions = edit(owned(false, "Ada", "cat_1"), instructions);
        assert!(instructions.changes_anything());
        assert!(stale_tags(&instructions).is_empty());
    }

    #[test]
    fn valid_changes_are_trimmed_and_kept() {
        let c = patch(r#"{"name":"  Ada  ","private":true}"#).unwrap();
        assert_eq!(c.name.as_deref(), Some("Ada"));
        assert_eq!(c.private, Some(true));
        assert_eq!(c.src, None);
    }

    #[test]
    fn an_allowed_avatar_is_stored_as_its_parsed_serialization() {
        let c = patch(r#"{"src":"  https://IMG.clerk.com/a b\"<x>.png?w=1#f  "}"#).unwrap();
        assert_eq!(
            c.src.as_deref(),
            Some("https://img.clerk.com/a%20b%22%3Cx%3E.png?w=1#f")
        );
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
        for hostile in [
            "http://img.clerk.com/a.png",
            "https://127.0.0.1:9/track.png",
            "https://169.254.169.254/latest/meta-data",
            "https://localhost/a.png",
            "https://tracker.example/pixel.gif",
            "https://img.clerk.com.evil.test/a.png",
            "https://img.clerk.com@evil.test/a.png",
            "data:image/png;base64,AAAA",
            "//img.clerk.com/a.png",
        ] {
            let body = serde_json::json!({ "src": hostile }).to_string();
            assert_eq!(rejected(&body), "src", "{hostile}");
        }
        assert_eq!(rejected(r#"{"instructions":"   "}"#), "instructions");
        assert_eq!(rejected(r#"{"categoryId":"x' OR 1=1 --"}"#), "categoryId");
        assert_eq!(rejected(r#"{}"#), "body");
    }
}
