//! The fail-open guard: a deadline on every Redis call and one circuit breaker per
//! handle.
//!
//! ```text
//!            N consecutive faults              cool-down elapsed
//!   Closed ───────────────────────▶ Open ───────────────────────▶ HalfOpen
//!     ▲                              ▲   (calls fail at once,        │ one probe call
//!     │                              │    no network I/O)            │
//!     └──────────── probe succeeds ──┴──────── probe fails ──────────┘
//! ```
//!
//! Only backend faults count (timeouts, refused or dropped connections, auth
//! failures, a loading or read-only server). A command error such as `WRONGTYPE` proves
//! the server is up and resets the count. Each state change is logged once — WARN on
//! open, INFO on close — and counted in `larder_breaker_transitions_total`. The
//! last outages (when the breaker opened, why, when it closed) are kept for the
//! dashboard ([`Guard::outages`]).
//!
//! The breaker is lock-free: the hot path of a closed breaker is one atomic load
//! before the call and one atomic store after it.

use std::collections::VecDeque;
use std::future::Future;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, AtomicU8, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use tokio::time::Instant;

use crate::error::{BackendError, Error, UnavailableReason};
use crate::metrics as m;

/// The circuit breaker's state.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum BreakerState {
    /// Calls go through.
    Closed,
    /// Calls fail at once with [`Error::Unavailable`].
    Open,
    /// One probe call is in flight; the others fail at once.
    HalfOpen,
}

impl BreakerState {
    fn from_u8(v: u8) -> Self {
        match v {
            0 => Self::Closed,
            1 => Self::HalfOpen,
            _ => Self::Open,
        }
    }

    /// A short, stable name.
    #[must_use]
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Closed => "closed",
            Self::Open => "open",
            Self::HalfOpen => "half_open",
        }
    }
}

const CLOSED: u8 = 0;
const HALF_OPEN: u8 = 1;
const OPEN: u8 = 2;

/// Counts of what the guard did since it was built.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
#[non_exhaustive]
pub struct GuardStats {
    /// Calls that reached the network (including probes and the one retry).
    pub attempted: u64,
    /// Calls that succeeded (or got a command error from a live server).
    pub succeeded: u64,
    /// Calls that failed with a backend fault.
    pub failed: u64,
    /// Calls that exceeded their deadline (included in `failed`).
    pub timed_out: u64,
    /// Calls refused without network I/O because the breaker was open.
    pub rejected: u64,
    /// Times the breaker opened.
    pub opened: u64,
}

#[derive(Debug, Default)]
struct Counters {
    attempted: AtomicU64,
    succeeded: AtomicU64,
    failed: AtomicU64,
    timed_out: AtomicU64,
    rejected: AtomicU64,
    opened: AtomicU64,
}

/// How many outages [`Guard::outages`] keeps.
const OUTAGES_KEPT: usize = 20;

/// One time the breaker opened: when, on what fault, and when a probe closed it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[non_exhaustive]
pub struct Outage {
    /// When the breaker opened, ms since the epoch.
    pub opened_ms: u64,
    /// When it closed again, ms since the epoch; `None` while it is open.
    pub closed_ms: Option<u64>,
    /// The kind of the fault that opened it (as [`Guard::last_error`] names it).
    pub cause: &'static str,
}

/// Deadline and circuit breaker shared by every call of one handle. Cheap to clone.
#[derive(Debug, Clone)]
pub struct Guard {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    deadline: Duration,
    threshold: u32,
    cooldown: Duration,
    epoch: Instant,
    state: AtomicU8,
    consecutive_failures: AtomicU32,
    /// Milliseconds since `epoch` when the breaker last opened.
    opened_at_ms: AtomicU64,
    probe_in_flight: AtomicBool,
    counters: Counters,
    last_error: Mutex<Option<&'static str>>,
    /// The last [`OUTAGES_KEPT`] outages, oldest first (touched only when the
    /// breaker opens or closes).
    outages: Mutex<VecDeque<Outage>>,
    /// Strings scrubbed from backend error messages (the password).
    secrets: Vec<String>,
}

