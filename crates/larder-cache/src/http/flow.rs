//! The serve-or-fetch flow shared by the adapters.
//!
//! ```text
//! in the adapter's call, without waiting:
//! start(plan) ──▶ Serve(cached)        fresh hit on an in-process tier
//!            ├──▶ Fetch(ticket)        miss led at once (Redis out, in-process store)
//!            └──▶ Later(found?)
//! in its boxed future:
//! begin(plan, found?) ──▶ Serve(cached)    fresh hit, coalesced miss, or stale (SWR)
//!                    └──▶ Fetch(ticket)
//! Fetch(ticket) ──origin──▶ finish(ticket, response)   store and wake followers
//! ```

use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, LazyLock};
use std::time::Duration;

use bytes::Bytes;
use larder_core::future::MaybeReady;

use super::{LookupPlan, ResponseCache, Servable, Storable, StoredResponse};
use crate::entry::CorruptEntry;
use crate::fill::Step;
use crate::flight::Role;
use crate::local::Entry;
use crate::service::Found;

/// `X-Cache` values.
pub(crate) mod x_cache {
    pub(crate) const HIT: &str = "HIT";
    pub(crate) const MISS: &str = "MISS";
    pub(crate) const STALE: &str = "STALE";
    pub(crate) const BYPASS: &str = "BYPASS";
}

/// A response to give from the cache.
#[derive(Debug)]
pub(crate) struct Cached {
    pub(crate) stored: Arc<Servable>,
    pub(crate) x_cache: &'static str,
    pub(crate) age_secs: u64,
    /// The request's `If-None-Match` matched: answer 304 without a body.
    pub(crate) not_modified: bool,
    /// A `HEAD` request: no body.
    pub(crate) head: bool,
}

/// The body of a response given from the cache.
pub(crate) enum CachedBody {
    /// No body (304).
    Empty,
    /// No body, but `Content-Length` of the stored one (`HEAD`).
    HeadOf(usize),
    /// The stored body.
    Full(Bytes),
}

impl Cached {
    /// The status: 304 when the request's `If-None-Match` matched, else the stored one.
    pub(crate) fn status(&self) -> u16 {
        if self.not_modified {
            304
        } else {
            self.stored.status
        }
    }

    /// The body to send.
    pub(crate) fn body(&self) -> CachedBody {
        if self.not_modified {
            CachedBody::Empty
        } else if self.head {
            CachedBody::HeadOf(self.stored.body.len())
        } else {
            CachedBody::Full(self.stored.body.clone())
        }
    }
}

/// An `Age` value in either framework's header type, given its constructor from
/// static text. The ages of the first ten minutes are formatted once, so a hit
/// builds its value from static text instead of formatting and allocating it.
pub(crate) fn age_value<V: From<u64>>(secs: u64, from_static: fn(&'static str) -> V) -> V {
    static AGES: LazyLock<Vec<String>> =
        LazyLock::new(|| (0..600u64).map(|s| s.to_string()).collect());
    usize::try_from(secs)
        .ok()
        .and_then(|i| AGES.get(i))
        .map_or_else(|| V::from(secs), |text| from_static(text))
}

/// The fill ticket of a response: the stale entry it keeps for stale-if-error is
/// the entry's age and response.
pub(crate) type Ticket = crate::fill::Ticket<(u64, Arc<Servable>)>;

/// What to do next.
pub(crate) enum Begin {
    /// Answer from the cache. With `refresh`, also refresh the entry in the
    /// background (stale-while-revalidate): run the origin, then `finish`.
    Serve(Cached, Option<Ticket>),
    /// Call the origin, then [`ResponseCache::finish`].
    Fetch(Ticket),
}

/// The origin's response as the flow judges it.
pub(crate) struct OriginHead<'a> {
    /// Its status code.
    pub(crate) status: u16,
    /// The body's length, when known before reading it.
    pub(crate) len: Option<u64>,
    /// A header's field value ([`field_value`](super::field_value)).
    pub(crate) header: &'a dyn Fn(&str) -> Option<Vec<u8>>,
}

/// What the adapter does with the origin's response ([`ResponseCache::after_origin`]).
pub(crate) enum After {
    /// Send this stale copy instead (stale-if-error).
    Stale(Cached),
    /// Send the origin's response (or error) as it is: nothing is stored.
    Send,
    /// Read the body up to [`ResponseCache::body_limit`], then
    /// [`store`](ResponseCache::store) it for this long (or, over the limit,
    /// [`not_stored`](ResponseCache::not_stored)).
    Store(Duration),
}

