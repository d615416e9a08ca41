//! `gcbb db verify`: the objects the functions rely on exist and are usable, and the hot queries
//! ([`gcbb::db::hot_queries`]) are planned with their intended index on the current data.
//!
//! Plans depend on data volume: on near-empty tables the planner rightly prefers a sequential
//! scan, and forcing it (`enable_seqscan = off`) would hide real regressions. So the plan checks
//! need data — production's, or a copy seeded with `gcbb bench seed --scale small` — and verify
//! fails (naming the table) when a relation a hot query reads has fewer than
//! [`MIN_ROWS_FOR_PLANS`] rows. The name search (`ILIKE`) is checked with a rare sample pattern,
//! the case where a plan without the trigram index reads the whole read model; the count runs
//! inside `gcbb_count_dashboard`, so verify also checks that the function still runs the
//! statements it explains ([`gcbb::db::function_queries`]).
//!
//! Beyond the hot queries, every index a migration creates must exist (read from the migration
//! files with Postgres's parser; a later `DROP INDEX` or rename is followed), so dropping any of
//! them fails verify naming the index, its migration, and the hot queries that need it.
//!
//! One idea, kept in one file on purpose (over 600 lines): the checks verify makes and how each
//! reads its answer from the catalog or from `EXPLAIN`; apart, a check would be read away from the
//! plan it judges.

use std::collections::BTreeSet;
use std::fmt;
use std::path::Path;

use serde::Serialize;
use serde_json::Value;
use tokio_postgres::types::{ToSql, Type};
use tokio_postgres::Client;

use super::error::MigrateError;
use super::session::{self, describe_pg_error};
use gcbb::db::hot::{FunctionQueries, HotParam, HotQuery};
use gcbb::db::DbConfig;

/// Below this many rows in a relation a hot query reads, its plan says nothing.
pub const MIN_ROWS_FOR_PLANS: i64 = 400;

/// Materialized views the dashboard reads; they must be populated.
pub const REQUIRED_MATVIEWS: &[&str] = &["CompanionDashboard", "CompanionCategoryCount"];

/// Functions the request paths and the cron route call.
pub const REQUIRED_FUNCTIONS: &[&str] = &[
    "gcbb_refresh_dashboard",
    "gcbb_count_dashboard",
    "gcbb_system_user_id",
];

/// One thing wrong.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Problem {
    MissingObject {
        what: String,
        name: String,
    },
    InvalidIndex {
        name: String,
        valid: bool,
        ready: bool,
    },
    NotPopulated {
        matview: String,
    },
    TooLittleData {
        relation: String,
        rows: i64,
    },
    QueryFailed {
        query: String,
        message: String,
    },
    PlanRegressed {
        query: String,
        expected_index: String,
        /// How the expected index's relation is scanned instead (`Seq Scan on "X"`…).
        plan_nodes: Vec<String>,
    },
    /// An index a migration creates is not in the database.
    MissingDeclaredIndex {
        name: String,
        table: String,
        migration: String,
        /// Hot queries whose plan needs it.
        needed_by: Vec<String>,
    },
    /// A function no longer runs a statement verify explains in its name.
    FunctionChanged {
        function: String,
        missing_sql: String,
    },
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Problem::MissingObject { what, name } => write!(f, "missing {what} `{name}`"),
            Problem::InvalidIndex { name, valid, ready } => write!(
                f,
                "index `{name}` is not usable (indisvalid = {valid}, indisready = {ready}): a failed \
                 CREATE INDEX CONCURRENTLY leaves it so; drop it and build it again"
            ),
            Problem::NotPopulated { matview } => write!(
                f,
                "materialized view `{matview}` is not populated: run SELECT * FROM gcbb_refresh_dashboard()"
            ),
            Problem::TooLittleData { relation, rows } => write!(
                f,
                "`{relation}` has {rows} rows (< {MIN_ROWS_FOR_PLANS}): plans on near-empty tables say \
                 nothing; verify production data or a copy seeded with `gcbb bench seed --scale small`"
            ),
            Problem::QueryFailed { query, message } => {
                write!(f, "hot query `{query}` cannot be planned: {message}")
            }
            Problem::MissingDeclaredIndex {
                name,
                table,
                migration,
                needed_by,
            } => {
                write!(
                    f,
                    "index `{name}` on `{table}`, created by migration `{migration}`, is missing"
                )?;
                if needed_by.is_empty() {
                    Ok(())
                } else {
                    write!(f, "; hot queries that need it: {}", needed_by.join(", "))
                }
            }
            Problem::PlanRegressed {
                query,
                expected_index,
                plan_nodes,
            } => write!(
                f,
                "hot query `{query}` does not use index `{expected_index}`; plan node: {}",
                if plan_nodes.is_empty() {
                    "(relation not scanned)".to_owned()
                } else {
                    plan_nodes.join("; ")
                }
            ),
            Problem::FunctionChanged {
                function,
                missing_sql,
            } => write!(
                f,
                "function `{function}` no longer runs `{missing_sql}`, whose plan verify checks: \
                 it may have been replaced by a body that plans without its index; apply the \
                 migrations (gcbb db deploy)"
            ),
        }
    }
}

