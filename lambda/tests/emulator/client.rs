//! Who the client is on AWS: the address AWS saw (`sourceIp`), or behind CloudFront
//! (`TRUSTED_PROXY=cloudfront`) the viewer CloudFront names in `CloudFront-Viewer-Address`,
//! through a function URL of the emulator. Anonymous searches are limited per client bucket,
//! so the limit shows which bucket a request was counted in.

use crate::functions::start_with;
use gcbb_test_support::db::demo_db;

use crate::harness::Emulator;

/// A search limit small enough to reach in a few requests.
const LIMIT: usize = 3;
/// A day-long window, so a burst never straddles a window boundary (where the sliding window
/// counts the previous window's requests rounded down).
const WINDOW: (&str, &str) = ("RATE_LIMIT_SEARCH_WINDOW_MS", "86400000");

/// Sends `requests` anonymous searches at once with `viewer` (if any) as CloudFront's header;
/// returns how many were let through (200) and how many refused (429), panicking on anything
/// else.
async fn searches(url: &str, viewers: &[Option<&str>]) -> (usize, usize) {
    let client = reqwest::Client::new();
    let sent = viewers.iter().enumerate().map(|(i, viewer)| {
        let mut request = client
            .get(format!("{url}?q=ada{i}"))
            // A client's own X-Forwarded-For never counts on AWS.
            .header("x-forwarded-for", format!("198.51.100.{i}"));
        if let Some(v) = viewer {
            request = request.header("cloudfront-viewer-address", *v);
        }
        request.send()
    });
    let (mut ok, mut limited) = (0, 0);
    for resp in futures_util::future::join_all(sent).await {
        let resp = resp.expect("an answer");
        match resp.status().as_u16() {
            200 => ok += 1,
            429 => {
                assert!(resp.headers().contains_key("retry-after"));
                assert_eq!(
                    resp.headers()["x-ratelimit-limit"],
                    LIMIT.to_string().as_str()
                );
                limited += 1
            }
            other => panic!("{other}: {}", resp.text().await.unwrap_or_default()),
        }
    }
    (ok, limited)
}

#[tokio::test]
async fn behind_cloudfront_each_viewer_is_its_own_bucket_and_an_ipv6_one_is_its_64() {
    let db = demo_db().await;
    let emulator = Emulator::start().await;
    let limit = [
        ("RATE_LIMIT_SEARCH_REQUESTS", LIMIT.to_string()),
        (WINDOW.0, WINDOW.1.to_owned()),
        ("TRUSTED_PROXY", "cloudfront".to_owned()),
    ];
    let function = start_with(&emulator, &db, "dashboard-prefetch", &limit);
    let url = emulator.url("gcbb-dashboard-prefetch", "/api/dashboard/prefetch");

    // Two IPv4 viewers behind the same edge (same sourceIp): a bucket each.
    let a = vec![Some("203.0.113.10:40001"); 6];
    let b = vec![Some("203.0.113.11:40002"); 6];
    let (ok_a, limited_a) = searches(&url, &a).await;
    let (ok_b, limited_b) = searches(&url, &b).await;
    assert_eq!((ok_a, limited_a), (LIMIT, 3), "{}", function.output());
    assert_eq!((ok_b, limited_b), (LIMIT, 3));

    // Eight addresses of one IPv6 /64, rotated by one client: one bucket between them.
    let rotating: Vec<String> = (1..=8)
        .map(|i| format!("2001:0db8:0aaa:0001:{i:04x}:0000:0000:0001:5{i}000"))
        .collect();
    let viewers: Vec<Option<&str>> = rotating.iter().map(|v| Some(v.as_str())).collect();
    let (ok, limited) = searches(&url, &viewers).await;
    eprintln!(
        "CloudFront viewers rotating through one /64: {ok} of {} searches let through (limit {LIMIT})",
        viewers.len()
    );
    assert_eq!((ok, limited), (LIMIT, 8 - LIMIT));
    // The next /64 is somebody else.
    let other = ["2001:db8:aaa:2::1:443"; 2].map(Some);
    assert_eq!(searches(&url, &other).await, (2, 0));
}

#[tokio::test]
async fn without_trusted_proxy_the_address_aws_saw_counts_and_no_header_does() {
    let db = demo_db().await;
    let emulator = Emulator::start().await;
    let limit = [
        ("RATE_LIMIT_SEARCH_REQUESTS", LIMIT.to_string()),
        (WINDOW.0, WINDOW.1.to_owned()),
    ];
    let function = start_with(&emulator, &db, "dashboard-prefetch", &limit);
    let url = emulator.url("gcbb-dashboard-prefetch", "/api/dashboard/prefetch");
    // Every request claims another viewer and another forwarded address; AWS saw one address.
    let claims: Vec<String> = (0..8).map(|i| format!("192.0.2.{i}:1000")).collect();
    let viewers: Vec<Option<&str>> = claims.iter().map(|v| Some(v.as_str())).collect();
    let (ok, limited) = searches(&url, &viewers).await;
    assert_eq!((ok, limited), (LIMIT, 8 - LIMIT), "{}", function.output());
}
