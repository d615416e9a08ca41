//! A local stand-in for the few endpoints of Neon's API (v2) that `gcbb db rehearse
//! --neon-branch` calls, with Neon's paths, bodies, status codes and error shape: a "branch" of the
//! project's production database is a real local copy of it (`CREATE DATABASE … TEMPLATE`), its
//! connection URI reaches that copy, and deleting the branch drops it. The test picks how the API
//! misbehaves ([`Mode`]: an error, an answer that comes too late, a branch that never gets ready,
//! a URI that cannot be read) and reads every request it received.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, get, post};
use axum::{Json, Router};
use serde_json::{json, Value};
use tokio::net::TcpListener;

use super::{
    admin, databases_starting_with, drop_databases_now, quote_ident, server, unique, TestDb,
};

/// How the stand-in answers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// As Neon does.
    Normal,
    /// `POST …/branches` answers this status with Neon's error body, making nothing.
    CreateFails(u16),
    /// `POST …/branches` makes the branch, then answers only after this long.
    CreateAnswersLate(Duration),
    /// The branch's operations stay `running`.
    NeverReady,
    /// `GET …/connection_uri` answers 500.
    UriFails,
}

/// One request received.
#[derive(Debug, Clone)]
pub struct Request {
    pub method: String,
    pub path: String,
    pub query: String,
    pub body: Value,
    /// The `Authorization` header.
    pub authorization: Option<String>,
}

#[derive(Debug, Clone)]
struct Branch {
    id: String,
    name: String,
    database: String,
}

struct Inner {
    key: String,
    project: String,
    /// The production database branches are made from.
    parent_database: String,
    /// Every branch database starts with this.
    prefix: String,
    mode: Mutex<Mode>,
    branches: Mutex<Vec<Branch>>,
    requests: Mutex<Vec<Request>>,
    /// Held while a branch's database is being copied: a delete waits for it, as Neon finishes
    /// a branch's creation before deleting it.
    copying: tokio::sync::Mutex<()>,
}

/// The running stand-in.
pub struct NeonStandIn {
    /// `http://127.0.0.1:<port>/api/v2`: NEON_API_URL.
    pub url: String,
    pub key: String,
    pub project: String,
    /// Branch databases this stand-in makes are named `<prefix>…`.
    pub prefix: String,
    inner: Arc<Inner>,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Drop for NeonStandIn {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

impl NeonStandIn {
    /// A project whose production database is `production`.
    pub async fn start(production: &TestDb) -> NeonStandIn {
        let inner = Arc::new(Inner {
            key: format!("napi_{}", unique("key")),
            project: unique("project").replace('_', "-"),
            parent_database: production.name.clone(),
            prefix: format!("{}_", unique("gcbb_neonbr")),
            mode: Mutex::new(Mode::Normal),
            branches: Mutex::new(Vec::new()),
            requests: Mutex::new(Vec::new()),
            copying: tokio::sync::Mutex::new(()),
        });
        let app = Router::new()
            .route(
                "/api/v2/projects/{project}/branches",
                post(create).get(list),
            )
            .route(
                "/api/v2/projects/{project}/branches/{branch}",
                delete(remove),
            )
            .route(
                "/api/v2/projects/{project}/operations/{operation}",
                get(operation),
            )
            .route(
                "/api/v2/projects/{project}/connection_uri",
                get(connection_uri),
            )
            .with_state(inner.clone());
        // On a thread and a runtime of its own: it answers while the test blocks on a child
        // process.
        let (ready, addr) = std::sync::mpsc::channel();
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let thread = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(2)
                .enable_all()
                .build()
                .expect("a runtime for the stand-in");
            rt.block_on(async move {
                let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
                ready
                    .send(listener.local_addr().expect("addr"))
                    .expect("report the address");
                let _ = axum::serve(listener, app)
                    .with_graceful_shutdown(async {
                        let _ = stopped.await;
                    })
                    .await;
            });
        });
        let addr = addr.recv().expect("the stand-in listens");
        NeonStandIn {
            url: format!("http://{addr}/api/v2"),
            key: inner.key.clone(),
            project: inner.project.clone(),
            prefix: inner.prefix.clone(),
            inner,
            stop: Some(stop),
            thread: Some(thread),
        }
    }

    pub fn set_mode(&self, mode: Mode) {
        *self.inner.mode.lock().expect("mode") = mode;
    }

    pub fn requests(&self) -> Vec<Request> {
        self.inner.requests.lock().expect("requests").clone()
    }

    /// The branches that exist now, as (id, name).
    pub fn branches(&self) -> Vec<(String, String)> {
        self.inner
            .branches
            .lock()
            .expect("branches")
            .iter()
            .map(|b| (b.id.clone(), b.name.clone()))
            .collect()
    }

    /// The databases of the test server that are branches of this stand-in.
    pub async fn branch_databases(&self) -> Vec<String> {
        databases_starting_with(&self.prefix).await
    }

