// Runs Upstash's own SDKs against a `gcbb upstash-proxy` and prints what worked as JSON.
// Run by tests/integration/upstash_proxy.rs:
//   node check.mjs redis     <url> <token> <prefix>
//   node check.mjs ratelimit <url> <token> <prefix>
// Every check is a named scenario of one or more SDK calls whose results are compared with
// what Upstash answers; a check passes only if every call answers as expected. Keys are under
// <prefix>; some are left for the Rust test to read back from Redis (see `kept` below).
import assert from "node:assert/strict";
import { createHash } from "node:crypto";
import { readFileSync } from "node:fs";
import { Redis } from "@upstash/redis";
import { Ratelimit } from "@upstash/ratelimit";

const [mode, url, token, prefix] = process.argv.slice(2);
if (!["redis", "ratelimit"].includes(mode) || !url || !token || !prefix) {
  console.error("usage: node check.mjs <redis|ratelimit> <url> <token> <prefix>");
  process.exit(2);
}

const checks = [];
async function check(name, fn) {
  try {
    await fn();
    checks.push({ name, ok: true });
  } catch (error) {
    checks.push({ name, ok: false, error: String(error?.stack ?? error) });
  }
}

const sha1 = (text) => createHash("sha1").update(text, "utf8").digest("hex");
const version = (pkg) =>
  JSON.parse(readFileSync(new URL(`./node_modules/${pkg}/package.json`, import.meta.url)))
    .version;

// A refused command must come back as an error naming the refusal, never as a result.
async function refused(call) {
  await assert.rejects(call, (e) => {
    assert.match(String(e.message), /is refused by gcbb upstash-proxy/);
    return true;
  });
}

