//! The worker that runs Celery messages: take a delivery (queue → `unacked`,
//! one script), run the task, store the outcome, acknowledge; put expired
//! deliveries back; listen for `revoke`.

use std::collections::{HashMap, HashSet};
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use chrono::Utc;
use serde_json::{json, Map, Value};
use tokio::sync::{watch, Semaphore};
use tokio::task::JoinSet;

use super::protocol::{self, Incoming, SendOptions, TaskMeta};
use super::{Celery, CeleryError};
use crate::JobState;

/// The bridge's scripts, made (and hashed) once per [`Celery`]; `lua/celery/`
/// describes each.
#[derive(Debug)]
pub(crate) struct Scripts {
    fetch: redis::Script,
    store: redis::Script,
    restore: redis::Script,
}

impl Scripts {
    pub(crate) fn new() -> Self {
        Self {
            fetch: redis::Script::new(include_str!("../../lua/celery/fetch.lua")),
            store: redis::Script::new(include_str!("../../lua/celery/store.lua")),
            restore: redis::Script::new(include_str!("../../lua/celery/restore.lua")),
        }
    }
}

const UNACKED: &str = "unacked";
const UNACKED_INDEX: &str = "unacked_index";
const UNACKED_MUTEX: &str = "unacked_mutex";
/// How many revoked ids a worker remembers (Celery keeps 50,000).
const REVOKED_KEPT: usize = 50_000;

/// A task's failure, as Python sees it: an exception type and message, and
/// whether to retry.
#[derive(Debug, Clone)]
pub struct TaskFailure {
    exc_type: String,
    message: String,
    retry_in: Option<Duration>,
}

impl TaskFailure {
    /// Fails with `exc_type` (`"ValueError"`: Python's built-ins are raised as
    /// themselves by `AsyncResult.get()`) and `message`.
    #[must_use]
    pub fn new(exc_type: impl Into<String>, message: impl Into<String>) -> Self {
        Self {
            exc_type: exc_type.into(),
            message: message.into(),
            retry_in: None,
        }
    }

    /// Retries in `countdown` (Celery's `self.retry(countdown=...)`): RETRY is
    /// stored and the message is sent again with `retries + 1`, until the
    /// worker's `max_retries`, after which this failure is stored as FAILURE.
    #[must_use]
    pub fn retry_in(mut self, countdown: Duration) -> Self {
        self.retry_in = Some(countdown);
        self
    }
}

/// One call of a task: what the message carries.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct CeleryCall {
    /// The task id (Python's `AsyncResult(id)`).
    pub id: String,
    /// The task name.
    pub task: String,
    /// Positional arguments.
    pub args: Vec<Value>,
    /// Keyword arguments.
    pub kwargs: Map<String, Value>,
    /// How many times it was retried before this run.
    pub retries: u32,
}

impl CeleryCall {
    /// Positional argument `i` as `T`, or a `TypeError` naming it.
    ///
    /// # Errors
    /// A [`TaskFailure`] of type `TypeError` when it is missing or of another type.
    pub fn arg<T: serde::de::DeserializeOwned>(&self, i: usize) -> Result<T, TaskFailure> {
        self.args
            .get(i)
            .and_then(|v| T::deserialize(v).ok())
            .ok_or_else(|| {
                TaskFailure::new(
                    "TypeError",
                    format!(
                        "{}: argument {i} is missing or of the wrong type",
                        self.task
                    ),
                )
            })
    }
}

type Output = Pin<Box<dyn Future<Output = Result<Value, TaskFailure>> + Send>>;
type Handler = Arc<dyn Fn(CeleryCall) -> Output + Send + Sync>;

/// Runs Celery messages whose task names it knows.
pub struct CeleryWorker {
    celery: Celery,
    tasks: HashMap<String, Handler>,
    concurrency: usize,
    max_retries: u32,
    hostname: String,
}

impl std::fmt::Debug for CeleryWorker {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CeleryWorker")
            .field("tasks", &self.tasks.keys().collect::<Vec<_>>())
            .field("concurrency", &self.concurrency)
            .field("queues", &self.celery.config.queues)
            .finish_non_exhaustive()
    }
}

