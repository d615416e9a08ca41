//! What the application's traffic would have felt during a rehearsal: while the pending files run
//! on the copy, sessions of their own keep sending production's queries, and every query's time
//! is kept.
//!
//! Locks held are a proxy; downtime is what a query waits. A statement that waits for its own lock
//! blocks every query queued behind it, and a lock held until `COMMIT` blocks queries long after
//! the statement that took it: only queries sent while the migration runs show both. Readers loop
//! over the hot queries that only read (`gcbb::db::hot_queries()`, the ones `verify` plans);
//! writers run each representative write (`gcbb::db::hot_writes()`: a message stored, a companion
//! edited, tokens accounted) in a transaction they roll back, so the copy's data does not drift.
//! Each writer has a write of its own, on a row of its own, so writers never wait for one another.
//!
//! Each query is attributed to the statement that was running when it was sent (a query in flight
//! when the first statement started, to that one), and each statement reports the longest a
//! reader and a writer waited ([`attribute`]). A query that fails is recorded with its error, and
//! the loop goes on: a failure is a finding, never a crash.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use gcbb::db::hot::HotParam;
use gcbb::db::DbConfig;
use serde::Serialize;
use tokio_postgres::Client;

use super::measure::{MigrationRun, Waited};
use crate::error::MigrateError;
use crate::session::{self, describe_pg_error};
use crate::verify::SampleParams;

/// Reader sessions by default.
pub const DEFAULT_READERS: usize = 2;

/// Pause between two queries of one session: frequent enough to be queued behind any lock held
/// for more than a few tens of milliseconds, sparse enough to leave the CPU to the migration.
const READER_PAUSE: Duration = Duration::from_millis(10);
const WRITER_PAUSE: Duration = Duration::from_millis(20);

/// How long the workload runs before the first statement: each query's usual time, and the
/// failures that are the copy's rather than the migrations'.
pub const WARM_UP: Duration = Duration::from_secs(1);

/// The `application_name` of the workload's sessions (shown in `pg_stat_activity`).
const APPLICATION_NAME: &str = "gcbb db rehearse (workload)";

/// Whether a query reads or writes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    Reader,
    Writer,
}

impl Role {
    pub fn noun(self) -> &'static str {
        match self {
            Role::Reader => "reader",
            Role::Writer => "writer",
        }
    }
}

/// One query the workload sent.
#[derive(Debug, Clone)]
pub struct Sample {
    pub role: Role,
    pub query: &'static str,
    pub sent: Instant,
    pub took: Duration,
    pub error: Option<String>,
}

/// One statement of the workload.
#[derive(Debug, Clone, Copy)]
struct Job {
    role: Role,
    name: &'static str,
    sql: &'static str,
    params: &'static [HotParam],
}

/// The hot queries that only read (an upsert among them is a write, run by the writers).
fn reads() -> Vec<Job> {
    gcbb::db::hot_queries()
        .into_iter()
        .filter(|q| is_read(q.sql))
        .map(|q| Job {
            role: Role::Reader,
            name: q.name,
            sql: q.sql,
            params: q.params,
        })
        .collect()
}

fn writes() -> Vec<Job> {
    gcbb::db::hot_writes()
        .into_iter()
        .map(|w| Job {
            role: Role::Writer,
            name: w.name,
            sql: w.sql,
            params: w.params,
        })
        .collect()
}

/// True when `sql` modifies no table (Postgres's parser says which tables a statement writes).
pub fn is_read(sql: &str) -> bool {
    pg_query::parse(sql).is_ok_and(|p| p.dml_tables().is_empty())
}

/// The workload while it runs.
pub struct Workload {
    stop: Arc<AtomicBool>,
    sessions: Vec<(i32, tokio::task::JoinHandle<Vec<Sample>>)>,
    copy: DbConfig,
    pub readers: usize,
    /// The writes, one writer session each.
    pub writes: Vec<&'static str>,
}

