//! The Lua scripts and the one pipeline that carries them.
//!
//! Each script call touches the buckets of one scope only, so all its keys share a hash tag and
//! a slot: legal on Redis Cluster, and atomic because Redis runs a script alone. A batch's calls
//! go out as one pipeline of EVALSHA, ordered by slot; a call answered NOSCRIPT (Redis restarted,
//! failed over or flushed its scripts) is sent again after a SCRIPT LOAD, in one more round trip.

use std::sync::LazyLock;

use redis::aio::ConnectionManager;
use redis::{Cmd, ServerErrorKind, Value};

use crate::bucket::Seen;
use crate::key::key_slot;
use crate::CapsError;

/// Takes `n` tokens from every bucket of KEYS, or as many as every one of them holds; `n = 0`
/// only reads (peek). Every bucket is read before any is written, and nothing is written when
/// the answer is 0. See `bucket.rs` for the math of each shape.
///
/// ARGV: `n`, `quiet` (`1`: answer a full grant with `n` alone, for callers that will never
/// refund it), then per key: shape (`w` window, `r` rate), capacity, period in µs.
/// Returns `{k, now, avail_1, stamp_1, …, avail_n, stamp_n}`, followed, when `k < n` or on a
/// peek (where the caller needs dues), by each key's live window entries as `count, entries…`
/// (newest first, before the take; count 0 for a rate bucket).
///
/// It runs once per text, so it is written for Redis's time: every `redis.call` costs a few µs,
/// so a bucket is one GET and one SET with PX (a window's log is a string of decimal µs, newest
/// first, not a list needing LPUSH, LTRIM and PEXPIRE); replies are flat; numbers given to Redis
/// are integers below 2^53, which Redis writes exactly (`%.17g`); times written into a log are
/// the strings `TIME` gave, never a number printed by Lua (`%.14g` would round them).
pub(crate) const TAKE: &str = r#"
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local now_s = t[1] .. string.sub('00000' .. t[2], -6)
local n = tonumber(ARGV[1])
local k = n
local nkeys = #KEYS
local avail, stamp, stamp_s, lives = {}, {}, {}, {}
for i = 1, nkeys do
  local a = 3 * i
  local cap, period = tonumber(ARGV[a + 1]), tonumber(ARGV[a + 2])
  local raw = redis.call('GET', KEYS[i])
  if ARGV[a] == 'r' then
    local base = tonumber(raw or 0)
    if base < now then base = now end
    local room = now + period - base
    local av = 0
    if room > 0 then
      -- room * cap < 2^53: exact. The division may round up to the next integer; undo that.
      av = math.floor(room * cap / period)
      if av * period > room * cap then av = av - 1 end
    end
    avail[i], stamp[i] = av, base
  else
    -- A clock that stepped back must not stamp a grant older than the newest one.
    local at, at_s = now, now_s
    local live, m = {}, 0
    if raw then
      for e in string.gmatch(raw, '%d+') do
        local v = tonumber(e)
        if m == 0 and v > at then at, at_s = v, e end
        if v <= at - period or m >= cap then break end
        m = m + 1
        live[m] = e
      end
    end
    avail[i], stamp[i], stamp_s[i], lives[i] = cap - m, at, at_s, live
  end
  if avail[i] < k then k = avail[i] end
end
if k > 0 then
  for i = 1, nkeys do
    local a = 3 * i
    local cap, period = tonumber(ARGV[a + 1]), tonumber(ARGV[a + 2])
    if ARGV[a] == 'r' then
      -- TAT += ceil(k * period / cap): rounding up only ever delays the next token.
      local add = math.floor(k * period / cap)
      if add * cap < k * period then add = add + 1 end
      local tat = stamp[i] + add
      redis.call('SET', KEYS[i], tat, 'PX', math.ceil((tat - now) / 1000))
      stamp[i] = tat
    else
      -- The k new grants, then the live entries; the dead ones drop out of the log here.
      local log, live = {}, lives[i]
      for j = 1, k do log[j] = stamp_s[i] end
      for j = 1, #live do log[k + j] = live[j] end
      redis.call('SET', KEYS[i], table.concat(log, ' '),
        'PX', math.ceil((stamp[i] + period - now) / 1000))
    end
  end
end
if k == n and n > 0 and ARGV[2] == '1' then return k end
local out = {k, now}
for i = 1, nkeys do
  out[2 * i + 1], out[2 * i + 2] = avail[i], stamp[i]
