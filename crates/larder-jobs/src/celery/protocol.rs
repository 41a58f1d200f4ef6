//! Celery's message protocol v2 and result format (`../shared/CELERY.md` in
//! the design notes; celery `app/amqp.py`, `backends/base.py`): serde types and
//! the few rules around them, nothing that talks to Redis.

use std::time::Duration;

use base64::Engine as _;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::{json, Map, Value};

use crate::JobState;

/// kombu's separator between a queue's name and its priority.
const PRIORITY_SEP: &str = "\x06\x16";

/// The list that holds `queue`'s messages of `priority`: the bare name for 0-2,
/// then `queue\x06\x163`, `…6`, `…9` (the largest step not above it).
pub(crate) fn priority_list(queue: &str, priority: u8) -> String {
    match priority {
        0..=2 => queue.to_owned(),
        3..=5 => format!("{queue}{PRIORITY_SEP}3"),
        6..=8 => format!("{queue}{PRIORITY_SEP}6"),
        _ => format!("{queue}{PRIORITY_SEP}9"),
    }
}

/// `queue`'s lists in the order they are served (priority 0 first).
pub(crate) fn lists_of(queue: &str) -> [String; 4] {
    [0, 3, 6, 9].map(|p| priority_list(queue, p))
}

/// The result backend's key of task `id`.
pub(crate) fn meta_key(id: &str) -> String {
    format!("celery-task-meta-{id}")
}

/// A stored outcome (`celery-task-meta-<id>`).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct TaskMeta {
    /// The state (Celery's names are larder's: PENDING, STARTED, RETRY,
    /// SUCCESS, FAILURE, REVOKED).
    pub status: JobState,
    /// The return value; for FAILURE and RETRY,
    /// `{"exc_type", "exc_message", "exc_module"}`.
    pub result: Value,
    /// The error's trace, if any.
    #[serde(default)]
    pub traceback: Option<String>,
    /// Children (always empty here).
    #[serde(default)]
    pub children: Vec<Value>,
    /// When it ended (ISO-8601 with offset).
    #[serde(default)]
    pub date_done: Option<String>,
    /// The task id.
    pub task_id: String,
}

impl TaskMeta {
    /// A meta of `status` with `result` for task `id`, done now.
    pub(crate) fn new(
        id: &str,
        status: JobState,
        result: Value,
        traceback: Option<String>,
    ) -> Self {
        Self {
            status,
            result,
            traceback,
            children: Vec::new(),
            date_done: Some(Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Micros, false)),
            task_id: id.to_owned(),
        }
    }

    /// Celery's form of an exception: `{"exc_type", "exc_message": [msg],
    /// "exc_module"}`, as `AsyncResult.get()` turns back into one.
    pub(crate) fn exception(exc_type: &str, message: &str) -> Value {
        let module = if is_builtin(exc_type) {
            "builtins"
        } else {
            "celery.exceptions"
        };
        json!({ "exc_type": exc_type, "exc_message": [message], "exc_module": module })
    }
}

/// Python's built-in exception names a Rust task may raise as itself.
fn is_builtin(name: &str) -> bool {
    matches!(
        name,
        "Exception"
            | "ValueError"
            | "TypeError"
            | "KeyError"
            | "IndexError"
            | "RuntimeError"
            | "LookupError"
            | "ArithmeticError"
            | "ZeroDivisionError"
            | "PermissionError"
            | "FileNotFoundError"
            | "TimeoutError"
            | "NotImplementedError"
            | "AssertionError"
            | "OSError"
            | "ConnectionError"
    )
}

/// Options of [`Celery::send_task`](super::Celery::send_task), as
/// `apply_async`'s.
#[derive(Debug, Clone, Default)]
pub struct SendOptions {
    pub(crate) id: Option<String>,
    pub(crate) queue: Option<String>,
    pub(crate) countdown: Option<Duration>,
    pub(crate) eta: Option<DateTime<Utc>>,
    pub(crate) expires: Option<DateTime<Utc>>,
    pub(crate) priority: Option<u8>,
    pub(crate) retries: u32,
}

impl SendOptions {
    /// No options: a fresh id, the first configured queue, now.
    #[must_use]
    pub fn new() -> Self {
        Self::default()
    }

