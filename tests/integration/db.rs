//! The Postgres access layer against the real local server (TLS on, Debian's self-signed
//! "snakeoil" certificate whose only name is `localhost`).

use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;
use std::time::Duration;

use gcbb::db::{self, DbConfig, DbError, Pool, Querier, SslMode};
use tokio::net::TcpListener;

use crate::common::eventually;

const SERVER: &str = "postgres://postgres@127.0.0.1:5432/postgres";
const SNAKEOIL: &str = "/etc/ssl/certs/ssl-cert-snakeoil.pem";
const SOCKET_DIR: &str = "/var/run/postgresql";

fn config(params: &str) -> DbConfig {
    DbConfig::parse(&format!("{SERVER}?{params}")).expect("test URL parses")
}

fn config_at(host: &str, params: &str) -> DbConfig {
    DbConfig::parse(&format!(
        "postgres://postgres@{host}:5432/postgres?{params}"
    ))
    .expect("test URL parses")
}

/// An application_name no other test or engineer uses, to find our sessions.
fn unique_app() -> String {
    format!("gcbb-dbtest-{}", uuid::Uuid::new_v4().simple())
}

/// A connection with these URL parameters; it must connect.
async fn connect(params: &str) -> tokio_postgres::Client {
    db::connect(&config(params)).await.expect("connects")
}

/// A separate plain connection, to watch the others from.
async fn observer() -> tokio_postgres::Client {
    db::connect(&config("sslmode=disable"))
        .await
        .expect("observer connects")
}

/// The one value a one-row query returns; `what` says what failed if it fails.
async fn one<T: for<'r> tokio_postgres::types::FromSql<'r>>(
    client: &tokio_postgres::Client,
    sql: &str,
    params: &[(
        &(dyn tokio_postgres::types::ToSql + Sync),
        tokio_postgres::types::Type,
    )],
    what: &str,
) -> T {
    client
        .query_typed_one(sql, params)
        .await
        .expect(what)
        .get(0)
}

async fn is_encrypted(client: &tokio_postgres::Client) -> bool {
    let sql = "SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()";
    one(client, sql, &[], "pg_stat_ssl is readable").await
}

async fn backend_pid(client: &impl Querier) -> i32 {
    client
        .query_typed("SELECT pg_backend_pid()", &[])
        .await
        .expect("pid query works")[0]
        .get(0)
}

/// Sessions with this application_name, seen from a separate plain connection.
async fn sessions_named(app: &str) -> i64 {
    one(
        &observer().await,
        "SELECT count(*) FROM pg_stat_activity WHERE application_name = $1",
        &[(&app, tokio_postgres::types::Type::TEXT)],
        "pg_stat_activity is readable",
    )
    .await
}

async fn terminate(pid: i32) {
    let observer = observer().await;
    let pid_param = [(&pid as _, tokio_postgres::types::Type::INT4)];
    let killed: bool = one(
        &observer,
        "SELECT pg_terminate_backend($1)",
        &pid_param,
        "terminate works",
    )
    .await;
    assert!(killed, "backend {pid} was terminated");
    // The backend leaves pg_stat_activity only after it has told its client (FATAL 57P01).
    let gone = eventually(|| async {
        let alive: bool = one(
            &observer,
            "SELECT EXISTS (SELECT 1 FROM pg_stat_activity WHERE pid = $1)",
            &pid_param,
            "pg_stat_activity is readable",
        )
        .await;
        !alive
    })
    .await;
    assert!(gone, "backend {pid} did not exit");
}

fn expect_tls_error(result: Result<tokio_postgres::Client, DbError>) -> String {
    match result {
        Err(DbError::Tls(message)) => message,
        Err(other) => panic!("expected DbError::Tls, got {other:?}"),
        Ok(_) => panic!("expected DbError::Tls, but the connection was accepted"),
    }
}

#[tokio::test]
async fn sslmode_require_encrypts_the_connection() {
    let client = connect("sslmode=require").await;
    assert!(is_encrypted(&client).await);
}

