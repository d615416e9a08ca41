//! `gcbb db drift`: replays the migration history into a shadow database, introspects it and the
//! target, and prints the difference in Prisma's drift-summary wording and order.
//!
//! Direction, as Prisma: the history (shadow) is "before", the target (the real database) is
//! "after". `[+] Added index` means the target has an index the history never created — an index
//! built by hand, the seed's drift.
//!
//! Prisma's rendering, followed line for line (see `prisma-drift-summary.md`): steps sort by kind
//! (`SqlMigrationStep`'s variant order), then go into sections ordered by `DriftType`, then by
//! name, then by step. Two Prisma bugs are not copied: `[-] Removed extensions` is not followed
//! by a stray backtick, and `[+] Added primary key` is not followed by a second `)` line.
//!
//! Index keys that are expressions: Prisma names an index by its columns, and an expression key
//! (`lower("name")`, `("tokensBurned" > 0)`…) has no column name. Any index with at least one
//! expression key prints `on some columns` — that is the seed's `UserBurnedTokens` line, an index
//! built by hand whose key included an expression. Partial indexes on plain columns print their
//! columns (Prisma ignores the predicate when naming them), but differ from an otherwise equal
//! index, because the comparison uses the whole definition.
//!
//! Beyond Prisma (which does not see them): materialized views, views added to the target and view
//! definitions that changed get sections of the same shape, after Prisma's:
//! ``[+] Added views`` / ``[*] Changed the `V` view`` (with `[*] Redefined the view` and the index
//! lines of a materialized view). Functions, triggers, sequences options, grants and comments are
//! not compared.

use std::collections::BTreeSet;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use chrono::{DateTime, Utc};
use serde::Serialize;
use tokio_postgres::Client;

use super::error::MigrateError;
use super::introspect::{self, Column, ForeignKey, Index, Schema, Table};
use super::{files, history, session};
use gcbb::db::DbConfig;

/// A shadow database's name must contain this (unless `--force`): it is emptied on every run.
pub const SHADOW_NAME_MARK: &str = "shadow";

/// One difference between history and target, in Prisma's step vocabulary.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Step {
    DropExtension {
        name: String,
    },
    CreateExtension {
        name: String,
    },
    AlterExtension {
        name: String,
    },
    DropView {
        name: String,
    },
    CreateEnum {
        name: String,
    },
    AlterEnum {
        name: String,
        added: Vec<String>,
        removed: Vec<String>,
    },
    DropForeignKey {
        table: String,
        foreign_key: ForeignKey,
    },
    DropIndex {
        table: String,
        index: Index,
    },
    AlterTable {
        table: String,
        changes: Vec<TableChange>,
    },
    DropTable {
        name: String,
    },
    DropEnum {
        name: String,
    },
    CreateTable {
        name: String,
    },
    CreateIndex {
        table: String,
        index: Index,
    },
    RenameForeignKey {
        table: String,
        from: String,
        to: String,
    },
    AddForeignKey {
        table: String,
        foreign_key: ForeignKey,
    },
    RenameIndex {
        table: String,
        from: String,
        to: String,
    },
    /// gcbb only: a view or materialized view of the target that the history lacks.
    CreateView {
        name: String,
        materialized: bool,
    },
    /// gcbb only: same name, another definition.
    RedefineView {
        name: String,
    },
    /// gcbb only: an index of a materialized view.
    CreateViewIndex {
        view: String,
        index: Index,
    },
    DropViewIndex {
        view: String,
        index: Index,
    },
    RenameViewIndex {
        view: String,
        from: String,
        to: String,
    },
}

/// A change inside `AlterTable`, in Prisma's `TableChange` order.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum TableChange {
    AddColumn {
        column: String,
    },
    AlterColumn {
        column: String,
        changes: Vec<String>,
    },
    DropColumn {
        column: String,
    },
    DropPrimaryKey {
        columns: Vec<String>,
    },
    AddPrimaryKey {
        columns: Vec<String>,
    },
    RenamePrimaryKey {
        columns: Vec<String>,
    },
}

impl TableChange {
    fn rank(&self) -> u8 {
        match self {
            TableChange::AddColumn { .. } => 0,
            TableChange::AlterColumn { .. } => 1,
            TableChange::DropColumn { .. } => 2,
            TableChange::DropPrimaryKey { .. } => 3,
            TableChange::AddPrimaryKey { .. } => 4,
            TableChange::RenamePrimaryKey { .. } => 5,
        }
    }
}

impl Step {
    /// Prisma's `SqlMigrationStep` variant order (gcbb's own steps last).
    fn rank(&self) -> u8 {
        match self {
            Step::DropExtension { .. } => 1,
            Step::CreateExtension { .. } => 2,
            Step::AlterExtension { .. } => 3,
            Step::DropView { .. } => 5,
            Step::CreateEnum { .. } => 7,
            Step::AlterEnum { .. } => 8,
            Step::DropForeignKey { .. } => 9,
            Step::DropIndex { .. } => 10,
            Step::AlterTable { .. } => 11,
            Step::DropTable { .. } => 13,
            Step::DropEnum { .. } => 14,
            Step::CreateTable { .. } => 15,
            Step::CreateIndex { .. } => 17,
            Step::RenameForeignKey { .. } => 18,
            Step::AddForeignKey { .. } => 19,
            Step::RenameIndex { .. } => 20,
            Step::CreateView { .. } => 30,
            Step::RedefineView { .. } => 31,
            Step::DropViewIndex { .. } => 32,
            Step::CreateViewIndex { .. } => 33,
            Step::RenameViewIndex { .. } => 34,
        }
    }

