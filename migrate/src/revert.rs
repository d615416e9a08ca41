//! `gcbb db revert <migration>`: the seed's emergency rollback, "a new migration that reverts the
//! problematic changes", computed instead of written by hand.
//!
//! Computed on the shadow database: the history up to the migration is replayed and read, the
//! history before it likewise, and the difference between the two (`drift`'s diff, turned around)
//! is rendered as SQL that turns the first into the second. The SQL is laid out as `deploy` runs
//! it: an index built or dropped `CONCURRENTLY` alone in a file of its own (drops before the main
//! file, builds after it), everything else in one transactional file, in an order where nothing is
//! dropped before what depends on it.
//!
//! The files are linted like any file. A statement that destroys data written since the migration
//! ran (a `DROP COLUMN` of the column it added, a `DROP TABLE` of its table, a type change) breaks
//! a lint rule, and the revert is refused, nothing written, until the caller says why the data may
//! go (`--allow RULE=REASON`, written above each such statement as `-- gcbb:allow RULE REASON`).
//! Drops that lose nothing (a view, a type, created by the migration itself) carry an allow that
//! says so. Before anything is written the files are replayed on the shadow on top of the whole
//! history: a revert that does not apply there (a later migration depends on what it drops) is
//! refused, and what it leaves different from a history without the migration is reported.
//!
//! Only schema is reverted: rows a migration inserted or updated are data, which no diff of two
//! schemas can see, and data a migration dropped is not brought back (that is Neon's
//! point-in-time restore, or `pg_restore` of a `--backup` archive).

use std::collections::BTreeSet;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use chrono::{DateTime, Duration as ChronoDuration, NaiveDateTime, Utc};
use serde::Serialize;

use gcbb::db::DbConfig;

use super::apply::{deploy_locked, with_lock};
use super::config::MigrateSettings;
use super::drift::{diff, render_summary, Step, TableChange};
use super::error::MigrateError;
use super::files::{self, LocalMigration};
use super::history::{self, quote_ident};
use super::introspect::{self, Column, Index, Schema};
use super::lint::{self, Finding, LintContext};
use super::lint_gate::lint_context;
use super::{shadow, statements};

/// Lint rules whose statements destroy data written since the migration ran.
pub const DATA_DESTROYING_RULES: &[&str] = &[
    "drop-table",
    "drop-column",
    "alter-column-type",
    "truncate",
    "delete-without-where",
    "drop-schema",
];

/// What `gcbb db revert` is asked.
#[derive(Debug, Clone, Default)]
pub struct RevertOptions {
    /// `(rule, reason)`: why a statement breaking `rule` is acceptable here.
    pub allows: Vec<(String, String)>,
    /// Accept a shadow whose name lacks `shadow` or that holds a history (as `drift --force`).
    pub force: bool,
}

/// One file of the revert.
#[derive(Debug, Clone, Serialize)]
pub struct RevertFile {
    /// The migration directory's name, `<timestamp>_revert_<name>…`.
    pub name: String,
    pub sql: String,
}

/// The computed revert, not written yet.
#[derive(Debug, Clone, Serialize)]
pub struct Revert {
    pub migration: String,
    /// What the revert changes, in drift's words (the history up to the migration → before it).
    pub summary: String,
    /// Each file's statements, shortened, in order: what the revert does.
    pub statements: Vec<String>,
    pub files: Vec<RevertFile>,
    /// Lint warnings of the files (errors refuse the revert).
    #[serde(skip)]
    pub warnings: Vec<Finding>,
    pub notes: Vec<String>,
}

/// One statement of a file, with the allow comments above it.
#[derive(Debug, Clone)]
struct Stmt {
    sql: String,
    comment: Option<String>,
    allows: Vec<(String, String)>,
    /// The view it drops or creates, for ordering views by dependency.
    view: Option<String>,
}

impl Stmt {
    fn new(sql: impl Into<String>) -> Self {
        Stmt {
            sql: sql.into(),
            comment: None,
            allows: Vec::new(),
            view: None,
        }
    }

    fn of_view(mut self, name: &str) -> Self {
        self.view = Some(name.to_owned());
        self
    }

    fn note(mut self, comment: impl Into<String>) -> Self {
        self.comment = Some(comment.into());
        self
    }

    fn allow(mut self, rule: &str, reason: impl Into<String>) -> Self {
        self.allows.push((rule.to_owned(), reason.into()));
        self
    }
}

/// A file being planned: its name's suffix, what it does, its statements.
#[derive(Debug, Clone)]
struct Planned {
    suffix: String,
    what: String,
    stmts: Vec<Stmt>,
}

