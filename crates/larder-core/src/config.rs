//! Configuration: a builder in code, or [`Config::from_env`] with the conventional names.
//!
//! | variable | meaning | default |
//! | --- | --- | --- |
//! | `REDIS_URL` | `redis://[user:password@]host:port/db`, or `rediss://` for TLS (feature `tls`) | unset: in-process tier only |
//! | `REDIS_CLUSTER_NODES` | Redis Cluster seed URLs, comma-separated (instead of `REDIS_URL`) | unset |
//! | `REDIS_SENTINEL_NODES`, `REDIS_SENTINEL_MASTER` | sentinel URLs, comma-separated, and the primary's name (instead of `REDIS_URL`) | unset |
//! | `REDIS_USERNAME`, `REDIS_PASSWORD`, `REDIS_DB` | the data nodes' credentials and database, for Cluster and Sentinel | none, db 0 |
//! | `CACHE_ENABLED` | `true`/`false`: whether response and data caching is on | `true` |
//! | `CACHE_KEY_PREFIX` | first segment of every key | `larder` |
//! | `CACHE_DEFAULT_TTL` | seconds a cached value lives | `300` |
//! | `CACHE_NEGATIVE_TTL` | seconds a not-found result lives | `15` |
//! | `CACHE_<MODULE>_TTL` | seconds for one module (`CACHE_BALANCE_TTL=60`) | `CACHE_DEFAULT_TTL` |
//! | `LARDER_OP_TIMEOUT_MS` | deadline of one request-path Redis call | `50` |
//! | `LARDER_CONNECT_TIMEOUT_MS` | deadline of one connection attempt | `1000` |
//! | `LARDER_BREAKER_THRESHOLD` | consecutive failures that open the breaker | `5` |
//! | `LARDER_BREAKER_COOLDOWN_MS` | time the breaker stays open before a probe | `2000` |
//! | `LARDER_POOL_SIZE` | dedicated connections (blocking pops, pub/sub) | `8` |
//! | `LARDER_POOL_WAIT_TIMEOUT_MS` | wait for a free dedicated connection | `100` |
//! | `LARDER_HASH_TAG` | wrap the tenant in a cluster hash tag | `true` |
//!
//! A malformed value is an error that names the variable and what is wrong with the
//! value; a password is never part of it. [`crate::topology`] explains the Redis
//! topologies.

use std::collections::BTreeMap;
use std::time::Duration;

pub use crate::error::ConfigError;
pub use crate::topology::RedisUrl;
use crate::topology::{split_list, NodeAuth, Topology};

/// Everything larder needs to know to reach Redis and to behave without it.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct Config {
    /// Where Redis is (one node, a cluster, or Sentinel); `None` runs every
    /// component on its in-process tier.
    pub redis: Option<Topology>,
    /// Whether caching is on (`CACHE_ENABLED`).
    pub cache_enabled: bool,
    /// First segment of every key (`CACHE_KEY_PREFIX`).
    pub key_prefix: String,
    /// Whether the tenant part carries a Redis Cluster hash tag (`LARDER_HASH_TAG`).
    pub hash_tag: bool,
    /// Default time to live of cached values (`CACHE_DEFAULT_TTL`).
    pub default_ttl: Duration,
    /// Time to live of not-found results (`CACHE_NEGATIVE_TTL`).
    pub negative_ttl: Duration,
    /// Per-module times to live (`CACHE_<MODULE>_TTL`), keyed by lower-case module.
    pub module_ttls: BTreeMap<String, Duration>,
    /// Deadline of one request-path Redis call (`LARDER_OP_TIMEOUT_MS`).
    pub op_timeout: Duration,
    /// Deadline of one connection attempt (`LARDER_CONNECT_TIMEOUT_MS`).
    pub connect_timeout: Duration,
    /// Consecutive failures that open the circuit breaker (`LARDER_BREAKER_THRESHOLD`).
    pub breaker_threshold: u32,
    /// How long the breaker stays open before one probe (`LARDER_BREAKER_COOLDOWN_MS`).
    pub breaker_cooldown: Duration,
    /// Size of the pool of dedicated connections (`LARDER_POOL_SIZE`).
    pub pool_size: usize,
    /// Wait for a free dedicated connection (`LARDER_POOL_WAIT_TIMEOUT_MS`).
    pub pool_wait_timeout: Duration,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            redis: None,
            cache_enabled: true,
            key_prefix: "larder".to_owned(),
            hash_tag: true,
            default_ttl: Duration::from_secs(300),
            negative_ttl: Duration::from_secs(15),
            module_ttls: BTreeMap::new(),
            op_timeout: Duration::from_millis(50),
            connect_timeout: Duration::from_millis(1000),
            breaker_threshold: 5,
            breaker_cooldown: Duration::from_millis(2000),
            pool_size: 8,
            pool_wait_timeout: Duration::from_millis(100),
        }
    }
}

