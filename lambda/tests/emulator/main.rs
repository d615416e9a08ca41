//! The Lambda functions under a real Lambda runtime emulator, `cargo lambda watch`: the same
//! route checks as under `gcbb dev` (health, the dashboard's headers and 304, a streamed chat
//! reply, a stored signed-in reply with its tokens, the cron with and without its secret, and
//! an EventBridge schedule), and the adapter itself through a probe function (streaming,
//! background work finished before the next invocation). Figures (cold start, first byte) are
//! printed, never asserted.

mod adapter;
mod client;
mod functions;
mod harness;
