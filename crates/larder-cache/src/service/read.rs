//! The read over the tiers: the in-process store (no Redis), the L1 tier, then
//! Redis (`GET` of the entry with tracked markers, or one `MGET` of markers and
//! entry), judged by the tenant's and module's markers; degraded answers while
//! the breaker refuses calls.

#[allow(clippy::wildcard_imports)] // this module is `service` split by concern
use super::*;

impl<C: Codec> Cache<C> {
    /// Looks an entry up and counts the outcome (hit, stale, miss, degraded), in a
    /// `cache.lookup` span ([`larder_core::trace`]).
    pub(crate) async fn lookup_raw(&self, tenant: &Tenant, keys: &Keys) -> Found {
        match self.lookup_now(tenant, keys) {
            Some(found) => found,
            None => self.lookup_redis(tenant, keys).await,
        }
    }

    /// [`lookup_raw`](Self::lookup_raw)'s outcome when it is known without waiting
    /// (counted): the in-process store's answer, a fresh L1 entry, or, while the
    /// handle's breaker refuses calls, the degraded answer (an entry the L1 tier can
    /// still serve, or none). `None`: Redis must be asked, with
    /// [`lookup_redis`](Self::lookup_redis).
    pub(crate) fn lookup_now(&self, tenant: &Tenant, keys: &Keys) -> Option<Found> {
        let found = self.read_now(keys, true)?;
        // Settled without a round trip: a span that opens and closes at once.
        let _span = lookup_span(tenant, keys, found.outcome());
        Some(found)
    }

    /// The rest of a look-up [`lookup_now`](Self::lookup_now) could not settle.
    pub(crate) async fn lookup_redis(&self, tenant: &Tenant, keys: &Keys) -> Found {
        let span = lookup_span(tenant, keys, tracing::field::Empty);
        larder_core::trace::in_span(span, self.read_redis(keys, true), Found::outcome).await
    }

    /// The in-process store's entry for `keys` while the markers it was stamped with
    /// are the current ones, and those markers.
    pub(super) fn local_entry(
        &self,
        local: &LocalTier,
        keys: &Keys,
    ) -> (Option<Arc<Entry>>, (u64, u64)) {
        let (t, m) = self.local_marker_values(keys);
        let entry = local
            .get(&keys.entry)
            .filter(|e| marker_is(&e.meta.tenant_marker, t) && marker_is(&e.meta.module_marker, m));
        (entry, (t, m))
    }

    /// Reads `keys`' entry and the markers to judge it by: the entry alone when
    /// tracking vouches for both markers, otherwise all three in one round trip
    /// (tracked, so that the next look-up knows the markers).
    pub(super) async fn fetch(
        &self,
        keys: &Keys,
    ) -> Result<(Marks, Option<Vec<u8>>), larder_core::Error> {
        let guard = self.inner.handle.guard();
        if let Some(tracked) = &self.inner.tracked {
            let (base, module) = (keys.tenant_base(), keys.module.as_str());
            let (conn, seq) = match tracked.route(base, module) {
                Route::Known(conn, markers) => {
                    let mut get = redis::Cmd::with_capacity(2, 16 + keys.entry.len());
                    get.arg("GET").arg(&keys.entry);
                    let raw: Option<Vec<u8>> = guard
                        .run("cache_get", || {
                            let (mut conn, get) = (conn.clone(), &get);
                            async move { get.query_async(&mut conn).await }
                        })
                        .await?;
                    if tracked.still(base, module, &markers) {
                        return Ok((Marks::Known(markers), raw));
                    }
                    // A marker changed while the `GET` was on its way (or the
                    // connection went): read again, markers and all.
                    match tracked.connection() {
                        Some(live) => live,
                        None => return self.fetch_shared(keys).await,
                    }
                }
                Route::Unknown(conn, seq) => (conn, seq),
                Route::Off => return self.fetch_shared(keys).await,
            };
            return Box::pin(self.fetch_tracked(tracked, conn, seq, keys)).await;
        }
        self.fetch_shared(keys).await
    }

