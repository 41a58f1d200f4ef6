//! Where Redis is: one node, a Redis Cluster, or a primary watched by Sentinel.
//!
//! | variable | meaning |
//! | --- | --- |
//! | `REDIS_URL` | one node: `redis://[user:password@]host:port/db` (or `rediss://`, `unix://`) |
//! | `REDIS_CLUSTER_NODES` | Redis Cluster: comma-separated `redis://` or `rediss://` URLs of one or more seed nodes; the other nodes are discovered. Credentials in the URLs (or `REDIS_USERNAME`/`REDIS_PASSWORD`) are the data nodes' |
//! | `REDIS_SENTINEL_NODES` | Sentinel: comma-separated URLs of the sentinels; credentials in them are the sentinels' own |
//! | `REDIS_SENTINEL_MASTER` | Sentinel: the name of the monitored primary (required with `REDIS_SENTINEL_NODES`) |
//! | `REDIS_USERNAME`, `REDIS_PASSWORD` | the data nodes' user and password, for Cluster and Sentinel (a cluster seed URL's own credentials win) |
//! | `REDIS_DB` | the data nodes' database, for Sentinel (Cluster has only database 0) |
//!
//! Exactly one of `REDIS_URL`, `REDIS_CLUSTER_NODES` and `REDIS_SENTINEL_NODES`
//! may be set; none runs every component in process. Components never know which
//! topology they run on: the [`Handle`](crate::Handle) API is the same.

use std::fmt;

use crate::error::ConfigError;

/// A Redis URL whose password never reaches `Debug`, `Display` or an error.
#[derive(Clone, PartialEq, Eq)]
pub struct RedisUrl {
    url: url::Url,
}

impl RedisUrl {
    /// Parses and checks a `redis://`, `rediss://` or `unix://` URL.
    ///
    /// # Errors
    /// [`ConfigError`] naming `REDIS_URL`; the message never contains the password.
    pub fn parse(raw: &str) -> Result<Self, ConfigError> {
        Self::parse_var("REDIS_URL", raw)
    }

    /// [`parse`](Self::parse) for a URL read from variable `var` (`JOBS_REDIS_URL`,
    /// say): errors name that variable.
    ///
    /// # Errors
    /// [`ConfigError`] naming `var`; the message never contains the password.
    pub fn parse_var(var: &str, raw: &str) -> Result<Self, ConfigError> {
        let url = url::Url::parse(raw).map_err(|e| {
            // url's messages describe the syntax fault without quoting the input.
            ConfigError::invalid(var, format!("not a valid URL ({e})"))
        })?;
        match url.scheme() {
            "redis" | "unix" | "redis+unix" => {}
            "rediss" => {
                if !cfg!(feature = "tls") {
                    return Err(ConfigError::invalid(
                        var,
                        "rediss:// needs larder-core's `tls` feature",
                    ));
                }
            }
            other => {
                return Err(ConfigError::invalid(
                    var,
                    format!(
                        "unsupported scheme `{other}`; expected redis://, rediss:// or unix://"
                    ),
                ))
            }
        }
        if url.scheme().starts_with("redis") && url.host_str().is_none_or(str::is_empty) {
            return Err(ConfigError::invalid(var, "the URL has no host"));
        }
        let path = url.path().trim_start_matches('/');
        if url.scheme().starts_with("redis") && !path.is_empty() && path.parse::<u16>().is_err() {
            return Err(ConfigError::invalid(
                var,
                "the path must be a database number such as /0",
            ));
        }
        Ok(Self { url })
    }

    /// The password, if the URL carries one (for redaction of third-party messages):
    /// `redis://user:password@host`, or for a socket `unix:///path?pass=password`
    /// (redis-rs's form).
    pub(crate) fn password(&self) -> Option<String> {
        if let Some(p) = self.url.password() {
            return Some(
                percent_encoding::percent_decode_str(p)
                    .decode_utf8_lossy()
                    .into_owned(),
            );
        }
        self.url
            .query_pairs()
            .find(|(name, _)| name == "pass")
            .map(|(_, value)| value.into_owned())
    }

