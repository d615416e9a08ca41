//! The shared harness of the integration tests, under the names they have always used: most of
//! it lives in `gcbb-test-support` (shared with the function and Lambda tests) and is re-exported
//! here; what only these tests need is here.
//!
//! - [`app`]: the app under test, in-process ([`app::TestApp`]): a fresh database, keys, a cache
//!   key prefix, the model server, the real `App` and router; [`request`] is how tests talk to it.
//! - [`fault`]: the fault proxy in front of Postgres and the private Redis; [`neon`]: the Neon
//!   API stand-in; [`jwks`]: a JWKS endpoint standing in for Clerk's.
//! - [`session`]: the one RSA signing key of the test process and the tokens it signs.
//! - this module: throwaway databases on the real Postgres (cloned from the migrated template),
//!   the `gcbb` binary, and [`eventually`], the one bounded wait for effects that land after a
//!   response.
#![allow(unused_imports)] // each test module uses part of the harness

pub mod app;
pub mod fault;
pub mod jwks;
pub mod neon;
pub mod request;

pub use gcbb_test_support::db::{
    absent_db, admin, databases_starting_with, demo_db, drop_databases_now, empty_db,
    empty_db_named, fresh_db, migration_names, quote_ident, server, server_url, template_name,
    url_for, TestDb,
};
pub use gcbb_test_support::dev::{gcbb, gcbb_db, start_dev, start_dev_with};
pub use gcbb_test_support::migrations::{project_migration_names, MigrationsDir};
pub use gcbb_test_support::output::{
    assert_contains_all, code, json_strs, stderr, stdout, success_stdout, text,
};
pub use gcbb_test_support::{
    eventually, migrations_dir, project_root, redis_addr, redis_url, unique, ScratchDir,
    DEFAULT_TEST_DATABASE_URL, EVENTUALLY_LIMIT,
};

pub mod session {
    //! The session tokens of the test process (see `gcbb_test_support::session`).
    pub use gcbb_test_support::session::*;
}

/// The model's default reply, failing as `failure` says.
pub fn failing(failure: gcbb_cli::model_server::Failure) -> gcbb_cli::model_server::Script {
    gcbb_cli::model_server::Script {
        failure,
        ..Default::default()
    }
}
