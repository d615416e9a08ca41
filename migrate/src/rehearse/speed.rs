//! Hot queries timed on the copy before and after the pending files: the seed's "query
//! performance verified before and after".
//!
//! Each hot query (`gcbb::db::hot_queries()`, the ones `verify` plans) is explained (`EXPLAIN
//! (FORMAT JSON)`: how each relation is scanned) and run several times with its sample parameters
//! on the migrating session, before the first statement and after the last, with no other traffic;
//! the median of the runs after a first, warming one is its time. A write among them runs in a
//! transaction rolled back. A query that got slower beyond the budget (both `max_slowdown` times
//! and `min_slowdown_ms` more: a 0.2 ms query that takes 0.5 ms is noise, a 20 ms one that takes
//! 50 ms is not; and so did its fastest run, so that a burst of load on a shared machine is not
//! taken for a regression), or whose index scan on a relation big enough to plan on turned into
//! a sequential scan, fails the verdict ([`regressions`]).

use std::time::{Duration, Instant};

use serde::Serialize;
use serde_json::Value;
use tokio_postgres::Client;

use crate::error::MigrateError;
use crate::session::describe_pg_error;
use crate::verify::{self, SampleParams, MIN_ROWS_FOR_PLANS};

use super::workload::is_read;

/// Timed runs per query (after one warming run), unless the query is slow: then fewer, see
/// [`QUERY_TIME_LIMIT`].
pub const RUNS: usize = 7;

/// After this long on one query, no further run is started (at least 3 are kept): a query that
/// reads the whole table before an index exists must not hold the rehearsal for minutes.
const QUERY_TIME_LIMIT: Duration = Duration::from_secs(10);

/// One query's time and plan on one side of the migrations.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Timing {
    pub median_ms: f64,
    /// The fastest run.
    pub min_ms: f64,
    pub runs: usize,
    /// How each relation is read: `Index Scan using i on "T"`, `Seq Scan on "T"`…
    pub plan: Vec<String>,
    /// Relations read through an index (Index Scan, Index Only Scan, Bitmap Heap Scan).
    #[serde(skip)]
    pub indexed: Vec<String>,
    /// Relations read by a sequential scan.
    #[serde(skip)]
    pub sequential: Vec<String>,
}

/// A hot query before and after.
#[derive(Debug, Clone, Serialize)]
pub struct QuerySpeed {
    pub query: &'static str,
    /// `Err`: it could not run (a relation the migrations create, or a failure).
    pub before: Result<Timing, String>,
    pub after: Result<Timing, String>,
}

/// Explains and times every hot query on `client`.
pub async fn measure_all(
    client: &Client,
) -> Result<Vec<(&'static str, Result<Timing, String>)>, MigrateError> {
    let mut out = Vec::new();
    for q in gcbb::db::hot_queries() {
        out.push((q.name, measure(client, q.sql, q.params).await?));
    }
    Ok(out)
}

/// `Err(message)` when the query itself fails (the copy is fine, the query is not); a broken
/// session is the caller's error.
async fn measure(
    client: &Client,
    sql: &str,
    params: &[gcbb::db::hot::HotParam],
) -> Result<Result<Timing, String>, MigrateError> {
    let plan = match verify::explain_sql(client, sql, params).await {
        Ok(plan) => plan,
        Err(e) if e.as_db_error().is_some() => return Ok(Err(describe_pg_error(&e))),
        Err(e) => return Err(MigrateError::Database(describe_pg_error(&e))),
    };
    let bound = SampleParams::of(params);
    let read = is_read(sql);
    let mut times = Vec::with_capacity(RUNS);
    let started = Instant::now();
    // One warming run (cache, plan), then the timed ones.
    for run in 0..=RUNS {
        if run > 3 && started.elapsed() > QUERY_TIME_LIMIT {
            break;
        }
        if !read {
            client
                .batch_execute("BEGIN")
                .await
                .map_err(|e| MigrateError::Database(describe_pg_error(&e)))?;
        }
        let sent = Instant::now();
        let result = client.query_typed(sql, &bound.typed()).await;
        let took = sent.elapsed();
        if !read {
            let _ = client.batch_execute("ROLLBACK").await;
        }
        if let Err(e) = result {
            return Ok(Err(describe_pg_error(&e)));
        }
        if run > 0 {
            times.push(took.as_secs_f64() * 1e3);
        }
    }
    times.sort_by(f64::total_cmp);
    let median = times[times.len() / 2];
    Ok(Ok(Timing {
        median_ms: (median * 1e3).round() / 1e3,
        min_ms: (times[0] * 1e3).round() / 1e3,
        runs: times.len(),
        plan: verify::nodes_on_every_relation(&plan),
        indexed: relations_scanned(
            &plan,
            &["Index Scan", "Index Only Scan", "Bitmap Heap Scan"],
        ),
        sequential: relations_scanned(&plan, &["Seq Scan"]),
    }))
}

fn relations_scanned(plan: &Value, kinds: &[&str]) -> Vec<String> {
    let mut out = Vec::new();
    verify::walk_plan(plan, &mut |node| {
        let kind = node["Node Type"].as_str().unwrap_or_default();
        if let Some(rel) = node["Relation Name"].as_str() {
            if kinds.contains(&kind) && !out.iter().any(|r| r == rel) {
                out.push(rel.to_owned());
            }
        }
    });
    out
}