    /// Within a kind, steps follow their object's name (Prisma: the describer's ids).
    fn sort_key(&self) -> (u8, String, String) {
        let (a, b) = match self {
            Step::DropExtension { name }
            | Step::CreateExtension { name }
            | Step::AlterExtension { name }
            | Step::DropView { name }
            | Step::CreateEnum { name }
            | Step::AlterEnum { name, .. }
            | Step::DropTable { name }
            | Step::DropEnum { name }
            | Step::CreateTable { name }
            | Step::CreateView { name, .. }
            | Step::RedefineView { name } => (name.clone(), String::new()),
            Step::DropForeignKey { table, foreign_key }
            | Step::AddForeignKey { table, foreign_key } => {
                (table.clone(), foreign_key.name.clone())
            }
            Step::DropIndex { table, index } | Step::CreateIndex { table, index } => {
                (table.clone(), index.name.clone())
            }
            Step::CreateViewIndex { view, index } | Step::DropViewIndex { view, index } => {
                (view.clone(), index.name.clone())
            }
            Step::AlterTable { table, .. } => (table.clone(), String::new()),
            Step::RenameForeignKey { table, from, .. }
            | Step::RenameIndex { table, from, .. }
            | Step::RenameViewIndex {
                view: table, from, ..
            } => (table.clone(), from.clone()),
        };
        (self.rank(), a, b)
    }
}

/// The differences that turn `history` into `target`, sorted as Prisma sorts its steps.
pub fn diff(history: &Schema, target: &Schema) -> Vec<Step> {
    let mut steps = Vec::new();
    diff_extensions(history, target, &mut steps);
    diff_enums(history, target, &mut steps);
    diff_tables(history, target, &mut steps);
    diff_views(history, target, &mut steps);
    steps.sort_by_key(Step::sort_key);
    steps
}

fn diff_extensions(history: &Schema, target: &Schema, steps: &mut Vec<Step>) {
    for (name, before) in &history.extensions {
        match target.extensions.get(name) {
            None => steps.push(Step::DropExtension { name: name.clone() }),
            Some(after) if after != before => {
                steps.push(Step::AlterExtension { name: name.clone() })
            }
            Some(_) => {}
        }
    }
    for name in target.extensions.keys() {
        if !history.extensions.contains_key(name) {
            steps.push(Step::CreateExtension { name: name.clone() });
        }
    }
}

fn diff_enums(history: &Schema, target: &Schema, steps: &mut Vec<Step>) {
    for (name, before) in &history.enums {
        match target.enums.get(name) {
            None => steps.push(Step::DropEnum { name: name.clone() }),
            Some(after) => {
                let added: Vec<String> = after
                    .iter()
                    .filter(|v| !before.contains(v))
                    .cloned()
                    .collect();
                let removed: Vec<String> = before
                    .iter()
                    .filter(|v| !after.contains(v))
                    .cloned()
                    .collect();
                if !added.is_empty() || !removed.is_empty() {
                    steps.push(Step::AlterEnum {
                        name: name.clone(),
                        added,
                        removed,
                    });
                }
            }
        }
    }
    for name in target.enums.keys() {
        if !history.enums.contains_key(name) {
            steps.push(Step::CreateEnum { name: name.clone() });
        }
    }
}

fn diff_tables(history: &Schema, target: &Schema, steps: &mut Vec<Step>) {
    for name in history.tables.keys() {
        if !target.tables.contains_key(name) {
            steps.push(Step::DropTable { name: name.clone() });
        }
    }
    for (name, after) in &target.tables {
        let Some(before) = history.tables.get(name) else {
            // As Prisma: a new table's indexes and foreign keys are steps of their own.
            steps.push(Step::CreateTable { name: name.clone() });
            for index in &after.indexes {
                steps.push(Step::CreateIndex {
                    table: name.clone(),
                    index: index.clone(),
                });
            }
            for fk in &after.foreign_keys {
                steps.push(Step::AddForeignKey {
                    table: name.clone(),
                    foreign_key: fk.clone(),
                });
            }
            continue;
        };
        let changes = table_changes(before, after);
        if !changes.is_empty() {
            steps.push(Step::AlterTable {
                table: name.clone(),
                changes,
            });
        }
        for change in diff_indexes(&before.indexes, &after.indexes) {
            steps.push(match change {
                IndexChange::Drop(index) => Step::DropIndex {
                    table: name.clone(),
                    index,
                },
                IndexChange::Create(index) => Step::CreateIndex {
                    table: name.clone(),
                    index,
                },
                IndexChange::Rename(from, to) => Step::RenameIndex {
                    table: name.clone(),
                    from,
                    to,
                },
            });
        }
        diff_foreign_keys(name, &before.foreign_keys, &after.foreign_keys, steps);
    }
}

