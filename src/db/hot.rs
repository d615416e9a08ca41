//! What a hot query is: request-path SQL whose plan must use an intended index, declared next to
//! the code that runs it (each `db::<table>` module exports a `HOT_QUERIES` slice, gathered by
//! [`super::hot_queries`]) and checked by `gcbb db verify` with `EXPLAIN (FORMAT JSON)`.

/// A sample value for one parameter of a hot query, with its type.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HotParam {
    /// `text`, possibly NULL (an absent filter).
    Text(Option<&'static str>),
    /// `int8`.
    Int8(i64),
    /// `int4`.
    Int4(i32),
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