impl Config {
    /// A builder starting from the defaults.
    pub fn builder() -> ConfigBuilder {
        ConfigBuilder {
            config: Self::default(),
            error: None,
        }
    }

    /// Reads the process environment (see the module docs for the names).
    ///
    /// # Errors
    /// [`ConfigError`] naming the first variable whose value is malformed.
    pub fn from_env() -> Result<Self, ConfigError> {
        Self::from_vars(env_vars(is_ours)?)
    }

    /// Reads configuration from name/value pairs, as [`from_env`](Self::from_env)
    /// does from the environment. Unknown names are ignored; later pairs win.
    ///
    /// # Errors
    /// [`ConfigError`] naming the first variable whose value is malformed.
    pub fn from_vars<I, K, V>(vars: I) -> Result<Self, ConfigError>
    where
        I: IntoIterator<Item = (K, V)>,
        K: AsRef<str>,
        V: AsRef<str>,
    {
        let mut c = Self::default();
        let mut place = Placement::default();
        for (name, value) in vars {
            let (name, raw) = (name.as_ref(), value.as_ref());
            let value = raw.trim();
            match name {
                "REDIS_URL" => place.url = Some(value.to_owned()),
                "REDIS_CLUSTER_NODES" => place.cluster = Some(value.to_owned()),
                "REDIS_SENTINEL_NODES" => place.sentinels = Some(value.to_owned()),
                "REDIS_SENTINEL_MASTER" => place.master = Some(value.to_owned()),
                "REDIS_USERNAME" => place.username = Some(value.to_owned()),
                "REDIS_PASSWORD" => place.password = Some(raw.to_owned()),
                "REDIS_DB" => place.db = Some(value.to_owned()),
                "CACHE_ENABLED" => c.cache_enabled = parse_bool(name, value)?,
                "CACHE_KEY_PREFIX" => {
                    crate::keyspace::Keyspace::new(value)
                        .map_err(|e| ConfigError::invalid(name, e.to_string()))?;
                    value.clone_into(&mut c.key_prefix);
                }
                "LARDER_HASH_TAG" => c.hash_tag = parse_bool(name, value)?,
                "CACHE_DEFAULT_TTL" => c.default_ttl = parse_secs(name, value)?,
                "CACHE_NEGATIVE_TTL" => c.negative_ttl = parse_secs(name, value)?,
                "LARDER_OP_TIMEOUT_MS" => c.op_timeout = parse_millis(name, value)?,
                "LARDER_CONNECT_TIMEOUT_MS" => c.connect_timeout = parse_millis(name, value)?,
                "LARDER_BREAKER_THRESHOLD" => {
                    c.breaker_threshold = parse_positive(name, value)?;
                }
                "LARDER_BREAKER_COOLDOWN_MS" => c.breaker_cooldown = parse_millis(name, value)?,
                "LARDER_POOL_SIZE" => c.pool_size = parse_positive(name, value)?,
                "LARDER_POOL_WAIT_TIMEOUT_MS" => {
                    c.pool_wait_timeout = parse_millis(name, value)?;
                }
                _ => {
                    if let Some(module) = module_ttl_name(name) {
                        crate::keyspace::Module::new(&module)
                            .map_err(|e| ConfigError::invalid(name, e.to_string()))?;
                        c.module_ttls.insert(module, parse_secs(name, value)?);
                    }
                }
            }
        }
        c.redis = place.topology()?;
        Ok(c)
    }

