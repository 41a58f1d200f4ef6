//! Run with: `cargo run -p example-axum-balance` (no Redis, no database server
//! needed; `REDIS_URL` switches to Redis). Flags: `--web-only`, `--worker-only`.
//! See the README's quick start for a tour.

use std::net::SocketAddr;
use std::time::Duration;

use example_stock_domain::{shutdown_signal, Role, Stock};

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
    let shutdown = shutdown_signal();
    // Kept to the end of `main`: dropping it sends the spans still buffered.
    let _otel = example_stock_domain::init_logging()?;
    // Before anything records a metric: those recorded earlier are not kept.
    let _ = example_stock_domain::prometheus();
    let role = Role::from_args(std::env::args().skip(1))?;
    let stock = Stock::from_env()?;
    let worker = (role != Role::Web).then(|| stock.worker().spawn());
    // With CELERY_BROKER_URL, the worker also runs the Python app's Celery messages.
    let celery = match stock.celery_worker()? {
        Some(w) if role != Role::Web => Some(w.spawn()),
        _ => None,
    };
    if role == Role::Worker {
        tracing::info!("worker only: running jobs until Ctrl-C or SIGTERM");
        shutdown.await;
    } else {
        let listener = tokio::net::TcpListener::bind(("0.0.0.0", stock.settings.port)).await?;
        tracing::info!("listening on http://{}", listener.local_addr()?);
        let app = example_axum_balance::router(stock.clone());
        // The peer address is what per-IP limits count by.
        axum::serve(
            listener,
            app.into_make_service_with_connect_info::<SocketAddr>(),
        )
        .with_graceful_shutdown(shutdown)
        .await?;
    }
    if let Some(worker) = worker {
        worker.shutdown(Duration::from_secs(30)).await;
    }
    if let Some(celery) = celery {
        celery.shutdown(Duration::from_secs(30)).await;
    }
    Ok(())
}
