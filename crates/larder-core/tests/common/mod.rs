//! Shared helpers for larder-core's integration tests.

#![allow(dead_code, unreachable_pub, clippy::unwrap_used)]

use std::io;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use larder_core::{Config, ConfigBuilder, Handle};
use larder_testing::{Redis, RedisServer};

/// A handle on `server` with a short deadline and cool-down, so fault tests are quick.
pub fn handle_for(server: &RedisServer) -> Handle {
    handle_for_url(&server.url())
}

pub fn handle_for_url(url: &str) -> Handle {
    quick(Config::builder().redis_url(url))
}

/// The same quick handle on any topology, configured from its variables as an
/// operator would.
pub fn handle_on(redis: &Redis) -> Handle {
    quick(ConfigBuilder::from_config(
        Config::from_vars(redis.vars()).expect("the topology's variables"),
    ))
}

fn quick(builder: ConfigBuilder) -> Handle {
    let config = builder
        .key_prefix("t")
        .op_timeout(Duration::from_millis(100))
        .connect_timeout(Duration::from_millis(500))
        .breaker_threshold(3)
        .breaker_cooldown(Duration::from_millis(200))
        .build()
        .expect("valid test config");
    Handle::new(config).expect("handle")
}

/// Calls `f` until it returns `Some`, every 50 ms, for at most `limit`.
pub async fn eventually<T, F, Fut>(limit: Duration, mut f: F) -> Option<T>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = tokio::time::Instant::now() + limit;
    loop {
        if let Some(v) = f().await {
            return Some(v);
        }
        if tokio::time::Instant::now() > deadline {
            return None;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Captures every log line emitted on this thread while the guard lives.
#[derive(Clone, Default)]
pub struct LogCapture(Arc<Mutex<Vec<u8>>>);

impl LogCapture {
    pub fn install(&self) -> tracing::subscriber::DefaultGuard {
        let subscriber = tracing_subscriber::fmt()
            .with_max_level(tracing::Level::TRACE)
            .with_writer(self.clone())
            .with_ansi(false)
            .finish();
        tracing::subscriber::set_default(subscriber)
    }

    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.0.lock().unwrap()).into_owned()
    }
}

impl io::Write for LogCapture {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl<'a> tracing_subscriber::fmt::MakeWriter<'a> for LogCapture {
    type Writer = LogCapture;
    fn make_writer(&'a self) -> Self::Writer {
        self.clone()
    }
}
