use super::*;

fn ok(script: &str) {
    assert_eq!(check_script(script.as_bytes()), Ok(()), "{script}");
}

fn refused(script: &str) -> Unsafe {
    check_script(script.as_bytes()).expect_err(script)
}

#[test]
fn literal_calls_of_allowed_commands_pass() {
    ok("return redis.call('SET', KEYS[1], ARGV[1])");
    ok("return redis.pcall(\"incrby\", KEYS[1], 1)");
    ok("return redis.call 'PING'");
    ok("redis.call('DEL', KEYS[1]) return redis.sha1hex('x')");
    ok("redis.setresp(3); redis.log(redis.LOG_WARNING, 'x'); return redis.status_reply('OK')");
    ok("#!lua flags=allow-key-locking\nreturn redis.call('GET', KEYS[1])");
    ok("local t = {} t.redis = 1 t.load = 2 return t.redis + t.load");
    ok("-- redis.call('FLUSHALL')\nreturn 1");
    ok("--[==[ redis.call('FLUSHALL') ]==] return redis.call('GET', 'k')");
    ok("return 'redis.call(\"FLUSHALL\")'");
    ok("return [[ _G loadstring ]]");
    ok("local s = \"a\\\"b\" return redis.call('GET', s)");
}

#[test]
fn forbidden_commands_are_refused_even_in_lowercase() {
    assert_eq!(
        refused("return redis.call('flushall')"),
        Unsafe::Command("FLUSHALL".into())
    );
    assert_eq!(
        refused("redis.pcall('SWAPDB', 0, 1)"),
        Unsafe::Command("SWAPDB".into())
    );
    assert_eq!(
        refused("return redis.call('KEYS', '*')"),
        Unsafe::Command("KEYS".into())
    );
    assert_eq!(
        refused("return redis.call(\"CONFIG\", 'SET', 'x', 'y')"),
        Unsafe::Command("CONFIG".into())
    );
}

#[test]
fn every_known_bypass_is_refused() {
    for script in [
        "return redis.call('FLUSH'..'ALL')",
        "return redis.call('FLUSH' .. 'ALL', 'x')",
        "local c = 'FLUSHALL' return redis.call(c)",
        "return redis.call(KEYS[1])",
        "return redis.call(string.char(70,76,85,83,72,65,76,76))",
        "return redis.call('FLUSH\\65LL')",
        "return redis.call([[FLUSHALL]])",
        "local r = redis return r.call('FLUSHALL')",
        "local c = redis.call return c('FLUSHALL')",
        "return redis['call']('FLUSHALL')",
        "return redis [ 'call' ] ('FLUSHALL')",
        "return pcall(redis.call, 'FLUSHALL')",
        "return redis.call{'FLUSHALL'}",
        "return redis:call('FLUSHALL')",
        "return _G.redis.call('FLUSHALL')",
        "return _G['re'..'dis'].call('FLUSHALL')",
        "return getfenv(1).redis.call('FLUSHALL')",
        "setfenv(1, {}) return 1",
        "return loadstring('return redis.call(\"FLUSHALL\")')()",
        "return load(function() return nil end)",
        "return debug.getregistry()",
        "return rawget(getfenv(0), 'redis')",
        "return getmetatable('').__index",
        "return __redis__err__handler",
        "return server.call('FLUSHALL')",
        "return redis.call  --[[ c ]] (  'FLUSHALL' )",
        "local t = {redis.call} return t[1]('FLUSHALL')",
        "for k, v in pairs(redis) do v('FLUSHALL') end",
    ] {
        let _ = refused(script);
    }
}

#[test]
fn the_lexer_is_not_fooled_by_strings_comments_and_numerals() {
    // A quote inside a comment or a long string does not open a string.
    refused("-- '\nreturn redis.call('FLUSH'..'ALL')");
    refused("local s = [[ ' ]] return redis.call('FLUSH'..'ALL')");
    // An escaped quote does not close the string; the call after it is code.
    refused("local s = 'it\\'s' return _G");
    // A line comment ends at the line; a long comment at its own level only.
    refused("--[==[ ]] ]=] ]==] return _G");
    refused("--[ not long\nreturn _G");
    ok("--[=x a line comment, _G\nreturn 1");
    // `3redis` is one numeral to Lua: no `redis` name in it; `x.debug` is a field.
    ok("local x = {} x.debug = 3 return x.debug");
    // What Lua would not compile is refused rather than guessed at.
    assert!(matches!(refused("return 'open"), Unsafe::Unreadable(_)));
    assert!(matches!(refused("return [==[ open"), Unsafe::Unreadable(_)));
    assert!(matches!(refused("return [=x"), Unsafe::Unreadable(_)));
    assert!(matches!(
        refused("return [[ a [[ b ]]"),
        Unsafe::Unreadable(_)
    ));
    assert!(matches!(refused("return 1 \u{e9}"), Unsafe::Unreadable(_)));
    assert!(matches!(refused("return 1 \0"), Unsafe::Unreadable(_)));
}

#[test]
fn the_projects_own_scripts_pass() {
    ok(gcbb::cache::ratelimit::SLIDING_WINDOW_LUA);
    ok(gcbb::cache::RELEASE_LOCK.lua());
}

#[test]
fn a_shebang_line_is_not_code_but_the_next_one_is() {
    ok("#!lua flags=no-writes,allow-key-locking _G\nreturn 1");
    refused("#!lua\nreturn _G");
    // Without the shebang, `#` is Lua's length operator, not a comment.
    refused("# _G\nreturn 1");
}
