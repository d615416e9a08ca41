//! The app under test, in-process. [`TestApp::builder`] is the one place that makes what a route
//! test needs: a fresh database cloned from the migrated template (with the demo data, or a
//! test's own rows, when asked), the session-token configuration, a random cache key prefix on
//! the cache of choice (memory, the local Redis, or Upstash through a real `gcbb upstash-proxy`,
//! the stand-in for an outside service), the local model server when the test needs a model, and
//! any environment overrides; then the real `App` from `Config::from_vars` and the router of
//! every function, built as `gcbb dev` builds it.
//!
//! Requests go through that router in-process ([`super::request`]). Work handed to `wait_until`
//! runs on the platform's local tracker, in the test's own runtime. A real socket is opened
//! only for a test that needs one ([`TestApp::serve`]).

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use axum::http::Method;
use axum::Router;
use bytes::Bytes;
use gcbb::config::Config;
use gcbb::platform::app::App;
use gcbb::routes::VercelJson;
use gcbb_cli::model_server::{LocalModelServer, Script};
use serde_json::Value;
use tower_http::services::ServeDir;

use super::request::{TestRequest, TestResponse};
use super::session::clerk_env;
use super::{fresh_db, project_root, redis_url, unique, TestDb, EVENTUALLY_LIMIT};
use gcbb_test_support::process::Server;
pub use gcbb_test_support::upstash::start_upstash_proxy;

/// `CRON_SECRET` of every app under test.
pub const CRON_SECRET: &str = "cron-secret-for-tests";
/// The system user of the demo data and of every app under test (`SYSTEM_USER_ID`'s default).
pub const SYSTEM_USER: &str = gcbb_test_support::db::DEMO_SYSTEM_USER;

/// Where the app under test keeps its cache.
#[derive(Debug, Clone)]
pub enum CacheKind {
    /// In-process memory only.
    Memory,
    /// The shared test Redis (`TEST_REDIS_URL`), natively.
    Redis,
    /// Another Redis: a private one the test stops, or a port where nothing listens.
    RedisAt(String),
    /// Upstash REST, through a real `gcbb upstash-proxy` over the shared test Redis.
    Upstash,
}

/// What to make; [`TestAppBuilder::start`] makes it.
pub struct TestAppBuilder {
    demo_data: bool,
    fixtures: Vec<String>,
    cache: CacheKind,
    model: Option<Script>,
    env: Vec<(String, String)>,
    db_port: Option<u16>,
}

impl TestAppBuilder {
    /// The app reaches its database through a proxy on 127.0.0.1:`port` (a
    /// [`super::fault::TcpProxy`] the test black-holes or closes); fixtures and `pg` go direct.
    pub fn database_via(mut self, port: u16) -> Self {
        self.db_port = Some(port);
        self
    }

    /// The demo data of `gcbb dev` (8 categories, 40 companions, messages, a demo group), with
    /// the read model refreshed.
    pub fn demo_data(mut self) -> Self {
        self.demo_data = true;
        self
    }

    /// SQL run on the fresh database before the app starts (a test's own rows).
    pub fn fixtures(mut self, sql: impl Into<String>) -> Self {
        self.fixtures.push(sql.into());
        self
    }

    pub fn cache(mut self, kind: CacheKind) -> Self {
        self.cache = kind;
        self
    }

    /// The local model server, answering with `script`, as the app's model. Without one the
    /// app uses the offline scripted model (never a real provider).
    pub fn model(mut self, script: Script) -> Self {
        self.model = Some(script);
        self
    }

    /// The rate limit of `bucket` (`SEARCH`, `DASHBOARD`, …): `requests` per window of
    /// `window_ms`.
    pub fn rate_limit(self, bucket: &str, requests: u32, window_ms: u64) -> Self {
        self.env(
            &format!("RATE_LIMIT_{bucket}_REQUESTS"),
            &requests.to_string(),
        )
        .env(
            &format!("RATE_LIMIT_{bucket}_WINDOW_MS"),
            &window_ms.to_string(),
        )
    }

    /// An environment variable for `Config::from_vars`, over the harness's own; an empty value
    /// unsets one (`CRON_SECRET`, `CLERK_JWT_KEY`).
    pub fn env(mut self, name: &str, value: &str) -> Self {
        self.env.push((name.to_owned(), value.to_owned()));
        self
    }