/// How a call was admitted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Admission {
    Normal,
    Probe,
}

impl Guard {
    /// A guard with the given per-call deadline, failure threshold and cool-down.
    #[must_use]
    pub fn new(deadline: Duration, threshold: u32, cooldown: Duration) -> Self {
        Self::with_secrets(deadline, threshold, cooldown, Vec::new())
    }

    pub(crate) fn with_secrets(
        deadline: Duration,
        threshold: u32,
        cooldown: Duration,
        secrets: Vec<String>,
    ) -> Self {
        m::describe();
        Self {
            inner: Arc::new(Inner {
                deadline,
                threshold: threshold.max(1),
                cooldown,
                epoch: Instant::now(),
                state: AtomicU8::new(CLOSED),
                consecutive_failures: AtomicU32::new(0),
                opened_at_ms: AtomicU64::new(0),
                probe_in_flight: AtomicBool::new(false),
                counters: Counters::default(),
                last_error: Mutex::new(None),
                outages: Mutex::new(VecDeque::new()),
                secrets,
            }),
        }
    }

    /// The per-call deadline.
    #[must_use]
    pub fn deadline(&self) -> Duration {
        self.inner.deadline
    }

    /// The breaker's current state.
    #[must_use]
    pub fn state(&self) -> BreakerState {
        BreakerState::from_u8(self.inner.state.load(Ordering::Acquire))
    }

    /// What the guard has done so far.
    #[must_use]
    pub fn stats(&self) -> GuardStats {
        let c = &self.inner.counters;
        GuardStats {
            attempted: c.attempted.load(Ordering::Relaxed),
            succeeded: c.succeeded.load(Ordering::Relaxed),
            failed: c.failed.load(Ordering::Relaxed),
            timed_out: c.timed_out.load(Ordering::Relaxed),
            rejected: c.rejected.load(Ordering::Relaxed),
            opened: c.opened.load(Ordering::Relaxed),
        }
    }

    /// The kind of the last backend fault, if any has happened.
    #[must_use]
    pub fn last_error(&self) -> Option<&'static str> {
        *self
            .inner
            .last_error
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    /// The breaker's last outages (at most 20), newest first: the one still going on,
    /// if any, has no `closed_ms`.
    #[must_use]
    pub fn outages(&self) -> Vec<Outage> {
        let outages = self.outages_lock();
        outages.iter().rev().copied().collect()
    }

