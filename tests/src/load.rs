//! The load generator: concurrent HTTP clients (Tokio tasks sharing a reqwest
//! client) that send requests until stopped and record every one.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// One request to send.
#[derive(Debug, Clone)]
pub struct Req {
    /// Which kind of route it is, for the report (`"cached"`, `"session"`, ...).
    pub route: &'static str,
    /// `GET`, `POST`, ...
    pub method: reqwest::Method,
    /// The full URL.
    pub url: String,
    /// Extra headers.
    pub headers: Vec<(&'static str, String)>,
    /// A JSON body, if any.
    pub body: Option<String>,
}

impl Req {
    /// A `GET` of `url`.
    #[must_use]
    pub fn get(route: &'static str, url: String) -> Self {
        Self {
            route,
            method: reqwest::Method::GET,
            url,
            headers: Vec::new(),
            body: None,
        }
    }

    /// A `POST` of a JSON `body` to `url`.
    #[must_use]
    pub fn post(route: &'static str, url: String, body: &str) -> Self {
        Self {
            route,
            method: reqwest::Method::POST,
            url,
            headers: vec![("content-type", "application/json".to_owned())],
            body: Some(body.to_owned()),
        }
    }

    /// With one more header.
    #[must_use]
    pub fn header(mut self, name: &'static str, value: impl Into<String>) -> Self {
        self.headers.push((name, value.into()));
        self
    }
}

/// What happened to one request.
#[derive(Debug, Clone)]
pub struct Sample {
    /// The request's route kind.
    pub route: &'static str,
    /// When it was sent, from the start of the load.
    pub sent: Duration,
    /// How long until the whole answer was read (or the client gave up).
    pub latency: Duration,
    /// The status; `None` when no answer came (connection error or the client's
    /// 10 s timeout): a lost request.
    pub status: Option<u16>,
    /// `X-Cache`, if present.
    pub x_cache: Option<String>,
    /// What the inspector found wrong with the answer, if anything.
    pub problem: Option<String>,
    /// The start of the body of a 5xx answer (to tell larder's from the app's).
    pub error_body: Option<String>,
}

/// Looks at an answer: `Some(problem)` when it is wrong (another tenant's data).
pub type Inspect = dyn Fn(&Req, u16, &[u8]) -> Option<String> + Send + Sync;
/// Makes client `c`'s `n`-th request.
pub type Make = dyn Fn(usize, u64) -> Req + Send + Sync;

/// A running load.
pub struct Load {
    started: Instant,
    stop: Arc<AtomicBool>,
    samples: Arc<Mutex<Vec<Sample>>>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl std::fmt::Debug for Load {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Load")
            .field("clients", &self.tasks.len())
            .finish_non_exhaustive()
    }
}

impl Load {
    /// Starts `clients` clients, each sending `make(client, n)` for n = 0, 1, ...
    /// back to back, with every answer looked at by `inspect`.
    #[must_use]
    pub fn start(
        http: &reqwest::Client,
        clients: usize,
        make: Arc<Make>,
        inspect: Arc<Inspect>,
    ) -> Self {
        let started = Instant::now();
        let stop = Arc::new(AtomicBool::new(false));
        let samples = Arc::new(Mutex::new(Vec::new()));
        let tasks = (0..clients)
            .map(|c| {
                let (http, make, inspect) = (http.clone(), Arc::clone(&make), Arc::clone(&inspect));
                let (stop, samples) = (Arc::clone(&stop), Arc::clone(&samples));
                tokio::spawn(async move {
                    let mut n = 0;
                    while !stop.load(Ordering::Relaxed) {
                        let req = make(c, n);
                        n += 1;
                        let sample = send(&http, started, &req, &*inspect).await;
                        samples
                            .lock()
                            .unwrap_or_else(std::sync::PoisonError::into_inner)
                            .push(sample);
                    }
                })
            })
            .collect();
        Self {
            started,
            stop,
            samples,
            tasks,
        }
    }