end
if k < n or n == 0 then
  for i = 1, nkeys do
    local live = lives[i] or {}
    out[#out + 1] = #live
    for j = 1, #live do out[#out + 1] = live[j] end
  end
end
return out
"#;

/// Gives back `m` tokens that one TAKE took from every bucket of KEYS (the batch could not use
/// them). ARGV: `m`, then per key: shape, capacity, period in µs, stamp.
///
/// Window: removes `m` of the entries the take wrote, which restores the log exactly. Rate:
/// `TAT − m·T` would also give back whatever refilled since the take, so the new TAT is at
/// least `now + (TAT − stamp)`, the most the other takes since then can account for; a stamp
/// lowered by earlier refunds keeps that bound true. Either way a refund never gives back more
/// than the take took: never a text beyond a cap.
const REFUND: &str = r#"
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local m = tonumber(ARGV[1])
for i = 1, #KEYS do
  local a = 4 * i
  local cap, period, stamp = tonumber(ARGV[a - 1]), tonumber(ARGV[a]), ARGV[a + 1]
  local raw = redis.call('GET', KEYS[i])
  if ARGV[a - 2] == 'r' then
    local tat = tonumber(raw or 0)
    if tat > now then
      local back = math.floor(m * period / cap)
      if back * cap > m * period then back = back - 1 end
      local new = math.max(tat - back, now + tat - tonumber(stamp))
      if new <= now then
        redis.call('DEL', KEYS[i])
      elseif new < tat then
        redis.call('SET', KEYS[i], new, 'PX', math.ceil((new - now) / 1000))
      end
    end
  elseif raw then
    local log, removed = {}, 0
    for e in string.gmatch(raw, '%d+') do
      if removed < m and e == stamp then
        removed = removed + 1
      else
        log[#log + 1] = e
      end
    end
    if removed > 0 then
      local ttl = 0
      if #log > 0 then ttl = math.ceil((tonumber(log[1]) + period - now) / 1000) end
      if ttl > 0 then
        redis.call('SET', KEYS[i], table.concat(log, ' '), 'PX', ttl)
      else
        redis.call('DEL', KEYS[i])
      end
    end
  end
end
return 1
"#;

/// A script with its SHA1, computed once.
#[derive(Debug)]
pub(crate) struct Lua {
    pub(crate) script: redis::Script,
    source: String,
}

impl Lua {
    pub(crate) fn new(source: &str) -> Self {
        Self {
            script: redis::Script::new(source),
            source: source.to_owned(),
        }
    }

    /// The same script reading the time from its last argument instead of `TIME`, so the tests
    /// can drive the real Lua through any sequence of instants.
    #[cfg(test)]
    pub(crate) fn with_test_clock(&self) -> Self {
        let clock =
            "local t = redis.call('TIME')\nlocal now = tonumber(t[1]) * 1000000 + tonumber(t[2])";
        let clock_s = "local now_s = t[1] .. string.sub('00000' .. t[2], -6)";
        assert!(self.source.contains(clock));
        Self::new(
            &self
                .source
                .replace(clock, "local now = tonumber(ARGV[#ARGV])")
                .replace(clock_s, "local now_s = ARGV[#ARGV]"),
        )
    }
}

pub(crate) static TAKE_LUA: LazyLock<Lua> = LazyLock::new(|| Lua::new(TAKE));
pub(crate) static REFUND_LUA: LazyLock<Lua> = LazyLock::new(|| Lua::new(REFUND));

/// An argument of a script call; numbers stay numbers until the wire.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Arg {
    Int(i64),
    Str(&'static str),
}

/// One script call: its keys share a hash tag.
#[derive(Debug)]
pub(crate) struct Call<'s> {
    pub lua: &'s Lua,
    pub keys: Vec<String>,
    pub args: Vec<Arg>,
}

impl Call<'_> {
    fn slot(&self) -> u16 {
        self.keys.first().map_or(0, |k| key_slot(k.as_bytes()))
    }

    fn evalsha(&self) -> Cmd {
        let mut cmd = redis::cmd("EVALSHA");
        cmd.arg(self.lua.script.get_hash());
        self.keys_and_args(&mut cmd);
        cmd
    }

    fn keys_and_args(&self, cmd: &mut Cmd) {
        cmd.arg(self.keys.len()).arg(&self.keys);
        for arg in &self.args {
            match *arg {
                Arg::Int(i) => cmd.arg(i),
                Arg::Str(s) => cmd.arg(s),
            };
        }
    }
}

