//! The rules themselves: one parsed statement in, the rules it breaks out, given what earlier
//! statements of the same file created.
//!
//! The expression walk for defaults is written here because `pg_query`'s own `nodes()` iterator
//! only visits the node kinds it needs for table lists, not expressions inside casts or operators.

use std::collections::HashSet;
use std::fmt;

use pg_query::protobuf::{
    self, AlterTableType, ConstrType, ObjectType, RangeVar, TransactionStmtKind,
};
use pg_query::{Node, NodeEnum};

use super::rules::*;
use super::LintContext;

/// A relation name resolved the way Postgres would with `search_path = public`: unquoted names
/// arrive lower-cased from the parser, quoted names keep their case.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub(super) struct QualifiedName {
    schema: String,
    name: String,
}

impl QualifiedName {
    fn new(schema: &str, name: &str) -> Self {
        let schema = if schema.is_empty() { "public" } else { schema };
        QualifiedName {
            schema: schema.to_owned(),
            name: name.to_owned(),
        }
    }

    fn of(range: &RangeVar) -> Self {
        if range.relpersistence == "t" && range.schemaname.is_empty() {
            return QualifiedName::new("pg_temp", &range.relname);
        }
        QualifiedName::new(&range.schemaname, &range.relname)
    }

    /// From a dotted name list (`DROP TABLE a.b`, `DROP INDEX c`): the last two parts.
    fn from_parts(parts: &[String]) -> Option<Self> {
        match parts {
            [] => None,
            [name] => Some(QualifiedName::new("", name)),
            [.., schema, name] => Some(QualifiedName::new(schema, name)),
        }
    }
}

impl fmt::Display for QualifiedName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.schema != "public" {
            write!(f, "\"{}\".", self.schema)?;
        }
        write!(f, "\"{}\"", self.name)
    }
}

/// One rule broken by one statement.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Hit {
    pub rule: &'static str,
    pub message: String,
}

fn hit(rule: &'static str, message: String) -> Hit {
    Hit { rule, message }
}

/// What earlier statements of the file created: these objects are new and empty, so locking or
/// rewriting them harms nobody.
#[derive(Debug, Default)]
pub(super) struct FileState {
    relations: HashSet<QualifiedName>,
    indexes: HashSet<QualifiedName>,
    /// Functions this file defines without IMMUTABLE/STABLE (Postgres's default is VOLATILE).
    volatile_functions: HashSet<String>,
}

impl FileState {
    fn is_new(&self, range: &RangeVar) -> bool {
        self.relations.contains(&QualifiedName::of(range))
    }
}

/// Whether a statement cannot run inside a transaction block.
pub(super) fn is_non_transactional(node: &NodeEnum) -> bool {
    match node {
        NodeEnum::IndexStmt(s) => s.concurrent,
        NodeEnum::DropStmt(s) => s.concurrent,
        NodeEnum::ReindexStmt(s) => s.params.iter().any(|p| def_name(p) == Some("concurrently")),
        // VACUUM cannot; ANALYZE (the same node) can.
        NodeEnum::VacuumStmt(s) => s.is_vacuumcmd,
        _ => false,
    }
}

