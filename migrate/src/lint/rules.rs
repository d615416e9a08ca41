//! The rule catalog as data: every rule the linter can report, with why it matters and the safe
//! rewrite, so `gcbb db lint --rules` can print it and findings can quote it.

use std::fmt;

/// How bad a finding is: errors stop `gcbb db deploy`, warnings are printed and let it go on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Severity {
    Warning,
    Error,
}

impl fmt::Display for Severity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Severity::Warning => "warning",
            Severity::Error => "error",
        })
    }
}

/// One rule of the catalog.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rule {
    /// Kebab-case id, used in findings and in `-- gcbb:allow <id> <reason>`.
    pub id: &'static str,
    pub severity: Severity,
    /// One line: what the rule flags.
    pub summary: &'static str,
    /// Why the flagged statement hurts production.
    pub why: &'static str,
    /// The safe rewrite.
    pub fix: &'static str,
}

impl fmt::Display for Rule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "{} ({}): {}", self.id, self.severity, self.summary)?;
        writeln!(f, "    why: {}", self.why)?;
        write!(f, "    fix: {}", self.fix)
    }
}

const fn error(
    id: &'static str,
    summary: &'static str,
    why: &'static str,
    fix: &'static str,
) -> Rule {
    Rule {
        id,
        severity: Severity::Error,
        summary,
        why,
        fix,
    }
}

const fn warning(
    id: &'static str,
    summary: &'static str,
    why: &'static str,
    fix: &'static str,
) -> Rule {
    Rule {
        id,
        severity: Severity::Warning,
        summary,
        why,
        fix,
    }
}

pub const DROP_TABLE: &str = "drop-table";
pub const DROP_COLUMN: &str = "drop-column";
pub const DROP_SCHEMA: &str = "drop-schema";
pub const DROP_MATERIALIZED_VIEW: &str = "drop-materialized-view";
pub const DROP_VIEW: &str = "drop-view";
pub const DROP_TYPE: &str = "drop-type";
pub const TRUNCATE: &str = "truncate";
pub const RENAME_TABLE: &str = "rename-table";
pub const RENAME_COLUMN: &str = "rename-column";
pub const ALTER_COLUMN_TYPE: &str = "alter-column-type";
pub const SET_NOT_NULL: &str = "set-not-null";
pub const ADD_COLUMN_NOT_NULL_WITHOUT_DEFAULT: &str = "add-column-not-null-without-default";
pub const DELETE_WITHOUT_WHERE: &str = "delete-without-where";
pub const UPDATE_WITHOUT_WHERE: &str = "update-without-where";
pub const CREATE_INDEX_NOT_CONCURRENTLY: &str = "create-index-not-concurrently";
pub const DROP_INDEX_NOT_CONCURRENTLY: &str = "drop-index-not-concurrently";
pub const FOREIGN_KEY_WITHOUT_NOT_VALID: &str = "foreign-key-without-not-valid";
pub const CHECK_WITHOUT_NOT_VALID: &str = "check-without-not-valid";
pub const UNIQUE_CONSTRAINT_NOT_USING_INDEX: &str = "unique-constraint-not-using-index";
pub const VOLATILE_DEFAULT: &str = "volatile-default";
pub const REFRESH_MATERIALIZED_VIEW_NOT_CONCURRENTLY: &str =
    "refresh-materialized-view-not-concurrently";
pub const VACUUM_FULL: &str = "vacuum-full";
pub const CLUSTER: &str = "cluster";
pub const INDEX_WITHOUT_IF_NOT_EXISTS: &str = "index-without-if-not-exists";
pub const TRANSACTION_CONTROL_IN_FILE: &str = "transaction-control-in-file";
pub const CONCURRENTLY_MIXED_WITH_OTHER_STATEMENTS: &str =
    "concurrently-mixed-with-other-statements";
pub const ALLOW_WITHOUT_REASON: &str = "allow-without-reason";
pub const UNKNOWN_RULE: &str = "unknown-rule";
pub const UNUSED_ALLOW: &str = "unused-allow";

/// Rules about the allow comments themselves: they are checked after allows are applied, so no
/// allow can silence them.
pub const META_RULES: &[&str] = &[ALLOW_WITHOUT_REASON, UNKNOWN_RULE, UNUSED_ALLOW];

const EXPAND_CONTRACT: &str =
    "expand and contract: deploy code that no longer reads or writes it, \
then remove it in a later migration whose line above carries `-- gcbb:allow <rule> <reason>`";

