//! The few calls of Neon's API (v2) a rehearsal needs to make its copy of production: a branch
//! with a compute, made in seconds whatever the size (copy-on-write), then deleted.
//!
//! - `POST /projects/{project_id}/branches` with `{"branch": {"name", "parent_id"?}, "endpoints":
//!   [{"type": "read_write"}]}`: the branch and its compute; the answer lists the `operations` it
//!   started (`create_branch`, `start_compute`).
//! - `GET /projects/{project_id}/operations/{operation_id}`, until each is `finished`.
//! - `GET /projects/{project_id}/connection_uri?branch_id=…&database_name=…&role_name=…&pooled=false`:
//!   the branch's direct URL (`{"uri"}`), for the production database and role.
//! - `DELETE /projects/{project_id}/branches/{branch_id}`.
//! - `GET /projects/{project_id}/branches`: after a create whose answer never came, to find the
//!   branch by its name and delete it.
//!
//! Each call is authenticated with `Authorization: Bearer $NEON_API_KEY` and bounded by a timeout;
//! `423 Locked` (another operation of the project is running) is retried within it. A failure
//! says which call failed and what Neon answered (`{"code", "message"}`), never the key.

use std::time::{Duration, Instant};

use gcbb::db::DbConfig;
use reqwest::{Method, StatusCode};
use serde::Deserialize;
use serde_json::{json, Value};

use super::error::MigrateError;

/// Neon's API.
pub const DEFAULT_API_URL: &str = "https://console.neon.tech/api/v2";
/// Bound on one call of the API.
pub const DEFAULT_API_TIMEOUT: Duration = Duration::from_secs(30);
/// How long the branch's operations may take to finish (the compute starting).
pub const DEFAULT_READY_TIMEOUT: Duration = Duration::from_secs(300);
/// How long a branch whose create answer was lost is looked for before concluding none was made.
const LOST_CREATE_WINDOW: Duration = Duration::from_secs(15);
/// Pause between two polls of an operation.
const POLL_PAUSE: Duration = Duration::from_millis(500);

/// Where and how to reach Neon's API.
#[derive(Clone)]
pub struct NeonConfig {
    /// `NEON_API_KEY`.
    pub api_key: String,
    /// `NEON_PROJECT_ID`.
    pub project_id: String,
    /// `NEON_API_URL`, for a proxy or a stand-in.
    pub api_url: String,
    /// `NEON_API_TIMEOUT_MS`: one call.
    pub timeout: Duration,
    /// `NEON_BRANCH_READY_TIMEOUT_MS`: the branch's operations together.
    pub ready_timeout: Duration,
    /// `--neon-parent`: the branch id to branch from (default: the project's default branch).
    pub parent: Option<String>,
}

impl std::fmt::Debug for NeonConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NeonConfig")
            .field("api_key", &"<redacted>")
            .field("project_id", &self.project_id)
            .field("api_url", &self.api_url)
            .field("timeout", &self.timeout)
            .field("ready_timeout", &self.ready_timeout)
            .field("parent", &self.parent)
            .finish()
    }
}

/// A branch this run made.
#[derive(Debug, Clone)]
pub struct Branch {
    pub id: String,
    pub name: String,
    /// Its direct URL, for the target's database and role.
    pub db: DbConfig,
}

/// The API client, built once per run.
pub struct NeonClient {
    http: reqwest::Client,
    config: NeonConfig,
}

#[derive(Deserialize)]
struct BranchBody {
    id: String,
    name: String,
}

#[derive(Deserialize)]
struct OperationBody {
    id: String,
    status: String,
}

#[derive(Deserialize)]
struct CreateAnswer {
    branch: BranchBody,
    #[serde(default)]
    operations: Vec<OperationBody>,
}

/// How one call failed.
enum CallError {
    TimedOut,
    /// Not reached, or an answer that is not Neon's.
    Transport(String),
    Status(StatusCode, String),
}

impl NeonClient {
    pub fn new(config: NeonConfig) -> Result<Self, MigrateError> {
        let http = reqwest::Client::builder()
            .timeout(config.timeout)
            .connect_timeout(config.timeout)
            .user_agent("gcbb db rehearse")
            .build()
            .map_err(|e| MigrateError::Neon(format!("cannot build the HTTP client: {e}")))?;
        Ok(NeonClient { http, config })
    }