    /// The raw URL, password included: only for handing to the Redis client.
    pub(crate) fn expose(&self) -> &str {
        self.url.as_str()
    }

    /// The database number in the URL's path (0 when none).
    pub(crate) fn db(&self) -> i64 {
        self.url
            .path()
            .trim_start_matches('/')
            .parse::<u16>()
            .map_or(0, i64::from)
    }

    /// Whether the URL asks for TLS.
    #[must_use]
    pub fn is_tls(&self) -> bool {
        self.url.scheme() == "rediss"
    }

    /// The URL with the password replaced by `***` (in the authority, or a
    /// socket URL's `pass` parameter), safe to log.
    #[must_use]
    pub fn redacted(&self) -> String {
        let mut shown = self.url.clone();
        if shown.password().is_some() {
            // Setting a password fails only for URLs that cannot have one, which a
            // URL that has one is not.
            let _ = shown.set_password(Some("***"));
        }
        if shown.query_pairs().any(|(name, _)| name == "pass") {
            let pairs: Vec<(String, String)> = shown
                .query_pairs()
                .map(|(name, value)| {
                    let value = if name == "pass" {
                        "***".into()
                    } else {
                        value.into_owned()
                    };
                    (name.into_owned(), value)
                })
                .collect();
            shown.query_pairs_mut().clear().extend_pairs(pairs);
        }
        shown.to_string()
    }
}

impl fmt::Debug for RedisUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("RedisUrl").field(&self.redacted()).finish()
    }
}

impl fmt::Display for RedisUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.redacted())
    }
}

/// How larder reaches Redis. `Debug` and `Display` hide every password.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Topology {
    /// One node (`REDIS_URL`).
    Single(RedisUrl),
    /// A Redis Cluster, found from its seed nodes (`REDIS_CLUSTER_NODES`).
    Cluster(ClusterSettings),
    /// The primary that Sentinel names (`REDIS_SENTINEL_NODES`, `REDIS_SENTINEL_MASTER`).
    Sentinel(SentinelSettings),
}

/// A Redis Cluster's seeds and its data nodes' credentials.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct ClusterSettings {
    /// Seed nodes: the rest of the cluster is discovered from them.
    pub seeds: Vec<RedisUrl>,
    /// The data nodes' credentials, when not in the seed URLs.
    pub auth: NodeAuth,
}

/// The sentinels, the primary's name, and the data nodes' credentials.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct SentinelSettings {
    /// The sentinels (their URLs' credentials are the sentinels' own).
    pub sentinels: Vec<RedisUrl>,
    /// The monitored primary's name (`REDIS_SENTINEL_MASTER`).
    pub master: String,
    /// The data nodes' credentials and database.
    pub auth: NodeAuth,
}

/// A data node's user, password and database (for Cluster and Sentinel, whose node
/// addresses are discovered, so cannot carry them).
#[derive(Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct NodeAuth {
    /// `REDIS_USERNAME`.
    pub username: Option<String>,
    /// `REDIS_PASSWORD`; never shown.
    pub password: Option<String>,
    /// `REDIS_DB` (Sentinel only).
    pub db: i64,
}

impl NodeAuth {
    /// Credentials and database from the conventional variables' values.
    ///
    /// # Errors
    /// [`ConfigError`] naming `REDIS_DB` when it is not a number.
    pub fn from_values(
        username: Option<&str>,
        password: Option<&str>,
        db: Option<&str>,
    ) -> Result<Self, ConfigError> {
        let some = |v: Option<&str>| {
            v.map(str::trim)
                .filter(|v| !v.is_empty())
                .map(str::to_owned)
        };
        let db = match some(db) {
            None => 0,
            Some(db) => db.parse::<u16>().map(i64::from).map_err(|_| {
                ConfigError::invalid(
                    "REDIS_DB",
                    format!("expected a database number, got {db:?}"),
                )
            })?,
        };
        Ok(Self {
            username: some(username),
            // A password is taken as given (spaces may be part of it).
            password: password.filter(|p| !p.is_empty()).map(str::to_owned),
            db,
        })
    }
}