/// Checks one statement and records what it creates.
pub(super) fn check_statement(
    node: &NodeEnum,
    state: &mut FileState,
    ctx: &LintContext,
) -> Vec<Hit> {
    let mut hits = Vec::new();
    match node {
        // With IF NOT EXISTS the table may already exist, full of rows: not new.
        NodeEnum::CreateStmt(s) if !s.if_not_exists => {
            if let Some(rel) = &s.relation {
                state.relations.insert(QualifiedName::of(rel));
            }
        }
        NodeEnum::CreateTableAsStmt(s) if !s.if_not_exists => {
            if let Some(rel) = s.into.as_ref().and_then(|into| into.rel.as_ref()) {
                state.relations.insert(QualifiedName::of(rel));
            }
        }
        NodeEnum::ViewStmt(s) => {
            if let Some(rel) = &s.view {
                state.relations.insert(QualifiedName::of(rel));
            }
        }
        NodeEnum::CreateFunctionStmt(s) => {
            let declared_stable = s.options.iter().any(|option| {
                def_name(option) == Some("volatility")
                    && def_string_arg(option).is_some_and(|v| v == "immutable" || v == "stable")
            });
            if let Some(name) = name_list(&s.funcname).last() {
                if declared_stable {
                    state.volatile_functions.remove(name);
                } else {
                    state.volatile_functions.insert(name.clone());
                }
            }
        }
        NodeEnum::IndexStmt(s) => check_create_index(s, state, &mut hits),
        NodeEnum::DropStmt(s) => check_drop(s, state, &mut hits),
        NodeEnum::TruncateStmt(s) => {
            for rel in s.relations.iter().filter_map(range_var) {
                if !state.is_new(rel) {
                    let name = QualifiedName::of(rel);
                    hits.push(hit(TRUNCATE, format!("truncates {name}")));
                }
            }
        }
        NodeEnum::RenameStmt(s) => check_rename(s, state, &mut hits),
        NodeEnum::AlterTableStmt(s) => {
            if let Some(rel) = &s.relation {
                if !state.is_new(rel) {
                    let table = QualifiedName::of(rel);
                    for cmd in &s.cmds {
                        if let Some(NodeEnum::AlterTableCmd(cmd)) = cmd.node.as_ref() {
                            check_alter_table_cmd(cmd, &table, state, ctx, &mut hits);
                        }
                    }
                }
            }
        }
        NodeEnum::DeleteStmt(s) => {
            if let Some(rel) = &s.relation {
                if s.where_clause.is_none() && !state.is_new(rel) {
                    let name = QualifiedName::of(rel);
                    hits.push(hit(
                        DELETE_WITHOUT_WHERE,
                        format!("deletes every row of {name}"),
                    ));
                }
            }
        }
        NodeEnum::UpdateStmt(s) => {
            if let Some(rel) = &s.relation {
                if s.where_clause.is_none() && !state.is_new(rel) {
                    let name = QualifiedName::of(rel);
                    hits.push(hit(
                        UPDATE_WITHOUT_WHERE,
                        format!("updates every row of {name}"),
                    ));
                }
            }
        }
        NodeEnum::RefreshMatViewStmt(s) => {
            if let Some(rel) = &s.relation {
                if !s.concurrent && !state.is_new(rel) {
                    let name = QualifiedName::of(rel);
                    hits.push(hit(
                        REFRESH_MATERIALIZED_VIEW_NOT_CONCURRENTLY,
                        format!("refreshes {name} without CONCURRENTLY"),
                    ));
                }
            }
        }
        NodeEnum::VacuumStmt(s)
            if s.is_vacuumcmd && s.options.iter().any(|o| def_name(o) == Some("full")) =>
        {
            hits.push(hit(
                VACUUM_FULL,
                "VACUUM FULL rewrites the table".to_owned(),
            ));
        }
        NodeEnum::ClusterStmt(s) => {
            let target = s
                .relation
                .as_ref()
                .map(|rel| QualifiedName::of(rel).to_string())
                .unwrap_or_else(|| "every clustered table".to_owned());
            hits.push(hit(CLUSTER, format!("CLUSTER rewrites {target}")));
        }
        NodeEnum::TransactionStmt(s) => {
            let word = match TransactionStmtKind::try_from(s.kind) {
                Ok(TransactionStmtKind::TransStmtBegin | TransactionStmtKind::TransStmtStart) => {
                    "BEGIN"
                }
                Ok(TransactionStmtKind::TransStmtCommit) => "COMMIT",
                Ok(TransactionStmtKind::TransStmtRollback) => "ROLLBACK",
                Ok(TransactionStmtKind::TransStmtSavepoint) => "SAVEPOINT",
                Ok(TransactionStmtKind::TransStmtRelease) => "RELEASE SAVEPOINT",
                Ok(TransactionStmtKind::TransStmtRollbackTo) => "ROLLBACK TO SAVEPOINT",
                _ => "a two-phase commit statement",
            };
            hits.push(hit(
                TRANSACTION_CONTROL_IN_FILE,
                format!("{word} inside a migration file"),
            ));
        }
        _ => {}
    }
    hits
}

fn check_create_index(s: &protobuf::IndexStmt, state: &mut FileState, hits: &mut Vec<Hit>) {
    let Some(rel) = &s.relation else { return };
    let table = QualifiedName::of(rel);
    if !state.is_new(rel) {
        if !s.concurrent {
            hits.push(hit(
                CREATE_INDEX_NOT_CONCURRENTLY,
                format!("builds an index on {table} without CONCURRENTLY"),
            ));
        }
        if !s.if_not_exists {
            hits.push(hit(
                INDEX_WITHOUT_IF_NOT_EXISTS,
                format!("creates an index on {table} without IF NOT EXISTS"),
            ));
        }
    }
    if !s.idxname.is_empty() {
        // An index lives in its table's schema.
        let schema = table.schema.clone();
        state
            .indexes
            .insert(QualifiedName::new(&schema, &s.idxname));
    }
}