    fn outages_lock(&self) -> std::sync::MutexGuard<'_, VecDeque<Outage>> {
        self.inner
            .outages
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    /// Runs one Redis operation under the deadline and the breaker.
    ///
    /// `op` names the operation for logs and metrics. `call` is invoked once, or
    /// twice when the first attempt was refused at connect time (a command that was
    /// never sent is safe to retry) and the deadline leaves room.
    ///
    /// # Errors
    /// [`Error::Unavailable`] at once while the breaker is open, [`Error::Timeout`]
    /// when the deadline elapses, [`Error::Backend`] for Redis errors.
    pub async fn run<T, F, Fut>(&self, op: &'static str, call: F) -> Result<T, Error>
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = redis::RedisResult<T>>,
    {
        self.run_with_deadline(op, self.inner.deadline, call).await
    }

    /// As [`run`](Self::run), with an explicit deadline (for blocking commands whose
    /// server-side timeout is longer than the request-path deadline).
    ///
    /// # Errors
    /// As [`run`](Self::run).
    pub async fn run_with_deadline<T, F, Fut>(
        &self,
        op: &'static str,
        deadline: Duration,
        mut call: F,
    ) -> Result<T, Error>
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = redis::RedisResult<T>>,
    {
        let admission = self.admit(op)?;
        let mut probe = ProbeSlot {
            guard: self,
            armed: admission == Admission::Probe,
        };
        let started = Instant::now();
        let c = &self.inner.counters;
        let attempt = async {
            c.attempted.fetch_add(1, Ordering::Relaxed);
            // The first outcome leaves scope before the retry is awaited: held across
            // that await, it would sit in the state of every call's future.
            if let Some(outcome) = unless_refused(call().await) {
                return outcome;
            }
            c.attempted.fetch_add(1, Ordering::Relaxed);
            call().await
        };
        // The deadline counts from `started` (one clock read serves both).
        let outcome = match started.checked_add(deadline) {
            Some(at) => tokio::time::timeout_at(at, attempt).await,
            None => Ok(attempt.await),
        };
        let elapsed = started.elapsed();
        m::REDIS_OP_DURATION_BY_OP.record(op, elapsed.as_secs_f64());
        let result = match outcome {
            Ok(Ok(value)) => {
                self.on_success(&mut probe);
                m::REDIS_OPS_BY_OP.increment(op, "ok");
                return Ok(value);
            }
            Ok(Err(e)) => {
                let err = BackendError::from_redis(&e, &self.secret_refs());
                if err.kind().is_fault() {
                    self.on_failure(&mut probe, err.kind().as_str());
                    m::REDIS_OPS_BY_OP.increment(op, "error");
                } else {
                    // The server answered: it is alive, whatever it said.
                    self.on_success(&mut probe);
                    m::REDIS_OPS_BY_OP.increment(op, "command_error");
                }
                Error::Backend { op, source: err }
            }
            Err(_elapsed) => {
                c.timed_out.fetch_add(1, Ordering::Relaxed);
                self.on_failure(&mut probe, "timeout");
                m::REDIS_OPS_BY_OP.increment(op, "timeout");
                Error::Timeout { op, deadline }
            }
        };
        tracing::debug!(
            target: "larder::core",
            op,
            error_kind = result.kind(),
            elapsed_ms = elapsed.as_secs_f64() * 1e3,
            "redis call failed"
        );
        Err(result)
    }

    fn secret_refs(&self) -> Vec<&str> {
        self.inner.secrets.iter().map(String::as_str).collect()
    }

    /// Redacts this handle's secrets from a redis-rs error raised outside `run`.
    pub(crate) fn redact(&self, e: &redis::RedisError) -> BackendError {
        BackendError::from_redis(e, &self.secret_refs())
    }

    fn now_ms(&self) -> u64 {
        crate::time::millis(self.inner.epoch.elapsed())
    }

    /// Refuses at once, as [`run`](Self::run) would, while the breaker is open and
    /// its cool-down has not passed (or a probe is under way); `None` otherwise, and
    /// then `run` decides (it may still refuse, or admit the call as the probe).
    /// For callers whose preparation (keys, a command) a refusal would waste: the
    /// refusal is counted as `run`'s are.
    #[must_use]
    pub fn refuse_now(&self, op: &'static str) -> Option<Error> {
        let inner = &self.inner;
        match inner.state.load(Ordering::Acquire) {
            CLOSED => None,
            OPEN if self.cooled() => None,
            _ => Some(self.reject(op)),
        }
    }

    fn cooled(&self) -> bool {
        let opened = self.inner.opened_at_ms.load(Ordering::Acquire);
        self.now_ms().saturating_sub(opened) >= crate::time::millis(self.inner.cooldown)
    }

    fn reject(&self, op: &'static str) -> Error {
        self.inner.counters.rejected.fetch_add(1, Ordering::Relaxed);
        m::REDIS_OPS_BY_OP.increment(op, "rejected");
        Error::Unavailable {
            reason: UnavailableReason::BreakerOpen,
        }
    }

    fn admit(&self, op: &'static str) -> Result<Admission, Error> {
        let inner = &self.inner;
        match inner.state.load(Ordering::Acquire) {
            CLOSED => return Ok(Admission::Normal),
            OPEN if self.cooled() && !inner.probe_in_flight.swap(true, Ordering::AcqRel) => {
                if inner
                    .state
                    .compare_exchange(OPEN, HALF_OPEN, Ordering::AcqRel, Ordering::Acquire)
                    .is_ok()
                {
                    m::set_breaker_state(HALF_OPEN);
                    tracing::debug!(target: "larder::core", op, "circuit breaker half-open: probing redis");
                    return Ok(Admission::Probe);
                }
                inner.probe_in_flight.store(false, Ordering::Release);
            }
            _ => {}
        }
        Err(self.reject(op))
    }

    fn on_success(&self, probe: &mut ProbeSlot<'_>) {
        let inner = &self.inner;
        inner.counters.succeeded.fetch_add(1, Ordering::Relaxed);
        if inner.consecutive_failures.load(Ordering::Relaxed) != 0 {
            inner.consecutive_failures.store(0, Ordering::Relaxed);
        }
        if probe.armed {
            probe.armed = false;
            inner.state.store(CLOSED, Ordering::Release);
            inner.probe_in_flight.store(false, Ordering::Release);
            m::set_breaker_state(CLOSED);
            metrics::counter!(m::BREAKER_TRANSITIONS, "to" => "closed").increment(1);
            if let Some(outage) = self.outages_lock().back_mut() {
                outage.closed_ms.get_or_insert(crate::time::now_ms());
            }
            tracing::info!(target: "larder::core", "redis recovered: circuit breaker closed");
        }
    }

    fn on_failure(&self, probe: &mut ProbeSlot<'_>, kind: &'static str) {
        let inner = &self.inner;
        inner.counters.failed.fetch_add(1, Ordering::Relaxed);
        *inner
            .last_error
            .lock()
            .unwrap_or_else(PoisonError::into_inner) = Some(kind);
        if probe.armed {
            probe.armed = false;
            self.reopen();
            tracing::debug!(target: "larder::core", error_kind = kind, "probe failed: circuit breaker stays open");
            return;
        }
        let failures = inner.consecutive_failures.fetch_add(1, Ordering::AcqRel) + 1;
        if failures >= inner.threshold
            && inner
                .state
                .compare_exchange(CLOSED, OPEN, Ordering::AcqRel, Ordering::Acquire)
                .is_ok()
        {
            inner.opened_at_ms.store(self.now_ms(), Ordering::Release);
            inner.counters.opened.fetch_add(1, Ordering::Relaxed);
            m::set_breaker_state(OPEN);
            metrics::counter!(m::BREAKER_TRANSITIONS, "to" => "open").increment(1);
            let mut outages = self.outages_lock();
            if outages.len() == OUTAGES_KEPT {
                outages.pop_front();
            }
            outages.push_back(Outage {
                opened_ms: crate::time::now_ms(),
                closed_ms: None,
                cause: kind,
            });
            drop(outages);
            tracing::warn!(
                target: "larder::core",
                failures,
                error_kind = kind,
                cooldown_ms = crate::time::millis(inner.cooldown),
                "redis unavailable: circuit breaker open, degrading"
            );
        }
    }

    fn reopen(&self) {
        let inner = &self.inner;
        inner.opened_at_ms.store(self.now_ms(), Ordering::Release);
        inner.state.store(OPEN, Ordering::Release);
        inner.probe_in_flight.store(false, Ordering::Release);
        m::set_breaker_state(OPEN);
    }
}

/// `outcome`, unless it is a refusal at connect time (then `None`: worth one retry).
fn unless_refused<T>(outcome: redis::RedisResult<T>) -> Option<redis::RedisResult<T>> {
    match outcome {
        Err(e) if e.is_connection_refusal() => None,
        other => Some(other),
    }
}

/// Returns the breaker to open if a probe's future is dropped before it finished,
/// so a cancelled probe cannot leave the breaker half-open for ever.
struct ProbeSlot<'a> {
    guard: &'a Guard,
    armed: bool,
}