    /// Reads markers (tracked) and entry on the tracking connection, in one round
    /// trip, and keeps the markers unless an invalidation came in meanwhile.
    pub(super) async fn fetch_tracked(
        &self,
        tracked: &Tracked,
        conn: redis::aio::MultiplexedConnection,
        seq: u64,
        keys: &Keys,
    ) -> Result<(Marks, Option<Vec<u8>>), larder_core::Error> {
        let (tenant_marker, module_marker) =
            (self.marker_arg(keys, false), self.marker_arg(keys, true));
        let mut pipe = redis::pipe();
        // `CACHING YES` makes the next command's keys tracked, and only those.
        pipe.cmd("CLIENT")
            .arg("CACHING")
            .arg("YES")
            .ignore()
            .cmd("MGET")
            .arg(tenant_marker)
            .arg(module_marker)
            .cmd("GET")
            .arg(&keys.entry);
        let ((t, m), raw): TrackedReply = self
            .inner
            .handle
            .guard()
            .run("cache_get", || {
                let (mut conn, pipe) = (conn.clone(), &pipe);
                async move { pipe.query_async(&mut conn).await }
            })
            .await?;
        if let (Some(t), Some(m)) = (&t, &m) {
            tracked.learn(keys.tenant_base(), keys.module.as_str(), seq, t, m);
        }
        Ok((Marks::Read(t, m), raw))
    }

    /// Reads markers and entry with one `MGET` on the shared connection.
    pub(super) async fn fetch_shared(
        &self,
        keys: &Keys,
    ) -> Result<(Marks, Option<Vec<u8>>), larder_core::Error> {
        let (tenant_marker, module_marker) =
            (self.marker_arg(keys, false), self.marker_arg(keys, true));
        // Sized up front: growing the command costs more than the rest of writing it.
        let mut cmd = redis::Cmd::with_capacity(
            4,
            64 + tenant_marker.len() + module_marker.len() + keys.entry.len(),
        );
        cmd.arg("MGET")
            .arg(tenant_marker)
            .arg(module_marker)
            .arg(&keys.entry);
        let (t, m, raw): MgetReply = self.inner.handle.query("cache_get", &cmd).await?;
        Ok((Marks::Read(t, m), raw))
    }

    /// Looks an entry up; `count` says whether the outcome goes into the stats (the
    /// lease waiter's polls do not).
    pub(super) async fn read(&self, keys: &Keys, count: bool) -> Found {
        match self.read_now(keys, count) {
            Some(found) => found,
            None => self.read_redis(keys, count).await,
        }
    }

    /// The part of [`read`](Self::read) that needs no waiting: the in-process store,
    /// a fresh L1 entry, and the degraded answer while the breaker refuses calls.
    /// `None` when Redis must be asked.
    pub(super) fn read_now(&self, keys: &Keys, count: bool) -> Option<Found> {
        let l1 = self.l1_for(&keys.module);
        if let Some(local) = &self.inner.local {
            let now = now_ms();
            let (entry, (t, m)) = self.local_entry(local, keys);
            let entry = entry.filter(|e| e.meta.is_servable_at(now));
            if count {
                self.count_lookup(keys, entry.as_ref().map(|e| &e.meta), now);
            }
            // A visible entry carries the current markers; a miss needs them as text.
            let seen = match entry {
                Some(_) => Seen::OfEntry,
                None => Seen::Markers(t.to_string(), m.to_string()),
            };
            return Some(Found { entry, seen, now });
        }
        if let Some(l1) = l1 {
            let now = now_ms();
            if let Some(entry) = l1.get(&keys.entry).filter(|e| e.meta.is_fresh_at(now)) {
                if count {
                    self.count_lookup(keys, Some(&entry.meta), now);
                }
                return Some(Found {
                    entry: Some(entry),
                    seen: Seen::OfEntry,
                    now,
                });
            }
        }
        // Redis is known to be out: no command to build, nothing to wait for.
        let refused = self.inner.handle.guard().refuse_now("cache_get")?;
        Some(self.degraded(keys, l1, count, &refused))
    }

