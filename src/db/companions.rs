//! Queries of `"Companion"` and of its read model `"CompanionDashboard"`.
//!
//! Dashboard pages are ordered and counted from the read model (refreshed by the cron route)
//! and their displayed fields come from the base table, so an edit shows at once and a
//! companion made private disappears at once; one made public appears after the next refresh.
//!
//! One idea, kept in one file on purpose (over 600 lines): the queries of one table and its read
//! model, each beside its SQL; the dashboard page queries are the bulk of it.

use std::time::Duration;

use serde::{Deserialize, Serialize};
use tokio_postgres::types::Type;
use tokio_postgres::Row;

use super::{DbError, PooledClient, Querier};
use crate::id::{CategoryId, CompanionId, Id, UserId};

/// What the chat paths need of a companion.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct CompanionPrompt {
    pub id: CompanionId,
    pub name: String,
    pub instructions: String,
    pub user_id: UserId,
    pub private: bool,
}

/// The companion, if the viewer may see it: public, or their own.
pub async fn find_visible_companion(
    client: &impl Querier,
    companion_id: &CompanionId,
    viewer_id: Option<&UserId>,
) -> Result<Option<CompanionPrompt>, DbError> {
    let rows = client
        .query_typed(
            r#"SELECT "id", "name", "instructions", "userId", "private"
               FROM "Companion"
               WHERE "id" = $1 AND (NOT "private" OR "userId" = $2)"#,
            &[(&companion_id, Type::TEXT), (&viewer_id, Type::TEXT)],
        )
        .await?;
    Ok(rows.first().map(|r| CompanionPrompt {
        id: r.get(0),
        name: r.get(1),
        instructions: r.get(2),
        user_id: r.get(3),
        private: r.get(4),
    }))
}

/// The filters and window of a dashboard page, already validated.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct PageFilter {
    pub category_id: Option<CategoryId>,
    /// Case-insensitive "name contains", as typed by the user (escaped here).
    pub name_contains: Option<String>,
    pub limit: i64,
    pub offset: i64,
}

/// Longest search that means "names starting with it" rather than "names containing it": a
/// pattern this short has no trigram for the trigram index to search by, and a search box
/// sends exactly these while the first letters are typed.
pub const MAX_PREFIX_SEARCH_CHARS: usize = 2;

impl PageFilter {
    /// The "name contains" fragment of a search of three characters or more, escaped for
    /// `ILIKE '%' || $n || '%'`.
    fn like_fragment(&self) -> Option<String> {
        self.name_contains
            .as_deref()
            .filter(|q| !is_prefix_search(q))
            .map(escape_like)
    }

    /// A one- or two-character search (already lower-cased): names starting with it.
    pub fn name_prefix(&self) -> Option<&str> {
        self.name_contains
            .as_deref()
            .filter(|q| is_prefix_search(q))
    }
}

fn is_prefix_search(q: &str) -> bool {
    (1..=MAX_PREFIX_SEARCH_CHARS).contains(&q.chars().count())
}

