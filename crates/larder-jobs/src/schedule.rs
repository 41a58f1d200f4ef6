//! Periodic tasks: cron expressions (time-zone aware) and fixed intervals, fired once
//! per tick across any number of scheduler instances.
//!
//! Two mechanisms together: a leader lease in Redis (only the holder runs passes,
//! so instances do not all do the work), and a per-tick idempotency key (the job id
//! `periodic:{name}:{tick}`), so even two leaders at once — a paused leader whose
//! lease expired — enqueue each tick once.
//!
//! **Missed runs**: a pass fires the latest tick that is due, if it is at most the
//! entry's catch-up window old (default: one minute); older missed ticks are
//! skipped (coalesced), so a scheduler that was down for a day fires once, not a
//! day's worth of times. Keep the window shorter than the result TTL.
//!
//! **Daylight saving** (cron entries), as Vixie cron does it: an entry at a fixed
//! time of day (neither its minute nor its hour field starts with `*`) fires once
//! on the day the clocks go back, at the first of the two moments that read its
//! time, and on the day they go forward a time that does not exist that day fires
//! at the moment the clocks jump. An entry whose minute or hour field starts with
//! `*` (`*/15 * * * *`, `0 * * * *`) follows the clock: it fires in both passes
//! of a repeated hour and not in a skipped one.

use std::collections::HashMap;
use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::str::FromStr;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use chrono::{DateTime, TimeZone, Utc};
use larder_core::redis;
use tokio_util::sync::CancellationToken;

use crate::backend::Registry;
use crate::error::JobError;
use crate::inspect::ScheduleInfo;
use crate::jobs::{ms, Jobs};
use crate::options::{now_ms, EnqueueOptions};
use crate::task::{Payload, TaskRef};

type Enqueue = Arc<
    dyn Fn(Jobs, EnqueueOptions) -> Pin<Box<dyn Future<Output = Result<bool, JobError>> + Send>>
        + Send
        + Sync,
>;

enum When {
    Every(Duration),
    /// The schedule, its zone, and whether it fires at fixed times of day (see the
    /// module docs on daylight saving).
    Cron(Box<cron::Schedule>, chrono_tz::Tz, bool),
}

struct Entry {
    name: String,
    /// `when` as the dashboard shows it.
    schedule: String,
    task: &'static str,
    when: When,
    catch_up: Duration,
    opts: EnqueueOptions,
    enqueue: Enqueue,
}

impl Entry {
    /// The latest tick at or before `now_ms`, if within the catch-up window.
    fn due_tick(&self, now_ms: u64) -> Option<u64> {
        let tick = match &self.when {
            When::Every(p) => {
                let p = ms(*p).max(1);
                now_ms - now_ms % p
            }
            When::Cron(schedule, tz, fixed_time) => {
                let now = Utc
                    .timestamp_millis_opt(i64::try_from(now_ms).ok()?)
                    .single()?;
                let from: DateTime<Utc> =
                    now - chrono::Duration::milliseconds(i64::try_from(ms(self.catch_up)).ok()?);
                let last = cron_ticks(schedule, *tz, *fixed_time, from, now).max()?;
                u64::try_from(last.timestamp_millis()).ok()?
            }
        };
        (now_ms.saturating_sub(tick) <= ms(self.catch_up)).then_some(tick)
    }

    /// The first tick after `now_ms`.
    fn next_tick(&self, now_ms: u64) -> Option<u64> {
        match &self.when {
            When::Every(p) => {
                let p = ms(*p).max(1);
                Some(now_ms - now_ms % p + p)
            }
            When::Cron(schedule, tz, fixed_time) => {
                let after = Utc
                    .timestamp_millis_opt(i64::try_from(now_ms + 1).ok()?)
                    .single()?;
                let horizon = after + chrono::Duration::days(366 * 5);
                let next = cron_ticks(schedule, *tz, *fixed_time, after, horizon).next()?;
                u64::try_from(next.timestamp_millis()).ok()
            }
        }
    }
}

