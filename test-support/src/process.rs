//! Running real binaries in tests: pick a port, start a server process, wait until it listens,
//! and stop it (SIGTERM, then kill) when the test ends; find the binaries cargo built for the run.

use std::io::Read;
use std::net::TcpListener;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// How long a server process may take to start listening (it may create and migrate a database).
pub const STARTUP_LIMIT: Duration = Duration::from_secs(60);

/// A port that was free a moment ago.
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free local port")
}

/// Collects `child`'s piped stdout and stderr, as they come, into one shared string (read by
/// threads, so a chatty process never blocks on a full pipe).
pub fn capture_output(child: &mut Child) -> Arc<Mutex<String>> {
    let output = Arc::new(Mutex::new(String::new()));
    let streams = [
        child
            .stdout
            .take()
            .map(|s| Box::new(s) as Box<dyn Read + Send>),
        child
            .stderr
            .take()
            .map(|s| Box::new(s) as Box<dyn Read + Send>),
    ];
    for mut stream in streams.into_iter().flatten() {
        let output = output.clone();
        std::thread::spawn(move || {
            let mut buf = [0u8; 4096];
            while let Ok(n) = stream.read(&mut buf) {
                if n == 0 {
                    break;
                }
                output
                    .lock()
                    .unwrap()
                    .push_str(&String::from_utf8_lossy(&buf[..n]));
            }
        });
    }
    output
}

/// A server process listening on 127.0.0.1:`port`.
pub struct Server {
    child: Option<Child>,
    pub base: String,
    output: Arc<Mutex<String>>,
}

