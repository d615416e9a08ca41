//! What a database holds, read from `pg_catalog` (not `information_schema`, which hides index
//! methods, predicates, expression keys and materialized views): tables, columns, primary keys,
//! indexes, foreign keys, triggers, enums, views, materialized views, functions and extensions of
//! every user schema.
//!
//! Objects that belong to an extension (`pg_depend.deptype = 'e'`) are left out: they come with
//! the extension, which is compared by name and version. `_prisma_migrations` is left out too: it
//! is the history's bookkeeping, not part of the schema. Names in schemas other than `public` are
//! shown as `schema.name`.

use std::collections::BTreeMap;

use serde::Serialize;
use tokio_postgres::Client;

use super::error::MigrateError;
use super::session;

/// The migrations table, never part of a comparison.
pub const MIGRATIONS_TABLE: &str = "_prisma_migrations";

/// Everything compared by `gcbb db drift`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Schema {
    pub tables: BTreeMap<String, Table>,
    /// Enum name → labels in their declared order.
    pub enums: BTreeMap<String, Vec<String>>,
    /// Views and materialized views.
    pub views: BTreeMap<String, View>,
    pub extensions: BTreeMap<String, Extension>,
    /// Functions and procedures, by `name(identity arguments)`.
    pub functions: BTreeMap<String, Function>,
}

/// A function or procedure.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Function {
    /// `pg_get_functiondef()`: the whole `CREATE OR REPLACE FUNCTION` statement.
    pub definition: String,
}

