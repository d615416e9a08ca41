//! An append to a list and what it found: the reply journal's one round trip, spoken by every
//! store ([`super::store::Store::append_list`]).

use std::time::Duration;

use bytes::Bytes;

/// An append to a list ([`super::store::Store::append_list`]): the items (none: only the lease and the
/// watched key), the list's time to live, a lease key set with its own time to live, and a key
/// read back, all in one round trip.
#[derive(Debug, Clone, Copy)]
pub struct ListAppend<'a> {
    pub key: &'a str,
    pub items: &'a [Bytes],
    /// Set with the items (`PEXPIRE`); none keeps the list's time to live (a list is created
    /// with none: give one with its first items).
    pub ttl: Option<Duration>,
    /// Set to `"1"` for the given time (a mark that the writer is alive).
    pub lease: Option<(&'a str, Duration)>,
    /// Read after the append (a flag another instance may have set).
    pub watch: Option<&'a str>,
}

/// What [`super::store::Store::append_list`] found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Appended {
    /// The list's length after the append.
    pub len: u64,
    /// The watched key's value.
    pub watched: Option<Bytes>,
}