/// What `verify` checked and found.
#[derive(Debug, Clone, Default, Serialize)]
pub struct VerifyReport {
    /// Hot queries whose plan uses their index.
    pub passed: Vec<String>,
    pub problems: Vec<Problem>,
}

impl VerifyReport {
    pub fn is_ok(&self) -> bool {
        self.problems.is_empty()
    }
}

fn db_err(e: tokio_postgres::Error) -> MigrateError {
    MigrateError::Database(describe_pg_error(&e))
}

/// Checks `db` against the indexes the migrations of `dir` create and every hot query of
/// [`gcbb::db::hot_queries`].
pub async fn verify(db: &DbConfig, dir: &Path) -> Result<VerifyReport, MigrateError> {
    let declared = declared_indexes(dir)?;
    let client = session::connect(db).await?;
    let queries = gcbb::db::hot_queries();
    let mut report = verify_with(&client, &queries).await?;
    let mut missing = missing_declared_indexes(&client, &declared, &queries).await?;
    // Declared-index problems first: they are the cause of the plan regressions after them.
    missing.append(&mut report.problems);
    report.problems = missing;
    Ok(report)
}

/// An index a migration creates (`CREATE [UNIQUE] INDEX`), as the history leaves it (a later
/// `DROP INDEX` removes it, `ALTER INDEX … RENAME` renames it).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeclaredIndex {
    pub name: String,
    pub table: String,
    pub migration: String,
}

/// Every index the migrations of `dir` leave in place, read with Postgres's own parser.
pub fn declared_indexes(dir: &Path) -> Result<Vec<DeclaredIndex>, MigrateError> {
    use pg_query::protobuf::ObjectType;
    use pg_query::NodeEnum;

    let mut declared: Vec<DeclaredIndex> = Vec::new();
    for migration in super::files::load_migrations(dir)? {
        let parsed = pg_query::parse(&migration.script).map_err(|e| MigrateError::Files {
            path: migration.path.clone(),
            message: e.to_string(),
        })?;
        for raw in parsed.protobuf.stmts {
            match raw.stmt.and_then(|s| s.node) {
                Some(NodeEnum::IndexStmt(s)) if !s.idxname.is_empty() => {
                    let table = s.relation.map(|r| r.relname).unwrap_or_default();
                    declared.retain(|d| d.name != s.idxname);
                    declared.push(DeclaredIndex {
                        name: s.idxname,
                        table,
                        migration: migration.name.clone(),
                    });
                }
                Some(NodeEnum::DropStmt(s)) if s.remove_type == ObjectType::ObjectIndex as i32 => {
                    for object in &s.objects {
                        if let Some(name) = last_name(object) {
                            declared.retain(|d| d.name != name);
                        }
                    }
                }
                Some(NodeEnum::RenameStmt(s))
                    if s.rename_type == ObjectType::ObjectIndex as i32 =>
                {
                    if let Some(old) = s.relation.map(|r| r.relname) {
                        if let Some(d) = declared.iter_mut().find(|d| d.name == old) {
                            d.name = s.newname.clone();
                        }
                    }
                }
                _ => {}
            }
        }
    }
    Ok(declared)
}

/// The unqualified name of a `DROP` object (a list of name parts).
fn last_name(object: &pg_query::protobuf::Node) -> Option<String> {
    use pg_query::NodeEnum;
    match object.node.as_ref()? {
        NodeEnum::List(list) => list.items.last().and_then(|n| match n.node.as_ref()? {
            NodeEnum::String(s) => Some(s.sval.clone()),
            _ => None,
        }),
        NodeEnum::String(s) => Some(s.sval.clone()),
        _ => None,
    }
}

