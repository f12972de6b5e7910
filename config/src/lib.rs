//! Noom's typed configuration.
//!
//! The documented default `config.toml` is embedded ([`DEFAULT_TOML`]), so the
//! binary runs with no file and the defaults live in exactly one place: the
//! file an operator copies is the file the code parses.
//!
//! A user file may be partial: its keys are laid over the defaults
//! ([`Config::from_toml_str`]). Unknown keys and bad values are errors that
//! name the dotted key and the line *of the user's file*, because a typo that
//! silently falls back to a default (say `[media] portz = 40000`) is the worst
//! kind of misconfiguration to debug on a production host.
//!
//! Loading order in the binary: embedded defaults, then `--config FILE`, then
//! the `NOOM_*` environment overrides ([`Config::apply_env`]).
//!
//! One file per concept: `schema` (the typed structs),
//! `load` (the embedded defaults and user files), `env` (the `NOOM_*`
//! overrides), `validate` (semantic checks), `cluster` (node id and Redis
//! URL redaction), `error` (errors that name the
//! key and the line), `print` (`--print-config`).

mod cluster;
mod env;
mod error;
mod load;
mod print;
mod schema;
mod turn;
mod validate;

pub use cluster::MAX_NAME_LEN;
pub use error::ConfigError;
pub use load::DEFAULT_TOML;
pub use schema::{
    AdminConfig, AuthConfig, ClusterConfig, Config, HttpConfig, IceConfig, IceServer,
    KeyframeConfig, LimitsConfig, LogConfig, LogFormat, MediaConfig, SessionConfig, TurnConfig,
};
pub use turn::TURN_TTL_S;
pub use validate::{
    HEARTBEATS_PER_TIMEOUT, MAX_SHARDS, MIN_HEARTBEAT_MS, MIN_MESSAGE_BYTES, REDIS_TIMEOUT_MS,
};
