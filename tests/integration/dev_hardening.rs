//! `gcbb dev` against what a hostile page or client can do to a local server (issue 23, item
//! 5), each attack made for real on a real `gcbb dev` process: a DNS-rebinding page naming its
//! own host, a flood of HTTP/2 (h2c) connections that never ask for anything, a body declared far
//! over the limit and never sent. Rate-limit buckets a client can't rename with
//! `X-Forwarded-For` are tested in `hardening.rs`. Each test prints its figures, for the record.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::common::{fresh_db, project_root, TestDb};
use crate::support::{binary, free_port, Server};

/// The HTTP/2 connection preface a client sends first (RFC 9113 §3.4).
const H2_PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";
/// An empty SETTINGS frame: the rest of a client's handshake.
const H2_EMPTY_SETTINGS: &[u8] = &[0, 0, 0, 4, 0, 0, 0, 0, 0];

/// `gcbb dev` on a fresh demo database, signing its own tokens (no Clerk key), with `args`
/// and `env` added.
async fn start_dev(args: &[&str], env: &[(&str, &str)]) -> (Server, TestDb) {
    let db = fresh_db().await;
    let port = free_port();
    let mut cmd = binary(env!("CARGO_BIN_EXE_gcbb"));
    cmd.current_dir(project_root())
        .args(["dev", "--port", &port.to_string()])
        .args(args)
        .env("DATABASE_URL", &db.url)
        .env("LLM_PROVIDER", "scripted")
        .env_remove("CLERK_JWT_KEY")
        .env_remove("CLERK_JWKS_URL")
        .env_remove("DEV_ALLOWED_HOSTS");
    for (k, v) in env {
        cmd.env(k, v);
    }
    let server = Server::start(cmd, port).await;
    server.output_once_printed("listening on http://").await;
    (server, db)
}

fn addr_of(server: &Server) -> SocketAddr {
    server.base.trim_start_matches("http://").parse().unwrap()
}

/// A client that reaches `server` whatever name it uses: what a DNS-rebinding attack achieves
/// (the attacker's name now resolves to the local server).
fn client_resolving(server: &Server, names: &[&str], h2: bool) -> reqwest::Client {
    let mut builder = reqwest::Client::builder().no_proxy();
    for name in names {
        builder = builder.resolve(name, addr_of(server));
    }
    if h2 {
        builder = builder.http2_prior_knowledge();
    }
    builder.build().unwrap()
}

fn url(server: &Server, host: &str, path: &str) -> String {
    format!("http://{host}:{}{path}", addr_of(server).port())
}

async fn sign_in(
    http: &reqwest::Client,
    server: &Server,
    host: &str,
    user: &str,
) -> (u16, Value, reqwest::Version) {
    let resp = http
        .post(url(server, host, "/__dev/session"))
        .json(&json!({ "userId": user }))
        .send()
        .await
        .unwrap();
    let status = resp.status().as_u16();
    let version = resp.version();
    (status, resp.json().await.unwrap_or(Value::Null), version)
}

/// Sends `head` over a new HTTP/1 connection and reads the answer until the server closes it
/// or `limit` passes.
async fn raw_http1(server: &Server, head: &str, limit: Duration) -> String {
    let mut tcp = TcpStream::connect(addr_of(server)).await.unwrap();
    tcp.write_all(head.as_bytes()).await.unwrap();
    let mut answer = Vec::new();
    let _ = tokio::time::timeout(limit, tcp.read_to_end(&mut answer)).await;
    String::from_utf8_lossy(&answer).into_owned()
}

