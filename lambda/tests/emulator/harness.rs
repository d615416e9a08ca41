//! What the emulator tests stand on: `cargo lambda watch` (the Lambda runtime emulator of
//! cargo-lambda, installed by `.ci/setup`) serving the Runtime API and function URLs, the
//! function binaries this test run built, started against it as Lambda starts them (the
//! database with the demo data is `gcbb_test_support::db::demo_db`).
//!
//! The emulator runs with `--only-lambda-apis`: it answers everything Lambda would (function
//! URL requests turned into events, the Runtime API the functions poll, `Invoke`) but leaves
//! starting the functions to us. Left to itself it would build them with `cargo run`, which
//! blocks on the build lock this very `cargo test` holds, and would compile the workspace
//! again for the package alone; the binaries built for this run are what is under test.

use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use gcbb_test_support::process::{binary, capture_output, free_port, Server};
use gcbb_test_support::project_root;

/// `CRON_SECRET` of every function under test.
pub const CRON_SECRET: &str = "cron-secret-for-lambda-tests";

/// `cargo lambda watch` on a port of its own.
pub struct Emulator {
    _process: Server,
    port: u16,
}

impl Emulator {
    pub async fn start() -> Emulator {
        let port = free_port();
        let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".to_owned());
        let installed = Command::new(&cargo)
            .args(["lambda", "--version"])
            .output()
            .is_ok_and(|out| out.status.success());
        assert!(
            installed,
            "cargo-lambda is not installed: run .ci/setup (it installs it when missing)"
        );
        let mut cmd = Command::new(cargo);
        cmd.current_dir(project_root())
            .args(["lambda", "watch", "--only-lambda-apis", "--disable-cors"])
            .args(["--invoke-address", "127.0.0.1"])
            .args(["--invoke-port", &port.to_string()])
            .args(["--package", "gcbb-lambda"])
            .env("RUST_LOG", "warn");
        Emulator {
            _process: Server::start(cmd, port).await,
            port,
        }
    }

    /// A function URL's address for `path`, as the emulator serves it.
    pub fn url(&self, function: &str, path: &str) -> String {
        format!("http://127.0.0.1:{}/lambda-url/{function}{path}", self.port)
    }

    /// The `Invoke` API's address for `function` (events other than HTTP requests).
    pub fn invoke_url(&self, function: &str) -> String {
        format!(
            "http://127.0.0.1:{}/2015-03-31/functions/{function}/invocations",
            self.port
        )
    }

    /// Starts `binary` as the Lambda function `function`, with the variables Lambda sets and
    /// `env`; it polls the emulator's Runtime API for its invocations.
    pub fn start_function(
        &self,
        binary_path: &str,
        function: &str,
        env: &[(&str, String)],
    ) -> Function {
        let mut cmd = binary(binary_path);
        cmd.env(
            "AWS_LAMBDA_RUNTIME_API",
            format!("http://127.0.0.1:{}/.rt/{function}", self.port),
        )
        .env("AWS_LAMBDA_FUNCTION_NAME", function)
        .env("AWS_LAMBDA_FUNCTION_VERSION", "1")
        .env("AWS_LAMBDA_FUNCTION_MEMORY_SIZE", "1024")
        .env("LLM_PROVIDER", "scripted");
        for (k, v) in env {
            cmd.env(k, v);
        }
        Function::spawn(cmd)
    }
}

/// A function process; killed when dropped.
pub struct Function {
    child: Child,
    output: Arc<Mutex<String>>,
    pub started: Instant,
}

impl Function {
    fn spawn(mut cmd: Command) -> Function {
        cmd.stdout(Stdio::piped()).stderr(Stdio::piped());
        let started = Instant::now();
        let mut child = cmd.spawn().expect("the function process starts");
        let output = capture_output(&mut child);
        Function {
            child,
            output,
            started,
        }
    }

    /// Everything the function printed so far (for assertion messages).
    pub fn output(&self) -> String {
        self.output.lock().unwrap().clone()
    }
}

impl Drop for Function {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A response read to its end, frame by frame: each piece with the time it arrived.
pub struct Streamed {
    pub status: u16,
    pub headers: reqwest::header::HeaderMap,
    /// Time from sending the request to its first body byte.
    pub first_byte: Duration,
    pub pieces: Vec<(Duration, bytes::Bytes)>,
}

impl Streamed {
    pub async fn read(request: reqwest::RequestBuilder) -> Streamed {
        use futures_util::StreamExt;
        let sent = Instant::now();
        let resp = request.send().await.expect("the request is answered");
        let status = resp.status().as_u16();
        let headers = resp.headers().clone();
        let mut pieces = Vec::new();
        let mut body = resp.bytes_stream();
        while let Some(piece) = body.next().await {
            let piece = piece.expect("the body streams");
            if !piece.is_empty() {
                pieces.push((sent.elapsed(), piece));
            }
        }
        Streamed {
            status,
            headers,
            first_byte: pieces.first().map(|(t, _)| *t).unwrap_or_default(),
            pieces,
        }
    }

    pub fn text(&self) -> String {
        let all: Vec<u8> = self.pieces.iter().flat_map(|(_, p)| p.to_vec()).collect();
        String::from_utf8(all).expect("a UTF-8 body")
    }

    /// When the last piece arrived.
    pub fn ended(&self) -> Duration {
        self.pieces.last().map(|(t, _)| *t).unwrap_or_default()
    }
}

/// Milliseconds, for the figures the tests print.
pub fn ms(d: Duration) -> String {
    format!("{:.1} ms", d.as_secs_f64() * 1000.0)
}
