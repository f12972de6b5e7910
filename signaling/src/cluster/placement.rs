//! Room placement: which node hosts a room's media.
//!
//! The room -> node map lives in Redis and every change to it is one Lua
//! script, so it is atomic: fifty first joins to one new room arriving at
//! once through three nodes all read the owner the first of them wrote.
//!
//! - An existing owner whose heartbeat is fresh keeps the room, even while
//!   draining: a draining node hands its rooms off itself with
//!   [`Placement::move_room`] (compare-and-set on the old owner), so nobody
//!   snatches a room it is still serving.
//! - Otherwise (new room, or owner dead) the least-loaded serving node gets
//!   it: fewest participants (from heartbeats), then fewest rooms (counted
//!   in the same script as the map, so a burst of new rooms spreads at once
//!   instead of waiting a heartbeat), ties by node id.
//! - Only the owner releases a room.

use super::keys::Keys;
use super::link::{Link, LinkError};
use std::sync::{Arc, LazyLock};
use std::time::Duration;

/// Shared helpers of the placement scripts (prepended to each).
/// `now_ms()`, `alive(id, want_serving)` -> decoded record or nil, and
/// `least_loaded(except)` -> id or nil.
/// KEYS: room_node, node_rooms, nodes, beats. ARGV[1] = stale_ms.
const PRELUDE: &str = r#"
local function now_ms()
  local t = redis.call('TIME')
  return tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
end
local NOW = now_ms()
local STALE = tonumber(ARGV[1])
local function alive(id, want_serving)
  local beat = tonumber(redis.call('HGET', KEYS[4], id) or '')
  if not beat or NOW - beat >= STALE then return nil end
  local raw = redis.call('HGET', KEYS[3], id)
  if not raw then return nil end
  local ok, rec = pcall(cjson.decode, raw)
  if not ok or type(rec) ~= 'table' then return nil end
  if want_serving and rec.state ~= 'serving' then return nil end
  return rec
end
local function least_loaded(except)
  local best, best_p, best_r
  local beats = redis.call('HGETALL', KEYS[4])
  for i = 1, #beats, 2 do
    local id = beats[i]
    if id ~= except then
      local rec = alive(id, true)
      if rec then
        local p = tonumber(rec.participants) or 0
        local r = tonumber(redis.call('HGET', KEYS[2], id) or '0') or 0
        if not best or p < best_p or (p == best_p and (r < best_r or (r == best_r and id < best))) then
          best, best_p, best_r = id, p, r
        end
      end
    end
  end
  return best
end
local function assign(room, from, to)
  if from then redis.call('HINCRBY', KEYS[2], from, -1) end
  redis.call('HSET', KEYS[1], room, to)
  redis.call('HINCRBY', KEYS[2], to, 1)
end
"#;

/// ARGV[2] = room. Returns {owner, how, previous}: how 0 = existing owner,
/// 1 = newly placed, 2 = taken over from a dead owner, 3 = no live node.
const CLAIM: &str = r#"
local room = ARGV[2]
local current = redis.call('HGET', KEYS[1], room)
if current and alive(current, false) then return {current, 0, current} end
local best = least_loaded(nil)
if not best then return {'', 3, current or ''} end
assign(room, current or nil, best)
if current then return {best, 2, current} end
return {best, 1, ''}
"#;

/// ARGV[2] = room, ARGV[3] = expected owner. Moves the room to the
/// least-loaded serving node other than the expected owner, only if the
/// map still says the expected owner. Returns {owner, moved}: moved 1 =
/// moved to owner, 0 = map no longer names the expected owner (owner is
/// the current one, '' if none), 3 = no other live node.
const MOVE: &str = r#"
local room, expected = ARGV[2], ARGV[3]
local current = redis.call('HGET', KEYS[1], room)
if current ~= expected then return {current or '', 0} end
local best = least_loaded(expected)
if not best then return {expected, 3} end
assign(room, expected, best)
return {best, 1}
"#;

