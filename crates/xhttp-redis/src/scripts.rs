//! The Lua scripts: each step of the protocol that must be atomic runs as one script.
//!
//! Keys, in this order wherever a script takes them: the token hash, the fence counter, the
//! lock, the release channel. All four share one hash tag, so a cluster keeps them on one
//! slot. The token hash holds `a` (access token), `r` (refresh token), `e` (expiry, Unix
//! milliseconds) and `s` (login name); the last three may be missing.

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

/// Replaces the token hash with ARGV 3 to 6, leaving out the empty ones: the write that
/// [`SWAP`] and [`SAVE`] share.
macro_rules! write_tokens {
    () => {
        "
redis.call('DEL', KEYS[1])
redis.call('HSET', KEYS[1], 'a', ARGV[3])
if ARGV[4] ~= '' then redis.call('HSET', KEYS[1], 'r', ARGV[4]) end
if ARGV[5] ~= '' then redis.call('HSET', KEYS[1], 'e', ARGV[5]) end
if ARGV[6] ~= '' then redis.call('HSET', KEYS[1], 's', ARGV[6]) end
"
    };
}

/// Takes the lock when free: `SET NX PX`, then a new fence from the counter. Returns the fence
/// (at least 1), or, when another owner holds the lock, minus the milliseconds its lease has
/// left (0 when it has just gone; -1000 for a lock someone set without a lease, so that the
/// waiter looks again in a second).
pub(crate) static ACQUIRE: LazyLock<Lua> = LazyLock::new(|| {
    Lua::new(
        r"
if redis.call('SET', KEYS[3], ARGV[1], 'NX', 'PX', ARGV[2]) then
  return redis.call('INCR', KEYS[2])
end
local left = redis.call('PTTL', KEYS[3])
if left == -1 then return -1000 end
if left < 0 then return 0 end
return -left
",
    )
});

/// Deletes the lock only if this owner still holds it, and tells the waiters. Returns 1 when
/// it released the lock, 0 when the lease had already gone to another owner or expired.
pub(crate) static RELEASE: LazyLock<Lua> = LazyLock::new(|| {
    Lua::new(
        r"
if redis.call('GET', KEYS[3]) == ARGV[1] then
  redis.call('DEL', KEYS[3])
  redis.call('PUBLISH', KEYS[4], 'released')
  return 1
end
return 0
",
    )
});

/// Compare-and-swap: stores the new tokens (ARGV 3 to 6: access, refresh, expiry, login; an
/// empty string for a missing one) only when the stored refresh token equals ARGV 1 (empty:
/// none stored) and, when ARGV 2 is not empty, the fence counter still equals it (no newer
/// lease was granted). Returns `{1}` when stored, else `{0, <the stored hash as HGETALL>}`.
pub(crate) static SWAP: LazyLock<Lua> = LazyLock::new(|| {
    Lua::new(concat!(
        "
local stored = redis.call('HGET', KEYS[1], 'r') or ''
if stored ~= ARGV[1] then
  return {0, redis.call('HGETALL', KEYS[1])}
end
if ARGV[2] ~= '' and redis.call('GET', KEYS[2]) ~= ARGV[2] then
  return {0, redis.call('HGETALL', KEYS[1])}
end",
        write_tokens!(),
        "return {1}"
    ))
});

/// Stores the new tokens unconditionally, replacing every field (the same arguments as
/// [`SWAP`], whose first two are ignored).
pub(crate) static SAVE: LazyLock<Lua> =
    LazyLock::new(|| Lua::new(concat!(write_tokens!(), "return 1")));