/// How to answer the request whose response was stored.
pub(crate) struct Kept {
    /// The stored response's `ETag` (computed when the origin gave none).
    pub(crate) etag: Option<Vec<u8>>,
    /// The request's `If-None-Match` matched it: answer 304 without a body.
    pub(crate) not_modified: bool,
}

/// What the adapter's `call` settled ([`ResponseCache::start`]).
pub(crate) enum Start {
    /// Answer from the cache now.
    Serve(Cached),
    /// Call the origin, then [`ResponseCache::finish`].
    Fetch(Ticket),
    /// Go on with [`ResponseCache::begin`], with the look-up's outcome if it is known.
    Later(Option<Found>),
}

/// A look-up's entry, judged for one request.
enum Judged {
    /// Fresh: serve it.
    Fresh(Cached),
    /// Stale (or the request revalidates): its age and response, for
    /// stale-while-revalidate and stale-if-error.
    Stale(u64, Arc<Servable>),
    /// It does not decode: delete it.
    Corrupt(CorruptEntry),
    /// No entry.
    Absent,
}

/// An entry's stored response: decoded once per entry, then shared by the entry's
/// later hits (an in-process tier's entries live on between requests).
fn decode(entry: &Entry) -> Result<Arc<Servable>, CorruptEntry> {
    let memo = entry.response();
    if let Some(done) = memo.get() {
        return Ok(Arc::clone(done));
    }
    let stored = Arc::new(Servable::new(StoredResponse::decode(&entry.payload)?));
    // A concurrent hit may have set it first: both decoded the same bytes.
    let _ = memo.set(Arc::clone(&stored));
    Ok(stored)
}

/// A stored response handed over by the flight's leader.
fn decode_payload(payload: &Bytes) -> Result<Arc<Servable>, CorruptEntry> {
    StoredResponse::decode(payload).map(|s| Arc::new(Servable::new(s)))
}

impl ResponseCache {
    /// What the adapter's `call` can settle without waiting, so that only what must
    /// wait is boxed: a fresh hit on an in-process tier (served from `call`), or a
    /// miss it may fetch at once as its key's leader (Redis out, or the in-process
    /// store, and no lease to take). Otherwise [`begin`](Self::begin) goes on with
    /// what was found.
    pub(crate) fn start(&self, plan: &LookupPlan) -> Start {
        let Some(found) = self.cache.lookup_now(&plan.tenant, &plan.keys) else {
            return Start::Later(None);
        };
        match self.judge(plan, &found) {
            Judged::Fresh(cached) => return Start::Serve(cached),
            Judged::Absent if !self.cache.leases(&found) => {
                if let Role::Leader(leader) = self.cache.flights().join(&plan.keys.entry) {
                    return Start::Fetch(Ticket::leading(leader, found.into_markers()));
                }
                // A follower waits, in `begin` (which joins again).
            }
            _ => {}
        }
        Start::Later(Some(found))
    }

    /// Looks the plan's entry up (unless [`start`](Self::start) found it) and says
    /// whether to serve it or call the origin.
    pub(crate) async fn begin(&self, plan: &LookupPlan, found: Option<Found>) -> Begin {
        let found = match found {
            Some(found) => found,
            None => self.cache.lookup_redis(&plan.tenant, &plan.keys).await,
        };
        let stale = match self.judge(plan, &found) {
            Judged::Fresh(cached) => return Begin::Serve(cached, None),
            Judged::Stale(age, stored) => Some((age, stored)),
            Judged::Corrupt(e) => {
                Box::pin(self.cache.corrupt(&plan.keys, &e.to_string())).await;
                None
            }
            Judged::Absent => None,
        };
        // Boxed apart: a hit never gets here, and this part's state (the lease, the
        // wait for a leader) would otherwise make every look-up's future larger.
        Box::pin(self.begin_miss(plan, found, stale)).await
    }

    /// What a look-up's entry is worth to this request.
    fn judge(&self, plan: &LookupPlan, found: &Found) -> Judged {
        let Some(entry) = &found.entry else {
            return Judged::Absent;
        };
        let age = entry.meta.age_secs(found.now);
        match decode(entry) {
            Ok(stored) if entry.meta.is_fresh_at(found.now) && !plan.revalidate => {
                Judged::Fresh(self.cached(plan, stored, age, x_cache::HIT))
            }
            Ok(stored) => Judged::Stale(age, stored),
            Err(e) => Judged::Corrupt(e),
        }
    }

