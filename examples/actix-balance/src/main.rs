//! Run with: `cargo run -p example-actix-balance` (no Redis, no database server
//! needed; `REDIS_URL` switches to Redis). Flags: `--web-only`, `--worker-only`.
//! `SESSION_KEY` (64 bytes or more) signs and encrypts the session cookie; with
//! Redis it is required (sessions belong to the deployment: every instance and
//! every restart must read the same cookies), `SESSION_KEY_PREVIOUS` is still read
//! during a rotation, and `ALLOW_RANDOM_SESSION_KEY=true` is the development way
//! out.

use std::time::Duration;

use actix_web::HttpServer;
use example_actix_balance::CookieKeys;
use example_stock_domain::{shutdown_signal, Role, Stock};

#[actix_web::main]
async fn main() -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
    let shutdown = shutdown_signal();
    // Kept to the end of `main`: dropping it sends the spans still buffered.
    let _otel = example_stock_domain::init_logging()?;
    // Before anything records a metric: those recorded earlier are not kept.
    let _ = example_stock_domain::prometheus();
    let role = Role::from_args(std::env::args().skip(1))?;
    let stock = Stock::from_env()?;
    let keys = example_stock_domain::session_keys(stock.handle.topology().is_some())?;
    let keys = CookieKeys::new(keys.as_ref());
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
        let port = stock.settings.port;
        let app_stock = stock.clone();
        // The server stops on the same signals as the worker, through the handlers
        // installed first thing above (actix's own would only be installed by
        // `run`, and a SIGTERM before then would be lost).
        let server =
            HttpServer::new(move || example_actix_balance::app(app_stock.clone(), keys.clone()))
                .disable_signals()
                .bind(("0.0.0.0", port))?
                .run();
        let handle = server.handle();
        actix_web::rt::spawn(async move {
            shutdown.await;
            handle.stop(true).await;
        });
        tracing::info!("listening on http://0.0.0.0:{port}");
        server.await?;
    }
    if let Some(worker) = worker {
        worker.shutdown(Duration::from_secs(30)).await;
    }
    if let Some(celery) = celery {
        celery.shutdown(Duration::from_secs(30)).await;
    }
    Ok(())
}
