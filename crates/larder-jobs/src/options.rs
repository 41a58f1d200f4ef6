//! How a job is enqueued.

use std::time::{Duration, SystemTime};

use larder_core::{Module, Tenant};

use crate::error::JobError;

/// Options of one enqueue: countdown or ETA, expiry, queue, priority, retries, an
/// idempotency key (the job id), tenant, timeout.
///
/// ```
/// use std::time::Duration;
/// use larder_jobs::EnqueueOptions;
/// let opts = EnqueueOptions::new()
///     .queue("reports")
///     .countdown(Duration::from_secs(60))
///     .priority(5)
///     .max_retries(5)
///     .tenant("42")
///     .id("daily-report:42:2026-11-22"); // enqueueing this id twice makes one job
/// # let _ = opts;
/// ```
#[derive(Debug, Clone, Default)]
#[must_use]
pub struct EnqueueOptions {
    pub(crate) queue: Option<String>,
    pub(crate) eta: Option<SystemTime>,
    pub(crate) countdown: Option<Duration>,
    pub(crate) expires: Option<SystemTime>,
    pub(crate) priority: u8,
    pub(crate) max_retries: Option<u32>,
    pub(crate) id: Option<String>,
    pub(crate) tenant: Option<String>,
    pub(crate) timeout: Option<Duration>,
}

impl EnqueueOptions {
    /// The defaults: queue `default`, now, priority 0, the queue's retry settings.
    pub fn new() -> Self {
        Self::default()
    }

    /// The queue (default `default`).
    pub fn queue(mut self, queue: impl Into<String>) -> Self {
        self.queue = Some(queue.into());
        self
    }

    /// Run no earlier than `delay` from now.
    pub fn countdown(mut self, delay: Duration) -> Self {
        self.countdown = Some(delay);
        self
    }

    /// Run no earlier than `at`.
    pub fn eta(mut self, at: SystemTime) -> Self {
        self.eta = Some(at);
        self
    }

    /// Do not start after `at` (the job ends `REVOKED`).
    pub fn expires(mut self, at: SystemTime) -> Self {
        self.expires = Some(at);
        self
    }

    /// Priority within the queue, 0 (default) to 9: higher runs first.
    pub fn priority(mut self, p: u8) -> Self {
        self.priority = p;
        self
    }

    /// Retries after the first attempt before the job is dead.
    pub fn max_retries(mut self, n: u32) -> Self {
        self.max_retries = Some(n);
        self
    }

    /// The job id, used as an idempotency key: a second enqueue with the same id
    /// returns the existing job and enqueues nothing.
    pub fn id(mut self, id: impl Into<String>) -> Self {
        self.id = Some(id.into());
        self
    }

    /// The tenant: jobs of different tenants are served round-robin.
    pub fn tenant(mut self, tenant: impl Into<String>) -> Self {
        self.tenant = Some(tenant.into());
        self
    }

    /// The task's time limit for this job (default: the worker's).
    pub fn timeout(mut self, t: Duration) -> Self {
        self.timeout = Some(t);
        self
    }
}

/// Options, validated and resolved to numbers.
#[derive(Debug, Clone)]
pub(crate) struct Resolved {
    pub(crate) id: String,
    /// The id is a fresh random UUID (no id was given): enqueueing skips the check
    /// that it is not taken.
    pub(crate) fresh_id: bool,
    pub(crate) queue: String,
    pub(crate) tenant: String,
    pub(crate) priority: u8,
    pub(crate) max_retries: u32,
    pub(crate) eta_ms: u64,
    pub(crate) expires_ms: u64,
    pub(crate) timeout_ms: u64,
}

/// The tenant segment of jobs enqueued without a tenant.
pub(crate) const NO_TENANT: &str = "_";

pub(crate) use larder_core::time::{now_ms, unix_ms as ms_since_epoch};

/// Validates an id: what a caller may pass as an idempotency key.
pub(crate) fn validate_id(id: &str) -> Result<(), JobError> {
    if id.is_empty() || id.len() > 200 || id.chars().any(|c| c.is_control() || c.is_whitespace()) {
        return Err(JobError::Invalid(format!(
            "job id must be 1 to 200 visible characters, got {id:?}"
        )));
    }
    Ok(())
}