/// `sql` with each "name contains `$param`" condition (`X."name" ILIKE '%' || $param || '%'`)
/// turned into "name starts with `$param`", written as the prefix indexes of the read model
/// are (`lower(left(X."name", n)) = $param`, `n` the prefix's length in characters).
fn with_prefix_match(sql: &str, param: &str, n: usize) -> String {
    let mut out = sql.to_owned();
    for alias in ["c.", "d.", ""] {
        out = out.replace(
            &format!(r#"{alias}"name" ILIKE '%' || {param} || '%'"#),
            &format!(r#"lower(left({alias}"name", {n})) = {param}"#),
        );
    }
    out
}

/// [`with_prefix_match`] of `sql`, made once per process for each prefix length.
fn prefix_variant(cell: &'static std::sync::LazyLock<[String; 2]>, prefix: &str) -> &'static str {
    &cell[prefix.chars().count().clamp(1, 2) - 1]
}

/// A companion as an anonymous visitor sees it on the dashboard: nothing more.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct CompanionCard {
    pub id: CompanionId,
    pub name: String,
    pub src: String,
    pub user_name: String,
    pub category_id: CategoryId,
    pub is_free: bool,
    pub message_count: i32,
}

/// A companion as a signed-in viewer sees it: plus whether it is private (only their own can
/// be) and the tokens this viewer has burned with it.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct ViewerCompanionCard {
    #[serde(flatten)]
    pub card: CompanionCard,
    pub private: bool,
    pub tokens_burned: i32,
}

fn card(r: &Row) -> CompanionCard {
    CompanionCard {
        id: r.get("id"),
        name: r.get("name"),
        src: r.get("src"),
        user_name: r.get("userName"),
        category_id: r.get("categoryId"),
        is_free: r.get("isFree"),
        message_count: r.get("messageCount"),
    }
}

/// The SQL of an anonymous page; `gcbb db verify` explains it to check its plan.
pub const PUBLIC_PAGE_SQL: &str = r#"
SELECT c."id", c."name", c."src", c."userName", c."categoryId", c."isFree", d."messageCount"
FROM (
    SELECT "id", "messageCount", "isSystem", "createdAt"
    FROM "CompanionDashboard"
    WHERE ($1::text IS NULL OR "categoryId" = $1)
      AND ($2::text IS NULL OR "name" ILIKE '%' || $2 || '%')
    ORDER BY "isSystem" DESC, "createdAt" DESC, "id"
    LIMIT $3 OFFSET $4
) d
JOIN "Companion" c ON c."id" = d."id"
WHERE NOT c."private"
  AND ($1::text IS NULL OR c."categoryId" = $1)
  AND ($2::text IS NULL OR c."name" ILIKE '%' || $2 || '%')
ORDER BY d."isSystem" DESC, d."createdAt" DESC, d."id""#;

/// [`PUBLIC_PAGE_SQL`] for a short search (`$2`: the one or two lower-cased first characters):
/// an index scan of `"CompanionDashboard_name_prefix<n>_idx"` in page order.
macro_rules! public_page_prefix_sql {
    ($n:literal) => {
        concat!(
            r#"
SELECT c."id", c."name", c."src", c."userName", c."categoryId", c."isFree", d."messageCount"
FROM (
    SELECT "id", "messageCount", "isSystem", "createdAt"
    FROM "CompanionDashboard"
    WHERE ($1::text IS NULL OR "categoryId" = $1)
      AND lower(left("name", "#,
            $n,
            r#")) = $2
    ORDER BY "isSystem" DESC, "createdAt" DESC, "id"
    LIMIT $3 OFFSET $4
) d
JOIN "Companion" c ON c."id" = d."id"
WHERE NOT c."private"
  AND ($1::text IS NULL OR c."categoryId" = $1)
  AND lower(left(c."name", "#,
            $n,
            r#")) = $2
ORDER BY d."isSystem" DESC, d."createdAt" DESC, d."id""#
        )
    };
}

/// The page of a one-character search.
pub const PUBLIC_PAGE_PREFIX1_SQL: &str = public_page_prefix_sql!(1);
/// The page of a two-character search.
pub const PUBLIC_PAGE_PREFIX2_SQL: &str = public_page_prefix_sql!(2);

/// One page of public companions, platform-owned first, newest first.
pub async fn list_public_page(
    client: &impl Querier,
    filter: &PageFilter,
) -> Result<Vec<CompanionCard>, DbError> {
    if let Some(prefix) = filter.name_prefix() {
        let sql = match prefix.chars().count() {
            1 => PUBLIC_PAGE_PREFIX1_SQL,
            _ => PUBLIC_PAGE_PREFIX2_SQL,
        };
        let rows = client
            .query_typed(
                sql,
                &[
                    (&filter.category_id, Type::TEXT),
                    (&prefix, Type::TEXT),
                    (&filter.limit, Type::INT8),
                    (&filter.offset, Type::INT8),
                ],
            )
            .await?;
        return Ok(rows.iter().map(card).collect());
    }
    let like = filter.like_fragment();
    let rows = client
        .query_typed(
            PUBLIC_PAGE_SQL,
            &[
                (&filter.category_id, Type::TEXT),
                (&like, Type::TEXT),
                (&filter.limit, Type::INT8),
                (&filter.offset, Type::INT8),
            ],
        )
        .await?;
    Ok(rows.iter().map(card).collect())
}

/// The SQL of a signed-in page: the viewer's own companions (fresh, from the base table) merged
/// with everyone else's public ones (ordered by the read model).
pub const VIEWER_PAGE_SQL: &str = r#"
WITH own AS (
    SELECT c."id", c."name", c."src", c."userName", c."categoryId", c."isFree",
           c."private", (c."userId" = $5) AS "isSystem", c."createdAt"
    FROM "Companion" c
    WHERE c."userId" = $6
      AND ($1::text IS NULL OR c."categoryId" = $1)
      AND ($2::text IS NULL OR c."name" ILIKE '%' || $2 || '%')
    ORDER BY "isSystem" DESC, c."createdAt" DESC, c."id"
    LIMIT $3 + $4
), others AS (
    SELECT c."id", c."name", c."src", c."userName", c."categoryId", c."isFree",
           false AS "private", d."isSystem", d."createdAt"
    FROM (
        SELECT "id", "isSystem", "createdAt"
        FROM "CompanionDashboard"
        WHERE "userId" <> $6
          AND ($1::text IS NULL OR "categoryId" = $1)
          AND ($2::text IS NULL OR "name" ILIKE '%' || $2 || '%')
        ORDER BY "isSystem" DESC, "createdAt" DESC, "id"
        LIMIT $3 + $4
    ) d
    JOIN "Companion" c ON c."id" = d."id"
    WHERE NOT c."private"
      AND ($1::text IS NULL OR c."categoryId" = $1)
      AND ($2::text IS NULL OR c."name" ILIKE '%' || $2 || '%')
), page AS (
    SELECT * FROM own
    UNION ALL
    SELECT * FROM others
    ORDER BY "isSystem" DESC, "createdAt" DESC, "id"
    LIMIT $3 OFFSET $4
)
SELECT p."id", p."name", p."src", p."userName", p."categoryId", p."isFree", p."private",
       COALESCE(d."messageCount",
                (SELECT count(*) FROM "Message" m WHERE m."companionId" = p."id")::integer)
           AS "messageCount",
       COALESCE(u."tokensBurned", 0) AS "tokensBurned"
FROM page p
LEFT JOIN "CompanionDashboard" d ON d."id" = p."id"
LEFT JOIN "UserBurnedTokens" u ON u."companionId" = p."id" AND u."userId" = $6
ORDER BY p."isSystem" DESC, p."createdAt" DESC, p."id""#;

/// One page for a signed-in viewer: public companions plus the viewer's own private ones.
pub async fn list_viewer_page(
    client: &impl Querier,
    filter: &PageFilter,
    viewer_id: &UserId,
    system_user_id: &UserId,
) -> Result<Vec<ViewerCompanionCard>, DbError> {
    static PREFIX: std::sync::LazyLock<[String; 2]> =
        std::sync::LazyLock::new(|| [1, 2].map(|n| with_prefix_match(VIEWER_PAGE_SQL, "$2", n)));
    let (sql, pattern) = match filter.name_prefix() {
        Some(prefix) => (prefix_variant(&PREFIX, prefix), Some(prefix.to_owned())),
        None => (VIEWER_PAGE_SQL, filter.like_fragment()),
    };
    let like = pattern;
    let rows = client
        .query_typed(
            sql,
            &[
                (&filter.category_id, Type::TEXT),
                (&like, Type::TEXT),
                (&filter.limit, Type::INT8),
                (&filter.offset, Type::INT8),
                (&system_user_id, Type::TEXT),
                (&viewer_id, Type::TEXT),
            ],
        )
        .await?;
    Ok(rows
        .iter()
        .map(|r| ViewerCompanionCard {
            card: card(r),
            private: r.get("private"),
            tokens_burned: r.get("tokensBurned"),
        })
        .collect())
}

/// The number of public companions matching the filter, or `None` when counting takes longer
/// than `limit` (the server cancels the count; the connection stays usable).
pub async fn count_public(
    client: &mut PooledClient,
    filter: &PageFilter,
    limit: Duration,
) -> Result<Option<i64>, DbError> {
    let like = filter.like_fragment();
    let tx = client.transaction().await?;
    // SET LOCAL takes no parameters; the value is an integer we format ourselves.
    tx.batch_execute(&format!(
        "SET LOCAL statement_timeout = {}",
        limit.as_millis().max(1)
    ))
    .await?;
    let counted = match filter.name_prefix() {
        Some(prefix) => {
            tx.query_typed(
                "SELECT gcbb_count_dashboard_prefix($1, $2)",
                &[(&filter.category_id, Type::TEXT), (&prefix, Type::TEXT)],
            )
            .await
        }
        None => {
            tx.query_typed(
                "SELECT gcbb_count_dashboard($1, $2)",
                &[(&filter.category_id, Type::TEXT), (&like, Type::TEXT)],
            )
            .await
        }
    };
    match counted {
        Ok(rows) => {
            tx.commit().await?;
            Ok(rows.first().map(|r| r.get(0)))
        }
        // `statement_timeout` cancelled it (a deadline overrun too; then the connection is
        // abandoned and the estimate that follows fails fast).
        Err(DbError::Timeout) => {
            drop(tx);
            Ok(None)
        }
        Err(e) => Err(e),
    }
}

/// What the viewer's own companions add to the public count, so the signed-in total counts
/// exactly what the page lists: the viewer's own companions matching the filter as they are now
/// (the page lists them fresh, private ones too), less those the read model counted as public
/// at its last refresh (the page lists them among the viewer's own, not twice). Without the
/// second term a companion made public since the refresh was listed but not counted, and one
/// made private was counted twice. (The public count already leaves out companions hidden since
/// the refresh, those of the purge outbox: the second term leaves them out too.)
pub async fn count_own_adjustment(
    client: &impl Querier,
    filter: &PageFilter,
    viewer_id: &UserId,
) -> Result<i64, DbError> {
    static PREFIX: std::sync::LazyLock<[String; 2]> =
        std::sync::LazyLock::new(|| [1, 2].map(|n| with_prefix_match(OWN_ADJUSTMENT_SQL, "$3", n)));
    let (sql, pattern) = match filter.name_prefix() {
        Some(prefix) => (prefix_variant(&PREFIX, prefix), Some(prefix.to_owned())),
        None => (OWN_ADJUSTMENT_SQL, filter.like_fragment()),
    };
    let row = client
        .query_typed(
            sql,
            &[
                (&viewer_id, Type::TEXT),
                (&filter.category_id, Type::TEXT),
                (&pattern, Type::TEXT),
            ],
        )
        .await?;
    Ok(row.first().map(|r| r.get(0)).unwrap_or(0))
}

/// The SQL of [`count_own_adjustment`].
const OWN_ADJUSTMENT_SQL: &str = r#"SELECT
                 (SELECT count(*) FROM "Companion" c
                  WHERE c."userId" = $1
                    AND ($2::text IS NULL OR c."categoryId" = $2)
                    AND ($3::text IS NULL OR c."name" ILIKE '%' || $3 || '%'))
               - (SELECT count(*) FROM "Companion" c
                  JOIN "CompanionDashboard" d ON d."id" = c."id"
                  WHERE c."userId" = $1
                    AND NOT (c."private" AND c."id" IN
                             (SELECT o."companionId" FROM "PrivacyPurgeOutbox" o))
                    AND ($2::text IS NULL OR d."categoryId" = $2)
                    AND ($3::text IS NULL OR d."name" ILIKE '%' || $3 || '%'))"#;

/// A cheap estimate of the public count: the category's count as of the last refresh. Only for
/// pages without a search: with one, see [`estimate_public_search`].
pub async fn estimate_public(client: &impl Querier, filter: &PageFilter) -> Result<i64, DbError> {
    // The count of every category is stored under the empty id.
    let category = filter.category_id.as_ref().map_or("", Id::as_str);
    let rows = client
        .query_typed(
            r#"SELECT "companionCount"::bigint FROM "CompanionCategoryCount"
               WHERE "categoryId" = $1"#,
            &[(&category, Type::TEXT)],
        )
        .await?;
    Ok(rows.first().map(|r| r.get(0)).unwrap_or(0))
}

/// An estimate of the public companions matching a search: the planner's row estimate for the
/// search's count (statistics of the read model; no row is read), at most the category's count.
/// Never the category's count alone, which says nothing about the search.
pub async fn estimate_public_search(
    client: &impl Querier,
    filter: &PageFilter,
) -> Result<i64, DbError> {
    if let Some(prefix) = filter.name_prefix() {
        let one = prefix.chars().count() == 1;
        let plan = match &filter.category_id {
            None => {
                let sql = if one {
                    COUNT_PREFIX1_SQL
                } else {
                    COUNT_PREFIX2_SQL
                };
                client
                    .query_typed(
                        &format!("EXPLAIN (FORMAT JSON) {sql}"),
                        &[(&prefix, Type::TEXT)],
                    )
                    .await?
            }
            Some(category) => {
                let sql = if one {
                    COUNT_PREFIX1_IN_CATEGORY_SQL
                } else {
                    COUNT_PREFIX2_IN_CATEGORY_SQL
                };
                client
                    .query_typed(
                        &format!("EXPLAIN (FORMAT JSON) {sql}"),
                        &[(category, Type::TEXT), (&prefix, Type::TEXT)],
                    )
                    .await?
            }
        };
        let plan: serde_json::Value = plan.first().map(|r| r.get(0)).unwrap_or_default();
        let bound = estimate_public(client, filter).await?;
        return Ok(rows_counted(&plan).min(bound));
    }
    let Some(like) = filter.like_fragment() else {
        return estimate_public(client, filter).await;
    };
    let plan = match &filter.category_id {
        None => {
            client
                .query_typed(
                    &format!("EXPLAIN (FORMAT JSON) {COUNT_SEARCH_SQL}"),
                    &[(&like, Type::TEXT)],
                )
                .await?
        }
        Some(category) => {
            client
                .query_typed(
                    &format!("EXPLAIN (FORMAT JSON) {COUNT_SEARCH_IN_CATEGORY_SQL}"),
                    &[(category, Type::TEXT), (&like, Type::TEXT)],
                )
                .await?
        }
    };
    let plan: serde_json::Value = plan.first().map(|r| r.get(0)).unwrap_or_default();
    let matching = rows_counted(&plan);
    let bound = estimate_public(client, filter).await?;
    Ok(matching.min(bound))
}

/// The rows the planner expects the count to read: the estimate of the first scan in the plan
/// (a `count(*)` plans as an Aggregate over the scan of the matching rows; a bitmap heap scan
/// comes before its index scan). The read model is far too small for a parallel plan, whose
/// scans would show per-worker rows.
fn rows_counted(plan: &serde_json::Value) -> i64 {
    fn first_scan(node: &serde_json::Value) -> Option<f64> {
        let kind = node["Node Type"].as_str().unwrap_or_default();
        if kind.ends_with("Scan") {
            return node["Plan Rows"].as_f64();
        }
        node["Plans"].as_array()?.iter().find_map(first_scan)
    }
    first_scan(&plan[0]["Plan"]).unwrap_or(0.0).round() as i64
}

/// What `gcbb_count_dashboard` runs for a search in every category (`EXECUTE … USING`, so each
/// call is planned with its pattern and can use the trigram index); the function holds the same
/// text (migration `20261201000000_dashboard_search_plans`) and `gcbb db verify` checks both.
pub const COUNT_SEARCH_SQL: &str =
    r#"SELECT count(*) FROM "CompanionDashboard" WHERE "name" ILIKE '%' || $1 || '%'"#;

/// What `gcbb_count_dashboard` runs for a search within a category (see [`COUNT_SEARCH_SQL`]).
pub const COUNT_SEARCH_IN_CATEGORY_SQL: &str = r#"SELECT count(*) FROM "CompanionDashboard" WHERE "categoryId" = $1 AND "name" ILIKE '%' || $2 || '%'"#;

/// The database function that counts a dashboard page's total, and the statements it runs for a
/// search, for `gcbb db verify` to check that the function still runs them.
pub const COUNT_FUNCTION: super::hot::FunctionQueries = super::hot::FunctionQueries {
    function: "gcbb_count_dashboard",
    runs: &[COUNT_SEARCH_SQL, COUNT_SEARCH_IN_CATEGORY_SQL],
};

/// What `gcbb_count_dashboard_prefix` runs for a one-character search in every category
/// (migration `20261207000000_dashboard_short_search_count`), an index-only scan of
/// `"CompanionDashboard_name_prefix1_idx"`.
pub const COUNT_PREFIX1_SQL: &str =
    r#"SELECT count(*) FROM "CompanionDashboard" WHERE lower(left("name", 1)) = $1"#;
/// … a two-character one.
pub const COUNT_PREFIX2_SQL: &str =
    r#"SELECT count(*) FROM "CompanionDashboard" WHERE lower(left("name", 2)) = $1"#;
/// … a one-character one within a category.
pub const COUNT_PREFIX1_IN_CATEGORY_SQL: &str = r#"SELECT count(*) FROM "CompanionDashboard" WHERE "categoryId" = $1 AND lower(left("name", 1)) = $2"#;
/// … a two-character one within a category.
pub const COUNT_PREFIX2_IN_CATEGORY_SQL: &str = r#"SELECT count(*) FROM "CompanionDashboard" WHERE "categoryId" = $1 AND lower(left("name", 2)) = $2"#;

/// The function that counts a short search's total, and what it runs.
pub const COUNT_PREFIX_FUNCTION: super::hot::FunctionQueries = super::hot::FunctionQueries {
    function: "gcbb_count_dashboard_prefix",
    runs: &[
        COUNT_PREFIX1_SQL,
        COUNT_PREFIX2_SQL,
        COUNT_PREFIX1_IN_CATEGORY_SQL,
        COUNT_PREFIX2_IN_CATEGORY_SQL,
    ],
};

/// A search as the hot queries sample it: a realistic name fragment that few companions match,
/// where a plan without the trigram index would read the whole read model to find them.
const SAMPLE_SEARCH: &str = "ezra storm";

/// The dashboard's hot queries (see [`super::hot`]): sample parameters take the path checked.
pub const HOT_QUERIES: &[super::hot::HotQuery] = {
    use super::hot::{HotParam, HotQuery};
    &[
        HotQuery {
            name: "dashboard.public_page",
            sql: PUBLIC_PAGE_SQL,
            params: &[
                HotParam::Text(None),
                HotParam::Text(None),
                HotParam::Int8(24),
                HotParam::Int8(0),
            ],
            expects_index: "CompanionDashboard_isSystem_createdAt_id_idx",
            on_relation: "CompanionDashboard",
        },
        HotQuery {
            name: "dashboard.public_page_by_category",
            sql: PUBLIC_PAGE_SQL,
            params: &[
                HotParam::Text(Some("cat_03")),
                HotParam::Text(None),
                HotParam::Int8(24),
                HotParam::Int8(0),
            ],
            expects_index: "CompanionDashboard_categoryId_isSystem_createdAt_id_idx",
            on_relation: "CompanionDashboard",
        },
        HotQuery {
            name: "dashboard.viewer_page_own_companions",
            sql: VIEWER_PAGE_SQL,
            params: &[
                HotParam::Text(None),
                HotParam::Text(None),
                HotParam::Int8(24),
                HotParam::Int8(0),
                HotParam::Text(Some("system")),
                HotParam::Text(Some("user_00007")),
            ],
            expects_index: "Companion_userId_createdAt_idx",
            on_relation: "Companion",
        },
        HotQuery {
            name: "dashboard.public_page_search",
            sql: PUBLIC_PAGE_SQL,
            params: &[
                HotParam::Text(None),
                HotParam::Text(Some(SAMPLE_SEARCH)),
                HotParam::Int8(10),
                HotParam::Int8(0),
            ],
            expects_index: "CompanionDashboard_name_trgm_idx",
            on_relation: "CompanionDashboard",
        },
        HotQuery {
            name: "dashboard.public_page_search_by_category",
            sql: PUBLIC_PAGE_SQL,
            params: &[
                HotParam::Text(Some("cat_03")),
                HotParam::Text(Some(SAMPLE_SEARCH)),
                HotParam::Int8(10),
                HotParam::Int8(0),
            ],
            expects_index: "CompanionDashboard_name_trgm_idx",
            on_relation: "CompanionDashboard",
        },
        HotQuery {
            name: "dashboard.public_page_two_letters",
            sql: PUBLIC_PAGE_PREFIX2_SQL,
            params: &[
                HotParam::Text(None),
                HotParam::Text(Some("le")),
                HotParam::Int8(10),
                HotParam::Int8(0),
            ],
            expects_index: "CompanionDashboard_name_prefix2_idx",
            on_relation: "CompanionDashboard",
        },
        HotQuery {
            name: "dashboard.public_page_one_letter",
            sql: PUBLIC_PAGE_PREFIX1_SQL,
            params: &[
                HotParam::Text(None),
                HotParam::Text(Some("l")),
                HotParam::Int8(10),
                HotParam::Int8(0),
            ],
            expects_index: "CompanionDashboard_name_prefix1_idx",
            on_relation: "CompanionDashboard",
        },
        HotQuery {
            name: "dashboard.count_two_letters",
            sql: COUNT_PREFIX2_SQL,
            params: &[HotParam::Text(Some("le"))],
            expects_index: "CompanionDashboard_name_prefix2_idx",
            on_relation: "CompanionDashboard",
        },
        HotQuery {
            name: "dashboard.count_one_letter",
            sql: COUNT_PREFIX1_SQL,
            params: &[HotParam::Text(Some("l"))],
            expects_index: "CompanionDashboard_name_prefix1_idx",
            on_relation: "CompanionDashboard",
        },
        HotQuery {
            name: "dashboard.count_search",
            sql: COUNT_SEARCH_SQL,
            params: &[HotParam::Text(Some(SAMPLE_SEARCH))],
            expects_index: "CompanionDashboard_name_trgm_idx",
            on_relation: "CompanionDashboard",
        },
        HotQuery {
            name: "dashboard.count_search_by_category",
            sql: COUNT_SEARCH_IN_CATEGORY_SQL,
            params: &[
                HotParam::Text(Some("cat_03")),
                HotParam::Text(Some(SAMPLE_SEARCH)),
            ],
            expects_index: "CompanionDashboard_name_trgm_idx",
            on_relation: "CompanionDashboard",
        },
    ]
};

/// Escapes `%`, `_` and `\` so user input matches literally inside `ILIKE '%' || $n || '%'`.
pub fn escape_like(raw: &str) -> String {
    let mut out = String::with_capacity(raw.len());
    for ch in raw.chars() {
        if matches!(ch, '%' | '_' | '\\') {
            out.push('\\');
        }
        out.push(ch);
    }
    out
}

/// Fields an owner may change; `None` leaves a field as it is.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CompanionChanges {
    pub name: Option<String>,
    pub src: Option<String>,
    pub instructions: Option<String>,
    pub category_id: Option<CategoryId>,
    pub private: Option<bool>,
}

/// A companion as its owner sees it after an edit.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct OwnedCompanion {
    pub id: CompanionId,
    pub name: String,
    pub src: String,
    pub instructions: String,
    pub category_id: CategoryId,
    pub private: bool,
    pub updated_at: chrono::NaiveDateTime,
}

/// A companion before and after an edit.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CompanionEdit {
    pub before: OwnedCompanion,
    pub after: OwnedCompanion,
}

impl CompanionEdit {
    /// Whether any field the owner may edit has a new value.
    pub fn changes_anything(&self) -> bool {
        let (b, a) = (&self.before, &self.after);
        (&b.name, &b.src, &b.instructions, &b.category_id, b.private)
            != (&a.name, &a.src, &a.instructions, &a.category_id, a.private)
    }

    /// Whether the edit made a public companion private.
    pub fn hides(&self) -> bool {
        !self.before.private && self.after.private
    }
}

/// The edit of [`update_owned_companion`]: the row locked and read as it was, then updated,
/// both returned.
const UPDATE_OWNED_SQL: &str = r#"WITH before AS (
        SELECT "id", "name", "src", "instructions", "categoryId", "private", "updatedAt"
        FROM "Companion"
        WHERE "id" = $1 AND "userId" = $2
        FOR UPDATE
    )
    UPDATE "Companion" c SET
        "name" = COALESCE($3, c."name"),
        "src" = COALESCE($4, c."src"),
        "instructions" = COALESCE($5, c."instructions"),
        "categoryId" = COALESCE($6, c."categoryId"),
        "private" = COALESCE($7, c."private"),
        "updatedAt" = (now() AT TIME ZONE 'UTC')
    FROM before b
    WHERE c."id" = b."id"
    RETURNING c."id", c."name", c."src", c."instructions", c."categoryId", c."private",
              c."updatedAt",
              b."name", b."src", b."instructions", b."categoryId", b."private", b."updatedAt""#;

/// A companion's edit as its owner's PATCH sends it (see [`super::hot::HotWrite`]): on another
/// companion than token accounting's sample, so the two writers never wait for each other's row.
pub const HOT_WRITES: &[super::hot::HotWrite] = {
    use super::hot::{HotParam, HotWrite};
    &[HotWrite {
        name: "companions.update_owned",
        sql: UPDATE_OWNED_SQL,
        params: &[
            HotParam::Text(Some("cmp_000041")),
            HotParam::Text(Some("user_00007")),
            HotParam::Text(Some("Renamed")),
            HotParam::Text(None),
            HotParam::Text(None),
            HotParam::Text(None),
            HotParam::Bool(None),
        ],
        table: "Companion",
    }]
};

/// Applies `changes` to the companion if `owner_id` owns it, and returns it as it was and as it
/// is (so the caller invalidates and purges only what changed); `None` when there is no such
/// companion of that owner (the caller can't tell which, on purpose).
pub async fn update_owned_companion(
    client: &impl Querier,
    companion_id: &CompanionId,
    owner_id: &UserId,
    changes: &CompanionChanges,
) -> Result<Option<CompanionEdit>, DbError> {
    let rows = client
        .query_typed(
            UPDATE_OWNED_SQL,
            &[
                (&companion_id, Type::TEXT),
                (&owner_id, Type::TEXT),
                (&changes.name, Type::TEXT),
                (&changes.src, Type::TEXT),
                (&changes.instructions, Type::TEXT),
                (&changes.category_id, Type::TEXT),
                (&changes.private, Type::BOOL),
            ],
        )
        .await?;
    Ok(rows.first().map(|r| {
        let owned = |from: usize| OwnedCompanion {
            id: r.get(0),
            name: r.get(from),
            src: r.get(from + 1),
            instructions: r.get(from + 2),
            category_id: r.get(from + 3),
            private: r.get(from + 4),
            updated_at: r.get(from + 5),
        };
        CompanionEdit {
            after: owned(1),
            before: owned(7),
        }
    }))
}

/// The dashboard query the Node stack ran before these functions, kept only as the benchmark's
/// "before" (`gcbb bench dashboard`): every public
/// companion with every column (the 2 KB instructions, the JSONB configs), a per-companion
/// message count, and an exact total.
pub async fn list_public_companions_unoptimized(
    client: &impl Querier,
) -> Result<(Vec<serde_json::Value>, i64), DbError> {
    let rows = client
        .query_typed(
            r#"SELECT c."id", c."userId", c."userName", c."src", c."name",
                      c."instructions", c."private", c."createdAt", c."updatedAt",
                      c."categoryId", c."isFree", c."tokensBurned", c."customIntroduction",
                      c."personalityConfig", c."knowledgeConfig", c."interactionConfig",
                      c."toolConfig",
                      (SELECT count(*) FROM "Message" m WHERE m."companionId" = c."id")
                          AS "messageCount"
               FROM "Companion" c WHERE NOT c."private" ORDER BY c."createdAt" DESC"#,
            &[],
        )
        .await?;
    let total: i64 = client
        .query_typed(
            r#"SELECT count(*) FROM "Companion" WHERE NOT "private""#,
            &[],
        )
        .await?
        .first()
        .map(|r| r.get(0))
        .unwrap_or(0);
    let companions = rows
        .iter()
        .map(|r| {
            serde_json::json!({
                "id": r.get::<_, String>(0),
                "userId": r.get::<_, String>(1),
                "userName": r.get::<_, String>(2),
                "src": r.get::<_, String>(3),
                "name": r.get::<_, String>(4),
                "instructions": r.get::<_, String>(5),
                "private": r.get::<_, bool>(6),
                "createdAt": r.get::<_, chrono::NaiveDateTime>(7),
                "updatedAt": r.get::<_, chrono::NaiveDateTime>(8),
                "categoryId": r.get::<_, String>(9),
                "isFree": r.get::<_, bool>(10),
                "tokensBurned": r.get::<_, i32>(11),
                "customIntroduction": r.get::<_, Option<String>>(12),
                "personalityConfig": r.get::<_, Option<serde_json::Value>>(13),
                "knowledgeConfig": r.get::<_, Option<serde_json::Value>>(14),
                "interactionConfig": r.get::<_, Option<serde_json::Value>>(15),
                "toolConfig": r.get::<_, Option<serde_json::Value>>(16),
                "messageCount": r.get::<_, i64>(17),
            })
        })
        .collect();
    Ok((companions, total))
}

#[cfg(test)]
mod tests;