async function redisChecks(label, redis) {
  const k = (name) => `${prefix}:${label}:${name}`;

  await check(`${label}: ping`, async () => {
    assert.equal(await redis.ping(), "PONG");
  });
  await check(`${label}: echo`, async () => {
    assert.equal(await redis.echo("héllo ✓"), "héllo ✓");
  });
  await check(`${label}: set and get a string`, async () => {
    assert.equal(await redis.set(k("s"), "hello"), "OK");
    assert.equal(await redis.get(k("s")), "hello");
  });
  await check(`${label}: get a missing key is null`, async () => {
    assert.equal(await redis.get(k("missing")), null);
  });
  await check(`${label}: set and get an object`, async () => {
    await redis.set(k("obj"), { a: 1, b: [1, "two"], c: null });
    assert.deepEqual(await redis.get(k("obj")), { a: 1, b: [1, "two"], c: null });
  });
  await check(`${label}: del and exists`, async () => {
    await redis.set(k("d1"), "x");
    await redis.set(k("d2"), "y");
    assert.equal(await redis.exists(k("d1"), k("d2"), k("d3")), 2);
    assert.equal(await redis.del(k("d1"), k("d2"), k("d3")), 2);
    assert.equal(await redis.exists(k("d1")), 0);
  });
  await check(`${label}: incr, incrby, decr, incrbyfloat`, async () => {
    assert.equal(await redis.incr(k("n")), 1);
    assert.equal(await redis.incrby(k("n"), 5), 6);
    assert.equal(await redis.decr(k("n")), 5);
    assert.equal(await redis.incrbyfloat(k("f"), 1.5), 1.5);
  });
  await check(`${label}: set with ex, expire, ttl, persist`, async () => {
    assert.equal(await redis.set(k("e"), "v", { ex: 100 }), "OK");
    const ttl = await redis.ttl(k("e"));
    assert.ok(ttl > 0 && ttl <= 100, `ttl ${ttl}`);
    assert.equal(await redis.expire(k("e"), 50), 1);
    assert.ok((await redis.ttl(k("e"))) <= 50);
    assert.equal(await redis.persist(k("e")), 1);
    assert.equal(await redis.ttl(k("e")), -1);
    assert.equal(await redis.ttl(k("missing")), -2);
  });
  await check(`${label}: pexpire and pttl`, async () => {
    await redis.set(k("pe"), "v");
    assert.equal(await redis.pexpire(k("pe"), 60000), 1);
    const pttl = await redis.pttl(k("pe"));
    assert.ok(pttl > 0 && pttl <= 60000, `pttl ${pttl}`);
  });
  await check(`${label}: type of each kind`, async () => {
    await redis.set(k("t:s"), "v");
    await redis.hset(k("t:h"), { f: "v" });
    await redis.rpush(k("t:l"), "v");
    await redis.sadd(k("t:set"), "v");
    await redis.zadd(k("t:z"), { score: 1, member: "v" });
    assert.equal(await redis.type(k("t:s")), "string");
    assert.equal(await redis.type(k("t:h")), "hash");
    assert.equal(await redis.type(k("t:l")), "list");
    assert.equal(await redis.type(k("t:set")), "set");
    assert.equal(await redis.type(k("t:z")), "zset");
    assert.equal(await redis.type(k("t:none")), "none");
  });
  await check(`${label}: hashes`, async () => {
    const h = k("h");
    assert.equal(await redis.hset(h, { f1: "a", f2: 2 }), 2);
    assert.equal(await redis.hget(h, "f1"), "a");
    assert.deepEqual(await redis.hgetall(h), { f1: "a", f2: 2 });
    assert.equal(await redis.hincrby(h, "f2", 3), 5);
    assert.deepEqual(await redis.hmget(h, "f1", "nope"), { f1: "a", nope: null });
    assert.deepEqual((await redis.hkeys(h)).sort(), ["f1", "f2"]);
    assert.equal(await redis.hlen(h), 2);
    assert.equal(await redis.hexists(h, "f1"), 1);
    assert.equal(await redis.hdel(h, "f1"), 1);
    assert.equal(await redis.hget(h, "f1"), null);
  });
  await check(`${label}: lists`, async () => {
    const l = k("l");
    assert.equal(await redis.rpush(l, "a", "b", "c"), 3);
    assert.equal(await redis.lpush(l, "z"), 4);
    assert.deepEqual(await redis.lrange(l, 0, -1), ["z", "a", "b", "c"]);
    assert.equal(await redis.lpop(l), "z");
    assert.equal(await redis.rpop(l), "c");
    assert.equal(await redis.llen(l), 2);
    assert.equal(await redis.lindex(l, 1), "b");
  });
  await check(`${label}: sets`, async () => {
    const s = k("set");
    assert.equal(await redis.sadd(s, "a", "b", "c"), 3);
    assert.equal(await redis.sismember(s, "b"), 1);
    assert.equal(await redis.sismember(s, "x"), 0);
    assert.equal(await redis.scard(s), 3);
    assert.deepEqual((await redis.smembers(s)).sort(), ["a", "b", "c"]);
    assert.equal(await redis.srem(s, "a"), 1);
  });
  await check(`${label}: sorted sets`, async () => {
    const z = k("z");
    assert.equal(
      await redis.zadd(z, { score: 1, member: "a" }, { score: 2.5, member: "b" }),
      2,
    );
    assert.equal(await redis.zscore(z, "b"), 2.5);
    assert.equal(await redis.zincrby(z, 1, "a"), 2);
    assert.deepEqual(await redis.zrange(z, 0, -1), ["a", "b"]);
    assert.deepEqual(await redis.zrange(z, 0, -1, { withScores: true }), ["a", 2, "b", 2.5]);
    assert.equal(await redis.zrank(z, "b"), 1);
    assert.equal(await redis.zcard(z), 2);
    assert.equal(await redis.zrem(z, "a"), 1);
  });
  await check(`${label}: mset and mget`, async () => {
    assert.equal(await redis.mset({ [k("m1")]: "x", [k("m2")]: "y" }), "OK");
    assert.deepEqual(await redis.mget(k("m1"), k("m2"), k("m3")), ["x", "y", null]);
  });
  await check(`${label}: setnx, getset, append, strlen, getrange`, async () => {
    const s = k("str");
    assert.equal(await redis.setnx(s, "ab"), 1);
    assert.equal(await redis.setnx(s, "zz"), 0);
    assert.equal(await redis.append(s, "cd"), 4);
    assert.equal(await redis.strlen(s), 4);
    assert.equal(await redis.getrange(s, 1, 2), "bc");
    assert.equal(await redis.getset(s, "new"), "abcd");
    assert.equal(await redis.get(s), "new");
  });
  await check(`${label}: a pipeline`, async () => {
    const p = redis.pipeline();
    p.set(k("p"), "1");
    p.incr(k("p"));
    p.get(k("p"));
    p.hset(k("ph"), { f: "v" });
    p.ping();
    assert.deepEqual(await p.exec(), ["OK", 2, 2, 1, "PONG"]);
  });
  await check(`${label}: a pipeline keeps a command's error apart`, async () => {
    const p = redis.pipeline();
    p.set(k("pe"), "text");
    p.incr(k("pe"));
    p.get(k("pe"));
    const [set, incr, get] = await p.exec({ keepErrors: true });
    assert.equal(set.result, "OK");
    assert.match(incr.error, /^ERR value is not an integer/);
    assert.equal(get.result, "text");
  });
  await check(`${label}: multi/exec`, async () => {
    const tx = redis.multi();
    tx.set(k("tx"), "a");
    tx.append(k("tx"), "b");
    tx.get(k("tx"));
    tx.type(k("tx"));
    assert.deepEqual(await tx.exec(), ["OK", 2, "ab", "string"]);
  });
  await check(`${label}: eval`, async () => {
    assert.deepEqual(
      await redis.eval("return {KEYS[1], ARGV[1], 7}", [k("ev")], ["v"]),
      [k("ev"), "v", 7],
    );
  });
  await check(`${label}: scriptLoad, scriptExists, evalsha`, async () => {
    const script = "return ARGV[1] .. '!'";
    const sha = await redis.scriptLoad(script);
    assert.equal(sha, sha1(script));
    assert.deepEqual(await redis.scriptExists(sha, "0".repeat(40)), [1, 0]);
    assert.equal(await redis.evalsha(sha, [], ["hi"]), "hi!");
  });
  await check(`${label}: createScript runs by EVAL then EVALSHA`, async () => {
    const script = redis.createScript("return redis.call('INCR', KEYS[1])");
    assert.equal(await script.exec([k("cs")], []), 1);
    assert.equal(await script.exec([k("cs")], []), 2);
  });
  await check(`${label}: a script with Upstash's allow-key-locking flag`, async () => {
    const script =
      "#!lua flags=allow-key-locking\nreturn redis.call('SET', KEYS[1], ARGV[1])";
    assert.equal(await redis.eval(script, [k("kl")], ["locked"]), "OK");
    assert.equal(await redis.get(k("kl")), "locked");
    const sha = await redis.scriptLoad(script);
    assert.equal(sha, sha1(script), "SCRIPT LOAD answers the digest of the script sent");
    assert.deepEqual(await redis.scriptExists(sha), [1]);
    assert.equal(await redis.evalsha(sha, [k("kl")], ["again"]), "OK");
    assert.equal(await redis.get(k("kl")), "again");
  });
  await check(`${label}: a read-only script keeps its no-writes flag`, async () => {
    const script =
      "#!lua flags=no-writes,allow-key-locking\nreturn redis.call('SET', KEYS[1], 'x')";
    await assert.rejects(redis.eval(script, [k("ro")], []), /Write commands are not allowed/);
    assert.equal(await redis.get(k("ro")), null);
  });
  await check(`${label}: a 5 MB value round-trips`, async () => {
    const big = "0123456789abcdef".repeat((5 * 1024 * 1024) / 16);
    assert.equal(await redis.set(k("large"), big), "OK");
    const back = await redis.get(k("large"));
    assert.equal(back.length, big.length);
    assert.ok(back === big, "the same bytes");
  });
  await check(`${label}: unicode keys and values round-trip`, async () => {
    const key = k("ключ-🔑-中文");
    const value = "emoji 🦀 ✓ 中文 ñ \u0000 nul \u2028 sep";
    assert.equal(await redis.set(key, value), "OK");
    assert.equal(await redis.get(key), value);
    assert.deepEqual(await redis.keys(k("ключ-*")), [key]);
  });
  await check(`${label}: scan with match`, async () => {
    for (const n of [1, 2, 3]) await redis.set(k(`scan:${n}`), n);
    const found = [];
    let cursor = "0";
    do {
      const [next, keys] = await redis.scan(cursor, { match: k("scan:*"), count: 100 });
      found.push(...keys);
      cursor = String(next);
    } while (cursor !== "0");
    assert.deepEqual(found.sort(), [k("scan:1"), k("scan:2"), k("scan:3")]);
  });
  await check(`${label}: dbsize and time`, async () => {
    assert.ok((await redis.dbsize()) > 0);
    const [seconds] = await redis.time();
    assert.ok(Math.abs(seconds - Date.now() / 1000) < 60);
  });
  await check(`${label}: a script may SCAN and pcall`, async () => {
    await redis.set(k("sc:1"), "a");
    const script =
      "local r = redis.call('SCAN', '0', 'MATCH', ARGV[1], 'COUNT', 1000) " +
      "local e = redis.pcall('INCR', KEYS[1]) return {#r[2], e['err'] ~= nil}";
    assert.deepEqual(await redis.eval(script, [k("sc:1")], [k("sc:*")]), [1, 1]);
  });
  await check(`${label}: scripts that build a command at run time are refused`, async () => {
    await redis.set(k("canary"), "alive");
    await refused(redis.eval("return redis.call('FLUSH'..'ALL')", [], []));
    await refused(redis.eval("return redis.call(ARGV[1])", [], ["FLUSHALL"]));
    await refused(redis.eval("local r = redis return r.call('FLUSHALL')", [], []));
    await refused(redis.eval("return loadstring('return 1')()", [], []));
    await refused(redis.scriptLoad("return _G.redis.call('FLUSHDB')"));
    assert.equal(await redis.get(k("canary")), "alive");
  });
  await check(`${label}: evalsha of a script the proxy never saw is NOSCRIPT`, async () => {
    await assert.rejects(
      redis.evalsha(sha1(`return 'never sent ${label}'`), [], []),
      /NOSCRIPT/,
    );
  });
  await check(`${label}: scriptFlush is refused, scripts stay cached`, async () => {
    const sha = await redis.scriptLoad("return 'cached'");
    await refused(redis.scriptFlush());
    assert.equal(await redis.evalsha(sha, [], []), "cached");
  });
  await check(`${label}: refused commands come back as errors`, async () => {
    await redis.set(k("kept"), "kept ✓");
    await refused(redis.flushall());
    await refused(redis.flushdb());
    await refused(redis.exec(["CONFIG", "GET", "maxmemory"]));
    await refused(redis.exec(["SELECT", "3"]));
    await refused(redis.exec(["CLIENT", "LIST"]));
    await refused(redis.exec(["BLPOP", k("bl"), "0"]));
    await refused(redis.exec(["MULTI"]));
    await refused(redis.exec(["SUBSCRIBE", "chan"]));
    await refused(redis.exec(["DEBUG", "SLEEP", "0"]));
    await refused(redis.exec(["SHUTDOWN", "NOSAVE"]));
    await refused(redis.eval("return redis.call('FLUSHALL')", [], []));
    assert.equal(await redis.get(k("kept")), "kept ✓");
    assert.equal(await redis.ping(), "PONG");
  });
}