/// The calls grouped by slot, slots ascending, each group in the callers' order (two calls on
/// one phone keep their order). A Redis Cluster client sends each group to the node owning its
/// slot, all nodes at once; on one Redis the groups simply follow each other in one pipeline.
pub(crate) fn by_slot(calls: &[Call<'_>]) -> Vec<(u16, Vec<usize>)> {
    let mut order: Vec<(u16, usize)> = calls.iter().map(|c| c.slot()).zip(0..).collect();
    order.sort_by_key(|&(slot, _)| slot);
    let mut groups: Vec<(u16, Vec<usize>)> = Vec::new();
    for (slot, i) in order {
        match groups.last_mut() {
            Some((s, members)) if *s == slot => members.push(i),
            _ => groups.push((slot, vec![i])),
        }
    }
    groups
}

/// Sends every call in one round trip and returns each call's reply in the order of `calls`;
/// fails if any call failed.
pub(crate) async fn run(
    conn: &ConnectionManager,
    calls: &[Call<'_>],
) -> Result<Vec<Value>, CapsError> {
    let replies = run_tolerant(conn, calls).await?;
    for reply in &replies {
        if let Value::ServerError(e) = reply {
            return Err(redis::RedisError::from(e.clone()).into());
        }
    }
    Ok(replies)
}

/// Like [`run`], but a call that failed leaves its error in its place instead of failing the
/// others (their scripts ran and their answers count).
pub(crate) async fn run_tolerant(
    conn: &ConnectionManager,
    calls: &[Call<'_>],
) -> Result<Vec<Value>, CapsError> {
    if calls.is_empty() {
        return Ok(Vec::new());
    }
    let order: Vec<usize> = by_slot(calls)
        .into_iter()
        .flat_map(|(_, members)| members)
        .collect();
    let sent = send(conn, order.iter().map(|&i| calls[i].evalsha())).await?;
    let mut replies = vec![Value::Nil; calls.len()];
    for (i, reply) in order.into_iter().zip(sent) {
        replies[i] = reply;
    }

    // A NOSCRIPT call ran nothing, so sending it again cannot take twice. One SCRIPT LOAD per
    // script ahead of the retried calls, in the same round trip, rather than a source per call.
    let missing: Vec<usize> = (0..calls.len())
        .filter(|&i| is_noscript(&replies[i]))
        .collect();
    if !missing.is_empty() {
        let mut scripts: Vec<&Lua> = Vec::new();
        for &i in &missing {
            if !scripts.iter().any(|l| std::ptr::eq(*l, calls[i].lua)) {
                scripts.push(calls[i].lua);
            }
        }
        tracing::debug!(
            calls = missing.len(),
            "scripts not cached by Redis; loading them"
        );
        let loads = scripts.iter().map(|l| {
            let mut cmd = redis::cmd("SCRIPT");
            cmd.arg("LOAD").arg(l.source.as_str());
            cmd
        });
        let sent = send(
            conn,
            loads.chain(missing.iter().map(|&i| calls[i].evalsha())),
        )
        .await?;
        for (i, reply) in missing
            .into_iter()
            .zip(sent.into_iter().skip(scripts.len()))
        {
            replies[i] = reply;
        }
    }
    Ok(replies)
}

async fn send(
    conn: &ConnectionManager,
    cmds: impl Iterator<Item = Cmd>,
) -> Result<Vec<Value>, CapsError> {
    let mut pipe = redis::pipe();
    // Per-call errors come back in place, so one NOSCRIPT does not hide the other answers.
    pipe.ignore_errors();
    let mut expected = 0;
    for cmd in cmds {
        pipe.add_command(cmd);
        expected += 1;
    }
    let mut conn = conn.clone();
    let replies: Vec<Value> = pipe.query_async(&mut conn).await?;
    if replies.len() != expected {
        return Err(CapsError::Reply(format!(
            "{} replies to {expected} calls",
            replies.len()
        )));
    }
    Ok(replies)
}

fn is_noscript(v: &Value) -> bool {
    matches!(v, Value::ServerError(e) if e.kind() == Some(ServerErrorKind::NoScript))
}

/// What one TAKE answered.
#[derive(Debug, Clone)]
pub(crate) struct Taken {
    pub taken: u64,
    pub now: i64,
    pub seen: Vec<Seen>,
}

pub(crate) fn parse_take(v: &Value, keys: usize) -> Result<Taken, CapsError> {
    if let Value::ServerError(e) = v {
        return Err(redis::RedisError::from(e.clone()).into());
    }
    let bad = || CapsError::Reply(format!("take script answered {v:?}"));
    let items = match v {
        Value::Array(items) => items,
        // A quiet take that got everything it asked for.
        Value::Int(k) if *k > 0 => {
            return Ok(Taken {
                taken: *k as u64,
                now: 0,
                seen: Vec::new(),
            })
        }
        _ => return Err(bad()),
    };
    let head = 2 + 2 * keys;
    if items.len() < head {
        return Err(bad());
    }
    let ints: Option<Vec<i64>> = items[..head].iter().map(int).collect();
    let ints = ints.ok_or_else(bad)?;
    if ints[0] < 0 || ints[2..].iter().step_by(2).any(|&a| a < 0) {
        return Err(bad());
    }
    let mut seen: Vec<Seen> = ints[2..]
        .chunks_exact(2)
        .map(|pair| Seen {
            avail: pair[0] as u64,
            stamp: pair[1],
            live: Vec::new(),
        })
        .collect();
    // The live entries, when the script sent them: a count, then that many per key.
    let mut rest = items[head..].iter();
    if items.len() > head {
        for s in &mut seen {
            let count = rest.next().and_then(int).ok_or_else(bad)?;
            for _ in 0..count {
                s.live.push(rest.next().and_then(int).ok_or_else(bad)?);
            }
        }
    }
    if rest.next().is_some() {
        return Err(bad());
    }
    Ok(Taken {
        taken: ints[0] as u64,
        now: ints[1],
        seen,
    })
}

/// An integer reply, or a list entry (a string holding an integer).
fn int(v: &Value) -> Option<i64> {
    match v {
        Value::Int(i) => Some(*i),
        Value::BulkString(b) => std::str::from_utf8(b).ok()?.parse().ok(),
        _ => None,
    }
}
