//! One test body on every Redis topology larder supports.

use std::collections::BTreeMap;

use crate::{RedisCluster, RedisServer, SentinelSet};

/// A Redis topology.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TopologyKind {
    /// One `redis-server`.
    Single,
    /// A [`RedisCluster`]: three primaries, one replica each.
    Cluster,
    /// A [`SentinelSet`]: a primary, a replica, three sentinels.
    Sentinel,
}

/// A running Redis of any topology, killed when dropped. Tests configure larder
/// from [`vars`](Self::vars), the same variables an operator sets.
#[derive(Debug)]
// One per test, never moved around: the variants' sizes do not matter.
#[allow(clippy::large_enum_variant)]
pub enum Redis {
    /// One node.
    Single(RedisServer),
    /// A cluster.
    Cluster(RedisCluster),
    /// A primary behind Sentinel.
    Sentinel(SentinelSet),
}

impl Redis {
    /// Starts a Redis of `kind` and waits until it is ready.
    ///
    /// # Panics
    /// As [`RedisServer::start`], [`RedisCluster::start`], [`SentinelSet::start`].
    #[must_use]
    pub fn start(kind: TopologyKind) -> Self {
        match kind {
            TopologyKind::Single => Self::Single(RedisServer::start()),
            TopologyKind::Cluster => Self::Cluster(RedisCluster::start()),
            TopologyKind::Sentinel => Self::Sentinel(SentinelSet::start()),
        }
    }

    /// Which topology this is.
    #[must_use]
    pub fn kind(&self) -> TopologyKind {
        match self {
            Self::Single(_) => TopologyKind::Single,
            Self::Cluster(_) => TopologyKind::Cluster,
            Self::Sentinel(_) => TopologyKind::Sentinel,
        }
    }

    /// The variables that point larder at this Redis: `REDIS_URL`,
    /// `REDIS_CLUSTER_NODES`, or `REDIS_SENTINEL_NODES` and `REDIS_SENTINEL_MASTER`.
    #[must_use]
    pub fn vars(&self) -> Vec<(&'static str, String)> {
        match self {
            Self::Single(server) => vec![("REDIS_URL", server.url())],
            Self::Cluster(cluster) => {
                // Two seeds: the rest is discovered.
                vec![("REDIS_CLUSTER_NODES", cluster.seed_urls()[..2].join(","))]
            }
            Self::Sentinel(set) => vec![
                ("REDIS_SENTINEL_NODES", set.sentinel_urls().join(",")),
                ("REDIS_SENTINEL_MASTER", set.master_name().to_owned()),
            ],
        }
    }

    /// The data nodes that are primaries now.
    #[must_use]
    pub fn primaries(&self) -> Vec<&RedisServer> {
        match self {
            Self::Single(server) => vec![server],
            Self::Cluster(cluster) => cluster
                .primaries()
                .into_iter()
                .map(|i| cluster.node(i))
                .collect(),
            Self::Sentinel(set) => vec![set.primary()],
        }
    }

    /// Runs one command on the primary that holds `key` (raw RESP reply).
    #[must_use]
    pub fn command_on_key(&self, key: &str, args: &[&str]) -> String {
        match self {
            Self::Cluster(cluster) => cluster.node(cluster.primary_of_key(key)).command(args),
            Self::Single(server) => server.command(args),
            Self::Sentinel(set) => set.primary().command(args),
        }
    }

    /// Each primary's command counts (`INFO commandstats`), by node port.
    #[must_use]
    pub fn command_calls(&self) -> BTreeMap<u16, BTreeMap<String, u64>> {
        self.primaries()
            .into_iter()
            .map(|n| (n.port(), n.command_calls()))
            .collect()
    }

    /// Stops every data node (sentinels keep running): Redis is gone.
    pub fn stop(&mut self) {
        self.each_data_node(RedisServer::stop);
    }

    /// Restarts every stopped data node.
    pub fn restart(&mut self) {
        self.each_data_node(|n| {
            if !n.is_running() {
                n.restart();
            }
        });
        if let Self::Cluster(cluster) = self {
            cluster.wait_ready();
        }
    }

    /// Freezes every data node (SIGSTOP).
    pub fn freeze(&mut self) {
        self.each_data_node(RedisServer::freeze);
    }

    /// Thaws every frozen data node (and, for a cluster, waits until it is ready:
    /// its nodes may have judged each other failed meanwhile).
    pub fn thaw(&mut self) {
        self.each_data_node(|n| {
            if n.is_frozen() {
                n.thaw();
            }
        });
        if let Self::Cluster(cluster) = self {
            cluster.wait_ready();
        }
    }

