//! Invalidation markers known through Redis's client-side tracking.
//!
//! A look-up judges an entry by the current tenant and module markers. Read with the
//! entry (a three-key `MGET`), they cost every hit two keys more than the entry
//! itself. With tracking, a process reads a tenant's markers once, on a connection of
//! its own (`CLIENT TRACKING ON OPTIN`, and `CLIENT CACHING YES` before the read), and
//! Redis tells it when either changes; a hit then reads the entry alone, with `GET`.
//!
//! Coherence is that of reading the markers with the entry. The `GET` goes over the
//! tracking connection, and Redis sends a marker's invalidation on that connection
//! before the reply of any command it runs after the change; redis-rs hands pushes to
//! [`Tracked::apply`] in the connection's reader, in the order they arrive, before the
//! replies that follow them. So when a `GET`'s reply reaches its caller, every change
//! of a marker made before that `GET` ran has been applied here: a look-up that finds
//! no invalidation applied since it took its markers ([`Tracked::still`]) judged the
//! entry by current markers. A lost connection forgets everything (pushes may have
//! been lost with it), and look-ups read the markers with the entry, on the shared
//! connection, until a new connection is tracking.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError, Weak};
use std::time::Duration;

use larder_core::redis::aio::MultiplexedConnection;
use larder_core::redis::{self, PushInfo, PushKind, Value};
use larder_core::Handle;

use crate::keys::MarkerKey;

/// Tenants whose markers are kept; past it the table starts over (active tenants
/// come back with their next look-up).
const MAX_TENANTS: usize = 65_536;
/// Pauses between attempts to open a tracking connection: doubled after each
/// failure, up to `MAX_PAUSE`.
const MIN_PAUSE: Duration = Duration::from_millis(250);
const MAX_PAUSE: Duration = Duration::from_secs(5);

/// Markers this process knows to be current, and the connection that keeps them so.
pub(crate) struct Tracked {
    state: Mutex<State>,
    /// A copy of `State::seq`, read without the lock after a `GET`.
    seq: AtomicU64,
    /// The reserved module whose marker keys the pushes name.
    system: String,
}

#[derive(Default)]
struct State {
    /// The tracking connection while one is live, and its number.
    conn: Option<MultiplexedConnection>,
    epoch: u64,
    /// Invalidations applied: pushes, this process's own marker changes, lost
    /// connections.
    seq: u64,
    /// By tenant base (`{prefix}:cache:tenant:{t}:`).
    tenants: Map<Known>,
}

/// Looked up twice per hit (tenant, then module). Bounded (`MAX_TENANTS`, then it
/// starts over) and hashed with foldhash, randomly seeded ("Hashing the cache's
/// maps" in BENCHMARKS.md).
type Map<V> = HashMap<Box<str>, V, foldhash::fast::RandomState>;

#[derive(Default)]
struct Known {
    tenant: Option<Arc<str>>,
    modules: Map<Arc<str>>,
}

/// A tenant's and a module's current markers, as a look-up took them.
#[derive(Debug, Clone)]
pub(crate) struct Markers {
    pub(crate) tenant: Arc<str>,
    pub(crate) module: Arc<str>,
    seq: u64,
}

/// How a look-up reads its entry.
pub(crate) enum Route {
    /// Both markers are known: `GET` the entry on this connection.
    Known(MultiplexedConnection, Markers),
    /// Read the markers (tracked) with the entry on this connection, noting the
    /// invalidation count before sending.
    Unknown(MultiplexedConnection, u64),
    /// No tracking connection: read everything on the shared one.
    Off,
}

impl Tracked {
    /// An empty table for marker keys of the reserved module `system`.
    pub(crate) fn new(system: &str) -> Self {
        Self {
            state: Mutex::default(),
            seq: AtomicU64::new(0),
            system: system.to_owned(),
        }
    }

    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// How to read the entry of `module` for the tenant whose keys start `base`.
    pub(crate) fn route(&self, base: &str, module: &str) -> Route {
        let state = self.state();
        let Some(conn) = &state.conn else {
            return Route::Off;
        };
        let known = state.tenants.get(base).and_then(|k| {
            let tenant = k.tenant.as_ref()?;
            let module = k.modules.get(module)?;
            Some((Arc::clone(tenant), Arc::clone(module)))
        });
        match known {
            Some((tenant, module)) => Route::Known(
                conn.clone(),
                Markers {
                    tenant,
                    module,
                    seq: state.seq,
                },
            ),
            None => Route::Unknown(conn.clone(), state.seq),
        }
    }