fn table_changes(before: &Table, after: &Table) -> Vec<TableChange> {
    let mut changes = Vec::new();
    for col in &after.columns {
        match before.columns.iter().find(|c| c.name == col.name) {
            None => changes.push(TableChange::AddColumn {
                column: col.name.clone(),
            }),
            Some(prev) => {
                let what = column_changes(prev, col);
                if !what.is_empty() {
                    changes.push(TableChange::AlterColumn {
                        column: col.name.clone(),
                        changes: what,
                    });
                }
            }
        }
    }
    for col in &before.columns {
        if !after.columns.iter().any(|c| c.name == col.name) {
            changes.push(TableChange::DropColumn {
                column: col.name.clone(),
            });
        }
    }
    match (&before.primary_key, &after.primary_key) {
        (Some(pk), None) => changes.push(TableChange::DropPrimaryKey {
            columns: pk.columns.clone(),
        }),
        (None, Some(pk)) => changes.push(TableChange::AddPrimaryKey {
            columns: pk.columns.clone(),
        }),
        (Some(a), Some(b)) if a.columns != b.columns => {
            changes.push(TableChange::DropPrimaryKey {
                columns: a.columns.clone(),
            });
            changes.push(TableChange::AddPrimaryKey {
                columns: b.columns.clone(),
            });
        }
        (Some(a), Some(b)) if a.name != b.name => changes.push(TableChange::RenamePrimaryKey {
            columns: a.columns.clone(),
        }),
        _ => {}
    }
    changes.sort_by_key(TableChange::rank);
    changes
}

/// Prisma's `render_column_changes` items for one column.
fn column_changes(before: &Column, after: &Column) -> Vec<String> {
    let mut out = Vec::new();
    let (arity_before, arity_after) = (arity(before), arity(after));
    if arity_before != arity_after {
        out.push(format!("changed from {arity_before} to {arity_after}"));
    }
    let (auto_before, auto_after) = (is_autoincrement(before), is_autoincrement(after));
    // Two sequences may differ by name only; Prisma compares autoincrement, not the default.
    if !(auto_before && auto_after) && before.default != after.default && auto_before == auto_after
    {
        out.push(format!(
            "default changed from `{}` to `{}`",
            default_kind(before.default.as_deref()),
            default_kind(after.default.as_deref())
        ));
    }
    if before.data_type != after.data_type {
        out.push("type changed".to_owned());
    }
    if auto_before != auto_after {
        out.push(if auto_before {
            "column is no longer autoincrementing".to_owned()
        } else {
            "column became autoincrementing".to_owned()
        });
    }
    out
}

fn arity(c: &Column) -> &'static str {
    if c.data_type.ends_with("[]") {
        "List"
    } else if c.not_null {
        "Required"
    } else {
        "Nullable"
    }
}

fn is_autoincrement(c: &Column) -> bool {
    c.default
        .as_deref()
        .is_some_and(|d| d.starts_with("nextval(") || d.starts_with("identity"))
}

/// `Option<DefaultKind>` as Prisma's `{:?}` prints it, for the defaults Prisma recognises;
/// anything else is `DbGenerated`.
pub fn default_kind(expr: Option<&str>) -> String {
    let Some(expr) = expr else {
        return "None".to_owned();
    };
    let e = expr.trim();
    let kind = if e.eq_ignore_ascii_case("now()") || e.eq_ignore_ascii_case("CURRENT_TIMESTAMP") {
        "Now".to_owned()
    } else if let Some(seq) = e
        .strip_prefix("nextval('")
        .and_then(|s| s.split_once("'::regclass)").map(|(s, _)| s))
    {
        format!("Sequence({:?})", seq.trim_matches('"'))
    } else if e == "true" || e == "false" {
        format!("Value(Boolean({e}))")
    } else if e.parse::<i64>().is_ok() {
        format!("Value(Int({e}))")
    } else if let Some(s) = quoted_literal(e) {
        format!("Value(String({s:?}))")
    } else {
        format!("DbGenerated(Some({e:?}))")
    };
    format!("Some({kind})")
}

/// `'abc'::text` → `abc`.
fn quoted_literal(e: &str) -> Option<String> {
    let rest = e.strip_prefix('\'')?;
    let end = rest.rfind('\'')?;
    let cast = &rest[end + 1..];
    if !(cast.is_empty() || cast.starts_with("::")) {
        return None;
    }
    Some(rest[..end].replace("''", "'"))
}

enum IndexChange {
    Drop(Index),
    Create(Index),
    Rename(String, String),
}