/// Every rule, in the order `gcbb db lint --rules` prints them.
pub const RULES: &[Rule] = &[
    // Destructive: data or a name running code depends on goes away.
    error(
        DROP_TABLE,
        "DROP TABLE of a table this file did not create",
        "the rows are gone for good, and the code still deployed (and Prisma clients) fail on the missing table",
        EXPAND_CONTRACT,
    ),
    error(
        DROP_COLUMN,
        "ALTER TABLE … DROP COLUMN on an existing table",
        "the data is gone for good, and deployed code that selects or inserts the column fails",
        "mark the field optional and stop using it in code first (the seed's rule); drop it in a later migration with `-- gcbb:allow drop-column <reason>`",
    ),
    error(
        DROP_SCHEMA,
        "DROP SCHEMA",
        "drops every table, view and function in it (with CASCADE) or fails half-way",
        "drop the objects one by one in migrations that each say why; never drop a schema in a deploy",
    ),
    error(
        DROP_MATERIALIZED_VIEW,
        "DROP MATERIALIZED VIEW of a view this file did not create",
        "queries reading the view fail until the code stops using it; rebuilding it is a full scan",
        EXPAND_CONTRACT,
    ),
    error(
        DROP_VIEW,
        "DROP VIEW of a view this file did not create",
        "queries reading the view fail until the code stops using it",
        EXPAND_CONTRACT,
    ),
    error(
        DROP_TYPE,
        "DROP TYPE / DROP DOMAIN",
        "columns of that type block the drop, or are dropped with it under CASCADE",
        EXPAND_CONTRACT,
    ),
    error(
        TRUNCATE,
        "TRUNCATE of a table this file did not create",
        "removes every row under an ACCESS EXCLUSIVE lock; the data is gone for good",
        "delete the rows you mean with a WHERE clause, in batches (`DELETE … WHERE id IN (SELECT id … LIMIT 1000)`)",
    ),
    error(
        RENAME_TABLE,
        "ALTER TABLE/VIEW … RENAME TO on an existing relation",
        "deployed code (and Prisma's client) still uses the old name and fails the moment the migration commits",
        "create the new table, write to both, backfill, switch reads, then drop the old one later; or rename and `CREATE VIEW old_name AS SELECT * FROM new_name` in the same migration (allowed with a reason)",
    ),
    error(
        RENAME_COLUMN,
        "ALTER TABLE … RENAME COLUMN on an existing table",
        "deployed code still uses the old column name and fails the moment the migration commits",
        "add the new column, write to both, backfill, switch reads, drop the old column in a later migration",
    ),
    error(
        ALTER_COLUMN_TYPE,
        "ALTER TABLE … ALTER COLUMN … TYPE on an existing table",
        "most type changes rewrite the whole table and its indexes under an ACCESS EXCLUSIVE lock, blocking reads and writes",
        "add a column of the new type, backfill in batches, switch the code, drop the old column later (or allow it with a reason when the change is binary-compatible, e.g. widening varchar)",
    ),
    error(
        SET_NOT_NULL,
        "ALTER COLUMN … SET NOT NULL on an existing table",
        "scans the whole table under an ACCESS EXCLUSIVE lock to prove no NULLs, blocking reads and writes",
        "`ADD CONSTRAINT c CHECK (col IS NOT NULL) NOT VALID`; `VALIDATE CONSTRAINT c` (no exclusive lock); then SET NOT NULL (uses the valid check, no scan) and drop the check",
    ),
    error(
        ADD_COLUMN_NOT_NULL_WITHOUT_DEFAULT,
        "ADD COLUMN … NOT NULL without a DEFAULT on an existing table",
        "fails on any table with rows, so the deploy breaks in production even though it passed on an empty database",
        "add the column with a constant DEFAULT (cheap since PostgreSQL 11), or add it nullable, backfill, then set NOT NULL the safe way",
    ),
    error(
        DELETE_WITHOUT_WHERE,
        "DELETE without WHERE on a table this file did not create",
        "removes every row of a production table",
        "add the WHERE clause that names the rows you mean, and batch large deletes",
    ),
    error(
        UPDATE_WITHOUT_WHERE,
        "UPDATE without WHERE on a table this file did not create",
        "rewrites every row in one transaction: overwrites data and holds row locks on the whole table",
        "add a WHERE clause; backfill large tables in batches (`WHERE id IN (SELECT id … LIMIT 1000)`) outside the schema migration",
    ),
    // Long locks on existing tables.
    error(
        CREATE_INDEX_NOT_CONCURRENTLY,
        "CREATE INDEX without CONCURRENTLY on an existing table",
        "holds a SHARE lock for the whole build: every INSERT/UPDATE/DELETE on the table waits",
        "`CREATE INDEX CONCURRENTLY IF NOT EXISTS …` alone in its own migration file (it cannot run in a transaction)",
    ),
    error(
        DROP_INDEX_NOT_CONCURRENTLY,
        "DROP INDEX without CONCURRENTLY",
        "takes an ACCESS EXCLUSIVE lock on the index's table, queued behind every running query",
        "`DROP INDEX CONCURRENTLY IF EXISTS …` alone in its own migration file",
    ),
    error(
        FOREIGN_KEY_WITHOUT_NOT_VALID,
        "FOREIGN KEY added to an existing table without NOT VALID",
        "validating scans the whole table while holding SHARE ROW EXCLUSIVE locks on both tables, blocking writes",
        "`ADD CONSTRAINT … FOREIGN KEY … NOT VALID`, then `VALIDATE CONSTRAINT …` in a later statement (it takes only SHARE UPDATE EXCLUSIVE)",
    ),
    error(
        CHECK_WITHOUT_NOT_VALID,
        "CHECK constraint added to an existing table without NOT VALID",
        "validating scans the whole table under an ACCESS EXCLUSIVE lock",
        "`ADD CONSTRAINT … CHECK (…) NOT VALID`, then `VALIDATE CONSTRAINT …` in a later statement",
    ),
    error(
        UNIQUE_CONSTRAINT_NOT_USING_INDEX,
        "UNIQUE / PRIMARY KEY added to an existing table without USING INDEX",
        "builds the index under an ACCESS EXCLUSIVE lock: no reads or writes for the whole build",
        "`CREATE UNIQUE INDEX CONCURRENTLY …` in its own migration, then `ADD CONSTRAINT … UNIQUE USING INDEX …`",
    ),
    error(
        VOLATILE_DEFAULT,
        "ADD COLUMN whose value is computed per row (volatile DEFAULT such as random()/gen_random_uuid()/clock_timestamp()/nextval(), serial, identity, stored generated) on an existing table",
        "the whole table is rewritten under an ACCESS EXCLUSIVE lock; constant and stable defaults (now(), CURRENT_TIMESTAMP) are stored once and cost nothing",
        "add the column with no default or a constant one, set the volatile DEFAULT afterwards (`ALTER COLUMN … SET DEFAULT`, only new rows), backfill old rows in batches",
    ),
    error(
        REFRESH_MATERIALIZED_VIEW_NOT_CONCURRENTLY,
        "REFRESH MATERIALIZED VIEW without CONCURRENTLY on a view this file did not create",
        "holds an ACCESS EXCLUSIVE lock on the view for the whole refresh: every reader waits",
        "give the view a unique index and `REFRESH MATERIALIZED VIEW CONCURRENTLY …`",
    ),
    error(
        VACUUM_FULL,
        "VACUUM FULL",
        "rewrites the table under an ACCESS EXCLUSIVE lock, and cannot run inside a migration transaction",
        "let autovacuum work; if the table really is bloated, use pg_repack outside a migration",
    ),
    error(
        CLUSTER,
        "CLUSTER",
        "rewrites the table under an ACCESS EXCLUSIVE lock",
        "don't reorder tables in a migration; use pg_repack outside a deploy if you must",
    ),
    // Hygiene.
    warning(
        INDEX_WITHOUT_IF_NOT_EXISTS,
        "CREATE INDEX on an existing table without IF NOT EXISTS",
        "indexes on live tables get added by hand (the seed's drift); without IF NOT EXISTS the deploy fails with \"already exists\". A warning, not an error: the failure is loud and harms nothing",
        "`CREATE INDEX CONCURRENTLY IF NOT EXISTS …`",
    ),
    error(
        TRANSACTION_CONTROL_IN_FILE,
        "BEGIN / COMMIT / ROLLBACK / SAVEPOINT inside a migration file",
        "the runner (and Prisma) own the transaction: a COMMIT inside the file commits half a migration, and the failed-migration record no longer matches what was applied",
        "remove the transaction statements; put statements that must not share a transaction in separate migration files",
    ),
    error(
        CONCURRENTLY_MIXED_WITH_OTHER_STATEMENTS,
        "a statement that cannot run in a transaction (CREATE/DROP/REINDEX … CONCURRENTLY, VACUUM) in a file with other statements",
        "Prisma sends a file as one batch, which runs as an implicit transaction, so the statement fails with \"cannot run inside a transaction block\"",
        "move the statement into its own migration file, alone",
    ),
    error(
        ALLOW_WITHOUT_REASON,
        "`-- gcbb:allow <rule>` without a reason",
        "an exception nobody can explain later is a trap; an allow without a reason silences nothing",
        "write why it is safe: `-- gcbb:allow <rule-id> <reason>`",
    ),
    error(
        UNKNOWN_RULE,
        "`-- gcbb:allow` naming a rule that does not exist",
        "a misspelt allow silences nothing, and the statement it was meant for is probably still flagged",
        "use an id from `gcbb db lint --rules`",
    ),
    warning(
        UNUSED_ALLOW,
        "`-- gcbb:allow` that silences nothing",
        "either it is not on the lines right above a statement (a blank line breaks the link), or the statement no longer breaks that rule",
        "put the allow directly above the statement it is for, or delete it",
    ),
];

/// Looks a rule up by id.
pub fn find_rule(id: &str) -> Option<&'static Rule> {
    RULES.iter().find(|rule| rule.id == id)
}
