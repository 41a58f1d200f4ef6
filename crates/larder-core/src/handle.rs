//! The one handle every component shares.

use std::fmt;
use std::future::Future;
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use redis::aio::ConnectionManager;
use redis::{FromRedisValue, RedisResult};

use crate::config::{Config, ConfigError, RedisUrl};
use crate::connection::{Connection, Manager, OwnConnection, Primary, Target};
use crate::error::{BackendErrorKind, Error, UnavailableReason};
use crate::guard::Guard;
use crate::health::HealthReport;
use crate::keyspace::Keyspace;
use crate::topology::{NodeAuth, Topology};

/// Response timeout of dedicated connections, which carry blocking commands whose
/// own server-side timeout is longer than the request-path deadline.
const DEDICATED_RESPONSE_TIMEOUT: Duration = Duration::from_secs(60);

/// A cheap-to-clone handle to Redis (or to nothing, in-process mode), shared by the
/// cache, sessions, rate limits and jobs.
///
/// - Request-path commands ride one multiplexed, self-reconnecting connection
///   ([`run`](Self::run), [`query`](Self::query), [`script`](Self::script)): no
///   checkout, no per-request connection.
/// - Commands that need a connection to themselves (blocking pops, `WATCH`/`MULTI`)
///   borrow one from a deadpool pool ([`dedicated`](Self::dedicated)); pub/sub gets its
///   own connection ([`pubsub`](Self::pubsub)).
/// - Every call goes through the [`Guard`]: a deadline and a circuit breaker.
///
/// Building a handle never waits for Redis: the connection is made lazily, so an app
/// starts while Redis is down and picks it up when it comes back.
///
/// ```no_run
/// # async fn demo() -> Result<(), larder_core::Error> {
/// use larder_core::Handle;
///
/// let handle = Handle::from_env()?; // REDIS_URL unset: in-process mode
/// if handle.is_redis_configured() {
///     let n: i64 = handle.query("incr", redis::cmd("INCR").arg("hits")).await?;
///     println!("{n}");
/// }
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct Handle {
    inner: Arc<Inner>,
}

struct Inner {
    config: Config,
    keyspace: Keyspace,
    guard: Guard,
    redis: Option<Redis>,
}

struct Redis {
    topology: Topology,
    shared: Shared,
    pool: deadpool::managed::Pool<Manager>,
}

/// The request path's connection, per topology. (One per handle.)
#[allow(clippy::large_enum_variant)]
enum Shared {
    /// One node: a self-reconnecting manager, rebuilt after an authentication
    /// failure (redis-rs does not retry those by itself).
    Node {
        client: redis::Client,
        manager_config: redis::aio::ConnectionManagerConfig,
        manager: RwLock<ConnectionManager>,
    },
    /// redis-rs's cluster connection: slots, redirections and reconnection are its
    /// own. `seeds` are for pub/sub, which any node serves for the whole cluster.
    Cluster {
        conn: redis::cluster_async::ClusterConnection,
        seeds: Vec<redis::Client>,
    },
    /// The primary the sentinels name.
    Sentinel(Arc<Primary>),
}

impl fmt::Debug for Handle {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Handle")
            .field("redis", &self.inner.redis.as_ref().map(|r| &r.topology))
            .field("keyspace", &self.inner.keyspace)
            .field("breaker", &self.inner.guard.state())
            .finish_non_exhaustive()
    }
}