/// Same name and body: equal. Same body, other name: renamed. Otherwise dropped and created
/// (Prisma's drop-and-recreate of an index whose definition changed).
fn diff_indexes(before: &[Index], after: &[Index]) -> Vec<IndexChange> {
    let mut out = Vec::new();
    let mut unmatched_after: Vec<&Index> = after
        .iter()
        .filter(|a| {
            !before
                .iter()
                .any(|b| b.name == a.name && b.body() == a.body())
        })
        .collect();
    for b in before {
        if after
            .iter()
            .any(|a| a.name == b.name && a.body() == b.body())
        {
            continue;
        }
        let renamed = unmatched_after
            .iter()
            .position(|a| a.body() == b.body() && !before.iter().any(|x| x.name == a.name));
        match renamed {
            Some(at) => {
                let a = unmatched_after.remove(at);
                out.push(IndexChange::Rename(b.name.clone(), a.name.clone()));
            }
            None => out.push(IndexChange::Drop(b.clone())),
        }
    }
    out.extend(
        unmatched_after
            .into_iter()
            .map(|a| IndexChange::Create(a.clone())),
    );
    out
}

fn diff_foreign_keys(
    table: &str,
    before: &[ForeignKey],
    after: &[ForeignKey],
    steps: &mut Vec<Step>,
) {
    let mut unmatched_after: Vec<&ForeignKey> = after
        .iter()
        .filter(|a| !before.iter().any(|b| b == *a))
        .collect();
    for b in before {
        if after.contains(b) {
            continue;
        }
        match unmatched_after.iter().position(|a| a.shape() == b.shape()) {
            Some(at) => {
                let a = unmatched_after.remove(at);
                steps.push(Step::RenameForeignKey {
                    table: table.to_owned(),
                    from: b.name.clone(),
                    to: a.name.clone(),
                });
            }
            None => steps.push(Step::DropForeignKey {
                table: table.to_owned(),
                foreign_key: b.clone(),
            }),
        }
    }
    for a in unmatched_after {
        steps.push(Step::AddForeignKey {
            table: table.to_owned(),
            foreign_key: a.clone(),
        });
    }
}

fn diff_views(history: &Schema, target: &Schema, steps: &mut Vec<Step>) {
    for name in history.views.keys() {
        if !target.views.contains_key(name) {
            steps.push(Step::DropView { name: name.clone() });
        }
    }
    for (name, after) in &target.views {
        let Some(before) = history.views.get(name) else {
            steps.push(Step::CreateView {
                name: name.clone(),
                materialized: after.materialized,
            });
            for index in &after.indexes {
                steps.push(Step::CreateViewIndex {
                    view: name.clone(),
                    index: index.clone(),
                });
            }
            continue;
        };
        if before.definition != after.definition || before.materialized != after.materialized {
            steps.push(Step::RedefineView { name: name.clone() });
        }
        for change in diff_indexes(&before.indexes, &after.indexes) {
            steps.push(match change {
                IndexChange::Drop(index) => Step::DropViewIndex {
                    view: name.clone(),
                    index,
                },
                IndexChange::Create(index) => Step::CreateViewIndex {
                    view: name.clone(),
                    index,
                },
                IndexChange::Rename(from, to) => Step::RenameViewIndex {
                    view: name.clone(),
                    from,
                    to,
                },
            });
        }
    }
}

/// Prisma's `DriftType`, in its order, then gcbb's view sections.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Section {
    AlteredExtension,
    DroppedExtension,
    CreatedExtension,
    AddedEnum,
    AddedTable,
    RemovedEnum,
    RemovedTable,
    RemovedView,
    ChangedEnum,
    ChangedTable,
    AddedView,
    ChangedView,
}

fn section_of(step: &Step) -> (Section, &str) {
    match step {
        Step::AlterExtension { name } => (Section::AlteredExtension, name),
        Step::DropExtension { name } => (Section::DroppedExtension, name),
        Step::CreateExtension { name } => (Section::CreatedExtension, name),
        Step::CreateEnum { .. } => (Section::AddedEnum, ""),
        Step::CreateTable { .. } => (Section::AddedTable, ""),
        Step::DropEnum { .. } => (Section::RemovedEnum, ""),
        Step::DropTable { .. } => (Section::RemovedTable, ""),
        Step::DropView { name } => (Section::RemovedView, name),
        Step::AlterEnum { name, .. } => (Section::ChangedEnum, name),
        Step::DropForeignKey { table, .. }
        | Step::DropIndex { table, .. }
        | Step::AlterTable { table, .. }
        | Step::CreateIndex { table, .. }
        | Step::RenameForeignKey { table, .. }
        | Step::AddForeignKey { table, .. }
        | Step::RenameIndex { table, .. } => (Section::ChangedTable, table),
        Step::CreateView { .. } => (Section::AddedView, ""),
        Step::RedefineView { name }
        | Step::CreateViewIndex { view: name, .. }
        | Step::DropViewIndex { view: name, .. }
        | Step::RenameViewIndex { view: name, .. } => (Section::ChangedView, name),
    }
}