/// `"name"`, or `"schema"."name"` for introspection's `schema.name`.
fn ident(key: &str) -> String {
    match key.split_once('.') {
        Some((schema, name)) => format!("{}.{}", quote_ident(schema), quote_ident(name)),
        None => quote_ident(key),
    }
}

/// The schema part of an introspected name (`public` when it has none), quoted, with a dot.
fn schema_prefix(key: &str) -> String {
    match key.split_once('.') {
        Some((schema, _)) => format!("{}.", quote_ident(schema)),
        None => String::new(),
    }
}

/// `name(arguments)` of a function key, with the name quoted.
fn routine(key: &str) -> String {
    match key.split_once('(') {
        Some((name, args)) => format!("{}({args}", ident(name)),
        None => ident(key),
    }
}

fn without_semicolon(sql: &str) -> &str {
    sql.trim().trim_end_matches(';').trim_end()
}

/// A column as `CREATE TABLE` or `ADD COLUMN` writes it. A column whose default is its own
/// sequence (`serial`) is written as the serial type, which creates the sequence again.
fn column_sql(table: &str, c: &Column) -> String {
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

/// Everything the renderer needs: the schema with the migration (`with`) and without (`without`).
struct Renderer<'a> {
    migration: &'a str,
    with: &'a Schema,
    without: &'a Schema,
    steps: &'a [Step],
}