impl Handle {
    /// Builds a handle from `config`. Does not connect: the first call does.
    ///
    /// Must be called inside a Tokio runtime when a Redis URL is configured (the
    /// connection's background tasks are spawned on it).
    ///
    /// # Errors
    /// [`Error::Config`] for an invalid URL or prefix, or when no runtime is running.
    pub fn new(config: Config) -> Result<Self, Error> {
        let keyspace = Keyspace::new(&config.key_prefix)
            .map_err(|e| ConfigError::Invalid {
                var: "CACHE_KEY_PREFIX".into(),
                problem: e.to_string(),
            })?
            .with_hash_tag(config.hash_tag);
        let secrets = config
            .redis
            .as_ref()
            .map(Topology::passwords)
            .unwrap_or_default();
        let guard = Guard::with_secrets(
            config.op_timeout,
            config.breaker_threshold,
            config.breaker_cooldown,
            secrets,
        );
        let redis = match &config.redis {
            None => None,
            Some(topology) => Some(Redis::new(topology, &config, &guard)?),
        };
        if let Some(r) = &redis {
            tracing::info!(target: "larder::core", redis = %r.topology, topology = r.topology.kind(), prefix = %keyspace.prefix(), "larder handle ready (redis)");
        } else {
            tracing::info!(target: "larder::core", prefix = %keyspace.prefix(), "larder handle ready (in-process: no REDIS_URL)");
        }
        let handle = Self {
            inner: Arc::new(Inner {
                config,
                keyspace,
                guard,
                redis,
            }),
        };
        if handle.inner.redis.is_some() {
            // Connect now, in the background, instead of inside the first request's
            // deadline: a slow handshake (TLS, a remote server) then completes even
            // while requests time out, and the first request finds a connection.
            tokio::spawn(handle.clone().warm_up());
        }
        Ok(handle)
    }

    /// Makes the first connection, bounded by the connect timeout, and says once in
    /// the log whether Redis is reachable at startup.
    async fn warm_up(self) {
        let Ok(redis) = self.redis() else { return };
        let deadline = self.inner.config.connect_timeout;
        let result = self
            .inner
            .guard
            .run_with_deadline("connect", deadline, || {
                let mut conn = redis.connection();
                async move { redis::cmd("PING").query_async::<String>(&mut conn).await }
            })
            .await;
        match result {
            Ok(_) => {
                tracing::info!(target: "larder::core", redis = %redis.topology, "redis connected");
            }
            Err(e) => tracing::warn!(
                target: "larder::core",
                redis = %redis.topology,
                error = %e,
                "redis not reachable at startup: running degraded until it is"
            ),
        }
    }

    /// Builds a handle from the environment (see [`Config::from_env`]).
    ///
    /// # Errors
    /// As [`Config::from_env`] and [`Handle::new`].
    pub fn from_env() -> Result<Self, Error> {
        Self::new(Config::from_env()?)
    }

    /// A handle with the default configuration and no Redis: every component runs on
    /// its in-process tier.
    #[must_use]
    pub fn in_process() -> Self {
        let config = Config::default();
        let keyspace = Keyspace::new(&config.key_prefix)
            .unwrap_or_else(|_| unreachable!("the default prefix is valid"));
        Self {
            inner: Arc::new(Inner {
                guard: Guard::new(
                    config.op_timeout,
                    config.breaker_threshold,
                    config.breaker_cooldown,
                ),
                keyspace,
                config,
                redis: None,
            }),
        }
    }

    /// The configuration the handle was built from.
    #[must_use]
    pub fn config(&self) -> &Config {
        &self.inner.config
    }

    /// The keyspace every component builds its keys with.
    #[must_use]
    pub fn keyspace(&self) -> &Keyspace {
        &self.inner.keyspace
    }

    /// The guard (deadline and circuit breaker).
    #[must_use]
    pub fn guard(&self) -> &Guard {
        &self.inner.guard
    }

    /// Whether a Redis URL is configured. When false, components use their in-process
    /// tier and every Redis call returns [`Error::Unavailable`] at once.
    #[must_use]
    pub fn is_redis_configured(&self) -> bool {
        self.inner.redis.is_some()
    }

    /// The configured Redis URL, for a single node (its `Display` hides the
    /// password); `None` without Redis or on another topology.
    #[must_use]
    pub fn redis_url(&self) -> Option<&RedisUrl> {
        match self.topology()? {
            Topology::Single(url) => Some(url),
            _ => None,
        }
    }

    /// The configured Redis topology (its `Display` and `Debug` hide passwords).
    #[must_use]
    pub fn topology(&self) -> Option<&Topology> {
        self.inner.redis.as_ref().map(|r| &r.topology)
    }

    /// Whether the handle runs on a Redis Cluster: a component whose commands
    /// would touch two slots (or that needs one node's state) asks this.
    #[must_use]
    pub fn is_cluster(&self) -> bool {
        matches!(self.topology(), Some(Topology::Cluster(_)))
    }

