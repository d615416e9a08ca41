//! Drift's steps from the history with the migration to the history before it, turned into
//! statements and laid out in files: concurrent index drops, one transactional file ordered so
//! nothing is dropped before what depends on it, concurrent index builds.

use std::collections::BTreeSet;

use crate::drift::{Step, TableChange};
use crate::history::quote_ident;
use crate::introspect::{self, Schema};
use crate::statements;

use super::sql::{
    column_sql, create_view, ident, inline_index, routine, schema_prefix, without_semicolon,
    Planned, Stmt,
};

/// Everything the renderer needs: the schema with the migration (`with`) and without (`without`).
pub(super) struct Renderer<'a> {
    pub(super) migration: &'a str,
    pub(super) with: &'a Schema,
    pub(super) without: &'a Schema,
    pub(super) steps: &'a [Step],
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
    pub(super) fn plan(&self) -> (Vec<Planned>, Vec<String>) {
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
