//! `gcbb db`: the command line over `gcbb_migrate`. Its flags, what it prints (Prisma's lines,
//! on the streams Prisma uses) and its exit codes; nothing else. It reads the configuration once
//! (`MigrateConfig::from_env`), turns flags into what the library takes (a deploy plan, a
//! rehearsal), calls the library, and prints what comes back.
//!
//! One idea, kept in one file on purpose (over 600 lines): every `gcbb db` subcommand's flags and
//! output, side by side, so they stay consistent with each other and with Prisma's.

use std::io::{IsTerminal, Write};
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use chrono::Utc;
use gcbb::config::ConfigError;
use gcbb::db::DbConfig;
use gcbb_migrate::deploy::{self, Apply, DeployPlan, Step};
use gcbb_migrate::rehearse::{
    self, Budget, CopyMethod, Rehearsal, RehearseOptions, Source, SpeedBudget,
};
use gcbb_migrate::{
    backup, drift, files, lint, resolve_applied, resolve_rolled_back, revert, session, status,
    verify, DeployOutcome, MigrateConfig, MigrateError,
};

#[derive(Debug, clap::Args)]
pub struct DbArgs {
    /// Directory holding `<timestamp>_<name>/migration.sql` [default: $GCBB_MIGRATIONS_DIR, else
    /// migrations].
    #[arg(long, global = true)]
    pub migrations_dir: Option<PathBuf>,
    #[command(subcommand)]
    pub command: DbCommand,
}