    /// The tracking connection, if one is live, and the invalidation count to note
    /// before sending a tracked read on it.
    pub(crate) fn connection(&self) -> Option<(MultiplexedConnection, u64)> {
        let state = self.state();
        Some((state.conn.clone()?, state.seq))
    }

    /// After a `GET` on the tracking connection: whether `markers` were still the
    /// current ones when it ran.
    pub(crate) fn still(&self, base: &str, module: &str, markers: &Markers) -> bool {
        if self.seq.load(Ordering::Acquire) == markers.seq {
            return true;
        }
        let state = self.state();
        state.tenants.get(base).is_some_and(|k| {
            k.tenant.as_ref().is_some_and(|t| **t == *markers.tenant)
                && k.modules
                    .get(module)
                    .is_some_and(|m| **m == *markers.module)
        })
    }

    /// Keeps markers read by a tracked read sent when the invalidation count was
    /// `seq`, unless an invalidation was applied since (it may concern them).
    pub(crate) fn learn(&self, base: &str, module: &str, seq: u64, tenant: &str, marker: &str) {
        let mut state = self.state();
        // A lost or new connection counts as an invalidation too.
        if state.seq != seq {
            return;
        }
        if !state.tenants.contains_key(base) && state.tenants.len() >= MAX_TENANTS {
            state.tenants.clear();
        }
        let known = match state.tenants.get_mut(base) {
            Some(known) => known,
            None => state.tenants.entry(base.into()).or_default(),
        };
        if known.tenant.as_deref() != Some(tenant) {
            known.tenant = Some(tenant.into());
        }
        if known.modules.get(module).map(|m| &**m) != Some(marker) {
            known.modules.insert(module.into(), marker.into());
        }
    }

    /// Forgets the marker under `key`: this process has just changed it (its push
    /// may still be on the way).
    pub(crate) fn forget(&self, key: &str) {
        let mut state = self.state();
        self.invalidate(&mut state, key);
    }

    /// Forgets every marker.
    pub(crate) fn forget_all(&self) {
        let mut state = self.state();
        state.tenants.clear();
        self.bump(&mut state);
    }

    fn bump(&self, state: &mut State) {
        state.seq += 1;
        self.seq.store(state.seq, Ordering::Release);
    }

    /// Forgets the marker under `key`, and counts it.
    fn invalidate(&self, state: &mut State, key: &str) {
        self.drop_key(state, key);
        self.bump(state);
    }

    /// Forgets the marker under `key` (everything, for a key that is not a marker's).
    fn drop_key(&self, state: &mut State, key: &str) {
        match MarkerKey::parse(key, &self.system) {
            Some(MarkerKey {
                base, module: None, ..
            }) => {
                state.tenants.remove(base);
            }
            Some(MarkerKey {
                base,
                module: Some(module),
                ..
            }) => {
                if let Some(known) = state.tenants.get_mut(base) {
                    known.modules.remove(module);
                }
            }
            // Only markers are read tracked; anything else is not understood.
            None => state.tenants.clear(),
        }
    }

    /// Applies a push of the connection numbered `epoch`; true when it says the
    /// connection is gone.
    fn apply(&self, epoch: u64, push: &PushInfo) -> bool {
        match push.kind {
            PushKind::Invalidate => {
                let mut state = self.state();
                match push.data.first() {
                    Some(Value::Array(keys)) => {
                        for key in keys {
                            match key {
                                Value::BulkString(k) => match std::str::from_utf8(k) {
                                    Ok(k) => self.drop_key(&mut state, k),
                                    Err(_) => state.tenants.clear(),
                                },
                                _ => state.tenants.clear(),
                            }
                        }
                    }
                    // `FLUSHALL`/`FLUSHDB`, or a form not understood.
                    _ => state.tenants.clear(),
                }
                // Once per push, however many keys it names.
                self.bump(&mut state);
                false
            }
            PushKind::Disconnection => {
                self.lost(epoch);
                true
            }
            _ => false,
        }
    }

    /// The connection numbered `epoch` now tracks.
    fn go_live(&self, epoch: u64, conn: MultiplexedConnection) {
        let mut state = self.state();
        state.conn = Some(conn);
        state.epoch = epoch;
        state.tenants.clear();
        self.bump(&mut state);
    }

