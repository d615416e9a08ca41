//! Migration directories of a test's own: copies of the project's migrations (all, up to one,
//! or the named ones) plus the test's extra files, removed when dropped.

use std::path::{Path, PathBuf};

use crate::db::migration_names;
use crate::{migrations_dir, ScratchDir};

/// A temporary migrations directory; `path` is what `--migrations-dir` is given.
pub struct MigrationsDir {
    pub path: PathBuf,
    _dir: ScratchDir,
}

impl MigrationsDir {
    /// An empty one.
    pub fn empty() -> MigrationsDir {
        let dir = ScratchDir::new("gcbb_migrations");
        MigrationsDir {
            path: dir.path.clone(),
            _dir: dir,
        }
    }

    /// The project's migrations plus `extra` (name, SQL).
    pub fn with(extra: &[(&str, &str)]) -> MigrationsDir {
        MigrationsDir::of_project(project_migration_names(), extra)
    }

    /// The project's migrations up to `until` (included) plus `extra`.
    pub fn up_to(until: &str, extra: &[(&str, &str)]) -> MigrationsDir {
        let names = project_migration_names()
            .into_iter()
            .filter(|n| n.as_str() <= until);
        MigrationsDir::of_project(names, extra)
    }

    /// Only the named project migrations.
    pub fn with_project<S: AsRef<str>>(names: &[S]) -> MigrationsDir {
        MigrationsDir::of_project(names.iter().map(|n| n.as_ref().to_owned()), &[])
    }

    fn of_project(
        names: impl IntoIterator<Item = String>,
        extra: &[(&str, &str)],
    ) -> MigrationsDir {
        let dir = MigrationsDir::empty();
        for name in names {
            let to = dir.path.join(&name);
            std::fs::create_dir_all(&to).expect("create a migration dir");
            std::fs::copy(
                migrations_dir().join(&name).join("migration.sql"),
                to.join("migration.sql"),
            )
            .expect("copy a migration");
        }
        for (name, sql) in extra {
            dir.write(name, sql);
        }
        dir
    }

    /// Writes migration `name`; returns its file.
    pub fn write(&self, name: &str, sql: &str) -> PathBuf {
        let file = self.file(name);
        std::fs::create_dir_all(self.path.join(name)).expect("create a migration dir");
        std::fs::write(&file, sql).expect("write a migration");
        file
    }

    /// The `migration.sql` of migration `name`.
    pub fn file(&self, name: &str) -> PathBuf {
        self.path.join(name).join("migration.sql")
    }

    /// Every entry's name, in order (a folder without a `migration.sql` too).
    pub fn names(&self) -> Vec<String> {
        let mut names: Vec<String> = std::fs::read_dir(&self.path)
            .expect("read the directory")
            .filter_map(Result::ok)
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        names
    }

    /// The SQL of migration `name`.
    pub fn sql(&self, name: &str) -> String {
        std::fs::read_to_string(self.file(name)).expect("read a migration")
    }
}

impl AsRef<Path> for MigrationsDir {
    fn as_ref(&self) -> &Path {
        &self.path
    }
}

/// The project's migration names, in order.
pub fn project_migration_names() -> Vec<String> {
    migration_names(&migrations_dir())
}
