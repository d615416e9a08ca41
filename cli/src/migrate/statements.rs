//! How a migration file must run: in one transaction, or statement by statement because it holds
//! a statement Postgres refuses inside a transaction block. Decided from Postgres's own parse tree
//! (`pg_query`), never from regexes, so comments, strings and dollar quotes cannot fool it.

use pg_query::NodeEnum;

/// A statement that must run outside a transaction block.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NonTransactional {
    /// What it is, for messages (`CREATE INDEX CONCURRENTLY`).
    pub kind: &'static str,
    /// For `CREATE INDEX CONCURRENTLY`: the index to check for validity afterwards (schema, name).
    pub builds_index: Option<IndexTarget>,
}

/// An index a concurrent build creates: its name, or the table when the index is unnamed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IndexTarget {
    pub schema: Option<String>,
    pub index: Option<String>,
    pub table: String,
}

/// One statement of a file, as `split_with_parser` cut it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Statement {
    pub sql: String,
    pub non_transactional: Option<NonTransactional>,
}

/// How to run one file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Plan {
    /// The whole file in one transaction (also the fallback when the file does not parse: then
    /// Postgres reports the syntax error with its position).
    Transaction,
    /// Statement by statement in autocommit: the file is a single statement that cannot run in
    /// a transaction.
    Autocommit(Vec<Statement>),
    /// A non-transactional statement next to others: Prisma sends a file as one batch (one
    /// implicit transaction), so such a file could never be applied by Prisma.
    Mixed {
        kind: &'static str,
        statements: usize,
    },
}

/// Splits and classifies `script`.
pub fn plan(script: &str) -> Plan {
    let Ok(parts) = pg_query::split_with_parser(script) else {
        return Plan::Transaction;
    };
    let mut statements = Vec::new();
    for part in parts {
        let sql = part.trim();
        if sql.is_empty() {
            continue;
        }
        let non_transactional = classify(sql);
        statements.push(Statement {
            sql: sql.to_owned(),
            non_transactional,
        });
    }
    let first_nt = statements
        .iter()
        .find_map(|s| s.non_transactional.as_ref().map(|n| n.kind));
    match first_nt {
        None => Plan::Transaction,
        Some(_) if statements.len() == 1 => Plan::Autocommit(statements),
        Some(kind) => Plan::Mixed {
            kind,
            statements: statements.len(),
        },
    }
}

/// `Some` when the single statement `sql` cannot run inside a transaction block.
pub fn classify(sql: &str) -> Option<NonTransactional> {
    let parsed = pg_query::parse(sql).ok()?;
    let raw = parsed.protobuf.stmts.first()?;
    let node = raw.stmt.as_ref()?.node.as_ref()?;
    let plain = |kind| {
        Some(NonTransactional {
            kind,
            builds_index: None,
        })
    };
    match node {
        NodeEnum::IndexStmt(s) if s.concurrent => {
            let rel = s.relation.clone().unwrap_or_default();
            Some(NonTransactional {
                kind: "CREATE INDEX CONCURRENTLY",
                builds_index: Some(IndexTarget {
                    schema: non_empty(&rel.schemaname),
                    index: non_empty(&s.idxname),
                    table: rel.relname,
                }),
            })
        }
        NodeEnum::DropStmt(s) if s.concurrent => plain("DROP INDEX CONCURRENTLY"),
        NodeEnum::ReindexStmt(s) if has_option(&s.params, "concurrently") => {
            plain("REINDEX CONCURRENTLY")
        }
        NodeEnum::VacuumStmt(s) if s.is_vacuumcmd => plain("VACUUM"),
        NodeEnum::CreatedbStmt(_) => plain("CREATE DATABASE"),
        NodeEnum::DropdbStmt(_) => plain("DROP DATABASE"),
        NodeEnum::AlterSystemStmt(_) => plain("ALTER SYSTEM"),
        NodeEnum::CreateTableSpaceStmt(_) => plain("CREATE TABLESPACE"),
        NodeEnum::DropTableSpaceStmt(_) => plain("DROP TABLESPACE"),
        _ => None,
    }
}