impl Drop for ProbeSlot<'_> {
    fn drop(&mut self) {
        if self.armed {
            self.guard.reopen();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io;

    fn refused() -> redis::RedisError {
        io::Error::from(io::ErrorKind::ConnectionRefused).into()
    }

    fn reset() -> redis::RedisError {
        io::Error::from(io::ErrorKind::ConnectionReset).into()
    }

    fn command_error() -> redis::RedisError {
        redis::RedisError::from((redis::ErrorKind::UnexpectedReturnType, "WRONGTYPE"))
    }

    #[test]
    fn each_call_reports_its_operation_outcome_and_duration() {
        use crate::metrics::tests::{pairs, Log};
        let log = Log::default();
        let seen = log.0.clone();
        metrics::with_local_recorder(&log, || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_time()
                .start_paused(true)
                .build()
                .unwrap();
            rt.block_on(async {
                let guard = Guard::new(Duration::from_millis(50), 1, Duration::from_secs(2));
                assert!(guard.run("op_a", || async { Ok(1) }).await.is_ok());
                let _ = guard
                    .run("op_a", || async { Err::<(), _>(command_error()) })
                    .await;
                let _ = guard
                    .run("op_b", || async {
                        tokio::time::sleep(Duration::from_secs(1)).await;
                        Ok(())
                    })
                    .await;
                // The timeout opened the breaker (threshold 1): refused without a call.
                let _ = guard.run("op_b", || async { Ok(()) }).await;
            });
        });
        let seen = seen.lock().unwrap();
        let counted: Vec<_> = seen
            .iter()
            .filter(|(name, ..)| name == crate::metrics::REDIS_OPS)
            .map(|(_, labels, _)| labels.clone())
            .collect();
        assert_eq!(
            counted,
            [
                pairs(&[("op", "op_a"), ("outcome", "ok")]),
                pairs(&[("op", "op_a"), ("outcome", "command_error")]),
                pairs(&[("op", "op_b"), ("outcome", "timeout")]),
                pairs(&[("op", "op_b"), ("outcome", "rejected")]),
            ]
        );
        let timed: Vec<_> = seen
            .iter()
            .filter(|(name, ..)| name == crate::metrics::REDIS_OP_DURATION)
            .map(|(_, labels, secs)| (labels.clone(), *secs))
            .collect();
        assert_eq!(timed.len(), 3, "calls that reached the network: {timed:?}");
        assert_eq!(timed[2], (pairs(&[("op", "op_b")]), 0.05), "the deadline");
    }

    #[tokio::test(start_paused = true)]
    async fn opens_after_threshold_and_rejects_without_calling() {
        let guard = Guard::new(Duration::from_millis(50), 3, Duration::from_secs(2));
        for _ in 0..3 {
            let err = guard
                .run("get", || async { Err::<(), _>(reset()) })
                .await
                .unwrap_err();
            assert_eq!(err.kind(), "connection_dropped");
        }
        assert_eq!(guard.state(), BreakerState::Open);
        let before = guard.stats().attempted;
        let mut calls = 0;
        let err = guard
            .run("get", || {
                calls += 1;
                async { Ok(()) }
            })
            .await
            .unwrap_err();
        assert!(matches!(
            err,
            Error::Unavailable {
                reason: UnavailableReason::BreakerOpen
            }
        ));
        assert_eq!(calls, 0);
        assert_eq!(guard.stats().attempted, before);
        assert_eq!(guard.stats().rejected, 1);
        assert_eq!(guard.stats().opened, 1);
    }

    /// Runs one call whose `n`th attempt answers `answer(n)`; returns the number of
    /// attempts and the outcome.
    async fn attempts(
        guard: &Guard,
        answer: fn(u32) -> redis::RedisResult<u32>,
    ) -> (u32, Result<u32, Error>) {
        let mut calls = 0;
        let outcome = guard
            .run("get", || {
                calls += 1;
                let reply = answer(calls);
                async move { reply }
            })
            .await;
        (calls, outcome)
    }

    #[tokio::test(start_paused = true)]
    async fn a_refusal_at_connect_is_tried_once_more_and_other_faults_are_not() {
        let guard = Guard::new(Duration::from_millis(50), 10, Duration::from_secs(1));
        // Refused, then answered: the second attempt's answer.
        let (_, answer) = attempts(&guard, |n| if n == 1 { Err(refused()) } else { Ok(n) }).await;
        assert_eq!(answer.unwrap(), 2);
        assert_eq!(guard.stats().attempted, 2);
        // Refused twice: the second refusal is the outcome.
        let (calls, err) = attempts(&guard, |_| Err(refused())).await;
        assert_eq!((calls, err.unwrap_err().kind()), (2, "connect"));
        // A dropped connection is not retried (the command may have run).
        let (calls, err) = attempts(&guard, |_| Err(reset())).await;
        assert_eq!((calls, err.unwrap_err().kind()), (1, "connection_dropped"));
        assert_eq!(guard.stats().attempted, 5);
    }

    #[tokio::test(start_paused = true)]
    async fn half_open_probe_closes_or_reopens() {
        let guard = Guard::new(Duration::from_millis(50), 1, Duration::from_secs(1));
        let _ = guard.run("get", || async { Err::<(), _>(reset()) }).await;
        assert_eq!(guard.state(), BreakerState::Open);

        tokio::time::advance(Duration::from_millis(1001)).await;
        // A failed probe keeps it open and restarts the cool-down.
        let _ = guard.run("get", || async { Err::<(), _>(reset()) }).await;
        assert_eq!(guard.state(), BreakerState::Open);
        assert!(guard.run("get", || async { Ok(()) }).await.is_err());

        // One outage so far, still going on: a failed probe is not a new one.
        let outages = guard.outages();
        assert_eq!(outages.len(), 1);
        assert_eq!(
            (outages[0].cause, outages[0].closed_ms),
            ("connection_dropped", None)
        );

        tokio::time::advance(Duration::from_millis(1001)).await;
        guard.run("get", || async { Ok(()) }).await.unwrap();
        assert_eq!(guard.state(), BreakerState::Closed);
        guard.run("get", || async { Ok(()) }).await.unwrap();
        let closed = guard.outages()[0];
        assert!(closed.closed_ms.is_some_and(|c| c >= closed.opened_ms));
    }

    #[tokio::test(start_paused = true)]
    async fn only_the_last_outages_are_kept_newest_first() {
        let guard = Guard::new(Duration::from_millis(50), 1, Duration::from_secs(1));
        for _ in 0..OUTAGES_KEPT + 5 {
            let _ = guard.run("get", || async { Err::<(), _>(reset()) }).await;
            tokio::time::advance(Duration::from_millis(1001)).await;
            guard.run("get", || async { Ok(()) }).await.unwrap();
        }
        let _ = guard.run("get", || async { Err::<(), _>(refused()) }).await;
        let outages = guard.outages();
        assert_eq!(outages.len(), OUTAGES_KEPT);
        assert_eq!(outages[0].closed_ms, None);
        assert!(outages[1..].iter().all(|o| o.closed_ms.is_some()));
        assert_eq!(guard.stats().opened, (OUTAGES_KEPT + 6) as u64);
    }

    #[tokio::test(start_paused = true)]
    async fn refuse_now_refuses_only_while_run_would_and_leaves_the_probe_to_run() {
        let guard = Guard::new(Duration::from_millis(50), 1, Duration::from_secs(1));
        assert!(guard.refuse_now("get").is_none(), "closed: go ahead");
        let _ = guard.run("get", || async { Err::<(), _>(reset()) }).await;
        assert_eq!(guard.state(), BreakerState::Open);
        assert!(matches!(
            guard.refuse_now("get"),
            Some(Error::Unavailable {
                reason: UnavailableReason::BreakerOpen
            })
        ));
        assert_eq!(guard.stats().rejected, 1, "counted as run's refusals are");

        tokio::time::advance(Duration::from_millis(1001)).await;
        assert!(
            guard.refuse_now("get").is_none(),
            "cooled down: the next run may probe"
        );
        assert_eq!(
            guard.state(),
            BreakerState::Open,
            "refuse_now changes nothing"
        );
        guard.run("get", || async { Ok(()) }).await.unwrap();
        assert_eq!(guard.state(), BreakerState::Closed);
        assert_eq!(guard.stats().rejected, 1);
    }

    #[tokio::test(start_paused = true)]
    async fn deadline_bounds_a_call_that_never_answers() {
        let guard = Guard::new(Duration::from_millis(30), 5, Duration::from_secs(1));
        let err = guard
            .run("get", std::future::pending::<redis::RedisResult<()>>)
            .await
            .unwrap_err();
        assert!(
            matches!(err, Error::Timeout { op: "get", deadline } if deadline == Duration::from_millis(30))
        );
        assert_eq!(guard.stats().timed_out, 1);
    }

    #[tokio::test(start_paused = true)]
    async fn command_errors_do_not_trip_the_breaker() {
        let guard = Guard::new(Duration::from_millis(50), 2, Duration::from_secs(1));
        for _ in 0..5 {
            let err = guard
                .run("get", || async { Err::<(), _>(command_error()) })
                .await
                .unwrap_err();
            assert!(!err.is_data_fault());
        }
        assert_eq!(guard.state(), BreakerState::Closed);
        // And a success between faults resets the count.
        let _ = guard.run("get", || async { Err::<(), _>(reset()) }).await;
        guard.run("get", || async { Ok(()) }).await.unwrap();
        let _ = guard.run("get", || async { Err::<(), _>(reset()) }).await;
        assert_eq!(guard.state(), BreakerState::Closed);
    }

    #[tokio::test(start_paused = true)]
    async fn a_refused_connection_is_retried_once() {
        let guard = Guard::new(Duration::from_millis(50), 5, Duration::from_secs(1));
        let mut calls = 0;
        guard
            .run("get", || {
                calls += 1;
                let first = calls == 1;
                async move {
                    if first {
                        Err(refused())
                    } else {
                        Ok(())
                    }
                }
            })
            .await
            .unwrap();
        assert_eq!(calls, 2);
        let mut calls = 0;
        let _ = guard
            .run("get", || {
                calls += 1;
                async { Err::<(), _>(refused()) }
            })
            .await;
        assert_eq!(calls, 2, "retried at most once");
    }

    #[tokio::test(start_paused = true)]
    async fn a_cancelled_probe_does_not_wedge_the_breaker() {
        let guard = Guard::new(Duration::from_millis(50), 1, Duration::from_millis(100));
        let _ = guard.run("get", || async { Err::<(), _>(reset()) }).await;
        tokio::time::advance(Duration::from_millis(101)).await;
        {
            let probe = guard.run("get", std::future::pending::<redis::RedisResult<()>>);
            let mut probe = std::pin::pin!(probe);
            // Poll once so the probe is admitted, then drop it.
            assert!(futures_poll_once(probe.as_mut()).await.is_none());
            assert_eq!(guard.state(), BreakerState::HalfOpen);
        }
        assert_eq!(guard.state(), BreakerState::Open);
        tokio::time::advance(Duration::from_millis(101)).await;
        guard.run("get", || async { Ok(()) }).await.unwrap();
        assert_eq!(guard.state(), BreakerState::Closed);
    }

    async fn futures_poll_once<F: Future + Unpin>(mut f: F) -> Option<F::Output> {
        std::future::poll_fn(|cx| {
            std::task::Poll::Ready(match std::pin::Pin::new(&mut f).poll(cx) {
                std::task::Poll::Ready(v) => Some(v),
                std::task::Poll::Pending => None,
            })
        })
        .await
    }
}
