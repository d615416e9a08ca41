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

/// One statement of a file, where it starts, and what it is, for a rehearsal's per-statement
/// report.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Located {
    /// The text as `deploy` would send it for this statement (comments above it included).
    pub sql: String,
    /// The statement from its first token (without the comments above it), for display.
    pub body: String,
    /// 1-based line of its first token.
    pub line: usize,
    /// Whether it reads or writes rows (INSERT, UPDATE, DELETE, MERGE, SELECT, COPY): only then
    /// is the number of rows it affected worth showing.
    pub is_dml: bool,
}

/// The statements of `script` in order, located; `None` when it does not parse (Postgres then
/// reports the syntax error when the file is run whole).
pub fn split_located(script: &str) -> Option<Vec<Located>> {
    let parsed = pg_query::parse(script).ok()?;
    let code_starts: Vec<usize> = pg_query::scan(script)
        .ok()?
        .tokens
        .iter()
        .filter(|t| {
            t.token != pg_query::protobuf::Token::SqlComment as i32
                && t.token != pg_query::protobuf::Token::CComment as i32
        })
        .map(|t| t.start.max(0) as usize)
        .collect();
    let mut out = Vec::new();
    for raw in &parsed.protobuf.stmts {
        let start = raw.stmt_location.max(0) as usize;
        let end = match raw.stmt_len {
            0 => script.len(),
            len => (start + len.max(0) as usize).min(script.len()),
        };
        let raw_text = script.get(start..end).unwrap_or_default();
        let sql = raw_text.trim();
        if sql.is_empty() {
            continue;
        }
        let sql_start = start + (raw_text.len() - raw_text.trim_start().len());
        let first = code_starts
            .get(code_starts.partition_point(|&s| s < start))
            .copied()
            .filter(|&s| s < end)
            .unwrap_or(start);
        let is_dml = matches!(
            raw.stmt.as_ref().and_then(|s| s.node.as_ref()),
            Some(
                NodeEnum::InsertStmt(_)
                    | NodeEnum::UpdateStmt(_)
                    | NodeEnum::DeleteStmt(_)
                    | NodeEnum::MergeStmt(_)
                    | NodeEnum::SelectStmt(_)
                    | NodeEnum::CopyStmt(_)
            )
        );
        out.push(Located {
            sql: sql.to_owned(),
            body: sql
                .get(first.saturating_sub(sql_start).min(sql.len())..)
                .unwrap_or(sql)
                .to_owned(),
            line: 1 + script.as_bytes()[..first]
                .iter()
                .filter(|&&b| b == b'\n')
                .count(),
            is_dml,
        });
    }
    Some(out)
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

/// The same index statement built or dropped without blocking writes: `CREATE INDEX CONCURRENTLY
/// IF NOT EXISTS …` for a `CREATE INDEX`, `DROP INDEX CONCURRENTLY IF EXISTS …` for a `DROP INDEX`
/// of one index without `CASCADE`; `None` for anything else (or when already concurrent). Built
/// from Postgres's parse tree and printed back by its deparser, so the rewrite is the statement
/// itself, names and expressions as written. It cannot run in a transaction: it goes alone in a
/// migration file.
pub fn concurrently_rewrite(sql: &str) -> Option<String> {
    let mut parsed = pg_query::parse(sql).ok()?.protobuf;
    if parsed.stmts.len() != 1 {
        return None;
    }
    let node = parsed.stmts[0].stmt.as_mut()?.node.as_mut()?;
    match node {
        NodeEnum::IndexStmt(s) if !s.concurrent => {
            s.concurrent = true;
            // IF NOT EXISTS needs a name; an unnamed index gets a new one on every run anyway.
            s.if_not_exists = !s.idxname.is_empty();
        }
        NodeEnum::DropStmt(s)
            if !s.concurrent
                && s.remove_type == pg_query::protobuf::ObjectType::ObjectIndex as i32
                && s.objects.len() == 1
                && s.behavior != pg_query::protobuf::DropBehavior::DropCascade as i32 =>
        {
            s.concurrent = true;
            s.missing_ok = true;
        }
        _ => return None,
    }
    pg_query::deparse(&parsed).ok()
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
    fn located_statements_start_at_their_first_token_and_know_dml() {
        let sql = "-- header\n\nCREATE TABLE t (id int);\n-- why\n-- more\nUPDATE t SET id = 1\n  WHERE id = 2;\nSELECT 1";
        let located = split_located(sql).expect("parses");
        assert_eq!(
            located
                .iter()
                .map(|l| (l.line, l.is_dml))
                .collect::<Vec<_>>(),
            vec![(3, false), (6, true), (8, true)]
        );
        assert!(located[1].sql.starts_with("-- why"), "{:?}", located[1].sql);
        assert!(
            located[1].body.starts_with("UPDATE t"),
            "{:?}",
            located[1].body
        );
        assert!(
            located[1].sql.ends_with("WHERE id = 2"),
            "{:?}",
            located[1].sql
        );
        assert_eq!(split_located("CREATE TABLEE oops;"), None);
    }

    #[test]
    fn index_statements_are_rewritten_to_run_concurrently() {
        assert_eq!(
            concurrently_rewrite(
                "-- why\nCREATE INDEX IF NOT EXISTS \"Message_companionId_createdAt_idx\" ON \"Message\"(\"companionId\", \"createdAt\")"
            )
            .as_deref(),
            Some("CREATE INDEX CONCURRENTLY IF NOT EXISTS \"Message_companionId_createdAt_idx\" ON \"Message\" USING btree (\"companionId\", \"createdAt\")")
        );
        assert_eq!(
            concurrently_rewrite(
                "CREATE UNIQUE INDEX ON t USING gin (lower(name)) WHERE NOT private"
            )
            .as_deref(),
            Some("CREATE UNIQUE INDEX CONCURRENTLY ON t USING gin (lower(name)) WHERE NOT private")
        );
        assert_eq!(
            concurrently_rewrite("DROP INDEX \"Message_x_idx\"").as_deref(),
            Some("DROP INDEX CONCURRENTLY IF EXISTS \"Message_x_idx\"")
        );
        for sql in [
            "CREATE INDEX CONCURRENTLY x ON t(y)",
            "DROP INDEX a, b",
            "DROP INDEX a CASCADE",
            "DROP TABLE t",
            "ALTER TABLE t ADD COLUMN c int",
            "CREATE INDEX x ON t(y); CREATE INDEX z ON t(w)",
        ] {
            assert_eq!(concurrently_rewrite(sql), None, "{sql}");
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
