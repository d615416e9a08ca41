use super::sql::{column_sql, ident, routine};
use super::*;
use crate::introspect::Column;

#[test]
fn allows_parse_as_rule_equals_reason() {
    assert_eq!(
        parse_allow("drop-column=nothing wrote it yet"),
        Ok(("drop-column".to_owned(), "nothing wrote it yet".to_owned()))
    );
    assert!(parse_allow("drop-column").is_err());
    assert!(parse_allow("drop-column=").is_err());
    assert!(parse_allow("no-such-rule=x").is_err());
}

#[test]
fn names_and_timestamps_sort_after_the_history() {
    assert_eq!(short_name("20261128000000_privacy_epoch"), "privacy_epoch");
    assert_eq!(short_name("custom"), "custom");
    let now = NaiveDateTime::parse_from_str("20261206120000", "%Y%m%d%H%M%S")
        .expect("time")
        .and_utc();
    let m = |name: &str| LocalMigration {
        name: name.to_owned(),
        path: PathBuf::new(),
        script: String::new(),
        checksum: String::new(),
    };
    assert_eq!(first_timestamp(&[m("20240101000000_init")], now), now);
    let later = first_timestamp(&[m("20990101000000_x")], now);
    assert_eq!(later.format("%Y%m%d%H%M%S").to_string(), "20990101000001");
}

#[test]
fn columns_render_as_ddl_writes_them() {
    let c = |ty: &str, not_null: bool, default: Option<&str>| Column {
        name: "c".to_owned(),
        data_type: ty.to_owned(),
        not_null,
        default: default.map(str::to_owned),
    };
    assert_eq!(
        column_sql(
            "T",
            &c(
                "timestamp(3) without time zone",
                true,
                Some("CURRENT_TIMESTAMP")
            )
        ),
        "\"c\" timestamp(3) without time zone NOT NULL DEFAULT CURRENT_TIMESTAMP"
    );
    assert_eq!(
        column_sql(
            "T",
            &c("bigint", true, Some("nextval('\"T_c_seq\"'::regclass)"))
        ),
        "\"c\" BIGSERIAL NOT NULL"
    );
    assert_eq!(column_sql("T", &c("text", false, None)), "\"c\" text");
    assert_eq!(ident("s.T"), "\"s\".\"T\"");
    assert_eq!(routine("f(a text)"), "\"f\"(a text)");
}
