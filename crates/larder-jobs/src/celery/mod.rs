//! Celery interop (feature `celery`): larder speaks Celery 5's protocol v2 on
//! kombu's Redis transport, so Python Celery apps and larder share one broker
//! and one result backend, both ways.
//!
//! - **Python → Rust**: a [`CeleryWorker`] runs tasks a Python app sends
//!   (`send_task`, `.delay`, `.apply_async` with countdown, eta, expires, queue),
//!   and stores their outcome where `AsyncResult(id).get()` reads it.
//! - **Rust → Python**: [`Celery::send_task`] enqueues a task a Python Celery
//!   worker runs; [`Celery::wait`] and [`Celery::result`] read its outcome.
//!
//! ```no_run
//! # async fn demo() -> Result<(), larder_jobs::celery::CeleryError> {
//! use larder_jobs::celery::{Celery, CeleryWorker, SendOptions, TaskFailure};
//! use serde_json::json;
//!
//! // CELERY_BROKER_URL, CELERY_RESULT_BACKEND (default: the broker), CELERY_QUEUE.
//! let celery = Celery::from_env()?;
//! // Runs Python's `send_task("add", args=[2, 3])`; a failure reaches Python as
//! // the exception it names (`TaskFailure::new("ValueError", "...")`).
//! let worker = CeleryWorker::new(celery.clone())
//!     .task("add", |call| async move {
//!         let (a, b): (i64, i64) = (call.arg(0)?, call.arg(1)?);
//!         Ok(json!(a + b))
//!     })
//!     .spawn();
//! // Sends a task a Python worker runs, and waits for its result:
//! let id = celery.send_task("reports.send", vec![json!(1)], Default::default(), SendOptions::new()).await?;
//! let meta = celery.wait(&id, std::time::Duration::from_secs(30)).await?;
//! worker.shutdown(std::time::Duration::from_secs(10)).await;
//! # Ok(()) }
//! ```
//!
//! ## Delivery, as kombu's Redis transport does it
//!
//! A message is taken from the queue's list and recorded in `unacked` (with its
//! time in `unacked_index`) in **one** script (kombu needs two round trips, and a
//! crash between them loses the message); it is acknowledged (removed from
//! both) only once its outcome is stored (Celery's `acks_late`). A worker killed
//! mid-task leaves the delivery in `unacked`; after the visibility timeout any
//! worker, Python or larder, puts it back on its queue with `redelivered` set.
//! Every process sharing the broker must agree on the visibility timeout
//! (`CELERY_VISIBILITY_TIMEOUT`, Celery's `broker_transport_options`). An ETA or
//! countdown message is held by the worker that took it (its delivery stays in
//! `unacked`), so it runs once, not once per worker. `revoke` sent from Python
//! (the `celery.pidbox` broadcast) is heard by every running [`CeleryWorker`].
//!
//! The broker is one Redis node (`redis://` or `rediss://`), as for kombu: Celery's
//! keys (`celery`, `unacked`, `unacked_index`) share no hash tag, so a Redis
//! Cluster cannot hold them, and Celery's `sentinel://` URLs are not read.
//!
//! Only JSON messages are accepted: another content type, a body that is not
//! Celery's `[args, kwargs, embed]`, or an envelope that is not JSON is logged
//! (`error`, with the delivery tag) and dropped, never retried in a loop and
//! never a crash.

mod protocol;
mod worker;

use std::time::Duration;

use larder_core::{Config, ConfigError, Handle};
use serde_json::{Map, Value};

pub use protocol::{SendOptions, TaskMeta};
pub use worker::{CeleryCall, CeleryWorker, RunningCeleryWorker, TaskFailure};

/// An error of the Celery bridge.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum CeleryError {
    /// A Redis call failed (deadline, outage, refused command).
    #[error(transparent)]
    Redis(#[from] larder_core::Error),
    /// The configuration is wrong.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// `wait` gave up before the task was ready.
    #[error("task {id} not ready after {waited:?}")]
    Timeout {
        /// The task id.
        id: String,
        /// How long it waited.
        waited: Duration,
    },
    /// A stored result is not Celery's JSON.
    #[error("malformed result of task {id}: {problem}")]
    Malformed {
        /// The task id.
        id: String,
        /// What is wrong.
        problem: String,
    },
}