fn has_option(params: &[pg_query::Node], name: &str) -> bool {
    params
        .iter()
        .any(|p| matches!(&p.node, Some(NodeEnum::DefElem(d)) if d.defname == name))
}

fn non_empty(s: &str) -> Option<String> {
    (!s.is_empty()).then(|| s.to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ordinary_ddl_runs_in_one_transaction() {
        let sql = "-- CreateTable\nCREATE TABLE \"A\" (id text);\nCREATE INDEX \"A_id_idx\" ON \"A\"(id);\n";
        assert_eq!(plan(sql), Plan::Transaction);
    }

    #[test]
    fn a_lone_concurrent_index_runs_outside_a_transaction_and_names_its_index() {
        let sql = "-- why\nCREATE INDEX CONCURRENTLY IF NOT EXISTS \"Message_x_idx\" ON public.\"Message\"(\"x\");\n";
        let Plan::Autocommit(stmts) = plan(sql) else {
            panic!("expected autocommit")
        };
        assert_eq!(stmts.len(), 1);
        let nt = stmts[0]
            .non_transactional
            .clone()
            .expect("non-transactional");
        assert_eq!(nt.kind, "CREATE INDEX CONCURRENTLY");
        assert_eq!(
            nt.builds_index,
            Some(IndexTarget {
                schema: Some("public".into()),
                index: Some("Message_x_idx".into()),
                table: "Message".into()
            })
        );
    }

    #[test]
    fn concurrently_mixed_with_other_statements_is_refused() {
        let sql = "CREATE TABLE t (id int);\nCREATE INDEX CONCURRENTLY t_id ON t(id);\n";
        assert_eq!(
            plan(sql),
            Plan::Mixed {
                kind: "CREATE INDEX CONCURRENTLY",
                statements: 2
            }
        );
    }

    #[test]
    fn the_word_concurrently_in_a_comment_or_string_does_not_count() {
        let sql = "-- CREATE INDEX CONCURRENTLY x ON y(z);\nCOMMENT ON TABLE t IS 'CREATE INDEX CONCURRENTLY';\n\
                   CREATE FUNCTION f() RETURNS void LANGUAGE sql AS $$ SELECT 1 $$;\n";
        assert_eq!(plan(sql), Plan::Transaction);
    }

    #[test]
    fn other_statements_that_refuse_transactions_are_detected() {
        for (sql, kind) in [
            (
                "DROP INDEX CONCURRENTLY IF EXISTS x",
                "DROP INDEX CONCURRENTLY",
            ),
            ("REINDEX INDEX CONCURRENTLY x", "REINDEX CONCURRENTLY"),
            ("VACUUM ANALYZE t", "VACUUM"),
            ("CREATE DATABASE x", "CREATE DATABASE"),
            ("ALTER SYSTEM SET work_mem = '64MB'", "ALTER SYSTEM"),
        ] {
            assert_eq!(classify(sql).map(|n| n.kind), Some(kind), "{sql}");
        }
    }

    #[test]
    fn statements_fine_in_a_transaction_are_not_flagged() {
        for sql in [
            "REFRESH MATERIALIZED VIEW CONCURRENTLY mv",
            "REINDEX INDEX x",
            "DROP INDEX x",
            "ANALYZE t",
            "ALTER TYPE \"Role\" ADD VALUE 'tool'",
            "CREATE INDEX x ON t(y)",
        ] {
            assert_eq!(classify(sql), None, "{sql}");
        }
    }

    #[test]
    fn a_file_that_does_not_parse_is_left_to_postgres() {
        assert_eq!(plan("CREATE TABLEE oops;"), Plan::Transaction);
    }

    #[test]
    fn an_empty_or_comment_only_file_is_a_transaction() {
        assert_eq!(plan(""), Plan::Transaction);
        assert_eq!(plan("-- nothing\n"), Plan::Transaction);
    }
}
