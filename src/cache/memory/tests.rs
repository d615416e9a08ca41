use super::*;

#[test]
fn globs_match_like_redis() {
    let m = |p: &str, t: &str| glob_match(p.as_bytes(), t.as_bytes());
    assert!(m("*", ""));
    assert!(m("gcbb:*", "gcbb:v1:x"));
    assert!(!m("gcbb:*", "gcbc:v1:x"));
    assert!(m("a?c", "abc"));
    assert!(!m("a?c", "ac"));
    assert!(m("a*b*c", "axxbyyc"));
    assert!(!m("a*b*c", "axxbyy"));
    assert!(m("h[ae]llo", "hello"));
    assert!(!m("h[^e]llo", "hello"));
    assert!(m("h[a-f]llo", "hello"));
    assert!(m("a\\*", "a*"));
    assert!(!m("a\\*", "ab"));
    assert!(!m("[", "x"));
}

#[test]
fn entries_expire() {
    let s = MemoryStore::new(10, 1 << 20);
    s.set(
        "a",
        Bytes::from_static(b"1"),
        Some(Duration::from_millis(1)),
    );
    s.set("b", Bytes::from_static(b"2"), None);
    std::thread::sleep(Duration::from_millis(5));
    assert_eq!(s.get("a"), None);
    assert_eq!(s.get("b"), Some(Bytes::from_static(b"2")));
}

#[test]
fn the_store_stays_within_its_bounds() {
    let s = MemoryStore::new(100, 10_000);
    for i in 0..1000 {
        s.set(&format!("k{i}"), Bytes::from(vec![0u8; 50]), None);
    }
    assert!(s.len() <= 100);
    let s = MemoryStore::new(1000, 1000);
    for i in 0..1000 {
        s.set(&format!("k{i:04}"), Bytes::from(vec![0u8; 95]), None);
    }
    assert!(s.lock().bytes <= 1000);
    assert!(s.len() <= 10);
}

#[test]
fn recently_used_entries_survive_eviction_more_often() {
    let s = MemoryStore::new(100, usize::MAX);
    for i in 0..100 {
        s.set(&format!("k{i}"), Bytes::new(), None);
    }
    for _ in 0..3 {
        assert!(s.get("k0").is_some());
    }
    for i in 100..110 {
        s.set(&format!("k{i}"), Bytes::new(), None);
    }
    assert!(s.get("k0").is_some(), "the hottest entry was evicted");
}

#[test]
fn incr_counts_and_refuses_non_integers() {
    let s = MemoryStore::new(10, 1 << 20);
    assert_eq!(s.incr("n").unwrap(), 1);
    assert_eq!(s.incr("n").unwrap(), 2);
    s.set("x", Bytes::from_static(b"abc"), None);
    assert!(s.incr("x").is_err());
}

#[test]
fn lists_append_range_and_expire() {
    let s = MemoryStore::new(10, 1 << 20);
    let ttl = Some(Duration::from_secs(5));
    assert_eq!(s.append_list("l", &[], ttl), 0);
    assert!(s.list_range("l", 0).is_empty());
    let a = Bytes::from_static(b"a");
    let b = Bytes::from_static(b"b");
    assert_eq!(s.append_list("l", std::slice::from_ref(&a), ttl), 1);
    assert_eq!(s.append_list("l", &[b.clone(), a.clone()], ttl), 3);
    assert_eq!(s.list_range("l", 0), [a.clone(), b.clone(), a.clone()]);
    assert_eq!(s.list_range("l", 2), std::slice::from_ref(&a));
    assert!(s.list_range("l", 9).is_empty());
    assert_eq!(s.keys_matching("l*"), ["l"]);
    assert!(s.expire("l", Duration::from_millis(1)));
    std::thread::sleep(Duration::from_millis(5));
    assert!(s.list_range("l", 0).is_empty());
    assert!(!s.expire("l", Duration::from_secs(5)));
    assert_eq!(s.append_list("m", &[a], None), 1);
    assert_eq!(s.del(&["m".to_owned()]), 1);
    assert!(s.list_range("m", 0).is_empty());
}

#[test]
fn sorted_sets_range_by_score() {
    let s = MemoryStore::new(10, 1 << 20);
    s.zadd("z", 30, "c");
    s.zadd("z", 10, "a");
    s.zadd("z", 20, "b");
    s.zadd("z", 5, "c");
    assert_eq!(s.zrange_by_score("z", 20, 10), ["c", "a", "b"]);
    assert_eq!(s.zrange_by_score("z", 10, 1), ["c"]);
    assert_eq!(s.zrange_by_score("z", 4, 10), Vec::<String>::new());
    assert!(s.zrem("z", "a"));
    assert!(!s.zrem("z", "a"));
    assert_eq!(s.zrange_by_score("z", 100, 10), ["c", "b"]);
}

#[test]
fn set_nx_only_sets_once() {
    let s = MemoryStore::new(10, 1 << 20);
    assert!(s.set_nx("l", Bytes::from_static(b"a"), Duration::from_secs(5)));
    assert!(!s.set_nx("l", Bytes::from_static(b"b"), Duration::from_secs(5)));
    assert_eq!(s.get("l"), Some(Bytes::from_static(b"a")));
}