    /// The connection numbered `epoch` is gone: forget everything it vouched for.
    fn lost(&self, epoch: u64) {
        let mut state = self.state();
        if state.epoch == epoch && state.conn.is_some() {
            state.conn = None;
            state.tenants.clear();
            self.bump(&mut state);
        }
    }

    /// Whether a tracking connection is live (for tests).
    #[cfg(test)]
    fn is_live(&self) -> bool {
        self.state().conn.is_some()
    }
}

/// Keeps a tracking connection open for `tracked` while the cache lives: opens one,
/// turns tracking on, and opens another when it is lost.
pub(crate) async fn track(handle: Handle, tracked: Weak<Tracked>) {
    let mut pause = MIN_PAUSE;
    let mut epoch = 0u64;
    // Whether the server's refusal of the handshake was logged.
    let mut told = false;
    loop {
        epoch += 1;
        let lost = Arc::new(tokio::sync::Notify::new());
        let push = {
            let (tracked, lost) = (tracked.clone(), Arc::clone(&lost));
            move |info: PushInfo| -> Result<(), std::convert::Infallible> {
                if let Some(tracked) = tracked.upgrade() {
                    if tracked.apply(epoch, &info) {
                        lost.notify_one();
                    }
                }
                Ok(())
            }
        };
        match handle.push_connection(push).await {
            Ok(conn) => {
                // Tracking on, and `CACHING YES` tried once (a server's ACL may allow
                // the one and not the other): tracked reads would fail otherwise.
                let mut on = redis::pipe();
                on.cmd("CLIENT")
                    .arg("TRACKING")
                    .arg("ON")
                    .arg("OPTIN")
                    .ignore()
                    .cmd("CLIENT")
                    .arg("CACHING")
                    .arg("YES")
                    .ignore()
                    .cmd("PING")
                    .ignore();
                let on: Result<(), _> = handle
                    .guard()
                    .run("cache_tracking", || {
                        let (mut conn, on) = (conn.clone(), &on);
                        async move { on.query_async(&mut conn).await }
                    })
                    .await;
                match on {
                    Ok(()) => {
                        let Some(live) = tracked.upgrade() else {
                            return;
                        };
                        live.go_live(epoch, conn);
                        drop(live);
                        tracing::debug!(target: "larder::cache", "cache markers tracked");
                        pause = MIN_PAUSE;
                        lost.notified().await;
                        if let Some(live) = tracked.upgrade() {
                            live.lost(epoch);
                        }
                        tracing::debug!(target: "larder::cache", "cache marker tracking lost: markers are read with each entry until it is back");
                    }
                    Err(e) if refused(&e) => {
                        tracing::info!(target: "larder::cache", error = %e, "cache marker tracking refused by the server: markers are read with each entry");
                        return;
                    }
                    Err(e) => {
                        tracing::debug!(target: "larder::cache", error = %e, "cache marker tracking: not turned on");
                    }
                }
            }
            // The handshake answered with an error: no RESP3 (Redis before 6), or a
            // passing condition (`maxclients`). Tried again at the longest pause.
            Err(e) if refused(&e) => {
                if !told {
                    told = true;
                    tracing::info!(target: "larder::cache", error = %e, "cache marker tracking: connection refused by the server: markers are read with each entry meanwhile");
                }
                pause = MAX_PAUSE;
            }
            Err(e) => {
                tracing::debug!(target: "larder::cache", error = %e, "cache marker tracking: no connection");
            }
        }
        tokio::time::sleep(pause).await;
        pause = (pause * 2).min(MAX_PAUSE);
    }
}

/// Whether the server answered with an error (it will answer the same again), as
/// opposed to being unreachable.
fn refused(e: &larder_core::Error) -> bool {
    matches!(e, larder_core::Error::Backend { source, .. }
        if source.kind() == larder_core::BackendErrorKind::Command)
}

#[cfg(test)]
mod tests {
    use super::*;

    const BASE: &str = "app:tenant:{1}:";

    /// A table as the connection numbered 1 left it (these tests use no
    /// connection: the table's rules are what they check).
    fn table() -> Tracked {
        let tracked = Tracked::new("_larder");
        tracked.state().epoch = 1;
        tracked
    }