/// The declared indexes the database lacks, each with the hot queries that need it.
pub async fn missing_declared_indexes(
    client: &Client,
    declared: &[DeclaredIndex],
    queries: &[&HotQuery],
) -> Result<Vec<Problem>, MigrateError> {
    let rows = client
        .query(
            "SELECT i.relname::text FROM pg_catalog.pg_index ix \
             JOIN pg_catalog.pg_class i ON i.oid = ix.indexrelid \
             JOIN pg_catalog.pg_namespace n ON n.oid = i.relnamespace \
             WHERE n.nspname NOT LIKE 'pg\\_%' AND n.nspname <> 'information_schema'",
            &[],
        )
        .await
        .map_err(db_err)?;
    let existing: BTreeSet<String> = rows.iter().map(|r| r.get(0)).collect();
    Ok(declared
        .iter()
        .filter(|d| !existing.contains(&d.name))
        .map(|d| Problem::MissingDeclaredIndex {
            name: d.name.clone(),
            table: d.table.clone(),
            migration: d.migration.clone(),
            needed_by: queries
                .iter()
                .filter(|q| acceptable_indexes(q).any(|i| i == d.name))
                .map(|q| q.name.to_owned())
                .collect(),
        })
        .collect())
}

/// [`verify`] on an open connection, for a given list of hot queries.
pub async fn verify_with(
    client: &Client,
    queries: &[&HotQuery],
) -> Result<VerifyReport, MigrateError> {
    let mut report = VerifyReport::default();
    check_objects(client, queries, &mut report.problems).await?;
    check_function_bodies(client, &gcbb::db::function_queries(), &mut report.problems).await?;
    let relations: BTreeSet<&str> = queries.iter().map(|q| q.on_relation).collect();
    let mut enough_data = true;
    for relation in relations {
        let rows = count_rows(client, relation).await?;
        if let Some(rows) = rows.filter(|r| *r < MIN_ROWS_FOR_PLANS) {
            enough_data = false;
            report.problems.push(Problem::TooLittleData {
                relation: relation.to_owned(),
                rows,
            });
        }
    }
    if !enough_data {
        return Ok(report);
    }
    for q in queries {
        match explain(client, q).await {
            Ok(plan) => {
                let scans = index_scans(&plan);
                if scans
                    .iter()
                    .any(|(_, index)| acceptable_indexes(q).any(|i| i == index))
                {
                    report.passed.push(q.name.to_owned());
                } else {
                    report.problems.push(Problem::PlanRegressed {
                        query: q.name.to_owned(),
                        expected_index: q.expects_index.to_owned(),
                        plan_nodes: nodes_on(&plan, q.on_relation),
                    });
                }
            }
            Err(e) => report.problems.push(Problem::QueryFailed {
                query: q.name.to_owned(),
                message: describe_pg_error(&e),
            }),
        }
    }
    Ok(report)
}

async fn check_objects(
    client: &Client,
    queries: &[&HotQuery],
    problems: &mut Vec<Problem>,
) -> Result<(), MigrateError> {
    for matview in REQUIRED_MATVIEWS {
        let row = client
            .query_opt(
                "SELECT ispopulated FROM pg_catalog.pg_matviews WHERE schemaname = 'public' AND matviewname = $1",
                &[matview],
            )
            .await
            .map_err(db_err)?;
        match row.map(|r| r.get::<_, bool>(0)) {
            None => problems.push(Problem::MissingObject {
                what: "materialized view".to_owned(),
                name: (*matview).to_owned(),
            }),
            Some(false) => problems.push(Problem::NotPopulated {
                matview: (*matview).to_owned(),
            }),
            Some(true) => {}
        }
    }
    for function in REQUIRED_FUNCTIONS {
        let found = client
            .query_opt(
                "SELECT 1 FROM pg_catalog.pg_proc p JOIN pg_catalog.pg_namespace n ON n.oid = p.pronamespace \
                 WHERE n.nspname = 'public' AND p.proname = $1",
                &[function],
            )
            .await
            .map_err(db_err)?;
        if found.is_none() {
            problems.push(Problem::MissingObject {
                what: "function".to_owned(),
                name: (*function).to_owned(),
            });
        }
    }
    // Every index of the user schemas must be usable, not only the hot ones.
    let rows = client
        .query(
            "SELECT i.relname::text, ix.indisvalid, ix.indisready \
             FROM pg_catalog.pg_index ix \
             JOIN pg_catalog.pg_class i ON i.oid = ix.indexrelid \
             JOIN pg_catalog.pg_namespace n ON n.oid = i.relnamespace \
             WHERE n.nspname NOT LIKE 'pg\\_%' AND n.nspname <> 'information_schema' \
             ORDER BY 1",
            &[],
        )
        .await
        .map_err(db_err)?;
    for row in &rows {
        let (valid, ready): (bool, bool) = (row.get(1), row.get(2));
        if !(valid && ready) {
            problems.push(Problem::InvalidIndex {
                name: row.get(0),
                valid,
                ready,
            });
        }
    }
    let existing: BTreeSet<String> = rows.iter().map(|r| r.get(0)).collect();
    let mut expected: Vec<&str> = queries.iter().flat_map(|q| acceptable_indexes(q)).collect();
    expected.sort_unstable();
    expected.dedup();
    for index in expected {
        if !existing.contains(index)
            && !queries.iter().any(|q| has_alternative(q, index, &existing))
        {
            problems.push(Problem::MissingObject {
                what: "index".to_owned(),
                name: index.to_owned(),
            });
        }
    }
    Ok(())
}

