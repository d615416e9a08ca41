//! What a Lua script sent through the proxy may reach, decided before it reaches Redis: every
//! command it runs is a string literal from [`SCRIPT_COMMANDS`], and it has no way to run any
//! other.
//!
//! Why a check of the text is enough, when it is done on tokens and not on the characters: in
//! Redis's Lua 5.1 the only way to run a command is a function of the global table `redis`
//! (`server` too, on Valkey). A script reaches a global either by naming it — a `Name` token
//! outside strings and comments, not after `.` or `:` (that is a field) — or through a
//! function that hands out the global table or compiles new code against it: `_G`, `getfenv`,
//! `setfenv`, `loadstring`, `load`, `debug` (its `getupvalue`/`getregistry`), and `require`,
//! `module`, `package`, `dofile`, `loadfile`, absent from Redis and refused all the same. So a
//! script is refused when it names one of those, or names `redis` in any way but
//! `redis.call("LITERAL", …)`, `redis.pcall("LITERAL", …)` (or the `redis.call "LITERAL"`
//! sugar) or a field in [`SAFE_REDIS_FIELDS`], none of which runs a command. That leaves no
//! path by which a name built at run time (`'FLUSH'..'ALL'`, `string.char(…)`, `KEYS[1]`), an
//! alias (`local r = redis`, `local c = redis.call`, `pcall(redis.call, …)`), an index
//! (`redis["call"]`, `_G.redis`) or code compiled at run time could reach Redis. The literal
//! itself must be plain (no `\` escape: `'FLUSH\65LL'` is refused, not decoded).
//!
//! The lexer follows Lua 5.1's own (`llex.c`): short strings with their escapes, long brackets
//! `[==[ … ]==]` and long comments, numerals that swallow letters (`3redis` is one malformed
//! token to Lua, and to us), and the `#!` first line Redis cuts before compiling. Whatever it
//! is unsure of — a byte Lua would reject, a string left open, a bracket Lua 5.1 calls
//! deprecated — makes it refuse the script: Lua would not have compiled it either, so refusing
//! can only turn a script Redis would reject into a clearer error, never let one through.