impl CeleryWorker {
    /// A worker on `celery`'s queues: 4 tasks at a time, 3 retries.
    #[must_use]
    pub fn new(celery: Celery) -> Self {
        Self {
            celery,
            tasks: HashMap::new(),
            concurrency: 4,
            max_retries: 3,
            hostname: format!("larder@{}", std::process::id()),
        }
    }

    /// Runs messages of task `name` (the Python task's name, e.g.
    /// `"send_daily_report"`) with `f(call)`; what it returns is the result
    /// Python's `AsyncResult.get()` reads.
    #[must_use]
    pub fn task<F, Fut>(mut self, name: &str, f: F) -> Self
    where
        F: Fn(CeleryCall) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<Value, TaskFailure>> + Send + 'static,
    {
        let handler: Handler = Arc::new(move |call| Box::pin(f(call)));
        self.tasks.insert(name.to_owned(), handler);
        self
    }

    /// How many tasks run at once (default 4).
    #[must_use]
    pub fn concurrency(mut self, n: usize) -> Self {
        self.concurrency = n.max(1);
        self
    }

    /// How many retries a task may ask for (Celery's default, 3).
    #[must_use]
    pub fn max_retries(mut self, n: u32) -> Self {
        self.max_retries = n;
        self
    }

    /// Starts consuming.
    #[must_use]
    pub fn spawn(self) -> RunningCeleryWorker {
        let (stop, stopped) = watch::channel(false);
        let shared = Arc::new(Shared {
            celery: self.celery,
            tasks: self.tasks,
            max_retries: self.max_retries,
            hostname: self.hostname,
            revoked: Mutex::new(Revoked::default()),
            in_flight: Mutex::new(HashSet::new()),
        });
        let mut background = JoinSet::new();
        background.spawn(listen_for_revokes(Arc::clone(&shared), stopped.clone()));
        background.spawn(restore_expired(Arc::clone(&shared), stopped.clone()));
        let consumer = tokio::spawn(consume(Arc::clone(&shared), self.concurrency, stopped));
        RunningCeleryWorker {
            stop,
            consumer,
            background,
            shared,
        }
    }
}

/// A running [`CeleryWorker`].
#[derive(Debug)]
pub struct RunningCeleryWorker {
    stop: watch::Sender<bool>,
    consumer: tokio::task::JoinHandle<JoinSet<()>>,
    background: JoinSet<()>,
    shared: Arc<Shared>,
}

impl RunningCeleryWorker {
    /// Stops taking messages, lets running tasks finish for up to `grace`, and
    /// puts the deliveries of those still running back on their queues (as a
    /// Celery worker's warm shutdown does).
    pub async fn shutdown(mut self, grace: Duration) {
        let _ = self.stop.send(true);
        let mut running = self.consumer.await.unwrap_or_default();
        let _ = tokio::time::timeout(grace, async {
            while running.join_next().await.is_some() {}
        })
        .await;
        running.abort_all();
        let left: Vec<String> = self
            .shared
            .in_flight
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .drain()
            .collect();
        for tag in left {
            if let Err(e) = restore_tag(&self.shared.celery, &tag).await {
                tracing::warn!(tag, error = %e, "celery: a running task's delivery was not put back; the visibility timeout will");
            }
        }
        // The background tasks end at the stop signal; a restore sweep under way
        // finishes first, so that it never leaves `unacked_mutex` held (which
        // would stop every worker of the fleet restoring for five minutes).
        let _ = tokio::time::timeout(Duration::from_secs(5), async {
            while self.background.join_next().await.is_some() {}
        })
        .await;
        self.background.abort_all();
    }
}

#[derive(Default)]
struct Revoked {
    ids: HashSet<String>,
    order: std::collections::VecDeque<String>,
}

impl Revoked {
    fn insert(&mut self, id: String) {
        if self.ids.insert(id.clone()) {
            self.order.push_back(id);
            while self.order.len() > REVOKED_KEPT {
                if let Some(old) = self.order.pop_front() {
                    self.ids.remove(&old);
                }
            }
        }
    }
}

struct Shared {
    celery: Celery,
    tasks: HashMap<String, Handler>,
    max_retries: u32,
    hostname: String,
    revoked: Mutex<Revoked>,
    /// The tags of the deliveries being worked on (their entries are in
    /// `unacked`).
    in_flight: Mutex<HashSet<String>>,
}

impl std::fmt::Debug for Shared {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Shared").finish_non_exhaustive()
    }
}