/// ARGV[2] = room, ARGV[3] = owner. Returns 1 when released.
const RELEASE: &str = r#"
local room, owner = ARGV[2], ARGV[3]
if redis.call('HGET', KEYS[1], room) ~= owner then return 0 end
redis.call('HDEL', KEYS[1], room)
if redis.call('HINCRBY', KEYS[2], owner, -1) <= 0 then redis.call('HDEL', KEYS[2], owner) end
return 1
"#;

/// ARGV[2] = room, ARGV[3] = this node. Maps the room to this node if no
/// live node owns it (Redis restarted empty, a release raced a join, or
/// the owner died). Returns {owner, how}: 0 = already ours, 1 = adopted,
/// 2 = another live node owns it.
const ADOPT: &str = r#"
local room, me = ARGV[2], ARGV[3]
local current = redis.call('HGET', KEYS[1], room)
if current == me then return {me, 0} end
if current and alive(current, false) then return {current, 2} end
assign(room, current or nil, me)
return {me, 1}
"#;

static CLAIM_SCRIPT: LazyLock<redis::Script> =
    LazyLock::new(|| redis::Script::new(&format!("{PRELUDE}{CLAIM}")));
static MOVE_SCRIPT: LazyLock<redis::Script> =
    LazyLock::new(|| redis::Script::new(&format!("{PRELUDE}{MOVE}")));
static ADOPT_SCRIPT: LazyLock<redis::Script> =
    LazyLock::new(|| redis::Script::new(&format!("{PRELUDE}{ADOPT}")));
static RELEASE_SCRIPT: LazyLock<redis::Script> =
    LazyLock::new(|| redis::Script::new(&format!("{PRELUDE}{RELEASE}")));

/// How a claim ended.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Claim {
    /// The room already had a live owner.
    Existing { owner: String },
    /// The room was new; `owner` was picked as least loaded.
    Placed { owner: String },
    /// The previous owner was dead; `owner` took the room over.
    TakenOver { owner: String, previous: String },
}

impl Claim {
    pub fn owner(&self) -> &str {
        match self {
            Claim::Existing { owner }
            | Claim::Placed { owner }
            | Claim::TakenOver { owner, .. } => owner,
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum PlacementError {
    #[error("no live noom node can host room {room:?} (no serving node has a fresh heartbeat)")]
    NoLiveNode { room: String },
    #[error(transparent)]
    Link(#[from] LinkError),
    #[error("unexpected placement reply from Redis: {0}")]
    BadReply(String),
}

/// How a move ended.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Move {
    Moved {
        to: String,
    },
    /// The map no longer named the expected owner: someone else moved or
    /// released it first. `owner` is the current one (None: no mapping).
    NotOwner {
        owner: Option<String>,
    },
}

/// How an adoption ended.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Adoption {
    /// The map already named this node.
    Ours,
    /// The room had no live owner; it is this node's now.
    Adopted,
    /// Another live node owns the room.
    Elsewhere { owner: String },
}

/// The room map, through one link.
#[derive(Clone)]
pub struct Placement {
    link: Arc<Link>,
    keys: Keys,
    stale_after: Duration,
}

impl Placement {
    pub fn new(link: Arc<Link>, keys: Keys, stale_after: Duration) -> Self {
        Self {
            link,
            keys,
            stale_after,
        }
    }

    fn invocation<'a>(&self, script: &'a redis::Script) -> redis::ScriptInvocation<'a> {
        let mut invocation = script.prepare_invoke();
        invocation
            .key(self.keys.room_node())
            .key(self.keys.node_rooms())
            .key(self.keys.nodes())
            .key(self.keys.beats())
            .arg(self.stale_after.as_millis() as u64);
        invocation
    }