impl Renderer<'_> {
    fn dropped_tables(&self) -> BTreeSet<&str> {
        self.steps
            .iter()
            .filter_map(|s| match s {
                Step::DropTable { name } => Some(name.as_str()),
                _ => None,
            })
            .collect()
    }

    fn created_tables(&self) -> BTreeSet<&str> {
        self.steps
            .iter()
            .filter_map(|s| match s {
                Step::CreateTable { name } => Some(name.as_str()),
                _ => None,
            })
            .collect()
    }

    fn dropped_views(&self) -> BTreeSet<&str> {
        self.steps
            .iter()
            .filter_map(|s| match s {
                Step::DropView { name } => Some(name.as_str()),
                Step::RedefineView { name }
                    if self.with.views.get(name).is_some_and(|v| v.materialized) =>
                {
                    Some(name.as_str())
                }
                _ => None,
            })
            .collect()
    }

    fn created_views(&self) -> BTreeSet<&str> {
        self.steps
            .iter()
            .filter_map(|s| match s {
                Step::CreateView { name, .. } => Some(name.as_str()),
                Step::RedefineView { name }
                    if self.with.views.get(name).is_some_and(|v| v.materialized) =>
                {
                    Some(name.as_str())
                }
                _ => None,
            })
            .collect()
    }

    fn created_by(&self) -> String {
        format!("created by {}, which this file reverts", self.migration)
    }

    /// The files: concurrent index drops, the transactional file, concurrent index builds; and
    /// what no statement can undo, in words.
    fn plan(&self) -> (Vec<Planned>, Vec<String>) {
        let mut impossible = Vec::new();
        let dropped_tables = self.dropped_tables();
        let created_tables = self.created_tables();
        let dropped_views = self.dropped_views();
        let created_views = self.created_views();
        let mut before = Vec::new();
        let mut after = Vec::new();
        let mut main: Vec<Vec<Stmt>> = vec![Vec::new(); 16];
        for step in self.steps {
            match step {
                Step::DropIndex { table, index } | Step::DropViewIndex { view: table, index } => {
                    if dropped_tables.contains(table.as_str())
                        || dropped_views.contains(table.as_str())
                    {
                        continue;
                    }
                    let sql = format!(
                        "DROP INDEX CONCURRENTLY IF EXISTS {}{}",
                        schema_prefix(table),
                        quote_ident(&index.name)
                    );
                    before.push(Planned {
                        suffix: format!("drop_{}", index.name),
                        what: format!("drops the index {} that it created", index.name),
                        stmts: vec![Stmt::new(sql)],
                    });
                }
                Step::CreateIndex { table, index }
                | Step::CreateViewIndex { view: table, index } => {
                    if created_tables.contains(table.as_str())
                        || created_views.contains(table.as_str())
                    {
                        main[12].push(inline_index(index));
                        continue;
                    }
                    match statements::concurrently_rewrite(&index.definition) {
                        Some(sql) => after.push(Planned {
                            suffix: format!("create_{}", index.name),
                            what: format!("builds again the index {} that it dropped", index.name),
                            stmts: vec![Stmt::new(sql)],
                        }),
                        None => impossible
                            .push(format!("the index {}: {}", index.name, index.definition)),
                    }
                }
                Step::DropTrigger { table, trigger } => {
                    if !dropped_tables.contains(table.as_str()) {
                        main[0].push(Stmt::new(format!(
                            "DROP TRIGGER {} ON {}",
                            quote_ident(&trigger.name),
                            ident(table)
                        )));
                    }
                }
                Step::RedefineTrigger { table, trigger } => {
                    main[0].push(Stmt::new(format!(
                        "DROP TRIGGER {} ON {}",
                        quote_ident(&trigger.name),
                        ident(table)
                    )));
                    main[14].push(Stmt::new(without_semicolon(&trigger.definition)));
                }
                Step::CreateTrigger { trigger, .. } => {
                    main[14].push(Stmt::new(without_semicolon(&trigger.definition)));
                }
                Step::DropView { name } => {
                    let materialized = self.with.views.get(name).is_some_and(|v| v.materialized);
                    let (kind, rule) = if materialized {
                        ("MATERIALIZED VIEW", "drop-materialized-view")
                    } else {
                        ("VIEW", "drop-view")
                    };
                    main[1].push(
                        Stmt::new(format!("DROP {kind} {}", ident(name)))
                            .allow(
                                rule,
                                format!("{}; a view holds no data of its own", self.created_by()),
                            )
                            .of_view(name),
                    );
                }
                Step::RedefineView { name } => {
                    let (Some(old), Some(new)) =
                        (self.with.views.get(name), self.without.views.get(name))
                    else {
                        continue;
                    };
                    if old.materialized || new.materialized {
                        let kind = if old.materialized {
                            "MATERIALIZED VIEW"
                        } else {
                            "VIEW"
                        };
                        let rule = if old.materialized {
                            "drop-materialized-view"
                        } else {
                            "drop-view"
                        };
                        main[1].push(
                            Stmt::new(format!("DROP {kind} {}", ident(name)))
                                .allow(
                                    rule,
                                    format!(
                                        "redefined by {}: made again below as it was before",
                                        self.migration
                                    ),
                                )
                                .of_view(name),
                        );
                        main[13].push(create_view(name, new.materialized, &new.definition));
                        for index in &new.indexes {
                            main[13].push(inline_index(index));
                        }
                    } else {
                        main[13].push(Stmt::new(format!(
                            "CREATE OR REPLACE VIEW {} AS\n{}",
                            ident(name),
                            without_semicolon(&new.definition)
                        )));
                    }
                }
                Step::CreateView { name, materialized } => {
                    if let Some(v) = self.without.views.get(name) {
                        main[13].push(
                            create_view(name, *materialized, &v.definition)
                                .note(format!("dropped by {}", self.migration)),
                        );
                    }
                }
                Step::DropForeignKey { table, foreign_key } => {
                    if !dropped_tables.contains(table.as_str()) {
                        main[2].push(Stmt::new(format!(
                            "ALTER TABLE {} DROP CONSTRAINT {}",
                            ident(table),
                            quote_ident(&foreign_key.name)
                        )));
                    }
                }
                Step::AddForeignKey {
                    table,
                    foreign_key: fk,
                } => {
                    main[13].push(Stmt::new(format!(
                        "ALTER TABLE {} ADD CONSTRAINT {} FOREIGN KEY ({}) REFERENCES {}({}) ON DELETE {} ON UPDATE {} NOT VALID",
                        ident(table),
                        quote_ident(&fk.name),
                        fk.columns.iter().map(|c| quote_ident(c)).collect::<Vec<_>>().join(", "),
                        ident(&fk.referenced_table),
                        fk.referenced_columns.iter().map(|c| quote_ident(c)).collect::<Vec<_>>().join(", "),
                        fk.on_delete,
                        fk.on_update
                    )));
                    main[13].push(Stmt::new(format!(
                        "ALTER TABLE {} VALIDATE CONSTRAINT {}",
                        ident(table),
                        quote_ident(&fk.name)
                    )));
                }
                Step::RenameForeignKey { table, from, to } => main[15].push(Stmt::new(format!(
                    "ALTER TABLE {} RENAME CONSTRAINT {} TO {}",
                    ident(table),
                    quote_ident(from),
                    quote_ident(to)
                ))),
                Step::RenameIndex { table, from, to }
                | Step::RenameViewIndex {
                    view: table,
                    from,
                    to,
                } => main[15].push(Stmt::new(format!(
                    "ALTER INDEX {}{} RENAME TO {}",
                    schema_prefix(table),
                    quote_ident(from),
                    quote_ident(to)
                ))),
                Step::AlterTable { table, changes } => {
                    for change in changes {
                        self.alter_table(table, change, &mut main);
                    }
                }
                Step::DropTable { .. } => {}
                Step::CreateTable { name } => {
                    if let Some(t) = self.without.tables.get(name) {
                        let mut cols: Vec<String> = t
                            .columns
                            .iter()
                            .map(|c| format!("    {}", column_sql(name, c)))
                            .collect();
                        if let Some(pk) = &t.primary_key {
                            cols.push(format!(
                                "    CONSTRAINT {} PRIMARY KEY ({})",
                                quote_ident(&pk.name),
                                pk.columns
                                    .iter()
                                    .map(|c| quote_ident(c))
                                    .collect::<Vec<_>>()
                                    .join(", ")
                            ));
                        }
                        main[12].insert(
                            0,
                            Stmt::new(format!("CREATE TABLE {} (\n{}\n)", ident(name), cols.join(",\n")))
                                .note(format!(
                                    "dropped by {}: made again empty, the rows it held are not restored",
                                    self.migration
                                )),
                        );
                    }
                }
                Step::DropFunction { name } => {
                    main[6].push(Stmt::new(format!("DROP ROUTINE {}", routine(name))))
                }
                Step::CreateFunction { name } | Step::RedefineFunction { name } => {
                    if let Some(f) = self.without.functions.get(name) {
                        main[11].push(Stmt::new(without_semicolon(&f.definition)));
                    }
                }
                Step::DropEnum { name } => {
                    main[7].push(Stmt::new(format!("DROP TYPE {}", ident(name))).allow(
                        "drop-type",
                        format!("{}; nothing before it used it", self.created_by()),
                    ))
                }
                Step::CreateEnum { name } => {
                    if let Some(labels) = self.without.enums.get(name) {
                        main[10].push(Stmt::new(format!(
                            "CREATE TYPE {} AS ENUM ({})",
                            ident(name),
                            labels
                                .iter()
                                .map(|l| format!("'{}'", l.replace('\'', "''")))
                                .collect::<Vec<_>>()
                                .join(", ")
                        )));
                    }
                }
                Step::AlterEnum {
                    name,
                    added,
                    removed,
                } => {
                    // `added`: labels the history before has and after lacks (the migration
                    // removed them); `removed`: labels the migration added, which Postgres cannot
                    // take out of a type in use.
                    for label in added {
                        main[10].push(Stmt::new(format!(
                            "ALTER TYPE {} ADD VALUE IF NOT EXISTS '{}'",
                            ident(name),
                            label.replace('\'', "''")
                        )));
                    }
                    for label in removed {
                        impossible.push(format!(
                            "the label '{label}' it added to the enum {name}: Postgres cannot remove a label from an enum"
                        ));
                    }
                }
                Step::DropExtension { name } => {
                    main[8].push(Stmt::new(format!("DROP EXTENSION {}", quote_ident(name))))
                }
                Step::CreateExtension { name } => {
                    let schema = self
                        .without
                        .extensions
                        .get(name)
                        .map(|e| format!(" SCHEMA {}", quote_ident(&e.schema)))
                        .unwrap_or_default();
                    main[9].push(Stmt::new(format!(
                        "CREATE EXTENSION IF NOT EXISTS {}{schema}",
                        quote_ident(name)
                    )));
                }
                Step::AlterExtension { name } => {
                    if let Some(e) = self.without.extensions.get(name) {
                        main[9].push(Stmt::new(format!(
                            "ALTER EXTENSION {} UPDATE TO '{}'",
                            quote_ident(name),
                            e.version.replace('\'', "''")
                        )));
                    }
                }
            }
        }
        main[5] = self.drop_tables();
        // A view reading another is dropped before it and made after it.
        order_views(&mut main[1], &views_in_dependency_order(self.with), true);
        order_views(
            &mut main[13],
            &views_in_dependency_order(self.without),
            false,
        );
        let stmts: Vec<Stmt> = main.into_iter().flatten().collect();
        let mut files = before;
        if !stmts.is_empty() {
            files.push(Planned {
                suffix: String::new(),
                what: "everything but the index builds and drops that run CONCURRENTLY, in one \
                       transaction"
                    .to_owned(),
                stmts,
            });
        }
        files.extend(after);
        (files, impossible)
    }

    fn alter_table(&self, table: &str, change: &TableChange, main: &mut [Vec<Stmt>]) {
        let before = self.with.tables.get(table);
        let after = self.without.tables.get(table);
        let col = |t: Option<&introspect::Table>, name: &str| {
            t.and_then(|t| t.columns.iter().find(|c| c.name == name))
                .cloned()
        };
        match change {
            TableChange::DropColumn { column } => main[3].push(
                Stmt::new(format!(
                    "ALTER TABLE {} DROP COLUMN {}",
                    ident(table),
                    quote_ident(column)
                ))
                .note(format!("added by {}", self.migration)),
            ),
            TableChange::AddColumn { column } => {
                if let Some(c) = col(after, column) {
                    let mut c2 = c.clone();
                    let note = if c.not_null && c.default.is_none() {
                        c2.not_null = false;
                        format!(
                            "dropped by {}: made again, nullable (it was NOT NULL: the values it held are gone, fill them and SET NOT NULL later)",
                            self.migration
                        )
                    } else {
                        format!(
                            "dropped by {}: made again; the values it held are not restored",
                            self.migration
                        )
                    };
                    main[4].push(
                        Stmt::new(format!(
                            "ALTER TABLE {} ADD COLUMN {}",
                            ident(table),
                            column_sql(table, &c2)
                        ))
                        .note(note),
                    );
                }
            }
            TableChange::AlterColumn { column, .. } => {
                let (Some(old), Some(new)) = (col(before, column), col(after, column)) else {
                    return;
                };
                let at = format!(
                    "ALTER TABLE {} ALTER COLUMN {}",
                    ident(table),
                    quote_ident(column)
                );
                if old.data_type != new.data_type {
                    main[3].push(Stmt::new(format!(
                        "{at} TYPE {} USING {}::{}",
                        new.data_type,
                        quote_ident(column),
                        new.data_type
                    )));
                }
                if old.default != new.default {
                    main[3].push(Stmt::new(match &new.default {
                        Some(d) => format!("{at} SET DEFAULT {d}"),
                        None => format!("{at} DROP DEFAULT"),
                    }));
                }
                if old.not_null != new.not_null {
                    main[3].push(Stmt::new(if new.not_null {
                        format!("{at} SET NOT NULL")
                    } else {
                        format!("{at} DROP NOT NULL")
                    }));
                }
            }
            TableChange::DropPrimaryKey { .. } => {
                if let Some(pk) = before.and_then(|t| t.primary_key.as_ref()) {
                    main[3].push(Stmt::new(format!(
                        "ALTER TABLE {} DROP CONSTRAINT {}",
                        ident(table),
                        quote_ident(&pk.name)
                    )));
                }
            }
            TableChange::AddPrimaryKey { columns } => {
                if let Some(pk) = after.and_then(|t| t.primary_key.as_ref()) {
                    main[4].push(Stmt::new(format!(
                        "ALTER TABLE {} ADD CONSTRAINT {} PRIMARY KEY ({})",
                        ident(table),
                        quote_ident(&pk.name),
                        columns
                            .iter()
                            .map(|c| quote_ident(c))
                            .collect::<Vec<_>>()
                            .join(", ")
                    )));
                }
            }
            TableChange::RenamePrimaryKey { .. } => {
                if let (Some(a), Some(b)) = (
                    before.and_then(|t| t.primary_key.as_ref()),
                    after.and_then(|t| t.primary_key.as_ref()),
                ) {
                    main[15].push(Stmt::new(format!(
                        "ALTER TABLE {} RENAME CONSTRAINT {} TO {}",
                        ident(table),
                        quote_ident(&a.name),
                        quote_ident(&b.name)
                    )));
                }
            }
        }
    }

    /// The tables the migration created, each dropped after every other one that references it.
    fn drop_tables(&self) -> Vec<Stmt> {
        let mut left: Vec<&str> = self.dropped_tables().into_iter().collect();
        let mut out = Vec::new();
        while !left.is_empty() {
            let referenced = |name: &str, left: &[&str]| {
                left.iter().any(|other| {
                    *other != name
                        && self.with.tables.get(*other).is_some_and(|t| {
                            t.foreign_keys.iter().any(|fk| fk.referenced_table == name)
                        })
                })
            };
            let at = left
                .iter()
                .position(|name| !referenced(name, &left))
                .unwrap_or(0);
            let name = left.remove(at);
            out.push(
                Stmt::new(format!("DROP TABLE {}", ident(name)))
                    .note(format!("created by {}", self.migration)),
            );
        }
        out
    }
}

