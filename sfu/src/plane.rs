//! [`MediaPlane`]: starting, addressing and stopping the shard threads.

use crate::settings::MediaSettings;
use crate::shard::{self, ShardHandle};
use std::io;

/// All shards of this server.
pub struct MediaPlane {
    shards: Vec<ShardHandle>,
}

impl MediaPlane {
    /// Binds every shard's sockets and starts the shard threads.
    pub fn start(settings: &MediaSettings) -> io::Result<MediaPlane> {
        if settings.bind_ips.is_empty() {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "no address to bind for media",
            ));
        }
        let count = settings.shards.max(1);
        let mut shards = Vec::with_capacity(count);
        for index in 0..count {
            shards.push(shard::spawn(index, settings)?);
        }
        Ok(MediaPlane { shards })
    }

    pub fn shards(&self) -> &[ShardHandle] {
        &self.shards
    }

    pub fn shard(&self, index: usize) -> &ShardHandle {
        &self.shards[index % self.shards.len()]
    }

    /// Stops every shard: closes peer connections and joins the threads.
    /// Commands sent afterwards are refused.
    pub fn shutdown(&self) {
        for shard in &self.shards {
            shard.request_stop();
        }
        for shard in &self.shards {
            shard.join();
        }
    }
}
