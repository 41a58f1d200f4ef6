//! A local Redis Cluster: three primaries with one replica each.

use std::time::{Duration, Instant};

use crate::RedisServer;

/// How long a cluster may take to agree on its slots after it is started.
const CONVERGE_TIMEOUT: Duration = Duration::from_secs(30);

/// The slots each of the three primaries serves at the start.
const RANGES: [(u16, u16); 3] = [(0, 5460), (5461, 10922), (10923, 16383)];

/// Three primaries (nodes 0, 1, 2, serving the slot ranges in that order) and one
/// replica each (nodes 3, 4, 5, of primaries 0, 1, 2), `cluster-enabled`
/// redis-server processes on free loopback ports, joined and checked ready. Killed
/// when dropped.
///
/// ```no_run
/// use larder_testing::RedisCluster;
///
/// let mut cluster = RedisCluster::start();
/// let seeds = cluster.seed_urls();           // every node's redis:// URL
/// let node = cluster.primary_of_key("{tenant-1}:x");
/// cluster.node_mut(node).kill();             // its replica takes over
/// cluster.wait_primary_count(3);
/// # let _ = seeds;
/// ```
#[derive(Debug)]
pub struct RedisCluster {
    nodes: Vec<RedisServer>,
}

impl RedisCluster {
    /// Starts six nodes, assigns the slots, attaches the replicas, and waits until
    /// every node reports `cluster_state:ok` and sees every slot served.
    ///
    /// # Panics
    /// When a node does not start or the cluster does not converge in 30 s.
    #[must_use]
    pub fn start() -> Self {
        let nodes: Vec<RedisServer> = (0..6)
            .map(|_| RedisServer::builder().cluster_node().start())
            .collect();
        let cluster = Self { nodes };
        for node in &cluster.nodes[1..] {
            let port = node.port().to_string();
            let reply = cluster.nodes[0].command(&["CLUSTER", "MEET", "127.0.0.1", &port]);
            assert!(reply.starts_with("+OK"), "CLUSTER MEET: {reply}");
        }
        for (node, (from, to)) in cluster.nodes.iter().zip(RANGES) {
            let reply = node.command(&[
                "CLUSTER",
                "ADDSLOTSRANGE",
                &from.to_string(),
                &to.to_string(),
            ]);
            assert!(reply.starts_with("+OK"), "CLUSTER ADDSLOTSRANGE: {reply}");
        }
        cluster.wait(
            |c| c.nodes.iter().all(|n| known_nodes(n) == 6),
            "all nodes meet",
        );
        for i in 0..3 {
            let primary = cluster.node_id(i);
            let reply = cluster.nodes[i + 3].command(&["CLUSTER", "REPLICATE", &primary]);
            assert!(reply.starts_with("+OK"), "CLUSTER REPLICATE: {reply}");
        }
        cluster.wait_ready();
        cluster
    }

    /// Every node's `redis://` URL (seeds for a client; any one would do).
    #[must_use]
    pub fn seed_urls(&self) -> Vec<String> {
        self.nodes.iter().map(RedisServer::url).collect()
    }

    /// Node `i` (0–2 the first primaries, 3–5 their replicas).
    #[must_use]
    pub fn node(&self, i: usize) -> &RedisServer {
        &self.nodes[i]
    }

    /// Node `i`, to stop, kill, freeze or restart it.
    pub fn node_mut(&mut self, i: usize) -> &mut RedisServer {
        &mut self.nodes[i]
    }

    /// Every node.
    #[must_use]
    pub fn nodes(&self) -> &[RedisServer] {
        &self.nodes
    }

    /// The node id of node `i`.
    ///
    /// # Panics
    /// When the node does not answer.
    #[must_use]
    pub fn node_id(&self, i: usize) -> String {
        bulk(&self.nodes[i].command(&["CLUSTER", "MYID"]))
            .trim()
            .to_owned()
    }

    /// The slot of `key` (asked of a running node).
    ///
    /// # Panics
    /// When no node answers.
    #[must_use]
    pub fn slot_of(&self, key: &str) -> u16 {
        let reply = self.any_running().command(&["CLUSTER", "KEYSLOT", key]);
        reply
            .trim()
            .trim_start_matches(':')
            .parse()
            .unwrap_or_else(|_| panic!("CLUSTER KEYSLOT: {reply}"))
    }

