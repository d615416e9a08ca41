use super::*;

fn vars(pairs: &[(&str, &str)]) -> HashMap<String, String> {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

const DB: (&str, &str) = ("DATABASE_URL", "postgres://postgres@127.0.0.1:5432/x");

#[test]
fn a_missing_database_url_is_named() {
    let err = Config::from_vars(&vars(&[])).unwrap_err();
    assert_eq!(
        err,
        ConfigError::Missing {
            name: "DATABASE_URL"
        }
    );
    assert!(err.to_string().contains("DATABASE_URL"));
}

#[test]
fn a_bad_number_names_its_variable() {
    let err = Config::from_vars(&vars(&[DB, ("DB_POOL_SIZE", "many")])).unwrap_err();
    assert!(
        err.to_string().starts_with("DB_POOL_SIZE is invalid"),
        "{err}"
    );
}

#[test]
fn upstash_wins_over_kv_and_redis() {
    let c = Config::from_vars(&vars(&[
        DB,
        ("UPSTASH_REDIS_REST_URL", "https://a.upstash.io/"),
        ("UPSTASH_REDIS_REST_TOKEN", "t"),
        ("KV_REST_API_URL", "https://b.upstash.io"),
        ("KV_REST_API_TOKEN", "u"),
        ("REDIS_URL", "redis://127.0.0.1:6379"),
    ]))
    .unwrap();
    assert_eq!(
        c.cache,
        CacheBackend::Upstash {
            url: "https://a.upstash.io".into(),
            token: "t".into()
        }
    );
}

#[test]
fn kv_variables_are_the_fallback_for_upstash() {
    let c = Config::from_vars(&vars(&[
        DB,
        ("KV_REST_API_URL", "https://b.upstash.io"),
        ("KV_REST_API_TOKEN", "u"),
    ]))
    .unwrap();
    assert_eq!(c.cache.name(), "upstash");
}

#[test]
fn an_upstash_url_without_its_token_names_the_token() {
    let err =
        Config::from_vars(&vars(&[DB, ("UPSTASH_REDIS_REST_URL", "https://a.io")])).unwrap_err();
    assert_eq!(
        err,
        ConfigError::Missing {
            name: "UPSTASH_REDIS_REST_TOKEN"
        }
    );
}

#[test]
fn no_cache_variables_means_memory() {
    let c = Config::from_vars(&vars(&[DB])).unwrap();
    assert_eq!(c.cache, CacheBackend::Memory);
    assert_eq!(c.system_user_id, DEFAULT_SYSTEM_USER_ID);
    assert_eq!(c.body_limit, DEFAULT_BODY_LIMIT_BYTES);
}

#[test]
fn a_redis_url_of_another_scheme_is_refused() {
    let err = Config::from_vars(&vars(&[DB, ("REDIS_URL", "http://x")])).unwrap_err();
    assert!(err.to_string().starts_with("REDIS_URL"));
}

#[test]
fn a_clerk_key_that_is_not_pem_is_refused_by_name() {
    let err = Config::from_vars(&vars(&[DB, ("CLERK_JWT_KEY", "abc")])).unwrap_err();
    assert!(err.to_string().starts_with("CLERK_JWT_KEY"));
}

#[test]
fn authorized_parties_are_split_and_trimmed() {
    let c = Config::from_vars(&vars(&[
        DB,
        (
            "CLERK_AUTHORIZED_PARTIES",
            " https://a.example/ ,https://b.example,, ",
        ),
    ]))
    .unwrap();
    assert_eq!(
        c.clerk.authorized_parties,
        vec!["https://a.example", "https://b.example"]
    );
}

#[test]
fn secrets_never_show_in_debug_output() {
    let c = Config::from_vars(&vars(&[
        DB,
        ("CRON_SECRET", "cron-s3cret"),
        ("OPENAI_API_KEY", "sk-s3cret"),
        ("UPSTASH_REDIS_REST_URL", "https://x.upstash.io"),
        ("UPSTASH_REDIS_REST_TOKEN", "upstash-s3cret"),
    ]))
    .unwrap();
    let shown = format!("{c:?}");
    assert!(!shown.contains("s3cret"), "{shown}");
    assert_eq!(c.cron_secret.unwrap().expose(), "cron-s3cret");
}

#[test]
fn on_vercel_a_missing_model_key_is_named_and_scripted_is_refused() {
    let err = Config::from_vars(&vars(&[DB, ("VERCEL_ENV", "production")])).unwrap_err();
    assert_eq!(
        err,
        ConfigError::Missing {
            name: "OPENAI_API_KEY"
        }
    );
    let err = Config::from_vars(&vars(&[
        DB,
        ("VERCEL_ENV", "preview"),
        ("LLM_PROVIDER", "scripted"),
    ]))
    .unwrap_err();
    assert!(err.to_string().starts_with("LLM_PROVIDER"), "{err}");
}

#[test]
fn chat_defaults_and_a_zero_limit_is_refused() {
    let c = Config::from_vars(&vars(&[DB])).unwrap();
    assert_eq!(c.chat.context_messages, DEFAULT_CHAT_CONTEXT_MESSAGES);
    assert_eq!(c.chat.group_max_responders, DEFAULT_GROUP_MAX_RESPONDERS);
    assert_eq!(
        c.llm.provider,
        LlmProvider::OpenAi {
            base_url: DEFAULT_OPENAI_BASE_URL.into(),
            api_key: None
        }
    );
    let err = Config::from_vars(&vars(&[DB, ("RATE_LIMIT_USER_REQUESTS", "0")])).unwrap_err();
    assert!(err.to_string().starts_with("RATE_LIMIT_USER_REQUESTS"));
    let err = Config::from_vars(&vars(&[DB, ("LLM_PROVIDER", "magic")])).unwrap_err();
    assert!(err.to_string().starts_with("LLM_PROVIDER"));
}

#[test]
fn cors_origins_are_normalized_as_browsers_send_them() {
    let c = Config::from_vars(&vars(&[DB])).unwrap();
    assert!(c.cors.allowed_origins.is_empty(), "unset: same-origin only");
    let c = Config::from_vars(&vars(&[
        DB,
        (
            "CORS_ALLOWED_ORIGINS",
            " https://App.Example/ , http://localhost:5173,https://app.example:443,,https://bücher.example",
        ),
    ]))
    .unwrap();
    assert_eq!(
        c.cors.allowed_origins,
        [
            "https://app.example",
            "http://localhost:5173",
            "https://xn--bcher-kva.example"
        ]
    );
}

#[test]
fn a_cors_entry_that_is_not_an_origin_stops_start_up_naming_the_variable() {
    for bad in [
        "*",
        "null",
        "app.example",
        "ftp://app.example",
        "https://app.example/path",
        "https://app.example?x=1",
        "https://user:pw@app.example",
        "https://ok.example, https://",
    ] {
        let err = Config::from_vars(&vars(&[DB, ("CORS_ALLOWED_ORIGINS", bad)])).unwrap_err();
        assert!(
            err.to_string()
                .starts_with("CORS_ALLOWED_ORIGINS is invalid"),
            "{bad}: {err}"
        );
    }
}

#[test]
fn a_cors_pattern_matches_exactly_one_dns_label() {
    let c = Config::from_vars(&vars(&[
        DB,
        (
            "CORS_ALLOWED_ORIGINS",
            "https://*.Example.com/, https://gcbb-*-acme.vercel.app, http://*.local.test:5173",
        ),
    ]))
    .unwrap();
    assert!(c.cors.allowed_origins.is_empty());
    let allowed = |origin: &str| c.cors.allowed_patterns.iter().any(|p| p.matches(origin));
    for ok in [
        "https://a.example.com",
        "https://app-2.example.com",
        "https://gcbb-8f3k2j1qx-acme.vercel.app",
        "https://gcbb-git-feature-x-acme.vercel.app",
        "http://dev.local.test:5173",
    ] {
        assert!(allowed(ok), "{ok}");
    }
    for no in [
        "https://example.com",
        "https://.example.com",
        "https://a.b.example.com",
        "https://a.example.com.evil.com",
        "https://aexample.com",
        "https://a.example.com:8443",
        "http://a.example.com",
        "https://-a.example.com",
        "https://gcbb--acme.vercel.app",
        "https://gcbb-x-acme.vercel.app.evil.com",
        "https://other-8f3k2j1qx-acme.vercel.app",
        "https://gcbb-8f3k2j1qx-evil.vercel.app",
        "https://evil.vercel.app",
        "http://dev.local.test",
        "null",
        "",
    ] {
        assert!(!allowed(no), "{no}");
    }
}

#[test]
fn a_malformed_cors_pattern_stops_start_up_naming_the_variable() {
    for bad in [
        "https://*",
        "https://*.com",
        "https://**.example.com",
        "https://*.*.example.com",
        "https://a.*.example.com",
        "https://*.example.com/path",
        "https://user@*.example.com",
        "ftp://*.example.com",
        "*.example.com",
        "https://*.exa_mple.com",
        "https://*.bücher.example",
        "https://*.example.com:99999",
        "https://*.vercel.app",
        "https://*.github.io",
    ] {
        let err = Config::from_vars(&vars(&[DB, ("CORS_ALLOWED_ORIGINS", bad)])).unwrap_err();
        assert!(
            err.to_string()
                .starts_with("CORS_ALLOWED_ORIGINS is invalid"),
            "{bad}: {err}"
        );
    }
}

#[test]
fn avatar_hosts_allow_https_on_a_listed_host_and_path_only() {
    let c = Config::from_vars(&vars(&[DB])).unwrap();
    let ok = |u: &str| c.avatar_hosts.allows(&url::Url::parse(u).unwrap());
    assert!(ok("https://img.clerk.com/eyJ0eXBlIjoicHJveHkifQ"));
    assert!(ok("https://IMG.CLERK.COM/a.png?width=80"));
    assert!(ok(
        "https://res.cloudinary.com/demo/image/upload/v1/sample.jpg"
    ));
    for no in [
        "http://img.clerk.com/a.png",
        "https://img.clerk.com:8443/a.png",
        "https://user@img.clerk.com/a.png",
        "https://evil.img.clerk.com/a.png",
        "https://img.clerk.com.evil.test/a.png",
        "https://127.0.0.1/a.png",
        "https://[::1]/a.png",
        "https://avatars.example.invalid/ada.png",
    ] {
        assert!(!ok(no), "{no}");
    }
    let c = Config::from_vars(&vars(&[
        DB,
        (
            "AVATAR_HOSTS",
            "res.cloudinary.com/gcbb, https://cdn.gcbb.test",
        ),
    ]))
    .unwrap();
    let ok = |u: &str| c.avatar_hosts.allows(&url::Url::parse(u).unwrap());
    assert!(ok("https://res.cloudinary.com/gcbb/image/upload/a.png"));
    assert!(!ok("https://res.cloudinary.com/gcbbx/a.png"));
    assert!(!ok("https://res.cloudinary.com/other/a.png"));
    assert!(ok("https://cdn.gcbb.test/x.webp"));
    assert_eq!(
        c.avatar_hosts.csp_sources(),
        ["https://res.cloudinary.com/gcbb/", "https://cdn.gcbb.test"]
    );
    for bad in [
        "127.0.0.1",
        "http://cdn.gcbb.test",
        "cdn.gcbb.test:8443",
        "localhost",
        ",",
    ] {
        let err = Config::from_vars(&vars(&[DB, ("AVATAR_HOSTS", bad)])).unwrap_err();
        assert!(
            err.to_string().starts_with("AVATAR_HOSTS is invalid"),
            "{bad}: {err}"
        );
    }
}

#[test]
fn trusted_proxy_defaults_to_vercel_on_vercel_and_none_elsewhere() {
    let c = Config::from_vars(&vars(&[DB])).unwrap();
    assert_eq!(c.trusted_proxy, TrustedProxy::None);
    let c = Config::from_vars(&vars(&[DB, ("VERCEL", "1"), ("LLM_PROVIDER", "openai")])).unwrap();
    assert_eq!(c.trusted_proxy, TrustedProxy::Vercel);
    let c = Config::from_vars(&vars(&[DB, ("TRUSTED_PROXY", "cloudfront")])).unwrap();
    assert_eq!(c.trusted_proxy, TrustedProxy::CloudFront);
    let err = Config::from_vars(&vars(&[DB, ("TRUSTED_PROXY", "cloudflare")])).unwrap_err();
    assert!(
        err.to_string().starts_with("TRUSTED_PROXY is invalid"),
        "{err}"
    );
}

#[test]
fn chat_body_and_client_context_limits_have_defaults() {
    let c = Config::from_vars(&vars(&[DB])).unwrap();
    assert_eq!(c.chat.body_limit, DEFAULT_CHAT_BODY_LIMIT_BYTES);
    assert_eq!(
        c.chat.client_context_messages,
        DEFAULT_CHAT_CLIENT_CONTEXT_MESSAGES
    );
    assert_eq!(
        c.chat.client_context_bytes,
        DEFAULT_CHAT_CLIENT_CONTEXT_BYTES
    );
    let err = Config::from_vars(&vars(&[DB, ("CHAT_BODY_LIMIT_BYTES", "0")])).unwrap_err();
    assert!(err.to_string().starts_with("CHAT_BODY_LIMIT_BYTES"));
}