impl fmt::Debug for NodeAuth {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("NodeAuth")
            .field("username", &self.username)
            .field("password", &self.password.as_ref().map(|_| "***"))
            .field("db", &self.db)
            .finish()
    }
}

impl Topology {
    /// One node at `url`.
    ///
    /// # Errors
    /// As [`RedisUrl::parse`].
    pub fn single(url: &str) -> Result<Self, ConfigError> {
        RedisUrl::parse(url).map(Self::Single)
    }

    /// A cluster found from `seeds`.
    ///
    /// # Errors
    /// [`ConfigError`] naming `REDIS_CLUSTER_NODES` for an empty list, a malformed
    /// URL, a socket URL, a database other than 0 or seeds that mix TLS and plain.
    pub fn cluster<S: AsRef<str>>(seeds: &[S], auth: NodeAuth) -> Result<Self, ConfigError> {
        const VAR: &str = "REDIS_CLUSTER_NODES";
        let seeds = parse_list(VAR, seeds)?;
        if seeds.iter().any(|s| !s.expose().starts_with("redis")) {
            return Err(ConfigError::invalid(
                VAR,
                "cluster nodes are redis:// or rediss:// URLs",
            ));
        }
        if seeds.iter().any(|s| s.is_tls() != seeds[0].is_tls()) {
            return Err(ConfigError::invalid(
                VAR,
                "the seeds mix rediss:// and redis://",
            ));
        }
        if seeds.iter().any(|s| s.db() != 0) || auth.db != 0 {
            return Err(ConfigError::invalid(
                VAR,
                "Redis Cluster has only database 0",
            ));
        }
        Ok(Self::Cluster(ClusterSettings { seeds, auth }))
    }

    /// The primary `master`, as `sentinels` name it.
    ///
    /// # Errors
    /// [`ConfigError`] naming `REDIS_SENTINEL_NODES` for an empty list or a
    /// malformed URL, or `REDIS_SENTINEL_MASTER` for an empty or odd name.
    pub fn sentinel<S: AsRef<str>>(
        sentinels: &[S],
        master: &str,
        auth: NodeAuth,
    ) -> Result<Self, ConfigError> {
        let sentinels = parse_list("REDIS_SENTINEL_NODES", sentinels)?;
        if sentinels.iter().any(|s| !s.expose().starts_with("redis")) {
            return Err(ConfigError::invalid(
                "REDIS_SENTINEL_NODES",
                "sentinels are redis:// or rediss:// URLs",
            ));
        }
        let master = master.trim();
        if master.is_empty() {
            return Err(ConfigError::invalid(
                "REDIS_SENTINEL_MASTER",
                "the primary's name is required with REDIS_SENTINEL_NODES",
            ));
        }
        if master.len() > 128 || master.chars().any(|c| c.is_whitespace() || c.is_control()) {
            return Err(ConfigError::invalid(
                "REDIS_SENTINEL_MASTER",
                "a primary's name is at most 128 characters, without spaces",
            ));
        }
        Ok(Self::Sentinel(SentinelSettings {
            sentinels,
            master: master.to_owned(),
            auth,
        }))
    }

    /// Every password this topology holds, for redaction of third-party messages.
    pub(crate) fn passwords(&self) -> Vec<String> {
        let (urls, auth): (&[RedisUrl], Option<&NodeAuth>) = match self {
            Self::Single(url) => (std::slice::from_ref(url), None),
            Self::Cluster(c) => (&c.seeds, Some(&c.auth)),
            Self::Sentinel(s) => (&s.sentinels, Some(&s.auth)),
        };
        urls.iter()
            .filter_map(RedisUrl::password)
            .chain(auth.and_then(|a| a.password.clone()))
            .collect()
    }