fn header(section: Section, name: &str) -> String {
    match section {
        Section::AddedEnum => "\n[+] Added enums\n".to_owned(),
        Section::AddedTable => "\n[+] Added tables\n".to_owned(),
        Section::RemovedEnum => "\n[-] Removed enums\n".to_owned(),
        Section::RemovedTable => "\n[-] Removed tables\n".to_owned(),
        Section::RemovedView => "\n[-] Removed views\n".to_owned(),
        Section::ChangedEnum => format!("\n[*] Changed the `{name}` enum\n"),
        Section::ChangedTable => format!("\n[*] Changed the `{name}` table\n"),
        Section::CreatedExtension => "\n[+] Added extensions\n".to_owned(),
        Section::AlteredExtension => format!("\n[*] Changed the `{name}` extension\n"),
        // Prisma appends a stray backtick here; the intended line has none.
        Section::DroppedExtension => "\n[-] Removed extensions\n".to_owned(),
        Section::AddedView => "\n[+] Added views\n".to_owned(),
        Section::ChangedView => format!("\n[*] Changed the `{name}` view\n"),
    }
}

/// `(a, b)`, or `some columns` when a key is an expression.
fn index_target(index: &Index) -> String {
    if index.has_expression() {
        "some columns".to_owned()
    } else {
        let names: Vec<&str> = index.columns.iter().flatten().map(String::as_str).collect();
        format!("columns ({})", names.join(", "))
    }
}

fn index_line(sign: &str, verb: &str, index: &Index) -> String {
    format!(
        "  [{sign}] {verb} {}index on {}\n",
        if index.unique { "unique " } else { "" },
        index_target(index)
    )
}

fn item_lines(step: &Step, out: &mut String) {
    match step {
        Step::CreateEnum { name }
        | Step::CreateTable { name }
        | Step::DropTable { name }
        | Step::DropEnum { name }
        | Step::CreateExtension { name } => {
            let _ = writeln!(out, "  - {name}");
        }
        Step::CreateView { name, materialized } => {
            let _ = writeln!(
                out,
                "  - {name}{}",
                if *materialized { " (materialized)" } else { "" }
            );
        }
        Step::AlterEnum { added, removed, .. } => {
            for v in added {
                let _ = writeln!(out, "  [+] Added variant `{v}`");
            }
            for v in removed {
                let _ = writeln!(out, "  [-] Removed variant `{v}`");
            }
        }
        Step::DropForeignKey { foreign_key, .. } => {
            let _ = writeln!(
                out,
                "  [-] Removed foreign key on columns ({})",
                foreign_key.columns.join(", ")
            );
        }
        Step::AddForeignKey { foreign_key, .. } => {
            let _ = writeln!(
                out,
                "  [+] Added foreign key on columns ({})",
                foreign_key.columns.join(", ")
            );
        }
        Step::RenameForeignKey { from, to, .. } => {
            let _ = writeln!(out, "  [*] Renamed the foreign key \"{from}\" to \"{to}\"");
        }
        Step::DropIndex { index, .. } | Step::DropViewIndex { index, .. } => {
            out.push_str(&index_line("-", "Removed", index));
        }
        Step::CreateIndex { index, .. } | Step::CreateViewIndex { index, .. } => {
            out.push_str(&index_line("+", "Added", index));
        }
        Step::RenameIndex { from, to, .. } | Step::RenameViewIndex { from, to, .. } => {
            let _ = writeln!(out, "  [*] Renamed index `{from}` to `{to}`");
        }
        Step::RedefineView { .. } => out.push_str("  [*] Redefined the view\n"),
        Step::AlterTable { changes, .. } => {
            for change in changes {
                match change {
                    TableChange::AddColumn { column } => {
                        let _ = writeln!(out, "  [+] Added column `{column}`");
                    }
                    TableChange::DropColumn { column } => {
                        let _ = writeln!(out, "  [-] Removed column `{column}`");
                    }
                    TableChange::AlterColumn { column, changes } => {
                        let _ = writeln!(
                            out,
                            "  [*] Altered column `{column}` ({})",
                            changes.join(", ")
                        );
                    }
                    TableChange::DropPrimaryKey { columns } => {
                        let _ = writeln!(
                            out,
                            "  [-] Dropped the primary key on columns ({})",
                            columns.join(", ")
                        );
                    }
                    TableChange::AddPrimaryKey { columns } => {
                        // Prisma pushes the closing `)` line twice; the intended line has one.
                        let _ = writeln!(
                            out,
                            "  [+] Added primary key on columns ({})",
                            columns.join(", ")
                        );
                    }
                    TableChange::RenamePrimaryKey { columns } => {
                        let _ = writeln!(
                            out,
                            "  [*] Renamed the primary key on columns ({})",
                            columns.join(", ")
                        );
                    }
                }
            }
        }
        Step::AlterExtension { .. } | Step::DropExtension { .. } | Step::DropView { .. } => {}
    }
}

/// The drift summary, exactly as Prisma words and orders it (`No difference detected.` when
/// `steps` is empty). Every section starts with a newline, as Prisma's.
pub fn render_summary(steps: &[Step]) -> String {
    if steps.is_empty() {
        return "No difference detected.".to_owned();
    }
    let items: BTreeSet<(Section, &str, usize)> = steps
        .iter()
        .enumerate()
        .map(|(i, s)| {
            let (section, name) = section_of(s);
            (section, name, i)
        })
        .collect();
    let mut out = String::new();
    let mut current: Option<(Section, &str)> = None;
    for (section, name, i) in items {
        // Sections keyed by a name (views, extensions) get one header per object, as Prisma's.
        if current != Some((section, name)) {
            out.push_str(&header(section, name));
        }
        current = Some((section, name));
        item_lines(&steps[i], &mut out);
    }
    out
}

