//! The health report served at `/health/cache` by both frameworks.
//!
//! Always served with status 200: a degraded cache is not a down app. The JSON is
//!
//! ```json
//! {"status":"ok","cache":"connected","redis":"healthy","breaker":"closed","latency_ms":0.21}
//! {"status":"degraded","cache":"unavailable","redis":"unreachable","breaker":"open","last_error":"breaker_open"}
//! {"status":"ok","cache":"in_process","redis":"not_configured","breaker":"closed"}
//! ```

use std::time::Duration;

use serde::Serialize;

use crate::guard::BreakerState;

/// Overall status.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum Status {
    /// Everything configured works.
    Ok,
    /// Redis is configured but unreachable: components run degraded.
    Degraded,
}

/// What the cache is running on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum CacheStatus {
    /// Redis answers.
    Connected,
    /// Redis is configured but not answering.
    Unavailable,
    /// No Redis configured: in-process tier.
    InProcess,
    /// Caching is turned off (`CACHE_ENABLED=false`).
    Disabled,
}

/// Redis's own state.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum RedisStatus {
    /// `PING` answered within the deadline.
    Healthy,
    /// `PING` failed, timed out or was refused by the open breaker.
    Unreachable,
    /// No `REDIS_URL`.
    NotConfigured,
}

/// A health report: serialise it as the body of `GET /health/cache`.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[non_exhaustive]
pub struct HealthReport {
    /// Overall status.
    pub status: Status,
    /// What the cache runs on.
    pub cache: CacheStatus,
    /// Redis's state.
    pub redis: RedisStatus,
    /// The circuit breaker's state.
    pub breaker: BreakerState,
    /// Round trip of the health `PING`, in milliseconds.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub latency_ms: Option<f64>,
    /// Kind of the last backend error seen.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub last_error: Option<&'static str>,
}

impl HealthReport {
    pub(crate) fn in_process(cache_enabled: bool) -> Self {
        Self {
            status: Status::Ok,
            cache: if cache_enabled {
                CacheStatus::InProcess
            } else {
                CacheStatus::Disabled
            },
            redis: RedisStatus::NotConfigured,
            breaker: BreakerState::Closed,
            latency_ms: None,
            last_error: None,
        }
    }

    pub(crate) fn connected(
        cache_enabled: bool,
        breaker: BreakerState,
        rtt: Duration,
        last_error: Option<&'static str>,
    ) -> Self {
        Self {
            status: Status::Ok,
            cache: if cache_enabled {
                CacheStatus::Connected
            } else {
                CacheStatus::Disabled
            },
            redis: RedisStatus::Healthy,
            breaker,
            latency_ms: Some((rtt.as_secs_f64() * 1e6).round() / 1e3),
            last_error,
        }
    }

    pub(crate) fn unavailable(
        cache_enabled: bool,
        breaker: BreakerState,
        error: &'static str,
    ) -> Self {
        Self {
            status: Status::Degraded,
            cache: if cache_enabled {
                CacheStatus::Unavailable
            } else {
                CacheStatus::Disabled
            },
            redis: RedisStatus::Unreachable,
            breaker,
            latency_ms: None,
            last_error: Some(error),
        }
    }

    /// Whether the report is `ok`.
    #[must_use]
    pub fn is_ok(&self) -> bool {
        self.status == Status::Ok
    }

    /// The report as JSON bytes (serialising this type cannot fail).
    #[must_use]
    pub fn to_json(&self) -> Vec<u8> {
        serde_json::to_vec(self).unwrap_or_else(|_| br#"{"status":"degraded"}"#.to_vec())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn serialises_to_the_documented_shapes() {
        let ok =
            HealthReport::connected(true, BreakerState::Closed, Duration::from_micros(210), None);
        let v: serde_json::Value = serde_json::from_slice(&ok.to_json()).unwrap();
        assert_eq!(v["status"], "ok");
        assert_eq!(v["cache"], "connected");
        assert_eq!(v["redis"], "healthy");
        assert_eq!(v["latency_ms"], 0.21);

        let down = HealthReport::unavailable(true, BreakerState::Open, "breaker_open");
        let v: serde_json::Value = serde_json::from_slice(&down.to_json()).unwrap();
        assert_eq!(v["status"], "degraded");
        assert_eq!(v["cache"], "unavailable");
        assert_eq!(v["breaker"], "open");
        assert_eq!(v["last_error"], "breaker_open");
        assert!(v.get("latency_ms").is_none());
    }
}

/// A health endpoint's probe: [`Handle::health`](crate::Handle::health) at most once
/// per `max_age` (one second by default), so an unauthenticated, unlimited
/// `/health/cache` cannot make every call a `PING`. Concurrent callers share one
/// probe. A report is not reused once the circuit breaker changed state since it
/// was made: an outage (or a recovery) shows at once. Cheap to clone.
#[derive(Clone)]
pub struct HealthProbe {
    handle: crate::Handle,
    max_age: Duration,
    last: std::sync::Arc<tokio::sync::Mutex<Option<Probed>>>,
}

struct Probed {
    at: std::time::Instant,
    breaker: BreakerState,
    report: HealthReport,
}

impl std::fmt::Debug for HealthProbe {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HealthProbe")
            .field("max_age", &self.max_age)
            .finish_non_exhaustive()
    }
}

impl HealthProbe {
    /// A probe of `handle`'s Redis, reused for a second.
    #[must_use]
    pub fn new(handle: crate::Handle) -> Self {
        Self {
            handle,
            max_age: Duration::from_secs(1),
            last: std::sync::Arc::default(),
        }
    }

    /// Reuses a report for `max_age` instead of a second.
    #[must_use]
    pub fn max_age(mut self, max_age: Duration) -> Self {
        self.max_age = max_age;
        self
    }

    /// The current report: the last one while it is fresh, else a new probe.
    pub async fn report(&self) -> HealthReport {
        let mut last = self.last.lock().await;
        let breaker = self.handle.guard().state();
        if let Some(p) = last
            .as_ref()
            .filter(|p| p.at.elapsed() < self.max_age && p.breaker == breaker)
        {
            return p.report.clone();
        }
        let report = self.handle.health().await;
        *last = Some(Probed {
            at: std::time::Instant::now(),
            // The state after the probe: the probe itself may have moved it.
            breaker: self.handle.guard().state(),
            report: report.clone(),
        });
        report
    }
}
