use super::*;

#[test]
fn a_neon_branch_pooled_and_direct_have_one_identity_and_branches_differ() {
    let pooled =
        DbConfig::parse("postgres://u:p@ep-cool-1-pooler.eu-central-1.aws.neon.tech/neondb")
            .unwrap();
    let direct =
        DbConfig::parse("postgres://u:p@EP-COOL-1.eu-central-1.aws.neon.tech/neondb").unwrap();
    let branch =
        DbConfig::parse("postgres://u:p@ep-other-2-pooler.eu-central-1.aws.neon.tech/neondb")
            .unwrap();
    assert_eq!(pooled.identity(), direct.identity());
    assert_eq!(
        pooled.identity(),
        "ep-cool-1.eu-central-1.aws.neon.tech:5432/neondb"
    );
    assert_ne!(pooled.identity(), branch.identity());
    assert_ne!(pooled.identity(), pooled.with_dbname("other").identity());
}

const NEON: &str = "postgresql://alex:AbC123dEf@ep-cool-darkness-123456-pooler.us-east-2.aws.neon.tech/dbname?sslmode=require&channel_binding=require";

fn parse(raw: &str) -> DbConfig {
    DbConfig::parse(raw).expect("the URL parses")
}

fn refuse(raw: &str) -> String {
    DbConfig::parse(raw).expect_err("the URL is refused").0
}

#[test]
fn the_neon_example_url_parses_completely() {
    let c = parse(NEON);
    assert_eq!(
        c.host,
        "ep-cool-darkness-123456-pooler.us-east-2.aws.neon.tech"
    );
    assert_eq!(c.port, 5432);
    assert_eq!(c.user, "alex");
    assert_eq!(c.password.as_deref(), Some("AbC123dEf"));
    assert_eq!(c.dbname(), "dbname");
    assert_eq!(c.sslmode, SslMode::Require);
    assert_eq!(c.channel_binding, ChannelBinding::Require);
    assert_eq!(c.application_name, "gcbb");
    assert_eq!(c.connect_timeout, DEFAULT_DB_CONNECT_TIMEOUT);
    assert!(c.is_pooled());
    assert!(!c.is_local());
    assert_eq!(c.sslrootcert, None);
}

#[test]
fn the_direct_neon_url_is_not_pooled() {
    let c = parse("postgresql://alex:pw@ep-cool-darkness-123456.us-east-2.aws.neon.tech/db");
    assert!(!c.is_pooled());
    // A `-pooler` further down the name is not Neon's pooler label.
    let c = parse("postgres://u@db.my-pooler.example.com/db");
    assert!(!c.is_pooled());
}

#[test]
fn both_schemes_are_accepted_and_others_are_refused() {
    assert_eq!(parse("postgres://u@h/d").host, "h");
    assert_eq!(parse("postgresql://u@h/d").host, "h");
    assert!(refuse("mysql://u:pw@h/d").contains("postgres://"));
    assert!(refuse("https://u:pw@h/d").contains("https://"));
    let e = refuse("u:pw@h/d");
    assert!(e.contains("postgres://") && !e.contains("pw"), "{e}");
    assert!(refuse("").contains("not a database URL"));
}

#[test]
fn user_and_password_are_percent_decoded() {
    let c = parse("postgres://us%40er:p%40ss%3Aw%2Fo%23rd%25@h/d");
    assert_eq!(c.user, "us@er");
    assert_eq!(c.password.as_deref(), Some("p@ss:w/o#rd%"));
}

#[test]
fn an_unencoded_at_sign_in_the_password_still_splits_at_the_last_one() {
    let c = parse("postgres://u:p@ss@host.example/d");
    assert_eq!(c.password.as_deref(), Some("p@ss"));
    assert_eq!(c.host, "host.example");
}

#[test]
fn a_password_with_an_unencoded_hash_is_refused_without_echoing_it() {
    let e = refuse("postgres://u:se#cret@host/d");
    assert!(!e.contains("se#cret") && !e.contains("cret"), "{e}");
    let e = refuse("postgres://u:secret@host/d#frag");
    assert!(e.contains("%23") && !e.contains("secret"), "{e}");
}