/// Commands a script may run: the data commands of Upstash's compatibility list (strings,
/// bitmaps, hashes, lists, sets, sorted sets, geo, HyperLogLog, streams, keys), without the
/// blocking forms, plus PUBLISH, PING, ECHO, TIME and DBSIZE. Not KEYS (the proxy can't bound
/// it inside a script: scripts use SCAN), nothing that flushes, selects, swaps or migrates a
/// database, and no server or connection command.
pub const SCRIPT_COMMANDS: &[&str] = &[
    // strings
    "APPEND",
    "DECR",
    "DECRBY",
    "GET",
    "GETDEL",
    "GETEX",
    "GETRANGE",
    "GETSET",
    "INCR",
    "INCRBY",
    "INCRBYFLOAT",
    "LCS",
    "MGET",
    "MSET",
    "MSETNX",
    "PSETEX",
    "SET",
    "SETEX",
    "SETNX",
    "SETRANGE",
    "STRLEN",
    "SUBSTR",
    // bitmaps
    "BITCOUNT",
    "BITFIELD",
    "BITFIELD_RO",
    "BITOP",
    "BITPOS",
    "GETBIT",
    "SETBIT",
    // hashes
    "HDEL",
    "HEXISTS",
    "HEXPIRE",
    "HEXPIREAT",
    "HEXPIRETIME",
    "HGET",
    "HGETALL",
    "HINCRBY",
    "HINCRBYFLOAT",
    "HKEYS",
    "HLEN",
    "HMGET",
    "HMSET",
    "HPERSIST",
    "HPEXPIRE",
    "HPEXPIREAT",
    "HPEXPIRETIME",
    "HPTTL",
    "HRANDFIELD",
    "HSCAN",
    "HSET",
    "HSETNX",
    "HSTRLEN",
    "HTTL",
    "HVALS",
    // lists
    "LINDEX",
    "LINSERT",
    "LLEN",
    "LMOVE",
    "LMPOP",
    "LPOP",
    "LPOS",
    "LPUSH",
    "LPUSHX",
    "LRANGE",
    "LREM",
    "LSET",
    "LTRIM",
    "RPOP",
    "RPOPLPUSH",
    "RPUSH",
    "RPUSHX",
    // sets
    "SADD",
    "SCARD",
    "SDIFF",
    "SDIFFSTORE",
    "SINTER",
    "SINTERCARD",
    "SINTERSTORE",
    "SISMEMBER",
    "SMEMBERS",
    "SMISMEMBER",
    "SMOVE",
    "SPOP",
    "SRANDMEMBER",
    "SREM",
    "SSCAN",
    "SUNION",
    "SUNIONSTORE",
    // sorted sets
    "ZADD",
    "ZCARD",
    "ZCOUNT",
    "ZDIFF",
    "ZDIFFSTORE",
    "ZINCRBY",
    "ZINTER",
    "ZINTERCARD",
    "ZINTERSTORE",
    "ZLEXCOUNT",
    "ZMPOP",
    "ZMSCORE",
    "ZPOPMAX",
    "ZPOPMIN",
    "ZRANDMEMBER",
    "ZRANGE",
    "ZRANGEBYLEX",
    "ZRANGEBYSCORE",
    "ZRANGESTORE",
    "ZRANK",
    "ZREM",
    "ZREMRANGEBYLEX",
    "ZREMRANGEBYRANK",
    "ZREMRANGEBYSCORE",
    "ZREVRANGE",
    "ZREVRANGEBYLEX",
    "ZREVRANGEBYSCORE",
    "ZREVRANK",
    "ZSCAN",
    "ZSCORE",
    "ZUNION",
    "ZUNIONSTORE",
    // geo
    "GEOADD",
    "GEODIST",
    "GEOHASH",
    "GEOPOS",
    "GEORADIUS",
    "GEORADIUSBYMEMBER",
    "GEORADIUSBYMEMBER_RO",
    "GEORADIUS_RO",
    "GEOSEARCH",
    "GEOSEARCHSTORE",
    // HyperLogLog
    "PFADD",
    "PFCOUNT",
    "PFMERGE",
    // streams
    "XACK",
    "XADD",
    "XAUTOCLAIM",
    "XCLAIM",
    "XDEL",
    "XGROUP",
    "XINFO",
    "XLEN",
    "XPENDING",
    "XRANGE",
    "XREAD",
    "XREADGROUP",
    "XREVRANGE",
    "XTRIM",
    // keys
    "COPY",
    "DEL",
    "EXISTS",
    "EXPIRE",
    "EXPIREAT",
    "EXPIRETIME",
    "PERSIST",
    "PEXPIRE",
    "PEXPIREAT",
    "PEXPIRETIME",
    "PTTL",
    "RANDOMKEY",
    "RENAME",
    "RENAMENX",
    "SCAN",
    "SORT",
    "SORT_RO",
    "TOUCH",
    "TTL",
    "TYPE",
    "UNLINK",
    // the rest
    "PUBLISH",
    "PING",
    "ECHO",
    "TIME",
    "DBSIZE",
];

/// Fields of `redis` that run no command (logging, replies, digests, replication mode,
/// version, and `register_function` for FUNCTION LOAD, whose callbacks are checked as the
/// rest of the library is).
pub const SAFE_REDIS_FIELDS: &[&str] = &[
    "sha1hex",
    "log",
    "LOG_DEBUG",
    "LOG_VERBOSE",
    "LOG_NOTICE",
    "LOG_WARNING",
    "error_reply",
    "status_reply",
    "setresp",
    "set_repl",
    "replicate_commands",
    "REPL_ALL",
    "REPL_AOF",
    "REPL_REPLICA",
    "REPL_SLAVE",
    "REPL_NONE",
    "breakpoint",
    "debug",
    "REDIS_VERSION",
    "REDIS_VERSION_NUM",
    "register_function",
];

/// The globals that run commands: Redis's `redis`, and `server`, Valkey's name for it.
const COMMAND_TABLES: &[&str] = &["redis", "server"];

/// Globals that hand out the global table, a function's upvalues, or compile code against the
/// globals; and the comparison-free access to a protected table.
const FORBIDDEN_NAMES: &[&str] = &[
    "_G",
    "getfenv",
    "setfenv",
    "loadstring",
    "load",
    "dofile",
    "loadfile",
    "require",
    "module",
    "package",
    "debug",
    "getmetatable",
    "rawget",
    "rawset",
];

/// Why a script is refused, in words for the client.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Unsafe {
    /// Lua would not compile it (or we can't be sure how it would).
    Unreadable(String),
    /// It names a global that reaches the global table or compiles code.
    Forbidden(String),
    /// It reaches `redis` some other way than a call with a literal command name.
    Indirect(String),
    /// It calls a command scripts may not run through the proxy.
    Command(String),
}

