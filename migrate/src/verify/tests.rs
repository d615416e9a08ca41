use super::*;

fn plan() -> Value {
    serde_json::json!([{ "Plan": {
        "Node Type": "Nested Loop",
        "Plans": [
            { "Node Type": "Limit", "Plans": [
                { "Node Type": "Seq Scan", "Relation Name": "CompanionDashboard" }
            ]},
            { "Node Type": "Bitmap Heap Scan", "Relation Name": "Companion", "Plans": [
                { "Node Type": "Bitmap Index Scan", "Index Name": "Companion_userId_createdAt_idx" }
            ]},
            { "Node Type": "Index Only Scan", "Relation Name": "Companion", "Index Name": "Companion_pkey" }
        ]
    }}])
}

#[test]
fn index_scans_are_found_at_every_depth() {
    assert_eq!(
        index_scans(&plan()),
        vec![
            (
                "Bitmap Index Scan".to_owned(),
                "Companion_userId_createdAt_idx".to_owned()
            ),
            ("Index Only Scan".to_owned(), "Companion_pkey".to_owned()),
        ]
    );
}

#[test]
fn the_node_reading_a_relation_is_described() {
    assert_eq!(
        nodes_on(&plan(), "CompanionDashboard"),
        vec!["Seq Scan on \"CompanionDashboard\"".to_owned()]
    );
    assert_eq!(
        nodes_on(&plan(), "Companion"),
        vec![
            "Bitmap Heap Scan on \"Companion\"".to_owned(),
            "Index Only Scan using Companion_pkey on \"Companion\"".to_owned()
        ]
    );
}

#[test]
fn a_plan_without_nodes_has_no_index_scans() {
    assert!(index_scans(&Value::Null).is_empty());
    assert!(index_scans(&serde_json::json!({"Plan": {"Node Type": "Result"}})).is_empty());
}
