//! Shared by the rate-limit integration tests.

use std::future::Future;
use std::time::Duration;

use larder_core::{Config, ConfigBuilder, Handle};
use larder_testing::Redis;

/// Short deadlines and a quick breaker, so fault tests run fast.
pub(crate) fn config(url: &str) -> ConfigBuilder {
    Config::builder()
        .redis_url(url)
        .op_timeout(Duration::from_millis(200))
        .breaker_threshold(2)
        .breaker_cooldown(Duration::from_millis(200))
}

/// [`config`] for a Redis of any topology, from its variables.
#[allow(dead_code)] // not every test file uses it
pub(crate) fn config_on(redis: &Redis) -> ConfigBuilder {
    ConfigBuilder::from_config(Config::from_vars(redis.vars()).expect("valid variables"))
        .op_timeout(Duration::from_millis(200))
        .breaker_threshold(2)
        .breaker_cooldown(Duration::from_millis(200))
}

/// A handle on `url` with the default key prefix.
#[allow(dead_code)] // not every test file uses both
pub(crate) fn handle(url: &str) -> Handle {
    Handle::new(config(url).build().expect("valid config")).expect("handle")
}

/// A handle on a Redis of any topology, with the default key prefix.
#[allow(dead_code)] // not every test file uses it
pub(crate) fn handle_on(redis: &Redis) -> Handle {
    Handle::new(config_on(redis).build().expect("valid config")).expect("handle")
}

/// Scripts every primary has run (`EVALSHA` and `EVAL`): the rate limiter's round
/// trips.
#[allow(dead_code)] // not every test file uses it
pub(crate) fn script_calls(redis: &Redis) -> u64 {
    redis.calls("evalsha") + redis.calls("eval")
}

/// What the adapter tests read of a response: its status (the framework's
/// `StatusCode`), its headers (names in lower case) and its JSON body (`Null` when
/// it is not JSON).
#[allow(dead_code)] // not every test file uses it
pub(crate) struct Reply<S> {
    pub(crate) status: S,
    pub(crate) headers: Vec<(String, String)>,
    pub(crate) body: serde_json::Value,
}

#[allow(dead_code)] // not every test file uses it
impl<S> Reply<S> {
    /// A header's value (name in lower case).
    pub(crate) fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }
}

/// Sends `again`, a second over-limit request of the client the first rejection
/// (Retry-After `first_retry`, policy header `policy`) refused, and checks that the
/// local pre-check answered it: no script reached Redis, the same fields and body,
/// a Retry-After never later than the first. Returns the answer for more checks.
#[allow(dead_code)] // not every test file uses it
pub(crate) async fn assert_rejected_locally<S: Copy + Into<u16>>(
    redis: &Redis,
    policy: &str,
    first_retry: u64,
    again: impl Future<Output = Reply<S>>,
) -> Reply<S> {
    let before = script_calls(redis);
    let again = again.await;
    assert_eq!(script_calls(redis), before, "a local reject sent a script");
    assert_eq!(again.status.into(), 429u16);
    assert_eq!(again.header("content-type"), Some("application/json"));
    assert_eq!(again.header("ratelimit-policy"), Some(policy));
    let again_retry: u64 = again.header("retry-after").unwrap().parse().unwrap();
    assert!(
        (1..=first_retry).contains(&again_retry),
        "{again_retry} after {first_retry}"
    );
    assert_eq!(again.body["retry_after"], again_retry);
    assert!(again
        .header("ratelimit")
        .unwrap()
        .starts_with("\"ip\";r=0;"));
    again
}
