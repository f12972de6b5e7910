//! The operator's configuration as the media plane sees it (the control
//! plane maps `noom-config` onto it, so this crate does not depend on the
//! config file format).

use std::net::IpAddr;
use std::time::Duration;

/// What the media plane needs to know of the operator's configuration.
#[derive(Debug, Clone)]
pub struct MediaSettings {
    /// Number of shard threads (at least one).
    pub shards: usize,
    /// Addresses to bind; each shard binds one socket per address.
    pub bind_ips: Vec<IpAddr>,
    /// First UDP port; shard n listens on `port + n`. 0 picks ephemeral ports.
    pub port: u16,
    /// Also listen on TCP at each bind address and port, and offer passive
    /// ICE-TCP candidates there (see `tcp_media`).
    pub ice_tcp: bool,
    /// Address announced instead of non-loopback bind addresses (1:1 NAT).
    pub public_ip: Option<IpAddr>,
    /// At most one keyframe request per publisher track per this interval.
    pub pli_throttle: Duration,
    /// Prime new subscribers with the latest cached keyframe.
    pub keyframe_cache: bool,
    /// Largest file a participant may send over the data channel.
    pub max_file_bytes: u64,
    /// Offer publishers simulcast (rid q/h/f recv lines in the camera section).
    pub simulcast: bool,
    /// Share each subscriber's estimate among its videos (`router::allocation`).
    pub bandwidth_allocation: bool,
    /// Where a publisher's bandwidth estimate starts, in kbit/s (Chromium's
    /// `x-google-start-bitrate` in the offer, see `start_bitrate`); 0 leaves
    /// the browser's own start.
    pub publisher_start_kbps: u32,
}

impl MediaSettings {
    /// One shard bound to `addr`, with the product's defaults otherwise:
    /// what sans-IO tests and fuzz targets run a router with.
    pub fn single_shard(addr: std::net::SocketAddr, simulcast: bool) -> Self {
        MediaSettings {
            shards: 1,
            bind_ips: vec![addr.ip()],
            port: addr.port(),
            ice_tcp: false,
            public_ip: None,
            pli_throttle: Duration::from_millis(500),
            keyframe_cache: true,
            max_file_bytes: 1 << 20,
            simulcast,
            bandwidth_allocation: true,
            publisher_start_kbps: 1000,
        }
    }
}