/// What `gcbb db drift` found.
#[derive(Debug, Clone, Serialize)]
pub struct DriftReport {
    pub drift: bool,
    pub steps: Vec<Step>,
    pub summary: String,
    /// Local migrations replayed into the shadow.
    pub migrations: usize,
}

/// Why a shadow database is refused.
pub fn check_shadow(target: &DbConfig, shadow: &DbConfig, force: bool) -> Result<(), MigrateError> {
    // `localhost`, `127.0.0.1`, `::1` and a Unix socket may all be the same server.
    let same_host =
        target.host.eq_ignore_ascii_case(&shadow.host) || (target.is_local() && shadow.is_local());
    let same_server = same_host && target.port == shadow.port;
    if same_server && target.dbname == shadow.dbname {
        return Err(MigrateError::ShadowRefused {
            shadow: shadow.redacted(),
            reason: "it is the target database itself".to_owned(),
        });
    }
    if !force && !shadow.dbname.to_lowercase().contains(SHADOW_NAME_MARK) {
        return Err(MigrateError::ShadowRefused {
            shadow: shadow.redacted(),
            reason: format!(
                "its name does not contain `{SHADOW_NAME_MARK}`; drift empties the shadow database on every run \
                 (pass --force if this database really is a disposable shadow)"
            ),
        });
    }
    Ok(())
}

/// Refuses a shadow that holds a recorded history (`_prisma_migrations` with rows): drift leaves
/// its shadow empty, so rows mean someone else's database, or a run that died half-way
/// (`--force` to empty it anyway).
async fn check_shadow_contents(
    client: &Client,
    shadow: &DbConfig,
    force: bool,
) -> Result<(), MigrateError> {
    if force || !history::migrations_table_exists(client).await? {
        return Ok(());
    }
    let rows = history::list_rows(client).await?;
    if rows.is_empty() {
        return Ok(());
    }
    Err(MigrateError::ShadowRefused {
        shadow: shadow.redacted(),
        reason: format!(
            "it holds a migration history ({} row(s) in _prisma_migrations); drift would erase it \
             (pass --force if this database really is a disposable shadow)",
            rows.len()
        ),
    })
}

/// What makes a database itself whatever URL reached it: the cluster's system identifier (when
/// the role may read it), the server's address and port, and the database name.
async fn database_identity(client: &Client) -> Result<String, MigrateError> {
    let db_err = |e: tokio_postgres::Error| MigrateError::Database(session::describe_pg_error(&e));
    let system = match client
        .query_one("SELECT system_identifier::text FROM pg_catalog.pg_control_system()", &[])
        .await
    {
        Ok(row) => row.get::<_, String>(0),
        // Not granted on some managed servers: the address and port then stand for the server.
        Err(_) => client
            .query_one(
                "SELECT COALESCE(host(inet_server_addr()), 'socket') || ':' || COALESCE(inet_server_port(), 0)",
                &[],
            )
            .await
            .map_err(db_err)?
            .get(0),
    };
    let name: String = client
        .query_one("SELECT current_database()::text", &[])
        .await
        .map_err(db_err)?
        .get(0);
    Ok(format!("{system}/{name}"))
}

/// Drops every extension and every user schema the current user owns (and `public`), then
/// recreates an empty `public`.
pub async fn empty_database(client: &Client) -> Result<(), MigrateError> {
    let db_err = |e: tokio_postgres::Error| MigrateError::Database(session::describe_pg_error(&e));
    let extensions = client
        .query(
            "SELECT extname::text FROM pg_catalog.pg_extension WHERE extname <> 'plpgsql'",
            &[],
        )
        .await
        .map_err(db_err)?;
    for row in extensions {
        let name: String = row.get(0);
        client
            .batch_execute(&format!(
                "DROP EXTENSION IF EXISTS {} CASCADE",
                history::quote_ident(&name)
            ))
            .await
            .map_err(db_err)?;
    }
    let schemas = history::owned_schemas(client).await?;
    history::drop_schemas(client, &schemas).await
}

/// Replays `dir` into the emptied `shadow`, introspects both, and diffs. Leaves the shadow empty.
pub async fn drift(
    target: &DbConfig,
    shadow: &DbConfig,
    dir: &Path,
    force: bool,
) -> Result<(DriftReport, Schema), MigrateError> {
    check_shadow(target, shadow, force)?;
    let local = files::load_migrations(dir)?;
    let target_client = session::connect(target).await?;
    let shadow_client = session::connect(shadow).await?;
    if database_identity(&target_client).await? == database_identity(&shadow_client).await? {
        return Err(MigrateError::ShadowRefused {
            shadow: shadow.redacted(),
            reason: "it is the target database itself (same server and database)".to_owned(),
        });
    }
    check_shadow_contents(&shadow_client, shadow, force).await?;
    empty_database(&shadow_client).await?;
    // History is replayed as it is: linting old files belongs to `deploy`, not to a comparison.
    let replayed = super::apply::deploy(shadow, dir).await;
    let result = match replayed {
        Ok(_) => {
            let before = introspect::introspect(&shadow_client).await;
            let after = introspect::introspect(&target_client).await;
            before.and_then(|b| after.map(|a| (b, a)))
        }
        Err(e) => Err(e),
    };
    let cleaned = empty_database(&shadow_client).await;
    let (history_schema, target_schema) = result?;
    cleaned?;
    let steps = diff(&history_schema, &target_schema);
    let summary = render_summary(&steps);
    Ok((
        DriftReport {
            drift: !steps.is_empty(),
            summary,
            steps,
            migrations: local.len(),
        },
        target_schema,
    ))
}