    pub async fn start(self) -> TestApp {
        let db = fresh_db().await;
        let pg = db.client().await;
        if self.demo_data {
            gcbb_cli::demo::insert_demo_data_if_empty(&pg, SYSTEM_USER)
                .await
                .expect("insert the demo data");
        }
        for sql in &self.fixtures {
            pg.batch_execute(sql).await.expect("insert the fixtures");
        }
        let model = match self.model {
            Some(script) => Some(Arc::new(
                LocalModelServer::start(script)
                    .await
                    .expect("the local model server starts"),
            )),
            None => None,
        };
        let prefix = unique("gcbbtest");
        let app_db_url = match self.db_port {
            None => db.url.clone(),
            Some(port) => url_via(&db.url, port),
        };
        let mut vars: HashMap<String, String> = HashMap::from([
            ("DATABASE_URL".into(), app_db_url),
            ("CACHE_KEY_PREFIX".into(), prefix.clone()),
            ("CRON_SECRET".into(), CRON_SECRET.into()),
            // Requests sent in process stand for what Vercel forwards: its headers name the client.
            ("TRUSTED_PROXY".into(), "vercel".into()),
        ]);
        vars.extend(clerk_env().map(|(k, v)| (k.to_owned(), v)));
        match &model {
            Some(model) => {
                vars.insert("OPENAI_BASE_URL".into(), model.base_url());
                vars.insert("OPENAI_API_KEY".into(), "sk-local".into());
            }
            None => {
                vars.insert("LLM_PROVIDER".into(), "scripted".into());
            }
        }
        let (proxy, redis_url) = match &self.cache {
            CacheKind::Memory => (None, None),
            CacheKind::Redis => {
                vars.insert("REDIS_URL".into(), redis_url());
                (None, Some(redis_url()))
            }
            CacheKind::RedisAt(url) => {
                vars.insert("REDIS_URL".into(), url.clone());
                (None, None)
            }
            CacheKind::Upstash => {
                let token = unique("token");
                let proxy = start_upstash_proxy(&token).await;
                vars.insert("UPSTASH_REDIS_REST_URL".into(), proxy.base.clone());
                vars.insert("UPSTASH_REDIS_REST_TOKEN".into(), token);
                (Some(proxy), Some(redis_url()))
            }
        };
        vars.extend(self.env);
        let (app, router) = build_app(&vars);
        // The prefix the app really uses: unsetting CACHE_KEY_PREFIX gives it the default one,
        // scoped to its database.
        let prefix = app.config.cache_key_prefix.clone();
        TestApp {
            app,
            router,
            db: Arc::new(db),
            pg,
            prefix,
            vars,
            model,
            proxy,
            redis_url,
            owns_prefix: true,
        }
    }
}

/// `database_url` reached through 127.0.0.1:`port` instead (a proxy in front of the server).
fn url_via(database_url: &str, port: u16) -> String {
    let mut url = url::Url::parse(database_url).expect("the test database URL");
    url.set_host(Some("127.0.0.1")).expect("a host");
    url.set_port(Some(port)).expect("a port");
    url.to_string()
}

/// The app and the router of every function, as `gcbb dev` builds them (static files from
/// `public/` outside `/api/`).
fn build_app(vars: &HashMap<String, String>) -> (Arc<App>, Router) {
    let config = Config::from_vars(vars).expect("the test configuration is valid");
    let app = App::new(config);
    let statics = Router::new().fallback_service(ServeDir::new(project_root().join("public")));
    let router = gcbb::routes::router(app.clone(), &VercelJson::embedded(), statics);
    (app, router)
}

/// An app under test and what it stands on; everything is cleaned up when it is dropped (the
/// database, the cache keys under its prefix, the model server, the proxy).
pub struct TestApp {
    pub app: Arc<App>,
    pub router: Router,
    pub db: Arc<TestDb>,
    /// A connection to the test's database, for fixtures and for checking what was stored.
    pub pg: tokio_postgres::Client,
    /// The app's `CACHE_KEY_PREFIX`: every cache key it writes starts with it.
    pub prefix: String,
    /// The configuration it was built from.
    pub vars: HashMap<String, String>,
    model: Option<Arc<LocalModelServer>>,
    proxy: Option<Server>,
    /// The Redis under the cache, when the prefix is to be cleaned up from it.
    redis_url: Option<String>,
    owns_prefix: bool,
}

