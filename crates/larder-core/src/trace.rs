//! Spans around each component's work on a request, one convention for all of them.
//!
//! | span | target | fields |
//! | --- | --- | --- |
//! | `cache.lookup` | `larder::cache` | `tenant`, `module`, `outcome` (`hit`, `stale`, `miss`, `degraded`) |
//! | `ratelimit.check` | `larder::ratelimit` | `module`, `policy`, `outcome` (`allowed`, `limited`, `unavailable`) |
//! | `session.load` | `larder::session` | `tenant`, `namespace`, `outcome` (`hit`, `miss`, `unavailable`, `error`) |
//! | `jobs.enqueue` | `larder::jobs` | `tenant`, `task`, `queue`, `jobs`, `outcome` (`enqueued`, `duplicate`, `error`) |
//!
//! Every span is at `DEBUG` level, so that an app logging at `INFO` pays a static
//! check per span and nothing else; to export them (to OpenTelemetry, say), enable
//! `larder=debug` for the layer that exports. A span whose outcome was known without
//! waiting (an in-process hit, a key known to be over its limit, Redis known to be
//! out) opens and closes at once: it says that no round trip was made.
//!
//! A span never carries a key, a session id or a rate-limited value: those may be
//! secrets (an API key, a client's address).

use std::future::Future;

use tracing::{Instrument, Span};

/// Runs `work` inside `span`, then records `outcome(&result)` as the span's
/// `outcome` field (which the span must declare, as `tracing::field::Empty`).
pub async fn in_span<T, F>(span: Span, work: F, outcome: impl FnOnce(&T) -> &'static str) -> T
where
    F: Future<Output = T>,
{
    let result = work.instrument(span.clone()).await;
    if !span.is_disabled() {
        span.record("outcome", outcome(&result));
    }
    result
}

#[cfg(test)]
mod tests {
    use std::sync::{Arc, Mutex};

    use tracing::field::{Field, Visit};
    use tracing::span::{Attributes, Id, Record};
    use tracing_subscriber::layer::{Context, SubscriberExt};
    use tracing_subscriber::Layer;

    use super::*;

    #[derive(Clone, Default)]
    struct Outcomes(Arc<Mutex<Vec<String>>>);

    impl Visit for Outcomes {
        fn record_debug(&mut self, _: &Field, _: &dyn std::fmt::Debug) {}
        fn record_str(&mut self, field: &Field, value: &str) {
            if field.name() == "outcome" {
                self.0.lock().unwrap().push(value.to_owned());
            }
        }
    }

    impl<S: tracing::Subscriber> Layer<S> for Outcomes {
        fn on_new_span(&self, attrs: &Attributes<'_>, _: &Id, _: Context<'_, S>) {
            attrs.record(&mut self.clone());
        }
        fn on_record(&self, _: &Id, values: &Record<'_>, _: Context<'_, S>) {
            values.record(&mut self.clone());
        }
    }

    #[test]
    fn the_outcome_is_recorded_on_the_span_after_the_work() {
        let seen = Outcomes::default();
        let subscriber = tracing_subscriber::registry().with(seen.clone());
        let rt = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        tracing::subscriber::with_default(subscriber, || {
            let span = tracing::debug_span!("work", outcome = tracing::field::Empty);
            let n = rt.block_on(in_span(span, async { 7 }, |n| {
                if *n == 7 {
                    "seven"
                } else {
                    "other"
                }
            }));
            assert_eq!(n, 7);
        });
        assert_eq!(*seen.0.lock().unwrap(), vec!["seven".to_owned()]);
    }
}