    /// The number of keys on every primary together.
    #[must_use]
    pub fn dbsize(&self) -> u64 {
        self.primaries()
            .iter()
            .map(|n| {
                n.command(&["DBSIZE"])
                    .trim()
                    .trim_start_matches(':')
                    .parse::<u64>()
                    .unwrap_or_else(|_| panic!("DBSIZE of {}", n.port()))
            })
            .sum()
    }

    /// Calls of `command` on every primary together (`INFO commandstats`).
    #[must_use]
    pub fn calls(&self, command: &str) -> u64 {
        self.command_calls()
            .values()
            .map(|calls| calls.get(command).copied().unwrap_or(0))
            .sum()
    }

    /// Each primary's count of the commands clients sent (`INFO commandstats`),
    /// without the housekeeping that replicas, sentinels and cluster peers send on
    /// their own, the `INFO` that measures it, `PUBLISH` (sentinels publish their
    /// hellos on the primary) and the commands of `skip` (say, those a script runs
    /// inside its one `EVALSHA`).
    #[must_use]
    pub fn client_calls(&self, skip: &[&str]) -> Vec<u64> {
        const HOUSEKEEPING: [&str; 10] = [
            "info", "ping", "replconf", "cluster", "role", "client", "hello", "select", "command",
            "publish",
        ];
        self.command_calls()
            .values()
            .map(|calls| {
                calls
                    .iter()
                    .filter(|(name, _)| {
                        !HOUSEKEEPING.iter().any(|h| name.starts_with(h))
                            && !skip.contains(&name.as_str())
                    })
                    .map(|(_, n)| n)
                    .sum()
            })
            .collect()
    }

    fn each_data_node(&mut self, mut f: impl FnMut(&mut RedisServer)) {
        match self {
            Self::Single(server) => f(server),
            Self::Cluster(cluster) => {
                for i in 0..cluster.nodes().len() {
                    f(cluster.node_mut(i));
                }
            }
            Self::Sentinel(set) => {
                for node in set.data_nodes_mut() {
                    f(node);
                }
            }
        }
    }
}

/// Runs one async test body on every topology: expands to a module named after
/// the test with three tests, `single`, `cluster` and `sentinel`, each handing the
/// body a fresh [`Redis`] of its kind (`&Redis`, or `&mut Redis` for a body that
/// stops, freezes or restarts it). The tests run on a two-thread Tokio runtime,
/// or under the test attribute given first (`#[actix_web::test]` for Actix's test
/// harness).
///
/// ```ignore
/// larder_testing::on_every_topology!(async fn counts(redis: &Redis) {
///     let handle = handle_on(redis);
///     // ...
/// });
/// larder_testing::on_every_topology!(#[actix_web::test] async fn serves(redis: &Redis) {
///     // ...
/// });
/// ```
#[macro_export]
macro_rules! on_every_topology {
    (async fn $name:ident($redis:ident: &Redis $(,)?) $body:block) => {
        $crate::on_every_topology!(
            #[::tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $name($redis: &Redis) $body
        );
    };
    (async fn $name:ident($redis:ident: &mut Redis $(,)?) $body:block) => {
        $crate::on_every_topology!(
            #[::tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $name($redis: &mut Redis) $body
        );
    };
    (#[$test:meta] async fn $name:ident($redis:ident: &Redis $(,)?) $body:block) => {
        $crate::on_every_topology!(@tests $test, $name, $redis, &$crate::Redis, [&], $body);
    };
    (#[$test:meta] async fn $name:ident($redis:ident: &mut Redis $(,)?) $body:block) => {
        $crate::on_every_topology!(@tests $test, $name, $redis, &mut $crate::Redis, [&mut], $body);
    };
    (@tests $test:meta, $name:ident, $redis:ident, $ty:ty, [$($borrow:tt)+], $body:block) => {
        mod $name {
            #[allow(unused_imports)]
            use super::*;

            async fn body($redis: $ty) $body

            #[$test]
            async fn single() {
                body($($borrow)+ $crate::Redis::start($crate::TopologyKind::Single)).await;
            }

            #[$test]
            async fn cluster() {
                body($($borrow)+ $crate::Redis::start($crate::TopologyKind::Cluster)).await;
            }

            #[$test]
            async fn sentinel() {
                body($($borrow)+ $crate::Redis::start($crate::TopologyKind::Sentinel)).await;
            }
        }
    };
}