/// The indexes that satisfy `q` (`expects_index` may name several, `a|b`: the planner picks
/// the cheapest of equivalent indexes, and which one depends on volume).
pub fn acceptable_indexes(q: &HotQuery) -> impl Iterator<Item = &'static str> {
    q.expects_index.split('|').map(str::trim)
}

/// Whether `q` accepts `index` and another of its acceptable indexes exists.
fn has_alternative(q: &HotQuery, index: &str, existing: &BTreeSet<String>) -> bool {
    acceptable_indexes(q).any(|i| i == index)
        && acceptable_indexes(q).any(|i| i != index && existing.contains(i))
}

/// Each function of `functions` still runs the statements declared for it: its body (`prosrc`)
/// holds each one as an `EXECUTE` string literal (quotes doubled). A missing function is
/// reported by [`check_objects`].
async fn check_function_bodies(
    client: &Client,
    functions: &[&FunctionQueries],
    problems: &mut Vec<Problem>,
) -> Result<(), MigrateError> {
    for f in functions {
        let bodies = client
            .query(
                "SELECT p.prosrc FROM pg_catalog.pg_proc p \
                 JOIN pg_catalog.pg_namespace n ON n.oid = p.pronamespace \
                 WHERE n.nspname = 'public' AND p.proname = $1",
                &[&f.function],
            )
            .await
            .map_err(db_err)?;
        let Some(body) = bodies.first().map(|r| r.get::<_, String>(0)) else {
            continue;
        };
        let body = squeeze_whitespace(&body);
        for sql in f.runs {
            let quoted = squeeze_whitespace(&format!("'{}'", sql.replace('\'', "''")));
            if !body.contains(&quoted) {
                problems.push(Problem::FunctionChanged {
                    function: f.function.to_owned(),
                    missing_sql: (*sql).to_owned(),
                });
            }
        }
    }
    Ok(())
}

/// Runs of whitespace as one space, so line breaks in a function's body don't matter.
fn squeeze_whitespace(s: &str) -> String {
    s.split_whitespace().collect::<Vec<_>>().join(" ")
}

/// Exact row count of `relation` (`None` when it does not exist: reported as missing elsewhere).
async fn count_rows(client: &Client, relation: &str) -> Result<Option<i64>, MigrateError> {
    let exists = client
        .query_opt(
            "SELECT to_regclass($1)::text",
            &[&super::history::quote_ident(relation)],
        )
        .await
        .map_err(db_err)?
        .and_then(|r| r.get::<_, Option<String>>(0));
    if exists.is_none() {
        return Ok(None);
    }
    let sql = format!(
        "SELECT count(*) FROM {}",
        super::history::quote_ident(relation)
    );
    let row = client.query_one(&sql, &[]).await.map_err(db_err)?;
    Ok(Some(row.get(0)))
}

/// A hot query's (or hot write's) sample parameters as owned values, bound with their types.
pub(crate) struct SampleParams {
    values: Vec<Box<dyn ToSql + Sync + Send>>,
    types: Vec<Type>,
}

impl SampleParams {
    pub(crate) fn of(params: &[HotParam]) -> Self {
        let mut values: Vec<Box<dyn ToSql + Sync + Send>> = Vec::with_capacity(params.len());
        let mut types = Vec::with_capacity(params.len());
        for p in params {
            let (value, ty): (Box<dyn ToSql + Sync + Send>, Type) = match *p {
                HotParam::Text(t) => (Box::new(t.map(str::to_owned)), Type::TEXT),
                HotParam::Int8(i) => (Box::new(i), Type::INT8),
                HotParam::Int4(i) => (Box::new(i), Type::INT4),
                HotParam::Bool(b) => (Box::new(b), Type::BOOL),
            };
            values.push(value);
            types.push(ty);
        }
        SampleParams { values, types }
    }