    /// The index of the running primary that serves `key`'s slot now.
    ///
    /// # Panics
    /// When no running primary serves it.
    #[must_use]
    pub fn primary_of_key(&self, key: &str) -> usize {
        let slot = self.slot_of(key);
        self.primary_of_slot(slot)
    }

    /// The index of the running primary that serves `slot` now (as that node says).
    ///
    /// # Panics
    /// When no running primary serves it.
    #[must_use]
    pub fn primary_of_slot(&self, slot: u16) -> usize {
        (0..self.nodes.len())
            .find(|&i| {
                let n = &self.nodes[i];
                n.is_running() && is_primary(n) && serves(n, slot)
            })
            .unwrap_or_else(|| panic!("no running primary serves slot {slot}"))
    }

    /// The indexes of the running primaries.
    #[must_use]
    pub fn primaries(&self) -> Vec<usize> {
        (0..self.nodes.len())
            .filter(|&i| self.nodes[i].is_running() && is_primary(&self.nodes[i]))
            .collect()
    }

    /// Waits until `count` running nodes are primaries and the cluster is ok again
    /// (after a primary was killed, its replica is promoted).
    ///
    /// # Panics
    /// When that does not happen in 30 s.
    pub fn wait_primary_count(&self, count: usize) {
        self.wait(
            |c| c.primaries().len() == count && c.running().all(cluster_ok),
            "the failover",
        );
    }

    /// Waits until every running node says `cluster_state:ok`, every slot is
    /// assigned and every replica is in sync.
    ///
    /// # Panics
    /// When that does not happen in 30 s.
    pub fn wait_ready(&self) {
        self.wait(
            |c| {
                c.running().all(|n| {
                    cluster_ok(n)
                        && (is_primary(n)
                            || info_field(n, "replication", "master_link_status") == "up")
                })
            },
            "the cluster to be ready",
        );
    }

    /// Moves `slot` to node `to` (a primary) with its keys, the way
    /// `redis-cli --cluster reshard` does: `IMPORTING` on the target, `MIGRATING` on
    /// the source, `MIGRATE` of its keys in batches, then `SETSLOT NODE` on both and
    /// the others. Clients meanwhile get `ASK` and, after it, `MOVED`.
    ///
    /// # Panics
    /// When a step fails.
    pub fn move_slot(&self, slot: u16, to: usize) {
        let from = self.primary_of_slot(slot);
        if from == to {
            return;
        }
        let (slot_s, from_id, to_id) = (slot.to_string(), self.node_id(from), self.node_id(to));
        let ok = |reply: String, what: &str| assert!(reply.starts_with("+OK"), "{what}: {reply}");
        ok(
            self.nodes[to].command(&["CLUSTER", "SETSLOT", &slot_s, "IMPORTING", &from_id]),
            "SETSLOT IMPORTING",
        );
        ok(
            self.nodes[from].command(&["CLUSTER", "SETSLOT", &slot_s, "MIGRATING", &to_id]),
            "SETSLOT MIGRATING",
        );
        let to_port = self.nodes[to].port().to_string();
        loop {
            let keys = array_items(&self.nodes[from].command(&[
                "CLUSTER",
                "GETKEYSINSLOT",
                &slot_s,
                "100",
            ]));
            if keys.is_empty() {
                break;
            }
            let mut args = vec!["MIGRATE", "127.0.0.1", &to_port, "", "0", "5000", "KEYS"];
            args.extend(keys.iter().map(String::as_str));
            let reply = self.nodes[from].command(&args);
            assert!(
                reply.starts_with("+OK") || reply.starts_with("+NOKEY"),
                "MIGRATE: {reply}"
            );
        }
        for i in [to, from] {
            ok(
                self.nodes[i].command(&["CLUSTER", "SETSLOT", &slot_s, "NODE", &to_id]),
                "SETSLOT NODE",
            );
        }
        for (i, node) in self.nodes.iter().enumerate() {
            if i != to && i != from && node.is_running() && is_primary(node) {
                let _ = node.command(&["CLUSTER", "SETSLOT", &slot_s, "NODE", &to_id]);
            }
        }
        self.wait(
            |c| c.running().all(|n| serves_as(n, slot, &to_id)),
            "the slot's move",
        );
    }

    fn running(&self) -> impl Iterator<Item = &RedisServer> {
        self.nodes.iter().filter(|n| n.is_running())
    }

