//! Errors shared by every larder component.
//!
//! Backend faults (Redis is unavailable, slow or refused the command) and data faults
//! (a stored value does not decode, a key part is invalid) are separate variants, so a
//! caller can fail open on the first kind and treat the second as a miss.

use std::fmt;
use std::time::Duration;

use crate::codec::CodecError;
use crate::keyspace::KeyError;

/// The error type of every guarded Redis operation and of the handle's constructors.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// Redis cannot be used right now; no network I/O was attempted.
    ///
    /// Returned at once while the circuit breaker is open, or when no `REDIS_URL` is
    /// configured at all. Components answer with their degraded behaviour.
    #[error("redis unavailable: {reason}")]
    Unavailable {
        /// Why the call was not attempted.
        reason: UnavailableReason,
    },
    /// The operation did not finish within its deadline.
    #[error("redis operation `{op}` exceeded its deadline of {deadline:?}")]
    Timeout {
        /// The operation's name, as given to the guard.
        op: &'static str,
        /// The deadline that elapsed.
        deadline: Duration,
    },
    /// Redis (or the connection to it) reported an error.
    #[error("redis operation `{op}` failed: {source}")]
    Backend {
        /// The operation's name, as given to the guard.
        op: &'static str,
        /// The redacted backend error.
        #[source]
        source: BackendError,
    },
    /// A stored value could not be decoded (a data fault: treat it as a miss).
    #[error(transparent)]
    Decode(#[from] CodecError),
    /// A tenant, module or key part was rejected.
    #[error(transparent)]
    Key(#[from] KeyError),
    /// The configuration is invalid.
    #[error(transparent)]
    Config(#[from] ConfigError),
}

impl Error {
    /// True for faults of the backend (unavailable, timeout, connection or server
    /// error): the cases where a component applies its degraded behaviour.
    #[must_use]
    pub fn is_backend_fault(&self) -> bool {
        matches!(
            self,
            Self::Unavailable { .. } | Self::Timeout { .. } | Self::Backend { .. }
        )
    }

    /// True for data faults (a value that does not decode, an invalid key part).
    #[must_use]
    pub fn is_data_fault(&self) -> bool {
        matches!(self, Self::Decode(_) | Self::Key(_))
    }

    /// A short, stable name for the error's kind, for logs, metrics and health reports.
    #[must_use]
    pub fn kind(&self) -> &'static str {
        match self {
            Self::Unavailable {
                reason: UnavailableReason::BreakerOpen,
            } => "breaker_open",
            Self::Unavailable {
                reason: UnavailableReason::NotConfigured,
            } => "not_configured",
            Self::Timeout { .. } => "timeout",
            Self::Backend { source, .. } => source.kind().as_str(),
            Self::Decode(_) => "decode",
            Self::Key(_) => "key",
            Self::Config(_) => "config",
        }
    }
}

/// Why a call was refused without touching the network.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum UnavailableReason {
    /// The circuit breaker is open after consecutive failures.
    BreakerOpen,
    /// No Redis URL is configured: the component runs on its in-process tier.
    NotConfigured,
}

impl fmt::Display for UnavailableReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::BreakerOpen => "circuit breaker is open",
            Self::NotConfigured => "no redis url configured",
        })
    }
}

/// The class of a backend error, derived from redis-rs's classification.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum BackendErrorKind {
    /// The connection could not be established (refused, DNS, TLS handshake).
    Connect,
    /// An established connection broke.
    ConnectionDropped,
    /// Authentication failed (wrong password or user).
    Auth,
    /// The server answered the command with an error (WRONGTYPE, script error, ...).
    /// The server is reachable: this does not count against the circuit breaker.
    Command,
    /// The server is loading, busy or read-only, or another transient condition.
    Server,
    /// A response could not be parsed into the requested type.
    Response,
}

impl BackendErrorKind {
    /// A short, stable name.
    #[must_use]
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Connect => "connect",
            Self::ConnectionDropped => "connection_dropped",
            Self::Auth => "auth",
            Self::Command => "command",
            Self::Server => "server",
            Self::Response => "response",
        }
    }

    /// Whether this kind says the backend is unhealthy (counts against the breaker).
    #[must_use]
    pub fn is_fault(self) -> bool {
        !matches!(self, Self::Command | Self::Response)
    }
}

/// A redis-rs error with every secret scrubbed from its message.
///
/// The original error is not kept as a `source()`: its rendering is not under our
/// control and may carry connection details. What it said is kept, redacted, in
/// [`message`](Self::message), and its class in [`kind`](Self::kind).
#[derive(Debug, Clone)]
pub struct BackendError {
    kind: BackendErrorKind,
    code: Option<String>,
    message: String,
}

impl BackendError {
    /// Classifies and redacts a redis-rs error. `secrets` are removed from the text.
    pub(crate) fn from_redis(err: &redis::RedisError, secrets: &[&str]) -> Self {
        let kind = classify(err);
        let mut message = err.to_string();
        for secret in secrets.iter().filter(|s| !s.is_empty()) {
            message = message.replace(secret, "***");
        }
        Self {
            kind,
            code: err.code().map(str::to_owned),
            message,
        }
    }

    /// The error's class.
    #[must_use]
    pub fn kind(&self) -> BackendErrorKind {
        self.kind
    }

    /// The server's error code (`WRONGTYPE`, `NOSCRIPT`, `WRONGPASS`, ...), if any.
    #[must_use]
    pub fn code(&self) -> Option<&str> {
        self.code.as_deref()
    }

    /// The redacted message.
    #[must_use]
    pub fn message(&self) -> &str {
        &self.message
    }
}

impl fmt::Display for BackendError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} error: {}", self.kind.as_str(), self.message)
    }
}

impl std::error::Error for BackendError {}

fn classify(err: &redis::RedisError) -> BackendErrorKind {
    use redis::{ErrorKind, ServerErrorKind};
    if err.is_connection_refusal() {
        return BackendErrorKind::Connect;
    }
    if err.is_connection_dropped() {
        return BackendErrorKind::ConnectionDropped;
    }
    if matches!(err.code(), Some("NOAUTH" | "WRONGPASS")) {
        return BackendErrorKind::Auth;
    }
    match err.kind() {
        ErrorKind::AuthenticationFailed => BackendErrorKind::Auth,
        ErrorKind::Io | ErrorKind::Client | ErrorKind::InvalidClientConfig => {
            BackendErrorKind::Connect
        }
        ErrorKind::UnexpectedReturnType | ErrorKind::Parse => BackendErrorKind::Response,
        ErrorKind::Server(
            ServerErrorKind::BusyLoading
            | ServerErrorKind::TryAgain
            | ServerErrorKind::ClusterDown
            | ServerErrorKind::MasterDown
            | ServerErrorKind::ReadOnly,
        ) => BackendErrorKind::Server,
        ErrorKind::Server(_) | ErrorKind::Extension => BackendErrorKind::Command,
        _ => BackendErrorKind::Server,
    }
}

/// A configuration value was rejected.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ConfigError {
    /// An environment variable (or builder value) holds a bad value.
    #[error("{var}: {problem}")]
    Invalid {
        /// The variable's name (`CACHE_DEFAULT_TTL`) or the builder method.
        var: String,
        /// What is wrong, without echoing secrets.
        problem: String,
    },
}

impl ConfigError {
    /// The error for variable `var` whose value has `problem`.
    pub fn invalid(var: impl Into<String>, problem: impl Into<String>) -> Self {
        Self::Invalid {
            var: var.into(),
            problem: problem.into(),
        }
    }
}