    /// The part of [`read`](Self::read) that asks Redis, after
    /// [`read_now`](Self::read_now) said it must.
    pub(super) async fn read_redis(&self, keys: &Keys, count: bool) -> Found {
        let l1 = self.l1_for(&keys.module);
        match self.fetch(keys).await {
            Ok((marks, raw)) => {
                let read;
                let (tenant_marker, module_marker): (&str, &str) = match &marks {
                    Marks::Known(m) => (&m.tenant, &m.module),
                    Marks::Read(Some(t), Some(m)) => (t, m),
                    // First use of this tenant or module (or its marker was evicted):
                    // nothing stored can be valid, so create the markers now and let
                    // writers stamp entries with a definite value.
                    // Boxed apart, like the corrupt-entry path below: rare, and
                    // kept out of every look-up's future.
                    Marks::Read(..) => {
                        read = Box::pin(self.ensure_markers(keys))
                            .await
                            .unwrap_or_default();
                        (&read.0, &read.1)
                    }
                };
                // Judged at the reply's time, not the request's.
                let now = now_ms();
                // Visible only while the markers an entry was stamped with are the
                // current ones (and definite), and within its stale window.
                let visible = |tenant: &str, module: &str, stale_until: u64| {
                    !tenant_marker.is_empty()
                        && !module_marker.is_empty()
                        && tenant == tenant_marker
                        && module == module_marker
                        && now < stale_until
                };
                let seen = || Seen::Markers(tenant_marker.to_owned(), module_marker.to_owned());
                let memo = raw.map(Bytes::from).map(|raw| {
                    let seen = self.inner.decoded.get(&keys.entry, &raw);
                    (raw, seen)
                });
                let (entry, seen) = match memo {
                    None => (None, seen()),
                    // Decoded before from these very bytes.
                    Some((_, Some(entry))) => {
                        let m = &entry.meta;
                        if visible(&m.tenant_marker, &m.module_marker, m.stale_until_ms) {
                            (Some(entry), Seen::OfEntry)
                        } else {
                            (None, seen())
                        }
                    }
                    Some((raw, None)) => match entry::Header::parse(&raw) {
                        // The entry keeps the markers it was judged by, and a fill
                        // derives its markers from the entry.
                        Ok(h) if visible(h.tenant_marker, h.module_marker, h.stale_until_ms) => {
                            let payload = raw.slice(h.payload_start..);
                            let meta = h.meta(tenant_marker.to_owned(), module_marker.to_owned());
                            let entry = Entry::new(meta, payload);
                            self.inner.decoded.put(&keys.entry, raw.clone(), &entry);
                            (Some(entry), Seen::OfEntry)
                        }
                        Ok(_) => (None, seen()),
                        Err(e) => {
                            Box::pin(self.corrupt(keys, &e.to_string())).await;
                            (None, seen())
                        }
                    },
                };
                if count {
                    self.count_lookup(keys, entry.as_ref().map(|e| &e.meta), now);
                }
                if let (Some(l1), Some(entry)) = (l1, &entry) {
                    l1.insert(keys.entry.clone(), Arc::clone(entry));
                }
                Found { entry, seen, now }
            }
            Err(e) => self.degraded(keys, l1, count, &e),
        }
    }

    /// A look-up while Redis is out: an entry the L1 tier still holds beats the
    /// origin; otherwise a miss that writes nothing back.
    pub(super) fn degraded(
        &self,
        keys: &Keys,
        l1: Option<&LocalTier>,
        count: bool,
        e: &larder_core::Error,
    ) -> Found {
        if count {
            self.inner.counters.degraded.fetch_add(1, Ordering::Relaxed);
        }
        if let Some(l1) = l1 {
            let now = now_ms();
            if let Some(entry) = l1.get(&keys.entry).filter(|e| e.meta.is_servable_at(now)) {
                if count {
                    self.count_lookup(keys, Some(&entry.meta), now);
                }
                return Found {
                    entry: Some(entry),
                    seen: Seen::Unavailable,
                    now,
                };
            }
        }
        if count {
            self.inner.counters.misses.fetch_add(1, Ordering::Relaxed);
            larder_core::metrics::DEGRADED_BY_COMPONENT.increment("cache", "");
        }
        tracing::debug!(target: "larder::cache", module = %keys.module, key = %keys.entry, error = %e, "cache degraded: treating as miss");
        Found {
            entry: None,
            seen: Seen::Unavailable,
            now: 0,
        }
    }
}

/// A look-up's span: tenant and module, never the key (a key part may hold what a
/// user typed).
fn lookup_span(tenant: &Tenant, keys: &Keys, outcome: impl tracing::Value) -> tracing::Span {
    tracing::debug_span!(
        target: "larder::cache",
        "cache.lookup",
        tenant = tenant.as_str(),
        module = keys.module.as_str(),
        outcome
    )
}
