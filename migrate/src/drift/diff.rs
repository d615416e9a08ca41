//! The differences between two introspected schemas, as steps in Prisma's vocabulary (its
//! `SqlMigrationStep` and `TableChange` kinds), sorted as Prisma sorts them, so that the summary
//! and the written migration list them in Prisma's order.
//!
//! A step says what turns the history ("before") into the target ("after"). Indexes compare by
//! their whole definition (method, keys, predicate), so a partial index differs from an otherwise
//! equal one, and the same definition under another name is a rename, as in Prisma. A column's
//! changes are kept in the words of Prisma's summary (`changed from Required to Nullable`, `type
//! changed`…): they are part of the step, which `gcbb db drift --json` prints as it is.
//!
//! One idea, kept in one file on purpose (over 600 lines): the comparison of two schemas, object
//! kind by object kind, with Prisma's ordering beside the steps it orders.

use serde::Serialize;

use crate::introspect::{Column, ForeignKey, Index, Schema, Table, Trigger};

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
    /// gcbb only: a function of the target that the history lacks, by `name(arguments)`.
    CreateFunction {
        name: String,
    },
    DropFunction {
        name: String,
    },
    /// gcbb only: same name and arguments, another definition.
    RedefineFunction {
        name: String,
    },
    /// gcbb only: a trigger of a table.
    CreateTrigger {
        table: String,
        trigger: Trigger,
    },
    DropTrigger {
        table: String,
        trigger: Trigger,
    },
    RedefineTrigger {
        table: String,
        trigger: Trigger,
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
            Step::DropFunction { .. } => 40,
            Step::CreateFunction { .. } => 41,
            Step::RedefineFunction { .. } => 42,
            Step::DropTrigger { .. } => 43,
            Step::CreateTrigger { .. } => 44,
            Step::RedefineTrigger { .. } => 45,
        }
    }

    /// Within a kind, steps follow their object's name (Prisma: the describer's ids).
    pub(super) fn sort_key(&self) -> (u8, String, String) {
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
            | Step::RedefineView { name }
            | Step::CreateFunction { name }
            | Step::DropFunction { name }
            | Step::RedefineFunction { name } => (name.clone(), String::new()),
            Step::CreateTrigger { table, trigger }
            | Step::DropTrigger { table, trigger }
            | Step::RedefineTrigger { table, trigger } => (table.clone(), trigger.name.clone()),
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
    diff_functions(history, target, &mut steps);
    steps.sort_by_key(Step::sort_key);
    steps
}

fn diff_functions(history: &Schema, target: &Schema, steps: &mut Vec<Step>) {
    for (name, before) in &history.functions {
        match target.functions.get(name) {
            None => steps.push(Step::DropFunction { name: name.clone() }),
            Some(after) if after != before => {
                steps.push(Step::RedefineFunction { name: name.clone() })
            }
            Some(_) => {}
        }
    }
    for name in target.functions.keys() {
        if !history.functions.contains_key(name) {
            steps.push(Step::CreateFunction { name: name.clone() });
        }
    }
}

fn diff_triggers(table: &str, before: &[Trigger], after: &[Trigger], steps: &mut Vec<Step>) {
    for b in before {
        match after.iter().find(|a| a.name == b.name) {
            None => steps.push(Step::DropTrigger {
                table: table.to_owned(),
                trigger: b.clone(),
            }),
            Some(a) if a.definition != b.definition => steps.push(Step::RedefineTrigger {
                table: table.to_owned(),
                trigger: a.clone(),
            }),
            Some(_) => {}
        }
    }
    for a in after {
        if !before.iter().any(|b| b.name == a.name) {
            steps.push(Step::CreateTrigger {
                table: table.to_owned(),
                trigger: a.clone(),
            });
        }
    }
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
            diff_triggers(name, &[], &after.triggers, steps);
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
        diff_triggers(name, &before.triggers, &after.triggers, steps);
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

#[cfg(test)]
mod tests;