#[derive(Debug, clap::Subcommand)]
pub enum DbCommand {
    /// Show which migrations are applied, pending or failed (exit 1 unless up to date).
    Status,
    /// Lint the pending migrations, then apply them.
    Deploy {
        /// Take a `pg_dump` backup first (`backups/<db>-<UTC time>.dump`).
        #[arg(long)]
        backup: bool,
        /// Rehearse the pending migrations on a scratch copy first, and apply them only when
        /// the rehearsal passes (the options below are those of `gcbb db rehearse`).
        #[arg(long)]
        rehearse: bool,
        #[command(flatten)]
        rehearsal: RehearseArgs,
    },
    /// Run the pending migrations on a scratch copy of the database, measure each statement
    /// (time, locks, rewrites, rows, index builds), verify, and judge them against a lock budget
    /// (exit 1 when over budget or failing). The database itself is only read.
    Rehearse {
        #[command(flatten)]
        rehearsal: RehearseArgs,
        /// Print the report as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Lint migration files (default: every migration); exit 1 on any error finding.
    Lint {
        /// Files or directories to lint.
        files: Vec<PathBuf>,
        /// Print the rule catalog instead.
        #[arg(long)]
        rules: bool,
    },
    /// Compare the database with its migration history replayed into SHADOW_DATABASE_URL
    /// (exit 0 when equal, 2 on drift).
    Drift {
        /// Print JSON instead of Prisma's summary.
        #[arg(long)]
        json: bool,
        /// Write `<dir>/<timestamp>_NAME/migration.sql` recording what was added by hand.
        #[arg(long, value_name = "NAME")]
        write_migration: Option<String>,
        /// Accept a shadow whose name lacks `shadow` or that holds a migration history (it is
        /// emptied). Never accepts the target database itself.
        #[arg(long)]
        force: bool,
    },
    /// Check that the objects exist and are valid and that hot queries use their indexes.
    Verify {
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Write a new migration that reverts an applied one, computed on SHADOW_DATABASE_URL (the
    /// history up to it against the history before it), linted, and checked on the shadow. A
    /// statement that destroys data written since needs `--allow RULE=REASON`; nothing is written
    /// without it.
    Revert {
        /// The applied migration to revert (its directory's name).
        migration: String,
        /// Why a statement breaking RULE is acceptable (written above it as `-- gcbb:allow RULE
        /// REASON`); once per rule.
        #[arg(long = "allow", value_name = "RULE=REASON", value_parser = revert::parse_allow)]
        allows: Vec<(String, String)>,
        /// Accept a shadow whose name lacks `shadow` or that holds a migration history (it is
        /// emptied). Never accepts the database itself.
        #[arg(long)]
        force: bool,
    },
    /// `pg_dump -Fc` of the database.
    Backup {
        /// Archive to write (default `backups/<db>-<UTC time>.dump`).
        #[arg(long, value_name = "FILE")]
        out: Option<PathBuf>,
    },
    /// Record a migration as applied or rolled back without running it.
    Resolve(ResolveArgs),
    /// Create `<dir>/<UTC timestamp>_<name>/migration.sql`.
    New {
        /// Name of the migration ([a-z0-9_]; anything else becomes `_`).
        name: String,
    },
    /// Insert the demo data into an empty database (what `gcbb dev` does on its first run) and
    /// refresh the dashboard's read model.
    Seed,
    /// Drop every schema of a LOCAL database and apply every migration.
    Reset {
        /// Don't ask for confirmation.
        #[arg(long)]
        force: bool,
    },
}

/// The options of a rehearsal (`gcbb db rehearse`, `gcbb db deploy --rehearse`). None has a clap
/// default, so `deploy` can tell that one was given without `--rehearse`.
#[derive(Debug, Clone, Default, clap::Args)]
pub struct RehearseArgs {
    /// Restore this `gcbb db backup` archive into the scratch copy instead of copying the
    /// database.
    #[arg(long, value_name = "FILE", conflicts_with_all = ["into", "copy"])]
    pub from_backup: Option<PathBuf>,
    /// Rehearse in this existing copy (a Neon branch made for it) instead of making one; it is
    /// left in place, holding the migrations. Refused when it is the database itself.
    #[arg(long, value_name = "URL", conflicts_with_all = ["schema_only", "scratch_server", "copy", "keep"])]
    pub into: Option<String>,
    /// Make a Neon branch of the database through Neon's API (NEON_API_KEY, NEON_PROJECT_ID;
    /// NEON_API_URL), rehearse in it, and delete it, also when the rehearsal fails or is
    /// interrupted.
    #[arg(long, conflicts_with_all = ["into", "from_backup", "schema_only", "scratch_server", "copy", "keep"])]
    pub neon_branch: bool,
    /// The branch id to branch from [default: the project's default branch].
    #[arg(long, value_name = "BRANCH_ID", requires = "neon_branch")]
    pub neon_parent: Option<String>,
    /// How to copy the database: auto (a template copy when it is local and idle, else
    /// pg_dump | pg_restore), template or dump.
    #[arg(long, value_enum)]
    pub copy: Option<CopyArg>,
    /// Copy the structure (and the migration history) only, for databases too big to copy:
    /// locks and rewrites are real, times are those of empty tables.
    #[arg(long)]
    pub schema_only: bool,
    /// A database of the server to make the scratch copy on (default: the database's own server,
    /// when it is local).
    #[arg(long, value_name = "URL")]
    pub scratch_server: Option<String>,
    /// Keep the scratch copy afterwards (its name is printed).
    #[arg(long)]
    pub keep: bool,
    /// Longest a query of the workload (production's hot reads and writes, run beside the
    /// migrations) may wait [default: 1000].
    #[arg(long, value_name = "MS")]
    pub max_blocked_ms: Option<u64>,
    /// Longest ACCESS EXCLUSIVE lock allowed on a table of --min-table-size or more [default: 300].
    #[arg(long, value_name = "MS")]
    pub max_lock_ms: Option<u64>,
    /// Longest write-blocking lock (SHARE, SHARE ROW EXCLUSIVE, EXCLUSIVE) allowed on such a
    /// table [default: 1000].
    #[arg(long, value_name = "MS")]
    pub max_write_lock_ms: Option<u64>,
    /// Tables smaller than this on the database are not judged (512kB, 1MB, 2GB) [default: 1MB].
    #[arg(long, value_name = "SIZE", value_parser = rehearse::parse_size)]
    pub min_table_size: Option<i64>,
    /// A hot query slower after the migrations than this many times its time before, and by
    /// --min-slowdown-ms, fails [default: 2].
    #[arg(long, value_name = "RATIO", value_parser = parse_ratio)]
    pub max_slowdown: Option<f64>,
    /// ... and by at least this many milliseconds [default: 5].
    #[arg(long, value_name = "MS")]
    pub min_slowdown_ms: Option<f64>,
    /// Reader sessions of the workload [default: 2].
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u16).range(1..=64))]
    pub readers: Option<u16>,
    /// Run the migrations without the workload beside them (nothing is judged on waits).
    #[arg(long, conflicts_with_all = ["readers", "max_blocked_ms"])]
    pub no_workload: bool,
}

