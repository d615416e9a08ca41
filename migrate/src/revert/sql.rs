//! The revert's SQL, piece by piece: a statement with the comments above it, a planned file, names
//! quoted as Postgres reads them, a column or a view as DDL writes it, and a file's text.

use std::fmt::Write as _;

use chrono::{DateTime, Utc};

use crate::history::quote_ident;
use crate::introspect::{Column, Index};

/// One statement of a file, with the allow comments above it.
#[derive(Debug, Clone)]
pub(super) struct Stmt {
    pub(super) sql: String,
    pub(super) comment: Option<String>,
    pub(super) allows: Vec<(String, String)>,
    /// The view it drops or creates, for ordering views by dependency.
    pub(super) view: Option<String>,
}

impl Stmt {
    pub(super) fn new(sql: impl Into<String>) -> Self {
        Stmt {
            sql: sql.into(),
            comment: None,
            allows: Vec::new(),
            view: None,
        }
    }

    pub(super) fn of_view(mut self, name: &str) -> Self {
        self.view = Some(name.to_owned());
        self
    }

    pub(super) fn note(mut self, comment: impl Into<String>) -> Self {
        self.comment = Some(comment.into());
        self
    }

    pub(super) fn allow(mut self, rule: &str, reason: impl Into<String>) -> Self {
        self.allows.push((rule.to_owned(), reason.into()));
        self
    }
}

/// A file being planned: its name's suffix, what it does, its statements.
#[derive(Debug, Clone)]
pub(super) struct Planned {
    pub(super) suffix: String,
    pub(super) what: String,
    pub(super) stmts: Vec<Stmt>,
}

/// `"name"`, or `"schema"."name"` for introspection's `schema.name`.
pub(super) fn ident(key: &str) -> String {
    match key.split_once('.') {
        Some((schema, name)) => format!("{}.{}", quote_ident(schema), quote_ident(name)),
        None => quote_ident(key),
    }
}

/// The schema part of an introspected name (`public` when it has none), quoted, with a dot.
pub(super) fn schema_prefix(key: &str) -> String {
    match key.split_once('.') {
        Some((schema, _)) => format!("{}.", quote_ident(schema)),
        None => String::new(),
    }
}

/// `name(arguments)` of a function key, with the name quoted.
pub(super) fn routine(key: &str) -> String {
    match key.split_once('(') {
        Some((name, args)) => format!("{}({args}", ident(name)),
        None => ident(key),
    }
}

pub(super) fn without_semicolon(sql: &str) -> &str {
    sql.trim().trim_end_matches(';').trim_end()
}

/// A column as `CREATE TABLE` or `ADD COLUMN` writes it. A column whose default is its own
/// sequence (`serial`) is written as the serial type, which creates the sequence again.
pub(super) fn column_sql(table: &str, c: &Column) -> String {
    let serial = c.default.as_deref().is_some_and(|d| {
        d.starts_with("nextval(")
            && d.contains(&format!(
                "{}_{}_seq",
                table.rsplit('.').next().unwrap_or(table),
                c.name
            ))
    });
    if serial {
        let ty = match c.data_type.as_str() {
            "bigint" => "BIGSERIAL",
            "smallint" => "SMALLSERIAL",
            _ => "SERIAL",
        };
        return format!("{} {ty} NOT NULL", quote_ident(&c.name));
    }
    let mut out = format!("{} {}", quote_ident(&c.name), c.data_type);
    if c.not_null {
        out.push_str(" NOT NULL");
    }
    match c.default.as_deref() {
        Some(identity) if identity.starts_with("identity ") => {
            let kind = identity.trim_start_matches("identity ").to_uppercase();
            out.push_str(&format!(" GENERATED {kind} AS IDENTITY"));
        }
        Some(generated) if generated.starts_with("generated always as ") => {
            let expr = generated
                .trim_start_matches("generated always as ")
                .trim_end_matches(" stored");
            out.push_str(&format!(" GENERATED ALWAYS AS {expr} STORED"));
        }
        Some(default) => out.push_str(&format!(" DEFAULT {default}")),
        None => {}
    }
    out
}

pub(super) fn create_view(name: &str, materialized: bool, definition: &str) -> Stmt {
    Stmt::new(format!(
        "CREATE {}VIEW {} AS\n{}",
        if materialized { "MATERIALIZED " } else { "" },
        ident(name),
        without_semicolon(definition)
    ))
    .of_view(name)
}

/// An index of a table or view this file creates: built in the same transaction (it is empty).
pub(super) fn inline_index(index: &Index) -> Stmt {
    Stmt::new(
        crate::drift::if_not_exists(&index.definition).unwrap_or_else(|| index.definition.clone()),
    )
}

/// The text of one file, and the line each statement starts on.
pub(super) fn render_file(header: &str, stmts: &[Stmt]) -> (String, Vec<usize>) {
    let mut out = String::from(header);
    let mut lines = Vec::with_capacity(stmts.len());
    for s in stmts {
        out.push('\n');
        if let Some(c) = &s.comment {
            let _ = writeln!(out, "-- {c}");
        }
        for (rule, reason) in &s.allows {
            let _ = writeln!(out, "-- gcbb:allow {rule} {}", reason.replace('\n', " "));
        }
        lines.push(out.lines().count() + 1);
        let _ = writeln!(out, "{};", s.sql);
    }
    (out, lines)
}

pub(super) fn header(
    migration: &str,
    what: &str,
    part: usize,
    parts: usize,
    now: DateTime<Utc>,
) -> String {
    format!(
        "-- Written by `gcbb db revert {migration}` at {}.\n\
         -- Reverts that migration's schema changes, computed on the shadow database: the history up to\n\
         -- it, turned back into the history before it. Part {part} of {parts}: {what}.\n\
         -- Rows it inserted or updated are data, which this file does not touch.\n",
        now.format("%Y-%m-%d %H:%M:%S UTC")
    )
}