    /// The task's id (default: a fresh UUID).
    #[must_use]
    pub fn id(mut self, id: impl Into<String>) -> Self {
        self.id = Some(id.into());
        self
    }

    /// The queue (Celery's `queue=`).
    #[must_use]
    pub fn queue(mut self, queue: impl Into<String>) -> Self {
        self.queue = Some(queue.into());
        self
    }

    /// Runs no sooner than `delay` from now (`countdown=`).
    #[must_use]
    pub fn countdown(mut self, delay: Duration) -> Self {
        self.countdown = Some(delay);
        self
    }

    /// Runs no sooner than `at` (`eta=`).
    #[must_use]
    pub fn eta(mut self, at: DateTime<Utc>) -> Self {
        self.eta = Some(at);
        self
    }

    /// Is revoked if not started by `at` (`expires=`).
    #[must_use]
    pub fn expires(mut self, at: DateTime<Utc>) -> Self {
        self.expires = Some(at);
        self
    }

    /// Priority 0-9 (`priority=`; 0 is served first, as kombu's Redis transport
    /// does).
    #[must_use]
    pub fn priority(mut self, priority: u8) -> Self {
        self.priority = Some(priority.min(9));
        self
    }

    /// The retry count the message carries (a retry's new message).
    #[must_use]
    pub(crate) fn retries(mut self, retries: u32) -> Self {
        self.retries = retries;
        self
    }
}

/// A message to send.
pub(crate) struct Outgoing {
    pub(crate) id: String,
    pub(crate) envelope: String,
}

fn iso(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(chrono::SecondsFormat::Micros, false)
}

impl Outgoing {
    /// Protocol v2, JSON, as `app.amqp.as_task_v2` builds it.
    pub(crate) fn new(
        name: &str,
        args: Vec<Value>,
        kwargs: Map<String, Value>,
        options: &SendOptions,
        queue: &str,
    ) -> Self {
        let id = options
            .id
            .clone()
            .unwrap_or_else(|| uuid::Uuid::new_v4().to_string());
        let eta = options.eta.or_else(|| {
            options
                .countdown
                .and_then(|d| chrono::Duration::from_std(d).ok())
                .map(|d| Utc::now() + d)
        });
        let argsrepr = serde_json::to_string(&args).unwrap_or_default();
        let kwargsrepr = serde_json::to_string(&kwargs).unwrap_or_default();
        let body = json!([
            args,
            kwargs,
            { "callbacks": null, "errbacks": null, "chain": null, "chord": null }
        ]);
        let body = base64::engine::general_purpose::STANDARD.encode(body.to_string());
        let envelope = json!({
            "body": body,
            "content-encoding": "utf-8",
            "content-type": "application/json",
            "headers": {
                "lang": "py",
                "task": name,
                "id": id,
                "shadow": null,
                "eta": eta.map(iso),
                "expires": options.expires.map(iso),
                "group": null,
                "group_index": null,
                "retries": options.retries,
                "timelimit": [null, null],
                "root_id": id,
                "parent_id": null,
                "argsrepr": argsrepr,
                "kwargsrepr": kwargsrepr,
                "origin": format!("larder@{}", std::process::id()),
                "ignore_result": false,
                "stamped_headers": null,
                "stamps": {},
            },
            "properties": {
                "correlation_id": id,
                "reply_to": uuid::Uuid::new_v4().to_string(),
                "delivery_mode": 2,
                "delivery_info": { "exchange": "", "routing_key": queue },
                "priority": options.priority.unwrap_or(0),
                "body_encoding": "base64",
                "delivery_tag": uuid::Uuid::new_v4().to_string(),
            },
        });
        Self {
            id,
            envelope: envelope.to_string(),
        }
    }
}

/// A message taken from a queue, decoded.
#[derive(Debug, Clone)]
pub(crate) struct Incoming {
    pub(crate) id: String,
    pub(crate) task: String,
    pub(crate) args: Vec<Value>,
    pub(crate) kwargs: Map<String, Value>,
    pub(crate) retries: u32,
    pub(crate) eta: Option<DateTime<Utc>>,
    pub(crate) expires: Option<DateTime<Utc>>,
    /// The hard time limit (`timelimit[0]`), if any.
    pub(crate) time_limit: Option<Duration>,
    pub(crate) priority: Option<u8>,
}