    /// The time to live for `module`: its own setting, or the default.
    #[must_use]
    pub fn ttl_for(&self, module: &str) -> Duration {
        self.module_ttls
            .get(module)
            .copied()
            .unwrap_or(self.default_ttl)
    }
}

/// The process environment's variables whose name `keep` accepts, for components'
/// `from_env()`. Variables with names that are not UTF-8, or that `keep` refuses, are
/// skipped (never a panic, unlike `std::env::vars`).
///
/// # Errors
/// [`ConfigError::Invalid`] naming a kept variable whose value is not UTF-8.
pub fn env_vars(keep: impl Fn(&str) -> bool) -> Result<Vec<(String, String)>, ConfigError> {
    let mut vars = Vec::new();
    for (name, value) in std::env::vars_os() {
        let Some(name) = name.to_str() else { continue };
        if !keep(name) {
            continue;
        }
        let value = value
            .into_string()
            .map_err(|_| ConfigError::invalid(name, "value is not valid UTF-8"))?;
        vars.push((name.to_owned(), value));
    }
    Ok(vars)
}

fn is_ours(name: &str) -> bool {
    name.starts_with("REDIS_") || name.starts_with("CACHE_") || name.starts_with("LARDER_")
}

/// The topology variables, read before they are judged together.
#[derive(Default)]
struct Placement {
    url: Option<String>,
    cluster: Option<String>,
    sentinels: Option<String>,
    master: Option<String>,
    username: Option<String>,
    password: Option<String>,
    db: Option<String>,
}

impl Placement {
    fn topology(self) -> Result<Option<Topology>, ConfigError> {
        // An empty `REDIS_URL` is unset (as compose files often leave it); the
        // lists, when set, must hold a URL.
        let url = self.url.filter(|u| !u.is_empty());
        let set: Vec<&str> = [
            ("REDIS_URL", url.is_some()),
            ("REDIS_CLUSTER_NODES", self.cluster.is_some()),
            ("REDIS_SENTINEL_NODES", self.sentinels.is_some()),
        ]
        .into_iter()
        .filter_map(|(name, on)| on.then_some(name))
        .collect();
        if let [first, second, ..] = set[..] {
            return Err(ConfigError::invalid(
                second,
                format!("set together with {first}: choose one Redis topology"),
            ));
        }
        if self.master.is_some() && self.sentinels.is_none() {
            return Err(ConfigError::invalid(
                "REDIS_SENTINEL_MASTER",
                "set without REDIS_SENTINEL_NODES",
            ));
        }
        let auth = || {
            NodeAuth::from_values(
                self.username.as_deref(),
                self.password.as_deref(),
                self.db.as_deref(),
            )
        };
        if let Some(url) = url {
            return Topology::single(&url).map(Some);
        }
        if let Some(list) = &self.cluster {
            return Topology::cluster(&split_list(list), auth()?).map(Some);
        }
        if let Some(list) = &self.sentinels {
            let master = self.master.as_deref().unwrap_or("");
            return Topology::sentinel(&split_list(list), master, auth()?).map(Some);
        }
        Ok(None)
    }
}

fn module_ttl_name(name: &str) -> Option<String> {
    let middle = name.strip_prefix("CACHE_")?.strip_suffix("_TTL")?;
    if middle.is_empty() || middle == "DEFAULT" || middle == "NEGATIVE" {
        return None;
    }
    Some(middle.to_ascii_lowercase())
}