    /// Who hosts `room`, placing it if it has no live owner.
    pub async fn claim(&self, room: &str) -> Result<Claim, PlacementError> {
        let mut invocation = self.invocation(&CLAIM_SCRIPT);
        invocation.arg(room);
        let (owner, how, previous): (String, i64, String) =
            self.link.script("claim room", &invocation).await?;
        match how {
            0 => Ok(Claim::Existing { owner }),
            1 => Ok(Claim::Placed { owner }),
            2 => Ok(Claim::TakenOver { owner, previous }),
            3 => Err(PlacementError::NoLiveNode {
                room: room.to_owned(),
            }),
            other => Err(PlacementError::BadReply(format!("claim returned {other}"))),
        }
    }

    /// Moves `room` away from `expected_owner` (drain, or re-homing by the
    /// node that knows the owner is gone) to the least-loaded other node.
    pub async fn move_room(
        &self,
        room: &str,
        expected_owner: &str,
    ) -> Result<Move, PlacementError> {
        let mut invocation = self.invocation(&MOVE_SCRIPT);
        invocation.arg(room).arg(expected_owner);
        let (owner, moved): (String, i64) = self.link.script("move room", &invocation).await?;
        match moved {
            1 => Ok(Move::Moved { to: owner }),
            0 => Ok(Move::NotOwner {
                owner: (!owner.is_empty()).then_some(owner),
            }),
            3 => Err(PlacementError::NoLiveNode {
                room: room.to_owned(),
            }),
            other => Err(PlacementError::BadReply(format!("move returned {other}"))),
        }
    }

    /// Maps `room` to `me` unless another live node owns it: a node keeps
    /// the map true to the rooms it actually hosts.
    pub async fn adopt(&self, room: &str, me: &str) -> Result<Adoption, PlacementError> {
        let mut invocation = self.invocation(&ADOPT_SCRIPT);
        invocation.arg(room).arg(me);
        let (owner, how): (String, i64) = self.link.script("adopt room", &invocation).await?;
        match how {
            0 => Ok(Adoption::Ours),
            1 => Ok(Adoption::Adopted),
            2 => Ok(Adoption::Elsewhere { owner }),
            other => Err(PlacementError::BadReply(format!("adopt returned {other}"))),
        }
    }

    /// Forgets the room when it ends; only its owner may. Returns whether
    /// the map named `owner`.
    pub async fn release(&self, room: &str, owner: &str) -> Result<bool, PlacementError> {
        let mut invocation = self.invocation(&RELEASE_SCRIPT);
        invocation.arg(room).arg(owner);
        let released: i64 = self.link.script("release room", &invocation).await?;
        Ok(released == 1)
    }

    /// The current mapping, without placing anything.
    pub async fn owner_of(&self, room: &str) -> Result<Option<String>, PlacementError> {
        Ok(self
            .link
            .query(
                "owner of room",
                redis::cmd("HGET").arg(self.keys.room_node()).arg(room),
            )
            .await?)
    }

    /// The current owners of `rooms`, in order, in one command.
    pub async fn owners_of(&self, rooms: &[String]) -> Result<Vec<Option<String>>, PlacementError> {
        if rooms.is_empty() {
            return Ok(Vec::new());
        }
        Ok(self
            .link
            .query(
                "owners of rooms",
                redis::cmd("HMGET").arg(self.keys.room_node()).arg(rooms),
            )
            .await?)
    }

    /// Rooms mapped to `node` (to re-publish or hand off). One HGETALL:
    /// fine for the thousands of rooms one cluster has, not for millions.
    pub async fn rooms_of(&self, node: &str) -> Result<Vec<String>, PlacementError> {
        let map: Vec<(String, String)> = self
            .link
            .query("room map", redis::cmd("HGETALL").arg(self.keys.room_node()))
            .await?;
        let mut rooms: Vec<String> = map
            .into_iter()
            .filter(|(_, owner)| owner == node)
            .map(|(room, _)| room)
            .collect();
        rooms.sort();
        Ok(rooms)
    }
}
