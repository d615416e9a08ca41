//! Process-wide state shared by every request: configuration and the clients of the outside
//! services, each built once and lazily connected.

use std::sync::Arc;

use crate::cache::ratelimit::RateLimiter;
use crate::cache::Cache;
use crate::cdn::Cdn;
use crate::config::{Config, ConfigError};
use crate::db::Pool;
use crate::id::UserId;
use crate::llm::Llm;
use crate::platform::auth::{Authenticator, HasAuthenticator};
use crate::platform::privacy::PrivacyEpochs;

pub struct App {
    pub config: Config,
    pub db: Pool,
    pub cache: Cache,
    pub auth: Authenticator,
    /// The one HTTP client for outside services (JWKS, Upstash, the model).
    pub http: reqwest::Client,
    /// The model that answers chat (its own HTTP client: no overall timeout, own connect one).
    pub llm: Llm,
    /// Rate limits (sliding window on the cache, per-process fallback).
    pub ratelimiter: RateLimiter,
    /// This process's knowledge of the database's privacy epoch, refreshed in the background.
    pub privacy: PrivacyEpochs,
    /// Vercel's CDN purges (off without `VERCEL_TOKEN`).
    pub cdn: Cdn,
    /// `SYSTEM_USER_ID` as the id it is: the owner of platform-made companions and demo groups.
    pub system_user_id: UserId,
}

impl App {
    pub fn from_env() -> Result<Arc<App>, ConfigError> {
        Ok(Self::new(Config::from_env()?))
    }

    /// Builds the clients; nothing connects until first use.
    pub fn new(config: Config) -> Arc<App> {
        Self::with_cache(config, |cache| cache)
    }

    /// Like [`App::new`], with a say in how the cache is set up (benchmarks turn the L1 off).
    pub fn with_cache(config: Config, adjust: impl FnOnce(Cache) -> Cache) -> Arc<App> {
        let http = reqwest::Client::builder()
            .connect_timeout(std::time::Duration::from_secs(5))
            .user_agent(concat!("gcbb/", env!("CARGO_PKG_VERSION")))
            .build()
            .expect("the HTTP client builds with static settings");
        let db = Pool::new(config.database.clone(), config.db_pool_size)
            .with_query_timeout(config.db_query_timeout);
        let cache = adjust(
            Cache::new(&config.cache, http.clone(), config.cache_timeout)
                .with_namespace(&config.cache_key_prefix),
        );
        let auth = Authenticator::new(&config.clerk, http.clone());
        let llm = Llm::new(&config.llm);
        let cdn = Cdn::new(config.cdn.clone(), http.clone());
        if !cdn.is_enabled() {
            tracing::info!("CDN purging off: VERCEL_TOKEN is unset");
        }
        let privacy = PrivacyEpochs::new(config.privacy_outage_window);
        let system_user_id = UserId::issued(config.system_user_id.clone());
        Arc::new(App {
            config,
            db,
            cache,
            auth,
            http,
            llm,
            ratelimiter: RateLimiter::new(),
            privacy,
            cdn,
            system_user_id,
        })
    }
}

impl HasAuthenticator for Arc<App> {
    fn authenticator(&self) -> &Authenticator {
        &self.auth
    }
}
