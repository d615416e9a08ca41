//! Session tokens for tests that start a server process of their own (`gcbb dev`): the names
//! they have always imported, over the harness's one key ([`crate::common::session`]).
#![allow(unused_imports)] // which of them a test module needs varies

pub use crate::common::session::{clerk_env, signing_key, token_for, ISSUER};
