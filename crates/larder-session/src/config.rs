//! Session settings: a builder and `from_env()`.
//!
//! | variable | default | meaning |
//! | --- | --- | --- |
//! | `SESSION_NAMESPACE` | `session` | module of the keys of requests without a tenant |
//! | `SESSION_IDLE_TIMEOUT` | `1800` (s) | a session unused this long ends |
//! | `SESSION_ABSOLUTE_TIMEOUT` | `43200` (s) | a session ends this long after it began, used or not |
//! | `SESSION_TOUCH_INTERVAL` | `60` (s) | rolling expiry writes to Redis at most this often per session |
//! | `SESSION_ROTATION_GRACE_MS` | `5000` | after an id rotation the old id stays readable this long |
//! | `SESSION_MAX_BYTES` | `16384` | cap on a session's stored state |
//! | `SESSION_DEGRADED` | `fail-closed` | `fail-closed` (503) or `memory` (in-process fallback, development) |
//! | `SESSION_LOCAL_CAPACITY` | `10000` | sessions the in-process tier keeps at most |

use std::time::Duration;

use larder_core::config::{env_vars, parse_secs, parse_u64};
use larder_core::{ConfigError, Module};

/// What a layer does while Redis cannot be used.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Degraded {
    /// Requests that touch the session get `503 Service Unavailable` with a JSON body
    /// saying the session store is unavailable (the production default: no request
    /// runs with a session it could not check).
    FailClosed,
    /// Sessions live in process memory until Redis is back (development: they are
    /// per instance and lost on restart; a revoke made in Redis during the outage is
    /// not seen by them).
    InMemory,
}

impl Degraded {
    fn parse(var: &str, value: &str) -> Result<Self, ConfigError> {
        match value.to_ascii_lowercase().as_str() {
            "fail-closed" | "fail_closed" | "closed" => Ok(Self::FailClosed),
            "memory" | "in-memory" | "in_memory" => Ok(Self::InMemory),
            _ => Err(ConfigError::invalid(
                var,
                format!("expected `fail-closed` or `memory`, got {value:?}"),
            )),
        }
    }
}

/// Session settings. Build with [`SessionConfig::builder`] or read with
/// [`SessionConfig::from_env`].
#[derive(Debug, Clone)]
pub struct SessionConfig {
    pub(crate) namespace: Module,
    pub(crate) idle_timeout: Duration,
    pub(crate) absolute_timeout: Duration,
    pub(crate) touch_interval: Duration,
    pub(crate) rotation_grace: Duration,
    pub(crate) max_bytes: usize,
    pub(crate) max_per_user: u64,
    pub(crate) degraded: Degraded,
    pub(crate) local_capacity: u64,
}

impl Default for SessionConfig {
    fn default() -> Self {
        Self {
            namespace: Module::new("session").unwrap_or_else(|_| unreachable!("valid literal")),
            idle_timeout: Duration::from_secs(30 * 60),
            absolute_timeout: Duration::from_secs(12 * 60 * 60),
            touch_interval: Duration::from_secs(60),
            rotation_grace: Duration::from_secs(5),
            max_bytes: 16 * 1024,
            max_per_user: 50,
            degraded: Degraded::FailClosed,
            local_capacity: 10_000,
        }
    }
}

impl SessionConfig {
    /// A builder starting from the defaults.
    pub fn builder() -> SessionConfigBuilder {
        SessionConfigBuilder {
            config: Self::default(),
            error: None,
        }
    }

    /// Reads the `SESSION_*` variables of the process environment.
    ///
    /// # Errors
    /// [`ConfigError`] naming the first malformed variable.
    pub fn from_env() -> Result<Self, ConfigError> {
        Self::from_vars(env_vars(|k| k.starts_with("SESSION_"))?)
    }

    /// Reads settings from name/value pairs, as [`from_env`](Self::from_env) does.
    /// Unknown names are ignored.
    ///
    /// # Errors
    /// [`ConfigError`] naming the first malformed variable.
    pub fn from_vars<I, K, V>(vars: I) -> Result<Self, ConfigError>
    where
        I: IntoIterator<Item = (K, V)>,
        K: AsRef<str>,
        V: AsRef<str>,
    {
        let mut c = Self::default();
        for (name, value) in vars {
            let (name, value) = (name.as_ref(), value.as_ref().trim());
            match name {
                "SESSION_NAMESPACE" => {
                    c.namespace = Module::new(value)
                        .map_err(|e| ConfigError::invalid(name, e.to_string()))?;
                }
                "SESSION_IDLE_TIMEOUT" => {
                    c.idle_timeout = positive(name, parse_secs(name, value)?)?;
                }
                "SESSION_ABSOLUTE_TIMEOUT" => {
                    c.absolute_timeout = positive(name, parse_secs(name, value)?)?;
                }
                "SESSION_TOUCH_INTERVAL" => c.touch_interval = parse_secs(name, value)?,
                "SESSION_ROTATION_GRACE_MS" => {
                    c.rotation_grace = Duration::from_millis(parse_u64(name, value, "ms")?);
                }
                "SESSION_MAX_BYTES" => {
                    c.max_bytes = usize::try_from(parse_u64(name, value, "bytes")?)
                        .map_err(|_| ConfigError::invalid(name, "too large"))?;
                }
                "SESSION_MAX_PER_USER" => {
                    c.max_per_user = parse_u64(name, value, "sessions")?.max(1);
                }
                "SESSION_DEGRADED" => c.degraded = Degraded::parse(name, value)?,
                "SESSION_LOCAL_CAPACITY" => c.local_capacity = parse_u64(name, value, "sessions")?,
                _ => {}
            }
        }
        Ok(c)
    }