/// Opens `readers` reader sessions and one writer session per hot write on `copy`, and starts
/// them.
pub async fn start(copy: &DbConfig, readers: usize) -> Result<Workload, MigrateError> {
    let reads = reads();
    let writes = writes();
    let stop = Arc::new(AtomicBool::new(false));
    let cfg = DbConfig {
        application_name: APPLICATION_NAME.to_owned(),
        ..copy.clone()
    };
    let mut sessions = Vec::new();
    let mut loops: Vec<Vec<Job>> = Vec::new();
    for r in 0..readers {
        // Each reader starts at another query, so they are not all stuck on the same one.
        let mut jobs = reads.clone();
        if !jobs.is_empty() {
            let shift = r * jobs.len() / readers.max(1);
            jobs.rotate_left(shift);
        }
        loops.push(jobs);
    }
    for w in &writes {
        loops.push(vec![*w]);
    }
    for jobs in loops {
        if jobs.is_empty() {
            continue;
        }
        let opened = async {
            let client = session::connect(&cfg).await?;
            let pid: i32 = client
                .query_one("SELECT pg_backend_pid()", &[])
                .await
                .map_err(|e| MigrateError::Database(describe_pg_error(&e)))?
                .get(0);
            Ok::<_, MigrateError>((client, pid))
        }
        .await;
        let (client, pid) = match opened {
            Ok(opened) => opened,
            Err(e) => {
                // The sessions already looping stop with it.
                stop.store(true, Ordering::Relaxed);
                return Err(e);
            }
        };
        sessions.push((pid, tokio::spawn(run_loop(client, jobs, stop.clone()))));
    }
    Ok(Workload {
        stop,
        sessions,
        copy: copy.clone(),
        readers: if reads.is_empty() { 0 } else { readers },
        writes: writes.iter().map(|w| w.name).collect(),
    })
}

async fn run_loop(client: Client, jobs: Vec<Job>, stop: Arc<AtomicBool>) -> Vec<Sample> {
    let bound: Vec<SampleParams> = jobs.iter().map(|j| SampleParams::of(j.params)).collect();
    let mut samples = Vec::new();
    let mut i = 0;
    while !stop.load(Ordering::Relaxed) {
        let (job, params) = (&jobs[i % jobs.len()], &bound[i % jobs.len()]);
        i += 1;
        let sample = match job.role {
            Role::Reader => {
                let sent = Instant::now();
                let result = client.query_typed(job.sql, &params.typed()).await;
                Sample {
                    role: job.role,
                    query: job.name,
                    sent,
                    took: sent.elapsed(),
                    error: result.err().map(|e| describe_pg_error(&e)),
                }
            }
            Role::Writer => {
                if let Err(e) = client.batch_execute("BEGIN").await {
                    // The session is gone (the copy dropped under it): nothing more to measure.
                    samples.push(Sample {
                        role: job.role,
                        query: job.name,
                        sent: Instant::now(),
                        took: Duration::ZERO,
                        error: Some(describe_pg_error(&e)),
                    });
                    break;
                }
                let sent = Instant::now();
                let result = client.query_typed(job.sql, &params.typed()).await;
                let took = sent.elapsed();
                let _ = client.batch_execute("ROLLBACK").await;
                Sample {
                    role: job.role,
                    query: job.name,
                    sent,
                    took,
                    error: result.err().map(|e| describe_pg_error(&e)),
                }
            }
        };
        let closed = sample.error.is_some() && client.is_closed();
        samples.push(sample);
        if closed {
            break;
        }
        tokio::time::sleep(match job.role {
            Role::Reader => READER_PAUSE,
            Role::Writer => WRITER_PAUSE,
        })
        .await;
    }
    samples
}

/// How long `stop` waits for queries still in flight before cancelling them.
const STOP_GRACE: Duration = Duration::from_secs(10);

impl Workload {
    /// Stops every session and returns every query it sent. Queries still blocked after a grace
    /// period (the migrating session gone wrong and still holding its locks) are cancelled.
    pub async fn stop(self) -> Vec<Sample> {
        self.stop.store(true, Ordering::Relaxed);
        let pids: Vec<i32> = self.sessions.iter().map(|(pid, _)| *pid).collect();
        let joined = futures_util::future::join_all(self.sessions.into_iter().map(|(_, h)| h));
        tokio::pin!(joined);
        let results = match tokio::time::timeout(STOP_GRACE, &mut joined).await {
            Ok(results) => results,
            Err(_) => {
                if let Ok(admin) = session::connect(&self.copy).await {
                    let _ = admin
                        .execute(
                            "SELECT pg_cancel_backend(pid) FROM unnest($1::int4[]) pid",
                            &[&pids],
                        )
                        .await;
                }
                joined.await
            }
        };
        results.into_iter().flatten().flatten().collect()
    }
}