/// `--copy`: [`CopyMethod`] as the command line spells it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum CopyArg {
    /// A template copy when the target is local and idle, else a dump and restore.
    Auto,
    /// `CREATE DATABASE … TEMPLATE target` only: the target must be on the scratch server and
    /// have no other session.
    Template,
    /// `pg_dump | pg_restore` only.
    Dump,
}

impl From<CopyArg> for CopyMethod {
    fn from(arg: CopyArg) -> CopyMethod {
        match arg {
            CopyArg::Auto => CopyMethod::Auto,
            CopyArg::Template => CopyMethod::Template,
            CopyArg::Dump => CopyMethod::Dump,
        }
    }
}

fn parse_ratio(raw: &str) -> Result<f64, String> {
    match raw.trim().parse::<f64>() {
        Ok(r) if r.is_finite() && r >= 1.0 => Ok(r),
        _ => Err(format!(
            "`{raw}` is not a ratio of 1 or more (examples: 2, 1.5)"
        )),
    }
}

impl RehearseArgs {
    fn is_empty(&self) -> bool {
        self.from_backup.is_none()
            && self.into.is_none()
            && !self.neon_branch
            && self.neon_parent.is_none()
            && self.copy.is_none()
            && !self.schema_only
            && self.scratch_server.is_none()
            && !self.keep
            && self.max_lock_ms.is_none()
            && self.max_write_lock_ms.is_none()
            && self.min_table_size.is_none()
            && self.max_blocked_ms.is_none()
            && self.max_slowdown.is_none()
            && self.min_slowdown_ms.is_none()
            && self.readers.is_none()
            && !self.no_workload
    }

    /// The rehearsal these flags ask for: in a Neon branch made for it, or on a copy.
    fn rehearsal(&self, config: &MigrateConfig) -> Result<Rehearsal, MigrateError> {
        let options = self.options(config)?;
        Ok(if self.neon_branch {
            Rehearsal::NeonBranch {
                options,
                neon: config.neon(self.neon_parent.clone())?,
            }
        } else {
            Rehearsal::Copy(options)
        })
    }

    /// The library's options; the shadow database, when configured, is the drift step's
    /// fallback.
    fn options(&self, config: &MigrateConfig) -> Result<RehearseOptions, MigrateError> {
        let url = |name: &'static str, raw: &str| {
            DbConfig::parse(raw.trim()).map_err(|e| {
                MigrateError::Config(ConfigError::Invalid {
                    name,
                    reason: e.to_string(),
                })
            })
        };
        let source = match (&self.from_backup, &self.into) {
            (Some(file), _) => Source::Backup(file.clone()),
            (None, Some(into)) => Source::Into(url("--into", into)?),
            (None, None) => Source::Target(self.copy.map(CopyMethod::from).unwrap_or_default()),
        };
        let defaults = Budget::default();
        Ok(RehearseOptions {
            source,
            schema_only: self.schema_only,
            keep: self.keep,
            budget: Budget {
                max_blocked_ms: self.max_blocked_ms.unwrap_or(defaults.max_blocked_ms),
                max_lock_ms: self.max_lock_ms.unwrap_or(defaults.max_lock_ms),
                max_write_lock_ms: self.max_write_lock_ms.unwrap_or(defaults.max_write_lock_ms),
                min_table_bytes: self.min_table_size.unwrap_or(defaults.min_table_bytes),
                speed: SpeedBudget {
                    max_slowdown: self.max_slowdown.unwrap_or(defaults.speed.max_slowdown),
                    min_slowdown_ms: self
                        .min_slowdown_ms
                        .unwrap_or(defaults.speed.min_slowdown_ms),
                },
            },
            workload: !self.no_workload,
            readers: self
                .readers
                .map_or(rehearse::workload::DEFAULT_READERS, usize::from),
            scratch_server: self
                .scratch_server
                .as_deref()
                .map(|raw| url("--scratch-server", raw))
                .transpose()?,
            shadow: config.shadow.clone(),
        })
    }
}