impl EnqueueOptions {
    pub(crate) fn resolve(
        &self,
        default_retries: u32,
        default_timeout: Duration,
    ) -> Result<Resolved, JobError> {
        let queue = self.queue.clone().unwrap_or_else(|| "default".to_owned());
        Module::new(&queue).map_err(|e| JobError::Invalid(format!("queue: {e}")))?;
        let tenant = match &self.tenant {
            Some(t) => Tenant::new(t)
                .map_err(|e| JobError::Invalid(format!("tenant: {e}")))?
                .as_str()
                .to_owned(),
            None => NO_TENANT.to_owned(),
        };
        if self.priority > 9 {
            return Err(JobError::Invalid(format!(
                "priority must be 0 to 9, got {}",
                self.priority
            )));
        }
        let (id, fresh_id) = match &self.id {
            Some(id) => {
                validate_id(id)?;
                (id.clone(), false)
            }
            None => (uuid::Uuid::new_v4().to_string(), true),
        };
        let eta_ms = match (self.eta, self.countdown) {
            (Some(at), _) => ms_since_epoch(at),
            (None, Some(d)) => now_ms().saturating_add(larder_core::time::millis(d)),
            (None, None) => 0,
        };
        Ok(Resolved {
            id,
            fresh_id,
            queue,
            tenant,
            priority: self.priority,
            max_retries: self.max_retries.unwrap_or(default_retries),
            eta_ms,
            expires_ms: self.expires.map_or(0, ms_since_epoch),
            timeout_ms: larder_core::time::millis(self.timeout.unwrap_or(default_timeout)),
        })
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)] // test code: a failed unwrap is a failed test

    use super::*;

    #[test]
    fn resolves_defaults_and_times() {
        let r = EnqueueOptions::new()
            .resolve(3, Duration::from_secs(5))
            .unwrap();
        assert_eq!(
            (r.queue.as_str(), r.tenant.as_str()),
            ("default", NO_TENANT)
        );
        assert_eq!(
            (r.max_retries, r.timeout_ms, r.eta_ms, r.expires_ms),
            (3, 5000, 0, 0)
        );
        assert_eq!(r.id.len(), 36, "a uuid");
        assert!(r.fresh_id, "a generated id is not checked at enqueue");

        let before = now_ms();
        let r = EnqueueOptions::new()
            .countdown(Duration::from_secs(10))
            .max_retries(0)
            .tenant("42")
            .id("report:42")
            .resolve(3, Duration::from_secs(5))
            .unwrap();
        assert!(r.eta_ms >= before + 10_000 && r.eta_ms <= now_ms() + 10_000);
        assert_eq!(
            (r.max_retries, r.tenant.as_str(), r.id.as_str(), r.fresh_id),
            (0, "42", "report:42", false)
        );
        let at = SystemTime::UNIX_EPOCH + Duration::from_secs(2_000_000_000);
        let r = EnqueueOptions::new()
            .eta(at)
            .countdown(Duration::from_secs(1))
            .resolve(0, Duration::ZERO)
            .unwrap();
        assert_eq!(
            r.eta_ms, 2_000_000_000_000,
            "an explicit ETA wins over a countdown"
        );
    }

    #[test]
    fn rejects_hostile_options_with_a_clear_error() {
        for (opts, needle) in [
            (EnqueueOptions::new().queue("a:b"), "queue"),
            (EnqueueOptions::new().queue(""), "queue"),
            (EnqueueOptions::new().tenant("1:*"), "tenant"),
            (EnqueueOptions::new().tenant("{1}"), "tenant"),
            (EnqueueOptions::new().priority(10), "priority"),
            (EnqueueOptions::new().id(""), "job id"),
            (EnqueueOptions::new().id("a b"), "job id"),
            (EnqueueOptions::new().id("x".repeat(201)), "job id"),
        ] {
            let err = opts.resolve(0, Duration::ZERO).unwrap_err();
            assert!(err.to_string().contains(needle), "{err}");
        }
    }

    #[test]
    fn states_round_trip_through_their_names() {
        use crate::JobState;
        for s in [
            JobState::Pending,
            JobState::Received,
            JobState::Started,
            JobState::Retry,
            JobState::Success,
            JobState::Failure,
            JobState::Revoked,
        ] {
            assert_eq!(s.as_str().parse::<JobState>().unwrap(), s);
        }
        assert!("DONE".parse::<JobState>().is_err());
    }
}