/// A trigger of a table (not one Postgres makes for a foreign key).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Trigger {
    pub name: String,
    /// `pg_get_triggerdef()`: the whole `CREATE TRIGGER` statement.
    pub definition: String,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Table {
    /// In column order.
    pub columns: Vec<Column>,
    pub primary_key: Option<PrimaryKey>,
    /// Every index but the primary key's, by name.
    pub indexes: Vec<Index>,
    pub foreign_keys: Vec<ForeignKey>,
    pub triggers: Vec<Trigger>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Column {
    pub name: String,
    /// `format_type()`: `text`, `timestamp(3) without time zone`, `"Role"`…
    pub data_type: String,
    pub not_null: bool,
    /// `pg_get_expr()` of the default, or the identity kind (`identity always`).
    pub default: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct PrimaryKey {
    pub name: String,
    pub columns: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Index {
    pub name: String,
    /// Key columns in order; `None` where the key is an expression.
    pub columns: Vec<Option<String>>,
    /// Each key as `pg_get_indexdef(oid, n, true)` shows it (column name or expression).
    pub keys: Vec<String>,
    pub unique: bool,
    /// Access method: `btree`, `gin`, `gist`, `hash`, `brin`…
    pub method: String,
    /// `WHERE` clause of a partial index.
    pub predicate: Option<String>,
    /// `pg_get_indexdef()`: the whole `CREATE INDEX` statement.
    pub definition: String,
}

impl Index {
    /// True when a key is an expression rather than a plain column.
    pub fn has_expression(&self) -> bool {
        self.columns.iter().any(Option::is_none)
    }

    /// The definition without the index's own name: two indexes with the same body index the
    /// same thing the same way.
    pub fn body(&self) -> &str {
        self.definition
            .find(" ON ")
            .map_or(self.definition.as_str(), |at| &self.definition[at..])
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ForeignKey {
    pub name: String,
    pub columns: Vec<String>,
    pub referenced_table: String,
    pub referenced_columns: Vec<String>,
    /// `NO ACTION`, `RESTRICT`, `CASCADE`, `SET NULL`, `SET DEFAULT`.
    pub on_delete: String,
    pub on_update: String,
}

impl ForeignKey {
    /// Everything but the constraint name.
    pub fn shape(&self) -> (&[String], &str, &[String], &str, &str) {
        (
            &self.columns,
            &self.referenced_table,
            &self.referenced_columns,
            &self.on_delete,
            &self.on_update,
        )
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct View {
    pub materialized: bool,
    /// `pg_get_viewdef(oid, true)`.
    pub definition: String,
    /// Indexes of a materialized view.
    pub indexes: Vec<Index>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Extension {
    pub version: String,
    pub schema: String,
}

/// User schemas: not `pg_*`, not `information_schema`.
const USER_SCHEMA: &str = "n.nspname NOT LIKE 'pg\\_%' AND n.nspname <> 'information_schema'";

/// Not created by an extension.
const NOT_EXTENSION_MEMBER: &str = "NOT EXISTS (SELECT 1 FROM pg_catalog.pg_depend dep \
     WHERE dep.classid = 'pg_catalog.pg_class'::regclass AND dep.objid = c.oid AND dep.deptype = 'e')";

/// `name` in `public`, `schema.name` elsewhere.
const QUALIFIED: &str =
    "CASE WHEN n.nspname = 'public' THEN c.relname::text ELSE n.nspname || '.' || c.relname END";

fn db_err(e: tokio_postgres::Error) -> MigrateError {
    MigrateError::Database(session::describe_pg_error(&e))
}

/// Reads the schema of the database `client` is connected to.
pub async fn introspect(client: &Client) -> Result<Schema, MigrateError> {
    let mut schema = Schema::default();
    read_tables(client, &mut schema).await?;
    read_columns(client, &mut schema).await?;
    read_primary_keys(client, &mut schema).await?;
    read_indexes(client, &mut schema).await?;
    read_foreign_keys(client, &mut schema).await?;
    read_triggers(client, &mut schema).await?;
    read_enums(client, &mut schema).await?;
    read_extensions(client, &mut schema).await?;
    read_functions(client, &mut schema).await?;
    Ok(schema)
}

async fn read_triggers(client: &Client, schema: &mut Schema) -> Result<(), MigrateError> {
    let sql = format!(
        "SELECT {QUALIFIED}, t.tgname::text, pg_catalog.pg_get_triggerdef(t.oid, true) \
         FROM pg_catalog.pg_trigger t \
         JOIN pg_catalog.pg_class c ON c.oid = t.tgrelid \
         JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace \
         WHERE NOT t.tgisinternal AND c.relkind IN ('r', 'p') \
           AND {USER_SCHEMA} AND {NOT_EXTENSION_MEMBER} \
         ORDER BY 1, 2"
    );
    for row in client.query(&sql, &[]).await.map_err(db_err)? {
        if let Some(table) = schema.tables.get_mut(&row.get::<_, String>(0)) {
            table.triggers.push(Trigger {
                name: row.get(1),
                definition: row.get(2),
            });
        }
    }
    Ok(())
}

/// Functions and procedures (not aggregates, whose definition `pg_get_functiondef` cannot print),
/// leaving out those of extensions.
async fn read_functions(client: &Client, schema: &mut Schema) -> Result<(), MigrateError> {
    let sql = format!(
        "SELECT CASE WHEN n.nspname = 'public' THEN p.proname::text ELSE n.nspname || '.' || p.proname END \
                || '(' || pg_catalog.pg_get_function_identity_arguments(p.oid) || ')', \
                pg_catalog.pg_get_functiondef(p.oid) \
         FROM pg_catalog.pg_proc p JOIN pg_catalog.pg_namespace n ON n.oid = p.pronamespace \
         WHERE p.prokind IN ('f', 'p') AND {USER_SCHEMA} \
           AND NOT EXISTS (SELECT 1 FROM pg_catalog.pg_depend dep \
                           WHERE dep.classid = 'pg_catalog.pg_proc'::regclass AND dep.objid = p.oid AND dep.deptype = 'e')"
    );
    for row in client.query(&sql, &[]).await.map_err(db_err)? {
        schema.functions.insert(
            row.get(0),
            Function {
                definition: row.get::<_, String>(1).trim().to_owned(),
            },
        );
    }
    Ok(())
}

async fn read_tables(client: &Client, schema: &mut Schema) -> Result<(), MigrateError> {
    let sql = format!(
        "SELECT {QUALIFIED}, c.relkind = 'm', \
                CASE WHEN c.relkind IN ('v', 'm') THEN pg_catalog.pg_get_viewdef(c.oid, true) END \
         FROM pg_catalog.pg_class c JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace \
         WHERE c.relkind IN ('r', 'p', 'v', 'm') AND NOT c.relispartition \
           AND {USER_SCHEMA} AND {NOT_EXTENSION_MEMBER}"
    );
    for row in client.query(&sql, &[]).await.map_err(db_err)? {
        let name: String = row.get(0);
        if name == MIGRATIONS_TABLE {
            continue;
        }
        match row.get::<_, Option<String>>(2) {
            Some(definition) => {
                schema.views.insert(
                    name,
                    View {
                        materialized: row.get(1),
                        definition: definition.trim().to_owned(),
                        indexes: Vec::new(),
                    },
                );
            }
            None => {
                schema.tables.insert(name, Table::default());
            }
        }
    }
    Ok(())
}

async fn read_columns(client: &Client, schema: &mut Schema) -> Result<(), MigrateError> {
    let sql = format!(
        "SELECT {QUALIFIED}, a.attname::text, pg_catalog.format_type(a.atttypid, a.atttypmod), \
                a.attnotnull, pg_catalog.pg_get_expr(ad.adbin, ad.adrelid), \
                CASE a.attidentity WHEN 'a' THEN 'identity always' WHEN 'd' THEN 'identity by default' END, \
                a.attgenerated <> '' \
         FROM pg_catalog.pg_attribute a \
         JOIN pg_catalog.pg_class c ON c.oid = a.attrelid \
         JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace \
         LEFT JOIN pg_catalog.pg_attrdef ad ON ad.adrelid = a.attrelid AND ad.adnum = a.attnum \
         WHERE c.relkind IN ('r', 'p') AND a.attnum > 0 AND NOT a.attisdropped \
           AND {USER_SCHEMA} AND {NOT_EXTENSION_MEMBER} \
         ORDER BY 1, a.attnum"
    );
    for row in client.query(&sql, &[]).await.map_err(db_err)? {
        let Some(table) = schema.tables.get_mut(&row.get::<_, String>(0)) else {
            continue;
        };
        let expr: Option<String> = row.get(4);
        let identity: Option<String> = row.get(5);
        let generated: bool = row.get(6);
        let default = match (identity, expr, generated) {
            (Some(identity), _, _) => Some(identity),
            (None, Some(expr), true) => Some(format!("generated always as ({expr}) stored")),
            (None, expr, _) => expr,
        };
        table.columns.push(Column {
            name: row.get(1),
            data_type: row.get(2),
            not_null: row.get(3),
            default,
        });
    }
    Ok(())
}

async fn read_primary_keys(client: &Client, schema: &mut Schema) -> Result<(), MigrateError> {
    let sql = format!(
        "SELECT {QUALIFIED}, con.conname::text, \
                ARRAY(SELECT a.attname::text FROM unnest(con.conkey) WITH ORDINALITY k(num, ord) \
                      JOIN pg_catalog.pg_attribute a ON a.attrelid = con.conrelid AND a.attnum = k.num \
                      ORDER BY k.ord) \
         FROM pg_catalog.pg_constraint con \
         JOIN pg_catalog.pg_class c ON c.oid = con.conrelid \
         JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace \
         WHERE con.contype = 'p' AND {USER_SCHEMA} AND {NOT_EXTENSION_MEMBER}"
    );
    for row in client.query(&sql, &[]).await.map_err(db_err)? {
        if let Some(table) = schema.tables.get_mut(&row.get::<_, String>(0)) {
            table.primary_key = Some(PrimaryKey {
                name: row.get(1),
                columns: row.get(2),
            });
        }
    }
    Ok(())
}

async fn read_indexes(client: &Client, schema: &mut Schema) -> Result<(), MigrateError> {
    let sql = format!(
        "SELECT {QUALIFIED}, i.relname::text, ix.indisunique, am.amname::text, \
                pg_catalog.pg_get_expr(ix.indpred, ix.indrelid), \
                pg_catalog.pg_get_indexdef(ix.indexrelid), \
                ARRAY(SELECT COALESCE(a.attname::text, '') \
                      FROM unnest(ix.indkey::int2[]) WITH ORDINALITY k(num, ord) \
                      LEFT JOIN pg_catalog.pg_attribute a ON a.attrelid = ix.indrelid AND a.attnum = k.num AND k.num > 0 \
                      WHERE k.ord <= ix.indnkeyatts ORDER BY k.ord), \
                ARRAY(SELECT pg_catalog.pg_get_indexdef(ix.indexrelid, k::int, true) \
                      FROM generate_series(1, ix.indnkeyatts) k ORDER BY k) \
         FROM pg_catalog.pg_index ix \
         JOIN pg_catalog.pg_class c ON c.oid = ix.indrelid \
         JOIN pg_catalog.pg_class i ON i.oid = ix.indexrelid \
         JOIN pg_catalog.pg_am am ON am.oid = i.relam \
         JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace \
         WHERE NOT ix.indisprimary AND c.relkind IN ('r', 'p', 'm') \
           AND {USER_SCHEMA} AND {NOT_EXTENSION_MEMBER} \
         ORDER BY 1, 2"
    );
    for row in client.query(&sql, &[]).await.map_err(db_err)? {
        let relation: String = row.get(0);
        let names: Vec<String> = row.get(6);
        let index = Index {
            name: row.get(1),
            columns: names
                .into_iter()
                .map(|n| (!n.is_empty()).then_some(n))
                .collect(),
            keys: row.get(7),
            unique: row.get(2),
            method: row.get(3),
            predicate: row.get(4),
            definition: row.get(5),
        };
        if let Some(table) = schema.tables.get_mut(&relation) {
            table.indexes.push(index);
        } else if let Some(view) = schema.views.get_mut(&relation) {
            view.indexes.push(index);
        }
    }
    Ok(())
}

async fn read_foreign_keys(client: &Client, schema: &mut Schema) -> Result<(), MigrateError> {
    let sql = format!(
        "SELECT {QUALIFIED}, con.conname::text, \
                ARRAY(SELECT a.attname::text FROM unnest(con.conkey) WITH ORDINALITY k(num, ord) \
                      JOIN pg_catalog.pg_attribute a ON a.attrelid = con.conrelid AND a.attnum = k.num \
                      ORDER BY k.ord), \
                CASE WHEN rn.nspname = 'public' THEN r.relname::text ELSE rn.nspname || '.' || r.relname END, \
                ARRAY(SELECT a.attname::text FROM unnest(con.confkey) WITH ORDINALITY k(num, ord) \
                      JOIN pg_catalog.pg_attribute a ON a.attrelid = con.confrelid AND a.attnum = k.num \
                      ORDER BY k.ord), \
                con.confdeltype::text, con.confupdtype::text \
         FROM pg_catalog.pg_constraint con \
         JOIN pg_catalog.pg_class c ON c.oid = con.conrelid \
         JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace \
         JOIN pg_catalog.pg_class r ON r.oid = con.confrelid \
         JOIN pg_catalog.pg_namespace rn ON rn.oid = r.relnamespace \
         WHERE con.contype = 'f' AND {USER_SCHEMA} AND {NOT_EXTENSION_MEMBER} \
         ORDER BY 1, 2"
    );
    for row in client.query(&sql, &[]).await.map_err(db_err)? {
        if let Some(table) = schema.tables.get_mut(&row.get::<_, String>(0)) {
            table.foreign_keys.push(ForeignKey {
                name: row.get(1),
                columns: row.get(2),
                referenced_table: row.get(3),
                referenced_columns: row.get(4),
                on_delete: fk_action(&row.get::<_, String>(5)).to_owned(),
                on_update: fk_action(&row.get::<_, String>(6)).to_owned(),
            });
        }
    }
    Ok(())
}

/// `pg_constraint.confdeltype`/`confupdtype` as SQL spells it.
fn fk_action(code: &str) -> &'static str {
    match code {
        "r" => "RESTRICT",
        "c" => "CASCADE",
        "n" => "SET NULL",
        "d" => "SET DEFAULT",
        _ => "NO ACTION",
    }
}

async fn read_enums(client: &Client, schema: &mut Schema) -> Result<(), MigrateError> {
    let sql = format!(
        "SELECT CASE WHEN n.nspname = 'public' THEN t.typname::text ELSE n.nspname || '.' || t.typname END, \
                array_agg(e.enumlabel::text ORDER BY e.enumsortorder) \
         FROM pg_catalog.pg_type t \
         JOIN pg_catalog.pg_enum e ON e.enumtypid = t.oid \
         JOIN pg_catalog.pg_namespace n ON n.oid = t.typnamespace \
         WHERE {USER_SCHEMA} \
           AND NOT EXISTS (SELECT 1 FROM pg_catalog.pg_depend dep \
                           WHERE dep.classid = 'pg_catalog.pg_type'::regclass AND dep.objid = t.oid AND dep.deptype = 'e') \
         GROUP BY 1"
    );
    for row in client.query(&sql, &[]).await.map_err(db_err)? {
        schema.enums.insert(row.get(0), row.get(1));
    }
    Ok(())
}

async fn read_extensions(client: &Client, schema: &mut Schema) -> Result<(), MigrateError> {
    // plpgsql is in every database from the start.
    let rows = client
        .query(
            "SELECT e.extname::text, e.extversion, n.nspname::text \
             FROM pg_catalog.pg_extension e JOIN pg_catalog.pg_namespace n ON n.oid = e.extnamespace \
             WHERE e.extname <> 'plpgsql'",
            &[],
        )
        .await
        .map_err(db_err)?;
    for row in rows {
        schema.extensions.insert(
            row.get(0),
            Extension {
                version: row.get(1),
                schema: row.get(2),
            },
        );
    }
    Ok(())
}