#[tokio::test]
async fn sslmode_prefer_encrypts_when_the_server_offers_tls() {
    let client = connect("sslmode=prefer").await;
    assert!(is_encrypted(&client).await);
}

#[tokio::test]
async fn sslmode_disable_stays_plaintext() {
    let client = connect("sslmode=disable").await;
    assert!(!is_encrypted(&client).await);
}

#[tokio::test]
async fn verify_full_refuses_the_self_signed_certificate() {
    let cfg = config_at("localhost", "sslmode=verify-full");
    let message = expect_tls_error(db::connect(&cfg).await);
    assert!(
        message.contains("certificate not trusted for host localhost (sslmode=verify-full)"),
        "{message}"
    );
}

#[tokio::test]
async fn verify_ca_refuses_the_self_signed_certificate_without_its_root() {
    let message = expect_tls_error(db::connect(&config("sslmode=verify-ca")).await);
    assert!(
        message.contains("not trusted for host 127.0.0.1 (sslmode=verify-ca)"),
        "{message}"
    );
}

#[tokio::test]
async fn verify_full_trusts_the_server_cert_given_as_sslrootcert_under_its_own_name() {
    assert!(
        std::path::Path::new(SNAKEOIL).exists(),
        "{SNAKEOIL} is the server's certificate"
    );
    let cfg = config_at(
        "localhost",
        &format!("sslmode=verify-full&sslrootcert={SNAKEOIL}"),
    );
    assert_eq!(cfg.sslmode, SslMode::VerifyFull);
    let client = db::connect(&cfg).await.expect("verified connection");
    assert!(is_encrypted(&client).await);
}

#[tokio::test]
async fn verify_full_refuses_a_trusted_certificate_that_does_not_name_the_host() {
    // The snakeoil certificate names only `localhost`, not 127.0.0.1.
    let cfg = config(&format!("sslmode=verify-full&sslrootcert={SNAKEOIL}"));
    let message = expect_tls_error(db::connect(&cfg).await);
    assert!(
        message.contains("certificate not valid for host 127.0.0.1 (sslmode=verify-full)"),
        "{message}"
    );
}

#[tokio::test]
async fn verify_ca_accepts_a_trusted_certificate_whatever_its_name() {
    let cfg = config(&format!("sslmode=verify-ca&sslrootcert={SNAKEOIL}"));
    let client = db::connect(&cfg).await.expect("chain-verified connection");
    assert!(is_encrypted(&client).await);
}

#[tokio::test]
async fn a_missing_sslrootcert_file_is_a_tls_error_naming_it() {
    let cfg = config("sslmode=verify-full&sslrootcert=/nonexistent/root.pem");
    let message = expect_tls_error(db::connect(&cfg).await);
    assert!(message.contains("/nonexistent/root.pem"), "{message}");
}

#[tokio::test]
async fn application_name_shows_up_in_pg_stat_activity() {
    let app = unique_app();
    let client = connect(&format!("sslmode=require&application_name={app}")).await;
    let sql = "SELECT application_name FROM pg_stat_activity WHERE pid = pg_backend_pid()";
    let seen: String = one(&client, sql, &[], "reads own session").await;
    assert_eq!(seen, app);
    assert_eq!(sessions_named(&app).await, 1);
}

#[tokio::test]
async fn the_default_application_name_is_gcbb() {
    let client = connect("sslmode=disable").await;
    let sql = "SELECT current_setting('application_name')";
    let seen: String = one(&client, sql, &[], "reads setting").await;
    assert_eq!(seen, "gcbb");
}

#[tokio::test]
async fn a_unix_socket_connects_without_tls_even_when_require_is_asked() {
    let cfg = DbConfig::parse(&format!(
        "postgres://postgres@/postgres?host={SOCKET_DIR}&sslmode=require"
    ))
    .expect("parses");
    let client = db::connect(&cfg).await.expect("connects over the socket");
    let row = client
        .query_typed_one(
            "SELECT ssl, client_addr IS NULL FROM pg_stat_ssl JOIN pg_stat_activity USING (pid) \
             WHERE pid = pg_backend_pid()",
            &[],
        )
        .await
        .expect("reads own session");
    let (ssl, via_socket): (bool, bool) = (row.get(0), row.get(1));
    assert!(!ssl);
    assert!(via_socket, "a socket session has no client address");
}

