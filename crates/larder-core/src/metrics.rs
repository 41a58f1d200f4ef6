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
//! | `larder_cache_errors_total` | counter | `module`, `kind` (`decode`, `encode`) | entries that could not be read or values that could not be stored |
//! | `larder_degraded_operations_total` | counter | `component` | operations served by a degraded path |
//! | `larder_ratelimit_decisions_total` | counter | `policy`, `decision` (`allow`, `deny`, `local_deny`, `shadow_deny`, `fallback_allow`, `fallback_deny`) | rate-limit decisions |
//! | `larder_session_ops_total` | counter | `op` (`load`, `create`, `update`, `write`, `delete`, `rotate`, `revoke`), `outcome` | session store operations |
//! | `larder_jobs_total` | counter | `task`, `outcome` | job outcomes |
//! | `larder_job_run_seconds` | histogram | `task` | how long a task ran (each attempt) |
//! | `larder_job_age_at_start_seconds` | histogram | `task` | from enqueue to a job's first start (a countdown or ETA included) |
//! | `larder_jobs_queued` | gauge | `queue` | ready jobs, set when [`Jobs::publish_depths`] runs (a `/metrics` scrape) |
//! | `larder_jobs_in_state` | gauge | `queue`, `state` (`delayed`, `retrying`, `running`, `dead`) | jobs waiting for their time, waiting out a retry's back-off, held by a worker, dead, set with the above |
//!
//! [`Jobs::publish_depths`]: https://docs.rs/larder-jobs/latest/larder_jobs/struct.Jobs.html#method.publish_depths

use std::sync::{Arc, Once, PoisonError, RwLock};

use metrics::{Key, Label, Level, Metadata, SharedString};

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
/// How long a task ran, by `task`.
pub const JOB_RUN: &str = "larder_job_run_seconds";
/// From enqueue to a job's first start, by `task`.
pub const JOB_AGE_AT_START: &str = "larder_job_age_at_start_seconds";
/// Ready jobs, by `queue`.
pub const JOBS_QUEUED: &str = "larder_jobs_queued";
/// Jobs delayed, running or dead, by `state`.
pub const JOBS_IN_STATE: &str = "larder_jobs_in_state";

/// [`REDIS_OPS`], keyed once per operation.
pub(crate) static REDIS_OPS_BY_OP: Family = Family::new(
    REDIS_OPS,
    "op",
    "outcome",
    &["ok", "error", "command_error", "timeout", "rejected"],
);
/// [`REDIS_OP_DURATION`], keyed once per operation.
pub(crate) static REDIS_OP_DURATION_BY_OP: Family = Family::new(REDIS_OP_DURATION, "op", "", &[]);

/// [`DEGRADED_OPERATIONS`] by `component` (a family without outcomes: pass `""`).
pub static DEGRADED_BY_COMPONENT: Family = Family::new(DEGRADED_OPERATIONS, "component", "", &[]);

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
    describe_histogram!(JOB_RUN, Unit::Seconds, "How long a task ran, per attempt");
    describe_histogram!(
        JOB_AGE_AT_START,
        Unit::Seconds,
        "From enqueue to a job's first start"
    );
    describe_gauge!(JOBS_QUEUED, "Ready jobs by queue");
    describe_gauge!(
        JOBS_IN_STATE,
        "Jobs delayed, retrying, running or dead, per queue"
    );
}

/// Sets the breaker gauge: 0 closed, 1 half open, 2 open (the guard passes its
/// state's number, so this module needs nothing of the guard's).
pub(crate) fn set_breaker_state(state: u8) {
    metrics::gauge!(BREAKER_STATE).set(f64::from(state));
}

/// What larder's metrics report as their origin to the recorder.
static METADATA: Metadata<'static> = Metadata::new("larder", Level::INFO, Some("larder"));

/// Most distinct first-label values a [`Family`] keeps keys for; past it, keys are
/// built per call (correct, as costly as the macros), so a stream of distinct values
/// can neither grow memory without bound nor make each look-up scan a long list.
const FAMILY_CAPACITY: usize = 128;

/// A first-label value and its keys, one per outcome (one key without outcomes);
/// the value's text is shared with the keys' labels.
type Member = (Arc<str>, Box<[Key]>);

