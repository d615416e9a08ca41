//! The adapter, through a probe function (`tests/probe.rs`) served by it exactly as the real
//! functions are: a streamed body arrives frame by frame, a buffered one whole, and background
//! work handed to `wait_until` neither holds the response back nor outlives its invocation.

use std::path::Path;
use std::time::Duration;

use gcbb_test_support::process::example_binary;
use gcbb_test_support::ScratchDir;

use crate::harness::{ms, Emulator, Function, Streamed};

/// The emulator knows functions by the package's binary names; the probe answers as one.
const PROBE: &str = "gcbb-health";

/// A database URL nothing listens on: the probe never connects, `App` only needs one.
const NO_DATABASE: &str = "postgres://nobody@127.0.0.1:1/none?sslmode=disable";

fn start_probe(emulator: &Emulator, mode: &str, out: &Path) -> Function {
    emulator.start_function(
        &example_binary("lambda-probe"),
        PROBE,
        &[
            ("PROBE_MODE", mode.to_owned()),
            ("PROBE_OUT", out.to_string_lossy().into_owned()),
            ("DATABASE_URL", NO_DATABASE.to_owned()),
        ],
    )
}

/// A directory of the test's own for the probe's report file (`out.txt`).
fn scratch_dir() -> ScratchDir {
    ScratchDir::new("gcbb-lambda-probe")
}

#[tokio::test]
async fn a_streamed_response_arrives_in_pieces_as_they_are_produced() {
    let emulator = Emulator::start().await;
    let dir = scratch_dir();
    let out = dir.join("out.txt");
    let probe = start_probe(&emulator, "streaming", &out);
    let client = reqwest::Client::new();
    let streamed =
        Streamed::read(client.get(emulator.url(PROBE, "/api/probe?op=stream&chunks=4&gapMs=300")))
            .await;
    assert_eq!(streamed.status, 200, "{}", probe.output());
    assert!(streamed.headers["content-type"]
        .to_str()
        .unwrap()
        .starts_with("text/plain"));
    assert_eq!(streamed.text(), "chunk 0\nchunk 1\nchunk 2\nchunk 3\n");
    // The first piece arrives alone: the later lines are not even produced yet.
    assert_eq!(&streamed.pieces[0].1[..], b"chunk 0\n");
    assert!(
        streamed.pieces.len() >= 4,
        "{} pieces",
        streamed.pieces.len()
    );
    assert!(
        streamed.ended() - streamed.first_byte >= Duration::from_millis(800),
        "the pieces arrived together: {} to {}",
        ms(streamed.first_byte),
        ms(streamed.ended())
    );
}

#[tokio::test]
async fn a_buffered_response_arrives_whole() {
    let emulator = Emulator::start().await;
    let dir = scratch_dir();
    let out = dir.join("out.txt");
    let probe = start_probe(&emulator, "buffered", &out);
    let client = reqwest::Client::new();
    let buffered =
        Streamed::read(client.get(emulator.url(PROBE, "/api/probe?op=stream&chunks=3&gapMs=100")))
            .await;
    assert_eq!(buffered.status, 200, "{}", probe.output());
    assert_eq!(buffered.text(), "chunk 0\nchunk 1\nchunk 2\n");
    assert_eq!(buffered.headers["content-length"], "24");
}

/// Background work handed over during the handler (buffered) or as a streamed body ends (a
/// reply's token accounting): the response is complete before the work is done, and the
/// function's next invocation starts only after it, which the probe itself reports.
#[tokio::test]
async fn background_work_finishes_before_the_next_invocation_without_holding_the_response() {
    for (mode, path) in [
        ("buffered", "/api/probe?op=background&ms=1500"),
        (
            "streaming",
            "/api/probe?op=background&ms=1500&afterStream=1",
        ),
    ] {
        let emulator = Emulator::start().await;
        let dir = scratch_dir();
        let out = dir.join("out.txt");
        let probe = start_probe(&emulator, mode, &out);
        let client = reqwest::Client::new();
        // Started and warm first: the timing below is the response's alone.
        let look = Streamed::read(client.get(emulator.url(PROBE, "/api/probe?op=look"))).await;
        assert_eq!(
            (look.status, look.text().as_str()),
            (200, ""),
            "{}",
            probe.output()
        );

        let sent = Streamed::read(client.get(emulator.url(PROBE, path))).await;
        assert_eq!(
            (sent.status, sent.text().as_str()),
            (200, "sent\n"),
            "{mode}"
        );
        assert!(
            !out.exists(),
            "{mode}: the response waited for the background work ({} to its end)",
            ms(sent.ended())
        );

        let look = Streamed::read(client.get(emulator.url(PROBE, "/api/probe?op=look"))).await;
        assert_eq!(
            look.text(),
            "background done\n",
            "{mode}: the next invocation started before the background work ended"
        );
    }
}
