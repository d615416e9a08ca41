//! What a run records: each migration's run, each statement's figures (time, rows, locks,
//! rewrites, indexes built, failure), as the verdict and the report read them.

use std::time::Instant;

use serde::Serialize;

use super::locks::LockHeld;
use crate::session::describe_pg_error;

/// A table whose data files a statement replaced (`relfilenode` changed): every row rewritten.
#[derive(Debug, Clone, Serialize)]
pub struct Rewrite {
    pub schema: String,
    pub table: String,
    pub table_bytes: Option<i64>,
    /// Its indexes rebuilt along with it.
    pub indexes_rebuilt: usize,
}

/// An index a statement created.
#[derive(Debug, Clone, Serialize)]
pub struct IndexBuilt {
    pub schema: String,
    pub index: String,
    pub table: String,
    /// `pg_relation_size` once built.
    pub bytes: i64,
}

/// Postgres's error for a statement (or a file) that failed.
#[derive(Debug, Clone, Serialize)]
pub struct Failure {
    /// SQLSTATE.
    pub code: Option<String>,
    /// As psql shows it (`ERROR: …`, DETAIL, HINT, CONTEXT).
    pub message: String,
}

impl Failure {
    pub(super) fn from_pg(e: &tokio_postgres::Error) -> Self {
        Failure {
            code: e.code().map(|c| c.code().to_owned()),
            message: describe_pg_error(e),
        }
    }
}

/// One statement's figures.
#[derive(Debug, Clone, Serialize)]
pub struct StatementRun {
    /// Line of the migration file where it starts.
    pub line: usize,
    /// The statement, whitespace collapsed and shortened.
    pub statement: String,
    pub ms: f64,
    /// Rows inserted, updated, deleted or returned; `None` for DDL.
    pub rows: Option<u64>,
    /// Strongest first.
    pub locks: Vec<LockHeld>,
    pub rewrites: Vec<Rewrite>,
    pub indexes_built: Vec<IndexBuilt>,
    /// Rules of `gcbb db lint --rules` it breaks, allowed or not.
    pub lint_rules: Vec<&'static str>,
    pub error: Option<Failure>,
    /// When it was sent (the workload's queries are attributed by it).
    #[serde(skip)]
    pub started: Option<Instant>,
    /// The longest a reader of the workload waited while this statement ran.
    pub reader_wait: Option<Waited>,
    /// The longest a writer of the workload waited while this statement ran.
    pub writer_wait: Option<Waited>,
    /// The same statement written not to block writes, for an index built or dropped without
    /// `CONCURRENTLY`.
    pub concurrently: Option<String>,
}

impl StatementRun {
    /// Its strongest lock, the one the report shows first.
    pub fn strongest_lock(&self) -> Option<&LockHeld> {
        self.locks.first()
    }
}

/// The longest wait of one role during one statement.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Waited {
    /// The hot query (or write) that waited.
    pub query: &'static str,
    pub ms: f64,
}

/// One migration's run.
#[derive(Debug, Clone, Serialize)]
pub struct MigrationRun {
    pub name: String,
    /// One transaction (`BEGIN` … `COMMIT`), or autocommit (a lone `CONCURRENTLY`).
    pub transaction: bool,
    pub ms: f64,
    pub applied: bool,
    pub statements: Vec<StatementRun>,
    /// Why it failed when no single statement did (`COMMIT`, an invalid index left behind).
    pub error: Option<Failure>,
}