#[test]
fn no_error_ever_contains_the_password() {
    for raw in [
        "postgres://u:hunter2@h:99999/d",
        "postgres://u:hunter2@h:abc/d",
        "postgres://u:hunter2@h/d?sslmode=bogus",
        "postgres://u:hunter2@h/d?channel_binding=bogus",
        "postgres://u:hunter2@h/d?connect_timeout=soon",
        "mysql://u:hunter2@h/d",
        "postgres://u:hunter2@h/d?port=0",
        "postgres://u:hunter2@[::1/d",
        "postgres://u:%FFhunter2@h/d",
    ] {
        let e = refuse(raw);
        assert!(!e.contains("hunter2"), "{raw} → {e}");
    }
}

#[test]
fn a_bad_port_is_refused_with_the_range() {
    assert!(refuse("postgres://u@h:99999/d").contains("1-65535"));
    assert!(refuse("postgres://u@h:abc/d").contains("1-65535"));
    assert!(refuse("postgres://u@h:0/d").contains("1-65535"));
    assert!(refuse("postgres://u@h/d?port=-1").contains("1-65535"));
    assert_eq!(parse("postgres://u@h:6543/d").port, 6543);
    assert_eq!(parse("postgres://u@h/d?port=6432").port, 6432);
}

#[test]
fn every_sslmode_parses_and_an_unknown_one_is_refused() {
    let mode = |m: &str| parse(&format!("postgres://u@h/d?sslmode={m}")).sslmode;
    assert_eq!(mode("disable"), SslMode::Disable);
    assert_eq!(mode("allow"), SslMode::Prefer);
    assert_eq!(mode("prefer"), SslMode::Prefer);
    assert_eq!(mode("require"), SslMode::Require);
    assert_eq!(mode("verify-ca"), SslMode::VerifyCa);
    assert_eq!(mode("verify-full"), SslMode::VerifyFull);
    assert_eq!(parse("postgres://u@h/d").sslmode, SslMode::Prefer);
    let e = refuse("postgres://u@h/d?sslmode=verify_full");
    assert!(e.contains("unknown sslmode `verify_full`"), "{e}");
    assert!(refuse("postgres://u@h/d?sslmode=").contains("unknown sslmode"));
    assert!(refuse("postgres://u@h/d?sslmode=REQUIRE").contains("unknown sslmode"));
}

#[test]
fn verify_full_reaches_tokio_postgres_as_require() {
    let c = parse("postgres://u@h/d?sslmode=verify-full");
    assert_eq!(
        c.to_pg_config().get_ssl_mode(),
        tokio_postgres::config::SslMode::Require
    );
}

#[test]
fn channel_binding_parses_and_reaches_tokio_postgres() {
    let cb = |m: &str| parse(&format!("postgres://u@h/d?channel_binding={m}"));
    assert_eq!(cb("disable").channel_binding, ChannelBinding::Disable);
    assert_eq!(cb("prefer").channel_binding, ChannelBinding::Prefer);
    assert_eq!(
        cb("require").to_pg_config().get_channel_binding(),
        tokio_postgres::config::ChannelBinding::Require
    );
    assert!(refuse("postgres://u@h/d?channel_binding=always").contains("channel_binding"));
}

#[test]
fn neon_endpoint_options_are_decoded_and_passed_on() {
    let c = parse("postgres://u@h/d?options=endpoint%3Dep-cool-darkness-123456");
    assert_eq!(
        c.options.as_deref(),
        Some("endpoint=ep-cool-darkness-123456")
    );
    assert_eq!(
        c.to_pg_config().get_options(),
        Some("endpoint=ep-cool-darkness-123456")
    );
}

#[test]
fn application_name_defaults_to_gcbb_and_can_be_set() {
    assert_eq!(parse("postgres://u@h/d").application_name, "gcbb");
    let c = parse("postgres://u@h/d?application_name=gcbb%20cron");
    assert_eq!(c.application_name, "gcbb cron");
    assert_eq!(c.to_pg_config().get_application_name(), Some("gcbb cron"));
}

