//! A request's commands, in the two forms Upstash takes: a JSON array in the body
//! (`["SET", "k", "v"]`, or an array of them for `/pipeline` and `/multi-exec`), or the path
//! (`/set/k/v`, percent-encoded, with a POST body appended as the last argument and query
//! parameters other than `_token` after it: `POST /set/k?EX=100` is `SET k <body> EX 100`).

use serde_json::Value;

use super::commands::Command;

/// The query parameter that may carry the token instead of `Authorization: Bearer`.
pub const TOKEN_PARAMETER: &str = "_token";

/// One command from a JSON array of strings, numbers and booleans (as `@upstash/redis` sends
/// them: a boolean is written as `true`/`false`, which its reader parses back).
pub fn command_from_json(value: &Value) -> Result<Command, String> {
    let Value::Array(parts) = value else {
        return Err("ERR a command must be a JSON array".into());
    };
    if parts.is_empty() {
        return Err("ERR a command must not be empty".into());
    }
    if !parts[0].is_string() {
        return Err("ERR the command name must be a string".into());
    }
    parts
        .iter()
        .map(|part| match part {
            Value::String(s) => Ok(s.as_bytes().to_vec()),
            Value::Number(n) => Ok(n.to_string().into_bytes()),
            Value::Bool(b) => Ok(b.to_string().into_bytes()),
            _ => Err("ERR arguments must be strings, numbers or booleans".to_owned()),
        })
        .collect()
}

/// The commands of a `/pipeline` or `/multi-exec` body: a non-empty array of command arrays.
pub fn commands_from_json(value: &Value) -> Result<Vec<Command>, String> {
    match value {
        Value::Array(commands) if !commands.is_empty() => {
            commands.iter().map(command_from_json).collect()
        }
        _ => Err("ERR expected a non-empty array of commands".into()),
    }
}

/// One command from a path-style request: the path's segments, then the body (when not
/// empty), then the query's parameters other than the token, each as a name and a value.
pub fn command_from_path(path: &str, query: Option<&str>, body: &[u8]) -> Result<Command, String> {
    let path = path.strip_prefix('/').unwrap_or(path);
    let path = path.strip_suffix('/').unwrap_or(path);
    let mut command: Command = path.split('/').map(percent_decode).collect();
    if command.first().is_none_or(|name| name.is_empty()) {
        return Err("ERR no command: put it in the path or POST a JSON array to /".into());
    }
    if !body.is_empty() {
        command.push(body.to_vec());
    }
    for (name, value) in query_pairs(query) {
        if name == TOKEN_PARAMETER {
            continue;
        }
        command.push(name.into_bytes());
        if !value.is_empty() {
            command.push(value.into_bytes());
        }
    }
    Ok(command)
}

/// The token from the query string, if it carries one.
pub fn token_from_query(query: Option<&str>) -> Option<String> {
    query_pairs(query)
        .find(|(name, _)| name == TOKEN_PARAMETER)
        .map(|(_, value)| value)
}

fn query_pairs(query: Option<&str>) -> impl Iterator<Item = (String, String)> + '_ {
    url::form_urlencoded::parse(query.unwrap_or("").as_bytes())
        .map(|(name, value)| (name.into_owned(), value.into_owned()))
}

/// `%XX` escapes of one path segment as bytes (a path segment's `+` is a plus, unlike a query's).
fn percent_decode(segment: &str) -> Vec<u8> {
    let bytes = segment.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let hex = |b: u8| (b as char).to_digit(16).map(|d| d as u8);
        if bytes[i] == b'%' && i + 2 < bytes.len() {
            if let (Some(hi), Some(lo)) = (hex(bytes[i + 1]), hex(bytes[i + 2])) {
                out.push(hi << 4 | lo);
                i += 3;
                continue;
            }
        }
        out.push(bytes[i]);
        i += 1;
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn strings(command: Command) -> Vec<String> {
        command
            .into_iter()
            .map(|p| String::from_utf8(p).unwrap())
            .collect()
    }

    #[test]
    fn json_commands_are_arrays_of_strings_numbers_and_booleans() {
        assert_eq!(
            strings(command_from_json(&json!(["SET", "k", 1, true, 1.5])).unwrap()),
            ["SET", "k", "1", "true", "1.5"]
        );
        assert!(command_from_json(&json!([])).is_err());
        assert!(command_from_json(&json!([1, "k"])).is_err());
        assert!(command_from_json(&json!(["SET", {"a": 1}])).is_err());
        assert!(command_from_json(&json!(["SET", null])).is_err());
        assert!(command_from_json(&json!("PING")).is_err());
        assert!(commands_from_json(&json!([])).is_err());
        assert!(commands_from_json(&json!([["PING"], "GET"])).is_err());
    }

    #[test]
    fn path_commands_take_segments_body_and_query() {
        assert_eq!(
            strings(command_from_path("/set/a%2Fb/x+y%20z", None, b"").unwrap()),
            ["set", "a/b", "x+y z"]
        );
        assert_eq!(
            strings(command_from_path("/set/k", Some("EX=100&_token=t&NX"), b"{\"v\":1}").unwrap()),
            ["set", "k", "{\"v\":1}", "EX", "100", "NX"]
        );
        assert_eq!(
            strings(command_from_path("/ping/", None, b"").unwrap()),
            ["ping"]
        );
        assert!(command_from_path("/", None, b"").is_err());
        assert_eq!(
            command_from_path("/get/%ff%zz%", None, b"").unwrap()[1],
            b"\xff%zz%"
        );
    }

    #[test]
    fn the_token_may_come_in_the_query() {
        assert_eq!(
            token_from_query(Some("a=1&_token=s%3Dx")).as_deref(),
            Some("s=x")
        );
        assert_eq!(token_from_query(Some("a=1")), None);
        assert_eq!(token_from_query(None), None);
    }
}