#[derive(Debug, clap::Args)]
#[group(required = true, multiple = false)]
pub struct ResolveArgs {
    /// Record NAME as applied (baseline an existing database, or after a manual hotfix).
    #[arg(long, value_name = "NAME")]
    pub applied: Option<String>,
    /// Mark NAME's failed row as rolled back, so `deploy` runs it again.
    #[arg(long, value_name = "NAME")]
    pub rolled_back: Option<String>,
}

/// Runs one `gcbb db` command; prints Prisma's lines and returns Prisma's exit code.
pub async fn run(args: DbArgs) -> ExitCode {
    let result = match MigrateConfig::from_env() {
        Ok(config) => {
            let dir = args
                .migrations_dir
                .unwrap_or_else(|| config.migrations_dir.clone());
            run_command(args.command, &config, &dir).await
        }
        Err(e) => Err(MigrateError::Config(e)),
    };
    match result {
        Ok(code) => code,
        Err(e) => {
            print_error(&e);
            match e {
                // As a shell reports a process ended by SIGINT.
                MigrateError::Interrupted(_) => ExitCode::from(130),
                _ => ExitCode::FAILURE,
            }
        }
    }
}

fn print_error(e: &MigrateError) {
    let mut err = std::io::stderr().lock();
    let _ = match e.code() {
        Some(code) => writeln!(err, "\nError: {code}\n\n{e}\n"),
        None => writeln!(err, "\nError: {e}\n"),
    };
}

fn print_out(s: &str) {
    let mut out = std::io::stdout().lock();
    let _ = out.write_all(s.as_bytes());
    let _ = out.flush();
}

fn print_err(s: &str) {
    let _ = std::io::stderr().lock().write_all(s.as_bytes());
}

fn print_json(value: &impl serde::Serialize) {
    print_out(&format!(
        "{}\n",
        serde_json::to_string_pretty(value).unwrap_or_default()
    ));
}

/// The database to migrate, warning when only a pooled (PgBouncer) URL is available.
fn migration_database(config: &MigrateConfig) -> Result<DbConfig, MigrateError> {
    let database = config.database()?;
    if let Some(warning) = database.pooler_warning() {
        print_err(&format!("{warning}\n"));
    }
    Ok(database.db.clone())
}