#[test]
fn connect_timeout_is_seconds_and_zero_keeps_the_default() {
    let c = parse("postgres://u@h/d?connect_timeout=3");
    assert_eq!(c.connect_timeout, Duration::from_secs(3));
    assert_eq!(
        c.to_pg_config().get_connect_timeout(),
        Some(&Duration::from_secs(3))
    );
    let c = parse("postgres://u@h/d?connect_timeout=0");
    assert_eq!(c.connect_timeout, DEFAULT_DB_CONNECT_TIMEOUT);
    assert!(refuse("postgres://u@h/d?connect_timeout=-1").contains("whole number"));
    assert!(refuse("postgres://u@h/d?connect_timeout=1.5").contains("whole number"));
}

#[test]
fn sslrootcert_is_a_path_and_system_means_none() {
    let c = parse("postgres://u@h/d?sslmode=verify-full&sslrootcert=/etc/ssl/ca.pem");
    assert_eq!(c.sslrootcert, Some(PathBuf::from("/etc/ssl/ca.pem")));
    let c = parse("postgres://u@h/d?sslrootcert=system");
    assert_eq!(c.sslrootcert, None);
}

#[test]
fn a_host_parameter_with_a_path_is_a_unix_socket() {
    let c = parse("postgres://postgres@/mydb?host=/var/run/postgresql");
    assert_eq!(c.host, "/var/run/postgresql");
    assert!(c.is_unix_socket() && c.is_local());
    assert_eq!(c.dbname(), "mydb");
    assert_eq!(parse("postgres://u:pw@:5433/d").port, 5433);
    assert_eq!(parse("postgres://u@/d").host, "localhost");
    assert_eq!(
        c.to_pg_config().get_ssl_mode(),
        tokio_postgres::config::SslMode::Disable
    );
    // libpq's other spelling: the directory percent-encoded as the host.
    let c = parse("postgresql://%2Fvar%2Frun%2Fpostgresql/mydb");
    assert_eq!(c.host, "/var/run/postgresql");
    assert!(c.is_unix_socket());
}

#[test]
fn ipv6_hosts_lose_their_brackets_but_redaction_keeps_them() {
    let c = parse("postgres://u:pw@[::1]:6000/d");
    assert_eq!(c.host, "::1");
    assert_eq!(c.port, 6000);
    assert!(c.is_local());
    assert_eq!(c.redacted(), "[::1]:6000/d");
}

#[test]
fn local_hosts_are_recognised() {
    for raw in [
        "postgres://u@localhost/d",
        "postgres://u@LOCALHOST/d",
        "postgres://u@127.0.0.1/d",
        "postgres://u@[::1]/d",
        "postgres://u@/d",
    ] {
        assert!(parse(raw).is_local(), "{raw}");
    }
    assert!(!parse("postgres://u@10.0.0.1/d").is_local());
    assert!(!parse("postgres://u@localhost.evil.example/d").is_local());
}

#[test]
fn defaults_follow_libpq() {
    let c = parse("postgres://");
    assert_eq!(c.host, "localhost");
    assert_eq!(c.port, 5432);
    assert_eq!(c.user, "postgres");
    assert_eq!(c.dbname(), "postgres");
    assert_eq!(c.password, None);
    let c = parse("postgres://alice@h");
    assert_eq!(c.dbname(), "alice");
}

#[test]
fn unknown_parameters_are_ignored() {
    let c = parse("postgres://u@h/d?target_session_attrs=any&sslnegotiation=direct&x=");
    assert_eq!(c.host, "h");
}

#[test]
fn several_hosts_are_refused() {
    assert!(refuse("postgres://u@h/d?host=a,b").contains("several hosts"));
}

#[test]
fn redaction_and_debug_never_show_the_password() {
    let c = parse("postgres://alex:hunter2@h.example:6543/db?sslmode=require");
    assert_eq!(c.redacted(), "h.example:6543/db");
    let debug = format!("{c:?}");
    assert!(!debug.contains("hunter2"), "{debug}");
    assert!(debug.contains("<redacted>"), "{debug}");
}

#[test]
fn with_dbname_keeps_everything_else() {
    let c = parse(NEON);
    let other = c.with_dbname("shadow_1");
    assert_eq!(other.dbname(), "shadow_1");
    assert_eq!(other.password, c.password);
    assert_eq!(other.sslmode, c.sslmode);
    assert_eq!(other.host, c.host);
}