impl Shared {
    fn is_revoked(&self, id: &str) -> bool {
        self.revoked
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .ids
            .contains(id)
    }
}

fn now_secs() -> f64 {
    #[allow(clippy::cast_precision_loss)]
    let ms = Utc::now().timestamp_millis() as f64;
    ms / 1000.0
}

/// One delivery: the envelope, its tag, its queue.
struct Delivery {
    raw: Vec<u8>,
    tag: String,
    queue: String,
}

async fn fetch(celery: &Celery) -> Result<Option<Delivery>, CeleryError> {
    let mut inv = celery.scripts.fetch.prepare_invoke();
    let mut names = Vec::new();
    for q in &celery.config.queues {
        for list in protocol::lists_of(q) {
            inv.key(list);
            names.push(q.clone());
        }
    }
    inv.key(UNACKED_INDEX).key(UNACKED);
    inv.arg(now_secs()).arg(uuid::Uuid::new_v4().to_string());
    for n in &names {
        inv.arg(n);
    }
    let got: Option<(Vec<u8>, String, String)> = celery.broker.script("celery_fetch", &inv).await?;
    Ok(got.map(|(raw, tag, queue)| Delivery { raw, tag, queue }))
}

async fn ack(celery: &Celery, tag: &str) -> Result<(), CeleryError> {
    let mut pipe = redis::pipe();
    pipe.cmd("ZREM")
        .arg(UNACKED_INDEX)
        .arg(tag)
        .ignore()
        .cmd("HDEL")
        .arg(UNACKED)
        .arg(tag)
        .ignore();
    let () = celery.broker.pipeline("celery_ack", &pipe).await?;
    Ok(())
}

async fn store(celery: &Celery, meta: &TaskMeta) -> Result<(), CeleryError> {
    let json = serde_json::to_string(meta).unwrap_or_default();
    let mut inv = celery.scripts.store.prepare_invoke();
    inv.key(protocol::meta_key(&meta.task_id))
        .arg(json)
        .arg(celery.config.result_expires.as_secs().max(1));
    let _: i64 = celery.backend.script("celery_store", &inv).await?;
    Ok(())
}

/// Puts delivery `tag` back on its queue from its `unacked` entry; an index
/// entry without one is only removed.
async fn restore_tag(celery: &Celery, tag: &str) -> Result<(), CeleryError> {
    let entry: Option<Vec<u8>> = celery
        .broker
        .query(
            "celery_restore_get",
            redis::cmd("HGET").arg(UNACKED).arg(tag),
        )
        .await?;
    match entry {
        Some(entry) => restore(celery, tag, &entry).await,
        None => ack(celery, tag).await,
    }
}

/// Puts a delivery (`[envelope, exchange, queue]`) back on its queue, marked
/// redelivered; a malformed entry is only removed.
async fn restore(celery: &Celery, tag: &str, entry: &[u8]) -> Result<(), CeleryError> {
    let Some((queue, envelope)) = protocol::redelivered(entry) else {
        tracing::error!(
            tag,
            "celery: an unacked entry is not [envelope, exchange, queue]; dropped"
        );
        return ack(celery, tag).await;
    };
    let priority = serde_json::from_str::<Value>(&envelope)
        .ok()
        .and_then(|e| e.pointer("/properties/priority").and_then(Value::as_u64))
        .and_then(|p| u8::try_from(p).ok())
        .unwrap_or(0);
    let mut inv = celery.scripts.restore.prepare_invoke();
    inv.key(UNACKED_INDEX)
        .key(UNACKED)
        .key(protocol::priority_list(&queue, priority))
        .arg(tag)
        .arg(envelope);
    let _: i64 = celery.broker.script("celery_restore", &inv).await?;
    Ok(())
}

