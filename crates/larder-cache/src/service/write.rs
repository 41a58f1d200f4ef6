//! Writes and invalidation: the Lua write that stores only while the markers have
//! not moved, the markers themselves, O(1) module and tenant invalidation, and the
//! sweeps (`SCAN` over every primary) with their announcements to other
//! instances' in-process tiers.

#[allow(clippy::wildcard_imports)] // this module is `service` split by concern
use super::*;

impl<C: Codec> Cache<C> {
    /// Deletes one key.
    pub async fn delete(&self, tenant: &Tenant, module: &Module, key: &str) -> bool {
        let keys = self.keys(tenant, module, key);
        if let Some(local) = &self.inner.local {
            local.remove(&keys.entry);
            return self.count_invalidation(true);
        }
        let deleted = self.unlink_one(&keys.entry).await;
        tracing::info!(target: "larder::cache", tenant = %tenant, module = %module, key, "cache key invalidated");
        self.count_invalidation(deleted)
    }

    /// Invalidates every key of a tenant's module: one `SET` of a fresh marker,
    /// whatever the number of keys. Old entries become invisible and expire by TTL.
    pub async fn invalidate_module(&self, tenant: &Tenant, module: &Module) -> bool {
        let keys = self.keys(tenant, module, "_");
        let scope = self.inner.keyspace.scope(tenant, module);
        let ok = self
            .bump_marker(self.marker_keys(&keys).1, local::message('p', scope.base()))
            .await;
        tracing::info!(target: "larder::cache", tenant = %tenant, module = %module, ok, "cache module invalidated");
        self.count_invalidation(ok)
    }

    /// Invalidates every key of a tenant, in all modules, in one command.
    pub async fn invalidate_tenant(&self, tenant: &Tenant) -> bool {
        let keys = self.keys(tenant, &self.inner.system, "_");
        let base = self.inner.keyspace.tenant_pattern(tenant);
        let ok = self
            .bump_marker(
                self.marker_keys(&keys).0,
                local::message('p', base.trim_end_matches('*')),
            )
            .await;
        tracing::info!(target: "larder::cache", tenant = %tenant, ok, "cache tenant invalidated");
        self.count_invalidation(ok)
    }

    /// Deletes a tenant's keys matching `glob` (relative to the tenant:
    /// `products:*`), with SCAN and batched UNLINK (never `KEYS`). Returns the number
    /// deleted, or `None` when Redis became unavailable part way.
    ///
    /// # Errors
    /// [`larder_core::KeyError`] for an empty glob or one with control characters.
    pub async fn invalidate_pattern(
        &self,
        tenant: &Tenant,
        glob: &str,
    ) -> Result<Option<u64>, larder_core::KeyError> {
        let pattern = self.inner.keyspace.tenant_glob(tenant, glob)?;
        let deleted = self.delete_matching(&pattern, true).await;
        tracing::info!(target: "larder::cache", tenant = %tenant, pattern = %pattern, deleted, "cache pattern invalidated");
        self.count_invalidation(deleted.is_some_and(|n| n > 0));
        Ok(deleted)
    }

    /// Deletes one key given in full (`stock:cache:tenant:{1}:products:p7`), for
    /// admin tools. Keys outside the cache's root (`{prefix}:cache:`) are refused
    /// (`false`): sessions, jobs and rate-limit state cannot be named here.
    pub async fn delete_full_key(&self, full_key: &str) -> bool {
        let prefix = format!("{}:", self.inner.keyspace.root());
        if !full_key.starts_with(&prefix) || full_key.chars().any(char::is_control) {
            return false;
        }
        if let Some(local) = &self.inner.local {
            local.remove(full_key);
            return true;
        }
        let deleted = self.unlink_one(full_key).await;
        tracing::info!(target: "larder::cache", key = full_key, "cache key invalidated");
        deleted
    }

    /// Deletes keys matching a glob relative to the cache's root
    /// (`tenant:{1}:products:*` deletes `{prefix}:cache:tenant:{1}:products:*`), for
    /// admin tools; invalidation markers are kept. No glob reaches another
    /// component's keys.
    ///
    /// # Errors
    /// [`larder_core::KeyError`] for an empty glob or one with control characters.
    pub async fn invalidate_glob(&self, glob: &str) -> Result<Option<u64>, larder_core::KeyError> {
        let pattern = self.inner.keyspace.root_glob(glob)?;
        let deleted = self.delete_matching(&pattern, true).await;
        tracing::info!(target: "larder::cache", pattern = %pattern, deleted, "cache pattern invalidated");
        Ok(deleted)
    }