async fn run_command(
    command: DbCommand,
    config: &MigrateConfig,
    dir: &Path,
) -> Result<ExitCode, MigrateError> {
    let dir_display = dir.display().to_string();
    let dir_display = dir_display.as_str();
    match command {
        DbCommand::New { name } => {
            let path = files::create_migration(dir, &name, Utc::now())?;
            print_out(&format!("Created {}\n", path.display()));
            Ok(ExitCode::SUCCESS)
        }
        DbCommand::Seed => {
            let db = migration_database(config)?;
            let system_user_id = std::env::var("SYSTEM_USER_ID")
                .ok()
                .filter(|v| !v.trim().is_empty())
                .unwrap_or_else(|| gcbb::config::DEFAULT_SYSTEM_USER_ID.to_owned());
            let client = session::connect(&db).await?;
            let inserted = crate::demo::insert_demo_data_if_empty(&client, &system_user_id)
                .await
                .map_err(|e| MigrateError::Database(e.to_string()))?;
            print_out(if inserted {
                "Demo data inserted; the dashboard's read model is refreshed.\n"
            } else {
                "The database already holds companions; demo data not inserted.\n"
            });
            Ok(ExitCode::SUCCESS)
        }
        DbCommand::Status => {
            let db = migration_database(config)?;
            let diagnosis = status::status(&db, dir).await?;
            let report = status::render_status(&diagnosis, dir_display);
            print_err(&report.stderr);
            print_out(&report.stdout);
            Ok(ExitCode::from(report.exit_code))
        }
        DbCommand::Deploy {
            backup,
            rehearse,
            rehearsal,
        } => {
            if !rehearse && !rehearsal.is_empty() {
                return Err(MigrateError::RehearseRefused(
                    "rehearsal options were given without --rehearse".to_owned(),
                ));
            }
            let plan = DeployPlan {
                settings: config.settings.clone(),
                rehearse: rehearse.then(|| rehearsal.rehearsal(config)).transpose()?,
                backup: backup.then(deploy::Backup::default),
                apply: Apply::Pending,
                ..DeployPlan::new(migration_database(config)?, dir)
            };
            match deploy::run(&plan, |step| print_deploy_step(step, dir_display)).await {
                Ok(outcome) => {
                    print_deploy_outcome(&outcome, dir_display);
                    Ok(ExitCode::SUCCESS)
                }
                // The report above says why; this line says what it means.
                Err(e @ MigrateError::RehearsalFailed { .. }) => {
                    print_err(&format!("\nError: {e}\n"));
                    Ok(ExitCode::FAILURE)
                }
                Err(e) => Err(e),
            }
        }
        DbCommand::Resolve(r) => {
            let db = migration_database(config)?;
            if let Some(name) = r.applied {
                resolve_applied(&db, dir, &name, &config.settings).await?;
                print_out(&format!("\nMigration {name} marked as applied.\n"));
            } else if let Some(name) = r.rolled_back {
                resolve_rolled_back(&db, dir, &name, &config.settings).await?;
                print_out(&format!("\nMigration {name} marked as rolled back.\n"));
            }
            Ok(ExitCode::SUCCESS)
        }
        DbCommand::Lint { files, rules } => Ok(run_lint(files, rules, dir)),
        DbCommand::Drift {
            json,
            write_migration,
            force,
        } => {
            let db = migration_database(config)?;
            let (report, target) = drift::drift(&db, config.shadow()?, dir, force).await?;
            if json {
                print_json(&report);
            } else {
                print_out(&format!("{}\n", report.summary));
            }
            if let Some(name) = write_migration {
                if report.drift {
                    let path =
                        drift::write_migration(dir, &name, &report.steps, &target, Utc::now())?;
                    let dir_name = path
                        .parent()
                        .and_then(|p| p.file_name())
                        .map(|n| n.to_string_lossy().into_owned())
                        .unwrap_or_default();
                    print_err(&format!(
                        "\nWrote {}\nReview it, then record it on this database: gcbb db resolve --applied {dir_name}\n",
                        path.display()
                    ));
                } else {
                    print_err("\nNo drift: no migration written.\n");
                }
            }
            Ok(ExitCode::from(if report.drift { 2 } else { 0 }))
        }
        DbCommand::Rehearse { rehearsal, json } => {
            let db = migration_database(config)?;
            let report = rehearsal
                .rehearsal(config)?
                .run(&db, dir, &config.settings)
                .await?;
            if json {
                print_json(&report);
            } else {
                print_out(&rehearse::render_text(&report));
            }
            Ok(if report.passed() {
                ExitCode::SUCCESS
            } else {
                ExitCode::FAILURE
            })
        }
        DbCommand::Verify { json } => {
            let db = migration_database(config)?;
            let report = verify::verify(&db, dir).await?;
            if json {
                print_json(&report);
            } else {
                for name in &report.passed {
                    print_out(&format!("ok: {name}\n"));
                }
                for p in &report.problems {
                    print_err(&format!("error: {p}\n"));
                }
                if report.is_ok() {
                    print_out(
                        "\nDatabase verified: objects valid, hot queries use their indexes.\n",
                    );
                }
            }
            Ok(if report.is_ok() {
                ExitCode::SUCCESS
            } else {
                ExitCode::FAILURE
            })
        }
        DbCommand::Revert {
            migration,
            allows,
            force,
        } => {
            let db = migration_database(config)?;
            let shadow = config.shadow()?;
            let options = revert::RevertOptions { allows, force };
            let computed =
                revert::revert(&db, shadow, dir, &migration, &options, Utc::now()).await?;
            print_out(&format!(
                "Computed on the shadow database {}: the history up to {migration}, turned back into \
                 the history before it, then checked there on top of the whole history.\n\nThe revert:\n",
                shadow.redacted()
            ));
            for statement in &computed.statements {
                print_out(&format!("  {statement}\n"));
            }
            for w in &computed.warnings {
                print_err(&format!("{w}\n"));
            }
            for note in &computed.notes {
                print_err(&format!("note: {note}\n"));
            }
            let written = revert::write(dir, &computed)?;
            print_out("\n");
            for path in &written {
                print_out(&format!("Wrote {}\n", path.display()));
            }
            print_out(
                "\nReview them, then deploy them like any migration (gcbb db deploy --rehearse to see what \
                 they cost first).\n",
            );
            Ok(ExitCode::SUCCESS)
        }
        DbCommand::Backup { out } => {
            let db = migration_database(config)?;
            let out = out.unwrap_or_else(|| backup::default_backup_path(&db.dbname, Utc::now()));
            let path = backup::backup(&db, &out).await?;
            print_out(&format!("Backup written to {}\n", path.display()));
            Ok(ExitCode::SUCCESS)
        }
        DbCommand::Reset { force } => {
            let db = migration_database(config)?;
            if !db.is_local() {
                return Err(MigrateError::ResetRemote {
                    host: db.host.clone(),
                });
            }
            if !force && !confirm_reset(&db) {
                return Err(MigrateError::ResetNotConfirmed);
            }
            let plan = DeployPlan {
                settings: config.settings.clone(),
                apply: Apply::ResetAll,
                ..DeployPlan::new(db.clone(), dir)
            };
            // Reset prints its lint warnings nowhere, as before: only the found line.
            let outcome = deploy::run(&plan, |step| {
                if let Step::Found { .. } = step {
                    print_deploy_step(step, dir_display);
                }
            })
            .await?;
            print_out(&format!("\nDatabase reset successful: {}\n", db.redacted()));
            print_deploy_outcome(&outcome, dir_display);
            Ok(ExitCode::SUCCESS)
        }
    }
}

