use super::*;
use std::sync::atomic::{AtomicU32, Ordering};

fn cfg() -> DbConfig {
    DbConfig::parse("postgres://u@db.example/d").expect("parses")
}

async fn run(outcomes: &[fn() -> Failure]) -> (Result<u32, DbError>, u32) {
    let calls = AtomicU32::new(0);
    let result = retry_once(&cfg(), Duration::ZERO, || {
        let n = calls.fetch_add(1, Ordering::SeqCst) as usize;
        let outcome = outcomes.get(n).map(|f| f());
        async move {
            match outcome {
                Some(failure) => Err(failure),
                None => Ok(7),
            }
        }
    })
    .await;
    (result, calls.load(Ordering::SeqCst))
}

fn refused() -> Failure {
    Failure::retry(DbError::Unavailable("refused".into()))
}

fn bad_cert() -> Failure {
    Failure::fatal(DbError::Tls("bad cert".into()))
}

#[tokio::test]
async fn a_network_failure_is_retried_exactly_once() {
    let (result, calls) = run(&[refused, refused, refused]).await;
    assert_eq!(calls, 2);
    match result {
        Err(DbError::Unavailable(m)) => assert_eq!(m, "refused (2 attempts)"),
        other => panic!("expected Unavailable, got {other:?}"),
    }
}

#[tokio::test]
async fn a_retry_that_succeeds_returns_the_connection() {
    let (result, calls) = run(&[refused]).await;
    assert_eq!(calls, 2);
    assert_eq!(result.expect("second attempt works"), 7);
}

#[tokio::test]
async fn a_certificate_failure_is_not_retried() {
    let (result, calls) = run(&[bad_cert, refused]).await;
    assert_eq!(calls, 1);
    assert!(matches!(result, Err(DbError::Tls(m)) if m == "bad cert"));
}

#[tokio::test]
async fn a_new_pool_opens_nothing_and_counts_at_least_one_slot() {
    let pool = Pool::new(cfg(), 0);
    assert_eq!(pool.max_size(), 1);
    assert_eq!(pool.idle(), 0);
}