    /// A short name: `single`, `cluster` or `sentinel`.
    #[must_use]
    pub fn kind(&self) -> &'static str {
        match self {
            Self::Single(_) => "single",
            Self::Cluster(_) => "cluster",
            Self::Sentinel(_) => "sentinel",
        }
    }
}

/// Shown without passwords.
impl fmt::Display for Topology {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let list = |urls: &[RedisUrl]| {
            urls.iter()
                .map(RedisUrl::redacted)
                .collect::<Vec<_>>()
                .join(",")
        };
        match self {
            Self::Single(url) => write!(f, "{url}"),
            Self::Cluster(c) => write!(f, "cluster({})", list(&c.seeds)),
            Self::Sentinel(s) => write!(f, "sentinel({}, master {})", list(&s.sentinels), s.master),
        }
    }
}

fn parse_list<S: AsRef<str>>(var: &str, raw: &[S]) -> Result<Vec<RedisUrl>, ConfigError> {
    let urls = raw
        .iter()
        .map(|s| s.as_ref().trim())
        .filter(|s| !s.is_empty())
        .map(|s| RedisUrl::parse_var(var, s))
        .collect::<Result<Vec<_>, _>>()?;
    if urls.is_empty() {
        return Err(ConfigError::invalid(var, "the list holds no URL"));
    }
    Ok(urls)
}

/// Splits a comma-separated list variable.
pub(crate) fn split_list(value: &str) -> Vec<&str> {
    value.split(',').collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lists_are_checked_and_name_their_variable() {
        let none = NodeAuth::default();
        for (list, want) in [
            (vec![""], "REDIS_CLUSTER_NODES: the list holds no URL"),
            (vec![" ", ""], "REDIS_CLUSTER_NODES: the list holds no URL"),
            (
                vec!["redis://a:1", "http://b"],
                "REDIS_CLUSTER_NODES: unsupported scheme",
            ),
            (
                vec!["unix:///tmp/r.sock"],
                "REDIS_CLUSTER_NODES: cluster nodes are",
            ),
            (
                vec!["redis://a:1/3"],
                "REDIS_CLUSTER_NODES: Redis Cluster has only database 0",
            ),
        ] {
            let err = Topology::cluster(&list, none.clone())
                .unwrap_err()
                .to_string();
            assert!(err.starts_with(want), "{list:?}: {err}");
        }
        let err = Topology::sentinel(&["redis://s:26379"], " ", none.clone()).unwrap_err();
        assert!(
            err.to_string().starts_with("REDIS_SENTINEL_MASTER:"),
            "{err}"
        );
        let err = Topology::sentinel(&[",,"], "mymaster", none).unwrap_err();
        assert!(
            err.to_string().starts_with("REDIS_SENTINEL_NODES:"),
            "{err}"
        );
    }

    #[test]
    fn passwords_never_show() {
        let auth = NodeAuth::from_values(Some("app"), Some("data-s3cret"), Some("2")).unwrap();
        let sentinel = Topology::sentinel(
            &["redis://:sent-s3cret@127.0.0.1:26379"],
            "mymaster",
            auth.clone(),
        )
        .unwrap();
        let cluster = Topology::cluster(
            &["redis://app:seed-s3cret@127.0.0.1:7000"],
            NodeAuth::default(),
        )
        .unwrap();
        for t in [&sentinel, &cluster] {
            let shown = format!("{t} {t:?}");
            assert!(!shown.contains("s3cret"), "{shown}");
        }
        assert_eq!(sentinel.passwords().len(), 2);
        assert_eq!(cluster.passwords(), vec!["seed-s3cret".to_owned()]);
        let err = NodeAuth::from_values(None, None, Some("two")).unwrap_err();
        assert!(err.to_string().starts_with("REDIS_DB:"), "{err}");
    }
}