fn check_drop(s: &protobuf::DropStmt, state: &mut FileState, hits: &mut Vec<Hit>) {
    let Ok(kind) = ObjectType::try_from(s.remove_type) else {
        return;
    };
    let names: Vec<Vec<String>> = s.objects.iter().map(object_name_parts).collect();
    let qualified = || {
        names
            .iter()
            .filter_map(|parts| QualifiedName::from_parts(parts))
    };
    match kind {
        ObjectType::ObjectTable | ObjectType::ObjectMatview | ObjectType::ObjectView => {
            let (rule, what) = match kind {
                ObjectType::ObjectTable => (DROP_TABLE, "table"),
                ObjectType::ObjectMatview => (DROP_MATERIALIZED_VIEW, "materialized view"),
                _ => (DROP_VIEW, "view"),
            };
            for name in qualified().filter(|name| !state.relations.contains(name)) {
                hits.push(hit(rule, format!("drops {what} {name}")));
            }
        }
        ObjectType::ObjectSchema => {
            for parts in &names {
                let name = parts.join(".");
                hits.push(hit(DROP_SCHEMA, format!("drops schema \"{name}\"")));
            }
        }
        ObjectType::ObjectType | ObjectType::ObjectDomain => {
            for name in qualified() {
                hits.push(hit(DROP_TYPE, format!("drops type {name}")));
            }
        }
        ObjectType::ObjectIndex if !s.concurrent => {
            for name in qualified().filter(|name| !state.indexes.contains(name)) {
                hits.push(hit(
                    DROP_INDEX_NOT_CONCURRENTLY,
                    format!("drops index {name} without CONCURRENTLY"),
                ));
            }
        }
        _ => {}
    }
}

fn check_rename(s: &protobuf::RenameStmt, state: &mut FileState, hits: &mut Vec<Hit>) {
    let Some(rel) = &s.relation else { return };
    let Ok(kind) = ObjectType::try_from(s.rename_type) else {
        return;
    };
    let old = QualifiedName::of(rel);
    let is_new = state.is_new(rel);
    match kind {
        ObjectType::ObjectTable
        | ObjectType::ObjectView
        | ObjectType::ObjectMatview
        | ObjectType::ObjectForeignTable => {
            let renamed = QualifiedName::new(&old.schema, &s.newname);
            if is_new {
                state.relations.insert(renamed);
            } else {
                hits.push(hit(RENAME_TABLE, format!("renames {old} to {renamed}")));
            }
        }
        ObjectType::ObjectColumn if !is_new => {
            hits.push(hit(
                RENAME_COLUMN,
                format!(
                    "renames column \"{}\" of {old} to \"{}\"",
                    s.subname, s.newname
                ),
            ));
        }
        _ => {}
    }
}

fn check_alter_table_cmd(
    cmd: &protobuf::AlterTableCmd,
    table: &QualifiedName,
    state: &FileState,
    ctx: &LintContext,
    hits: &mut Vec<Hit>,
) {
    let Ok(subtype) = AlterTableType::try_from(cmd.subtype) else {
        return;
    };
    let column = &cmd.name;
    match subtype {
        AlterTableType::AtDropColumn => hits.push(hit(
            DROP_COLUMN,
            format!("drops column \"{column}\" of {table}"),
        )),
        AlterTableType::AtAlterColumnType => hits.push(hit(
            ALTER_COLUMN_TYPE,
            format!("changes the type of column \"{column}\" of {table}"),
        )),
        AlterTableType::AtSetNotNull => hits.push(hit(
            SET_NOT_NULL,
            format!("sets column \"{column}\" of {table} NOT NULL"),
        )),
        AlterTableType::AtAddColumn => {
            if let Some(NodeEnum::ColumnDef(def)) = cmd.def.as_ref().and_then(|d| d.node.as_ref()) {
                check_add_column(def, table, state, ctx, hits);
            }
        }
        AlterTableType::AtAddConstraint => {
            if let Some(NodeEnum::Constraint(c)) = cmd.def.as_ref().and_then(|d| d.node.as_ref()) {
                check_add_constraint(c, table, hits);
            }
        }
        _ => {}
    }
}

fn constraint_label(c: &protobuf::Constraint) -> String {
    if c.conname.is_empty() {
        "a".to_owned()
    } else {
        format!("\"{}\"", c.conname)
    }
}