    /// The rest of [`begin`](Self::begin) when no fresh entry was found: the fill
    /// protocol ([`crate::fill`]), shared with `Cache::get_or_set`.
    async fn begin_miss(
        &self,
        plan: &LookupPlan,
        found: Found,
        stale: Option<(u64, Arc<Servable>)>,
    ) -> Begin {
        let swr = self.config.stale_while_revalidate && !plan.revalidate;
        // A response another request stored is as old as its fill: served with age 0.
        let decode = |payload: &Bytes| decode_payload(payload).ok().map(|stored| (0, stored));
        match self.cache.fill(&plan.keys, found, stale, swr, decode).await {
            Step::Filled((age, stored)) => {
                Begin::Serve(self.cached(plan, stored, age, x_cache::HIT), None)
            }
            Step::Stale((age, stored), refresh) => {
                Begin::Serve(self.cached(plan, stored, age, x_cache::STALE), refresh)
            }
            Step::Fetch(ticket) => Begin::Fetch(ticket),
        }
    }

    /// The miss sequence once the origin answered (`head`; `None`: it failed):
    /// stale-if-error, pass-through, then whether the response may be stored.
    /// Unless it says [`After::Store`], the adapter ends the ticket with
    /// [`finish`](Self::finish) and no fill.
    pub(crate) fn after_origin(
        &self,
        plan: &LookupPlan,
        ticket: &mut Ticket,
        head: Option<OriginHead<'_>>,
    ) -> After {
        if head.as_ref().is_none_or(|head| head.status >= 500) {
            if let Some((age, stored)) = ticket.take_stale() {
                tracing::debug!(target: "larder::cache", module = %plan.module, key = %plan.keys.entry, "origin failed: serving stale");
                return After::Stale(self.cached(plan, stored, age, x_cache::STALE));
            }
        }
        let Some(head) = head else {
            return After::Send;
        };
        if ticket.pass_through() {
            return After::Send;
        }
        let reason = match self.storable(plan, head.status, head.header) {
            Storable::Yes(_) if head.len.is_some_and(|len| len > self.body_limit() as u64) => {
                "body over the limit"
            }
            Storable::Yes(ttl) => return After::Store(ttl),
            Storable::No(reason) => reason,
        };
        tracing::debug!(target: "larder::cache", module = %plan.module, key = %plan.key, reason, "cache MISS, not stored");
        After::Send
    }

    /// Stores a response whose body the adapter read whole (within
    /// [`body_limit`](Self::body_limit)) after [`After::Store`], and hands it to the
    /// key's followers. Says how to answer this request.
    pub(crate) async fn store(
        &self,
        plan: &LookupPlan,
        ticket: Ticket,
        ttl: Duration,
        response: StoredResponse,
    ) -> Kept {
        tracing::debug!(target: "larder::cache", tenant = %plan.tenant, module = %plan.module, key = %plan.key, "cache MISS");
        let etag = response.etag().map(<[u8]>::to_vec);
        let not_modified = plan.not_modified_by(etag.as_deref());
        self.finish(plan, ticket, Some((response, ttl))).await;
        Kept { etag, not_modified }
    }

    /// Ends a ticket after [`After::Store`] when the body was not stored after all
    /// (over the limit, or it failed).
    pub(crate) async fn not_stored(&self, plan: &LookupPlan, ticket: Ticket, reason: &'static str) {
        tracing::debug!(target: "larder::cache", module = %plan.module, key = %plan.key, reason, "cache MISS, not stored");
        self.finish(plan, ticket, None).await;
    }

    /// Stores the origin's response (when given) and hands it to waiting followers.
    /// Without a fill or a lease to release this is done at once; otherwise boxed:
    /// the store's calls would make the adapters' miss futures (which hold this at
    /// several points) larger by their size.
    pub(crate) fn finish<'a>(
        &'a self,
        plan: &'a LookupPlan,
        ticket: Ticket,
        fill: Option<(StoredResponse, Duration)>,
    ) -> MaybeReady<Pin<Box<dyn Future<Output = ()> + Send + 'a>>, ()> {
        let ticket = match fill {
            Some(_) => ticket,
            None => match ticket.end_unfilled() {
                Some(ticket) => ticket,
                None => return MaybeReady::ready(()),
            },
        };
        let fill = fill.map(|(stored, ttl)| (stored.encode(), ttl));
        MaybeReady::Running(Box::pin(self.cache.finish(&plan.keys, ticket, fill)))
    }

    fn cached(
        &self,
        plan: &LookupPlan,
        stored: Arc<Servable>,
        age_secs: u64,
        x_cache: &'static str,
    ) -> Cached {
        let not_modified = plan.not_modified_by(stored.etag());
        Cached {
            stored,
            x_cache,
            age_secs,
            not_modified,
            head: plan.head,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn age_values_read_as_their_seconds() {
        for secs in [0, 1, 599, 600, 86_400, u64::MAX] {
            let value = age_value(secs, http::HeaderValue::from_static);
            assert_eq!(value.to_str().unwrap(), secs.to_string(), "{secs}");
        }
    }
}