/// The views of `schema`, each after every other one its definition reads (by name, quoted as
/// `pg_get_viewdef` quotes a name that needs it, or bare).
fn views_in_dependency_order(schema: &Schema) -> Vec<String> {
    let reads = |definition: &str, other: &str| {
        let bare = other.rsplit('.').next().unwrap_or(other);
        definition.contains(&format!("\"{bare}\""))
            || definition
                .split(|c: char| !(c.is_alphanumeric() || c == '_'))
                .any(|word| word == bare)
    };
    let mut left: Vec<&String> = schema.views.keys().collect();
    let mut out = Vec::with_capacity(left.len());
    while !left.is_empty() {
        let at = left
            .iter()
            .position(|v| {
                let def = &schema.views[*v].definition;
                !left.iter().any(|o| o != v && reads(def, o))
            })
            .unwrap_or(0);
        out.push(left.remove(at).clone());
    }
    out
}

/// Sorts the statements tagged with a view by `order` (reversed when dropping); the others keep
/// their order, after them.
fn order_views(stmts: &mut Vec<Stmt>, order: &[String], dropping: bool) {
    let rank = |s: &Stmt| {
        s.view.as_ref().map(|v| {
            let at = order.iter().position(|o| o == v).unwrap_or(0);
            if dropping {
                order.len() - at
            } else {
                at
            }
        })
    };
    let (mut views, others): (Vec<Stmt>, Vec<Stmt>) =
        stmts.drain(..).partition(|s| s.view.is_some());
    views.sort_by_key(|s| rank(s));
    stmts.extend(views);
    stmts.extend(others);
}

