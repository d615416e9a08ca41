//! What a hot query is: request-path SQL whose plan must use an intended index, declared next to
//! the code that runs it (each `db::<table>` module exports a `HOT_QUERIES` slice, gathered by
//! [`super::hot_queries`]) and checked by `gcbb db verify` with `EXPLAIN (FORMAT JSON)`. And what
//! a hot write is: a representative write of a request path per hot table (`HOT_WRITES`, gathered
//! by [`super::hot_writes`]), which `gcbb db rehearse` keeps running beside the migrations.

/// A sample value for one parameter of a hot query, with its type.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HotParam {
    /// `text`, possibly NULL (an absent filter).
    Text(Option<&'static str>),
    /// `int8`.
    Int8(i64),
    /// `int4`.
    Int4(i32),
    /// `bool`, possibly NULL (a field left unchanged).
    Bool(Option<bool>),
}

/// One query of a request path and the index its plan must use.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HotQuery {
    /// Stable name, shown when the plan regresses (`dashboard.public_page`).
    pub name: &'static str,
    /// The SQL exactly as the request path sends it.
    pub sql: &'static str,
    /// Sample parameters, in order (`$1`, `$2`…), chosen to take the path being checked.
    pub params: &'static [HotParam],
    /// The index the plan must use somewhere (Index Scan, Index Only Scan or Bitmap Index Scan,
    /// or the arbiter of an `ON CONFLICT`). Several, `a|b`, when equivalent indexes serve the
    /// query and the planner picks the cheapest for the data at hand; the first is the one
    /// built for it.
    pub expects_index: &'static str,
    /// The relation that index belongs to, to show how it is scanned instead.
    pub on_relation: &'static str,
}

/// A database function that runs request-path SQL of its own (by `EXECUTE … USING`, so each
/// call is planned with its values): its statements are explained as hot queries like any
/// other, and `gcbb db verify` checks that the function's body still runs each of them, so a
/// function replaced by one that plans differently can't pass unseen.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FunctionQueries {
    /// The function's name (`public` schema).
    pub function: &'static str,
    /// Each statement exactly as the function's body passes it to `EXECUTE` (unquoted).
    pub runs: &'static [&'static str],
}

/// A representative write of a request path, declared next to its SQL like a hot query: `gcbb db
/// rehearse` runs each one in a loop beside the migrations, in a transaction it rolls back (the
/// copy's data does not drift), to measure how long the application's writes would wait.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HotWrite {
    /// Stable name, shown with the time it waited (`messages.insert`).
    pub name: &'static str,
    /// The SQL exactly as the request path sends it.
    pub sql: &'static str,
    /// Sample parameters, in order: rows of the bench data set (`gcbb bench seed`), each write on
    /// a row of its own so that the rehearsal's writers never wait for one another.
    pub params: &'static [HotParam],
    /// The table it writes.
    pub table: &'static str,
}
