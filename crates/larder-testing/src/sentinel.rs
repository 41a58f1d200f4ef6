//! A local Sentinel set: one primary, one replica, three sentinels.

use std::time::{Duration, Instant};

use crate::cluster::{array_items, info_field};
use crate::RedisServer;

/// How long the set may take to be ready, or to fail over.
const WAIT: Duration = Duration::from_secs(30);

/// The name the sentinels monitor the primary under.
const MASTER: &str = "larder-primary";

/// One primary, one replica and three sentinels (quorum 2, the primary judged down
/// after 1 s), on free loopback ports. Killed when dropped.
///
/// ```no_run
/// use larder_testing::SentinelSet;
///
/// let mut set = SentinelSet::start();
/// let sentinels = set.sentinel_urls();
/// let old = set.primary_port();
/// set.kill_primary();
/// let new = set.wait_failover(old);      // the replica's port
/// # let _ = (sentinels, new);
/// ```
#[derive(Debug)]
pub struct SentinelSet {
    /// The two data nodes; which one is the primary changes with a failover.
    data: Vec<RedisServer>,
    sentinels: Vec<RedisServer>,
}

impl SentinelSet {
    /// Starts the primary, its replica (waiting until it is in sync) and three
    /// sentinels (waiting until each knows the replica and the other sentinels).
    ///
    /// # Panics
    /// When a process does not start or the set is not ready in 30 s.
    #[must_use]
    pub fn start() -> Self {
        let primary = RedisServer::start();
        let replica = RedisServer::builder()
            .config("replicaof", &format!("127.0.0.1 {}", primary.port()))
            .start();
        let sentinels = (0..3)
            .map(|_| {
                RedisServer::builder()
                    .sentinel(MASTER, primary.port(), 2)
                    .start()
            })
            .collect();
        let set = Self {
            data: vec![primary, replica],
            sentinels,
        };
        set.wait("the replica to sync and the sentinels to meet", |s| {
            info_field(&s.data[1], "replication", "master_link_status") == "up"
                && s.sentinels.iter().all(|n| {
                    let info = n.command(&["SENTINEL", "MASTER", MASTER]);
                    let fields = array_items(&info);
                    let field = |name: &str| {
                        fields
                            .iter()
                            .position(|f| f == name)
                            .and_then(|i| fields.get(i + 1))
                            .map_or("", String::as_str)
                            .to_owned()
                    };
                    field("num-slaves") == "1" && field("num-other-sentinels") == "2"
                })
        });
        set
    }

    /// The sentinels' `redis://` URLs.
    #[must_use]
    pub fn sentinel_urls(&self) -> Vec<String> {
        self.sentinels.iter().map(RedisServer::url).collect()
    }

    /// The primary's name (`REDIS_SENTINEL_MASTER`).
    #[must_use]
    pub fn master_name(&self) -> &'static str {
        MASTER
    }

    /// The port of the node the sentinels name as primary now (the first running
    /// sentinel's answer).
    ///
    /// # Panics
    /// When no sentinel answers.
    #[must_use]
    pub fn primary_port(&self) -> u16 {
        self.named_ports()
            .into_iter()
            .next()
            .unwrap_or_else(|| panic!("no sentinel names a primary"))
    }

    /// What each running sentinel names as the primary's port.
    fn named_ports(&self) -> Vec<u16> {
        self.sentinels
            .iter()
            .filter(|s| s.is_running())
            .filter_map(|s| {
                let reply = s.command(&["SENTINEL", "GET-MASTER-ADDR-BY-NAME", MASTER]);
                array_items(&reply).get(1).and_then(|p| p.parse().ok())
            })
            .collect()
    }

    /// The data node the sentinels name as primary now.
    #[must_use]
    pub fn primary(&self) -> &RedisServer {
        let port = self.primary_port();
        self.data
            .iter()
            .find(|n| n.port() == port)
            .unwrap_or_else(|| panic!("no data node on port {port}"))
    }

    /// Both data nodes (to stop, kill, freeze or restart one).
    pub fn data_nodes_mut(&mut self) -> &mut [RedisServer] {
        &mut self.data
    }

    /// Kills the current primary with SIGKILL (a crash).
    pub fn kill_primary(&mut self) {
        let port = self.primary_port();
        if let Some(node) = self.data.iter_mut().find(|n| n.port() == port) {
            node.kill();
        }
    }

    /// Waits until every sentinel names a primary other than the one on
    /// `old_port` and that node answers as a primary; returns its port.
    ///
    /// # Panics
    /// When that does not happen in 30 s.
    pub fn wait_failover(&self, old_port: u16) -> u16 {
        self.wait("the failover", |s| {
            let named = s.named_ports();
            named.len() == s.sentinels.len()
                && named.iter().all(|&p| p != old_port && p == named[0])
                && s.data
                    .iter()
                    .find(|n| n.port() == named[0] && n.is_running())
                    .is_some_and(|n| info_field(n, "replication", "role") == "master")
        });
        self.primary_port()
    }

    fn wait(&self, what: &str, done: impl Fn(&Self) -> bool) {
        let deadline = Instant::now() + WAIT;
        while !done(self) {
            assert!(Instant::now() < deadline, "waited {WAIT:?} for {what}");
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_sentinels_promote_the_replica_when_the_primary_dies() {
        let mut set = SentinelSet::start();
        let old = set.primary_port();
        assert_eq!(set.primary().command(&["SET", "k", "v"]), "+OK\r\n");
        assert_eq!(set.primary().command(&["WAIT", "1", "5000"]), ":1\r\n");
        set.kill_primary();
        let new = set.wait_failover(old);
        assert_ne!(new, old);
        // Replicated before the kill (`WAIT`).
        assert_eq!(set.primary().command(&["GET", "k"]), "$1\r\nv\r\n");
    }
}