/// A metric whose keys are built and hashed once per label value and then reused.
///
/// The `metrics` macros build and hash a [`Key`] on every call when a label value is
/// not a literal (an allocation and a hash, paid even with no recorder installed;
/// BENCHMARKS.md, "metric keys built once"). A family holds one metric with a first label whose values
/// are long-lived (an operation, a policy, a module, a task) and an optional second
/// label from a fixed list (an outcome); it builds each value's keys on first use.
///
/// ```
/// use larder_core::metrics::Family;
///
/// static DECISIONS: Family =
///     Family::new("app_decisions_total", "policy", "decision", &["allow", "deny"]);
///
/// DECISIONS.increment("per-ip", "allow"); // builds the keys of "per-ip" once
/// DECISIONS.increment("per-ip", "deny"); // reuses them
/// ```
#[derive(Debug)]
pub struct Family {
    name: &'static str,
    label: &'static str,
    outcome_label: &'static str,
    outcomes: &'static [&'static str],
    /// Searched front to back: for the few dozen values a family sees, comparing
    /// strings (lengths first) costs less than hashing one (BENCHMARKS.md, "metric
    /// keys built once").
    members: RwLock<Vec<Member>>,
}

impl Family {
    /// The metric `name` labelled `label` and, when `outcomes` is not empty,
    /// `outcome_label` with one of `outcomes`.
    #[must_use]
    pub const fn new(
        name: &'static str,
        label: &'static str,
        outcome_label: &'static str,
        outcomes: &'static [&'static str],
    ) -> Self {
        Self {
            name,
            label,
            outcome_label,
            outcomes,
            members: RwLock::new(Vec::new()),
        }
    }

    /// Adds one to the counter for `value` and `outcome` (`""` in a family without
    /// outcomes).
    pub fn increment(&self, value: &str, outcome: &'static str) {
        self.add(value, outcome, 1);
    }

    /// Adds `n` to the counter for `value` and `outcome`.
    pub fn add(&self, value: &str, outcome: &'static str, n: u64) {
        self.with_key(value, outcome, |key| {
            metrics::with_recorder(|r| r.register_counter(key, &METADATA)).increment(n);
        });
    }

    /// Records `sample` in the histogram for `value` (a family without outcomes).
    pub fn record(&self, value: &str, sample: f64) {
        self.with_key(value, "", |key| {
            metrics::with_recorder(|r| r.register_histogram(key, &METADATA)).record(sample);
        });
    }

    /// Runs `f` with the key of `value` and `outcome`: the stored one, or one built
    /// for this call (an outcome not in the list, or a full table).
    fn with_key(&self, value: &str, outcome: &'static str, f: impl FnOnce(&Key)) {
        let slot = if self.outcomes.is_empty() {
            Some(0)
        } else {
            self.outcomes.iter().position(|o| *o == outcome)
        };
        let Some(slot) = slot else {
            return f(&self.build(value.into(), outcome));
        };
        {
            let members = self.members.read().unwrap_or_else(PoisonError::into_inner);
            if let Some((_, keys)) = members.iter().find(|(v, _)| **v == *value) {
                return f(&keys[slot]);
            }
        }
        let mut members = self.members.write().unwrap_or_else(PoisonError::into_inner);
        if let Some((_, keys)) = members.iter().find(|(v, _)| **v == *value) {
            return f(&keys[slot]);
        }
        let value: Arc<str> = value.into();
        if members.len() >= FAMILY_CAPACITY {
            return f(&self.build(value, outcome));
        }
        let keys: Box<[Key]> = if self.outcomes.is_empty() {
            Box::new([self.build(value.clone(), "")])
        } else {
            self.outcomes
                .iter()
                .map(|o| self.build(value.clone(), o))
                .collect()
        };
        f(&keys[slot]);
        members.push((value, keys));
    }

    fn build(&self, value: Arc<str>, outcome: &'static str) -> Key {
        let first = Label::new(self.label, SharedString::from_shared(value));
        if self.outcomes.is_empty() {
            Key::from_parts(self.name, vec![first])
        } else {
            Key::from_parts(
                self.name,
                vec![first, Label::from_static_parts(self.outcome_label, outcome)],
            )
        }
    }
}

#[cfg(test)]
pub(crate) mod tests {
    #![allow(clippy::unwrap_used)] // test code: a failed unwrap is a failed test

    use std::sync::{Arc, Mutex};

    use metrics::{
        Counter, CounterFn, Gauge, Histogram, HistogramFn, Key, KeyName, Recorder, SharedString,
        Unit,
    };

    use super::{Family, FAMILY_CAPACITY};

    /// One report to the recorder: metric name, labels, value added or recorded.
    pub(crate) type Report = (String, Vec<(String, String)>, f64);

    /// A recorder that writes down each report (for `with_local_recorder`).
    #[derive(Default)]
    pub(crate) struct Log(pub(crate) Arc<Mutex<Vec<Report>>>);