impl Server {
    /// Starts `cmd` and waits until `port` accepts connections; panics with the process's output
    /// if it exits first or takes too long.
    pub async fn start(mut cmd: Command, port: u16) -> Server {
        cmd.stdout(Stdio::piped()).stderr(Stdio::piped());
        let mut child = cmd.spawn().expect("server process starts");
        let output = capture_output(&mut child);
        let started = Instant::now();
        loop {
            if tokio::net::TcpStream::connect(("127.0.0.1", port))
                .await
                .is_ok()
            {
                break;
            }
            if let Ok(Some(status)) = child.try_wait() {
                tokio::time::sleep(Duration::from_millis(100)).await;
                panic!(
                    "server exited with {status} before listening:\n{}",
                    output.lock().unwrap()
                );
            }
            if started.elapsed() > STARTUP_LIMIT {
                let _ = child.kill();
                panic!(
                    "server did not listen on {port} within {STARTUP_LIMIT:?}:\n{}",
                    output.lock().unwrap()
                );
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        Server {
            child: Some(child),
            base: format!("http://127.0.0.1:{port}"),
            output,
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{}", self.base, path)
    }

    /// Everything the process printed so far.
    pub fn output(&self) -> String {
        self.output.lock().unwrap().clone()
    }

    /// Everything the process printed, once it has printed `text` (panics with the output if it
    /// hasn't within 10 s). A server may listen before it prints its banner, and the output is
    /// read by other threads, so a connected test can be ahead of it.
    pub async fn output_once_printed(&self, text: &str) -> String {
        let started = Instant::now();
        loop {
            let output = self.output();
            if output.contains(text) {
                return output;
            }
            if started.elapsed() > Duration::from_secs(10) {
                panic!("{text:?} never printed:\n{output}");
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Sends SIGTERM and waits (bounded) for the process to exit; returns whether it did.
    pub async fn terminate(&mut self) -> bool {
        self.send_sigterm();
        self.wait_for_exit(Duration::from_secs(30)).await
    }

    /// Sends SIGTERM, the signal a platform stops a process with, and returns at once.
    pub fn send_sigterm(&self) {
        if let Some(child) = self.child.as_ref() {
            let _ = Command::new("kill")
                .args(["-TERM", &child.id().to_string()])
                .status();
        }
    }

    /// `kill -9`: the process ends at once, whatever it was doing, as a crash or an out-of-memory
    /// kill ends it; waits until it is gone.
    pub async fn kill_9(&mut self) {
        if let Some(child) = self.child.as_mut() {
            let status = Command::new("kill")
                .args(["-9", &child.id().to_string()])
                .status();
            assert!(status.is_ok_and(|s| s.success()), "kill -9");
        }
        assert!(self.wait_for_exit(Duration::from_secs(10)).await);
    }

    /// Whether the process has exited.
    pub fn has_exited(&mut self) -> bool {
        match self.child.as_mut() {
            None => true,
            Some(child) => matches!(child.try_wait(), Ok(Some(_))),
        }
    }

    /// Waits at most `limit` for the process to exit; returns whether it did.
    pub async fn wait_for_exit(&mut self, limit: Duration) -> bool {
        let started = Instant::now();
        while started.elapsed() < limit {
            if self.has_exited() {
                self.child = None;
                return true;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        false
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if let Some(child) = self.child.as_mut() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// A command for one of the crate's binaries with a clean environment for our variables.
pub fn binary(path: &str) -> Command {
    let mut cmd = Command::new(path);
    for var in [
        "DATABASE_URL",
        "DATABASE_URL_UNPOOLED",
        "DIRECT_URL",
        "SHADOW_DATABASE_URL",
        "UPSTASH_REDIS_REST_URL",
        "UPSTASH_REDIS_REST_TOKEN",
        "KV_REST_API_URL",
        "KV_REST_API_TOKEN",
        "REDIS_URL",
        "CRON_SECRET",
        "CLERK_JWT_KEY",
        "CLERK_JWKS_URL",
        "CLERK_ISSUER",
        "CLERK_AUTHORIZED_PARTIES",
        "CORS_ALLOWED_ORIGINS",
        // A model or a trusted proxy named in the developer's shell would change the answers.
        "OPENAI_API_KEY",
        "OPENAI_BASE_URL",
        "LLM_PROVIDER",
        "TRUSTED_PROXY",
        "DEV_TRUSTED_PROXIES",
        "PORT",
        "VERCEL_ENV",
        "VERCEL_IPC_PATH",
    ] {
        cmd.env_remove(var);
    }
    cmd.env("RUST_LOG", "warn,gcbb=info");
    cmd
}

/// The path of an example target built beside this test binary (`target/<profile>/examples/`).
///
/// Cargo names examples' paths only for its own runs, not for tests (there is no
/// `CARGO_BIN_EXE_` for an example), so the path is found from where the test binary lives.
pub fn example_binary(name: &str) -> String {
    built_binary(&["examples", name])
}

/// The path of the binary target `name` of the package under test: `CARGO_BIN_EXE_<name>`
/// names it at compile time, and only in the test crate itself, so this crate finds it where
/// cargo puts it, beside the test binary's `deps/` (`target/<profile>/<name>`).
pub fn package_binary(name: &str) -> String {
    built_binary(&[name])
}

fn built_binary(under_profile: &[&str]) -> String {
    let exe = std::env::current_exe().expect("the test binary's path");
    let profile_dir = exe
        .parent()
        .and_then(|deps| deps.parent())
        .expect("the test binary sits in target/<profile>/deps");
    let path = under_profile
        .iter()
        .fold(profile_dir.to_path_buf(), |p, part| p.join(part));
    assert!(
        path.exists(),
        "{} is missing: `cargo test` builds it, run the tests through cargo",
        path.display()
    );
    path.to_string_lossy().into_owned()
}

/// A function binary started the way Vercel starts it (`VERCEL_DEV_PORT`), with `env`; it is
/// listening when this returns.
pub async fn start_vercel_function(path: &str, env: &[(&str, &str)]) -> Server {
    let port = free_port();
    let mut cmd = binary(path);
    cmd.env("VERCEL_DEV_PORT", port.to_string());
    for (k, v) in env {
        cmd.env(k, v);
    }
    Server::start(cmd, port).await
}