    /// The environment of a `gcbb` run against this stand-in.
    pub fn env(&self) -> Vec<(&'static str, String)> {
        vec![
            ("NEON_API_KEY", self.key.clone()),
            ("NEON_PROJECT_ID", self.project.clone()),
            ("NEON_API_URL", self.url.clone()),
        ]
    }
}

impl Drop for Inner {
    fn drop(&mut self) {
        // Whatever a failing test left: the branch databases go with the stand-in.
        let names: Vec<String> = self
            .branches
            .lock()
            .map(|b| b.iter().map(|b| b.database.clone()).collect())
            .unwrap_or_default();
        if !names.is_empty() {
            drop_databases_now(names);
        }
    }
}

fn error(status: StatusCode, code: &str, message: &str) -> Response {
    (
        status,
        Json(json!({ "code": code, "message": message, "request_id": unique("req") })),
    )
        .into_response()
}

/// [`admit_with`] for a request with neither query nor body.
fn admit(
    inner: &Inner,
    headers: &HeaderMap,
    project: &str,
    method: &str,
    path: String,
) -> Option<Response> {
    admit_with(
        inner,
        headers,
        project,
        method,
        path,
        String::new(),
        Value::Null,
    )
}

/// Records the request; the refusal of a wrong key (401) or project (404), as Neon answers.
fn admit_with(
    inner: &Inner,
    headers: &HeaderMap,
    project: &str,
    method: &str,
    path: String,
    query: String,
    body: Value,
) -> Option<Response> {
    let authorization = headers
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    inner.requests.lock().expect("requests").push(Request {
        method: method.to_owned(),
        path,
        query,
        body,
        authorization: authorization.clone(),
    });
    if authorization.as_deref() != Some(&format!("Bearer {}", inner.key)) {
        return Some(error(
            StatusCode::UNAUTHORIZED,
            "",
            "authentication required",
        ));
    }
    if project != inner.project {
        return Some(error(StatusCode::NOT_FOUND, "", "project not found"));
    }
    None
}

fn branch_json(inner: &Inner, b: &Branch, state: &str) -> Value {
    json!({
        "id": b.id, "project_id": inner.project, "parent_id": "br-production-000000",
        "name": b.name, "current_state": state, "created_at": "2026-12-06T12:00:00Z",
        "updated_at": "2026-12-06T12:00:00Z"
    })
}

async fn create(
    State(inner): State<Arc<Inner>>,
    Path(project): Path<String>,
    headers: HeaderMap,
    Json(body): Json<Value>,
) -> Response {
    let path = format!("/projects/{project}/branches");
    if let Some(r) = admit_with(
        &inner,
        &headers,
        &project,
        "POST",
        path,
        String::new(),
        body.clone(),
    ) {
        return r;
    }
    let mode = *inner.mode.lock().expect("mode");
    if let Mode::CreateFails(status) = mode {
        let status = StatusCode::from_u16(status).expect("status");
        return error(
            status,
            "",
            "branch creation failed: the stand-in was told to fail",
        );
    }
    let name = body["branch"]["name"]
        .as_str()
        .map(str::to_owned)
        .unwrap_or_else(|| unique("br"));
    let id = format!("br-{}", unique("stand").replace('_', "-"));
    let database = format!("{}{}", inner.prefix, &id[3..].replace('-', "_"));
    let branch = Branch {
        id: id.clone(),
        name,
        database,
    };
    // Made by a task of its own, as Neon's control plane goes on when the caller hangs up (axum
    // drops a handler whose client went away).
    let made = tokio::spawn(make_branch(inner.clone(), branch.clone())).await;
    match made {
        Ok(Ok(())) => {}
        Ok(Err((status, message))) => return error(status, "", &message),
        Err(e) => return error(StatusCode::INTERNAL_SERVER_ERROR, "", &e.to_string()),
    }
    if let Mode::CreateAnswersLate(late) = mode {
        tokio::time::sleep(late).await;
    }
    (
        StatusCode::CREATED,
        Json(json!({
            "branch": branch_json(&inner, &branch, "init"),
            "endpoints": [{
                "id": format!("ep-{}", &id[3..]), "host": "127.0.0.1", "branch_id": id,
                "type": "read_write", "current_state": "init", "pending_state": "active"
            }],
            "operations": [
                { "id": format!("op-create-{id}"), "branch_id": id, "action": "create_branch", "status": "running" },
                { "id": format!("op-start-{id}"), "branch_id": id, "action": "start_compute", "status": "scheduling" }
            ]
        })),
    )
        .into_response()
}