    fn redis(&self) -> Result<&Redis, Error> {
        self.inner.redis.as_ref().ok_or(Error::Unavailable {
            reason: UnavailableReason::NotConfigured,
        })
    }

    /// Runs `call` on the shared multiplexed connection, under the guard.
    ///
    /// `call` receives a clone of the connection ([`Connection`]: the node, the
    /// cluster or the current primary; an `Arc` clone). It may be invoked twice
    /// when the first attempt was refused at connect time.
    ///
    /// # Errors
    /// See [`Guard::run`]; [`Error::Unavailable`] when no Redis is configured.
    pub async fn run<T, F, Fut>(&self, op: &'static str, call: F) -> Result<T, Error>
    where
        F: FnMut(Connection) -> Fut,
        Fut: Future<Output = RedisResult<T>>,
    {
        self.run_with_deadline(op, self.inner.guard.deadline(), call)
            .await
    }

    /// [`run`](Self::run) with a deadline of its own instead of the guard's, for a
    /// command that waits on the server by design and must use the shared
    /// connection (`WAIT` covers the writes of the connection it is sent on).
    ///
    /// # Errors
    /// As [`run`](Self::run).
    pub async fn run_with_deadline<T, F, Fut>(
        &self,
        op: &'static str,
        deadline: Duration,
        mut call: F,
    ) -> Result<T, Error>
    where
        F: FnMut(Connection) -> Fut,
        Fut: Future<Output = RedisResult<T>>,
    {
        let redis = self.redis()?;
        let result = self
            .inner
            .guard
            .run_with_deadline(op, deadline, || call(redis.connection()))
            .await;
        if let Err(Error::Backend { source, .. }) = &result {
            if source.kind() == BackendErrorKind::Auth {
                redis.rebuild_after_auth_failure();
            }
        }
        result
    }

    /// Runs one command on the shared connection.
    ///
    /// # Errors
    /// As [`run`](Self::run).
    pub async fn query<T: FromRedisValue>(
        &self,
        op: &'static str,
        cmd: &redis::Cmd,
    ) -> Result<T, Error> {
        self.run(
            op,
            |mut conn| async move { cmd.query_async(&mut conn).await },
        )
        .await
    }

    /// Runs a pipeline (one round trip) on the shared connection.
    ///
    /// # Errors
    /// As [`run`](Self::run).
    pub async fn pipeline<T: FromRedisValue>(
        &self,
        op: &'static str,
        pipe: &redis::Pipeline,
    ) -> Result<T, Error> {
        self.run(
            op,
            |mut conn| async move { pipe.query_async(&mut conn).await },
        )
        .await
    }

    /// Runs a Lua script by SHA (`EVALSHA`, reloading it on `NOSCRIPT`).
    ///
    /// # Errors
    /// As [`run`](Self::run).
    pub async fn script<T: FromRedisValue>(
        &self,
        op: &'static str,
        invocation: &redis::ScriptInvocation<'_>,
    ) -> Result<T, Error> {
        self.run(op, |mut conn| async move {
            invocation.invoke_async(&mut conn).await
        })
        .await
    }

    /// Runs a Lua script by SHA from a ready `EVALSHA` command (see
    /// [`evalsha_cmd`](Self::evalsha_cmd)), loading `script` and retrying once on
    /// `NOSCRIPT`. For hot paths: unlike [`script`](Self::script), the keys and
    /// arguments are written once, straight into the command.
    ///
    /// ```
    /// # async fn demo(handle: larder_core::Handle) -> Result<(), larder_core::Error> {
    /// let script = larder_core::redis::Script::new("return #KEYS + #ARGV");
    /// let mut cmd = larder_core::Handle::evalsha_cmd(&script, 1);
    /// cmd.arg("some:key").arg(42);
    /// let n: i64 = handle.evalsha("count_args", &script, &cmd).await?;
    /// # Ok(()) }
    /// ```
    ///
    /// # Errors
    /// As [`run`](Self::run).
    pub async fn evalsha<T: FromRedisValue>(
        &self,
        op: &'static str,
        script: &redis::Script,
        cmd: &redis::Cmd,
    ) -> Result<T, Error> {
        self.run(op, |mut conn| async move {
            match cmd.query_async(&mut conn).await {
                Err(e)
                    if e.kind() == redis::ErrorKind::Server(redis::ServerErrorKind::NoScript) =>
                {
                    script.load_async(&mut conn).await?;
                    cmd.query_async(&mut conn).await
                }
                other => other,
            }
        })
        .await
    }

    /// The start of an `EVALSHA` command for `script` with `keys` keys: append the
    /// keys, then the arguments, and run it with [`evalsha`](Self::evalsha). Sized
    /// for a few short arguments per key, so that writing them rarely reallocates.
    #[must_use]
    pub fn evalsha_cmd(script: &redis::Script, keys: usize) -> redis::Cmd {
        let mut cmd = redis::Cmd::with_capacity(3 + 6 * keys, 64 + 128 * keys);
        cmd.arg("EVALSHA").arg(script.get_hash()).arg(keys);
        cmd
    }

    /// Borrows a dedicated connection from the pool (for `WATCH`/`MULTI`; blocking
    /// commands go through [`blocking`](Self::blocking)). The checkout is bounded by
    /// the pool's wait timeout and the guard's deadline; calls made on it afterwards
    /// should go through [`Guard::run_with_deadline`]. The connection returns to the
    /// pool when dropped, with whatever state it holds: a caller that may abandon a
    /// call on it (a dropped future, a deadline) should take it out of the pool with
    /// [`Dedicated::discard`], as `blocking` does.
    ///
    /// # Errors
    /// As [`run`](Self::run).
    pub async fn dedicated(&self) -> Result<Dedicated, Error> {
        let redis = self.redis()?;
        let deadline = self
            .inner
            .config
            .pool_wait_timeout
            .max(self.inner.config.op_timeout)
            + self.inner.config.connect_timeout;
        self.inner
            .guard
            .run_with_deadline("pool_get", deadline, || async {
                redis.pool.get().await.map(Dedicated).map_err(pool_error)
            })
            .await
    }

    /// Runs a blocking command (`BLPOP`, `BLMOVE`, ... with its server-side timeout
    /// among its arguments) on a dedicated connection, bounded by `deadline` (give
    /// it some room beyond the command's own timeout).
    ///
    /// The connection goes back to the pool only when the command completed. If
    /// the call is abandoned (the deadline passed, an error, or the caller dropped
    /// the future, as a worker's shutdown does), the command may still be blocked
    /// in Redis: the next borrower's commands would queue behind it, and a `BLPOP`
    /// would still take an element nobody receives. The connection is then taken
    /// out of the pool and closed, which ends the command in Redis.
    ///
    /// # Errors
    /// As [`run`](Self::run).
    pub async fn blocking<T: FromRedisValue>(
        &self,
        op: &'static str,
        cmd: &redis::Cmd,
        deadline: Duration,
    ) -> Result<T, Error> {
        let pooled = self.dedicated().await?;
        let multiplexed = pooled.connection();
        let mut held = Blocking(Some(pooled));
        let result = self
            .inner
            .guard
            .run_with_deadline(op, deadline, || {
                let mut c = multiplexed.clone();
                async move { cmd.query_async(&mut c).await }
            })
            .await;
        if result.is_ok() {
            held.release();
        }
        result
    }

    /// Opens a pub/sub connection, bounded by the connect timeout. On a cluster it
    /// reaches one node (a `PUBLISH` reaches every node's subscribers); behind
    /// Sentinel, the current primary.
    ///
    /// # Errors
    /// As [`run`](Self::run).
    pub async fn pubsub(&self) -> Result<redis::aio::PubSub, Error> {
        let redis = self.redis()?;
        self.inner
            .guard
            .run_with_deadline("pubsub_connect", self.inner.config.connect_timeout, || {
                redis.pubsub()
            })
            .await
    }

    /// Opens a multiplexed connection of its own speaking RESP3, whose out-of-band
    /// pushes go to `push`: client-side tracking's invalidations, and redis-rs's
    /// `Disconnection` when the connection ends (it does not reconnect; open another).
    /// Bounded by the connect timeout. It has no response timeout of its own: run
    /// calls on it through [`Guard::run`], whose deadline ends the wait.
    ///
    /// # Errors
    /// As [`run`](Self::run); a server without RESP3 (before Redis 6) fails the
    /// handshake. On a cluster, [`Error::Unavailable`] with
    /// [`UnavailableReason::NotConfigured`]: one node's connection would see one
    /// node's keys (callers read without tracking there).
    pub async fn push_connection(
        &self,
        push: impl redis::aio::AsyncPushSender,
    ) -> Result<redis::aio::MultiplexedConnection, Error> {
        let redis = self.redis()?;
        let client = match &redis.shared {
            Shared::Node { client, .. } => client.clone(),
            Shared::Sentinel(primary) => {
                let connect = self.inner.config.connect_timeout;
                self.inner
                    .guard
                    .run_with_deadline("push_connect", connect, || primary.client())
                    .await?
            }
            Shared::Cluster { .. } => {
                return Err(Error::Unavailable {
                    reason: UnavailableReason::NotConfigured,
                })
            }
        };
        let info = client.get_connection_info().clone();
        let settings = info
            .redis_settings()
            .clone()
            .set_protocol(redis::ProtocolVersion::RESP3);
        let client =
            redis::Client::open(info.set_redis_settings(settings)).map_err(|e| Error::Backend {
                op: "push_connect",
                source: self.inner.guard.redact(&e),
            })?;
        let timeout = self.inner.config.connect_timeout;
        let config = redis::AsyncConnectionConfig::new()
            .set_connection_timeout(Some(timeout))
            .set_response_timeout(None)
            .set_push_sender(push);
        self.inner
            .guard
            .run_with_deadline("push_connect", timeout, || {
                client.get_multiplexed_async_connection_with_config(&config)
            })
            .await
    }

    /// Checks Redis with one `PING` (under the guard) and reports.
    ///
    /// While the breaker is open this does no network I/O and reports degraded.
    pub async fn health(&self) -> HealthReport {
        if self.inner.redis.is_none() {
            return HealthReport::in_process(self.inner.config.cache_enabled);
        }
        let started = Instant::now();
        let result: Result<String, Error> = self.query("health_ping", &redis::cmd("PING")).await;
        let guard = &self.inner.guard;
        match result {
            Ok(_) => HealthReport::connected(
                self.inner.config.cache_enabled,
                guard.state(),
                started.elapsed(),
                guard.last_error(),
            ),
            Err(e) => {
                HealthReport::unavailable(self.inner.config.cache_enabled, guard.state(), e.kind())
            }
        }
    }
}

impl Redis {
    fn new(topology: &Topology, config: &Config, guard: &Guard) -> Result<Self, Error> {
        if tokio::runtime::Handle::try_current().is_err() {
            return Err(ConfigError::Invalid {
                var: "Handle::new".into(),
                problem: "must be called inside a Tokio runtime".into(),
            }
            .into());
        }
        let var = match topology {
            Topology::Single(_) => "REDIS_URL",
            Topology::Cluster(_) => "REDIS_CLUSTER_NODES",
            Topology::Sentinel(_) => "REDIS_SENTINEL_NODES",
        };
        let redact = |e: redis::RedisError| -> Error {
            ConfigError::Invalid {
                var: var.into(),
                problem: guard.redact(&e).message().to_owned(),
            }
            .into()
        };
        let manager_config = redis::aio::ConnectionManagerConfig::new()
            .set_connection_timeout(Some(config.connect_timeout))
            // No response timeout of redis-rs's own: every command on this connection
            // runs under the guard, whose deadline (never longer) ends the wait; a
            // second timer per call is work for nothing (BENCHMARKS.md, "one timer
            // per Redis call"). The connect timeout above bounds the handshake.
            .set_response_timeout(None)
            // Reconnection happens on the next call after a failure; the breaker spaces
            // those out. Retrying inside one attempt would only hold requests longer.
            .set_number_of_retries(1)
            .set_min_delay(Duration::from_millis(5))
            .set_max_delay(Duration::from_millis(100));
        let (shared, target) = match topology {
            Topology::Single(url) => {
                let client = redis::Client::open(url.expose()).map_err(redact)?;
                let manager =
                    ConnectionManager::new_lazy_with_config(client.clone(), manager_config.clone())
                        .map_err(redact)?;
                let shared = Shared::Node {
                    client: client.clone(),
                    manager_config,
                    manager: RwLock::new(manager),
                };
                (shared, Target::Node(client))
            }
            Topology::Cluster(c) => {
                let seeds: Vec<&str> = c.seeds.iter().map(RedisUrl::expose).collect();
                let mut builder = redis::cluster::ClusterClientBuilder::new(seeds.clone())
                    .connection_timeout(config.connect_timeout)
                    // Slot refreshes and redirections are retried inside the
                    // guard's deadline, not for seconds.
                    .retries(2)
                    .min_retry_wait(5)
                    .max_retry_wait(50);
                builder = with_auth(builder, &c.auth);
                let client = builder.build().map_err(redact)?;
                let conn = client.get_pending_async_connection_with_config(
                    redis::cluster::ClusterConfig::new()
                        .set_connection_timeout(config.connect_timeout)
                        // The guard's deadline ends every wait on this connection.
                        .set_response_timeout(DEDICATED_RESPONSE_TIMEOUT),
                );
                let seeds = seeds
                    .iter()
                    .map(|s| redis::Client::open(*s))
                    .collect::<Result<Vec<_>, _>>()
                    .map_err(redact)?;
                (Shared::Cluster { conn, seeds }, Target::Cluster(client))
            }
            Topology::Sentinel(s) => {
                let sentinels: Vec<&str> = s.sentinels.iter().map(RedisUrl::expose).collect();
                let mut node = redis::RedisConnectionInfo::default().set_db(s.auth.db);
                if let Some(user) = &s.auth.username {
                    node = node.set_username(user);
                }
                if let Some(password) = &s.auth.password {
                    node = node.set_password(password);
                }
                let mut info = redis::sentinel::SentinelNodeConnectionInfo::default()
                    .set_redis_connection_info(node);
                if s.sentinels[0].is_tls() {
                    info = info.set_tls_mode(redis::TlsMode::Secure);
                }
                let sentinel = redis::sentinel::SentinelClient::build(
                    sentinels,
                    s.master.clone(),
                    Some(info),
                    redis::sentinel::SentinelServerType::Master,
                )
                .map_err(redact)?;
                let primary = Arc::new(Primary::new(sentinel, manager_config, s.auth.db));
                (
                    Shared::Sentinel(Arc::clone(&primary)),
                    Target::Sentinel(primary),
                )
            }
        };
        let manager = Manager {
            target,
            connect_timeout: config.connect_timeout,
            response_timeout: DEDICATED_RESPONSE_TIMEOUT,
        };
        let pool = deadpool::managed::Pool::builder(manager)
            .max_size(config.pool_size)
            .wait_timeout(Some(config.pool_wait_timeout))
            .create_timeout(Some(config.connect_timeout))
            .recycle_timeout(Some(config.op_timeout.max(Duration::from_millis(100))))
            .runtime(deadpool::Runtime::Tokio1)
            .build()
            .map_err(|e| ConfigError::Invalid {
                var: "LARDER_POOL_SIZE".into(),
                problem: e.to_string(),
            })?;
        Ok(Self {
            topology: topology.clone(),
            shared,
            pool,
        })
    }