fn create_view(name: &str, materialized: bool, definition: &str) -> Stmt {
    Stmt::new(format!(
        "CREATE {}VIEW {} AS\n{}",
        if materialized { "MATERIALIZED " } else { "" },
        ident(name),
        without_semicolon(definition)
    ))
    .of_view(name)
}

/// An index of a table or view this file creates: built in the same transaction (it is empty).
fn inline_index(index: &Index) -> Stmt {
    Stmt::new(
        super::drift::if_not_exists(&index.definition).unwrap_or_else(|| index.definition.clone()),
    )
}

/// The text of one file, and the line each statement starts on.
fn render_file(header: &str, stmts: &[Stmt]) -> (String, Vec<usize>) {
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

fn header(migration: &str, what: &str, part: usize, parts: usize, now: DateTime<Utc>) -> String {
    format!(
        "-- Written by `gcbb db revert {migration}` at {}.\n\
         -- Reverts that migration's schema changes, computed on the shadow database: the history up to\n\
         -- it, turned back into the history before it. Part {part} of {parts}: {what}.\n\
         -- Rows it inserted or updated are data, which this file does not touch.\n",
        now.format("%Y-%m-%d %H:%M:%S UTC")
    )
}

/// The migration's name without its timestamp, for the revert's name.
fn short_name(migration: &str) -> &str {
    match migration.split_once('_') {
        Some((ts, rest)) if ts.len() == 14 && ts.chars().all(|c| c.is_ascii_digit()) => rest,
        _ => migration,
    }
}

/// The first timestamp after every local migration's and not before `now`: the revert must sort
/// after the history, or a replay (drift, a fresh deploy) would run it before what it reverts.
fn first_timestamp(local: &[LocalMigration], now: DateTime<Utc>) -> DateTime<Utc> {
    let last = local
        .iter()
        .filter_map(|m| m.name.get(..14))
        .filter_map(|ts| NaiveDateTime::parse_from_str(ts, "%Y%m%d%H%M%S").ok())
        .map(|t| t.and_utc())
        .max();
    match last {
        Some(last) if last >= now => last + ChronoDuration::seconds(1),
        _ => now,
    }
}

/// The error findings of one file (the runner-enforced rule aside).
fn errors(findings: &[Finding]) -> Vec<&Finding> {
    findings.iter().filter(|f| f.is_error()).collect()
}

/// Computes the revert of `migration` (of the migrations in `dir`, applied to `db`) on `shadow`,
/// lints it, and checks it on the shadow on top of the whole history. Writes nothing: see
/// [`write`]. The shadow is left empty.
pub async fn revert(
    db: &DbConfig,
    shadow_db: &DbConfig,
    dir: &Path,
    migration: &str,
    options: &RevertOptions,
    now: DateTime<Utc>,
) -> Result<Revert, MigrateError> {
    let local = files::load_migrations(dir)?;
    let at = local
        .iter()
        .position(|m| m.name == migration)
        .ok_or_else(|| MigrateError::NotFoundLocally {
            name: migration.to_owned(),
        })?;
    shadow::check_shadow(db, shadow_db, options.force)?;
    let (target_client, shadow_client) = shadow::open(db, shadow_db, options.force).await?;
    let rows = if history::migrations_table_exists(&target_client).await? {
        history::list_rows(&target_client).await?
    } else {
        Vec::new()
    };
    let same: Vec<_> = rows
        .iter()
        .filter(|r| r.migration_name == migration)
        .collect();
    if !same.iter().any(|r| r.is_applied()) {
        let state = if same.iter().any(|r| r.is_failed()) {
            "it failed and is not applied: fix the database by hand, then `gcbb db resolve --rolled-back` it"
        } else if same.is_empty() {
            "it is pending: it never ran there, so there is nothing to revert; change or remove the file before it is deployed"
        } else {
            "it was rolled back"
        };
        return Err(MigrateError::RevertRefused(format!(
            "`{migration}` is not applied to {}: {state}",
            db.redacted()
        )));
    }
    let ctx = lint_context(&target_client).await?;
    drop(target_client);

    let settings = MigrateSettings::default();
    let replay = |ms: Vec<LocalMigration>| {
        let client = &shadow_client;
        let settings = &settings;
        async move {
            shadow::empty_database(client).await?;
            with_lock(client, settings, deploy_locked(client, &ms, settings)).await?;
            introspect::introspect(client).await
        }
    };
    let result = async {
        let without = replay(local[..at].to_vec()).await?;
        let with = replay(local[..=at].to_vec()).await?;
        let steps = diff(&with, &without);
        if steps.is_empty() {
            return Err(MigrateError::RevertRefused(format!(
                "`{migration}` changed no schema (tables, columns, keys, indexes, views, functions, triggers, \
                 types, extensions): nothing to revert. Rows it changed are data: restore them from a backup \
                 or Neon's point-in-time restore"
            )));
        }
        let renderer = Renderer {
            migration,
            with: &with,
            without: &without,
            steps: &steps,
        };
        let (mut planned, impossible) = renderer.plan();
        if !impossible.is_empty() {
            return Err(MigrateError::RevertRefused(format!(
                "`{migration}` cannot be reverted by a migration; nothing was written. What it did that no \
                 statement undoes:\n  {}",
                impossible.join("\n  ")
            )));
        }
        let findings = apply_allows(&mut planned, options, &ctx, migration, now)?;
        let first = first_timestamp(&local, now);
        let parts = planned.len();
        let short = short_name(migration);
        let files: Vec<RevertFile> = planned
            .iter()
            .enumerate()
            .map(|(i, p)| {
                let ts = first + ChronoDuration::seconds(i as i64);
                let raw = if p.suffix.is_empty() {
                    format!("revert_{short}")
                } else {
                    format!("revert_{short}_{}", p.suffix)
                };
                let name = format!(
                    "{}_{}",
                    ts.format("%Y%m%d%H%M%S"),
                    files::sanitize_name(&raw).unwrap_or_else(|| "revert".to_owned())
                );
                let (sql, _) = render_file(&header(migration, &p.what, i + 1, parts, now), &p.stmts);
                RevertFile { name, sql }
            })
            .collect();

        // Checked on the shadow: the whole history, then the revert.
        let mut all = local.clone();
        all.extend(files.iter().map(|f| LocalMigration {
            name: f.name.clone(),
            path: dir.join(&f.name).join(files::MIGRATION_FILE),
            checksum: files::checksum(f.sql.as_bytes()),
            script: f.sql.clone(),
        }));
        let reverted = replay(all).await.map_err(|e| {
            MigrateError::RevertRefused(format!(
                "the revert of `{migration}` does not apply on top of the whole history (checked on the \
                 shadow database; a later migration may depend on what it drops); nothing was written:\n{e}"
            ))
        })?;
        let mut notes = Vec::new();
        let mut rest = local.clone();
        rest.remove(at);
        match replay(rest).await {
            Ok(without_it) => {
                let left = diff(&without_it, &reverted);
                if !left.is_empty() {
                    notes.push(format!(
                        "after the revert the schema still differs from the history without `{migration}` \
                         (later migrations changed what it made):{}",
                        render_summary(&left).replace('\n', "\n  ")
                    ));
                }
            }
            Err(e) => notes.push(format!(
                "the history without `{migration}` does not replay (later migrations need it), so the \
                 result could not be compared with it: {e}"
            )),
        }
        let statements = planned
            .iter()
            .zip(&files)
            .flat_map(|(p, f)| {
                p.stmts
                    .iter()
                    .map(move |s| format!("{}: {}", f.name, lint::excerpt(&s.sql)))
            })
            .collect();
        Ok(Revert {
            migration: migration.to_owned(),
            summary: render_summary(&steps),
            statements,
            files,
            warnings: findings,
            notes,
        })
    }
    .await;
    let cleaned = shadow::empty_database(&shadow_client).await;
    let revert = result?;
    cleaned?;
    Ok(revert)
}

/// Lints every planned file, adding the caller's allows above the statements that break their
/// rules; refuses when an error finding is left. Returns the warnings.
fn apply_allows(
    planned: &mut [Planned],
    options: &RevertOptions,
    ctx: &LintContext,
    migration: &str,
    now: DateTime<Utc>,
) -> Result<Vec<Finding>, MigrateError> {
    let mut used: BTreeSet<&str> = BTreeSet::new();
    let mut left: Vec<(String, Finding)> = Vec::new();
    let mut warnings = Vec::new();
    for p in planned.iter_mut() {
        let (sql, lines) = render_file(&header(migration, &p.what, 0, 0, now), &p.stmts);
        let findings = lint::lint_sql(&p.suffix, &sql, ctx)
            .map_err(|e| MigrateError::RevertRefused(format!("the revert does not parse: {e}")))?;
        for f in errors(&findings) {
            let Some(at) = lines.iter().position(|l| *l == f.line) else {
                left.push((sql.clone(), f.clone()));
                continue;
            };
            match options.allows.iter().find(|(rule, _)| rule == f.rule) {
                Some((rule, reason)) => {
                    used.insert(rule.as_str());
                    p.stmts[at].allows.push((rule.clone(), reason.clone()));
                }
                None => left.push((p.stmts[at].sql.clone(), f.clone())),
            }
        }
        let (sql, _) = render_file(&header(migration, &p.what, 0, 0, now), &p.stmts);
        let findings = lint::lint_sql(&p.suffix, &sql, ctx)
            .map_err(|e| MigrateError::RevertRefused(format!("the revert does not parse: {e}")))?;
        warnings.extend(findings.into_iter().filter(|f| !f.is_error()));
    }
    let unused: Vec<&str> = options
        .allows
        .iter()
        .map(|(r, _)| r.as_str())
        .filter(|r| !used.contains(r))
        .collect();
    if left.is_empty() && unused.is_empty() {
        return Ok(warnings);
    }
    let mut message = format!("the revert of `{migration}` is not written");
    if !left.is_empty() {
        let destroying = left
            .iter()
            .filter(|(_, f)| DATA_DESTROYING_RULES.contains(&f.rule))
            .count();
        let _ = write!(
            message,
            ": {} statement(s) break lint rules{}:",
            left.len(),
            if destroying > 0 {
                format!(
                    ", {destroying} of them destroying data written since `{migration}` was deployed"
                )
            } else {
                String::new()
            }
        );
        for (sql, f) in &left {
            let _ = write!(
                message,
                "\n  {}  -- {}{}\n    -- gcbb:allow {} <reason: {}>",
                lint::excerpt(sql),
                f.rule,
                if DATA_DESTROYING_RULES.contains(&f.rule) {
                    " (destroys data)"
                } else {
                    ""
                },
                f.rule,
                if DATA_DESTROYING_RULES.contains(&f.rule) {
                    "why the data written since may go"
                } else {
                    "why it is safe here"
                }
            );
        }
        let rules: BTreeSet<&str> = left.iter().map(|(_, f)| f.rule).collect();
        let _ = write!(
            message,
            "\nNothing was written. Each such statement would carry the allow line above it, with your reason: \
             say why, once per rule, and run it again:\n  gcbb db revert {migration} {}",
            rules
                .iter()
                .map(|r| format!("--allow {r}=\"<reason>\""))
                .collect::<Vec<_>>()
                .join(" ")
        );
    }
    if !unused.is_empty() {
        let _ = write!(
            message,
            "\n--allow given for rule(s) no statement of the revert breaks: {} (nothing was written)",
            unused.join(", ")
        );
    }
    Err(MigrateError::RevertRefused(message))
}

/// Writes each file of `revert` as `<dir>/<name>/migration.sql`; returns their paths. Refuses to
/// overwrite a directory that exists.
pub fn write(dir: &Path, revert: &Revert) -> Result<Vec<PathBuf>, MigrateError> {
    let mut written = Vec::new();
    for f in &revert.files {
        let folder = dir.join(&f.name);
        let io = |path: &Path, e: std::io::Error| MigrateError::Files {
            path: path.to_path_buf(),
            message: e.to_string(),
        };
        std::fs::create_dir(&folder).map_err(|e| io(&folder, e))?;
        let file = folder.join(files::MIGRATION_FILE);
        std::fs::write(&file, &f.sql).map_err(|e| io(&file, e))?;
        written.push(file);
    }
    Ok(written)
}

/// Parses `RULE=REASON` of `--allow`.
pub fn parse_allow(raw: &str) -> Result<(String, String), String> {
    let (rule, reason) = raw.split_once('=').ok_or_else(|| {
        format!("`{raw}`: write RULE=REASON (e.g. drop-column=\"unused since the last release\")")
    })?;
    let (rule, reason) = (rule.trim(), reason.trim());
    if lint::find_rule(rule).is_none() {
        return Err(format!("`{rule}` is not a rule of `gcbb db lint --rules`"));
    }
    if reason.is_empty() {
        return Err(format!("--allow {rule}= needs a reason after the `=`"));
    }
    Ok((rule.to_owned(), reason.to_owned()))
}

#[cfg(test)]
mod tests;