/// Lists the branch, then copies production into its database.
async fn make_branch(inner: Arc<Inner>, branch: Branch) -> Result<(), (StatusCode, String)> {
    // Listed as soon as it is accepted, as Neon lists a branch still being made.
    let copying = inner.copying.lock().await;
    inner
        .branches
        .lock()
        .expect("branches")
        .push(branch.clone());
    // A branch is a copy of production; the template copy needs production idle for an instant.
    let sql = format!(
        "CREATE DATABASE {} TEMPLATE {} STRATEGY FILE_COPY",
        quote_ident(&branch.database),
        quote_ident(&inner.parent_database)
    );
    let admin = admin().await;
    for _ in 0..20 {
        match admin.batch_execute(&sql).await {
            Ok(()) => return Ok(()),
            Err(e) if e.code() == Some(&tokio_postgres::error::SqlState::OBJECT_IN_USE) => {
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            Err(e) => {
                drop(copying);
                forget(&inner, &branch.id);
                return Err((StatusCode::INTERNAL_SERVER_ERROR, e.to_string()));
            }
        }
    }
    drop(copying);
    forget(&inner, &branch.id);
    Err((StatusCode::LOCKED, "the parent branch is busy".to_owned()))
}

/// The listed branch `id`, if there is one.
fn find(inner: &Inner, id: &str) -> Option<Branch> {
    let branches = inner.branches.lock().expect("branches");
    branches.iter().find(|b| b.id == id).cloned()
}

fn forget(inner: &Inner, id: &str) {
    inner
        .branches
        .lock()
        .expect("branches")
        .retain(|b| b.id != id);
}

async fn list(
    State(inner): State<Arc<Inner>>,
    Path(project): Path<String>,
    headers: HeaderMap,
) -> Response {
    let path = format!("/projects/{project}/branches");
    if let Some(r) = admit(&inner, &headers, &project, "GET", path) {
        return r;
    }
    let branches: Vec<Value> = inner
        .branches
        .lock()
        .expect("branches")
        .iter()
        .map(|b| branch_json(&inner, b, "ready"))
        .collect();
    Json(json!({ "branches": branches })).into_response()
}

async fn remove(
    State(inner): State<Arc<Inner>>,
    Path((project, branch)): Path<(String, String)>,
    headers: HeaderMap,
) -> Response {
    let path = format!("/projects/{project}/branches/{branch}");
    if let Some(r) = admit(&inner, &headers, &project, "DELETE", path) {
        return r;
    }
    // As Neon answers while another operation of the project runs.
    let Ok(_copied) = inner.copying.try_lock() else {
        return error(
            StatusCode::LOCKED,
            "",
            "project already has running conflicting operations, scheduling of new ones is prohibited",
        );
    };
    let Some(found) = find(&inner, &branch) else {
        return error(StatusCode::NOT_FOUND, "", "branch not found");
    };
    // On a task of its own: the branch is gone once deleting started, whoever hangs up.
    let dropping = {
        let inner = inner.clone();
        let found = found.clone();
        tokio::spawn(async move {
            admin()
                .await
                .batch_execute(&format!(
                    "DROP DATABASE IF EXISTS {} WITH (FORCE)",
                    quote_ident(&found.database)
                ))
                .await?;
            forget(&inner, &found.id);
            Ok::<(), tokio_postgres::Error>(())
        })
    };
    match dropping.await {
        Ok(Ok(())) => {}
        Ok(Err(e)) => return error(StatusCode::INTERNAL_SERVER_ERROR, "", &e.to_string()),
        Err(e) => return error(StatusCode::INTERNAL_SERVER_ERROR, "", &e.to_string()),
    }
    Json(json!({
        "branch": branch_json(&inner, &found, "ready"),
        "operations": [{ "id": format!("op-delete-{}", found.id), "action": "delete_timeline", "status": "scheduling" }]
    }))
    .into_response()
}

async fn operation(
    State(inner): State<Arc<Inner>>,
    Path((project, operation)): Path<(String, String)>,
    headers: HeaderMap,
) -> Response {
    let path = format!("/projects/{project}/operations/{operation}");
    if let Some(r) = admit(&inner, &headers, &project, "GET", path) {
        return r;
    }
    let status = if *inner.mode.lock().expect("mode") == Mode::NeverReady {
        "running"
    } else {
        "finished"
    };
    Json(json!({ "operation": {
        "id": operation, "project_id": project, "action": "create_branch",
        "status": status, "failures_count": 0
    }}))
    .into_response()
}

async fn connection_uri(
    State(inner): State<Arc<Inner>>,
    Path(project): Path<String>,
    Query(query): Query<std::collections::HashMap<String, String>>,
    headers: HeaderMap,
) -> Response {
    let mut pairs: Vec<String> = query.iter().map(|(k, v)| format!("{k}={v}")).collect();
    pairs.sort();
    let path = format!("/projects/{project}/connection_uri");
    if let Some(r) = admit_with(
        &inner,
        &headers,
        &project,
        "GET",
        path,
        pairs.join("&"),
        Value::Null,
    ) {
        return r;
    }
    if *inner.mode.lock().expect("mode") == Mode::UriFails {
        return error(StatusCode::INTERNAL_SERVER_ERROR, "", "internal error");
    }
    let branch = query.get("branch_id").cloned().unwrap_or_default();
    let Some(found) = find(&inner, &branch) else {
        return error(StatusCode::NOT_FOUND, "", "branch not found");
    };
    let role = query.get("role_name").cloned().unwrap_or_default();
    let server = server();
    Json(json!({
        "uri": format!(
            "postgresql://{role}@{}:{}/{}?sslmode=disable",
            server.host, server.port, found.database
        )
    }))
    .into_response()
}