    fn url(&self, path: &str) -> String {
        format!(
            "{}/projects/{}{path}",
            self.config.api_url.trim_end_matches('/'),
            self.config.project_id
        )
    }

    /// One call, `423 Locked` retried until the call's timeout has passed.
    async fn call(
        &self,
        method: Method,
        path: &str,
        body: Option<&Value>,
    ) -> Result<Value, CallError> {
        let started = Instant::now();
        let mut pause = Duration::from_millis(200);
        loop {
            let mut request = self
                .http
                .request(method.clone(), self.url(path))
                .bearer_auth(&self.config.api_key)
                .header("Accept", "application/json");
            if let Some(body) = body {
                request = request.json(body);
            }
            let answer = match request.send().await {
                Ok(answer) => answer,
                Err(e) if e.is_timeout() => return Err(CallError::TimedOut),
                Err(e) => return Err(CallError::Transport(without_url(&e))),
            };
            let status = answer.status();
            let text = match answer.text().await {
                Ok(text) => text,
                Err(e) if e.is_timeout() => return Err(CallError::TimedOut),
                Err(e) => return Err(CallError::Transport(without_url(&e))),
            };
            if status == StatusCode::LOCKED && started.elapsed() + pause < self.config.timeout {
                tokio::time::sleep(pause).await;
                pause = (pause * 2).min(Duration::from_secs(2));
                continue;
            }
            if !status.is_success() {
                return Err(CallError::Status(status, neon_message(&text)));
            }
            return serde_json::from_str(&text).map_err(|e| {
                CallError::Transport(format!("an answer that is not Neon's JSON ({e})"))
            });
        }
    }

    fn failure(&self, what: &str, method: &Method, path: &str, e: CallError) -> MigrateError {
        let call = format!("{method} {}{path}", self.url("").trim_end_matches('/'));
        MigrateError::Neon(match e {
            CallError::TimedOut => format!(
                "{what}: {call} did not answer within {} ms (NEON_API_TIMEOUT_MS)",
                self.config.timeout.as_millis()
            ),
            CallError::Transport(m) => format!("{what}: {call} failed: {m}"),
            CallError::Status(status, message) => {
                format!("{what}: {call} answered {status}: {message}")
            }
        })
    }

    /// Creates a branch named `name` with a read-write compute, waits until it is ready, and
    /// reads its direct URL for `target`'s database and role. Whatever fails after the branch was
    /// made, it is deleted before the error is returned (a create whose answer never came is
    /// looked up by name). `on_made` hears about a branch as soon as it exists, so a caller that
    /// is interrupted knows what to delete.
    pub async fn create_branch(
        &self,
        name: &str,
        target: &DbConfig,
        on_made: impl Fn(&str),
    ) -> Result<Branch, MigrateError> {
        let mut branch = json!({ "name": name });
        if let Some(parent) = &self.config.parent {
            branch["parent_id"] = json!(parent);
        }
        let body = json!({ "branch": branch, "endpoints": [{ "type": "read_write" }] });
        let path = "/branches";
        let created = match self.call(Method::POST, path, Some(&body)).await {
            Ok(v) => serde_json::from_value::<CreateAnswer>(v).map_err(|e| {
                MigrateError::Neon(format!(
                    "creating the branch: an answer without the branch ({e})"
                ))
            }),
            Err(e) => {
                let timed_out = matches!(e, CallError::TimedOut | CallError::Transport(_));
                let mut err = self.failure("creating the branch", &Method::POST, path, e);
                if timed_out {
                    // The branch may exist though its answer was lost: find it, delete it.
                    err = self.cleanup_by_name(name, err).await;
                }
                return Err(err);
            }
        };
        let created = match created {
            Ok(c) => c,
            Err(e) => return Err(self.cleanup_by_name(name, e).await),
        };
        on_made(&created.branch.id);
        let ready = async {
            self.wait_for(&created.operations).await?;
            self.connection_uri(&created.branch.id, target).await
        }
        .await;
        match ready {
            Ok(db) => Ok(Branch {
                id: created.branch.id,
                name: created.branch.name,
                db,
            }),
            Err(e) => Err(self.cleanup(&created.branch.id, e).await),
        }
    }