    fn any_running(&self) -> &RedisServer {
        self.running()
            .next()
            .unwrap_or_else(|| panic!("no cluster node is running"))
    }

    fn wait(&self, done: impl Fn(&Self) -> bool, what: &str) {
        let deadline = Instant::now() + CONVERGE_TIMEOUT;
        while !done(self) {
            if Instant::now() > deadline {
                let nodes = bulk(&self.any_running().command(&["CLUSTER", "NODES"])).to_owned();
                panic!("waited {CONVERGE_TIMEOUT:?} for {what}; CLUSTER NODES:\n{nodes}");
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

/// The text of a bulk-string reply (`$n\r\ntext\r\n`), or the reply itself.
pub(crate) fn bulk(reply: &str) -> &str {
    match reply.split_once("\r\n") {
        Some((head, rest)) if head.starts_with('$') || head.starts_with('=') => {
            rest.strip_suffix("\r\n").unwrap_or(rest)
        }
        _ => reply,
    }
}

/// The bulk strings of a flat array reply.
pub(crate) fn array_items(reply: &str) -> Vec<String> {
    let mut lines = reply.split("\r\n");
    let mut items = Vec::new();
    if !lines.next().is_some_and(|head| head.starts_with('*')) {
        return items;
    }
    while let Some(head) = lines.next() {
        if head.starts_with('$') {
            if let Some(item) = lines.next() {
                items.push(item.to_owned());
            }
        }
    }
    items
}

/// A field of `INFO section` (`""` when absent).
pub(crate) fn info_field(node: &RedisServer, section: &str, field: &str) -> String {
    bulk(&node.command(&["INFO", section]))
        .lines()
        .find_map(|l| l.strip_prefix(field)?.strip_prefix(':'))
        .unwrap_or("")
        .trim()
        .to_owned()
}

fn cluster_ok(node: &RedisServer) -> bool {
    bulk(&node.command(&["CLUSTER", "INFO"])).contains("cluster_state:ok")
}

fn known_nodes(node: &RedisServer) -> usize {
    bulk(&node.command(&["CLUSTER", "NODES"]))
        .lines()
        .filter(|l| !l.trim().is_empty())
        .count()
}

fn is_primary(node: &RedisServer) -> bool {
    info_field(node, "replication", "role") == "master"
}

/// Whether `node` says it serves `slot` itself.
fn serves(node: &RedisServer, slot: u16) -> bool {
    bulk(&node.command(&["CLUSTER", "NODES"]))
        .lines()
        .find(|l| l.contains("myself"))
        .is_some_and(|l| line_serves(l, slot))
}

/// Whether `node` believes `slot` is served by node `id`.
fn serves_as(node: &RedisServer, slot: u16, id: &str) -> bool {
    bulk(&node.command(&["CLUSTER", "NODES"]))
        .lines()
        .find(|l| l.starts_with(id))
        .is_some_and(|l| line_serves(l, slot))
}

/// Whether a `CLUSTER NODES` line lists `slot` among its ranges.
fn line_serves(line: &str, slot: u16) -> bool {
    line.split_whitespace().skip(8).any(|range| {
        let mut ends = range.splitn(2, '-');
        let from = ends.next().and_then(|s| s.parse::<u16>().ok());
        let to = ends.next().map_or(from, |s| s.parse::<u16>().ok());
        matches!((from, to), (Some(a), Some(b)) if a <= slot && slot <= b)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_cluster_starts_serves_and_moves_a_slot() {
        let cluster = RedisCluster::start();
        assert_eq!(cluster.primaries(), vec![0, 1, 2]);
        let slot = cluster.slot_of("{t}:k");
        let owner = cluster.primary_of_slot(slot);
        assert_eq!(
            cluster.node(owner).command(&["SET", "{t}:k", "v"]),
            "+OK\r\n"
        );
        // Another primary redirects.
        let other = (owner + 1) % 3;
        assert!(cluster
            .node(other)
            .command(&["GET", "{t}:k"])
            .starts_with("-MOVED"));
        cluster.move_slot(slot, other);
        assert_eq!(cluster.primary_of_slot(slot), other);
        assert_eq!(
            cluster.node(other).command(&["GET", "{t}:k"]),
            "$1\r\nv\r\n"
        );
        assert!(line_serves(
            "id addr flags m 0 0 1 connected 0-5460 7000",
            5460
        ));
        assert!(!line_serves("id addr flags m 0 0 1 connected 0-5460", 5461));
    }
}
