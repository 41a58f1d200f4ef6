//! Work over every primary: `SCAN` (one node's, or each primary's of a cluster in
//! turn), and a command run on each primary.

use redis::cluster_routing::{RoutingInfo, SingleNodeRoutingInfo};
use redis::Value;

use crate::connection::Connection;
use crate::error::Error;
use crate::handle::Handle;

/// A `SCAN … MATCH … COUNT` over every primary ([`Handle::scan`]), a page at a
/// time. On a cluster each primary is scanned in turn (a key of a slot that moves
/// meanwhile may show up twice, never not at all); elsewhere it is one node's scan.
#[derive(Debug)]
pub struct Scan<'a> {
    handle: &'a Handle,
    pattern: String,
    count: usize,
    /// The primaries to scan, once known (`None` in the list: the one node).
    nodes: Option<Vec<Option<(String, u16)>>>,
    node: usize,
    cursor: u64,
}

impl<'a> Scan<'a> {
    fn new(handle: &'a Handle, pattern: &str, count: usize) -> Self {
        Self {
            handle,
            pattern: pattern.to_owned(),
            count,
            nodes: None,
            node: 0,
            cursor: 0,
        }
    }

    /// The next page of keys (possibly empty); `None` once every primary is done.
    ///
    /// # Errors
    /// As [`Handle::run`].
    pub async fn next_page(&mut self) -> Result<Option<Vec<String>>, Error> {
        let nodes = match &self.nodes {
            Some(nodes) => nodes,
            None => {
                let nodes = primaries(self.handle).await?;
                self.nodes.insert(nodes)
            }
        };
        let Some(node) = nodes.get(self.node).cloned() else {
            return Ok(None);
        };
        let mut scan = redis::cmd("SCAN");
        scan.arg(self.cursor)
            .arg("MATCH")
            .arg(&self.pattern)
            .arg("COUNT")
            .arg(self.count);
        let (next, keys): (u64, Vec<String>) = self
            .handle
            .run("scan", |conn| {
                let (scan, node) = (&scan, node.clone());
                async move { on_node(conn, node, scan).await }
            })
            .await?;
        if next == 0 {
            self.node += 1;
        }
        self.cursor = next;
        Ok(Some(keys))
    }
}

impl Handle {
    /// A `SCAN … MATCH pattern COUNT count` over every primary (each primary of a
    /// cluster in turn), a page at a time: sweeps and admin tools use this, never
    /// `KEYS`.
    ///
    /// ```no_run
    /// # async fn demo(handle: larder_core::Handle) -> Result<(), larder_core::Error> {
    /// let mut scan = handle.scan("larder:cache:*", 500);
    /// while let Some(keys) = scan.next_page().await? {
    ///     println!("{}", keys.len());
    /// }
    /// # Ok(()) }
    /// ```
    #[must_use]
    pub fn scan(&self, pattern: &str, count: usize) -> Scan<'_> {
        Scan::new(self, pattern, count)
    }

    /// Runs `cmd` on every primary (the one node, or each primary of a cluster)
    /// and returns each one's reply: for figures a cluster keeps per node
    /// (`INFO`, `DBSIZE`, `MEMORY STATS`).
    ///
    /// # Errors
    /// As [`Handle::run`], for the first primary that fails.
    pub async fn query_each_primary<T: redis::FromRedisValue>(
        &self,
        op: &'static str,
        cmd: &redis::Cmd,
    ) -> Result<Vec<T>, Error> {
        let nodes = primaries(self).await?;
        let mut replies = Vec::with_capacity(nodes.len());
        for node in nodes {
            let reply = self
                .run(op, |conn| {
                    let node = node.clone();
                    async move { on_node(conn, node, cmd).await }
                })
                .await?;
            replies.push(reply);
        }
        Ok(replies)
    }
}

/// Runs `cmd` on the node at `node` (a cluster's), or on the connection's node.
async fn on_node<T: redis::FromRedisValue>(
    mut conn: Connection,
    node: Option<(String, u16)>,
    cmd: &redis::Cmd,
) -> redis::RedisResult<T> {
    match (node, conn.as_cluster()) {
        (Some((host, port)), Some(cluster)) => {
            let routing = RoutingInfo::SingleNode(SingleNodeRoutingInfo::ByAddress { host, port });
            let value = cluster.route_command(cmd.clone(), routing).await?;
            redis::from_redis_value(value).map_err(Into::into)
        }
        _ => cmd.query_async(&mut conn).await,
    }
}

/// The primaries to run a command on: each primary of a cluster by address
/// (from `CLUSTER SLOTS`), or `None`, the connection's one node.
async fn primaries(handle: &Handle) -> Result<Vec<Option<(String, u16)>>, Error> {
    if !handle.is_cluster() {
        return Ok(vec![None]);
    }
    Ok(cluster_primaries(handle)
        .await?
        .into_iter()
        .map(Some)
        .collect())
}

/// The addresses of the cluster's primaries, from `CLUSTER SLOTS`.
async fn cluster_primaries(handle: &Handle) -> Result<Vec<(String, u16)>, Error> {
    let slots: Vec<Value> = handle
        .query("cluster_slots", redis::cmd("CLUSTER").arg("SLOTS"))
        .await?;
    let mut found: Vec<(String, u16)> = Vec::new();
    for range in slots {
        let Value::Array(parts) = range else { continue };
        // [start, end, [host, port, id, …], replicas…]
        let Some(Value::Array(primary)) = parts.get(2) else {
            continue;
        };
        let host = primary
            .first()
            .and_then(|v| redis::from_redis_value::<String>(v.clone()).ok());
        let port = primary
            .get(1)
            .and_then(|v| redis::from_redis_value::<u16>(v.clone()).ok());
        if let (Some(host), Some(port)) = (host, port) {
            if !found.contains(&(host.clone(), port)) {
                found.push((host, port));
            }
        }
    }
    Ok(found)
}