/// Where Celery's keys live and how its deliveries are timed.
#[derive(Debug, Clone)]
pub struct CeleryConfig {
    /// The queues a worker consumes and `send_task` defaults to (`CELERY_QUEUE`,
    /// comma-separated; default `celery`).
    pub queues: Vec<String>,
    /// How long a delivery may stay unacknowledged before it is put back
    /// (`CELERY_VISIBILITY_TIMEOUT` seconds; Celery's default, 3600).
    pub visibility_timeout: Duration,
    /// How long results are kept (`CELERY_RESULT_EXPIRES` seconds; 1 day).
    pub result_expires: Duration,
    /// Whether a STARTED state is stored when a task starts
    /// (`CELERY_TASK_TRACK_STARTED`; Celery's `task_track_started`, default off).
    pub track_started: bool,
    /// The broker's database number (from its URL), which names the `revoke`
    /// broadcast's channel.
    pub db: i64,
}

impl Default for CeleryConfig {
    fn default() -> Self {
        Self {
            queues: vec!["celery".to_owned()],
            visibility_timeout: Duration::from_secs(3600),
            result_expires: Duration::from_secs(86_400),
            track_started: false,
            db: 0,
        }
    }
}

/// A Celery app's broker and result backend, seen from Rust: sends tasks and
/// reads results. Cheap to clone.
#[derive(Debug, Clone)]
pub struct Celery {
    pub(crate) broker: Handle,
    pub(crate) backend: Handle,
    pub(crate) config: std::sync::Arc<CeleryConfig>,
    pub(crate) scripts: std::sync::Arc<worker::Scripts>,
}

/// The database number of a `redis://host:port/N` URL (0 without one).
fn db_of(url: &str) -> i64 {
    let rest = url.split_once("://").map_or(url, |(_, r)| r);
    let path = rest.split_once('/').map_or("", |(_, p)| p);
    path.split(['?', '#'])
        .next()
        .and_then(|n| n.parse().ok())
        .unwrap_or(0)
}

impl Celery {
    /// Celery on `broker` (messages) and `backend` (results; may be the same
    /// handle).
    #[must_use]
    pub fn new(broker: Handle, backend: Handle, config: CeleryConfig) -> Self {
        Self {
            broker,
            backend,
            config: std::sync::Arc::new(config),
            scripts: std::sync::Arc::new(worker::Scripts::new()),
        }
    }

    /// From Celery's own variables: `CELERY_BROKER_URL`, `CELERY_RESULT_BACKEND`
    /// (default: the broker), `CELERY_QUEUE`, `CELERY_VISIBILITY_TIMEOUT`,
    /// `CELERY_RESULT_EXPIRES`, `CELERY_TASK_TRACK_STARTED`; the deadlines and
    /// breaker are larder's (`LARDER_OP_TIMEOUT_MS`, ...).
    ///
    /// # Errors
    /// [`CeleryError::Config`] naming a missing or malformed variable.
    pub fn from_env() -> Result<Self, CeleryError> {
        let vars: Vec<(String, String)> = std::env::vars()
            .filter(|(k, _)| k.starts_with("CELERY_") || k.starts_with("LARDER_"))
            .collect();
        Self::from_vars(vars)
    }

    /// [`from_env`](Self::from_env) from the given variables.
    ///
    /// # Errors
    /// As [`from_env`](Self::from_env).
    pub fn from_vars<K: AsRef<str>, V: AsRef<str>>(
        vars: impl IntoIterator<Item = (K, V)>,
    ) -> Result<Self, CeleryError> {
        let mut broker = None;
        let mut backend = None;
        let mut config = CeleryConfig::default();
        let mut larder = Vec::new();
        for (k, v) in vars {
            let (k, v) = (k.as_ref(), v.as_ref().trim());
            match k {
                "CELERY_BROKER_URL" if !v.is_empty() => broker = Some(v.to_owned()),
                "CELERY_RESULT_BACKEND" if !v.is_empty() => backend = Some(v.to_owned()),
                "CELERY_QUEUE" if !v.is_empty() => {
                    config.queues = v
                        .split(',')
                        .map(|q| q.trim().to_owned())
                        .filter(|q| !q.is_empty())
                        .collect();
                }
                "CELERY_VISIBILITY_TIMEOUT" => {
                    config.visibility_timeout = larder_core::config::parse_secs(k, v)?;
                }
                "CELERY_RESULT_EXPIRES" => {
                    config.result_expires = larder_core::config::parse_secs(k, v)?;
                }
                "CELERY_TASK_TRACK_STARTED" => {
                    config.track_started = larder_core::config::parse_bool(k, v)?;
                }
                k if k.starts_with("LARDER_") => larder.push((k.to_owned(), v.to_owned())),
                _ => {}
            }
        }
        let broker = broker.ok_or_else(|| ConfigError::invalid("CELERY_BROKER_URL", "not set"))?;
        config.db = db_of(&broker);
        let handle = |var: &str, url: &str| -> Result<Handle, CeleryError> {
            let mut vars = larder.clone();
            vars.push(("REDIS_URL".to_owned(), url.to_owned()));
            let config = Config::from_vars(vars).map_err(|e| match e {
                ConfigError::Invalid { problem, .. } => ConfigError::invalid(var, problem),
                other => other,
            })?;
            Ok(Handle::new(config)?)
        };
        let broker_handle = handle("CELERY_BROKER_URL", &broker)?;
        let backend_handle = match backend {
            Some(url) if url != broker => handle("CELERY_RESULT_BACKEND", &url)?,
            _ => broker_handle.clone(),
        };
        Ok(Self::new(broker_handle, backend_handle, config))
    }