/// What `gcbb db deploy` prints as the plan's steps happen.
fn print_deploy_step(step: Step<'_>, dir_display: &str) {
    match step {
        Step::Found { migrations } => print_out(&status::found_line(migrations, dir_display)),
        // Errors are printed with the refusal that follows.
        Step::Linted { findings } => {
            for f in findings.iter().filter(|f| !f.is_error()) {
                print_err(&format!("{f}\n"));
            }
        }
        Step::Rehearsed { report } => {
            print_out("\n");
            print_out(&rehearse::render_text(report));
            if report.passed() && !report.nothing_to_rehearse() {
                print_out("\nThe rehearsal passed: deploying.\n");
            }
        }
        Step::BackedUp { path } => {
            print_out(&format!("\nBackup written to {}\n", path.display()));
        }
    }
}

/// `gcbb db lint`: exit 1 on an error finding or an unreadable file, 0 with warnings only.
fn run_lint(files: Vec<PathBuf>, rules: bool, dir: &Path) -> ExitCode {
    if rules {
        for rule in lint::RULES {
            print_out(&format!("{rule}\n\n"));
        }
        return ExitCode::SUCCESS;
    }
    let paths = if files.is_empty() {
        vec![dir.to_path_buf()]
    } else {
        files
    };
    match lint::lint_paths(&paths, &lint::LintContext::default()) {
        Ok(findings) => {
            for f in &findings {
                print_out(&format!("{f}\n\n"));
            }
            let errors = findings.iter().filter(|f| f.is_error()).count();
            print_out(&format!(
                "{errors} error(s), {} warning(s)\n",
                findings.len() - errors
            ));
            if errors > 0 {
                ExitCode::FAILURE
            } else {
                ExitCode::SUCCESS
            }
        }
        Err(e) => {
            print_err(&format!("\nError: {e}\n"));
            ExitCode::FAILURE
        }
    }
}

fn print_deploy_outcome(outcome: &DeployOutcome, dir_display: &str) {
    for wait in &outcome.lock_waits {
        print_err(&format!("warning: {wait}\n"));
    }
    for name in &outcome.modified {
        print_err(&status::modified_warning(name));
    }
    if !outcome.missing_locally.is_empty() {
        print_err(&format!(
            "warning: The migration{} from the database are not found locally in {dir_display}:\n{}\n",
            if outcome.missing_locally.len() > 1 { "s" } else { "" },
            outcome.missing_locally.join("\n")
        ));
    }
    print_out(&status::render_deploy_success(&outcome.applied));
}

/// Asks on a terminal; anything but y/yes (or no terminal at all) means no.
fn confirm_reset(db: &DbConfig) -> bool {
    if !std::io::stdin().is_terminal() {
        return false;
    }
    print_out(&format!(
        "Are you sure you want to reset the database `{}`? All data will be lost. [y/N] ",
        db.redacted()
    ));
    let mut answer = String::new();
    if std::io::stdin().read_line(&mut answer).is_err() {
        return false;
    }
    matches!(answer.trim().to_ascii_lowercase().as_str(), "y" | "yes")
}