async fn consume(
    shared: Arc<Shared>,
    concurrency: usize,
    mut stop: watch::Receiver<bool>,
) -> JoinSet<()> {
    let slots = Arc::new(Semaphore::new(concurrency));
    let mut running = JoinSet::new();
    let first_list = shared.celery.config.queues[0].clone();
    while !*stop.borrow() {
        while running.try_join_next().is_some() {}
        let permit = tokio::select! {
            p = Arc::clone(&slots).acquire_owned() => match p { Ok(p) => p, Err(_) => break },
            _ = stop.changed() => break,
        };
        match fetch(&shared.celery).await {
            Ok(Some(delivery)) => {
                shared
                    .in_flight
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner)
                    .insert(delivery.tag.clone());
                running.spawn(process(
                    Arc::clone(&shared),
                    delivery,
                    permit,
                    Arc::clone(&slots),
                ));
            }
            Ok(None) => {
                drop(permit);
                // Waits for a message without taking it (a move of the list's last
                // element to its own end), at most a second: messages of other
                // lists are looked for at least that often.
                let mut wait = redis::cmd("BLMOVE");
                wait.arg(&first_list)
                    .arg(&first_list)
                    .arg("RIGHT")
                    .arg("RIGHT")
                    .arg(1);
                tokio::select! {
                    _ = shared.celery.broker.blocking::<Option<Vec<u8>>>("celery_wait", &wait, Duration::from_secs(3)) => {}
                    _ = stop.changed() => break,
                }
            }
            Err(e) => {
                drop(permit);
                tracing::warn!(error = %e, "celery: fetching failed; trying again");
                tokio::select! {
                    () = tokio::time::sleep(Duration::from_millis(500)) => {}
                    _ = stop.changed() => break,
                }
            }
        }
    }
    running
}

async fn process(
    shared: Arc<Shared>,
    delivery: Delivery,
    permit: tokio::sync::OwnedSemaphorePermit,
    slots: Arc<Semaphore>,
) {
    let tag = delivery.tag.clone();
    let outcome = run(&shared, &delivery, permit, slots).await;
    let celery = &shared.celery;
    let stored = match &outcome {
        Some(meta) => store(celery, meta).await,
        None => Ok(()),
    };
    // Acknowledged once the outcome is stored; if storing failed, the delivery
    // stays and comes back after the visibility timeout.
    match stored {
        Ok(()) => {
            if let Err(e) = ack(celery, &tag).await {
                tracing::warn!(tag, error = %e, "celery: acknowledgement failed; the message may run again");
            }
        }
        Err(e) => {
            tracing::warn!(tag, error = %e, "celery: result not stored; the message will be delivered again");
        }
    }
    shared
        .in_flight
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .remove(&tag);
}

