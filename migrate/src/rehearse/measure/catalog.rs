//! The catalog as the run reads it: the relations of the user's schemas with their data files (a
//! changed `relfilenode` is a rewrite, a new index a build), and the sizes of tables.

use std::collections::HashMap;

use tokio_postgres::Client;

use crate::error::MigrateError;
use crate::session::describe_pg_error;

/// A relation of the copy, as the catalog describes it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Relation {
    pub(super) schema: String,
    pub(super) name: String,
    /// `pg_class.relkind`.
    pub(super) kind: char,
    pub(super) filenode: u32,
    /// For an index, its table's oid (0 otherwise).
    pub(super) table: u32,
}

impl Relation {
    /// Relations application queries lock: tables, partitioned tables, views, materialized views.
    pub(super) fn is_queried(&self) -> bool {
        matches!(self.kind, 'r' | 'p' | 'm' | 'v')
    }

    pub(super) fn is_index(&self) -> bool {
        matches!(self.kind, 'i' | 'I')
    }
}

pub(super) type Catalog = HashMap<u32, Relation>;

/// `pg_total_relation_size` of every table, view and materialized view, by (schema, name).
pub type Sizes = HashMap<(String, String), i64>;

fn db_err(e: tokio_postgres::Error) -> MigrateError {
    MigrateError::Database(describe_pg_error(&e))
}

/// The relations of the user's schemas (not the catalogs, TOAST or temporary schemas).
const USER_SCHEMAS: &str = "n.nspname NOT IN ('pg_catalog', 'information_schema') \
     AND n.nspname !~ '^pg_(toast|temp)'";

pub(super) async fn read_catalog(client: &Client) -> Result<Catalog, MigrateError> {
    let sql = format!(
        "SELECT c.oid, n.nspname::text, c.relname::text, c.relkind::text, c.relfilenode, \
                COALESCE(i.indrelid, 0::oid) \
         FROM pg_catalog.pg_class c \
         JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace \
         LEFT JOIN pg_catalog.pg_index i ON i.indexrelid = c.oid \
         WHERE {USER_SCHEMAS} AND c.relkind IN ('r', 'p', 'v', 'm', 'i', 'I')"
    );
    let rows = client.query(&sql, &[]).await.map_err(db_err)?;
    Ok(rows
        .iter()
        .map(|r| {
            let kind: String = r.get(3);
            (
                r.get::<_, u32>(0),
                Relation {
                    schema: r.get(1),
                    name: r.get(2),
                    kind: kind.chars().next().unwrap_or('?'),
                    filenode: r.get(4),
                    table: r.get(5),
                },
            )
        })
        .collect())
}

/// Sizes of the tables and materialized views `client` sees (a read, fine on the target).
pub async fn read_sizes(client: &Client) -> Result<Sizes, MigrateError> {
    let sql = format!(
        "SELECT n.nspname::text, c.relname::text, pg_catalog.pg_total_relation_size(c.oid) \
         FROM pg_catalog.pg_class c JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace \
         WHERE {USER_SCHEMAS} AND c.relkind IN ('r', 'p', 'm')"
    );
    let rows = client.query(&sql, &[]).await.map_err(db_err)?;
    Ok(rows
        .iter()
        .map(|r| ((r.get(0), r.get(1)), r.get(2)))
        .collect())
}