/// Parses a boolean variable (`1/0`, `true/false`, `yes/no`, `on/off`).
///
/// # Errors
/// [`ConfigError::Invalid`] naming `var`.
pub fn parse_bool(var: &str, value: &str) -> Result<bool, ConfigError> {
    match value.to_ascii_lowercase().as_str() {
        "1" | "true" | "yes" | "on" => Ok(true),
        "0" | "false" | "no" | "off" => Ok(false),
        _ => Err(ConfigError::invalid(
            var,
            format!("expected true or false, got {value:?}"),
        )),
    }
}

/// Parses a whole number of `unit`s.
///
/// # Errors
/// [`ConfigError::Invalid`] naming `var`.
pub fn parse_u64(var: &str, value: &str, unit: &str) -> Result<u64, ConfigError> {
    value.parse::<u64>().map_err(|_| {
        ConfigError::invalid(
            var,
            format!("expected a whole number of {unit}, got {value:?}"),
        )
    })
}

/// Parses a whole number of seconds.
///
/// # Errors
/// [`ConfigError::Invalid`] naming `var`.
pub fn parse_secs(var: &str, value: &str) -> Result<Duration, ConfigError> {
    parse_u64(var, value, "seconds").map(Duration::from_secs)
}

/// Parses a whole, non-zero number of milliseconds.
///
/// # Errors
/// [`ConfigError::Invalid`] naming `var`.
pub fn parse_millis(var: &str, value: &str) -> Result<Duration, ConfigError> {
    let ms = parse_u64(var, value, "milliseconds")?;
    if ms == 0 {
        return Err(ConfigError::invalid(var, "must be at least 1 millisecond"));
    }
    Ok(Duration::from_millis(ms))
}

fn parse_positive<T: TryFrom<u64>>(var: &str, value: &str) -> Result<T, ConfigError> {
    let n = parse_u64(var, value, "items")?;
    if n == 0 {
        return Err(ConfigError::invalid(var, "must be at least 1"));
    }
    T::try_from(n).map_err(|_| ConfigError::invalid(var, format!("{n} is too large")))
}

/// Builds a [`Config`] in code; errors surface at [`build`](Self::build).
#[derive(Debug, Clone)]
#[must_use]
pub struct ConfigBuilder {
    config: Config,
    error: Option<ConfigError>,
}

impl ConfigBuilder {
    /// Starts from an existing configuration (for example [`Config::from_env`]).
    pub fn from_config(config: Config) -> Self {
        Self {
            config,
            error: None,
        }
    }

    /// Sets the Redis URL: one node.
    pub fn redis_url(self, url: &str) -> Self {
        self.topology(Topology::single(url))
    }

    /// Runs on a Redis Cluster found from `seeds` (the nodes' credentials in the
    /// seed URLs, or `auth`).
    pub fn redis_cluster<S: AsRef<str>>(self, seeds: &[S], auth: NodeAuth) -> Self {
        self.topology(Topology::cluster(seeds, auth))
    }

    /// Runs on the primary named `master` by `sentinels`.
    pub fn redis_sentinel<S: AsRef<str>>(
        self,
        sentinels: &[S],
        master: &str,
        auth: NodeAuth,
    ) -> Self {
        self.topology(Topology::sentinel(sentinels, master, auth))
    }

    fn topology(mut self, topology: Result<Topology, ConfigError>) -> Self {
        match topology {
            Ok(t) => self.config.redis = Some(t),
            Err(e) => {
                self.error.get_or_insert(e);
            }
        }
        self
    }

    /// Runs without Redis: every component uses its in-process tier.
    pub fn no_redis(mut self) -> Self {
        self.config.redis = None;
        self
    }

    /// Turns caching on or off.
    pub fn cache_enabled(mut self, on: bool) -> Self {
        self.config.cache_enabled = on;
        self
    }