    /// Deletes the branch `id`; the error, when it fails, names it so it can be deleted by hand.
    /// Deleting is what guarantees no branch is left behind, so a delete that timed out, could
    /// not reach Neon, or met another operation of the project is tried again for
    /// [`LOST_CREATE_WINDOW`] (or a call's timeout, if longer); a branch already gone is deleted.
    pub async fn delete_branch(&self, id: &str) -> Result<(), MigrateError> {
        let path = format!("/branches/{id}");
        let started = Instant::now();
        let window = self.config.timeout.max(LOST_CREATE_WINDOW);
        loop {
            let e = match self.call(Method::DELETE, &path, None).await {
                Ok(_) => return Ok(()),
                Err(CallError::Status(StatusCode::NOT_FOUND, _)) => return Ok(()),
                Err(e) => e,
            };
            let transient = match &e {
                CallError::TimedOut | CallError::Transport(_) => true,
                CallError::Status(status, _) => {
                    *status == StatusCode::LOCKED || status.is_server_error()
                }
            };
            if !transient || started.elapsed() >= window {
                return Err(self.failure(
                    &format!("deleting the branch {id} (delete it by hand: neonctl branches delete {id})"),
                    &Method::DELETE,
                    &path,
                    e,
                ));
            }
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
    }

    /// The project's id, for messages.
    pub fn project_id(&self) -> &str {
        &self.config.project_id
    }

    /// Finds the branch named `name` and deletes it: after a create whose answer never came.
    /// Returns its id, or `None` when there is no such branch.
    pub async fn delete_named(&self, name: &str) -> Result<Option<String>, MigrateError> {
        let path = "/branches";
        let list = self
            .call(Method::GET, path, None)
            .await
            .map_err(|e| self.failure("listing the branches", &Method::GET, path, e))?;
        let found = list["branches"]
            .as_array()
            .into_iter()
            .flatten()
            .find(|b| b["name"] == name)
            .and_then(|b| b["id"].as_str().map(str::to_owned));
        match found {
            Some(id) => self.delete_branch(&id).await.map(|()| Some(id)),
            None => Ok(None),
        }
    }

    /// `err`, after deleting branch `id` (and saying so, or why not).
    async fn cleanup(&self, id: &str, err: MigrateError) -> MigrateError {
        match self.delete_branch(id).await {
            Ok(()) => MigrateError::Neon(format!("{}; the branch {id} was deleted", strip(&err))),
            Err(d) => MigrateError::Neon(format!("{}; and {}", strip(&err), strip(&d))),
        }
    }

    /// `err`, after finding the branch named `name`, if it was made, and deleting it. A create
    /// whose answer was lost may not be listed yet: the branches are listed again for
    /// [`LOST_CREATE_WINDOW`] (or a call's timeout, if longer) before concluding that none was made.
    async fn cleanup_by_name(&self, name: &str, err: MigrateError) -> MigrateError {
        let started = Instant::now();
        let window = self.config.timeout.max(LOST_CREATE_WINDOW);
        loop {
            match self.delete_named(name).await {
                Ok(Some(id)) => {
                    return MigrateError::Neon(format!(
                        "{}; the branch {id} it made was found and deleted",
                        strip(&err)
                    ))
                }
                Ok(None) if started.elapsed() < window => {
                    tokio::time::sleep(Duration::from_secs(1)).await;
                }
                Ok(None) => {
                    return MigrateError::Neon(format!(
                        "{}; no branch named {name} appeared within {} s (if one appears later, delete it: \
                         neonctl branches delete {name})",
                        strip(&err),
                        window.as_secs()
                    ))
                }
                Err(e) => {
                    return MigrateError::Neon(format!(
                        "{}; whether the branch {name} was made is unknown ({}): check with neonctl branches list",
                        strip(&err),
                        strip(&e)
                    ))
                }
            }
        }
    }

    async fn wait_for(&self, operations: &[OperationBody]) -> Result<(), MigrateError> {
        let started = Instant::now();
        for op in operations {
            let path = format!("/operations/{}", op.id);
            let mut status = op.status.clone();
            loop {
                match status.as_str() {
                    "finished" | "skipped" => break,
                    "failed" | "error" | "cancelled" | "cancelling" => {
                        return Err(MigrateError::Neon(format!(
                            "the branch is not usable: Neon's operation {} ended `{status}`",
                            op.id
                        )))
                    }
                    _ => {}
                }
                if started.elapsed() > self.config.ready_timeout {
                    return Err(MigrateError::Neon(format!(
                        "the branch was not ready after {} s (operation {} still `{status}`; \
                         NEON_BRANCH_READY_TIMEOUT_MS)",
                        self.config.ready_timeout.as_secs(),
                        op.id
                    )));
                }
                tokio::time::sleep(POLL_PAUSE).await;
                let answer = self
                    .call(Method::GET, &path, None)
                    .await
                    .map_err(|e| self.failure("waiting for the branch", &Method::GET, &path, e))?;
                let polled: OperationBody = serde_json::from_value(answer["operation"].clone())
                    .map_err(|e| {
                        MigrateError::Neon(format!(
                            "waiting for the branch: an answer without the operation ({e})"
                        ))
                    })?;
                status = polled.status;
            }
        }
        Ok(())
    }

    /// The branch's direct (unpooled) URL for `target`'s database and role: a rehearsal holds an
    /// advisory lock and session settings, which a pooler in transaction mode does not keep.
    async fn connection_uri(
        &self,
        branch_id: &str,
        target: &DbConfig,
    ) -> Result<DbConfig, MigrateError> {
        let path = format!(
            "/connection_uri?branch_id={}&database_name={}&role_name={}&pooled=false",
            encode(branch_id),
            encode(&target.dbname),
            encode(&target.user)
        );
        let answer = self
            .call(Method::GET, &path, None)
            .await
            .map_err(|e| self.failure("reading the branch's URL", &Method::GET, &path, e))?;
        let uri = answer["uri"].as_str().ok_or_else(|| {
            MigrateError::Neon("reading the branch's URL: an answer without `uri`".to_owned())
        })?;
        DbConfig::parse(uri).map_err(|e| MigrateError::Neon(format!("the branch's URL: {e}")))
    }
}

/// Neon's error body `{"code", "message"}` as one line (the raw text, shortened, otherwise).
fn neon_message(text: &str) -> String {
    match serde_json::from_str::<Value>(text) {
        Ok(v) if v["message"].is_string() => {
            let message = v["message"].as_str().unwrap_or_default();
            match v["code"].as_str().filter(|c| !c.is_empty()) {
                Some(code) => format!("{message} ({code})"),
                None => message.to_owned(),
            }
        }
        _ => text.chars().take(200).collect::<String>().trim().to_owned(),
    }
}

/// reqwest's error without the URL it repeats (the message already names the call).
fn without_url(e: &reqwest::Error) -> String {
    let mut e = e.to_string();
    if let Some(at) = e.find(" for url (") {
        e.truncate(at);
    }
    e
}

fn strip(e: &MigrateError) -> String {
    match e {
        MigrateError::Neon(m) => m.clone(),
        other => other.to_string(),
    }
}

fn encode(s: &str) -> String {
    url::form_urlencoded::byte_serialize(s.as_bytes()).collect()
}

/// A branch name of this run: `gcbb-rehearse-<database>-<12 random characters>`.
pub fn branch_name(target: &DbConfig) -> String {
    let db: String = target
        .dbname
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() {
                c.to_ascii_lowercase()
            } else {
                '-'
            }
        })
        .take(30)
        .collect();
    let suffix = uuid::Uuid::new_v4().simple().to_string();
    format!("gcbb-rehearse-{db}-{}", &suffix[..12])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn neons_error_body_is_read_and_the_key_never_shows() {
        assert_eq!(
            neon_message(r#"{"code":"","message":"authentication required","request_id":"x"}"#),
            "authentication required"
        );
        assert_eq!(
            neon_message(r#"{"code":"PROJECT_NOT_FOUND","message":"project not found"}"#),
            "project not found (PROJECT_NOT_FOUND)"
        );
        assert_eq!(
            neon_message("upstream connect error"),
            "upstream connect error"
        );
        let config = NeonConfig {
            api_key: "napi_secret".to_owned(),
            project_id: "p".to_owned(),
            api_url: DEFAULT_API_URL.to_owned(),
            timeout: DEFAULT_API_TIMEOUT,
            ready_timeout: DEFAULT_READY_TIMEOUT,
            parent: None,
        };
        assert!(!format!("{config:?}").contains("napi_secret"));
        let target = DbConfig::parse("postgres://u@h/Neon_DB").expect("url");
        assert!(branch_name(&target).starts_with("gcbb-rehearse-neon-db-"));
    }
}
