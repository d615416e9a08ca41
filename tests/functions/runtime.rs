//! The runtime adapter, tested through a real function binary served by `vercel_runtime`:
//! bodies stream as they are produced, and `wait_until` work finishes after the response.

use std::time::Duration;

use futures_util::StreamExt;

use gcbb_test_support::process::{example_binary, start_vercel_function, Server};
use gcbb_test_support::ScratchDir;

async fn start_probe(out: Option<&std::path::Path>) -> Server {
    let out = out.map(|o| o.to_string_lossy().into_owned());
    let env: Vec<(&str, &str)> = out.iter().map(|o| ("PROBE_OUT", o.as_str())).collect();
    start_vercel_function(&example_binary("runtime-probe"), &env).await
}

#[tokio::test]
async fn a_text_plain_stream_arrives_in_pieces_as_they_are_produced() {
    let server = start_probe(None).await;
    let resp = reqwest::get(server.url("/stream?chunks=4&gapMs=400"))
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    assert!(resp.headers()["content-type"]
        .to_str()
        .unwrap()
        .starts_with("text/plain"));
    let mut body = resp.bytes_stream();
    // The first piece must arrive alone: the later chunks are not even produced yet.
    let first = body.next().await.unwrap().unwrap();
    assert_eq!(&first[..], b"chunk 0\n");
    let mut pieces = vec![first];
    while let Some(piece) = body.next().await {
        pieces.push(piece.unwrap());
    }
    let all: Vec<u8> = pieces.iter().flat_map(|p| p.to_vec()).collect();
    assert_eq!(
        String::from_utf8(all).unwrap(),
        "chunk 0\nchunk 1\nchunk 2\nchunk 3\n"
    );
    assert!(
        pieces.len() >= 4,
        "expected one piece per chunk, got {}",
        pieces.len()
    );
}

#[tokio::test]
async fn wait_until_work_completes_after_the_response_was_sent() {
    let dir = ScratchDir::new("gcbb-probe");
    let out = dir.join("out.txt");
    let server = start_probe(Some(&out)).await;

    let resp = reqwest::get(server.url("/background?ms=700"))
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.text().await.unwrap(), "sent");
    assert!(
        !out.exists(),
        "the background work ran before the response was sent"
    );

    let mut done = false;
    for _ in 0..200 {
        if std::fs::read_to_string(&out).is_ok_and(|s| s.contains("background done")) {
            done = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(done, "the background work never completed");
}

#[tokio::test]
async fn shutdown_waits_for_pending_background_work() {
    let dir = ScratchDir::new("gcbb-probe");
    let out = dir.join("out.txt");
    let mut server = start_probe(Some(&out)).await;

    let resp = reqwest::get(server.url("/background?ms=1000"))
        .await
        .unwrap();
    assert_eq!(resp.text().await.unwrap(), "sent");
    assert!(server.terminate().await, "the function did not exit");
    assert_eq!(
        std::fs::read_to_string(&out).unwrap_or_default(),
        "background done\n",
        "SIGTERM cut the background work short"
    );
}