/// Runs one delivery; returns the outcome to store (`None`: nothing to store).
async fn run(
    shared: &Shared,
    delivery: &Delivery,
    permit: tokio::sync::OwnedSemaphorePermit,
    slots: Arc<Semaphore>,
) -> Option<TaskMeta> {
    let msg = match Incoming::decode(&delivery.raw) {
        Ok(m) => m,
        Err(refused) => {
            tracing::error!(
                tag = delivery.tag,
                queue = delivery.queue,
                task_id = refused.id.as_deref().unwrap_or(""),
                problem = refused.problem,
                "celery: message refused"
            );
            return refused.id.map(|id| {
                TaskMeta::new(
                    &id,
                    JobState::Failure,
                    TaskMeta::exception("ContentDisallowed", &refused.problem),
                    None,
                )
            });
        }
    };
    let revoked = |why: &str| {
        tracing::info!(
            task_id = msg.id,
            task = msg.task,
            outcome = "revoked",
            why,
            "celery: task not run"
        );
        Some(TaskMeta::new(
            &msg.id,
            JobState::Revoked,
            TaskMeta::exception("TaskRevokedError", why),
            None,
        ))
    };
    if shared.is_revoked(&msg.id) {
        return revoked("revoked");
    }
    let Some(handler) = shared.tasks.get(&msg.task).cloned() else {
        tracing::error!(
            task_id = msg.id,
            task = msg.task,
            "celery: unregistered task; message refused"
        );
        return Some(TaskMeta::new(
            &msg.id,
            JobState::Failure,
            TaskMeta::exception("NotRegistered", &format!("'{}'", msg.task)),
            None,
        ));
    };
    // An ETA: held here (its delivery stays in `unacked`), without a slot.
    let mut permit = Some(permit);
    if let Some(eta) = msg.eta {
        if let Ok(wait) = (eta - Utc::now()).to_std() {
            drop(permit.take());
            tokio::time::sleep(wait).await;
            permit = Arc::clone(&slots).acquire_owned().await.ok();
        }
        if shared.is_revoked(&msg.id) {
            return revoked("revoked");
        }
    }
    if msg.expires.is_some_and(|at| at <= Utc::now()) {
        return revoked("expired");
    }
    let celery = &shared.celery;
    if celery.config.track_started {
        let started = TaskMeta::new(
            &msg.id,
            JobState::Started,
            json!({ "pid": std::process::id(), "hostname": shared.hostname }),
            None,
        );
        if let Err(e) = store(celery, &started).await {
            tracing::warn!(task_id = msg.id, error = %e, "celery: STARTED not stored");
        }
    }
    let call = tokio::spawn(handler(CeleryCall {
        id: msg.id.clone(),
        task: msg.task.clone(),
        args: msg.args.clone(),
        kwargs: msg.kwargs.clone(),
        retries: msg.retries,
    }));
    let result = match msg.time_limit {
        Some(limit) => match tokio::time::timeout(limit, call).await {
            Ok(joined) => joined,
            Err(_) => Ok(Err(TaskFailure::new(
                "TimeLimitExceeded",
                format!("{}", limit.as_secs_f64()),
            ))),
        },
        None => call.await,
    };
    drop(permit);
    let result = result.unwrap_or_else(|e| {
        Err(TaskFailure::new(
            "RuntimeError",
            if e.is_panic() {
                "the task panicked"
            } else {
                "the task was cancelled"
            },
        ))
    });
    match result {
        Ok(value) => {
            tracing::info!(
                task_id = msg.id,
                task = msg.task,
                outcome = "success",
                "celery: task done"
            );
            Some(TaskMeta::new(&msg.id, JobState::Success, value, None))
        }
        Err(failure) => {
            let exc = TaskMeta::exception(&failure.exc_type, &failure.message);
            let trace = format!(
                "Traceback (most recent call last):\n  larder task {:?}\n{}: {}\n",
                msg.task, failure.exc_type, failure.message
            );
            if let Some(countdown) = failure
                .retry_in
                .filter(|_| msg.retries < shared.max_retries)
            {
                let options = SendOptions::new()
                    .id(msg.id.clone())
                    .queue(delivery.queue.clone())
                    .countdown(countdown)
                    .retries(msg.retries + 1);
                let options = match msg.priority {
                    Some(p) => options.priority(p),
                    None => options,
                };
                let again = protocol::Outgoing::new(
                    &msg.task,
                    msg.args.clone(),
                    msg.kwargs.clone(),
                    &options,
                    &delivery.queue,
                );
                if let Err(e) = celery
                    .publish(&delivery.queue, &again.envelope, msg.priority)
                    .await
                {
                    tracing::warn!(task_id = msg.id, error = %e, "celery: retry not sent; the task fails");
                    return Some(TaskMeta::new(&msg.id, JobState::Failure, exc, Some(trace)));
                }
                tracing::info!(
                    task_id = msg.id,
                    task = msg.task,
                    outcome = "retry",
                    retries = msg.retries + 1,
                    "celery: task retried"
                );
                return Some(TaskMeta::new(&msg.id, JobState::Retry, exc, Some(trace)));
            }
            tracing::info!(
                task_id = msg.id,
                task = msg.task,
                outcome = "failure",
                error = failure.message,
                "celery: task failed"
            );
            Some(TaskMeta::new(&msg.id, JobState::Failure, exc, Some(trace)))
        }
    }
}

/// Puts back deliveries older than the visibility timeout, under kombu's
/// `unacked_mutex` (so that one process of the fleet does it at a time).
async fn restore_expired(shared: Arc<Shared>, mut stop: watch::Receiver<bool>) {
    let celery = &shared.celery;
    let vt = celery.config.visibility_timeout;
    let every = (vt / 2).clamp(Duration::from_millis(500), Duration::from_secs(10));
    loop {
        tokio::select! {
            () = tokio::time::sleep(every) => {}
            _ = stop.changed() => return,
        }
        if let Err(e) = restore_once(&shared, vt).await {
            tracing::warn!(error = %e, "celery: restoring expired deliveries failed");
        }
    }
}