    /// The idle timeout.
    #[must_use]
    pub fn idle_timeout(&self) -> Duration {
        self.idle_timeout
    }

    /// The absolute timeout.
    #[must_use]
    pub fn absolute_timeout(&self) -> Duration {
        self.absolute_timeout
    }

    /// The degraded policy.
    #[must_use]
    pub fn degraded(&self) -> Degraded {
        self.degraded
    }

    /// The cap on stored state, in bytes.
    #[must_use]
    pub fn max_bytes(&self) -> usize {
        self.max_bytes
    }

    /// Sessions one user holds at most (per scope); a login past it ends the
    /// user's oldest session.
    #[must_use]
    pub fn max_per_user(&self) -> u64 {
        self.max_per_user
    }
}

fn positive(var: &str, d: Duration) -> Result<Duration, ConfigError> {
    if d.is_zero() {
        return Err(ConfigError::invalid(var, "must be greater than zero"));
    }
    Ok(d)
}

/// Builds a [`SessionConfig`].
#[derive(Debug, Clone)]
#[must_use]
pub struct SessionConfigBuilder {
    config: SessionConfig,
    error: Option<ConfigError>,
}

impl SessionConfigBuilder {
    /// The module of keys for requests without a tenant (default `session`).
    pub fn namespace(mut self, namespace: &str) -> Self {
        match Module::new(namespace) {
            Ok(m) => self.config.namespace = m,
            Err(e) => {
                self.error
                    .get_or_insert(ConfigError::invalid("SESSION_NAMESPACE", e.to_string()));
            }
        }
        self
    }

    /// A session unused this long ends (default 30 minutes).
    pub fn idle_timeout(mut self, d: Duration) -> Self {
        self.config.idle_timeout = d;
        self
    }

    /// A session ends this long after it began, however active (default 12 hours).
    pub fn absolute_timeout(mut self, d: Duration) -> Self {
        self.config.absolute_timeout = d;
        self
    }

    /// Rolling expiry writes to Redis at most this often per session (default 60 s;
    /// zero: on every load).
    pub fn touch_interval(mut self, d: Duration) -> Self {
        self.config.touch_interval = d;
        self
    }

    /// How long a rotated-away id stays readable (default 5 s; zero: deleted at once).
    pub fn rotation_grace(mut self, d: Duration) -> Self {
        self.config.rotation_grace = d;
        self
    }

    /// The cap on a session's stored state in bytes (default 16 KiB).
    pub fn max_bytes(mut self, n: usize) -> Self {
        self.config.max_bytes = n;
        self
    }

    /// Sessions one user holds at most (default 50): a login past the cap ends the
    /// user's oldest session, so "log out everywhere" stays a bounded operation.
    pub fn max_per_user(mut self, n: u64) -> Self {
        self.config.max_per_user = n.max(1);
        self
    }

    /// The degraded policy (default [`Degraded::FailClosed`]; without a Redis URL the
    /// in-process tier is always used).
    pub fn degraded(mut self, d: Degraded) -> Self {
        self.config.degraded = d;
        self
    }

    /// Sessions the in-process tier keeps at most (default 10,000).
    pub fn local_capacity(mut self, n: u64) -> Self {
        self.config.local_capacity = n;
        self
    }

    /// The configuration.
    ///
    /// # Errors
    /// The first invalid setting, or a zero idle or absolute timeout.
    pub fn build(self) -> Result<SessionConfig, ConfigError> {
        if let Some(e) = self.error {
            return Err(e);
        }
        positive("SESSION_IDLE_TIMEOUT", self.config.idle_timeout)?;
        positive("SESSION_ABSOLUTE_TIMEOUT", self.config.absolute_timeout)?;
        Ok(self.config)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_variables_and_names_the_bad_one() {
        let c = SessionConfig::from_vars([
            ("SESSION_IDLE_TIMEOUT", "60"),
            ("SESSION_DEGRADED", "memory"),
            ("SESSION_MAX_BYTES", "100"),
            ("SESSION_ROTATION_GRACE_MS", "0"),
        ])
        .expect("valid");
        assert_eq!(c.idle_timeout(), Duration::from_secs(60));
        assert_eq!(c.degraded(), Degraded::InMemory);
        assert_eq!(c.max_bytes(), 100);
        assert_eq!(c.rotation_grace, Duration::ZERO);

        let err = SessionConfig::from_vars([("SESSION_DEGRADED", "maybe")]).unwrap_err();
        assert!(err.to_string().contains("SESSION_DEGRADED"), "{err}");
        let err = SessionConfig::from_vars([("SESSION_IDLE_TIMEOUT", "0")]).unwrap_err();
        assert!(err.to_string().contains("SESSION_IDLE_TIMEOUT"), "{err}");
        let err = SessionConfig::from_vars([("SESSION_NAMESPACE", "a:b")]).unwrap_err();
        assert!(err.to_string().contains("SESSION_NAMESPACE"), "{err}");
    }
}
