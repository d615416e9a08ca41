//! Real faults for the resilience tests: the tool's TCP proxy ([`TcpProxy`], in front of
//! Postgres: forwarding, black hole, refusing, slow connects) and a private `redis-server`
//! ([`OwnRedis`]) the test stops, freezes (SIGSTOP) and thaws (SIGCONT). Nothing here flips a
//! flag in the code under test: the app sees a network and a server that really behave so.

pub use gcbb_cli::fault_proxy::TcpProxy;
pub use gcbb_test_support::redis::OwnRedis;

/// A proxy to the test Postgres server (`TEST_DATABASE_URL`'s host and port).
pub async fn proxy_to_postgres() -> TcpProxy {
    let server = super::server();
    let upstream = tokio::net::lookup_host((server.host.as_str(), server.port))
        .await
        .expect("resolve the test server")
        .next()
        .expect("an address");
    TcpProxy::start(upstream).await
}