impl TestApp {
    pub fn builder() -> TestAppBuilder {
        TestAppBuilder {
            demo_data: false,
            fixtures: Vec::new(),
            cache: CacheKind::Memory,
            model: None,
            env: Vec::new(),
            db_port: None,
        }
    }

    /// An app with the demo data whose cache is `cache`: the builder, to add to and start.
    pub fn demo_with(cache: CacheKind) -> TestAppBuilder {
        Self::builder().demo_data().cache(cache)
    }

    /// The local model server; panics when the app was built without one.
    pub fn model(&self) -> &LocalModelServer {
        self.model
            .as_deref()
            .expect("built with TestAppBuilder::model")
    }

    pub fn request(&self, method: Method, path: &str) -> TestRequest {
        TestRequest::new(self.router.clone(), method, path)
    }

    pub fn get(&self, path: &str) -> TestRequest {
        self.request(Method::GET, path)
    }

    /// A `POST` with no body.
    pub fn post(&self, path: &str) -> TestRequest {
        self.request(Method::POST, path)
    }

    /// A `POST` with a body of any content type.
    pub fn post_body(&self, path: &str, content_type: &str, body: impl Into<Bytes>) -> TestRequest {
        self.request(Method::POST, path).body(content_type, body)
    }

    pub fn post_json(&self, path: &str, body: &Value) -> TestRequest {
        self.request(Method::POST, path).json(body)
    }

    pub fn patch_json(&self, path: &str, body: &Value) -> TestRequest {
        self.request(Method::PATCH, path).json(body)
    }

    /// `PATCH /api/companion/<id>` with `body`, signed in as `user`.
    pub async fn edit_companion(&self, id: &str, body: &Value, user: &str) -> TestResponse {
        self.patch_json(&format!("/api/companion/{id}"), body)
            .signed_in(user)
            .send()
            .await
    }

    /// `GET /api/cron/refresh` as Vercel Cron sends it, with the secret.
    pub async fn refresh(&self) -> TestResponse {
        self.get("/api/cron/refresh")
            .bearer(CRON_SECRET)
            .send()
            .await
    }

    /// Runs the cron refresh, asserts it answered 200, and returns the step of its report named
    /// `name`.
    pub async fn refresh_step(&self, name: &str) -> Value {
        let resp = self.refresh().await;
        assert_eq!(resp.status, 200, "{}", resp.text());
        let report = resp.json();
        let steps = report["steps"].as_array().unwrap();
        steps.iter().find(|s| s["name"] == name).cloned().unwrap()
    }

    /// (role, content) of each message of the model's last request.
    pub fn model_context(&self) -> Vec<(String, String)> {
        self.model().last_request().unwrap()["messages"]
            .as_array()
            .unwrap()
            .iter()
            .map(|m| {
                (
                    m["role"].as_str().unwrap().to_owned(),
                    m["content"].as_str().unwrap().to_owned(),
                )
            })
            .collect()
    }

    /// The single number a query returns (`SELECT count(*) …`).
    pub async fn count(&self, sql: &str) -> i64 {
        self.pg
            .query_one(sql, &[])
            .await
            .unwrap_or_else(|e| panic!("{sql}: {e}"))
            .get(0)
    }

    /// The rows of a three-column query, each as a tuple.
    pub async fn triples<A, B, C>(
        &self,
        sql: &str,
        params: &[&(dyn tokio_postgres::types::ToSql + Sync)],
    ) -> Vec<(A, B, C)>
    where
        A: for<'r> tokio_postgres::types::FromSql<'r>,
        B: for<'r> tokio_postgres::types::FromSql<'r>,
        C: for<'r> tokio_postgres::types::FromSql<'r>,
    {
        let rows = self
            .pg
            .query(sql, params)
            .await
            .unwrap_or_else(|e| panic!("{sql}: {e}"));
        rows.iter()
            .map(|r| (r.get(0), r.get(1), r.get(2)))
            .collect()
    }

    /// The keys under the app's prefix in Redis that match `pattern` (after `<prefix>:`), read
    /// from Redis itself rather than through the app.
    pub async fn redis_keys(&self, pattern: &str) -> Vec<String> {
        let url = self
            .redis_url
            .as_deref()
            .expect("an app whose cache is the local Redis");
        let client = redis::Client::open(url).expect("a Redis URL");
        let mut conn = client
            .get_multiplexed_async_connection()
            .await
            .expect("connect to Redis");
        let mut keys: Vec<String> = redis::cmd("KEYS")
            .arg(format!("{}:{pattern}", self.prefix))
            .query_async(&mut conn)
            .await
            .expect("KEYS");
        keys.sort();
        keys
    }

