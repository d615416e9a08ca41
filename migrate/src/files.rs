//! The migrations directory on disk: one `<name>/migration.sql` per migration, ordered by name,
//! their checksums (Prisma's: lowercase hex SHA-256 of the file bytes), and new migration files.

use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};

use super::error::MigrateError;

/// The file inside each migration directory.
pub const MIGRATION_FILE: &str = "migration.sql";

/// One migration directory as found on disk.
#[derive(Debug, Clone)]
pub struct LocalMigration {
    pub name: String,
    pub path: PathBuf,
    pub script: String,
    pub checksum: String,
}

impl LocalMigration {
    /// True when `stored` is this file's checksum, also across a CRLF/LF conversion of the file
    /// (git's autocrlf on Windows), which Prisma accepts too.
    pub fn matches_checksum(&self, stored: &str) -> bool {
        script_matches_checksum(&self.script, stored)
    }
}

/// Lowercase hex SHA-256 of the bytes.
pub fn checksum(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

/// Prisma's rule: equal checksums, or equal after converting the line endings one way or the other.
pub fn script_matches_checksum(script: &str, stored: &str) -> bool {
    let stored = stored.trim();
    if checksum(script.as_bytes()) == stored {
        return true;
    }
    let lf = script.replace("\r\n", "\n");
    if checksum(lf.as_bytes()) == stored {
        return true;
    }
    let crlf = lf.replace('\n', "\r\n");
    checksum(crlf.as_bytes()) == stored
}

/// Every migration of `dir`, sorted by directory name (the timestamp prefix orders them).
/// Directories without a `migration.sql` are skipped, as Prisma does; a missing `dir` is an error.
pub fn load_migrations(dir: &Path) -> Result<Vec<LocalMigration>, MigrateError> {
    let entries = std::fs::read_dir(dir).map_err(|e| MigrateError::Files {
        path: dir.to_path_buf(),
        message: e.to_string(),
    })?;
    let mut out = Vec::new();
    for entry in entries {
        let entry = entry.map_err(|e| MigrateError::Files {
            path: dir.to_path_buf(),
            message: e.to_string(),
        })?;
        let path = entry.path();
        if !path.is_dir() {
            continue;
        }
        let file = path.join(MIGRATION_FILE);
        if !file.is_file() {
            continue;
        }
        let Some(name) = path.file_name().and_then(|n| n.to_str()).map(str::to_owned) else {
            continue;
        };
        let bytes = std::fs::read(&file).map_err(|e| MigrateError::Files {
            path: file.clone(),
            message: e.to_string(),
        })?;
        let checksum = checksum(&bytes);
        let script = String::from_utf8(bytes).map_err(|_| MigrateError::Files {
            path: file.clone(),
            message: "not valid UTF-8".into(),
        })?;
        out.push(LocalMigration {
            name,
            path: file,
            script,
            checksum,
        });
    }
    out.sort_by(|a, b| a.name.cmp(&b.name));
    Ok(out)
}

/// Lowercases `raw` and keeps `[a-z0-9_]`, turning every other run of characters into one `_`.
/// `None` when nothing is left.
pub fn sanitize_name(raw: &str) -> Option<String> {
    let mut out = String::new();
    for c in raw.chars().flat_map(char::to_lowercase) {
        if c.is_ascii_lowercase() || c.is_ascii_digit() {
            out.push(c);
        } else if !out.ends_with('_') {
            out.push('_');
        }
    }
    let trimmed = out.trim_matches('_').to_owned();
    (!trimmed.is_empty()).then_some(trimmed)
}

/// Creates `<dir>/<UTC yyyymmddHHMMSS>_<name>/migration.sql` with a header and returns its path.
pub fn create_migration(
    dir: &Path,
    raw_name: &str,
    now: chrono::DateTime<chrono::Utc>,
) -> Result<PathBuf, MigrateError> {
    let name = sanitize_name(raw_name).ok_or(MigrateError::InvalidName)?;
    let full = format!("{}_{}", now.format("%Y%m%d%H%M%S"), name);
    let mig_dir = dir.join(&full);
    let io = |path: &Path, e: std::io::Error| MigrateError::Files {
        path: path.to_path_buf(),
        message: e.to_string(),
    };
    std::fs::create_dir_all(dir).map_err(|e| io(dir, e))?;
    std::fs::create_dir(&mig_dir).map_err(|e| io(&mig_dir, e))?;
    let file = mig_dir.join(MIGRATION_FILE);
    let header = format!(
        "-- Migration {full}, created by `gcbb db new` at {}.\n\
         -- `gcbb db deploy` and `prisma migrate deploy` run this file in one transaction. A\n\
         -- CREATE INDEX CONCURRENTLY (or another statement that cannot run in a transaction) must be\n\
         -- the only statement of its file. Never edit this file once it has been applied.\n\n",
        now.format("%Y-%m-%d %H:%M:%S UTC")
    );
    std::fs::write(&file, header).map_err(|e| io(&file, e))?;
    Ok(file)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_checksum_is_lowercase_hex_sha256_of_the_bytes() {
        assert_eq!(
            checksum(b"abc"),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
    }

    #[test]
    fn a_file_matches_its_own_checksum() {
        let sql = "CREATE TABLE a (id int);\n";
        assert!(script_matches_checksum(sql, &checksum(sql.as_bytes())));
    }

    #[test]
    fn a_crlf_checkout_matches_the_lf_checksum_and_the_other_way_round() {
        let lf = "CREATE TABLE a (id int);\nCREATE TABLE b (id int);\n";
        let crlf = lf.replace('\n', "\r\n");
        assert!(script_matches_checksum(&crlf, &checksum(lf.as_bytes())));
        assert!(script_matches_checksum(lf, &checksum(crlf.as_bytes())));
    }

    #[test]
    fn an_edited_file_does_not_match() {
        let lf = "CREATE TABLE a (id int);\n";
        assert!(!script_matches_checksum(
            "CREATE TABLE a (id bigint);\n",
            &checksum(lf.as_bytes())
        ));
        assert!(!script_matches_checksum(lf, ""));
        assert!(!script_matches_checksum(lf, "not a checksum"));
    }

    #[test]
    fn names_are_sanitised_to_lowercase_snake_case() {
        assert_eq!(
            sanitize_name("Add Users-Table").as_deref(),
            Some("add_users_table")
        );
        assert_eq!(
            sanitize_name("../../etc/passwd").as_deref(),
            Some("etc_passwd")
        );
        assert_eq!(
            sanitize_name("x'; DROP TABLE y; --").as_deref(),
            Some("x_drop_table_y")
        );
        assert_eq!(sanitize_name("  ___ "), None);
        assert_eq!(sanitize_name(""), None);
        assert_eq!(sanitize_name("émoji🙂").as_deref(), Some("moji"));
    }
}
