//! A larder worker for Celery messages, for `scripts/bench-celery`: runs
//! `bench.noop(sent_at)` (returns how long after `sent_at`, a Unix time in
//! seconds, it started) from `CELERY_BROKER_URL` until Ctrl-C or SIGTERM.
//!
//! `cargo run --release -p larder-jobs --features celery --example celery_worker`

use std::time::Duration;

use larder_jobs::celery::{Celery, CeleryWorker};
use serde_json::json;

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let concurrency = std::env::var("CONCURRENCY")
        .ok()
        .and_then(|c| c.parse().ok())
        .unwrap_or(8);
    let worker = CeleryWorker::new(Celery::from_env()?)
        .concurrency(concurrency)
        .task("bench.noop", |call| async move {
            let sent: f64 = call.arg(0)?;
            #[allow(clippy::cast_precision_loss)]
            let now = chrono::Utc::now().timestamp_micros() as f64 / 1e6;
            Ok(json!(now - sent))
        })
        .spawn();
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
    }
    worker.shutdown(Duration::from_secs(10)).await;
    Ok(())
}
