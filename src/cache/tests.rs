use super::*;

#[test]
fn errors_are_logged_once_per_interval_per_kind() {
    let log = ErrorLog::default();
    assert_eq!(log.should_log("get", "timeout"), Some(0));
    assert_eq!(log.should_log("get", "timeout"), None);
    assert_eq!(log.should_log("get", "timeout"), None);
    assert_eq!(log.should_log("get", "unreachable"), Some(0));
    assert_eq!(log.should_log("put", "timeout"), Some(0));
}

#[test]
fn a_missing_or_foreign_generation_is_zero() {
    assert_eq!(parse_generation(None), 0);
    assert_eq!(parse_generation(Some(Bytes::from_static(b"x"))), 0);
    assert_eq!(parse_generation(Some(Bytes::from_static(b"12"))), 12);
}

#[test]
fn statuses_are_the_x_cache_values() {
    let all = [
        CacheStatus::Memory,
        CacheStatus::Redis,
        CacheStatus::Static,
        CacheStatus::Miss,
        CacheStatus::Bypass,
    ];
    let names: Vec<_> = all.iter().map(|s| s.as_str()).collect();
    assert_eq!(names, ["memory", "redis", "static", "miss", "bypass"]);
}