    fn connection(&self) -> Connection {
        match &self.shared {
            Shared::Node { manager, .. } => Connection::node(
                manager
                    .read()
                    .unwrap_or_else(std::sync::PoisonError::into_inner)
                    .clone(),
            ),
            Shared::Cluster { conn, .. } => Connection::cluster(conn.clone()),
            Shared::Sentinel(primary) => Connection::sentinel(Arc::clone(primary)),
        }
    }

    /// redis-rs reconnects by itself after I/O errors, but not after an
    /// authentication failure: a fresh manager (behind Sentinel, a fresh look-up
    /// of the primary) picks up fixed credentials.
    fn rebuild_after_auth_failure(&self) {
        match &self.shared {
            Shared::Node {
                client,
                manager_config,
                manager,
            } => {
                if let Ok(fresh) =
                    ConnectionManager::new_lazy_with_config(client.clone(), manager_config.clone())
                {
                    *manager
                        .write()
                        .unwrap_or_else(std::sync::PoisonError::into_inner) = fresh;
                }
            }
            Shared::Sentinel(primary) => primary.forget(),
            Shared::Cluster { .. } => {}
        }
    }

    /// A pub/sub connection: the node, the first cluster seed that answers, or the
    /// current primary.
    async fn pubsub(&self) -> RedisResult<redis::aio::PubSub> {
        match &self.shared {
            Shared::Node { client, .. } => client.get_async_pubsub().await,
            Shared::Sentinel(primary) => primary.client().await?.get_async_pubsub().await,
            Shared::Cluster { seeds, .. } => {
                let mut last = None;
                for seed in seeds {
                    match seed.get_async_pubsub().await {
                        Ok(pubsub) => return Ok(pubsub),
                        Err(e) => last = Some(e),
                    }
                }
                Err(last.unwrap_or_else(|| {
                    std::io::Error::other("no cluster seed to subscribe on").into()
                }))
            }
        }
    }
}

/// The data nodes' credentials on a cluster client (the seed URLs' own win).
fn with_auth(
    mut builder: redis::cluster::ClusterClientBuilder,
    auth: &NodeAuth,
) -> redis::cluster::ClusterClientBuilder {
    if let Some(user) = &auth.username {
        builder = builder.username(user);
    }
    if let Some(password) = &auth.password {
        builder = builder.password(password);
    }
    builder
}

/// A connection of its own, borrowed from the handle's pool
/// ([`Handle::dedicated`]); it goes back to the pool when dropped. Use it like any
/// redis-rs async connection.
pub struct Dedicated(deadpool::managed::Object<Manager>);

impl fmt::Debug for Dedicated {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Dedicated")
    }
}

