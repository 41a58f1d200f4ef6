//! Shared by the rate-limit integration tests.

use std::time::Duration;

use larder_core::{Config, ConfigBuilder, Handle};
use larder_testing::RedisServer;

/// Short deadlines and a quick breaker, so fault tests run fast.
pub(crate) fn config(url: &str) -> ConfigBuilder {
    Config::builder()
        .redis_url(url)
        .op_timeout(Duration::from_millis(200))
        .breaker_threshold(2)
        .breaker_cooldown(Duration::from_millis(200))
}

/// A handle on `url` with the default key prefix.
#[allow(dead_code)] // not every test file uses both
pub(crate) fn handle(url: &str) -> Handle {
    Handle::new(config(url).build().expect("valid config")).expect("handle")
}

/// Calls of one command since the server started.
#[allow(dead_code)] // not every test file uses it
pub(crate) fn calls(server: &RedisServer, command: &str) -> u64 {
    server.command_calls().get(command).copied().unwrap_or(0)
}

/// Scripts the server has run (`EVALSHA` and `EVAL`): the rate limiter's round trips.
#[allow(dead_code)] // not every test file uses it
pub(crate) fn script_calls(server: &RedisServer) -> u64 {
    calls(server, "evalsha") + calls(server, "eval")
}
