//! The script time limit. A Lua script that never ends leaves Redis answering BUSY to every
//! other client (and holds every command queued behind it on the proxy's shared connection),
//! so the proxy stops one that runs past `--script-timeout-ms` itself: SCRIPT KILL (FUNCTION
//! KILL for FCALL) over a control connection made beforehand, since the script's own
//! connection is blocked and Redis may not finish a new connection's handshake while busy.
//!
//! Scripts go one at a time (the lane), so the script running when the limit passes is the one
//! the kill stops, never another client's script that merely queued behind it. Redis reads the
//! kill only once the script has run for its `busy-reply-threshold` (5 s by default): a script
//! is stopped after the larger of the two. While a kill is under way, requests waiting behind
//! the script are held past their own timeout until it lands ([`Watchdog::holds_until`]), so
//! they are answered, not turned away. A script that wrote before it overran can't be killed
//! (Redis answers UNKILLABLE); the proxy logs that, and its requests time out as usual.

use std::sync::Mutex;
use std::time::{Duration, Instant};

use super::commands::Command;

/// How long after a kill landed requests held behind the script may still take to be answered.
pub const KILL_GRACE: Duration = Duration::from_millis(1000);
/// Redis's default `busy-reply-threshold`, assumed when the proxy can't read it (an ACL user
/// without CONFIG).
pub const DEFAULT_BUSY_THRESHOLD: Duration = Duration::from_millis(5000);

/// Which kinds of script a request runs, so the kill names the right one.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ScriptKinds {
    /// EVAL, EVALSHA and their `_RO` forms: stopped by SCRIPT KILL.
    pub eval: bool,
    /// FCALL, FCALL_RO: stopped by FUNCTION KILL.
    pub function: bool,
}

impl ScriptKinds {
    pub fn of(commands: &[Command]) -> ScriptKinds {
        let mut kinds = ScriptKinds::default();
        for name in commands.iter().filter_map(|c| c.first()) {
            let name = name.to_ascii_uppercase();
            match name.as_slice() {
                b"EVAL" | b"EVAL_RO" | b"EVALSHA" | b"EVALSHA_RO" => kinds.eval = true,
                b"FCALL" | b"FCALL_RO" => kinds.function = true,
                _ => {}
            }
        }
        kinds
    }

    pub fn any(self) -> bool {
        self.eval || self.function
    }

    /// The kill commands to try, the request's own kind first.
    pub fn kill_commands(self) -> Vec<[&'static str; 2]> {
        let mut kills = Vec::new();
        if self.eval {
            kills.push(["SCRIPT", "KILL"]);
        }
        if self.function {
            kills.push(["FUNCTION", "KILL"]);
        }
        kills
    }
}

/// How a kill ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KillOutcome {
    /// Redis stopped the script; its client gets [`killed_message`].
    Killed,
    /// No script was running any more (it ended as the kill was sent).
    NotRunning,
    /// Redis refused: the script had written (UNKILLABLE), or another error.
    Refused(String),
    /// The control connection failed or Redis did not answer in time.
    Failed(String),
}

/// The error the client of a stopped script gets instead of Redis's.
pub fn killed_message(limit: Duration) -> String {
    format!(
        "ERR the script ran longer than {} ms, so gcbb upstash-proxy stopped it with SCRIPT KILL \
         (it had written nothing; see --script-timeout-ms)",
        limit.as_millis()
    )
}

/// Whether a Redis error text is the one a client of a killed script gets.
pub fn is_killed_error(text: &str) -> bool {
    text.contains("killed by user")
}

/// The lane scripts run in one at a time, and the state of the kill under way, if any.
pub struct Watchdog {
    pub limit: Duration,
    pub lane: tokio::sync::Mutex<()>,
    kill: Mutex<KillState>,
    busy_threshold: Mutex<Duration>,
}

#[derive(Debug, Default)]
struct KillState {
    /// A kill is under way and gives up at this instant.
    running_until: Option<Instant>,
    /// When the last kill ended.
    ended_at: Option<Instant>,
}

impl Watchdog {
    pub fn new(limit: Duration) -> Watchdog {
        Watchdog {
            limit,
            lane: tokio::sync::Mutex::new(()),
            kill: Mutex::new(KillState::default()),
            busy_threshold: Mutex::new(DEFAULT_BUSY_THRESHOLD),
        }
    }

    /// Redis's `busy-reply-threshold`, as read at connection time.
    pub fn busy_threshold(&self) -> Duration {
        *self
            .busy_threshold
            .lock()
            .unwrap_or_else(|p| p.into_inner())
    }

    pub fn set_busy_threshold(&self, threshold: Duration) {
        *self
            .busy_threshold
            .lock()
            .unwrap_or_else(|p| p.into_inner()) = threshold;
    }

    /// A kill starts; it gives up after `within`. It ends when the guard is dropped, even if
    /// the request that sent it is dropped first (its client went away).
    pub fn kill_started(&self, within: Duration) -> KillGuard<'_> {
        let mut state = self.state();
        state.running_until = Some(Instant::now() + within);
        KillGuard(self)
    }

    fn kill_ended(&self) {
        let mut state = self.state();
        state.running_until = None;
        state.ended_at = Some(Instant::now());
    }

    /// Until when a request past its own timeout should still wait: while a kill is under
    /// way, and [`KILL_GRACE`] after it ended. `None` when no kill holds it.
    pub fn holds_until(&self) -> Option<Instant> {
        let state = self.state();
        state
            .running_until
            .or(state.ended_at)
            .map(|at| at + KILL_GRACE)
            .filter(|&until| until > Instant::now())
    }

    fn state(&self) -> std::sync::MutexGuard<'_, KillState> {
        self.kill.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// Ends the kill under way when dropped.
pub struct KillGuard<'a>(&'a Watchdog);

impl Drop for KillGuard<'_> {
    fn drop(&mut self) {
        self.0.kill_ended();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cmd(parts: &[&str]) -> Command {
        parts.iter().map(|p| p.as_bytes().to_vec()).collect()
    }

    #[test]
    fn a_request_is_told_by_the_scripts_it_runs() {
        assert!(!ScriptKinds::of(&[cmd(&["GET", "k"])]).any());
        let both = ScriptKinds::of(&[cmd(&["evalsha", "x", "0"]), cmd(&["FCALL_RO", "f", "0"])]);
        assert_eq!(
            both.kill_commands(),
            [["SCRIPT", "KILL"], ["FUNCTION", "KILL"]]
        );
    }

    #[test]
    fn a_kill_holds_requests_while_it_runs_and_briefly_after() {
        let dog = Watchdog::new(Duration::from_millis(10));
        assert_eq!(dog.holds_until(), None);
        let kill = dog.kill_started(Duration::from_secs(60));
        assert!(dog.holds_until().unwrap() > Instant::now() + Duration::from_secs(59));
        drop(kill);
        let until = dog.holds_until().unwrap();
        assert!(until <= Instant::now() + KILL_GRACE);
    }
}