impl Dedicated {
    /// A clone of the connection (multiplexed: cheap), for a call that must be
    /// retried or run under a deadline ([`Guard::run_with_deadline`]).
    #[must_use]
    pub fn connection(&self) -> OwnConnection {
        (*self.0).clone()
    }

    /// Takes the connection out of the pool and closes it (for a caller that
    /// abandoned a call on it, which may still be running in Redis).
    pub fn discard(self) {
        drop(deadpool::managed::Object::take(self.0));
    }
}

impl redis::aio::ConnectionLike for Dedicated {
    fn req_packed_command<'a>(
        &'a mut self,
        cmd: &'a redis::Cmd,
    ) -> redis::RedisFuture<'a, redis::Value> {
        self.0.req_packed_command(cmd)
    }

    fn req_packed_commands<'a>(
        &'a mut self,
        pipeline: &'a redis::Pipeline,
        offset: usize,
        count: usize,
    ) -> redis::RedisFuture<'a, Vec<redis::Value>> {
        self.0.req_packed_commands(pipeline, offset, count)
    }

    fn get_db(&self) -> i64 {
        self.0.get_db()
    }
}

/// A pooled connection carrying a blocking command: dropped without
/// [`release`](Self::release), it leaves the pool and closes (see
/// [`Handle::blocking`]).
struct Blocking(Option<Dedicated>);

impl Blocking {
    /// The command completed: the connection may serve the next borrower.
    fn release(&mut self) {
        drop(self.0.take());
    }
}

impl Drop for Blocking {
    fn drop(&mut self) {
        if let Some(conn) = self.0.take() {
            conn.discard();
        }
    }
}

fn pool_error(e: deadpool::managed::PoolError<redis::RedisError>) -> redis::RedisError {
    match e {
        deadpool::managed::PoolError::Backend(e) => e,
        deadpool::managed::PoolError::Timeout(_) => std::io::Error::new(
            std::io::ErrorKind::TimedOut,
            "timed out waiting for a pooled connection",
        )
        .into(),
        other => std::io::Error::other(other.to_string()).into(),
    }
}
