//! Which commands the proxy refuses, and why. It is a stand-in for Upstash on a machine whose
//! Redis other people and tests share, so it refuses what no Upstash database runs and what
//! would break the one connection all its clients share (SELECT, MULTI, SUBSCRIBE, a blocking
//! pop): every command of a request is checked before any of it reaches Redis. A script is
//! checked for every command it can run ([`super::lua`]), not for the words it contains.

/// A command as sent: its name, then its arguments, as bytes.
pub type Command = Vec<Vec<u8>>;

/// What a proxy was started to allow beyond the defaults.
#[derive(Debug, Clone, Copy, Default)]
pub struct Policy {
    /// `--allow-flush`: FLUSHALL, FLUSHDB, FUNCTION FLUSH and SCRIPT FLUSH (never from a script).
    pub allow_flush: bool,
}

/// A command the proxy will not run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal {
    /// The command as named in the message: upper case, with its subcommand when that decided.
    pub command: String,
    pub reason: String,
}

impl Refusal {
    /// The text of the `{"error": …}` reply, in Redis's style (`ERR …`).
    pub fn message(&self) -> String {
        format!(
            "ERR {} is refused by gcbb upstash-proxy: {}",
            self.command, self.reason
        )
    }
}

const FLUSH: &str =
    "it empties the whole Redis, which is shared; start the proxy with --allow-flush to allow it";
const SERVER_ADMIN: &str =
    "it administers the Redis server, which is shared, and no Upstash database runs it";
const SHARED_CONNECTION: &str =
    "it changes the state of the one connection every client of the proxy shares";
const MONITOR: &str =
    "it turns the shared connection into a monitor; the proxy has no streaming endpoint";
const TRANSACTION: &str =
    "send a transaction's commands to /multi-exec, which runs MULTI and EXEC on a connection of its own";
const SUBSCRIBE: &str =
    "it turns the shared connection into a subscriber; the proxy has no streaming endpoint";
const BLOCKING: &str =
    "it blocks the shared connection, and every other client with it, while it waits";
const OTHER_CLIENTS: &str = "it stops a script or function another client is running; the proxy \
     stops a script itself once it runs past --script-timeout-ms";
const SCRIPT_CACHE_FLUSH: &str = "it empties the script cache every client of the Redis shares; \
     start the proxy with --allow-flush to allow it";

/// Checks one command; the refusal when the proxy won't run it. Names are case-insensitive.
pub fn check(command: &[Vec<u8>], policy: Policy) -> Result<(), Refusal> {
    let Some(name) = command.first() else {
        return Ok(());
    };
    let name = upper(name);
    let sub = command.get(1).map(|s| upper(s));
    let refuse = |reason: &'static str, with_sub: bool| {
        let command = match (&sub, with_sub) {
            (Some(sub), true) => format!("{name} {sub}"),
            _ => name.clone(),
        };
        Err(Refusal {
            command,
            reason: reason.to_owned(),
        })
    };
    match name.as_str() {
        "FLUSHALL" | "FLUSHDB" if !policy.allow_flush => refuse(FLUSH, false),
        "CONFIG" | "SHUTDOWN" | "DEBUG" | "SAVE" | "BGSAVE" | "BGREWRITEAOF" | "REPLICAOF"
        | "SLAVEOF" | "MIGRATE" | "MODULE" | "ACL" | "FAILOVER" | "SWAPDB" | "CLUSTER" | "SYNC"
        | "PSYNC" | "REPLCONF" | "SENTINEL" | "PFDEBUG" | "PFSELFTEST" | "RESTORE-ASKING" => {
            refuse(SERVER_ADMIN, false)
        }
        "MONITOR" => refuse(MONITOR, false),
        "CLIENT" | "SELECT" | "HELLO" | "AUTH" | "RESET" | "QUIT" | "READONLY" | "READWRITE"
        | "ASKING" => refuse(SHARED_CONNECTION, name == "CLIENT"),
        "MULTI" | "EXEC" | "DISCARD" | "WATCH" | "UNWATCH" => refuse(TRANSACTION, false),
        "SUBSCRIBE" | "PSUBSCRIBE" | "SSUBSCRIBE" | "UNSUBSCRIBE" | "PUNSUBSCRIBE"
        | "SUNSUBSCRIBE" => refuse(SUBSCRIBE, false),
        "BLPOP" | "BRPOP" | "BLMOVE" | "BRPOPLPUSH" | "BLMPOP" | "BZPOPMIN" | "BZPOPMAX"
        | "BZMPOP" | "WAIT" | "WAITAOF" => refuse(BLOCKING, false),
        "XREAD" | "XREADGROUP" if has_block_option(&command[1..]) => refuse(BLOCKING, false),
        "SCRIPT" => match sub.as_deref() {
            Some("KILL") => refuse(OTHER_CLIENTS, true),
            // A debugging session takes over the connection of the next EVAL.
            Some("DEBUG") => refuse(SHARED_CONNECTION, true),
            Some("FLUSH") if !policy.allow_flush => refuse(SCRIPT_CACHE_FLUSH, true),
            Some("LOAD") => check_script_text(command.get(2)),
            _ => Ok(()),
        },
        "FUNCTION" => match sub.as_deref() {
            Some("KILL") => refuse(OTHER_CLIENTS, true),
            Some("FLUSH") if !policy.allow_flush => refuse(FLUSH, true),
            // `FUNCTION RESTORE payload FLUSH` drops every library first.
            Some("RESTORE")
                if !policy.allow_flush && command[2..].iter().any(|a| upper(a) == "FLUSH") =>
            {
                refuse(FLUSH, true)
            }
            Some("LOAD") => check_script_text(command.last()),
            _ => Ok(()),
        },
        "EVAL" | "EVAL_RO" => check_script_text(command.get(1)),
        _ => Ok(()),
    }
}

