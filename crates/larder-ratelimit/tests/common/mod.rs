//! Shared by the rate-limit integration tests.

use std::time::Duration;

use larder_core::{Config, ConfigBuilder, Handle};

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