    struct Entry(Arc<Mutex<Vec<Report>>>, Key);

    impl Entry {
        fn push(&self, v: f64) {
            let labels = self
                .1
                .labels()
                .map(|l| (l.key().to_owned(), l.value().to_owned()))
                .collect();
            self.0
                .lock()
                .unwrap()
                .push((self.1.name().to_owned(), labels, v));
        }
    }

    impl CounterFn for Entry {
        fn increment(&self, value: u64) {
            self.push(value as f64);
        }
        fn absolute(&self, _: u64) {}
    }

    impl HistogramFn for Entry {
        fn record(&self, value: f64) {
            self.push(value);
        }
    }

    impl Recorder for Log {
        fn describe_counter(&self, _: KeyName, _: Option<Unit>, _: SharedString) {}
        fn describe_gauge(&self, _: KeyName, _: Option<Unit>, _: SharedString) {}
        fn describe_histogram(&self, _: KeyName, _: Option<Unit>, _: SharedString) {}
        fn register_counter(&self, key: &Key, _: &metrics::Metadata<'_>) -> Counter {
            Counter::from_arc(Arc::new(Entry(self.0.clone(), key.clone())))
        }
        fn register_gauge(&self, _: &Key, _: &metrics::Metadata<'_>) -> Gauge {
            Gauge::noop()
        }
        fn register_histogram(&self, key: &Key, _: &metrics::Metadata<'_>) -> Histogram {
            Histogram::from_arc(Arc::new(Entry(self.0.clone(), key.clone())))
        }
    }

    pub(crate) fn pairs(p: &[(&str, &str)]) -> Vec<(String, String)> {
        p.iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect()
    }

    #[test]
    fn a_family_reports_the_keys_the_macros_would() {
        static OPS: Family = Family::new("t_ops_total", "op", "outcome", &["ok", "error"]);
        static TIME: Family = Family::new("t_op_seconds", "op", "", &[]);
        let log = Log::default();
        let seen = log.0.clone();
        metrics::with_local_recorder(&log, || {
            OPS.increment("get", "ok");
            OPS.increment("get", "ok"); // the stored key
            OPS.increment("set", "error");
            OPS.increment("get", "unlisted"); // built for the call
            TIME.record("get", 0.5);
            // The macros' own key, for comparison.
            let op = String::from("set");
            metrics::counter!("t_ops_total", "op" => op, "outcome" => "error").increment(1);
        });
        let seen = seen.lock().unwrap();
        let want = [
            (
                "t_ops_total",
                pairs(&[("op", "get"), ("outcome", "ok")]),
                1.0,
            ),
            (
                "t_ops_total",
                pairs(&[("op", "get"), ("outcome", "ok")]),
                1.0,
            ),
            (
                "t_ops_total",
                pairs(&[("op", "set"), ("outcome", "error")]),
                1.0,
            ),
            (
                "t_ops_total",
                pairs(&[("op", "get"), ("outcome", "unlisted")]),
                1.0,
            ),
            ("t_op_seconds", pairs(&[("op", "get")]), 0.5),
            (
                "t_ops_total",
                pairs(&[("op", "set"), ("outcome", "error")]),
                1.0,
            ),
        ];
        let got: Vec<_> = seen
            .iter()
            .map(|(n, l, v)| (n.as_str(), l.clone(), *v))
            .collect();
        assert_eq!(got, want);
        assert_eq!(
            OPS.members.read().unwrap().len(),
            2,
            "get and set, once each"
        );
    }

    #[test]
    fn a_family_stops_storing_keys_at_its_capacity_and_still_counts() {
        static MANY: Family = Family::new("t_many_total", "v", "outcome", &["ok"]);
        // A value past the capacity, counted again: its key is built per call.
        let late = (FAMILY_CAPACITY + 2).to_string();
        let log = Log::default();
        let seen = log.0.clone();
        metrics::with_local_recorder(&log, || {
            for i in 0..FAMILY_CAPACITY + 5 {
                MANY.increment(&i.to_string(), "ok");
            }
            MANY.increment(&late, "ok");
        });
        assert_eq!(MANY.members.read().unwrap().len(), FAMILY_CAPACITY);
        let seen = seen.lock().unwrap();
        assert_eq!(seen.len(), FAMILY_CAPACITY + 6);
        assert_eq!(
            seen[FAMILY_CAPACITY + 5].1,
            pairs(&[("v", late.as_str()), ("outcome", "ok")])
        );
    }
}