#[tokio::test]
async fn a_page_on_another_host_gets_403_and_mints_no_token_while_localhost_signs_in() {
    let (server, _db) = start_dev(&[], &[]).await;
    let banner = server.output();
    assert!(
        banner.contains("hosts       loopback names only"),
        "{banner}"
    );
    let names = ["evil.example", "localhost", "app.localhost"];
    let mut refused = 0;
    for h2 in [false, true] {
        let http = client_resolving(&server, &names, h2);
        for path in ["/__dev/session", "/api/health", "/"] {
            let resp = http
                .get(url(&server, "evil.example", path))
                .send()
                .await
                .unwrap();
            assert_eq!(resp.status(), 403, "{path}");
            let body: Value = resp.json().await.unwrap();
            assert_eq!(body["error"]["code"], "host_not_allowed", "{body}");
            assert!(
                body["error"]["message"]
                    .as_str()
                    .unwrap()
                    .contains("--allowed-host"),
                "{body}"
            );
            refused += 1;
        }
        // The rebinding attack itself: a token for a demo user.
        let (status, body, version) = sign_in(&http, &server, "evil.example", "user_demo_1").await;
        assert_eq!(status, 403, "{body}");
        assert_eq!(
            version,
            if h2 {
                reqwest::Version::HTTP_2
            } else {
                reqwest::Version::HTTP_11
            }
        );
        assert!(body.get("token").is_none(), "{body}");
        refused += 1;
    }
    assert!(
        !server.output().contains("dev session issued"),
        "a token was issued:\n{}",
        server.output()
    );
    // A Host header that differs from the absolute target's host is refused too.
    let answer = raw_http1(
        &server,
        "GET http://localhost/api/health HTTP/1.1\r\nHost: evil.example\r\nConnection: close\r\n\r\n",
        Duration::from_secs(10),
    )
    .await;
    assert!(answer.starts_with("HTTP/1.1 403"), "{answer}");
    // HTTP/1.1 without any Host is a bad request.
    let answer = raw_http1(
        &server,
        "GET /api/health HTTP/1.1\r\nConnection: close\r\n\r\n",
        Duration::from_secs(10),
    )
    .await;
    assert!(answer.starts_with("HTTP/1.1 400"), "{answer}");
    assert!(answer.contains("\"param\":\"host\""), "{answer}");

    // The same requests naming a loopback host are answered, over HTTP/1.1 and HTTP/2.
    for h2 in [false, true] {
        let http = client_resolving(&server, &names, h2);
        for host in ["localhost", "app.localhost", "127.0.0.1"] {
            let (status, body, _) = sign_in(&http, &server, host, "user_demo_1").await;
            assert_eq!(status, 200, "{host}: {body}");
            assert!(body["token"].as_str().unwrap().len() > 100);
        }
    }
    assert!(
        server.output().contains("dev session issued"),
        "{}",
        server.output()
    );
    println!(
        "figure: requests naming evil.example (HTTP/1.1 and h2c, incl. 2 sign-ins): {refused} refused 403, 0 tokens issued; localhost, app.localhost, 127.0.0.1 signed in"
    );
}

/// `(host, status)` for a GET of `/api/health` naming each host.
async fn health_by_host(server: &Server, hosts: &[&str]) -> Vec<(String, u16)> {
    let http = client_resolving(server, hosts, false);
    let mut answers = Vec::new();
    for host in hosts {
        let resp = http
            .get(url(server, host, "/api/health"))
            .send()
            .await
            .unwrap();
        answers.push((host.to_string(), resp.status().as_u16()));
    }
    answers
}

#[tokio::test]
async fn allowed_hosts_from_the_flag_or_the_environment_are_answered_and_no_others() {
    let hosts = [
        "my-box.test",
        "tunnel.example",
        "abc.tunnel.example",
        "other.test",
        "xtunnel.example",
    ];
    let (server, _db) = start_dev(
        &[
            "--allowed-host",
            "my-box.test",
            "--allowed-host",
            ".tunnel.example",
        ],
        &[],
    )
    .await;
    let banner = server.output();
    assert!(
        banner.contains("loopback names and my-box.test, .tunnel.example"),
        "{banner}"
    );
    let expected: Vec<(String, u16)> = hosts
        .iter()
        .zip([200, 200, 200, 403, 403])
        .map(|(h, s)| (h.to_string(), s))
        .collect();
    assert_eq!(health_by_host(&server, &hosts).await, expected);
    drop(server);

    let (server, _db) = start_dev(&[], &[("DEV_ALLOWED_HOSTS", "other.test, 192.0.2.1")]).await;
    let expected: Vec<(String, u16)> = hosts
        .iter()
        .zip([403, 403, 403, 200, 403])
        .map(|(h, s)| (h.to_string(), s))
        .collect();
    assert_eq!(health_by_host(&server, &hosts).await, expected);
    let answer = raw_http1(
        &server,
        "GET /api/health HTTP/1.1\r\nHost: 192.0.2.1:3000\r\nConnection: close\r\n\r\n",
        Duration::from_secs(10),
    )
    .await;
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");

    // An entry that can't be a host stops the server at start, naming the flag.
    let db = fresh_db().await;
    let out = binary(env!("CARGO_BIN_EXE_gcbb"))
        .current_dir(project_root())
        .args(["dev", "--port", &free_port().to_string()])
        .args(["--allowed-host", "http://my-box.test:3000"])
        .env("DATABASE_URL", &db.url)
        .output()
        .unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("--allowed-host"), "{stderr}");
}

/// How one flooding connection behaves.
#[derive(Clone, Copy, Debug)]
enum Flood {
    /// Connects and sends nothing.
    Silent,
    /// Sends the HTTP/2 preface and nothing more.
    Preface,
    /// Completes the HTTP/2 handshake (preface and SETTINGS) and asks for nothing.
    Handshake,
}

