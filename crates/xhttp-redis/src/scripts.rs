//! The Lua scripts: each step of the protocol that must be atomic runs as one script. The
//! scripts are files under `lua/`, so that tests can run them as they are.
//!
//! Keys, in this order for every script: the token hash, the fence counter, the lock, the
//! release channel. All four share one hash tag, so a cluster keeps them on one slot. The
//! token hash holds `a` (access token), `r` (refresh token), `e` (expiry, Unix milliseconds)
//! and `s` (login name); the last three may be missing.

use std::sync::LazyLock;

/// A script and its SHA-1, for `EVALSHA` first and `EVAL` when the server does not have it.
pub(crate) struct Lua {
    pub(crate) code: &'static str,
    pub(crate) hash: String,
}

impl Lua {
    fn new(code: &'static str) -> Lua {
        Lua {
            code,
            hash: redis::Script::new(code).get_hash().to_owned(),
        }
    }
}

/// Takes the lease when free: `SET NX PX`, then a new fence from the counter. Returns the
/// fence (at least 1), or, when another owner holds the lease, minus the milliseconds it has
/// left (0 when it has just gone; -1000 for a lock someone set without a lease, so that the
/// waiter looks again in a second). The same owner asking again (a retry after a lost
/// answer) gets its lease renewed and its fence back, not a second fence.
pub(crate) static ACQUIRE: LazyLock<Lua> =
    LazyLock::new(|| Lua::new(include_str!("lua/acquire.lua")));

/// Deletes the lease only if this owner still holds it, and tells the waiters. Returns 1 when
/// it released the lease, 0 when the lease had already gone to another owner or expired.
pub(crate) static RELEASE: LazyLock<Lua> =
    LazyLock::new(|| Lua::new(include_str!("lua/release.lua")));

/// Compare-and-swap: stores the new tokens (ARGV 3 to 6: access, refresh, expiry, login; an
/// empty string for a missing one) only when the session was not ended ([`END`]), the
/// stored refresh token equals ARGV 1 (empty:
/// none stored) and, when ARGV 2 is not empty, the fence counter still equals it (no newer
/// lease was granted). Returns `{1}` when stored, else `{0, <the stored hash as HGETALL>}`.
pub(crate) static SWAP: LazyLock<Lua> = LazyLock::new(|| {
    Lua::new(concat!(
        include_str!("lua/compare.lua"),
        include_str!("lua/write.lua"),
        "return {1}\n"
    ))
});

/// Ends the session for every process: replaces the tokens with the mark `x` that
/// [`codec::decode`](crate::codec::decode) reads as `SessionExpired`, until the next save.
pub(crate) static END: LazyLock<Lua> = LazyLock::new(|| Lua::new(include_str!("lua/end.lua")));

/// Stores the new tokens unconditionally, replacing every field (the same arguments as
/// [`SWAP`], whose first two are ignored).
pub(crate) static SAVE: LazyLock<Lua> =
    LazyLock::new(|| Lua::new(concat!(include_str!("lua/write.lua"), "return 1\n")));