/// The moments in `[from, to]` a cron schedule fires at in zone `tz`.
///
/// The schedule is read on the local calendar (its times of day as written), and
/// each local time it names becomes the moment(s) that read it: one; two in the hour
/// the clocks go back (the first only for a `fixed_time` schedule); none in the hour
/// they skip (the moment of the jump for a `fixed_time` schedule). Reading the
/// calendar directly keeps the moments right where the local clock runs backwards,
/// which the zone-aware iterator of the `cron` crate yields out of order.
fn cron_ticks(
    schedule: &cron::Schedule,
    tz: chrono_tz::Tz,
    fixed_time: bool,
    from: DateTime<Utc>,
    to: DateTime<Utc>,
) -> impl Iterator<Item = DateTime<Utc>> + '_ {
    use chrono::{LocalResult, Offset};
    let local = |t: DateTime<Utc>| {
        let t = t.with_timezone(&tz);
        (t.naive_local(), t.offset().fix().local_minus_utc())
    };
    // Around a change of offset inside the window (its start included, hence the
    // second before it), local times run back or skip: widen the local range by the
    // change so that every moment is covered.
    let one_second = chrono::Duration::seconds(1);
    let ((from_local, from_offset), (to_local, to_offset)) = (local(from - one_second), local(to));
    let shift = chrono::Duration::seconds(i64::from((from_offset - to_offset).abs()));
    let first = from_local.min(to_local) - shift;
    let last = from_local.max(to_local) + shift;
    schedule
        .after(&(first - one_second).and_utc())
        .map(|t| t.naive_utc())
        .take_while(move |n| *n <= last)
        .flat_map(move |n| match tz.from_local_datetime(&n) {
            LocalResult::Single(t) => [Some(t), None],
            LocalResult::Ambiguous(earlier, later) => {
                [Some(earlier), (!fixed_time).then_some(later)]
            }
            LocalResult::None => [fixed_time.then(|| after_the_jump(tz, n)).flatten(), None],
        })
        .flatten()
        .map(|t| t.with_timezone(&Utc))
        .filter(move |t| (from..=to).contains(t))
}

/// The first moment after the local time `skipped`, which the clocks jumped over.
fn after_the_jump(
    tz: chrono_tz::Tz,
    skipped: chrono::NaiveDateTime,
) -> Option<DateTime<chrono_tz::Tz>> {
    use chrono::Timelike;
    let minute = skipped.with_second(0)?.with_nanosecond(0)?;
    (1..=24 * 60).find_map(|m| {
        tz.from_local_datetime(&(minute + chrono::Duration::minutes(m)))
            .earliest()
    })
}

/// Fires periodic tasks. Build it, then [`spawn`](Self::spawn) it in any number of
/// app instances.
///
/// ```
/// # fn demo(jobs: larder_jobs::Jobs) -> Result<(), larder_jobs::JobError> {
/// use std::time::Duration;
/// use larder_jobs::{Scheduler, TaskRef};
/// const REPORT: TaskRef<u64, ()> = TaskRef::new("send_daily_report");
/// let scheduler = Scheduler::new(jobs)
///     .cron("daily-report-1", "0 0 7 * * *", "Europe/Madrid", REPORT, 1)?   // 07:00 Madrid time
///     .every("heartbeat", Duration::from_secs(60), REPORT, 0);
/// # let _ = scheduler; Ok(()) }
/// ```
pub struct Scheduler {
    jobs: Jobs,
    entries: Vec<Entry>,
    /// The last tick each entry fired from this scheduler, and its job's id.
    fired: Mutex<HashMap<String, (u64, String)>>,
    id: String,
    pass_every: Duration,
    lease: redis::Script,
}

impl fmt::Debug for Scheduler {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Scheduler")
            .field("id", &self.id)
            .field(
                "entries",
                &self.entries.iter().map(|e| &e.name).collect::<Vec<_>>(),
            )
            .finish_non_exhaustive()
    }
}

/// How often the leader publishes its entries when it fires nothing.
const PUBLISH_EVERY: Duration = Duration::from_secs(30);

/// How long a leader's lease lasts without renewal.
const LEADER_LEASE: Duration = Duration::from_secs(10);

impl Scheduler {
    /// A scheduler with no entries, checking every second.
    #[must_use]
    pub fn new(jobs: Jobs) -> Self {
        Self {
            jobs,
            entries: Vec::new(),
            fired: Mutex::new(HashMap::new()),
            id: format!("s-{}", uuid::Uuid::new_v4().simple()),
            pass_every: Duration::from_secs(1),
            lease: redis::Script::new(
                r"if redis.call('GET', KEYS[1]) == ARGV[1] then
                    return redis.call('PEXPIRE', KEYS[1], ARGV[2])
                  end
                  if redis.call('SET', KEYS[1], ARGV[1], 'NX', 'PX', ARGV[2]) then return 1 end
                  return 0",
            ),
        }
    }