fn check_add_constraint(c: &protobuf::Constraint, table: &QualifiedName, hits: &mut Vec<Hit>) {
    let label = constraint_label(c);
    match ConstrType::try_from(c.contype) {
        Ok(ConstrType::ConstrForeign) if !c.skip_validation => hits.push(hit(
            FOREIGN_KEY_WITHOUT_NOT_VALID,
            format!("adds {label} foreign key to {table} without NOT VALID"),
        )),
        Ok(ConstrType::ConstrCheck) if !c.skip_validation => hits.push(hit(
            CHECK_WITHOUT_NOT_VALID,
            format!("adds {label} CHECK constraint to {table} without NOT VALID"),
        )),
        Ok(ConstrType::ConstrPrimary | ConstrType::ConstrUnique) if c.indexname.is_empty() => {
            hits.push(hit(
                UNIQUE_CONSTRAINT_NOT_USING_INDEX,
                format!("adds {label} unique/primary key constraint to {table} by building an index under lock"),
            ))
        }
        _ => {}
    }
}

fn check_add_column(
    def: &protobuf::ColumnDef,
    table: &QualifiedName,
    state: &FileState,
    ctx: &LintContext,
    hits: &mut Vec<Hit>,
) {
    let column = &def.colname;
    let constraints: Vec<&protobuf::Constraint> = def
        .constraints
        .iter()
        .filter_map(|n| match n.node.as_ref() {
            Some(NodeEnum::Constraint(c)) => Some(c.as_ref()),
            _ => None,
        })
        .collect();
    let kinds: Vec<ConstrType> = constraints
        .iter()
        .filter_map(|c| ConstrType::try_from(c.contype).ok())
        .collect();
    let default_expr = constraints
        .iter()
        .find(|c| c.contype == ConstrType::ConstrDefault as i32)
        .and_then(|c| c.raw_expr.as_deref())
        .or(def.raw_default.as_deref());

    let type_name = def
        .type_name
        .as_ref()
        .map(|t| name_list(&t.names))
        .and_then(|names| names.last().cloned())
        .unwrap_or_default();
    let is_serial = matches!(
        type_name.as_str(),
        "serial" | "serial2" | "serial4" | "serial8" | "smallserial" | "bigserial"
    );
    let is_identity = kinds.contains(&ConstrType::ConstrIdentity) || !def.identity.is_empty();
    let is_stored_generated = kinds.contains(&ConstrType::ConstrGenerated);

    let per_row = if is_serial {
        Some(format!("is {type_name} (a nextval() default)"))
    } else if is_identity {
        Some("is an identity column (numbered per row)".to_owned())
    } else if is_stored_generated {
        Some("is a stored generated column (computed per row)".to_owned())
    } else if let Some(expr) = default_expr {
        if ctx.server_major < 11 {
            Some("has a DEFAULT (before PostgreSQL 11 any default rewrites the table)".to_owned())
        } else {
            first_volatile_call(expr, state).map(|f| format!("has a volatile DEFAULT {f}()"))
        }
    } else {
        None
    };
    if let Some(reason) = per_row {
        hits.push(hit(
            VOLATILE_DEFAULT,
            format!("adds column \"{column}\" to {table}, which {reason}: the table is rewritten"),
        ));
    }

    let not_null = def.is_not_null
        || kinds.contains(&ConstrType::ConstrNotnull)
        || kinds.contains(&ConstrType::ConstrPrimary);
    let has_value = default_expr.is_some() || is_serial || is_identity || is_stored_generated;
    if not_null && !has_value {
        hits.push(hit(
            ADD_COLUMN_NOT_NULL_WITHOUT_DEFAULT,
            format!("adds NOT NULL column \"{column}\" to {table} without a DEFAULT"),
        ));
    }

    for c in &constraints {
        match ConstrType::try_from(c.contype) {
            Ok(ConstrType::ConstrForeign) => hits.push(hit(
                FOREIGN_KEY_WITHOUT_NOT_VALID,
                format!("adds column \"{column}\" to {table} with an inline REFERENCES (validated at once)"),
            )),
            Ok(ConstrType::ConstrCheck) if !c.skip_validation => hits.push(hit(
                CHECK_WITHOUT_NOT_VALID,
                format!("adds column \"{column}\" to {table} with an inline CHECK (validated at once)"),
            )),
            Ok(ConstrType::ConstrPrimary | ConstrType::ConstrUnique) => hits.push(hit(
                UNIQUE_CONSTRAINT_NOT_USING_INDEX,
                format!("adds column \"{column}\" to {table} with an inline UNIQUE/PRIMARY KEY (index built under lock)"),
            )),
            _ => {}
        }
    }
}

