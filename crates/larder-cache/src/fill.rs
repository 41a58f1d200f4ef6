//! The fill protocol: what a look-up that found no fresh entry does next. One
//! protocol for typed values ([`Cache::get_or_set`](crate::Cache::get_or_set)) and
//! for HTTP responses (the response cache's flow).
//!
//! ```text
//! no fresh entry ─▶ join the key's flight (one origin call per process)
//!   ├─ leader ─▶ stale and stale-while-revalidate? ─▶ Stale(value, refresh ticket)
//!   │        └─▶ cross-instance lease (when configured): taken ─▶ Fetch(ticket)
//!   │                                    another instance filled it ─▶ Filled(value)
//!   └─ follower ─▶ stale and stale-while-revalidate? ─▶ Stale(value, no ticket)
//!               └─▶ wait for the leader ─▶ Filled(value)
//!                                      └─▶ nothing usable ─▶ Fetch(ticket that stores nothing)
//! Fetch(ticket) ─▶ origin ─▶ ok: Cache::finish(ticket, payload) stores and wakes followers
//!                         └─ error: Ticket::take_stale (stale-if-error), then finish
//! ```
//!
//! A follower whose leader failed or gave up calls the origin itself, without
//! storing: followers retrying one at a time as leaders would queue every waiting
//! request behind a failing origin.
//!
//! This module holds the protocol's types; its steps, which need the cache's
//! store, are `Cache::fill` and `Cache::finish` (`service/fill.rs`).

use bytes::Bytes;

use crate::flight::Leader;

/// The right to fill one entry (or, without a leader, to call the origin for this
/// request only). `S` is the stale value kept for stale-if-error.
pub(crate) struct Ticket<S> {
    pub(crate) leader: Option<Leader<Option<Bytes>>>,
    /// The cross-instance lease token, when this instance holds it.
    pub(crate) lease: Option<String>,
    /// The markers a fill is stamped with; `None` when the store was unavailable.
    pub(crate) markers: Option<(String, String)>,
    pub(crate) stale: Option<S>,
}

/// What to do after a look-up found no fresh entry.
pub(crate) enum Step<S> {
    /// Filled while we waited: by this process's leader, or by the instance holding
    /// the lease. Serve it.
    Filled(S),
    /// Serve the stale value now; with a ticket, refresh the entry in the background
    /// (call the origin, then `Cache::finish`).
    Stale(S, Option<Ticket<S>>),
    /// Call the origin, then `Cache::finish`.
    Fetch(Ticket<S>),
}

impl<S> Ticket<S> {
    /// A leader's ticket, settled without waiting: no lease to take.
    pub(crate) fn leading(
        leader: Leader<Option<Bytes>>,
        markers: Option<(String, String)>,
    ) -> Self {
        Self {
            leader: Some(leader),
            lease: None,
            markers,
            stale: None,
        }
    }

    /// Whether what the origin answers under this ticket is stored: this request
    /// leads its key's flight, and the store answered the look-up.
    #[cfg_attr(not(any(feature = "tower", feature = "actix")), allow(dead_code))]
    pub(crate) fn fills(&self) -> bool {
        self.leader.is_some() && self.markers.is_some()
    }

    /// Keeps `stale` for stale-if-error.
    #[cfg_attr(not(feature = "actix"), allow(dead_code))]
    pub(crate) fn with_stale(mut self, stale: S) -> Self {
        self.stale = Some(stale);
        self
    }

    /// The stale value to serve when the origin failed (stale-if-error), if any.
    pub(crate) fn take_stale(&mut self) -> Option<S> {
        self.stale.take()
    }

    /// Ends the ticket without a fill when that needs no Redis call (no lease to
    /// release): followers are told to call the origin themselves. Gives the ticket
    /// back otherwise, for `Cache::finish`.
    #[cfg_attr(not(any(feature = "tower", feature = "actix")), allow(dead_code))]
    pub(crate) fn end_unfilled(self) -> Option<Self> {
        if self.lease.is_some() {
            return Some(self);
        }
        if let Some(leader) = self.leader {
            leader.complete(None);
        }
        None
    }

    /// Whether the origin's response can go out untouched: nothing will be stored
    /// (the store is unavailable) and no concurrent request waits for it. Then the
    /// flight ends here, and the caller need not encode anything.
    #[cfg_attr(not(any(feature = "tower", feature = "actix")), allow(dead_code))]
    pub(crate) fn pass_through(&mut self) -> bool {
        if self.markers.is_some() || self.lease.is_some() {
            return false;
        }
        match self.leader.take() {
            None => true,
            Some(leader) => match leader.release_if_alone() {
                Ok(()) => true,
                Err(leader) => {
                    self.leader = Some(leader);
                    false
                }
            },
        }
    }
}