    fn push<A: Payload + Clone + Sync, O: 'static>(
        mut self,
        name: &str,
        (when, schedule): (When, String),
        task: TaskRef<A, O>,
        args: A,
    ) -> Self {
        let enqueue: Enqueue = Arc::new(move |jobs: Jobs, opts: EnqueueOptions| {
            let args = args.clone();
            Box::pin(async move { Ok(jobs.enqueue_unique(task, &args, opts).await?.1) })
        });
        self.entries.push(Entry {
            name: name.to_owned(),
            schedule,
            task: task.name(),
            when,
            catch_up: Duration::from_secs(60),
            opts: EnqueueOptions::new(),
            enqueue,
        });
        self
    }

    /// Fires `task(args)` every `period`, on multiples of the period since the Unix
    /// epoch (so every instance agrees on the ticks).
    #[must_use]
    pub fn every<A: Payload + Clone + Sync, O: 'static>(
        self,
        name: &str,
        period: Duration,
        task: TaskRef<A, O>,
        args: A,
    ) -> Self {
        let period = period.max(Duration::from_millis(1));
        let schedule = if period.subsec_millis() == 0 {
            format!("every {} s", period.as_secs())
        } else {
            format!("every {} ms", period.as_millis())
        };
        self.push(name, (When::Every(period), schedule), task, args)
    }

    /// Fires `task(args)` on a cron expression (`sec min hour day month weekday`, or
    /// the five-field form without seconds) in time zone `tz` (IANA name, e.g.
    /// `Europe/Madrid`; daylight-saving changes follow the zone's rules, and a job at
    /// a fixed time of day runs once on the days the clocks change: see the module
    /// docs).
    ///
    /// # Errors
    /// [`JobError::Invalid`] for a bad expression or zone.
    pub fn cron<A: Payload + Clone + Sync, O: 'static>(
        self,
        name: &str,
        expr: &str,
        tz: &str,
        task: TaskRef<A, O>,
        args: A,
    ) -> Result<Self, JobError> {
        let fields = expr.split_whitespace().count();
        let expr = if fields == 5 {
            format!("0 {expr}")
        } else {
            expr.to_owned()
        };
        let schedule = cron::Schedule::from_str(&expr)
            .map_err(|e| JobError::Invalid(format!("cron expression {expr:?}: {e}")))?;
        let tz = chrono_tz::Tz::from_str(tz)
            .map_err(|e| JobError::Invalid(format!("time zone {tz:?}: {e}")))?;
        // Minute and hour are the second and third fields of the six-field form.
        let fixed_time = expr
            .split_whitespace()
            .skip(1)
            .take(2)
            .all(|field| !field.starts_with('*'));
        let shown = format!("cron {expr} {tz}");
        Ok(self.push(
            name,
            (When::Cron(Box::new(schedule), tz, fixed_time), shown),
            task,
            args,
        ))
    }

    /// The catch-up window of the last added entry (default one minute): a missed
    /// tick at most this old still fires once after a restart.
    #[must_use]
    pub fn catch_up(mut self, window: Duration) -> Self {
        if let Some(e) = self.entries.last_mut() {
            e.catch_up = window;
        }
        self
    }

    /// Enqueue options of the last added entry (queue, priority, tenant...).
    #[must_use]
    pub fn options(mut self, opts: EnqueueOptions) -> Self {
        if let Some(e) = self.entries.last_mut() {
            e.opts = opts;
        }
        self
    }

    /// How often the leader checks for due ticks (default 1 s).
    #[must_use]
    pub fn pass_every(mut self, d: Duration) -> Self {
        self.pass_every = d.max(Duration::from_millis(10));
        self
    }

    /// One pass: enqueues each entry's due tick (idempotently). Returns the number of
    /// jobs newly enqueued. Does not check leadership.
    ///
    /// # Errors
    /// The first enqueue error (the other entries are still tried next pass).
    pub async fn run_once(&self) -> Result<usize, JobError> {
        let now = now_ms();
        let mut fired = 0;
        for e in &self.entries {
            let Some(tick) = e.due_tick(now) else {
                continue;
            };
            // The tick's id makes the enqueue idempotent: a tick already enqueued (by
            // an earlier pass or another instance) is a no-op, with no read first.
            let id = format!("periodic:{}:{tick}", e.name);
            let opts = e.opts.clone().id(id.clone());
            if (e.enqueue)(self.jobs.clone(), opts).await? {
                fired += 1;
                self.fired
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner)
                    .insert(e.name.clone(), (tick, id.clone()));
                tracing::info!(target: "larder::jobs", entry = %e.name, id, "periodic task enqueued");
            }
        }
        Ok(fired)
    }

    /// Publishes every entry ([`crate::Jobs::schedule`] reads them): its next tick,
    /// and its last one, this scheduler's or, if it fired none yet, the one an
    /// earlier leader published.
    async fn publish(&self) {
        let backend = &self.jobs.inner.backend;
        let earlier: HashMap<String, ScheduleInfo> = backend
            .registered(Registry::Schedule)
            .await
            .unwrap_or_default()
            .iter()
            .filter_map(|v| serde_json::from_str::<ScheduleInfo>(v).ok())
            .map(|i| (i.name.clone(), i))
            .collect();
        let now = now_ms();
        for e in &self.entries {
            let fired = self
                .fired
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .get(&e.name)
                .cloned();
            let (last_ms, last_job) = match (fired, earlier.get(&e.name)) {
                (Some((tick, id)), _) => (Some(tick), Some(id)),
                (None, Some(info)) => (info.last_ms, info.last_job.clone()),
                (None, None) => (None, None),
            };
            let info = ScheduleInfo {
                name: e.name.clone(),
                schedule: e.schedule.clone(),
                task: e.task.to_owned(),
                queue: e.opts.queue.clone().unwrap_or_else(|| "default".to_owned()),
                next_ms: e.next_tick(now),
                last_ms,
                last_job,
                last_state: None,
                published_ms: now,
            };
            let value = serde_json::to_string(&info).unwrap_or_default();
            if let Err(err) = backend.register(Registry::Schedule, &e.name, &value).await {
                tracing::debug!(target: "larder::jobs", error = %err, "schedule not published");
                return;
            }
        }
    }

    /// Tries to hold (or renew) the leader lease.
    async fn lead(&self) -> bool {
        let jobs = &self.jobs;
        if jobs.is_in_process() {
            return true;
        }
        let key = crate::partition::scope(jobs.handle()).base().to_owned() + "sched:leader";
        let mut inv = self.lease.key(key);
        inv.arg(&self.id).arg(ms(LEADER_LEASE));
        matches!(
            jobs.handle()
                .script::<i64>("job_scheduler_lease", &inv)
                .await,
            Ok(1)
        )
    }

    /// Starts the scheduler on the current Tokio runtime.
    #[must_use]
    pub fn spawn(self) -> RunningScheduler {
        let stop = CancellationToken::new();
        let token = stop.clone();
        let join = tokio::spawn(async move {
            let mut leading = false;
            // When this scheduler last published its entries while leading.
            let mut published = None;
            loop {
                tokio::select! {
                    () = tokio::time::sleep(self.pass_every) => {}
                    () = token.cancelled() => return,
                }
                let now_leading = self.lead().await;
                if now_leading != leading {
                    tracing::info!(target: "larder::jobs", scheduler = %self.id, leading = now_leading, "scheduler leadership changed");
                    leading = now_leading;
                }
                if leading {
                    let fired = match self.run_once().await {
                        Ok(n) => n,
                        Err(e) => {
                            tracing::warn!(target: "larder::jobs", error = %e, "scheduler pass failed; retrying");
                            0
                        }
                    };
                    if fired > 0
                        || published.is_none_or(|at: Instant| at.elapsed() >= PUBLISH_EVERY)
                    {
                        self.publish().await;
                        published = Some(Instant::now());
                    }
                } else {
                    published = None;
                }
            }
        });
        RunningScheduler { stop, join }
    }
}

