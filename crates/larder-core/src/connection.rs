//! The connections behind a [`Handle`](crate::Handle), whatever the topology.
//!
//! ```text
//! topology    shared (request path)                  dedicated (blocking pops)
//! single      ConnectionManager (redis-rs)           pooled MultiplexedConnection
//! cluster     ClusterConnection (redis-rs: slots,    pooled ClusterConnection
//!             MOVED/ASK, reconnects)
//! sentinel    ConnectionManager to the primary the   pooled MultiplexedConnection to
//!             sentinels name; asked again after a    the primary
//!             fault that may be a failover
//! ```
//!
//! The pool is deadpool's, with a manager of ours for all three: deadpool-redis's
//! cluster and sentinel managers give no way to set the response timeout, and
//! their default (500 ms) would end every blocking pop longer than that.

use std::sync::{Arc, RwLock};
use std::time::Duration;

use redis::aio::{
    ConnectionLike, ConnectionManager, ConnectionManagerConfig, MultiplexedConnection,
};
use redis::cluster_async::ClusterConnection;
use redis::{Cmd, Pipeline, RedisError, RedisFuture, RedisResult, Value};

/// A connection to the handle's Redis: the node, the cluster or the current
/// primary. Cheap to clone (multiplexed); what [`Handle::run`](crate::Handle::run)
/// gives its closure. Use it like any redis-rs async connection.
#[derive(Clone)]
pub struct Connection(Conn);

#[derive(Clone)]
enum Conn {
    Node(ConnectionManager),
    Cluster(ClusterConnection),
    Sentinel(Arc<Primary>),
}

impl std::fmt::Debug for Connection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self.0 {
            Conn::Node(_) => "Connection::Node",
            Conn::Cluster(_) => "Connection::Cluster",
            Conn::Sentinel(_) => "Connection::Sentinel",
        })
    }
}

impl Connection {
    pub(crate) fn node(manager: ConnectionManager) -> Self {
        Self(Conn::Node(manager))
    }

    pub(crate) fn cluster(conn: ClusterConnection) -> Self {
        Self(Conn::Cluster(conn))
    }

    pub(crate) fn sentinel(primary: Arc<Primary>) -> Self {
        Self(Conn::Sentinel(primary))
    }

    /// The cluster connection, on a cluster (for commands routed to one node).
    pub(crate) fn as_cluster(&mut self) -> Option<&mut ClusterConnection> {
        match &mut self.0 {
            Conn::Cluster(c) => Some(c),
            _ => None,
        }
    }
}

impl ConnectionLike for Connection {
    fn req_packed_command<'a>(&'a mut self, cmd: &'a Cmd) -> RedisFuture<'a, Value> {
        match &mut self.0 {
            Conn::Node(c) => c.req_packed_command(cmd),
            Conn::Cluster(c) => c.req_packed_command(cmd),
            Conn::Sentinel(p) => Box::pin(async move {
                let mut c = p.connection().await?;
                p.watch(c.req_packed_command(cmd).await)
            }),
        }
    }

    fn req_packed_commands<'a>(
        &'a mut self,
        pipeline: &'a Pipeline,
        offset: usize,
        count: usize,
    ) -> RedisFuture<'a, Vec<Value>> {
        match &mut self.0 {
            Conn::Node(c) => c.req_packed_commands(pipeline, offset, count),
            Conn::Cluster(c) => c.req_packed_commands(pipeline, offset, count),
            Conn::Sentinel(p) => Box::pin(async move {
                let mut c = p.connection().await?;
                p.watch(c.req_packed_commands(pipeline, offset, count).await)
            }),
        }
    }

    fn get_db(&self) -> i64 {
        match &self.0 {
            Conn::Node(c) => c.get_db(),
            Conn::Cluster(c) => c.get_db(),
            Conn::Sentinel(p) => p.db,
        }
    }
}

/// The primary Sentinel names, found on first use and again after a fault that a
/// failover explains (the primary unreachable, or demoted: `READONLY`).
pub(crate) struct Primary {
    sentinel: tokio::sync::Mutex<redis::sentinel::SentinelClient>,
    manager_config: ConnectionManagerConfig,
    current: RwLock<Option<Arc<Resolved>>>,
    db: i64,
}

/// The primary the sentinels last named: its client (for dedicated and pub/sub
/// connections) and the request path's manager to it. Shared, so a call clones an
/// `Arc` and the manager, not the client's connection info.
struct Resolved {
    client: redis::Client,
    manager: ConnectionManager,
}

impl Primary {
    pub(crate) fn new(
        sentinel: redis::sentinel::SentinelClient,
        manager_config: ConnectionManagerConfig,
        db: i64,
    ) -> Self {
        Self {
            sentinel: tokio::sync::Mutex::new(sentinel),
            manager_config,
            current: RwLock::new(None),
            db,
        }
    }

    /// The current primary's client (asking the sentinels when none is known).
    pub(crate) async fn client(&self) -> RedisResult<redis::Client> {
        Ok(self.resolve().await?.client.clone())
    }

    async fn connection(&self) -> RedisResult<ConnectionManager> {
        Ok(self.resolve().await?.manager.clone())
    }