/// What the workload saw, besides the per-statement waits.
#[derive(Debug, Clone, Default, Serialize)]
pub struct WorkloadReport {
    pub readers: usize,
    /// The writes, one writer session each.
    pub writes: Vec<&'static str>,
    /// Queries sent while the migrations ran.
    pub queries_during: usize,
    /// Each query's median time before the first statement (the warm-up).
    pub usual: Vec<Usual>,
    pub errors: Vec<WorkloadError>,
}

/// A query's usual time on the copy, before the migrations.
#[derive(Debug, Clone, Serialize)]
pub struct Usual {
    pub query: &'static str,
    pub role: Role,
    pub median_ms: f64,
    pub runs: usize,
}

/// A query of the workload that failed.
#[derive(Debug, Clone, Serialize)]
pub struct WorkloadError {
    pub query: &'static str,
    pub role: Role,
    pub failures: usize,
    /// Postgres's message, the first time.
    pub first_error: String,
    /// Where it first failed: `before the migrations`, or `<migration>, line N`.
    pub first_seen: String,
    /// It failed before any statement ran too: the copy's data, not the migrations.
    pub before_migrations: bool,
}

fn ms(d: Duration) -> f64 {
    (d.as_secs_f64() * 1e6).round() / 1e3
}

fn median(mut values: Vec<f64>) -> f64 {
    values.sort_by(f64::total_cmp);
    match values.len() {
        0 => 0.0,
        n if n % 2 == 1 => values[n / 2],
        n => (values[n / 2 - 1] + values[n / 2]) / 2.0,
    }
}