    /// Sets the key prefix.
    pub fn key_prefix(mut self, prefix: &str) -> Self {
        match crate::keyspace::Keyspace::new(prefix) {
            Ok(_) => prefix.clone_into(&mut self.config.key_prefix),
            Err(e) => {
                self.error
                    .get_or_insert(ConfigError::invalid("key_prefix", e.to_string()));
            }
        }
        self
    }

    /// Turns the cluster hash tag on or off.
    pub fn hash_tag(mut self, on: bool) -> Self {
        self.config.hash_tag = on;
        self
    }

    /// Sets the default time to live.
    pub fn default_ttl(mut self, ttl: Duration) -> Self {
        self.config.default_ttl = ttl;
        self
    }

    /// Sets the time to live of not-found results.
    pub fn negative_ttl(mut self, ttl: Duration) -> Self {
        self.config.negative_ttl = ttl;
        self
    }

    /// Sets one module's time to live.
    pub fn module_ttl(mut self, module: &str, ttl: Duration) -> Self {
        match crate::keyspace::Module::new(module) {
            Ok(_) => {
                self.config.module_ttls.insert(module.to_owned(), ttl);
            }
            Err(e) => {
                self.error
                    .get_or_insert(ConfigError::invalid("module_ttl", e.to_string()));
            }
        }
        self
    }

    /// Sets the deadline of one request-path Redis call.
    pub fn op_timeout(mut self, deadline: Duration) -> Self {
        self.config.op_timeout = deadline;
        self
    }

    /// Sets the deadline of one connection attempt.
    pub fn connect_timeout(mut self, deadline: Duration) -> Self {
        self.config.connect_timeout = deadline;
        self
    }

    /// Sets how many consecutive failures open the breaker.
    pub fn breaker_threshold(mut self, failures: u32) -> Self {
        self.config.breaker_threshold = failures;
        self
    }

    /// Sets how long the breaker stays open before a probe.
    pub fn breaker_cooldown(mut self, cooldown: Duration) -> Self {
        self.config.breaker_cooldown = cooldown;
        self
    }

    /// Sets the number of dedicated connections.
    pub fn pool_size(mut self, size: usize) -> Self {
        self.config.pool_size = size;
        self
    }

    /// Sets the wait for a free dedicated connection.
    pub fn pool_wait_timeout(mut self, wait: Duration) -> Self {
        self.config.pool_wait_timeout = wait;
        self
    }