    async fn resolve(&self) -> RedisResult<Arc<Resolved>> {
        if let Some(known) = self.known() {
            return Ok(known);
        }
        let mut sentinel = self.sentinel.lock().await;
        // Another caller may have asked while we waited for the lock.
        if let Some(known) = self.known() {
            return Ok(known);
        }
        let client = sentinel.async_get_client().await?;
        let manager =
            ConnectionManager::new_lazy_with_config(client.clone(), self.manager_config.clone())?;
        tracing::info!(target: "larder::core", primary = %client.get_connection_info().addr(), "sentinel named the primary");
        let found = Arc::new(Resolved { client, manager });
        *self
            .current
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = Some(Arc::clone(&found));
        Ok(found)
    }

    fn known(&self) -> Option<Arc<Resolved>> {
        self.current
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone()
    }

    /// Forgets the primary after a fault a failover explains, so the next call asks
    /// the sentinels again.
    fn watch<T>(&self, result: RedisResult<T>) -> RedisResult<T> {
        if let Err(e) = &result {
            if may_be_failover(e) {
                self.forget();
            }
        }
        result
    }

    pub(crate) fn forget(&self) {
        *self
            .current
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = None;
    }
}

/// A fault after which the primary may have moved.
pub(crate) fn may_be_failover(e: &RedisError) -> bool {
    e.is_io_error()
        || e.is_connection_refusal()
        || e.is_connection_dropped()
        || e.kind() == redis::ErrorKind::Server(redis::ServerErrorKind::ReadOnly)
}

/// A dedicated connection's target: how the pool makes one. (One per handle.)
#[allow(clippy::large_enum_variant)]
pub(crate) enum Target {
    Node(redis::Client),
    Cluster(redis::cluster::ClusterClient),
    Sentinel(Arc<Primary>),
}

/// A dedicated connection (blocking pops, `WATCH`/`MULTI`), as the handle's pool
/// holds it; a clone of one is what [`Dedicated::connection`](crate::Dedicated::connection)
/// gives (multiplexed: cheap).
#[derive(Clone)]
pub struct OwnConnection(Own);

#[derive(Clone)]
enum Own {
    Node(MultiplexedConnection),
    Cluster(ClusterConnection),
}

impl std::fmt::Debug for OwnConnection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("OwnConnection")
    }
}

impl ConnectionLike for OwnConnection {
    fn req_packed_command<'a>(&'a mut self, cmd: &'a Cmd) -> RedisFuture<'a, Value> {
        match &mut self.0 {
            Own::Node(c) => c.req_packed_command(cmd),
            Own::Cluster(c) => c.req_packed_command(cmd),
        }
    }

    fn req_packed_commands<'a>(
        &'a mut self,
        pipeline: &'a Pipeline,
        offset: usize,
        count: usize,
    ) -> RedisFuture<'a, Vec<Value>> {
        match &mut self.0 {
            Own::Node(c) => c.req_packed_commands(pipeline, offset, count),
            Own::Cluster(c) => c.req_packed_commands(pipeline, offset, count),
        }
    }

    fn get_db(&self) -> i64 {
        match &self.0 {
            Own::Node(c) => c.get_db(),
            Own::Cluster(c) => c.get_db(),
        }
    }
}

/// Makes and checks dedicated connections for deadpool.
pub(crate) struct Manager {
    pub(crate) target: Target,
    pub(crate) connect_timeout: Duration,
    pub(crate) response_timeout: Duration,
}

impl deadpool::managed::Manager for Manager {
    type Type = OwnConnection;
    type Error = RedisError;

    async fn create(&self) -> Result<OwnConnection, RedisError> {
        let config = redis::AsyncConnectionConfig::new()
            .set_connection_timeout(Some(self.connect_timeout))
            .set_response_timeout(Some(self.response_timeout));
        match &self.target {
            Target::Node(client) => client
                .get_multiplexed_async_connection_with_config(&config)
                .await
                .map(|c| OwnConnection(Own::Node(c))),
            Target::Cluster(client) => {
                let config = redis::cluster::ClusterConfig::new()
                    .set_connection_timeout(self.connect_timeout)
                    .set_response_timeout(self.response_timeout);
                client
                    .get_async_connection_with_config(config)
                    .await
                    .map(|c| OwnConnection(Own::Cluster(c)))
            }
            Target::Sentinel(primary) => {
                let client = primary.client().await?;
                let made = client
                    .get_multiplexed_async_connection_with_config(&config)
                    .await;
                if let Err(e) = &made {
                    if may_be_failover(e) {
                        primary.forget();
                    }
                }
                made.map(|c| OwnConnection(Own::Node(c)))
            }
        }
    }

    async fn recycle(
        &self,
        conn: &mut OwnConnection,
        _: &deadpool::managed::Metrics,
    ) -> deadpool::managed::RecycleResult<RedisError> {
        // Behind Sentinel, `ROLE` rather than `PING`: a pooled connection to a
        // primary that a failover demoted still answers `PING`, and would give
        // writes `READONLY`.
        if matches!(self.target, Target::Sentinel(_)) {
            let role: Value = redis::cmd("ROLE").query_async(conn).await?;
            if matches!(role, Value::Array(parts) if is_replica(&parts)) {
                return Err(deadpool::managed::RecycleError::message(
                    "the node is now a replica",
                ));
            }
            return Ok(());
        }
        let _: String = redis::cmd("PING").query_async(conn).await?;
        Ok(())
    }
}

fn is_replica(parts: &[Value]) -> bool {
    matches!(parts.first(), Some(Value::BulkString(b)) if b.as_slice() == b"slave")
}