/// Why a message is refused; the id is known when the headers were readable.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Refused {
    pub(crate) id: Option<String>,
    pub(crate) problem: String,
}

fn refuse(id: Option<&str>, problem: impl Into<String>) -> Refused {
    Refused {
        id: id.map(str::to_owned),
        problem: problem.into(),
    }
}

/// An ISO-8601 time; one without a zone is UTC, as Celery reads it.
fn parse_time(v: &Value) -> Result<Option<DateTime<Utc>>, String> {
    let Some(s) = v.as_str() else {
        return if v.is_null() {
            Ok(None)
        } else {
            Err(format!("not a time: {v}"))
        };
    };
    if let Ok(t) = DateTime::parse_from_rfc3339(s) {
        return Ok(Some(t.with_timezone(&Utc)));
    }
    chrono::NaiveDateTime::parse_from_str(s, "%Y-%m-%dT%H:%M:%S%.f")
        .map(|t| Some(t.and_utc()))
        .map_err(|_| format!("not an ISO-8601 time: {s:?}"))
}

impl Incoming {
    /// Decodes an envelope: protocol v2, JSON body, base64 or plain.
    pub(crate) fn decode(raw: &[u8]) -> Result<Self, Refused> {
        let envelope: Value = serde_json::from_slice(raw)
            .map_err(|e| refuse(None, format!("envelope is not JSON: {e}")))?;
        let headers = envelope
            .get("headers")
            .and_then(Value::as_object)
            .ok_or_else(|| refuse(None, "no headers"))?;
        let id = headers.get("id").and_then(Value::as_str).map(str::to_owned);
        let idr = id.as_deref();
        let task = headers
            .get("task")
            .and_then(Value::as_str)
            .ok_or_else(|| refuse(idr, "not protocol v2 (no task header)"))?
            .to_owned();
        let id = id.ok_or_else(|| refuse(None, "no id header"))?;
        let idr = Some(id.as_str());
        let content_type = envelope
            .get("content-type")
            .and_then(Value::as_str)
            .unwrap_or("");
        if content_type != "application/json" {
            return Err(refuse(
                idr,
                format!("content type {content_type:?}: only application/json is accepted"),
            ));
        }
        let body = envelope
            .get("body")
            .and_then(Value::as_str)
            .ok_or_else(|| refuse(idr, "no body"))?;
        let encoding = envelope
            .pointer("/properties/body_encoding")
            .and_then(Value::as_str)
            .unwrap_or("base64");
        let body = match encoding {
            "base64" => base64::engine::general_purpose::STANDARD
                .decode(body)
                .map_err(|e| refuse(idr, format!("body is not base64: {e}")))?,
            _ => body.as_bytes().to_vec(),
        };
        let body: Value = serde_json::from_slice(&body)
            .map_err(|e| refuse(idr, format!("body is not JSON: {e}")))?;
        let (args, kwargs) = match body.as_array().map(Vec::as_slice) {
            Some([Value::Array(args), Value::Object(kwargs), ..]) => (args.clone(), kwargs.clone()),
            _ => return Err(refuse(idr, "body is not [args, kwargs, embed]")),
        };
        let retries = headers
            .get("retries")
            .and_then(Value::as_u64)
            .and_then(|r| u32::try_from(r).ok())
            .unwrap_or(0);
        let eta =
            parse_time(headers.get("eta").unwrap_or(&Value::Null)).map_err(|e| refuse(idr, e))?;
        let expires = parse_time(headers.get("expires").unwrap_or(&Value::Null))
            .map_err(|e| refuse(idr, e))?;
        let time_limit = headers
            .get("timelimit")
            .and_then(|t| t.get(0))
            .and_then(Value::as_f64)
            .filter(|s| s.is_finite() && *s > 0.0)
            .map(Duration::from_secs_f64);
        let priority = envelope
            .pointer("/properties/priority")
            .and_then(Value::as_u64)
            .and_then(|p| u8::try_from(p).ok());
        Ok(Self {
            id,
            task,
            args,
            kwargs,
            retries,
            eta,
            expires,
            time_limit,
            priority,
        })
    }
}