#[tokio::test]
async fn channel_binding_require_fails_against_a_server_that_skips_scram() {
    // Local auth is `trust`: no SCRAM exchange, so no binding can happen; libpq refuses too.
    let result = db::connect(&config("sslmode=require&channel_binding=require")).await;
    match result {
        // Named as what it is, not as an unreachable server or a bare authentication error.
        Err(DbError::Tls(message)) => {
            assert!(message.contains("channel binding"), "{message}");
            assert!(message.contains("channel_binding=require"), "{message}");
        }
        Err(other) => panic!("expected a channel-binding error, got {other:?}"),
        Ok(_) => panic!("channel_binding=require was not enforced"),
    }
}

#[tokio::test]
async fn a_wrong_database_name_is_a_query_error_with_its_sqlstate() {
    let cfg = config("sslmode=disable").with_dbname("gcbb_no_such_db_7f3a");
    let err = db::connect(&cfg).await.expect_err("no such database");
    assert_eq!(
        err.sqlstate(),
        Some(&tokio_postgres::error::SqlState::INVALID_CATALOG_NAME),
        "{err:?}"
    );
}

#[tokio::test]
async fn a_closed_port_is_unavailable_after_one_retry() {
    let cfg = DbConfig::parse("postgres://postgres:hunter2@127.0.0.1:1/postgres?sslmode=require")
        .expect("parses");
    match db::connect(&cfg).await {
        Err(DbError::Unavailable(message)) => {
            assert!(message.contains("127.0.0.1:1/postgres"), "{message}");
            assert!(message.contains("(2 attempts)"), "{message}");
            assert!(!message.contains("hunter2"), "{message}");
        }
        Err(other) => panic!("expected Unavailable, got {other:?}"),
        Ok(_) => panic!("something listens on port 1"),
    }
}

/// A real TCP server that accepts connections and counts them; `hold` keeps them open silently.
async fn counting_server(hold: bool) -> (u16, Arc<AtomicU32>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("binds");
    let port = listener.local_addr().expect("has address").port();
    let accepted = Arc::new(AtomicU32::new(0));
    let count = accepted.clone();
    tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((socket, _)) = listener.accept().await {
            count.fetch_add(1, Ordering::SeqCst);
            if hold {
                held.push(socket);
            }
        }
    });
    (port, accepted)
}

#[tokio::test]
async fn a_server_that_never_answers_times_out_after_one_retry() {
    let (port, accepted) = counting_server(true).await;
    let cfg = DbConfig::parse(&format!(
        "postgres://postgres@127.0.0.1:{port}/postgres?sslmode=require&connect_timeout=1"
    ))
    .expect("parses");
    let err = db::connect(&cfg).await.expect_err("nothing answers");
    assert!(matches!(err, DbError::Timeout), "{err:?}");
    assert_eq!(accepted.load(Ordering::SeqCst), 2);
}

#[tokio::test]
async fn a_server_that_hangs_up_is_unavailable_after_one_retry() {
    let (port, accepted) = counting_server(false).await;
    let cfg = DbConfig::parse(&format!(
        "postgres://postgres@127.0.0.1:{port}/postgres?sslmode=disable"
    ))
    .expect("parses");
    let err = db::connect(&cfg).await.expect_err("the server hangs up");
    assert!(matches!(err, DbError::Unavailable(_)), "{err:?}");
    assert_eq!(accepted.load(Ordering::SeqCst), 2);
}

