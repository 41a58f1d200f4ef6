//! Job states and what a status query returns.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

/// A job's state (Celery's names).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum JobState {
    /// Queued or delayed, waiting for a worker.
    Pending,
    /// Fetched by a worker (leased), not yet started.
    Received,
    /// Running.
    Started,
    /// Failed, waiting for its next attempt.
    Retry,
    /// Finished; the result is stored.
    Success,
    /// Failed for good; the job is in the dead-letter set with its error.
    Failure,
    /// Revoked (or expired) before it could finish.
    Revoked,
}

impl JobState {
    /// The state's name (`"PENDING"`, ...).
    #[must_use]
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Pending => "PENDING",
            Self::Received => "RECEIVED",
            Self::Started => "STARTED",
            Self::Retry => "RETRY",
            Self::Success => "SUCCESS",
            Self::Failure => "FAILURE",
            Self::Revoked => "REVOKED",
        }
    }

    /// Whether the job is finished (success, failure or revoked).
    #[must_use]
    pub fn is_terminal(self) -> bool {
        matches!(self, Self::Success | Self::Failure | Self::Revoked)
    }
}

impl fmt::Display for JobState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for JobState {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Ok(match s {
            "PENDING" => Self::Pending,
            "RECEIVED" => Self::Received,
            "STARTED" => Self::Started,
            "RETRY" => Self::Retry,
            "SUCCESS" => Self::Success,
            "FAILURE" => Self::Failure,
            "REVOKED" => Self::Revoked,
            other => return Err(format!("unknown job state {other:?}")),
        })
    }
}

/// A job as a status query sees it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct JobStatus {
    /// The job's id.
    pub id: String,
    /// The task's name.
    pub task: String,
    /// The state.
    pub state: JobState,
    /// The tenant, if any.
    pub tenant: Option<String>,
    /// Failed attempts so far.
    pub attempts: u32,
    /// The result (JSON), once `SUCCESS`.
    pub result: Option<serde_json::Value>,
    /// The last error, after a failure.
    pub error: Option<String>,
}
