//! The names of everything the cluster keeps in Redis, in one place, so a
//! test (or a second cluster on the same Redis) can use its own prefix.

/// Key and channel names under one prefix (default `noom`).
#[derive(Clone, Debug)]
pub struct Keys {
    prefix: String,
}

impl Default for Keys {
    fn default() -> Self {
        Self::new("noom")
    }
}

impl Keys {
    pub fn new(prefix: &str) -> Self {
        Self {
            prefix: prefix.to_owned(),
        }
    }

    /// Hash: node id -> heartbeat record (JSON).
    pub fn nodes(&self) -> String {
        format!("{}:nodes", self.prefix)
    }

    /// Hash: node id -> Redis server time (ms) of its last heartbeat. Kept
    /// apart from the record so liveness never depends on the nodes' clocks
    /// and scripts need not decode JSON to read it.
    pub fn beats(&self) -> String {
        format!("{}:node_beat", self.prefix)
    }

    /// Hash: node id -> instance token of the process holding that id.
    pub fn instances(&self) -> String {
        format!("{}:node_instance", self.prefix)
    }

    /// Hash: room -> node id hosting its media.
    pub fn room_node(&self) -> String {
        format!("{}:room_node", self.prefix)
    }

    /// Hash: node id -> number of rooms mapped to it, changed in the same
    /// scripts as `room_node` so placement sees a room the moment it is
    /// claimed (heartbeats lag by up to a second).
    pub fn node_rooms(&self) -> String {
        format!("{}:node_rooms", self.prefix)
    }

    /// Pub/sub channel every node listens to.
    pub fn broadcast_channel(&self) -> String {
        format!("{}:bus:all", self.prefix)
    }

    /// Pub/sub channel of one node.
    pub fn node_channel(&self, node: &str) -> String {
        format!("{}:bus:node:{node}", self.prefix)
    }

    /// Hash: room -> participants, of the rooms one node hosts (the lobby
    /// lists the rooms of every live node).
    pub fn node_room_sizes(&self, node: &str) -> String {
        format!("{}:node_room_sizes:{node}", self.prefix)
    }
}