async function ratelimitChecks(redis) {
  // Windows of a day: they are aligned to the epoch, and a check that straddled a boundary
  // would see a fresh window.
  const limiters = {
    slidingWindow: Ratelimit.slidingWindow(3, "1 d"),
    fixedWindow: Ratelimit.fixedWindow(3, "1 d"),
    tokenBucket: Ratelimit.tokenBucket(1, "1 d", 3),
  };
  for (const [name, limiter] of Object.entries(limiters)) {
    // No ephemeral cache: every call goes to Redis through the proxy.
    const rl = new Ratelimit({
      redis,
      limiter,
      prefix: `${prefix}:rl:${name}`,
      ephemeralCache: false,
      analytics: false,
    });
    const limit = async (id, expected) => {
      const res = await rl.limit(id);
      await res.pending;
      assert.equal(res.reason, undefined, "answered by Redis, not by the timeout");
      assert.deepEqual(
        { success: res.success, remaining: res.remaining, limit: res.limit },
        expected,
      );
    };
    await check(`${name}: allows the limit`, async () => {
      for (const remaining of [2, 1, 0]) await limit("user-1", { success: true, remaining, limit: 3 });
    });
    await check(`${name}: denies past the limit`, async () => {
      await limit("user-1", { success: false, remaining: 0, limit: 3 });
    });
    await check(`${name}: getRemaining`, async () => {
      const { remaining, limit: l } = await rl.getRemaining("user-1");
      assert.deepEqual({ remaining, limit: l }, { remaining: 0, limit: 3 });
    });
    await check(`${name}: resetUsedTokens`, async () => {
      await rl.resetUsedTokens("user-1");
      const { remaining } = await rl.getRemaining("user-1");
      assert.equal(remaining, 3);
      await limit("user-1", { success: true, remaining: 2, limit: 3 });
    });
    await check(`${name}: identifiers are independent`, async () => {
      await limit("user-2", { success: true, remaining: 2, limit: 3 });
    });
    await check(`${name}: blockUntilReady passes at once when allowed`, async () => {
      const res = await rl.blockUntilReady("user-3", 2000);
      assert.equal(res.success, true);
      assert.equal(res.remaining, 2);
    });
  }
}

const out = {};
if (mode === "redis") {
  out.client = "@upstash/redis";
  out.version = version("@upstash/redis");
  // The default client batches commands into /pipeline (auto-pipelining); the other sends
  // each command to / on its own.
  await redisChecks("auto", new Redis({ url, token }));
  await redisChecks("direct", new Redis({ url, token, enableAutoPipelining: false }));
} else {
  out.client = "@upstash/ratelimit";
  out.version = version("@upstash/ratelimit");
  out.redisVersion = version("@upstash/redis");
  await ratelimitChecks(new Redis({ url, token }));
}
out.total = checks.length;
out.passed = checks.filter((c) => c.ok).length;
out.failures = checks.filter((c) => !c.ok);
out.checks = checks.map((c) => c.name);
console.log(JSON.stringify(out));