/// Opens a flooding connection and returns how long after connecting the server closed it
/// (`None`: still open after `limit`).
async fn flood_connection(addr: SocketAddr, kind: Flood, limit: Duration) -> Option<Duration> {
    let mut tcp = TcpStream::connect(addr).await.unwrap();
    let opened = Instant::now();
    match kind {
        Flood::Silent => {}
        Flood::Preface => tcp.write_all(H2_PREFACE).await.unwrap(),
        Flood::Handshake => {
            tcp.write_all(H2_PREFACE).await.unwrap();
            tcp.write_all(H2_EMPTY_SETTINGS).await.unwrap();
        }
    }
    // The server's SETTINGS, pings and GOAWAY are read and dropped until it closes.
    let mut buf = [0u8; 4096];
    let closed = tokio::time::timeout(limit, async {
        loop {
            match tcp.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(_) => {}
            }
        }
    })
    .await;
    closed.is_ok().then(|| opened.elapsed())
}

/// A HEADERS frame on stream 1 for `GET path` at `authority`, ending the stream: HPACK by hand,
/// static-table names and literal values (RFC 7541).
fn h2_get(path: &str, authority: &str) -> Vec<u8> {
    let mut block = vec![0x82, 0x86]; // :method GET, :scheme http
    for (index, value) in [(4u8, path), (1u8, authority)] {
        block.push(index); // literal without indexing, indexed name (:path, :authority)
        block.push(value.len() as u8);
        block.extend_from_slice(value.as_bytes());
    }
    let mut frame = vec![0, 0, block.len() as u8, 1, 0x05, 0, 0, 0, 1];
    frame.extend(block);
    frame
}

/// Reads HTTP/2 frames until stream 1 ends; returns the first byte of its header block
/// (0x88 is `:status 200`, HPACK static index 8).
async fn read_h2_answer(tcp: &mut TcpStream) -> u8 {
    let mut status = None;
    loop {
        let mut head = [0u8; 9];
        tcp.read_exact(&mut head).await.unwrap();
        let len = u32::from_be_bytes([0, head[0], head[1], head[2]]) as usize;
        let (kind, flags, stream) = (
            head[3],
            head[4],
            u32::from_be_bytes([head[5], head[6], head[7], head[8]]) & 0x7fff_ffff,
        );
        let mut payload = vec![0u8; len];
        tcp.read_exact(&mut payload).await.unwrap();
        if stream == 1 && kind == 1 && status.is_none() {
            status = Some(payload[0]);
        }
        if stream == 1 && (kind == 0 || kind == 1) && flags & 0x1 != 0 {
            return status.expect("a HEADERS frame before the end of the stream");
        }
    }
}