/// Gives each statement of `runs` the longest wait of a reader and of a writer among the
/// queries sent while it was the statement running (from its start to the next statement's, the
/// last one until `ended`), and sums up the rest.
pub fn attribute(
    runs: &mut [MigrationRun],
    samples: &[Sample],
    ended: Instant,
    readers: usize,
    writes: Vec<&'static str>,
) -> WorkloadReport {
    let mut windows: Vec<(usize, usize, Instant)> = Vec::new();
    for (r, run) in runs.iter().enumerate() {
        for (s, st) in run.statements.iter().enumerate() {
            if let Some(started) = st.started {
                windows.push((r, s, started));
            }
        }
    }
    let mut report = WorkloadReport {
        readers,
        writes,
        ..WorkloadReport::default()
    };
    let first = windows.first().map(|w| w.2);
    let mut usual: Vec<(&'static str, Role, Vec<f64>)> = Vec::new();
    for sample in samples {
        let finished = sample.sent + sample.took;
        let window = match first {
            Some(first) if sample.sent < first && finished <= first => None,
            Some(_) if sample.sent >= ended => continue,
            Some(_) => {
                let at = windows.partition_point(|w| w.2 <= sample.sent);
                Some(windows[at.saturating_sub(1)])
            }
            None => None,
        };
        let Some((r, s, _)) = window else {
            // Before the first statement: the usual time, and failures of the copy itself.
            match usual
                .iter_mut()
                .find(|u| u.0 == sample.query && u.1 == sample.role)
            {
                Some(u) => u.2.push(ms(sample.took)),
                None => usual.push((sample.query, sample.role, vec![ms(sample.took)])),
            }
            if let Some(e) = &sample.error {
                record_error(&mut report.errors, sample, e, "before the migrations", true);
            }
            continue;
        };
        report.queries_during += 1;
        let statement = &mut runs[r].statements[s];
        if let Some(e) = &sample.error {
            let at = format!("{}, line {}", runs[r].name, statement.line);
            record_error(&mut report.errors, sample, e, &at, false);
            continue;
        }
        let slot = match sample.role {
            Role::Reader => &mut statement.reader_wait,
            Role::Writer => &mut statement.writer_wait,
        };
        let waited = ms(sample.took);
        if slot.as_ref().is_none_or(|w| w.ms < waited) {
            *slot = Some(Waited {
                query: sample.query,
                ms: waited,
            });
        }
    }
    report.usual = usual
        .into_iter()
        .map(|(query, role, times)| Usual {
            query,
            role,
            runs: times.len(),
            median_ms: median(times),
        })
        .collect();
    report.usual.sort_by_key(|u| (u.role.noun(), u.query));
    report
}

fn record_error(
    errors: &mut Vec<WorkloadError>,
    sample: &Sample,
    message: &str,
    at: &str,
    before: bool,
) {
    match errors
        .iter_mut()
        .find(|e| e.query == sample.query && e.role == sample.role)
    {
        Some(e) => {
            e.failures += 1;
            e.before_migrations |= before;
        }
        None => errors.push(WorkloadError {
            query: sample.query,
            role: sample.role,
            failures: 1,
            first_error: message.to_owned(),
            first_seen: at.to_owned(),
            before_migrations: before,
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::super::measure::StatementRun;
    use super::*;

    fn statement(line: usize, started: Instant) -> StatementRun {
        StatementRun {
            line,
            statement: format!("statement at line {line}"),
            ms: 0.0,
            rows: None,
            locks: Vec::new(),
            rewrites: Vec::new(),
            indexes_built: Vec::new(),
            lint_rules: Vec::new(),
            error: None,
            started: Some(started),
            reader_wait: None,
            writer_wait: None,
            concurrently: None,
        }
    }

    fn sample(role: Role, query: &'static str, sent: Instant, took_ms: u64) -> Sample {
        Sample {
            role,
            query,
            sent,
            took: Duration::from_millis(took_ms),
            error: None,
        }
    }

    #[test]
    fn each_query_counts_for_the_statement_running_when_it_was_sent() {
        let t0 = Instant::now();
        let at = |ms: u64| t0 + Duration::from_millis(ms);
        let mut runs = vec![MigrationRun {
            name: "20990101000000_x".to_owned(),
            transaction: true,
            ms: 0.0,
            applied: true,
            statements: vec![statement(1, at(1000)), statement(5, at(1200))],
            error: None,
        }];
        let samples = vec![
            sample(Role::Reader, "warm", at(0), 2),
            sample(Role::Reader, "warm", at(10), 4),
            // In flight when the first statement started: its wait counts there.
            sample(Role::Writer, "w", at(990), 700),
            sample(Role::Writer, "w", at(1100), 100),
            sample(Role::Writer, "w", at(1250), 5000),
            sample(Role::Reader, "r", at(1210), 3),
            // After the run: not counted.
            sample(Role::Reader, "r", at(9000), 900),
            Sample {
                error: Some("ERROR: column \"x\" does not exist".to_owned()),
                ..sample(Role::Reader, "r", at(1300), 1)
            },
        ];
        let report = attribute(&mut runs, &samples, at(8000), 1, vec!["w"]);
        let [a, b] = &runs[0].statements[..] else {
            panic!()
        };
        assert_eq!(
            a.writer_wait,
            Some(Waited {
                query: "w",
                ms: 700.0
            })
        );
        assert_eq!(a.reader_wait, None);
        assert_eq!(b.writer_wait.as_ref().map(|w| w.ms), Some(5000.0));
        assert_eq!(b.reader_wait.as_ref().map(|w| w.ms), Some(3.0));
        assert_eq!(report.queries_during, 5);
        assert_eq!(report.usual.len(), 1);
        assert_eq!(report.usual[0].median_ms, 3.0);
        assert_eq!(report.errors.len(), 1);
        assert_eq!(report.errors[0].first_seen, "20990101000000_x, line 5");
        assert!(!report.errors[0].before_migrations);
    }

    #[test]
    fn only_statements_that_write_nothing_are_reads() {
        assert!(is_read("SELECT 1"));
        assert!(!is_read(
            "WITH c AS (UPDATE t SET x = 1 RETURNING id) INSERT INTO u SELECT id FROM c"
        ));
        assert!(!is_read("UPDATE t SET x = 1"));
        let reads = reads();
        assert!(!reads.is_empty());
        assert!(reads.iter().all(|j| j.name != "tokens.add_reply_tokens"));
        let writes: Vec<&str> = writes().iter().map(|w| w.name).collect();
        assert_eq!(
            writes,
            vec![
                "messages.insert",
                "companions.update_owned",
                "tokens.add_reply_tokens"
            ]
        );
    }
}