    /// Waits until the background work (`wait_until`) of every in-process request so far has
    /// finished: for checking that something was *not* stored, which no poll can prove.
    pub async fn finish_background(&self) {
        assert!(
            gcbb::platform::background::drain_local(EVENTUALLY_LIMIT).await,
            "background work still running after {EVENTUALLY_LIMIT:?}"
        );
    }

    /// A second instance of the same deployment (a second process, as far as the app can
    /// tell): same database, model, cache and prefix, its own in-process state (L1 cache,
    /// per-process rate limiter). It must not outlive `self`, which owns what they share.
    pub async fn another_instance(&self) -> TestApp {
        self.another_instance_with(&[]).await
    }

    /// Another instance of the same deployment that reaches the database through a proxy on
    /// 127.0.0.1:`port` (a [`super::fault::TcpProxy`] the test breaks for this instance only).
    pub async fn another_instance_via(&self, port: u16) -> TestApp {
        self.another_instance_with(&[("DATABASE_URL", &url_via(&self.db.url, port))])
            .await
    }

    /// Another instance on the same database and key prefix, with some settings of its own (a
    /// memory cache, another database URL); an empty value unsets one.
    pub async fn another_instance_with(&self, overrides: &[(&str, &str)]) -> TestApp {
        let mut vars = self.vars.clone();
        // The same deployment: the same keys, whichever URL reaches the database.
        vars.insert("CACHE_KEY_PREFIX".into(), self.prefix.clone());
        for (name, value) in overrides {
            vars.insert((*name).to_owned(), (*value).to_owned());
        }
        let (app, router) = build_app(&vars);
        TestApp {
            app,
            router,
            db: self.db.clone(),
            pg: self.db.client().await,
            prefix: self.prefix.clone(),
            vars,
            model: self.model.clone(),
            proxy: None,
            redis_url: self.redis_url.clone(),
            owns_prefix: false,
        }
    }

    /// Kills the `gcbb upstash-proxy` the cache talks to, as an Upstash outage.
    pub fn kill_upstash_proxy(&mut self) {
        let proxy = self
            .proxy
            .take()
            .expect("an app built on CacheKind::Upstash");
        drop(proxy);
    }

    /// Serves the router on a real socket on 127.0.0.1, in this process: for the tests that
    /// need a real HTTP client (the AI SDK run by node, a raw socket, a TCP disconnect).
    pub async fn serve(&self) -> Served {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind a local port");
        let addr = listener.local_addr().expect("a bound address");
        // As in `gcbb dev`: without TCP_NODELAY a streamed reply's first chunk waits behind
        // Nagle's algorithm.
        let listener = axum::serve::ListenerExt::tap_io(listener, |tcp| {
            let _ = tcp.set_nodelay(true);
        });
        let router = self.router.clone();
        let task = tokio::spawn(async move {
            let _ = axum::serve(listener, router).await;
        });
        Served {
            base: format!("http://{addr}"),
            task,
        }
    }
}

impl Drop for TestApp {
    fn drop(&mut self) {
        let Some(url) = self.redis_url.as_deref().filter(|_| self.owns_prefix) else {
            return;
        };
        // Synchronous on purpose: Drop can't await, and this is a handful of round trips.
        let Ok(client) = redis::Client::open(url) else {
            return;
        };
        let Ok(mut conn) = client.get_connection_with_timeout(Duration::from_secs(1)) else {
            return;
        };
        let keys: Vec<String> = redis::cmd("KEYS")
            .arg(format!("{}:*", self.prefix))
            .query(&mut conn)
            .unwrap_or_default();
        for batch in keys.chunks(500) {
            let _: Result<(), _> = redis::cmd("DEL").arg(batch).query(&mut conn);
        }
    }
}

/// The router on a real socket; stops when dropped.
pub struct Served {
    /// `http://127.0.0.1:<port>`.
    pub base: String,
    task: tokio::task::JoinHandle<()>,
}

impl Served {
    pub fn url(&self, path: &str) -> String {
        format!("{}{}", self.base, path)
    }

    /// `127.0.0.1:<port>`.
    pub fn addr(&self) -> &str {
        self.base.trim_start_matches("http://")
    }
}

impl Drop for Served {
    fn drop(&mut self) {
        self.task.abort();
    }
}
