use super::on_copy::scratch_server;
use super::*;

#[test]
fn a_remote_target_gets_no_copy_on_its_own_server_unless_asked() {
    let remote =
        DbConfig::parse("postgres://u@ep-x.eu-central-1.aws.neon.tech/neondb").expect("url");
    let refused = scratch_server(&remote, &RehearseOptions::default());
    assert!(
        matches!(&refused, Err(MigrateError::RehearseRefused(m)) if m.contains("--scratch-server")),
        "{refused:?}"
    );
    let asked = RehearseOptions {
        scratch_server: Some(remote.with_dbname("postgres")),
        ..RehearseOptions::default()
    };
    assert_eq!(
        scratch_server(&remote, &asked).expect("asked").dbname,
        "postgres"
    );
    let local = DbConfig::parse("postgres://u@127.0.0.1:5432/app").expect("url");
    assert_eq!(
        scratch_server(&local, &RehearseOptions::default())
            .expect("local")
            .redacted(),
        "127.0.0.1:5432/postgres"
    );
}
