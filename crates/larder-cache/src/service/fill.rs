//! The fill protocol's steps on the cache's store ([`crate::fill`] has the
//! protocol and its types).

use std::time::Duration;

use bytes::Bytes;
use larder_core::Codec;

use super::{Cache, Found, LeaseGate};
use crate::fill::{Step, Ticket};
use crate::flight::Role;
use crate::keys::Keys;

impl<C: Codec> Cache<C> {
    /// Runs the fill protocol for a look-up (`found`) that gave no fresh entry;
    /// `stale` is its stale value, if any. `swr`: serve stale while one request
    /// refreshes. `decode` reads a payload another request stored (`None`: unusable).
    pub(crate) async fn fill<S>(
        &self,
        keys: &Keys,
        found: Found,
        stale: Option<S>,
        swr: bool,
        decode: impl Fn(&Bytes) -> Option<S>,
    ) -> Step<S> {
        let leases = self.leases(&found);
        let markers = found.into_markers();
        match self.flights().join(&keys.entry) {
            Role::Leader(leader) => {
                let mut ticket = Ticket::leading(leader, markers);
                if let Some(stale) = stale {
                    if swr {
                        return Step::Stale(stale, Some(ticket));
                    }
                    ticket.stale = Some(stale);
                }
                if leases {
                    match self.lease_or_wait(keys).await {
                        LeaseGate::Filled(entry) => {
                            if let Some(value) = decode(&entry.payload) {
                                if let Some(leader) = ticket.leader.take() {
                                    leader.complete(Some(entry.payload.clone()));
                                }
                                return Step::Filled(value);
                            }
                        }
                        LeaseGate::Proceed(token) => ticket.lease = token,
                    }
                }
                Step::Fetch(ticket)
            }
            Role::Follower(mut rx) => match stale {
                // A refresh is already running: serve stale without waiting.
                Some(stale) if swr => Step::Stale(stale, None),
                stale => {
                    if let Ok(Some(payload)) = rx.recv().await {
                        if let Some(value) = decode(&payload) {
                            return Step::Filled(value);
                        }
                    }
                    Step::Fetch(Ticket {
                        leader: None,
                        lease: None,
                        markers: None,
                        stale,
                    })
                }
            },
        }
    }

    /// Ends a ticket: stores `fill` (the encoded value and its TTL) when the ticket
    /// fills, releases the lease, and hands the payload to waiting followers.
    pub(crate) async fn finish<S>(
        &self,
        keys: &Keys,
        ticket: Ticket<S>,
        fill: Option<(Bytes, Duration)>,
    ) {
        let Ticket {
            leader,
            lease,
            markers,
            ..
        } = ticket;
        let Some(leader) = leader else { return };
        if let (Some((payload, ttl)), Some(markers)) = (&fill, markers) {
            self.store_raw(keys, markers, *ttl, payload.clone()).await;
        }
        // Released after the store: earlier, another instance could take the lease
        // and call the origin again.
        if let Some(token) = lease {
            self.release_lease(keys, &token).await;
        }
        leader.complete(fill.map(|(payload, _)| payload));
    }
}