/// Built-in functions whose `provolatile` is `v`: a default calling one is evaluated per row, so
/// adding such a column rewrites the table. `now()`, `CURRENT_TIMESTAMP`, `statement_timestamp()`
/// are stable and evaluated once.
const VOLATILE_FUNCTIONS: &[&str] = &[
    "random",
    "random_normal",
    "setseed",
    "gen_random_uuid",
    "gen_random_bytes",
    "gen_salt",
    "uuid_generate_v1",
    "uuid_generate_v1mc",
    "uuid_generate_v4",
    "uuidv4",
    "uuidv7",
    "clock_timestamp",
    "timeofday",
    "nextval",
    "setval",
    "currval",
    "lastval",
    "txid_current",
    "pg_current_xact_id",
    "pg_sleep",
];

/// The first volatile function call inside a default expression, if any.
fn first_volatile_call(node: &Node, state: &FileState) -> Option<String> {
    let inner = node.node.as_ref()?;
    let children: Vec<&Node> = match inner {
        NodeEnum::FuncCall(f) => {
            if let Some(name) = name_list(&f.funcname).last() {
                if VOLATILE_FUNCTIONS.contains(&name.as_str())
                    || state.volatile_functions.contains(name)
                {
                    return Some(name.clone());
                }
            }
            f.args.iter().collect()
        }
        NodeEnum::TypeCast(c) => c.arg.as_deref().into_iter().collect(),
        NodeEnum::AExpr(e) => e.lexpr.iter().chain(e.rexpr.iter()).map(|b| &**b).collect(),
        NodeEnum::BoolExpr(e) => e.args.iter().collect(),
        NodeEnum::CoalesceExpr(e) => e.args.iter().collect(),
        NodeEnum::MinMaxExpr(e) => e.args.iter().collect(),
        NodeEnum::NullTest(e) => e.arg.as_deref().into_iter().collect(),
        NodeEnum::CollateClause(e) => e.arg.as_deref().into_iter().collect(),
        NodeEnum::AArrayExpr(e) => e.elements.iter().collect(),
        NodeEnum::RowExpr(e) => e.args.iter().collect(),
        NodeEnum::List(l) => l.items.iter().collect(),
        NodeEnum::CaseExpr(e) => {
            let mut nodes: Vec<&Node> = e.args.iter().collect();
            nodes.extend(e.arg.as_deref());
            nodes.extend(e.defresult.as_deref());
            nodes
        }
        NodeEnum::CaseWhen(w) => w.expr.iter().chain(w.result.iter()).map(|b| &**b).collect(),
        _ => Vec::new(),
    };
    children
        .into_iter()
        .find_map(|child| first_volatile_call(child, state))
}

fn range_var(node: &Node) -> Option<&RangeVar> {
    match node.node.as_ref()? {
        NodeEnum::RangeVar(r) => Some(r),
        _ => None,
    }
}

/// The strings of a name list (`funcname`, `TypeName.names`, a `List` of `String`s).
fn name_list(nodes: &[Node]) -> Vec<String> {
    nodes
        .iter()
        .filter_map(|n| match n.node.as_ref() {
            Some(NodeEnum::String(s)) => Some(s.sval.clone()),
            _ => None,
        })
        .collect()
}

/// The dotted name of one object of a DROP: a `List` of strings, a bare `String`, or a `TypeName`.
fn object_name_parts(node: &Node) -> Vec<String> {
    match node.node.as_ref() {
        Some(NodeEnum::List(l)) => name_list(&l.items),
        Some(NodeEnum::String(s)) => vec![s.sval.clone()],
        Some(NodeEnum::TypeName(t)) => name_list(&t.names),
        _ => Vec::new(),
    }
}

fn def_name(node: &Node) -> Option<&str> {
    match node.node.as_ref()? {
        NodeEnum::DefElem(d) => Some(d.defname.as_str()),
        _ => None,
    }
}

fn def_string_arg(node: &Node) -> Option<&str> {
    match node.node.as_ref()? {
        NodeEnum::DefElem(d) => match d.arg.as_ref()?.node.as_ref()? {
            NodeEnum::String(s) => Some(s.sval.as_str()),
            _ => None,
        },
        _ => None,
    }
}
