use super::*;

#[test]
fn default_kinds_print_as_prismas_debug() {
    assert_eq!(default_kind(None), "None");
    assert_eq!(default_kind(Some("CURRENT_TIMESTAMP")), "Some(Now)");
    assert_eq!(default_kind(Some("false")), "Some(Value(Boolean(false)))");
    assert_eq!(default_kind(Some("0")), "Some(Value(Int(0)))");
    assert_eq!(
        default_kind(Some("'it''s'::text")),
        "Some(Value(String(\"it's\")))"
    );
    assert_eq!(
        default_kind(Some("gen_random_uuid()")),
        "Some(DbGenerated(Some(\"gen_random_uuid()\")))"
    );
    assert_eq!(
        default_kind(Some("nextval('\"Log_id_seq\"'::regclass)")),
        "Some(Sequence(\"Log_id_seq\"))"
    );
}
