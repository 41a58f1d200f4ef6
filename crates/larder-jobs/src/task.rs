//! Tasks: a stable name with typed arguments and result.

use std::fmt;
use std::marker::PhantomData;

use serde::de::DeserializeOwned;
use serde::Serialize;
use tokio_util::sync::CancellationToken;

/// A task's stable name with its argument and result types: what producers enqueue
/// and workers register. Declare it once, use it on both sides.
///
/// ```
/// use larder_jobs::TaskRef;
/// /// `send_daily_report(tenant_id) -> rows written`
/// pub const SEND_DAILY_REPORT: TaskRef<u64, u32> = TaskRef::new("send_daily_report");
/// assert_eq!(SEND_DAILY_REPORT.name(), "send_daily_report");
/// ```
pub struct TaskRef<A, O> {
    name: &'static str,
    _types: PhantomData<fn(A) -> O>,
}

impl<A, O> TaskRef<A, O> {
    /// The task named `name` (keep it stable: queued jobs refer to it).
    #[must_use]
    pub const fn new(name: &'static str) -> Self {
        Self {
            name,
            _types: PhantomData,
        }
    }

    /// The task's name.
    #[must_use]
    pub const fn name(&self) -> &'static str {
        self.name
    }
}

impl<A, O> Clone for TaskRef<A, O> {
    fn clone(&self) -> Self {
        *self
    }
}

impl<A, O> Copy for TaskRef<A, O> {}

impl<A, O> fmt::Debug for TaskRef<A, O> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("TaskRef").field(&self.name).finish()
    }
}

/// Marker for argument and result types.
pub trait Payload: Serialize + DeserializeOwned + Send + 'static {}
impl<T: Serialize + DeserializeOwned + Send + 'static> Payload for T {}

/// A task's failure.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TaskError {
    message: String,
    retry: bool,
}

impl TaskError {
    /// A failure that is retried (with backoff) while retries remain.
    #[must_use]
    pub fn retry(message: impl Into<String>) -> Self {
        Self {
            message: message.into(),
            retry: true,
        }
    }

    /// A failure that goes straight to the dead-letter set.
    #[must_use]
    pub fn fatal(message: impl Into<String>) -> Self {
        Self {
            message: message.into(),
            retry: false,
        }
    }

    /// The message.
    #[must_use]
    pub fn message(&self) -> &str {
        &self.message
    }

    /// Whether the failure may be retried.
    #[must_use]
    pub fn is_retryable(&self) -> bool {
        self.retry
    }
}

impl fmt::Display for TaskError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl<E: std::error::Error> From<E> for TaskError {
    fn from(e: E) -> Self {
        Self::retry(e.to_string())
    }
}

/// What a running task knows about its job.
#[derive(Debug, Clone)]
pub struct JobContext {
    pub(crate) id: String,
    pub(crate) tenant: Option<String>,
    pub(crate) attempt: u32,
    pub(crate) cancel: CancellationToken,
}

impl JobContext {
    /// The job's id.
    #[must_use]
    pub fn id(&self) -> &str {
        &self.id
    }

    /// The tenant the job was enqueued for.
    #[must_use]
    pub fn tenant(&self) -> Option<&str> {
        self.tenant.as_deref()
    }

    /// 1 for the first attempt, 2 for the first retry, ...
    #[must_use]
    pub fn attempt(&self) -> u32 {
        self.attempt
    }

    /// Whether the job was revoked (or the worker is shutting down past its
    /// deadline, or lost the lease): stop soon.
    #[must_use]
    pub fn is_cancelled(&self) -> bool {
        self.cancel.is_cancelled()
    }

    /// Completes when the job is cancelled (see [`is_cancelled`](Self::is_cancelled)).
    pub async fn cancelled(&self) {
        self.cancel.cancelled().await;
    }
}