/// Pairs the timings before and after by query.
pub fn pair(
    before: Vec<(&'static str, Result<Timing, String>)>,
    after: Vec<(&'static str, Result<Timing, String>)>,
) -> Vec<QuerySpeed> {
    let mut after = after;
    before
        .into_iter()
        .map(|(query, before)| {
            let at = after.iter().position(|(q, _)| *q == query);
            let after = match at {
                Some(at) => after.remove(at).1,
                None => Err("not measured".to_owned()),
            };
            QuerySpeed {
                query,
                before,
                after,
            }
        })
        .collect()
}

/// How much slower a hot query may get.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct SpeedBudget {
    /// After / before beyond which a query is slower (`--max-slowdown`, 2.0).
    pub max_slowdown: f64,
    /// And by at least this many milliseconds (`--min-slowdown-ms`, 5).
    pub min_slowdown_ms: f64,
}

impl Default for SpeedBudget {
    fn default() -> Self {
        SpeedBudget {
            max_slowdown: 2.0,
            min_slowdown_ms: 5.0,
        }
    }
}

/// Why a hot query regressed.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Regression {
    Slower { ratio: f64, more_ms: f64 },
    IndexScanTurnedSequential { relation: String },
}

impl std::fmt::Display for Regression {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Regression::Slower { ratio, more_ms } => {
                write!(f, "{ratio:.1}× slower, {more_ms:.1} ms more")
            }
            Regression::IndexScanTurnedSequential { relation } => write!(
                f,
                "\"{relation}\" was read through an index before and is read by a sequential scan after"
            ),
        }
    }
}

/// The regressions of one query, judged against `budget`. A sequential scan on a relation of
/// fewer than [`MIN_ROWS_FOR_PLANS`] rows (`rows_of`) is the planner's right choice, not a
/// regression.
pub fn regressions(
    q: &QuerySpeed,
    budget: &SpeedBudget,
    rows_of: impl Fn(&str) -> Option<i64>,
) -> Vec<Regression> {
    let (Ok(before), Ok(after)) = (&q.before, &q.after) else {
        return Vec::new();
    };
    let mut out = Vec::new();
    let more = after.median_ms - before.median_ms;
    let slower = |b: f64, a: f64| a > b * budget.max_slowdown && a - b > budget.min_slowdown_ms;
    if slower(before.median_ms, after.median_ms) && slower(before.min_ms, after.min_ms) {
        out.push(Regression::Slower {
            ratio: after.median_ms / before.median_ms.max(0.001),
            more_ms: more,
        });
    }
    for rel in &before.indexed {
        if !after.indexed.contains(rel)
            && after.sequential.contains(rel)
            && rows_of(rel).unwrap_or(0) >= MIN_ROWS_FOR_PLANS
        {
            out.push(Regression::IndexScanTurnedSequential {
                relation: rel.clone(),
            });
        }
    }
    out
}

/// Estimated rows (`reltuples`) of every relation of the user's schemas, by name.
pub async fn row_estimates(client: &Client) -> Result<Vec<(String, i64)>, MigrateError> {
    let rows = client
        .query(
            "SELECT c.relname::text, GREATEST(c.reltuples, 0)::int8 FROM pg_catalog.pg_class c \
             JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace \
             WHERE c.relkind IN ('r', 'p', 'm') AND n.nspname NOT IN ('pg_catalog', 'information_schema')",
            &[],
        )
        .await
        .map_err(|e| MigrateError::Database(describe_pg_error(&e)))?;
    Ok(rows.iter().map(|r| (r.get(0), r.get(1))).collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn timing(ms: f64, indexed: &[&str], sequential: &[&str]) -> Result<Timing, String> {
        Ok(Timing {
            median_ms: ms,
            min_ms: ms,
            runs: RUNS,
            plan: Vec::new(),
            indexed: indexed.iter().map(|s| s.to_string()).collect(),
            sequential: sequential.iter().map(|s| s.to_string()).collect(),
        })
    }

    fn speed(before: Result<Timing, String>, after: Result<Timing, String>) -> QuerySpeed {
        QuerySpeed {
            query: "messages.recent",
            before,
            after,
        }
    }

    #[test]
    fn slower_beyond_both_the_ratio_and_the_milliseconds_is_a_regression() {
        let budget = SpeedBudget::default();
        let rows = |_: &str| Some(1_000_000);
        let slower = speed(timing(10.0, &[], &[]), timing(30.0, &[], &[]));
        assert_eq!(
            regressions(&slower, &budget, rows),
            vec![Regression::Slower {
                ratio: 3.0,
                more_ms: 20.0
            }]
        );
        // Three times slower but 0.4 ms: noise. 4 ms more but 1.4×: within the budget.
        for (b, a) in [(0.2, 0.6), (10.0, 14.0)] {
            let q = speed(timing(b, &[], &[]), timing(a, &[], &[]));
            assert!(regressions(&q, &budget, rows).is_empty(), "{b} → {a}");
        }
        // A median pushed up by a burst of load while the fastest run stayed as fast: not slower.
        let mut loaded = timing(30.0, &[], &[]);
        if let Ok(t) = loaded.as_mut() {
            t.min_ms = 10.5;
        }
        let q = speed(timing(10.0, &[], &[]), loaded);
        assert!(regressions(&q, &budget, rows).is_empty());
    }

    #[test]
    fn an_index_scan_turned_sequential_is_a_regression_on_a_table_big_enough_to_plan() {
        let budget = SpeedBudget::default();
        let q = speed(
            timing(1.0, &["Message"], &[]),
            timing(1.2, &[], &["Message"]),
        );
        assert_eq!(
            regressions(&q, &budget, |_| Some(50_000)),
            vec![Regression::IndexScanTurnedSequential {
                relation: "Message".to_owned()
            }]
        );
        assert!(regressions(&q, &budget, |_| Some(12)).is_empty());
        // Before the migrations the relation did not exist: nothing to compare.
        let new = speed(
            Err("relation does not exist".to_owned()),
            timing(1.0, &[], &["X"]),
        );
        assert!(regressions(&new, &budget, |_| Some(50_000)).is_empty());
    }
}