/// The lint exception every written index carries.
const WRITTEN_INDEX_ALLOW: &str = "-- gcbb:allow create-index-not-concurrently already built by hand on the target database; IF NOT EXISTS makes it a no-op there";

/// `CREATE [UNIQUE] INDEX name ON …` → `CREATE [UNIQUE] INDEX IF NOT EXISTS name ON …`.
pub fn if_not_exists(definition: &str) -> Option<String> {
    for prefix in ["CREATE UNIQUE INDEX ", "CREATE INDEX "] {
        if let Some(rest) = definition.strip_prefix(prefix) {
            return Some(format!("{prefix}IF NOT EXISTS {rest}"));
        }
    }
    None
}

/// The SQL of a migration that records, in history, what was added by hand: indexes (on tables
/// and materialized views the history has) and extensions. Everything else is listed as a
/// comment to write by hand.
pub fn migration_sql(steps: &[Step], target: &Schema, now: DateTime<Utc>) -> String {
    let mut body = String::new();
    let mut skipped = Vec::new();
    let new_tables: Vec<&str> = steps
        .iter()
        .filter_map(|s| match s {
            Step::CreateTable { name } => Some(name.as_str()),
            _ => None,
        })
        .collect();
    for step in steps {
        match step {
            Step::CreateExtension { name } => {
                let schema = target
                    .extensions
                    .get(name)
                    .map(|e| format!(" SCHEMA {}", history::quote_ident(&e.schema)))
                    .unwrap_or_default();
                let _ = writeln!(
                    body,
                    "-- CreateExtension\nCREATE EXTENSION IF NOT EXISTS {}{schema};\n",
                    history::quote_ident(name)
                );
            }
            Step::CreateIndex { table, index } if !new_tables.contains(&table.as_str()) => {
                write_index(&mut body, index, &mut skipped);
            }
            Step::CreateViewIndex { index, .. } => write_index(&mut body, index, &mut skipped),
            other => {
                let mut line = String::new();
                item_lines(other, &mut line);
                let (section, name) = section_of(other);
                let head = header(section, name);
                skipped.push(format!("{} {}", head.trim(), line.trim()).trim().to_owned());
            }
        }
    }
    let mut out = format!(
        "-- Written by `gcbb db drift --write-migration` at {}.\n\
         -- Records in the history what was built by hand on the target database. Every statement is\n\
         -- IF NOT EXISTS: a no-op on the database that already has it, a real build everywhere else.\n\
         -- After reviewing, mark it applied on that database: gcbb db resolve --applied <this directory>\n",
        now.format("%Y-%m-%d %H:%M:%S UTC")
    );
    if !skipped.is_empty() {
        out.push_str(
            "--\n-- Not written (no safe IF NOT EXISTS form, or it needs a decision): write these by hand.\n",
        );
        for s in &skipped {
            let _ = writeln!(out, "--   {}", s.replace('\n', " "));
        }
    }
    out.push('\n');
    out.push_str(&body);
    out
}

fn write_index(body: &mut String, index: &Index, skipped: &mut Vec<String>) {
    match if_not_exists(&index.definition) {
        Some(sql) => {
            let _ = writeln!(body, "-- CreateIndex\n{WRITTEN_INDEX_ALLOW}\n{sql};\n");
        }
        None => skipped.push(format!("index {}: {}", index.name, index.definition)),
    }
}

