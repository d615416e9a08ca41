//! Reading what a finished process printed, and checking it.

use std::process::Output;

pub fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

pub fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// Both streams, stdout first, for an assertion message.
pub fn text(o: &Output) -> String {
    format!("{}\n--- stderr ---\n{}", stdout(o), stderr(o))
}

/// The exit code (-1 when a signal ended the process).
pub fn code(o: &Output) -> i32 {
    o.status.code().unwrap_or(-1)
}

/// Asserts that `text` holds every one of `parts`, naming the first one missing.
pub fn assert_contains_all(text: &str, parts: &[&str]) {
    for part in parts {
        assert!(text.contains(part), "missing {part:?} in {text}");
    }
}

/// Asserts the process succeeded (showing both streams when it did not); returns its stdout.
pub fn success_stdout(o: &Output) -> String {
    assert!(o.status.success(), "{}", text(o));
    stdout(o)
}

/// The string `field` of every object in the JSON array `array`.
pub fn json_strs<'a>(array: &'a serde_json::Value, field: &str) -> Vec<&'a str> {
    array
        .as_array()
        .unwrap_or_else(|| panic!("not an array: {array}"))
        .iter()
        .map(|item| {
            item[field]
                .as_str()
                .unwrap_or_else(|| panic!("no string {field:?} in {item}"))
        })
        .collect()
}