async fn restore_once(shared: &Shared, vt: Duration) -> Result<(), CeleryError> {
    let celery = &shared.celery;
    let mut lock = redis::cmd("SET");
    lock.arg(UNACKED_MUTEX)
        .arg(&shared.hostname)
        .arg("NX")
        .arg("EX")
        .arg(300);
    let locked: Option<String> = celery.broker.query("celery_restore_lock", &lock).await?;
    if locked.is_none() {
        return Ok(());
    }
    let ceiling = now_secs() - vt.as_secs_f64();
    let mut range = redis::cmd("ZRANGEBYSCORE");
    range
        .arg(UNACKED_INDEX)
        .arg("-inf")
        .arg(ceiling)
        .arg("LIMIT")
        .arg(0)
        .arg(200);
    let result = async {
        let tags: Vec<String> = celery.broker.query("celery_restore_scan", &range).await?;
        for tag in tags {
            let mine = shared
                .in_flight
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .contains(&tag);
            if mine {
                tracing::warn!(tag, "celery: a task of this worker outlived the visibility timeout; it is delivered again");
            }
            restore_tag(celery, &tag).await?;
        }
        Ok::<(), CeleryError>(())
    }
    .await;
    let _: Result<i64, _> = celery
        .broker
        .query(
            "celery_restore_unlock",
            redis::cmd("DEL").arg(UNACKED_MUTEX),
        )
        .await;
    result
}

/// Listens to Celery's remote control broadcast (`celery.pidbox`) for `revoke`.
async fn listen_for_revokes(shared: Arc<Shared>, mut stop: watch::Receiver<bool>) {
    let channel = format!("/{}.celery.pidbox", shared.celery.config.db);
    loop {
        match shared.celery.broker.pubsub().await {
            Ok(mut pubsub) => {
                if pubsub.subscribe(&channel).await.is_ok() {
                    let mut messages = pubsub.on_message();
                    loop {
                        tokio::select! {
                            m = futures_util::StreamExt::next(&mut messages) => match m {
                                Some(m) => {
                                    let payload: Vec<u8> = m.get_payload().unwrap_or_default();
                                    for id in revoked_ids(&payload) {
                                        tracing::info!(task_id = id, "celery: revoked");
                                        shared.revoked.lock().unwrap_or_else(PoisonError::into_inner).insert(id);
                                    }
                                }
                                None => break,
                            },
                            _ = stop.changed() => return,
                        }
                    }
                }
            }
            Err(e) => tracing::debug!(error = %e, "celery: control channel unavailable"),
        }
        tokio::select! {
            () = tokio::time::sleep(Duration::from_secs(1)) => {}
            _ = stop.changed() => return,
        }
    }
}

/// The task ids a pidbox message revokes (`{"method": "revoke", "arguments":
/// {"task_id": id or [ids]}}` in a kombu envelope's body); none for anything
/// else.
fn revoked_ids(payload: &[u8]) -> Vec<String> {
    use base64::Engine as _;
    let Ok(envelope) = serde_json::from_slice::<Value>(payload) else {
        return Vec::new();
    };
    let body = envelope.get("body").and_then(Value::as_str).unwrap_or("");
    let body = match envelope
        .pointer("/properties/body_encoding")
        .and_then(Value::as_str)
    {
        Some("base64") => base64::engine::general_purpose::STANDARD
            .decode(body)
            .unwrap_or_default(),
        _ => body.as_bytes().to_vec(),
    };
    let Ok(body) = serde_json::from_slice::<Value>(&body) else {
        return Vec::new();
    };
    if body.get("method").and_then(Value::as_str) != Some("revoke") {
        return Vec::new();
    }
    match body.pointer("/arguments/task_id") {
        Some(Value::String(id)) => vec![id.clone()],
        Some(Value::Array(ids)) => ids
            .iter()
            .filter_map(|v| v.as_str().map(str::to_owned))
            .collect(),
        _ => Vec::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use base64::Engine as _;

    #[test]
    fn revoke_broadcasts_name_their_ids() {
        let body = |b: &str| {
            json!({
                "body": base64::engine::general_purpose::STANDARD.encode(b),
                "properties": {"body_encoding": "base64"}
            })
            .to_string()
        };
        assert_eq!(
            revoked_ids(body(r#"{"method":"revoke","arguments":{"task_id":"a"}}"#).as_bytes()),
            vec!["a"]
        );
        assert_eq!(
            revoked_ids(
                body(r#"{"method":"revoke","arguments":{"task_id":["a","b"]}}"#).as_bytes()
            ),
            vec!["a", "b"]
        );
        assert!(revoked_ids(body(r#"{"method":"ping","arguments":{}}"#).as_bytes()).is_empty());
        assert!(revoked_ids(b"not json").is_empty());
    }
}
