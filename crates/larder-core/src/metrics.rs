//! Metric names, exported through the [`metrics`] facade.
//!
//! Install any recorder (for example `metrics-exporter-prometheus`) to collect them;
//! without one they cost next to nothing.
//!
//! | name | kind | labels | meaning |
//! | --- | --- | --- | --- |
//! | `larder_redis_ops_total` | counter | `op`, `outcome` (`ok`, `error`, `command_error`, `timeout`, `rejected`) | guarded Redis calls |
//! | `larder_redis_op_duration_seconds` | histogram | `op` | time of guarded calls that reached the network |
//! | `larder_breaker_transitions_total` | counter | `to` (`open`, `closed`) | circuit breaker changes |
//! | `larder_breaker_state` | gauge | | 0 closed, 1 half-open, 2 open |
//! | `larder_cache_requests_total` | counter | `module`, `outcome` (`hit`, `miss`, `stale`, `bypass`) | cache look-ups |
//! | `larder_cache_errors_total` | counter | `module`, `kind` | cache faults (decode, backend) |
//! | `larder_degraded_operations_total` | counter | `component` | operations served by a degraded path |
//! | `larder_ratelimit_decisions_total` | counter | `policy`, `decision` (`allow`, `deny`) | rate-limit decisions |
//! | `larder_session_ops_total` | counter | `op` (`load`, `create`, `update`, `write`, `delete`, `rotate`, `revoke`), `outcome` | session store operations |
//! | `larder_jobs_total` | counter | `task`, `outcome` | job outcomes |

use std::sync::Once;

use crate::guard::BreakerState;

/// Guarded Redis calls, by `op` and `outcome`.
pub const REDIS_OPS: &str = "larder_redis_ops_total";
/// Duration of guarded Redis calls, by `op`.
pub const REDIS_OP_DURATION: &str = "larder_redis_op_duration_seconds";
/// Circuit breaker transitions, by `to`.
pub const BREAKER_TRANSITIONS: &str = "larder_breaker_transitions_total";
/// Circuit breaker state: 0 closed, 1 half-open, 2 open.
pub const BREAKER_STATE: &str = "larder_breaker_state";
/// Cache look-ups, by `module` and `outcome`.
pub const CACHE_REQUESTS: &str = "larder_cache_requests_total";
/// Cache faults, by `module` and `kind`.
pub const CACHE_ERRORS: &str = "larder_cache_errors_total";
/// Operations answered by a degraded path, by `component`.
pub const DEGRADED_OPERATIONS: &str = "larder_degraded_operations_total";
/// Rate-limit decisions, by `policy` and `decision`.
pub const RATELIMIT_DECISIONS: &str = "larder_ratelimit_decisions_total";
/// Session store operations, by `op` and `outcome`.
pub const SESSION_OPS: &str = "larder_session_ops_total";
/// Job outcomes, by `task` and `outcome`.
pub const JOBS: &str = "larder_jobs_total";

/// Registers descriptions of larder's metrics with the installed recorder.
///
/// Called when a handle is built; safe to call again (for a recorder installed later).
pub fn describe() {
    static ONCE: Once = Once::new();
    ONCE.call_once(describe_now);
}

/// Registers the descriptions unconditionally (after installing a recorder late).
pub fn describe_now() {
    use metrics::{describe_counter, describe_gauge, describe_histogram, Unit};
    describe_counter!(REDIS_OPS, "Guarded Redis calls by operation and outcome");
    describe_histogram!(
        REDIS_OP_DURATION,
        Unit::Seconds,
        "Duration of guarded Redis calls"
    );
    describe_counter!(BREAKER_TRANSITIONS, "Circuit breaker state changes");
    describe_gauge!(
        BREAKER_STATE,
        "Circuit breaker state: 0 closed, 1 half-open, 2 open"
    );
    describe_counter!(CACHE_REQUESTS, "Cache look-ups by module and outcome");
    describe_counter!(CACHE_ERRORS, "Cache faults by module and kind");
    describe_counter!(DEGRADED_OPERATIONS, "Operations served by a degraded path");
    describe_counter!(
        RATELIMIT_DECISIONS,
        "Rate-limit decisions by policy and decision"
    );
    describe_counter!(
        SESSION_OPS,
        "Session store operations by operation and outcome"
    );
    describe_counter!(JOBS, "Job outcomes by task and outcome");
}

pub(crate) fn set_breaker_state(state: BreakerState) {
    let v = match state {
        BreakerState::Closed => 0.0,
        BreakerState::HalfOpen => 1.0,
        BreakerState::Open => 2.0,
    };
    metrics::gauge!(BREAKER_STATE).set(v);
}
