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

use super::{LookupPlan, ResponseCache, Servable, StoredResponse};
use crate::entry::{now_ms, CorruptEntry};
use crate::flight::{Leader, Role};
use crate::local::Entry;
use crate::service::{Found, LeaseGate};

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

/// The right to fill one entry (or a plain pass-through when `leader` is `None`).
pub(crate) struct Ticket {
    leader: Option<Leader<Option<Bytes>>>,
    /// The cross-instance lease token, when this instance holds it.
    lease: Option<String>,
    markers: Option<(String, String)>,
    /// The stale entry, for stale-if-error.
    stale: Option<(u64, Arc<Servable>)>,
}

impl Ticket {
    /// Whether the response fetched under this ticket is to be stored: this request
    /// leads its key's flight, and the store answered the look-up. Then the origin
    /// gets the request without the client's validators
    /// ([`VALIDATORS`](super::VALIDATORS)), since a 304 cannot be stored, and the
    /// adapter answers `If-None-Match` itself ([`LookupPlan::not_modified_by`]).
    /// Otherwise (the store unavailable) the origin may answer them.
    pub(crate) fn fills(&self) -> bool {
        self.leader.is_some() && self.markers.is_some()
    }

    /// Keeps a stale copy for stale-if-error (adapters that refresh in the foreground).
    #[cfg(feature = "actix")]
    pub(crate) fn keep_stale(mut self, cached: Cached) -> Self {
        self.stale = Some((cached.age_secs, cached.stored));
        self
    }
}

/// What to do next.
pub(crate) enum Begin {
    /// Answer from the cache. With `refresh`, also refresh the entry in the
    /// background (stale-while-revalidate): run the origin, then `finish`.
    Serve(Cached, Option<Ticket>),
    /// Call the origin, then [`ResponseCache::finish`].
    Fetch(Ticket),
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
        let Some(found) = self.cache.lookup_now(&plan.keys) else {
            return Start::Later(None);
        };
        match self.judge(plan, &found) {
            Judged::Fresh(cached) => return Start::Serve(cached),
            Judged::Absent if !self.cache.leases(&found) => {
                if let Role::Leader(leader) = self.cache.flights().join(&plan.keys.entry) {
                    return Start::Fetch(Ticket {
                        leader: Some(leader),
                        lease: None,
                        markers: found.into_markers(),
                        stale: None,
                    });
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
            None => self.cache.lookup_redis(&plan.keys).await,
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

    /// The rest of [`begin`](Self::begin) when no fresh entry was found: joins the
    /// key's flight, and as its leader takes the lease (or waits for the instance
    /// holding it); as a follower waits for the leader's response.
    async fn begin_miss(
        &self,
        plan: &LookupPlan,
        found: Found,
        stale: Option<(u64, Arc<Servable>)>,
    ) -> Begin {
        let leases = self.cache.leases(&found);
        let markers = found.into_markers();
        match self.cache.flights().join(&plan.keys.entry) {
            Role::Leader(leader) => {
                let swr = self.config.stale_while_revalidate && !plan.revalidate;
                let mut lease = None;
                if leases && (stale.is_none() || !swr) {
                    match self.cache.lease_or_wait(&plan.keys).await {
                        LeaseGate::Filled(entry) => {
                            if let Ok(stored) = decode(&entry) {
                                leader.complete(Some(entry.payload.clone()));
                                let age = entry.meta.age_secs(now_ms());
                                return Begin::Serve(
                                    self.cached(plan, stored, age, x_cache::HIT),
                                    None,
                                );
                            }
                        }
                        LeaseGate::Proceed(token) => lease = token,
                    }
                }
                let ticket = Ticket {
                    leader: Some(leader),
                    lease,
                    markers,
                    stale: None,
                };
                match stale {
                    Some((age, stored)) if swr => {
                        Begin::Serve(self.cached(plan, stored, age, x_cache::STALE), Some(ticket))
                    }
                    stale => Begin::Fetch(Ticket { stale, ..ticket }),
                }
            }
            Role::Follower(mut rx) => {
                if let Some((age, stored)) = stale
                    .clone()
                    .filter(|_| self.config.stale_while_revalidate && !plan.revalidate)
                {
                    // A refresh is already running: serve stale without waiting.
                    return Begin::Serve(self.cached(plan, stored, age, x_cache::STALE), None);
                }
                if let Ok(Some(payload)) = rx.recv().await {
                    if let Ok(stored) = decode_payload(&payload) {
                        return Begin::Serve(self.cached(plan, stored, 0, x_cache::HIT), None);
                    }
                }
                // The leader's response was not cacheable or it failed: go to the
                // origin ourselves, without storing.
                Begin::Fetch(Ticket {
                    leader: None,
                    lease: None,
                    markers: None,
                    stale,
                })
            }
        }
    }

    /// Stale-if-error: when the origin answered 5xx (or failed), the stale entry to
    /// serve instead, if any.
    pub(crate) fn stale_for_error(&self, plan: &LookupPlan, ticket: &mut Ticket) -> Option<Cached> {
        let (age, stored) = ticket.stale.take()?;
        tracing::debug!(target: "larder::cache", module = %plan.module, key = %plan.keys.entry, "origin failed: serving stale");
        Some(self.cached(plan, stored, age, x_cache::STALE))
    }

    /// Whether the origin's response can go out untouched: nothing will be stored
    /// (Redis is unavailable) and no concurrent request waits for it. Then the
    /// flight ends here and the adapter skips buffering, hashing and encoding.
    pub(crate) fn pass_through(&self, ticket: &mut Ticket) -> bool {
        if ticket.markers.is_some() || ticket.lease.is_some() {
            return false;
        }
        match ticket.leader.take() {
            None => true,
            Some(leader) => match leader.release_if_alone() {
                Ok(()) => true,
                Err(leader) => {
                    ticket.leader = Some(leader);
                    false
                }
            },
        }
    }

    /// Stores the origin's response (when given) and hands it to waiting followers.
    /// Boxed: the store's calls would otherwise make the adapters' miss futures
    /// (which hold this at several points) larger by their size.
    pub(crate) fn finish<'a>(
        &'a self,
        plan: &'a LookupPlan,
        ticket: Ticket,
        fill: Option<(StoredResponse, Duration)>,
    ) -> Pin<Box<dyn Future<Output = ()> + Send + 'a>> {
        Box::pin(self.finish_boxed(plan, ticket, fill))
    }

    async fn finish_boxed(
        &self,
        plan: &LookupPlan,
        ticket: Ticket,
        fill: Option<(StoredResponse, Duration)>,
    ) {
        let Ticket {
            leader,
            markers,
            lease,
            ..
        } = ticket;
        let Some(leader) = leader else { return };
        let payload = match fill {
            Some((stored, ttl)) => {
                let payload = stored.encode();
                if let Some(markers) = markers {
                    self.cache
                        .store_raw(&plan.keys, markers, ttl, payload.clone())
                        .await;
                }
                Some(payload)
            }
            None => None,
        };
        // Released after the store: earlier, another instance could take the lease
        // and call the origin again.
        if let Some(token) = lease {
            self.cache.release_lease(&plan.keys, &token).await;
        }
        leader.complete(payload);
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