    /// The time since the load started (to mark a fault's window).
    #[must_use]
    pub fn now(&self) -> Duration {
        self.started.elapsed()
    }

    /// The samples recorded so far.
    #[must_use]
    pub fn samples(&self) -> Vec<Sample> {
        self.samples
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone()
    }

    /// Stops the clients (each finishes its request in flight) and returns every
    /// sample.
    pub async fn stop(self) -> Vec<Sample> {
        self.stop.store(true, Ordering::Relaxed);
        for t in self.tasks {
            let _ = t.await;
        }
        let samples = self
            .samples
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        samples.clone()
    }
}

async fn send(http: &reqwest::Client, started: Instant, req: &Req, inspect: &Inspect) -> Sample {
    let sent = started.elapsed();
    let at = Instant::now();
    let mut builder = http.request(req.method.clone(), &req.url);
    for (k, v) in &req.headers {
        builder = builder.header(*k, v);
    }
    if let Some(body) = &req.body {
        builder = builder.body(body.clone());
    }
    let answer = match builder.send().await {
        Ok(r) => {
            let status = r.status().as_u16();
            let x_cache = r
                .headers()
                .get("x-cache")
                .and_then(|v| v.to_str().ok())
                .map(str::to_owned);
            r.bytes().await.ok().map(|b| (status, x_cache, b))
        }
        Err(_) => None,
    };
    let latency = at.elapsed();
    match answer {
        Some((status, x_cache, body)) => Sample {
            route: req.route,
            sent,
            latency,
            status: Some(status),
            x_cache,
            problem: inspect(req, status, &body),
            error_body: (status >= 500)
                .then(|| String::from_utf8_lossy(&body[..body.len().min(200)]).into_owned()),
        },
        None => Sample {
            route: req.route,
            sent,
            latency,
            status: None,
            x_cache: None,
            problem: None,
            error_body: None,
        },
    }
}

/// Figures over a set of samples.
#[derive(Debug, Clone, Default)]
pub struct Summary {
    /// Requests.
    pub requests: usize,
    /// Answers by status (`(200, 5123)`), ascending.
    pub by_status: Vec<(u16, usize)>,
    /// Requests with no answer.
    pub lost: usize,
    /// The 99th percentile latency.
    pub p99: Duration,
    /// The slowest.
    pub worst: Duration,
    /// Answers the inspector found wrong.
    pub problems: usize,
}

impl Summary {
    /// The figures of `samples`.
    #[must_use]
    pub fn of<'a>(samples: impl IntoIterator<Item = &'a Sample>) -> Self {
        let samples: Vec<&Sample> = samples.into_iter().collect();
        let mut latencies: Vec<Duration> = samples.iter().map(|s| s.latency).collect();
        latencies.sort_unstable();
        let mut by_status = std::collections::BTreeMap::new();
        for s in &samples {
            if let Some(st) = s.status {
                *by_status.entry(st).or_insert(0) += 1;
            }
        }
        let pick = |q: f64| {
            if latencies.is_empty() {
                Duration::ZERO
            } else {
                // Nearest rank.
                #[allow(
                    clippy::cast_possible_truncation,
                    clippy::cast_sign_loss,
                    clippy::cast_precision_loss
                )]
                let rank = ((q * latencies.len() as f64).ceil() as usize).clamp(1, latencies.len());
                latencies[rank - 1]
            }
        };
        Self {
            requests: samples.len(),
            by_status: by_status.into_iter().collect(),
            lost: samples.iter().filter(|s| s.status.is_none()).count(),
            p99: pick(0.99),
            worst: latencies.last().copied().unwrap_or_default(),
            problems: samples.iter().filter(|s| s.problem.is_some()).count(),
        }
    }

    /// `200×5123 503×12` (for reports).
    #[must_use]
    pub fn statuses(&self) -> String {
        let mut out: Vec<String> = self
            .by_status
            .iter()
            .map(|(s, n)| format!("{s}×{n}"))
            .collect();
        if self.lost > 0 {
            out.push(format!("lost×{}", self.lost));
        }
        out.join(" ")
    }
}
