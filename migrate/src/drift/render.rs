//! The drift summary in Prisma's words and order, so that people and scripts that read Prisma's
//! drift summary read ours.
//!
//! Prisma's rendering, followed line for line: steps sort by kind (Prisma's `SqlMigrationStep`
//! order, `Step`'s rank), then go into sections ordered as Prisma's `DriftType` ([`Section`]),
//! then by name, then by step. Every section starts with an empty line; a section named after an
//! object (a changed table, view, enum or extension) gets one header per object. Two Prisma bugs
//! are not copied: `[-] Removed extensions` is not followed by a stray backtick, and `[+] Added
//! primary key` is not followed by a second `)` line.
//!
//! Prisma names an index by its columns, and an expression key (`lower("name")`,
//! `date_trunc('day', "updatedAt")`…) has no column name: any index with at least one expression
//! key prints `on some columns`. That is how production's hand-built `UserBurnedTokens` index
//! printed (`tests/integration/drift.rs` rebuilds that drift). Partial indexes on plain columns
//! print their columns, as Prisma ignores the predicate when naming them.
//!
//! Beyond Prisma (which does not see them): materialized views, views added to the target and view
//! definitions that changed get sections of the same shape, after Prisma's:
//! ``[+] Added views`` / ``[*] Changed the `V` view`` (with `[*] Redefined the view` and the index
//! lines of a materialized view); so do functions (``[+] Added functions``, ``[-] Removed
//! functions``, ``[*] Changed the `f(text)` function``), and triggers are lines of their table's
//! section (`[+] Added trigger `t``).

use std::collections::BTreeSet;
use std::fmt::Write as _;

use super::diff::{Step, TableChange};
use crate::introspect::Index;

/// Prisma's `DriftType`, in its order, then gcbb's view sections.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub(super) enum Section {
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
    AddedFunction,
    RemovedFunction,
    ChangedFunction,
}

pub(super) fn section_of(step: &Step) -> (Section, &str) {
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
        | Step::RenameIndex { table, .. }
        | Step::CreateTrigger { table, .. }
        | Step::DropTrigger { table, .. }
        | Step::RedefineTrigger { table, .. } => (Section::ChangedTable, table),
        Step::CreateFunction { .. } => (Section::AddedFunction, ""),
        Step::DropFunction { .. } => (Section::RemovedFunction, ""),
        Step::RedefineFunction { name } => (Section::ChangedFunction, name),
        Step::CreateView { .. } => (Section::AddedView, ""),
        Step::RedefineView { name }
        | Step::CreateViewIndex { view: name, .. }
        | Step::DropViewIndex { view: name, .. }
        | Step::RenameViewIndex { view: name, .. } => (Section::ChangedView, name),
    }
}

pub(super) fn header(section: Section, name: &str) -> String {
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
        Section::AddedFunction => "\n[+] Added functions\n".to_owned(),
        Section::RemovedFunction => "\n[-] Removed functions\n".to_owned(),
        Section::ChangedFunction => format!("\n[*] Changed the `{name}` function\n"),
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

pub(super) fn item_lines(step: &Step, out: &mut String) {
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
        Step::CreateFunction { name } | Step::DropFunction { name } => {
            let _ = writeln!(out, "  - {name}");
        }
        Step::RedefineFunction { .. } => out.push_str("  [*] Redefined the function\n"),
        Step::CreateTrigger { trigger, .. } => {
            let _ = writeln!(out, "  [+] Added trigger `{}`", trigger.name);
        }
        Step::DropTrigger { trigger, .. } => {
            let _ = writeln!(out, "  [-] Removed trigger `{}`", trigger.name);
        }
        Step::RedefineTrigger { trigger, .. } => {
            let _ = writeln!(out, "  [*] Redefined trigger `{}`", trigger.name);
        }
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
    fn added_indexes_render_as_prisma_prints_them() {
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
}