/// A spawned scheduler.
#[derive(Debug)]
pub struct RunningScheduler {
    stop: CancellationToken,
    join: tokio::task::JoinHandle<()>,
}

impl RunningScheduler {
    /// Stops the scheduler.
    pub async fn shutdown(self) {
        self.stop.cancel();
        let _ = self.join.await;
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)] // test code: a failed unwrap is a failed test

    use super::*;
    use crate::jobs::Jobs;
    use larder_core::Handle;

    const T: TaskRef<u8, ()> = TaskRef::new("t");

    fn ms_of(rfc3339: &str) -> u64 {
        u64::try_from(
            DateTime::parse_from_rfc3339(rfc3339)
                .unwrap()
                .timestamp_millis(),
        )
        .unwrap()
    }

    fn entry(s: Scheduler) -> Entry {
        s.entries.into_iter().next().unwrap()
    }

    /// A scheduler holding one cron entry on Madrid's clock.
    fn madrid(expr: &str) -> Scheduler {
        Scheduler::new(Jobs::new(Handle::in_process()))
            .cron("r", expr, "Europe/Madrid", T, 1)
            .unwrap()
    }

    /// Asserts the tick due at each moment (`None`: nothing due).
    fn expect_due(e: &Entry, cases: &[(&str, Option<&str>)]) {
        for (now, due) in cases {
            assert_eq!(e.due_tick(ms_of(now)), due.map(ms_of), "at {now}");
        }
    }

    #[test]
    fn cron_ticks_follow_the_time_zone_across_daylight_saving() {
        let e = entry(madrid("0 0 7 * * *").catch_up(Duration::from_secs(3600)));
        expect_due(
            &e,
            &[
                // Winter (CET, UTC+1): 07:00 Madrid is 06:00 UTC.
                ("2026-01-15T06:30:00Z", Some("2026-01-15T06:00:00Z")),
                // Summer (CEST, UTC+2): 07:00 Madrid is 05:00 UTC.
                ("2026-07-15T05:10:00Z", Some("2026-07-15T05:00:00Z")),
                // Before the tick, or past the catch-up window: nothing due.
                ("2026-07-15T04:59:00Z", None),
                ("2026-07-15T06:30:00Z", None),
            ],
        );
    }

    #[test]
    fn a_fixed_time_runs_once_on_the_days_the_clocks_change() {
        expect_due(
            &entry(madrid("0 30 2 * * *")),
            &[
                // 2026-03-29: at 01:00 UTC Madrid goes from 02:00 CET to 03:00 CEST,
                // so 02:30 does not happen; the job runs at the jump, once.
                ("2026-03-29T00:59:59Z", None),
                ("2026-03-29T01:00:20Z", Some("2026-03-29T01:00:00Z")),
                ("2026-03-29T01:31:00Z", None),
                // Still due at the very end of the catch-up window (one minute).
                ("2026-03-29T01:01:00Z", Some("2026-03-29T01:00:00Z")),
                // The next day as usual: 02:30 CEST is 00:30 UTC.
                ("2026-03-30T00:30:10Z", Some("2026-03-30T00:30:00Z")),
                // 2026-10-25: at 01:00 UTC Madrid goes from 03:00 CEST back to
                // 02:00 CET, so 02:30 happens twice (00:30 and 01:30 UTC); the job
                // runs at the first.
                ("2026-10-25T00:30:10Z", Some("2026-10-25T00:30:00Z")),
                ("2026-10-25T01:30:10Z", None),
            ],
        );
        // A wide catch-up window still finds the first one only.
        expect_due(
            &entry(madrid("30 2 * * *").catch_up(Duration::from_secs(3 * 3600))),
            &[
                ("2026-10-25T02:00:00Z", Some("2026-10-25T00:30:00Z")),
                ("2026-03-29T02:00:00Z", Some("2026-03-29T01:00:00Z")),
            ],
        );
    }

    #[test]
    fn a_wildcard_hour_or_minute_follows_the_clock_through_daylight_saving() {
        expect_due(
            &entry(madrid("*/30 * * * *")),
            &[
                // Both passes of the repeated hour run (02:30 CEST, then 02:30 CET).
                ("2026-10-25T00:30:05Z", Some("2026-10-25T00:30:00Z")),
                ("2026-10-25T01:00:05Z", Some("2026-10-25T01:00:00Z")),
                ("2026-10-25T01:30:05Z", Some("2026-10-25T01:30:00Z")),
                // The skipped hour has no ticks: 01:30 CET is followed by 03:00 CEST.
                ("2026-03-29T00:30:05Z", Some("2026-03-29T00:30:00Z")),
                ("2026-03-29T01:00:05Z", Some("2026-03-29T01:00:00Z")),
            ],
        );
        expect_due(
            &entry(madrid("0 * * * *")),
            &[("2026-10-25T01:00:05Z", Some("2026-10-25T01:00:00Z"))],
        );
    }

    #[test]
    fn interval_ticks_align_on_the_epoch_and_missed_ones_coalesce() {
        let jobs = Jobs::new(Handle::in_process());
        let e = entry(Scheduler::new(jobs).every("i", Duration::from_secs(60), T, 1));
        // Every instance computes the same tick for a moment.
        assert_eq!(
            e.due_tick(ms_of("2026-03-01T10:00:59Z")),
            Some(ms_of("2026-03-01T10:00:00Z"))
        );
        // After a long outage only the latest tick is due (once, by its id).
        assert_eq!(
            e.due_tick(ms_of("2026-03-02T08:17:30Z")),
            Some(ms_of("2026-03-02T08:17:00Z"))
        );
        // Five-field cron is accepted (seconds default to 0); garbage is refused.
        let jobs = Jobs::new(Handle::in_process());
        assert!(Scheduler::new(jobs.clone())
            .cron("c", "*/5 * * * *", "UTC", T, 1)
            .is_ok());
        assert!(Scheduler::new(jobs)
            .cron("c", "61 * * * *", "UTC", T, 1)
            .is_err());
    }
}