/// Checks every command of a request; the first refusal (its index and why) otherwise.
pub fn check_all(commands: &[Command], policy: Policy) -> Result<(), (usize, Refusal)> {
    commands
        .iter()
        .enumerate()
        .try_for_each(|(i, c)| check(c, policy).map_err(|r| (i, r)))
}

/// A script (EVAL's, SCRIPT LOAD's, FUNCTION LOAD's) is refused unless every command it can
/// run is a literal the proxy allows ([`super::lua`] says why that is enough).
fn check_script_text(source: Option<&Vec<u8>>) -> Result<(), Refusal> {
    let Some(source) = source else {
        return Ok(());
    };
    super::lua::check_script(source).map_err(|unsafe_| Refusal {
        command: "a script".to_owned(),
        reason: unsafe_.reason(),
    })
}

/// Whether `command` is KEYS, which Upstash answers only for a database of at most
/// [`super::KEYS_LIMIT`] keys: the proxy counts them first.
pub fn is_keys(command: &[Vec<u8>]) -> bool {
    command
        .first()
        .is_some_and(|name| name.eq_ignore_ascii_case(b"KEYS"))
}

/// Whether XREAD/XREADGROUP options (everything before STREAMS) hold BLOCK.
fn has_block_option(args: &[Vec<u8>]) -> bool {
    args.iter()
        .map(|a| upper(a))
        .take_while(|a| a != "STREAMS")
        .any(|a| a == "BLOCK")
}

fn upper(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).to_ascii_uppercase()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cmd(parts: &[&str]) -> Command {
        parts.iter().map(|p| p.as_bytes().to_vec()).collect()
    }

    fn refused(parts: &[&str]) -> bool {
        check(&cmd(parts), Policy::default()).is_err()
    }

    #[test]
    fn names_are_case_insensitive() {
        assert!(refused(&["flushall"]));
        assert!(refused(&["FlushDb", "ASYNC"]));
        assert!(refused(&["config", "set", "maxmemory", "1"]));
        assert!(!refused(&["get", "k"]));
    }

    #[test]
    fn flushes_need_the_flag() {
        let allow = Policy { allow_flush: true };
        for parts in [
            &["FLUSHALL"][..],
            &["FLUSHDB"],
            &["FUNCTION", "FLUSH"],
            &["FUNCTION", "RESTORE", "x", "flush"],
            &["SCRIPT", "FLUSH"],
        ] {
            assert!(refused(parts), "{parts:?}");
            assert!(check(&cmd(parts), allow).is_ok(), "{parts:?}");
        }
        assert!(check(&cmd(&["SWAPDB", "0", "1"]), allow).is_err());
        // Scripts never flush: the flag allows the commands, not a script calling them.
        assert!(check(&cmd(&["EVAL", "return redis.call('flushdb')", "0"]), allow).is_err());
    }

    #[test]
    fn blocking_reads_are_refused_only_with_block() {
        assert!(refused(&[
            "XREAD", "COUNT", "1", "BLOCK", "0", "STREAMS", "s", "$"
        ]));
        assert!(refused(&[
            "xreadgroup",
            "GROUP",
            "g",
            "c",
            "block",
            "10",
            "STREAMS",
            "s",
            ">"
        ]));
        assert!(!refused(&["XREAD", "COUNT", "1", "STREAMS", "block", "0"]));
        assert!(refused(&["BLPOP", "x", "0"]));
    }

    #[test]
    fn script_subcommands_are_told_apart() {
        assert!(!refused(&["SCRIPT", "LOAD", "return 1"]));
        assert!(!refused(&["SCRIPT", "EXISTS", "abc"]));
        assert!(refused(&["SCRIPT", "FLUSH", "ASYNC"]));
        assert!(refused(&["SCRIPT", "KILL"]));
        assert!(refused(&["script", "debug", "yes"]));
        assert!(refused(&["SCRIPT", "LOAD", "redis.call('SWAPDB', 0, 1)"]));
        assert!(refused(&["EVAL", "return redis.call('FLUSH'..'ALL')", "0"]));
        assert!(refused(&[
            "FUNCTION",
            "LOAD",
            "#!lua name=l\nredis.register_function('f', function() return redis.call(KEYS[1]) end)"
        ]));
        assert!(!refused(&[
            "FUNCTION",
            "LOAD",
            "#!lua name=l\nredis.register_function('f', function(k) return redis.call('GET', k[1]) end)"
        ]));
    }

    #[test]
    fn the_message_names_the_command_and_the_reason() {
        let r = check(&cmd(&["client", "kill", "id", "3"]), Policy::default()).unwrap_err();
        assert_eq!(r.command, "CLIENT KILL");
        assert!(
            r.message().starts_with("ERR CLIENT KILL is refused"),
            "{}",
            r.message()
        );
    }

    #[test]
    fn check_all_names_the_first_refused_command() {
        let commands = vec![
            cmd(&["SET", "a", "1"]),
            cmd(&["MULTI"]),
            cmd(&["SELECT", "1"]),
        ];
        let (i, r) = check_all(&commands, Policy::default()).unwrap_err();
        assert_eq!((i, r.command.as_str()), (1, "MULTI"));
    }
}