    /// What `query_typed` takes.
    pub(crate) fn typed(&self) -> Vec<(&(dyn ToSql + Sync), Type)> {
        self.values
            .iter()
            .zip(&self.types)
            .map(|(v, t)| (v.as_ref() as &(dyn ToSql + Sync), t.clone()))
            .collect()
    }
}

/// `EXPLAIN (FORMAT JSON)` of `sql` with the sample parameters.
pub(crate) async fn explain_sql(
    client: &Client,
    sql: &str,
    params: &[HotParam],
) -> Result<Value, tokio_postgres::Error> {
    let bound = SampleParams::of(params);
    let sql = format!("EXPLAIN (FORMAT JSON) {sql}");
    let rows = client.query_typed(&sql, &bound.typed()).await?;
    Ok(rows
        .first()
        .map(|r| r.get::<_, Value>(0))
        .unwrap_or(Value::Null))
}

async fn explain(client: &Client, q: &HotQuery) -> Result<Value, tokio_postgres::Error> {
    explain_sql(client, q.sql, q.params).await
}

/// Visits every plan node of an `EXPLAIN (FORMAT JSON)` result, at every depth.
pub(crate) fn walk_plan<'a>(node: &'a Value, visit: &mut dyn FnMut(&'a Value)) {
    match node {
        Value::Array(items) => items.iter().for_each(|n| walk_plan(n, visit)),
        Value::Object(map) => {
            if map.contains_key("Node Type") {
                visit(node);
            }
            if let Some(plan) = map.get("Plan") {
                walk_plan(plan, visit);
            }
            if let Some(plans) = map.get("Plans") {
                walk_plan(plans, visit);
            }
        }
        _ => {}
    }
}

/// `(node type, index name)` of every Index Scan, Index Only Scan and Bitmap Index Scan of an
/// `EXPLAIN (FORMAT JSON)` result, and of every `ON CONFLICT` arbiter index (`Conflict
/// Arbiter`): an upsert finds its row through it.
pub fn index_scans(plan: &Value) -> Vec<(String, String)> {
    let mut out = Vec::new();
    walk_plan(plan, &mut |node| {
        let kind = node["Node Type"].as_str().unwrap_or_default();
        if matches!(kind, "Index Scan" | "Index Only Scan" | "Bitmap Index Scan") {
            if let Some(index) = node["Index Name"].as_str() {
                out.push((kind.to_owned(), index.to_owned()));
            }
        }
        if let Some(arbiters) = node["Conflict Arbiter Indexes"].as_array() {
            out.extend(
                arbiters
                    .iter()
                    .filter_map(Value::as_str)
                    .map(|i| ("Conflict Arbiter".to_owned(), i.to_owned())),
            );
        }
    });
    out
}

/// How every relation is read in the plan, in plan order: `Seq Scan on "X"`, `Index Scan using
/// i on "X"`, `Bitmap Heap Scan on "X" (Bitmap Index Scan using i)`…
pub fn nodes_on_every_relation(plan: &Value) -> Vec<String> {
    let mut out = Vec::new();
    walk_plan(plan, &mut |node| {
        let Some(relation) = node["Relation Name"].as_str() else {
            return;
        };
        let kind = node["Node Type"].as_str().unwrap_or_default();
        let mut line = match node["Index Name"].as_str() {
            Some(index) => format!("{kind} using {index} on \"{relation}\""),
            None => format!("{kind} on \"{relation}\""),
        };
        if kind == "Bitmap Heap Scan" {
            let mut indexes = Vec::new();
            walk_plan(&node["Plans"], &mut |child| {
                if let Some(i) = child["Index Name"].as_str() {
                    indexes.push(i.to_owned());
                }
            });
            if !indexes.is_empty() {
                line.push_str(&format!(
                    " (Bitmap Index Scan using {})",
                    indexes.join(", ")
                ));
            }
        }
        out.push(line);
    });
    out
}

/// How `relation` is read in the plan: `Seq Scan on "X"`, `Index Scan using i on "X"`…
pub fn nodes_on(plan: &Value, relation: &str) -> Vec<String> {
    let mut out = Vec::new();
    walk_plan(plan, &mut |node| {
        if node["Relation Name"].as_str() == Some(relation) {
            let kind = node["Node Type"].as_str().unwrap_or_default();
            out.push(match node["Index Name"].as_str() {
                Some(index) => format!("{kind} using {index} on \"{relation}\""),
                None => format!("{kind} on \"{relation}\""),
            });
        }
    });
    out
}

#[cfg(test)]
mod tests;
