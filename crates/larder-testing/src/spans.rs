//! Captures the spans code under test opens, with their fields, for tests of what
//! larder traces (the convention of `larder_core::trace`).

use std::collections::BTreeMap;
use std::fmt;
use std::sync::{Arc, Mutex, PoisonError};

use tracing::field::{Field, Visit};
use tracing::span::{Attributes, Id, Record};
use tracing::subscriber::DefaultGuard;
use tracing_subscriber::layer::{Context, SubscriberExt};
use tracing_subscriber::registry::LookupSpan;
use tracing_subscriber::Layer;

/// A closed span: its name, target and fields (as text).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Captured {
    /// The span's name (`cache.lookup`).
    pub name: String,
    /// The span's target (`larder::cache`).
    pub target: String,
    /// Every field recorded on it, at creation or later.
    pub fields: BTreeMap<String, String>,
}

impl Captured {
    /// The field's value, or `""`.
    #[must_use]
    pub fn field(&self, name: &str) -> &str {
        self.fields.get(name).map_or("", String::as_str)
    }
}

/// The spans closed while the guard of [`capture`] was held, on this thread.
#[derive(Debug, Clone, Default)]
pub struct Spans(Arc<Mutex<Vec<Captured>>>);

impl Spans {
    /// The spans closed so far named `name`.
    #[must_use]
    pub fn named(&self, name: &str) -> Vec<Captured> {
        self.all().into_iter().filter(|s| s.name == name).collect()
    }

    /// Every span closed so far.
    #[must_use]
    pub fn all(&self) -> Vec<Captured> {
        self.0
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }
}

/// Records every span at every level on the calling thread until the guard drops
/// (a test on a current-thread runtime, or one whose requests run on its thread).
#[must_use]
pub fn capture() -> (Spans, DefaultGuard) {
    let spans = Spans::default();
    let subscriber = tracing_subscriber::registry().with(Collect(spans.clone()));
    (spans, tracing::subscriber::set_default(subscriber))
}

struct Collect(Spans);

/// The fields of an open span, kept in its extensions.
struct Fields(BTreeMap<String, String>);

impl Visit for Fields {
    fn record_str(&mut self, field: &Field, value: &str) {
        self.0.insert(field.name().to_owned(), value.to_owned());
    }

    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        self.0.insert(field.name().to_owned(), format!("{value:?}"));
    }
}

impl<S: tracing::Subscriber + for<'a> LookupSpan<'a>> Layer<S> for Collect {
    fn on_new_span(&self, attrs: &Attributes<'_>, id: &Id, ctx: Context<'_, S>) {
        let mut fields = Fields(BTreeMap::new());
        attrs.record(&mut fields);
        if let Some(span) = ctx.span(id) {
            span.extensions_mut().insert(fields);
        }
    }

    fn on_record(&self, id: &Id, values: &Record<'_>, ctx: Context<'_, S>) {
        if let Some(span) = ctx.span(id) {
            if let Some(fields) = span.extensions_mut().get_mut::<Fields>() {
                values.record(fields);
            }
        }
    }

    fn on_close(&self, id: Id, ctx: Context<'_, S>) {
        let Some(span) = ctx.span(&id) else { return };
        let fields = span
            .extensions_mut()
            .remove::<Fields>()
            .map_or_else(BTreeMap::new, |f| f.0);
        let meta = span.metadata();
        (self.0)
            .0
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .push(Captured {
                name: meta.name().to_owned(),
                target: meta.target().to_owned(),
                fields,
            });
    }
}