#[tokio::test]
async fn an_h2c_connection_flood_is_closed_within_the_timeouts_while_requests_are_answered() {
    let header_timeout = Duration::from_millis(1_000);
    let idle_timeout = Duration::from_millis(3_000);
    let (server, _db) = start_dev(
        &[
            "--header-read-timeout-ms",
            &header_timeout.as_millis().to_string(),
            "--idle-timeout-ms",
            &idle_timeout.as_millis().to_string(),
        ],
        &[],
    )
    .await;
    let addr = addr_of(&server);
    // What a slow machine adds to a timeout before the close is seen (the server's own grace
    // for a closing connection, IDLE_CLOSE_GRACE, included).
    let margin = gcbb_cli::dev::IDLE_CLOSE_GRACE + Duration::from_secs(3);
    let kinds = [Flood::Silent, Flood::Preface, Flood::Handshake];
    let flood = (0..400).map(|i| flood_connection(addr, kinds[i % 3], Duration::from_secs(60)));
    let flood = futures_util::future::join_all(flood);

    // Meanwhile, ordinary requests over HTTP/1.1 and h2c.
    let normal = async {
        tokio::time::sleep(Duration::from_millis(200)).await;
        let mut answered = Vec::new();
        for h2 in [false, true, false, true] {
            let http = client_resolving(&server, &[], h2);
            let started = Instant::now();
            let resp = http.get(server.url("/api/health")).send().await.unwrap();
            assert_eq!(resp.status(), 200);
            answered.push(started.elapsed());
        }
        answered
    };
    let (closed, answered) = tokio::join!(flood, normal);
    let mut slowest = [Duration::ZERO; 3];
    for (i, closed) in closed.iter().enumerate() {
        let kind = kinds[i % 3];
        let after = closed.unwrap_or_else(|| panic!("a {kind:?} connection was still open"));
        assert!(
            after < header_timeout + margin,
            "a {kind:?} connection closed only after {after:?}"
        );
        slowest[i % 3] = slowest[i % 3].max(after);
    }
    let slowest_answer = answered.iter().max().unwrap();
    println!(
        "figure: 400 h2c flood connections (header timeout {} ms): silent closed by {} ms, preface-only by {} ms, handshake-only by {} ms; 4 requests during the flood answered 200, slowest {} ms",
        header_timeout.as_millis(),
        slowest[0].as_millis(),
        slowest[1].as_millis(),
        slowest[2].as_millis(),
        slowest_answer.as_millis()
    );
    assert!(*slowest_answer < Duration::from_secs(5));

    // An HTTP/2 connection that asked for something is kept while in use, then closed (with a
    // GOAWAY) once idle for the idle timeout, not before.
    let mut tcp = TcpStream::connect(addr).await.unwrap();
    tcp.write_all(H2_PREFACE).await.unwrap();
    tcp.write_all(H2_EMPTY_SETTINGS).await.unwrap();
    tcp.write_all(&h2_get(
        "/api/health",
        &format!("localhost:{}", addr.port()),
    ))
    .await
    .unwrap();
    let status = tokio::time::timeout(Duration::from_secs(10), read_h2_answer(&mut tcp))
        .await
        .expect("an answer over h2c");
    assert_eq!(status, 0x88, "not :status 200");
    let answered = Instant::now();
    let mut buf = [0u8; 4096];
    let mut goaway = false;
    let closed = tokio::time::timeout(idle_timeout + margin, async {
        loop {
            match tcp.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                // A GOAWAY frame: type 7 in the frame header.
                Ok(n) => goaway |= n >= 9 && buf[3] == 7,
            }
        }
    })
    .await;
    let idle_for = answered.elapsed();
    assert!(closed.is_ok(), "an idle h2c connection was still open");
    assert!(
        idle_for >= idle_timeout - Duration::from_millis(100),
        "closed after {idle_for:?}, before the idle timeout"
    );
    assert!(goaway, "closed without a GOAWAY");
    println!(
        "figure: an idle h2c connection (idle timeout {} ms) closed with a GOAWAY {} ms after its answer",
        idle_timeout.as_millis(),
        idle_for.as_millis()
    );
}

#[tokio::test]
async fn a_body_declared_over_the_limit_gets_413_at_once_though_it_is_never_sent() {
    let body_timeout = Duration::from_secs(30);
    let (server, _db) = start_dev(
        &[
            "--body-read-timeout-ms",
            &body_timeout.as_millis().to_string(),
        ],
        &[],
    )
    .await;
    let mut slowest = Duration::ZERO;
    for (method, path, expect_continue) in [
        ("POST", "/api/chat/cmp_demo_01", false),
        ("POST", "/api/chat/cmp_demo_01", true),
        ("POST", "/api/group-chat/any-group/chat", false),
        ("PATCH", "/api/companion/cmp_demo_01", false),
    ] {
        let mut tcp = TcpStream::connect(addr_of(&server)).await.unwrap();
        let head = format!(
            "{method} {path} HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\n\
             Content-Length: {}\r\n{}\r\n",
            100u64 << 20,
            if expect_continue {
                "Expect: 100-continue\r\n"
            } else {
                ""
            }
        );
        let started = Instant::now();
        tcp.write_all(head.as_bytes()).await.unwrap();
        // The body never comes: a 413 can only have come from the head.
        let mut answer = Vec::new();
        let mut buf = [0u8; 4096];
        while !String::from_utf8_lossy(&answer).contains("payload_too_large") {
            let n = tokio::time::timeout(body_timeout, tcp.read(&mut buf))
                .await
                .unwrap_or_else(|_| panic!("{path}: no answer within the body timeout"))
                .unwrap();
            assert!(n > 0, "{path}: closed without an answer");
            answer.extend_from_slice(&buf[..n]);
        }
        let took = started.elapsed();
        slowest = slowest.max(took);
        let answer = String::from_utf8_lossy(&answer);
        assert!(answer.starts_with("HTTP/1.1 413"), "{path}: {answer}");
        assert!(!answer.contains("100 Continue"), "{answer}");
        assert!(
            answer.contains("content-type: application/json"),
            "{answer}"
        );
        assert!(took < Duration::from_secs(5), "{path}: 413 after {took:?}");
    }
    println!(
        "figure: a 100 MiB body declared and never sent: 413 after at most {} ms (body timeout {} s)",
        slowest.as_millis(),
        body_timeout.as_secs()
    );
}