/// Writes `<dir>/<timestamp>_<name>/migration.sql` with [`migration_sql`]; returns its path.
pub fn write_migration(
    dir: &Path,
    name: &str,
    steps: &[Step],
    target: &Schema,
    now: DateTime<Utc>,
) -> Result<PathBuf, MigrateError> {
    let path = files::create_migration(dir, name, now)?;
    std::fs::write(&path, migration_sql(steps, target, now)).map_err(|e| MigrateError::Files {
        path: path.clone(),
        message: e.to_string(),
    })?;
    Ok(path)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn index(name: &str, cols: &[Option<&str>], unique: bool) -> Index {
        Index {
            name: name.to_owned(),
            columns: cols.iter().map(|c| c.map(str::to_owned)).collect(),
            keys: Vec::new(),
            unique,
            method: "btree".to_owned(),
            predicate: None,
            definition: format!("CREATE INDEX \"{name}\" ON public.t USING btree ({cols:?})"),
        }
    }

    #[test]
    fn no_step_means_no_difference() {
        assert_eq!(render_summary(&[]), "No difference detected.");
    }

    #[test]
    fn added_indexes_render_as_the_seed_shows() {
        let steps = vec![
            Step::CreateIndex {
                table: "UserBurnedTokens".into(),
                index: index("u", &[Some("userId"), None], false),
            },
            Step::CreateIndex {
                table: "Companion".into(),
                index: index(
                    "b",
                    &[Some("private"), Some("userId"), Some("createdAt")],
                    false,
                ),
            },
            Step::CreateIndex {
                table: "Message".into(),
                index: index("m", &[Some("companionId"), Some("userId")], false),
            },
            Step::CreateIndex {
                table: "Companion".into(),
                index: index("a", &[Some("categoryId"), Some("private")], false),
            },
        ];
        let mut sorted = steps.clone();
        sorted.sort_by_key(Step::sort_key);
        assert_eq!(
            render_summary(&sorted),
            "\n[*] Changed the `Companion` table\n  [+] Added index on columns (categoryId, private)\n  \
             [+] Added index on columns (private, userId, createdAt)\n\n[*] Changed the `Message` table\n  \
             [+] Added index on columns (companionId, userId)\n\n[*] Changed the `UserBurnedTokens` table\n  \
             [+] Added index on some columns\n"
        );
    }

    #[test]
    fn prisma_bugs_are_not_copied() {
        let steps = vec![
            Step::DropExtension {
                name: "pg_trgm".into(),
            },
            Step::AlterTable {
                table: "T".into(),
                changes: vec![TableChange::AddPrimaryKey {
                    columns: vec!["id".into()],
                }],
            },
        ];
        assert_eq!(
            render_summary(&steps),
            "\n[-] Removed extensions\n\n[*] Changed the `T` table\n  [+] Added primary key on columns (id)\n"
        );
    }

    #[test]
    fn sections_follow_prismas_drift_type_order() {
        let mut steps = vec![
            Step::AlterEnum {
                name: "Role".into(),
                added: vec!["tool".into()],
                removed: vec![],
            },
            Step::CreateTable { name: "B".into() },
            Step::CreateExtension {
                name: "pg_trgm".into(),
            },
            Step::DropTable { name: "A".into() },
            Step::CreateEnum {
                name: "Mood".into(),
            },
        ];
        steps.sort_by_key(Step::sort_key);
        assert_eq!(
            render_summary(&steps),
            "\n[+] Added extensions\n  - pg_trgm\n\n[+] Added enums\n  - Mood\n\n[+] Added tables\n  - B\n\n\
             [-] Removed tables\n  - A\n\n[*] Changed the `Role` enum\n  [+] Added variant `tool`\n"
        );
    }

    #[test]
    fn default_kinds_print_as_prismas_debug() {
        assert_eq!(default_kind(None), "None");
        assert_eq!(default_kind(Some("CURRENT_TIMESTAMP")), "Some(Now)");
        assert_eq!(default_kind(Some("false")), "Some(Value(Boolean(false)))");
        assert_eq!(default_kind(Some("0")), "Some(Value(Int(0)))");
        assert_eq!(
            default_kind(Some("'it''s'::text")),
            "Some(Value(String(\"it's\")))"
        );
        assert_eq!(
            default_kind(Some("gen_random_uuid()")),
            "Some(DbGenerated(Some(\"gen_random_uuid()\")))"
        );
        assert_eq!(
            default_kind(Some("nextval('\"Log_id_seq\"'::regclass)")),
            "Some(Sequence(\"Log_id_seq\"))"
        );
    }

    #[test]
    fn index_definitions_gain_if_not_exists() {
        assert_eq!(
            if_not_exists("CREATE UNIQUE INDEX \"a\" ON public.t USING btree (x)").as_deref(),
            Some("CREATE UNIQUE INDEX IF NOT EXISTS \"a\" ON public.t USING btree (x)")
        );
        assert_eq!(
            if_not_exists("CREATE INDEX a ON public.t USING gin (x)").as_deref(),
            Some("CREATE INDEX IF NOT EXISTS a ON public.t USING gin (x)")
        );
        assert_eq!(if_not_exists("DROP INDEX a"), None);
    }

    #[test]
    fn the_target_itself_is_never_a_shadow_even_with_force() {
        let target = DbConfig::parse("postgres://u@db.example:5432/app").expect("url");
        let same = DbConfig::parse("postgres://other@DB.example:5432/app").expect("url");
        assert!(check_shadow(&target, &same, true).is_err());
        let unmarked = target.with_dbname("app_copy");
        assert!(check_shadow(&target, &unmarked, false).is_err());
        assert!(check_shadow(&target, &unmarked, true).is_ok());
        assert!(check_shadow(&target, &target.with_dbname("app_shadow"), false).is_ok());
        let local = DbConfig::parse("postgres://u@127.0.0.1:5432/app_shadow").expect("url");
        let alias = DbConfig::parse("postgres://u@localhost:5432/app_shadow").expect("url");
        assert!(check_shadow(&local, &alias, true).is_err());
    }
}