    #[test]
    fn markers_of_a_key_are_forgotten_by_their_exact_key_only() {
        let tracked = table();
        let mut state = tracked.state();
        let mut known = Known {
            tenant: Some("t1".into()),
            ..Known::default()
        };
        known.modules.insert("balance".into(), "m1".into());
        known.modules.insert("stock".into(), "m2".into());
        state.tenants.insert(BASE.into(), known);
        state
            .tenants
            .insert("app:tenant:{2}:".into(), Known::default());
        tracked.invalidate(&mut state, "app:tenant:{1}:_larder:gen:balance");
        let known = &state.tenants[BASE];
        assert!(!known.modules.contains_key("balance"));
        assert_eq!(known.modules.get("stock").map(|m| &**m), Some("m2"));
        assert_eq!(state.seq, 1);
        tracked.invalidate(&mut state, "app:tenant:{1}:_larder:gen");
        assert!(!state.tenants.contains_key(BASE));
        assert!(state.tenants.contains_key("app:tenant:{2}:"));
        // A module named `gen`: its marker key also ends as a tenant marker's does.
        let mut known = Known {
            tenant: Some("t2".into()),
            ..Known::default()
        };
        known.modules.insert("gen".into(), "m3".into());
        state.tenants.insert("app:tenant:{3}:".into(), known);
        tracked.invalidate(&mut state, "app:tenant:{3}:_larder:gen:gen");
        assert!(!state.tenants["app:tenant:{3}:"].modules.contains_key("gen"));
        state.tenants.remove("app:tenant:{3}:");
        // Not a marker key: everything goes.
        tracked.invalidate(&mut state, "app:tenant:{2}:balance:x");
        assert!(state.tenants.is_empty());
        drop(state);
        assert_eq!(tracked.seq.load(Ordering::Acquire), 4);
        assert!(!tracked.is_live());
    }

    fn push(kind: PushKind, data: Vec<Value>) -> PushInfo {
        PushInfo { kind, data }
    }

    #[tokio::test]
    async fn a_disconnection_ends_only_the_connection_it_comes_from() {
        let server = larder_testing::RedisServer::start();
        let config = larder_core::Config::builder()
            .redis_url(&server.url())
            .build();
        let handle = Handle::new(config.unwrap()).unwrap();
        let ignore = |_: PushInfo| Ok::<(), std::convert::Infallible>(());
        let conn = handle.push_connection(ignore).await.unwrap();
        let tracked = table();
        tracked.go_live(2, conn);
        let seq = tracked.state().seq;
        tracked.learn(BASE, "balance", seq, "t1", "m1");
        let known = |t: &Tracked| matches!(t.route(BASE, "balance"), Route::Known(..));
        assert!(known(&tracked));
        // Connection 1's end: the live connection 2 and what it vouches for stay.
        assert!(tracked.apply(1, &push(PushKind::Disconnection, vec![])));
        assert!(tracked.is_live() && known(&tracked));
        assert_eq!(tracked.state().seq, seq);
        // Its own end: no connection, no markers, and counted.
        assert!(tracked.apply(2, &push(PushKind::Disconnection, vec![])));
        assert!(!tracked.is_live());
        assert!(matches!(tracked.route(BASE, "balance"), Route::Off));
        assert!(tracked.state().tenants.is_empty());
        assert_eq!(tracked.state().seq, seq + 1);
    }

    #[test]
    fn a_push_counts_once_and_flushall_forgets_every_marker() {
        let tracked = table();
        for base in [BASE, "app:tenant:{2}:"] {
            let seq = tracked.state().seq;
            tracked.learn(base, "balance", seq, "t", "m");
        }
        // One push naming two marker keys: both forgotten, one invalidation.
        let keys = [
            "app:tenant:{1}:_larder:gen",
            "app:tenant:{2}:_larder:gen:balance",
        ]
        .map(|k| Value::BulkString(k.as_bytes().to_vec()));
        assert!(!tracked.apply(
            1,
            &push(PushKind::Invalidate, vec![Value::Array(keys.to_vec())])
        ));
        assert!(!tracked.state().tenants.contains_key(BASE));
        assert!(tracked.state().tenants["app:tenant:{2}:"]
            .modules
            .is_empty());
        assert_eq!(tracked.seq.load(Ordering::Acquire), 1);
        // FLUSHALL's null clears and counts.
        let seq = tracked.state().seq;
        tracked.learn(BASE, "balance", seq, "t", "m");
        assert!(!tracked.apply(1, &push(PushKind::Invalidate, vec![Value::Nil])));
        assert!(tracked.state().tenants.is_empty());
        assert_eq!(tracked.seq.load(Ordering::Acquire), 2);
    }
}