    /// Deletes every cache key (all tenants: everything under `{prefix}:cache:`),
    /// with SCAN and batched UNLINK. Other components' keys are never touched.
    pub async fn clear(&self) -> Option<u64> {
        let pattern = self.inner.keyspace.root_pattern();
        // Markers go too: every entry they guard goes with them.
        let deleted = self.delete_matching(&pattern, false).await;
        // As after a marker's change (see `bump_marker`).
        if let Some(tracked) = &self.inner.tracked {
            tracked.forget_all();
        }
        tracing::info!(target: "larder::cache", pattern = %pattern, deleted, "cache cleared");
        deleted
    }

    /// Stores `payload` if the markers are unchanged; returns the stored entry's meta.
    pub(crate) async fn store_raw(
        &self,
        keys: &Keys,
        markers: (String, String),
        ttl: Duration,
        payload: Bytes,
    ) -> Option<Meta> {
        if ttl.is_zero() {
            return None;
        }
        let stale = self.inner.settings.stale_window;
        if let Some(local) = &self.inner.local {
            if self.local_markers(keys) != markers {
                return None;
            }
            let meta = Meta::new(markers, ttl, stale);
            local.insert(keys.entry.clone(), Entry::new(meta.clone(), payload));
            tracing::debug!(target: "larder::cache", module = %keys.module, key = %keys.entry, ttl_s = ttl.as_secs(), "cache SET (in-process)");
            return Some(meta);
        }
        let fresh = self.fresh_marker();
        let mut meta = Meta::new(markers.clone(), ttl, stale);
        let redis_ttl = meta.redis_ttl(now_ms());
        let (tenant_marker, module_marker) = self.marker_keys(keys);
        let mut inv = self.inner.write.prepare_invoke();
        inv.key(tenant_marker)
            .key(module_marker)
            .key(&keys.entry)
            .arg(&markers.0)
            .arg(&markers.1)
            .arg(&fresh)
            .arg(meta.times())
            .arg(&payload[..])
            .arg(larder_core::time::millis(redis_ttl))
            .arg(larder_core::time::millis(
                self.inner.settings.marker_ttl().max(redis_ttl * 2),
            ));
        match self.inner.handle.script::<i64>("cache_set", &inv).await {
            Ok(1) => {
                if markers.0.is_empty() {
                    meta.tenant_marker.clone_from(&fresh);
                }
                if markers.1.is_empty() {
                    meta.module_marker = fresh;
                }
                if let Some(l1) = self.l1_for(&keys.module) {
                    l1.insert(keys.entry.clone(), Entry::new(meta.clone(), payload));
                }
                tracing::debug!(target: "larder::cache", module = %keys.module, key = %keys.entry, ttl_s = ttl.as_secs(), "cache SET");
                Some(meta)
            }
            Ok(_) => {
                tracing::debug!(target: "larder::cache", module = %keys.module, key = %keys.entry, "cache SET skipped: invalidated since read");
                None
            }
            Err(e) => {
                tracing::debug!(target: "larder::cache", module = %keys.module, key = %keys.entry, error = %e, "cache SET failed");
                None
            }
        }
    }

    pub(super) async fn current_markers(&self, keys: &Keys) -> Option<(String, String)> {
        if self.inner.local.is_some() {
            return Some(self.local_markers(keys));
        }
        self.ensure_markers(keys).await
    }

    /// Creates missing markers (`SET NX`) and reads both, in one round trip.
    pub(super) async fn ensure_markers(&self, keys: &Keys) -> Option<(String, String)> {
        let fresh = self.fresh_marker();
        let (tenant_marker, module_marker) = self.marker_keys(keys);
        let mut pipe = redis::pipe();
        let ttl = larder_core::time::millis(self.inner.settings.marker_ttl());
        pipe.cmd("SET")
            .arg(tenant_marker)
            .arg(&fresh)
            .arg("NX")
            .arg("PX")
            .arg(ttl)
            .ignore()
            .cmd("SET")
            .arg(module_marker)
            .arg(&fresh)
            .arg("NX")
            .arg("PX")
            .arg(ttl)
            .ignore()
            .cmd("MGET")
            .arg(tenant_marker)
            .arg(module_marker);
        let reply: Result<((Option<String>, Option<String>),), _> =
            self.inner.handle.pipeline("cache_markers", &pipe).await;
        match reply {
            Ok(((Some(t), Some(mm)),)) => Some((t, mm)),
            _ => None,
        }
    }

    pub(super) fn local_markers(&self, keys: &Keys) -> (String, String) {
        let (t, m) = self.local_marker_values(keys);
        (t.to_string(), m.to_string())
    }