    /// Checks and returns the configuration.
    ///
    /// # Errors
    /// The first rejected value.
    pub fn build(self) -> Result<Config, ConfigError> {
        if let Some(e) = self.error {
            return Err(e);
        }
        let c = self.config;
        if c.op_timeout.is_zero() {
            return Err(ConfigError::invalid("op_timeout", "must be positive"));
        }
        if c.connect_timeout.is_zero() {
            return Err(ConfigError::invalid("connect_timeout", "must be positive"));
        }
        if c.breaker_threshold == 0 {
            return Err(ConfigError::invalid(
                "breaker_threshold",
                "must be at least 1",
            ));
        }
        if c.pool_size == 0 {
            return Err(ConfigError::invalid("pool_size", "must be at least 1"));
        }
        Ok(c)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_conventional_names() {
        let c = Config::from_vars([
            ("REDIS_URL", "redis://127.0.0.1:6379/2"),
            ("CACHE_ENABLED", "false"),
            ("CACHE_KEY_PREFIX", "stock"),
            ("CACHE_DEFAULT_TTL", "120"),
            ("CACHE_NEGATIVE_TTL", "5"),
            ("CACHE_BALANCE_TTL", "60"),
            ("CACHE_UOM_TTL", "3600"),
            ("LARDER_OP_TIMEOUT_MS", "25"),
            ("LARDER_BREAKER_THRESHOLD", "3"),
            ("PATH", "/usr/bin"),
        ])
        .unwrap();
        assert!(matches!(c.redis, Some(Topology::Single(_))));
        assert!(!c.cache_enabled);
        assert_eq!(c.key_prefix, "stock");
        assert_eq!(c.default_ttl, Duration::from_secs(120));
        assert_eq!(c.negative_ttl, Duration::from_secs(5));
        assert_eq!(c.ttl_for("balance"), Duration::from_secs(60));
        assert_eq!(c.ttl_for("uom"), Duration::from_secs(3600));
        assert_eq!(c.ttl_for("products"), Duration::from_secs(120));
        assert_eq!(c.op_timeout, Duration::from_millis(25));
        assert_eq!(c.breaker_threshold, 3);
    }

    #[test]
    fn bad_values_name_the_variable_and_the_problem() {
        let cases = [
            (
                "CACHE_DEFAULT_TTL",
                "ten",
                "CACHE_DEFAULT_TTL: expected a whole number of seconds, got \"ten\"",
            ),
            (
                "CACHE_ENABLED",
                "maybe",
                "CACHE_ENABLED: expected true or false, got \"maybe\"",
            ),
            (
                "LARDER_OP_TIMEOUT_MS",
                "0",
                "LARDER_OP_TIMEOUT_MS: must be at least 1 millisecond",
            ),
            (
                "LARDER_POOL_SIZE",
                "0",
                "LARDER_POOL_SIZE: must be at least 1",
            ),
            (
                "CACHE_KEY_PREFIX",
                "a:b",
                "CACHE_KEY_PREFIX: key prefix contains the forbidden character ':' at byte 1",
            ),
            (
                "CACHE_BA*D_TTL",
                "5",
                "CACHE_BA*D_TTL: module name contains the forbidden character '*' at byte 2",
            ),
            (
                "REDIS_URL",
                "http://x",
                "REDIS_URL: unsupported scheme `http`; expected redis://, rediss:// or unix://",
            ),
            (
                "REDIS_URL",
                "redis://h/abc",
                "REDIS_URL: the path must be a database number such as /0",
            ),
        ];
        for (var, value, want) in cases {
            let err = Config::from_vars([(var, value)]).unwrap_err();
            assert_eq!(err.to_string(), want);
        }
    }

    #[test]
    fn password_never_shows() {
        let secret = "s3cr%40t-pw";
        let url = RedisUrl::parse(&format!("redis://app:{secret}@127.0.0.1:6379/0")).unwrap();
        assert_eq!(url.password().as_deref(), Some("s3cr@t-pw"));
        for shown in [format!("{url}"), format!("{url:?}"), url.redacted()] {
            assert!(!shown.contains("s3cr"), "{shown}");
            assert!(shown.contains("app:***@127.0.0.1"), "{shown}");
        }
        let c = Config::builder().redis_url(url.expose()).build().unwrap();
        assert!(!format!("{c:?}").contains("s3cr"));

        // A socket URL carries its password as a parameter (redis-rs's `pass`).
        let unix = RedisUrl::parse("unix:///run/redis.sock?db=2&pass=s3cr%40t&user=app").unwrap();
        assert_eq!(unix.password().as_deref(), Some("s3cr@t"));
        for shown in [format!("{unix}"), format!("{unix:?}"), unix.redacted()] {
            assert!(!shown.contains("s3cr"), "{shown}");
            assert!(
                shown.contains("pass=***") && shown.contains("db=2"),
                "{shown}"
            );
        }
        let c = Config::builder().redis_url(unix.expose()).build().unwrap();
        assert!(!format!("{c:?}").contains("s3cr"));

        // A malformed URL carrying a password: the error must not echo it.
        let err = RedisUrl::parse("redis://app:hunter2@[::1/0").unwrap_err();
        assert!(!err.to_string().contains("hunter2"), "{err}");
    }

    #[test]
    fn builder_reports_the_first_bad_value() {
        let err = Config::builder()
            .key_prefix("bad prefix")
            .op_timeout(Duration::ZERO)
            .build()
            .unwrap_err();
        assert!(err.to_string().starts_with("key_prefix:"), "{err}");
        assert!(Config::builder().breaker_threshold(0).build().is_err());
    }
}
