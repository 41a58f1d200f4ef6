//! Errors of the job queue.

/// Why a queue operation failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum JobError {
    /// Redis is configured but cannot be used: the job was not enqueued (never
    /// silently dropped) — retry or report.
    #[error("job queue unavailable: {0}")]
    Unavailable(#[source] larder_core::Error),
    /// The jobs' Redis is unsafe for jobs and the queue refuses to use it: its
    /// `maxmemory-policy` evicts any key (see [`crate::JobsConfig::allow_eviction`]).
    /// Nothing was written.
    #[error("job queue refused: {0}")]
    UnsafeRedis(String),
    /// The job was enqueued on the primary, but fewer replicas than required
    /// confirmed it in time ([`crate::JobsConfig::wait_for_replicas`]): it is
    /// queued, and may be lost if the primary fails before a replica has it.
    #[error("job queue: enqueued, but only {acked} of {wanted} replicas confirmed it within {waited:?}; it may be lost if the primary fails now")]
    NotReplicated {
        /// Replicas that confirmed the write.
        acked: u32,
        /// Replicas required.
        wanted: u32,
        /// How long the queue waited.
        waited: std::time::Duration,
    },
    /// Redis answered with an error or an unexpected reply.
    #[error("job queue error: {0}")]
    Backend(#[source] larder_core::Error),
    /// The arguments or result could not be encoded or decoded.
    #[error("job payload: {0}")]
    Payload(String),
    /// An option is invalid (queue name, priority, id).
    #[error("invalid job option: {0}")]
    Invalid(String),
    /// No such job (or its result expired).
    #[error("no job {0}")]
    NotFound(String),
    /// Waiting for a result timed out.
    #[error("job {id} did not finish within {waited:?} (state {state})")]
    WaitTimeout {
        /// The job.
        id: String,
        /// How long the caller waited.
        waited: std::time::Duration,
        /// Its state when the wait ended.
        state: crate::JobState,
    },
    /// The job finished without a result.
    #[error("job {id} ended {state}: {error}")]
    Failed {
        /// The job.
        id: String,
        /// `FAILURE` or `REVOKED`.
        state: crate::JobState,
        /// The error it recorded.
        error: String,
    },
}

impl JobError {
    pub(crate) fn from_core(e: larder_core::Error) -> Self {
        if e.is_backend_fault() {
            Self::Unavailable(e)
        } else {
            Self::Backend(e)
        }
    }
}