impl Unsafe {
    pub fn reason(&self) -> String {
        match self {
            Unsafe::Unreadable(why) => format!("the script can't be read safely ({why})"),
            Unsafe::Forbidden(name) => format!(
                "the script names `{name}`, which reaches the global table or compiles code, so \
                 what it runs can't be checked"
            ),
            Unsafe::Indirect(how) => format!(
                "the script uses `{how}`; scripts must call redis.call or redis.pcall with the \
                 command's name as a plain string literal, so the proxy can check it"
            ),
            Unsafe::Command(name) => format!(
                "the script calls {name}, which scripts may not run through gcbb upstash-proxy"
            ),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Token<'a> {
    Name(&'a str),
    /// A short string literal's raw content; `plain` when it holds no escape.
    Str {
        raw: &'a [u8],
        plain: bool,
    },
    /// A long-bracket string (never accepted as a command name).
    LongStr,
    Number,
    /// An operator or punctuation, as written.
    Symbol(&'a str),
}

/// Checks a script's source (EVAL's, SCRIPT LOAD's or FUNCTION LOAD's): every command it can
/// run is a literal from [`SCRIPT_COMMANDS`].
pub fn check_script(source: &[u8]) -> Result<(), Unsafe> {
    let tokens = tokenize(source)?;
    for (i, token) in tokens.iter().enumerate() {
        let Token::Name(name) = *token else { continue };
        let is_field = matches!(
            i.checked_sub(1).map(|p| &tokens[p]),
            Some(Token::Symbol(".") | Token::Symbol(":"))
        );
        if is_field {
            continue;
        }
        if FORBIDDEN_NAMES.contains(&name) || name.starts_with("__") {
            return Err(Unsafe::Forbidden(name.to_owned()));
        }
        if COMMAND_TABLES.contains(&name) {
            check_command_table_use(name, &tokens[i + 1..])?;
        }
    }
    Ok(())
}

/// `rest` follows a `redis` name: it must be `.call`/`.pcall` with a literal, or a safe field.
fn check_command_table_use(table: &str, rest: &[Token]) -> Result<(), Unsafe> {
    let indirect = |how: String| Err(Unsafe::Indirect(how));
    let (Some(Token::Symbol(".")), Some(Token::Name(field))) = (rest.first(), rest.get(1)) else {
        return indirect(format!("{table} as a value"));
    };
    if SAFE_REDIS_FIELDS.contains(field) {
        return Ok(());
    }
    if !matches!(*field, "call" | "pcall") {
        return indirect(format!("{table}.{field}"));
    }
    let literal = match (rest.get(2), rest.get(3), rest.get(4)) {
        // redis.call("NAME", …) or redis.call("NAME")
        (Some(Token::Symbol("(")), Some(Token::Str { raw, plain }), Some(Token::Symbol(next)))
            if matches!(*next, "," | ")") =>
        {
            (raw, plain)
        }
        // redis.call "NAME"
        (Some(Token::Str { raw, plain }), _, _) => (raw, plain),
        _ => {
            return indirect(format!(
                "{table}.{field} without a string literal as the command name"
            ))
        }
    };
    let (raw, plain) = literal;
    if !plain {
        return indirect(format!(
            "{table}.{field} with an escape in the command name"
        ));
    }
    let name = String::from_utf8_lossy(raw).to_ascii_uppercase();
    if SCRIPT_COMMANDS.contains(&name.as_str()) {
        Ok(())
    } else {
        Err(Unsafe::Command(name))
    }
}

fn tokenize(source: &[u8]) -> Result<Vec<Token<'_>>, Unsafe> {
    let bad = |why: &str| Err(Unsafe::Unreadable(why.to_owned()));
    let mut tokens = Vec::new();
    let mut i = 0;
    // Redis compiles what follows a `#!` first line, from its newline on.
    if source.starts_with(b"#!") {
        match source.iter().position(|&b| b == b'\n') {
            Some(end) => i = end,
            None => return Ok(tokens),
        }
    }
    let text = |from: usize, to: usize| std::str::from_utf8(&source[from..to]).unwrap_or("");
    while i < source.len() {
        let c = source[i];
        match c {
            b' ' | b'\t' | b'\n' | b'\r' | 0x0b | 0x0c => i += 1,
            b'-' if source.get(i + 1) == Some(&b'-') => {
                i += 2;
                // `--[=x` is a line comment to Lua, not an invalid delimiter.
                if let Ok(Some(level)) = long_bracket_level(source, i) {
                    i = skip_long_bracket(source, i, level)?;
                } else {
                    while i < source.len() && source[i] != b'\n' && source[i] != b'\r' {
                        i += 1;
                    }
                }
            }
            b'[' => match long_bracket_level(source, i)? {
                Some(level) => {
                    i = skip_long_bracket(source, i, level)?;
                    tokens.push(Token::LongStr);
                }
                None => {
                    tokens.push(Token::Symbol("["));
                    i += 1;
                }
            },
            b'"' | b'\'' => {
                let start = i + 1;
                let mut j = start;
                let mut plain = true;
                loop {
                    match source.get(j) {
                        None | Some(b'\n') | Some(b'\r') => return bad("a string is not closed"),
                        Some(&q) if q == c => break,
                        Some(b'\\') => {
                            plain = false;
                            j += 1;
                            match source.get(j) {
                                None => return bad("a string is not closed"),
                                // An escaped line break is one line break, \r\n or \n\r too.
                                Some(&nl @ (b'\n' | b'\r')) => {
                                    j += 1;
                                    if matches!(source.get(j), Some(&other) if (other == b'\n' || other == b'\r') && other != nl)
                                    {
                                        j += 1;
                                    }
                                }
                                Some(_) => j += 1,
                            }
                        }
                        Some(_) => j += 1,
                    }
                }
                tokens.push(Token::Str {
                    raw: &source[start..j],
                    plain,
                });
                i = j + 1;
            }
            b'0'..=b'9' => {
                i = skip_numeral(source, i);
                tokens.push(Token::Number);
            }
            b'.' if source.get(i + 1).is_some_and(u8::is_ascii_digit) => {
                i = skip_numeral(source, i);
                tokens.push(Token::Number);
            }
            b'a'..=b'z' | b'A'..=b'Z' | b'_' => {
                let start = i;
                while i < source.len() && (source[i].is_ascii_alphanumeric() || source[i] == b'_') {
                    i += 1;
                }
                tokens.push(Token::Name(text(start, i)));
            }
            _ => {
                let symbol = [
                    "...", "..", "==", "~=", "<=", ">=", "=", "<", ">", "(", ")", "{", "}", "]",
                    ";", ":", ",", ".", "+", "-", "*", "/", "%", "^", "#",
                ]
                .into_iter()
                .find(|s| source[i..].starts_with(s.as_bytes()));
                match symbol {
                    Some(s) => {
                        tokens.push(Token::Symbol(s));
                        i += s.len();
                    }
                    None => {
                        return Err(Unsafe::Unreadable(format!(
                            "byte 0x{c:02x} at offset {i} is not Lua"
                        )))
                    }
                }
            }
        }
    }
    Ok(tokens)
}

/// Lua 5.1's `read_numeral`: digits and dots, an exponent's sign, then any letters, digits and
/// underscores (a malformed numeral to Lua, never a name).
fn skip_numeral(source: &[u8], mut i: usize) -> usize {
    while i < source.len() && (source[i].is_ascii_digit() || source[i] == b'.') {
        i += 1;
    }
    if i < source.len() && matches!(source[i], b'e' | b'E') {
        i += 1;
        if i < source.len() && matches!(source[i], b'+' | b'-') {
            i += 1;
        }
    }
    while i < source.len() && (source[i].is_ascii_alphanumeric() || source[i] == b'_') {
        i += 1;
    }
    i
}

/// At `[`: the level of a long bracket opening there (`[[` is 0, `[=[` is 1), or `None` when
/// it is a plain `[`. `[=` not followed by `[` is an error to Lua, so it is refused.
fn long_bracket_level(source: &[u8], i: usize) -> Result<Option<usize>, Unsafe> {
    if source.get(i) != Some(&b'[') {
        return Ok(None);
    }
    let mut j = i + 1;
    while source.get(j) == Some(&b'=') {
        j += 1;
    }
    match source.get(j) {
        Some(b'[') => Ok(Some(j - i - 1)),
        _ if j > i + 1 => Err(Unsafe::Unreadable(
            "an invalid long string delimiter".into(),
        )),
        _ => Ok(None),
    }
}

/// From the `[` of a long bracket of `level` to past its closing `]=…]`.
fn skip_long_bracket(source: &[u8], open: usize, level: usize) -> Result<usize, Unsafe> {
    let mut i = open + level + 2;
    while i < source.len() {
        if source[i] == b']' {
            let mut j = i + 1;
            while source.get(j) == Some(&b'=') {
                j += 1;
            }
            if source.get(j) == Some(&b']') && j - i - 1 == level {
                return Ok(j + 1);
            }
            i += 1;
        } else if level == 0 && source[i..].starts_with(b"[[") {
            // Lua 5.1 (LUA_COMPAT_LSTR) rejects `[[` inside `[[ … ]]`.
            return Err(Unsafe::Unreadable("a nested [[ in a long string".into()));
        } else {
            i += 1;
        }
    }
    Err(Unsafe::Unreadable(
        "a long string or comment is not closed".into(),
    ))
}

#[cfg(test)]
mod tests;
