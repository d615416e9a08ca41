use super::*;

#[test]
fn the_estimate_is_read_from_the_scan_under_the_aggregate() {
    let plan = serde_json::json!([{ "Plan": {
        "Node Type": "Aggregate", "Plan Rows": 1,
        "Plans": [{ "Node Type": "Bitmap Heap Scan", "Plan Rows": 637,
                    "Plans": [{ "Node Type": "Bitmap Index Scan", "Plan Rows": 640 }] }]
    }}]);
    assert_eq!(rows_counted(&plan), 637);
    assert_eq!(rows_counted(&serde_json::Value::Null), 0);
}

#[test]
fn a_short_search_is_a_prefix_match_on_the_index_expression() {
    let filter = |q: &str| PageFilter {
        category_id: None,
        name_contains: Some(q.to_owned()),
        limit: 10,
        offset: 0,
    };
    assert_eq!(filter("le").name_prefix(), Some("le"));
    assert_eq!(filter("é").name_prefix(), Some("é"));
    assert_eq!(filter("le").like_fragment(), None);
    assert_eq!(filter("leo").name_prefix(), None);
    assert_eq!(filter("le%").like_fragment().as_deref(), Some("le\\%"));
    let sql = with_prefix_match(VIEWER_PAGE_SQL, "$2", 2);
    assert!(!sql.contains("ILIKE"), "{sql}");
    assert_eq!(sql.matches(r#"lower(left(c."name", 2)) = $2"#).count(), 2);
    assert_eq!(sql.matches(r#"OR lower(left("name", 2)) = $2)"#).count(), 1);
    let own = with_prefix_match(OWN_ADJUSTMENT_SQL, "$3", 1);
    assert!(!own.contains("ILIKE"), "{own}");
    assert!(own.contains(r#"lower(left(d."name", 1)) = $3"#));
    assert!(PUBLIC_PAGE_PREFIX1_SQL.contains(r#"lower(left("name", 1)) = $2"#));
    assert!(PUBLIC_PAGE_PREFIX2_SQL.contains(r#"lower(left(c."name", 2)) = $2"#));
}

#[test]
fn like_wildcards_in_user_input_match_literally() {
    assert_eq!(escape_like("50%_off\\"), "50\\%\\_off\\\\");
    assert_eq!(escape_like("plain ✨"), "plain ✨");
}