    /// The configuration.
    #[must_use]
    pub fn config(&self) -> &CeleryConfig {
        &self.config
    }

    /// Sends task `name` with `args` and `kwargs`, as Python's
    /// `app.send_task(name, args, kwargs, **options)` does; returns its id.
    ///
    /// # Errors
    /// [`CeleryError::Redis`] when the broker does not take it.
    pub async fn send_task(
        &self,
        name: &str,
        args: Vec<Value>,
        kwargs: Map<String, Value>,
        options: SendOptions,
    ) -> Result<String, CeleryError> {
        let queue = options
            .queue
            .clone()
            .unwrap_or_else(|| self.config.queues[0].clone());
        let message = protocol::Outgoing::new(name, args, kwargs, &options, &queue);
        self.publish(&queue, &message.envelope, options.priority)
            .await?;
        Ok(message.id)
    }

    /// Pushes an envelope on `queue`'s list for `priority` (kombu's layout), and
    /// makes sure the queue's binding exists (kombu refuses a vanished binding).
    pub(crate) async fn publish(
        &self,
        queue: &str,
        envelope: &str,
        priority: Option<u8>,
    ) -> Result<(), CeleryError> {
        let mut pipe = redis::pipe();
        pipe.cmd("SADD")
            .arg(format!("_kombu.binding.{queue}"))
            .arg(format!("{queue}\x06\x16\x06\x16{queue}"))
            .ignore()
            .cmd("LPUSH")
            .arg(protocol::priority_list(queue, priority.unwrap_or(0)))
            .arg(envelope)
            .ignore();
        let () = self.broker.pipeline("celery_publish", &pipe).await?;
        Ok(())
    }

    /// The stored outcome of task `id`: `None` while nothing is stored (Celery's
    /// PENDING).
    ///
    /// # Errors
    /// [`CeleryError::Redis`], or [`CeleryError::Malformed`] for a stored result
    /// that is not Celery's JSON.
    pub async fn result(&self, id: &str) -> Result<Option<TaskMeta>, CeleryError> {
        let raw: Option<Vec<u8>> = self
            .backend
            .query(
                "celery_result",
                redis::cmd("GET").arg(protocol::meta_key(id)),
            )
            .await?;
        raw.map(|r| {
            serde_json::from_slice::<TaskMeta>(&r).map_err(|e| CeleryError::Malformed {
                id: id.to_owned(),
                problem: e.to_string(),
            })
        })
        .transpose()
    }

    /// The state of task `id` (PENDING when nothing is stored).
    ///
    /// # Errors
    /// As [`result`](Self::result).
    pub async fn state(&self, id: &str) -> Result<crate::JobState, CeleryError> {
        Ok(self
            .result(id)
            .await?
            .map_or(crate::JobState::Pending, |m| m.status))
    }

    /// Waits until task `id` is ready (SUCCESS, FAILURE or REVOKED) and returns
    /// its outcome, polling every 50 ms as Celery's Redis backend does without
    /// its pub/sub.
    ///
    /// # Errors
    /// [`CeleryError::Timeout`] after `timeout`; as [`result`](Self::result).
    pub async fn wait(&self, id: &str, timeout: Duration) -> Result<TaskMeta, CeleryError> {
        let started = tokio::time::Instant::now();
        loop {
            // A Redis fault while waiting is a try that failed, not the end; a
            // result that is not Celery's JSON will not become one.
            match self.result(id).await {
                Ok(Some(meta)) if meta.status.is_terminal() => return Ok(meta),
                Err(e @ CeleryError::Malformed { .. }) => return Err(e),
                _ => {}
            }
            if started.elapsed() >= timeout {
                return Err(CeleryError::Timeout {
                    id: id.to_owned(),
                    waited: started.elapsed(),
                });
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_database_comes_from_the_url() {
        assert_eq!(super::db_of("redis://127.0.0.1:6379/3"), 3);
        assert_eq!(super::db_of("redis://:pw@h:1/0"), 0);
        assert_eq!(super::db_of("redis://h:1"), 0);
        assert_eq!(super::db_of("rediss://h:1/2?x=1"), 2);
    }
}