    /// The in-process store's markers of `keys`' tenant and module.
    pub(super) fn local_marker_values(&self, keys: &Keys) -> (u64, u64) {
        let (tenant_marker, module_marker) = self.marker_keys(keys);
        let map = self
            .inner
            .local_markers
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        let t = map.get(tenant_marker).copied().unwrap_or(0);
        let m = map.get(module_marker).copied().unwrap_or(0);
        (t, m)
    }

    /// Sets a fresh marker and announces it to other instances' L1 tiers, in one
    /// round trip.
    pub(super) async fn bump_marker(&self, marker_key: &str, announce: String) -> bool {
        if self.inner.local.is_some() {
            *self
                .inner
                .local_markers
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .entry(marker_key.to_owned())
                .or_insert(0) += 1;
            return true;
        }
        let fresh = self.fresh_marker();
        if let Some(l1) = &self.inner.l1 {
            l1.apply(&announce);
        }
        let mut pipe = redis::pipe();
        // Entries stamped with the old marker are invisible from now on; the new
        // one lives as long as the longest entry, and each entry stamped with it
        // extends it as needed (`write.lua`).
        pipe.cmd("SET")
            .arg(marker_key)
            .arg(&fresh)
            .arg("PX")
            .arg(larder_core::time::millis(self.inner.settings.marker_ttl()))
            .ignore();
        let done = self
            .announced::<()>("cache_invalidate", pipe, &announce)
            .await
            .is_ok();
        // Not needed for coherence (the push reaches the tracking connection before
        // the reply of any later look-up's `GET`), but it spares this process's next
        // look-up a `GET` judged by a marker already known to be old.
        if let Some(tracked) = &self.inner.tracked {
            tracked.forget(marker_key);
        }
        done
    }

    /// UNLINKs one key and announces it, in one round trip.
    pub(super) async fn unlink_one(&self, key: &str) -> bool {
        let announce = local::message('k', key);
        if let Some(l1) = &self.inner.l1 {
            l1.apply(&announce);
        }
        let mut pipe = redis::pipe();
        pipe.cmd("UNLINK").arg(key);
        let reply: Result<(i64,), _> = self.announced("cache_delete", pipe, &announce).await;
        reply.is_ok_and(|(n,)| n > 0)
    }

    /// Runs `pipe` (one tenant's keys) and publishes `announce` to the other
    /// instances' in-process tiers: in the same round trip on one node; after it on
    /// a cluster, where the pipeline goes to its keys' node and `PUBLISH` is
    /// routed as a command of its own (any node delivers it cluster-wide).
    pub(super) async fn announced<T: redis::FromRedisValue>(
        &self,
        op: &'static str,
        mut pipe: redis::Pipeline,
        announce: &str,
    ) -> Result<T, larder_core::Error> {
        let mut publish = redis::cmd("PUBLISH");
        publish.arg(&self.inner.channel).arg(announce);
        let handle = &self.inner.handle;
        if !handle.is_cluster() {
            pipe.add_command(publish).ignore();
            return handle.pipeline(op, &pipe).await;
        }
        let reply = handle.pipeline(op, &pipe).await?;
        let _: Result<i64, _> = handle.query("cache_announce", &publish).await;
        Ok(reply)
    }

    /// SCAN + batched UNLINK. With `keep_markers`, invalidation markers survive: a
    /// reset marker could make entries invalidated before it visible again.
    pub(super) async fn delete_matching(&self, pattern: &str, keep_markers: bool) -> Option<u64> {
        let system_infix = format!(":{SYSTEM_MODULE}:");
        if let Some(local) = &self.inner.local {
            return Some(local.remove_matching(pattern));
        }
        let handle = &self.inner.handle;
        let announce = local::message('g', pattern);
        if let Some(l1) = &self.inner.l1 {
            l1.apply(&announce);
        }
        let _: Result<i64, _> = handle
            .query(
                "cache_announce",
                redis::cmd("PUBLISH")
                    .arg(&self.inner.channel)
                    .arg(&announce),
            )
            .await;
        let mut deleted = 0u64;
        // Every primary (each one of a cluster); UNLINK of keys from several slots
        // is split by slot by the cluster client.
        let mut scan = handle.scan(pattern, SCAN_COUNT);
        while let Some(keys) = scan.next_page().await.ok()? {
            let doomed: Vec<&String> = keys
                .iter()
                .filter(|k| !keep_markers || !k.contains(&system_infix))
                .collect();
            if !doomed.is_empty() {
                let n: u64 = handle
                    .query("cache_unlink", redis::cmd("UNLINK").arg(&doomed))
                    .await
                    .ok()?;
                deleted += n;
            }
        }
        Some(deleted)
    }
}