#[tokio::test]
async fn a_pool_opens_nothing_until_the_first_get() {
    let app = unique_app();
    let pool = Pool::new(
        config(&format!("sslmode=require&application_name={app}")),
        3,
    );
    assert_eq!(sessions_named(&app).await, 0);
    let client = pool.get().await.expect("connects");
    client.query_typed("SELECT 1", &[]).await.expect("queries");
    assert_eq!(sessions_named(&app).await, 1);
    drop(client);
    assert_eq!(pool.idle(), 1, "the connection went back to the pool");
    let again = pool.get().await.expect("reuses");
    assert_eq!(pool.idle(), 0);
    again.query_typed("SELECT 1", &[]).await.expect("queries");
    assert_eq!(
        sessions_named(&app).await,
        1,
        "the idle connection was reused"
    );
}

#[tokio::test]
async fn a_pool_never_opens_more_than_its_size() {
    let app = unique_app();
    let pool = Pool::new(
        config(&format!("sslmode=require&application_name={app}")),
        3,
    );
    let mut tasks = Vec::new();
    for _ in 0..12 {
        let pool = pool.clone();
        tasks.push(tokio::spawn(async move {
            let client = pool.get().await.expect("gets a connection");
            client
                .query_typed("SELECT pg_sleep(0.05)", &[])
                .await
                .expect("queries");
            backend_pid(&client).await
        }));
    }
    let mut pids = Vec::new();
    for task in tasks {
        pids.push(task.await.expect("task finishes"));
    }
    pids.sort_unstable();
    pids.dedup();
    assert!(
        pids.len() <= 3,
        "{} distinct backends served the pool",
        pids.len()
    );
    let open = sessions_named(&app).await;
    assert!((1..=3).contains(&open), "{open} sessions open");
    assert_eq!(usize::try_from(open).ok(), Some(pool.idle()));
}

#[tokio::test]
async fn waiting_on_a_busy_pool_ends_in_pool_exhausted() {
    let app = unique_app();
    let pool = Pool::new(
        config(&format!("sslmode=disable&application_name={app}")),
        1,
    )
    .with_acquire_timeout(Duration::from_millis(200));
    let held = pool.get().await.expect("first connection");
    let err = pool
        .get()
        .await
        .err()
        .expect("the only connection is taken");
    assert!(matches!(err, DbError::PoolExhausted), "{err:?}");
    assert_eq!(sessions_named(&app).await, 1);
    drop(held);
    let client = pool.get().await.expect("freed connection");
    client.query_typed("SELECT 1", &[]).await.expect("queries");
}

#[tokio::test]
async fn a_connection_killed_while_checked_out_is_replaced_after_it_is_returned() {
    let app = unique_app();
    let pool = Pool::new(
        config(&format!("sslmode=require&application_name={app}")),
        1,
    );
    let client = pool.get().await.expect("connects");
    let first_pid = backend_pid(&client).await;
    terminate(first_pid).await;
    let err = client
        .query_typed("SELECT 1", &[])
        .await
        .expect_err("the connection is gone");
    assert!(matches!(err, DbError::Unavailable(_)), "{err:?}");
    assert!(client.is_closed());
    drop(client);
    assert_eq!(pool.idle(), 0, "a closed connection is not pooled");

    let client = pool.get().await.expect("reconnects");
    let second_pid = backend_pid(&client).await;
    assert_ne!(first_pid, second_pid);
    assert_eq!(sessions_named(&app).await, 1);
}

#[tokio::test]
async fn a_connection_killed_while_idle_is_replaced_on_the_next_get() {
    let app = unique_app();
    let pool = Pool::new(
        config(&format!("sslmode=require&application_name={app}")),
        2,
    );
    let client = pool.get().await.expect("connects");
    let first_pid = backend_pid(&client).await;
    drop(client);
    assert_eq!(pool.idle(), 1);
    terminate(first_pid).await;

    let client = pool.get().await.expect("reconnects");
    let second_pid = backend_pid(&client).await;
    assert_ne!(first_pid, second_pid);
    assert_eq!(sessions_named(&app).await, 1);
}

#[tokio::test]
async fn health_ping_works_through_the_pool() {
    let pool = Pool::new(config("sslmode=require"), 1);
    db::health::ping(&pool).await.expect("ping");
}