/// A `[envelope, exchange, routing_key]` entry of `unacked`, marked redelivered
/// for its return to the queue (kombu's `restore`). `None` when it is not one.
pub(crate) fn redelivered(entry: &[u8]) -> Option<(String, String)> {
    let mut entry: Value = serde_json::from_slice(entry).ok()?;
    let queue = entry.get(2)?.as_str()?.to_owned();
    let envelope = entry.get_mut(0)?;
    if let Some(h) = envelope.get_mut("headers").and_then(Value::as_object_mut) {
        h.insert("redelivered".into(), Value::Bool(true));
    }
    if let Some(d) = envelope
        .pointer_mut("/properties/delivery_info")
        .and_then(Value::as_object_mut)
    {
        d.insert("redelivered".into(), Value::Bool(true));
    }
    Some((queue, envelope.to_string()))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    #[test]
    fn a_sent_message_decodes_back() {
        let opts = SendOptions::new()
            .countdown(Duration::from_secs(10))
            .priority(4);
        let mut kwargs = Map::new();
        kwargs.insert("k".into(), json!("v"));
        let out = Outgoing::new("add", vec![json!(2), json!(3)], kwargs, &opts, "celery");
        let got = Incoming::decode(out.envelope.as_bytes()).unwrap();
        assert_eq!(got.id, out.id);
        assert_eq!(got.task, "add");
        assert_eq!(got.args, vec![json!(2), json!(3)]);
        assert_eq!(got.kwargs["k"], "v");
        assert!(got.eta.unwrap() > Utc::now());
        assert_eq!(got.priority, Some(4));
    }

    #[test]
    fn other_serializers_and_malformed_bodies_are_refused_with_their_id() {
        let out = Outgoing::new("t", vec![], Map::new(), &SendOptions::new(), "celery");
        let mut env: Value = serde_json::from_str(&out.envelope).unwrap();
        env["content-type"] = json!("application/x-python-serialize");
        let e = Incoming::decode(env.to_string().as_bytes()).unwrap_err();
        assert_eq!(e.id.as_deref(), Some(out.id.as_str()));
        assert!(e.problem.contains("only application/json"), "{e:?}");
        env["content-type"] = json!("application/json");
        env["body"] = json!("!!!");
        assert!(Incoming::decode(env.to_string().as_bytes())
            .unwrap_err()
            .problem
            .contains("base64"));
        env["body"] = json!(base64::engine::general_purpose::STANDARD.encode("{\"a\":1}"));
        assert!(Incoming::decode(env.to_string().as_bytes())
            .unwrap_err()
            .problem
            .contains("[args"));
        assert!(Incoming::decode(b"\xff\x00").unwrap_err().id.is_none());
    }

    #[test]
    fn times_without_a_zone_are_utc() {
        let t = parse_time(&json!("2026-12-05T10:00:00.123456"))
            .unwrap()
            .unwrap();
        assert_eq!(t.to_rfc3339(), "2026-12-05T10:00:00.123456+00:00");
        let t = parse_time(&json!("2026-12-05T11:00:00+01:00"))
            .unwrap()
            .unwrap();
        assert_eq!(t.to_rfc3339(), "2026-12-05T10:00:00+00:00");
        assert!(parse_time(&json!(5)).is_err());
    }

    #[test]
    fn priorities_map_to_kombus_lists() {
        assert_eq!(priority_list("q", 0), "q");
        assert_eq!(priority_list("q", 4), "q\x06\x163");
        assert_eq!(priority_list("q", 9), "q\x06\x169");
        assert_eq!(lists_of("q")[3], "q\x06\x169");
    }

    #[test]
    fn a_restored_delivery_is_marked_redelivered() {
        let out = Outgoing::new("t", vec![], Map::new(), &SendOptions::new(), "celery");
        let entry = format!("[{}, \"\", \"celery\"]", out.envelope);
        let (queue, env) = redelivered(entry.as_bytes()).unwrap();
        assert_eq!(queue, "celery");
        let env: Value = serde_json::from_str(&env).unwrap();
        assert_eq!(env["headers"]["redelivered"], true);
        assert_eq!(env["properties"]["delivery_info"]["redelivered"], true);
        assert!(redelivered(b"[1]").is_none());
    }
}
