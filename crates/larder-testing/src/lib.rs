//! Test support for larder: a real `redis-server` per test, on a free loopback port,
//! in a temporary directory, killed when dropped.
//!
//! ```no_run
//! use larder_testing::RedisServer;
//!
//! let mut server = RedisServer::start();
//! let url = server.url();          // redis://127.0.0.1:<port>/0
//! server.freeze();                 // SIGSTOP: connections hang
//! server.thaw();                   // SIGCONT
//! server.stop();                   // gone: connections are refused
//! server.restart();                // back on the same port
//! # let _ = url;
//! ```
//!
//! No persistence unless asked ([`RedisServerBuilder::appendonly`]). When the test
//! panics, the server's log is printed as the server is dropped.
//!
//! The binary is `redis-server` from `PATH`, or the one named by `REDIS_SERVER_BIN`.
//! A missing binary is a panic with instructions, never a skipped test.

use std::fmt::Write as _;
use std::io::{Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;

mod cluster;
mod sentinel;
pub mod spans;
mod topology;

pub use cluster::RedisCluster;
pub use sentinel::SentinelSet;
pub use topology::{Redis, TopologyKind};

/// How long a server may take to accept connections after it is started.
const START_TIMEOUT: Duration = Duration::from_secs(15);

/// Options for a test server.
#[derive(Debug, Clone, Default)]
#[must_use]
pub struct RedisServerBuilder {
    password: Option<String>,
    acl_users: Vec<(String, String)>,
    default_user_off: bool,
    appendonly: Option<&'static str>,
    tls: Option<TlsFiles>,
    extra: Vec<(String, String)>,
    /// A Redis Cluster node: its port leaves room for the bus port (+10000).
    cluster_node: bool,
    /// A sentinel: `(master name, primary port, quorum)`.
    sentinel: Option<(String, u16, u32)>,
}

/// Certificate files for a TLS-only server.
#[derive(Debug, Clone)]
pub struct TlsFiles {
    /// The server's certificate (PEM).
    pub cert: PathBuf,
    /// The server's private key (PEM).
    pub key: PathBuf,
    /// The CA that signed it (PEM).
    pub ca: PathBuf,
}

impl TlsFiles {
    /// Makes a throw-away CA and a server certificate for `localhost` and
    /// `127.0.0.1` in `dir`, with the `openssl` command.
    ///
    /// # Panics
    /// When `openssl` is missing or fails.
    #[must_use]
    pub fn generate(dir: &Path) -> Self {
        let run = |args: &[&str]| {
            let out = Command::new("openssl")
                .args(args)
                .current_dir(dir)
                .output()
                .unwrap_or_else(|e| {
                    panic!("cannot run openssl ({e}); install it (apt-get install openssl)")
                });
            assert!(
                out.status.success(),
                "openssl {args:?} failed: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        };
        std::fs::write(
            dir.join("san.ext"),
            "subjectAltName=DNS:localhost,IP:127.0.0.1\n",
        )
        .unwrap_or_else(|e| panic!("cannot write san.ext: {e}"));
        run(&[
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-days",
            "2",
            "-subj",
            "/CN=larder test CA",
            "-keyout",
            "ca.key",
            "-out",
            "ca.pem",
        ]);
        run(&[
            "req",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-subj",
            "/CN=localhost",
            "-keyout",
            "server.key",
            "-out",
            "server.csr",
        ]);
        run(&[
            "x509",
            "-req",
            "-in",
            "server.csr",
            "-CA",
            "ca.pem",
            "-CAkey",
            "ca.key",
            "-CAcreateserial",
            "-days",
            "2",
            "-extfile",
            "san.ext",
            "-out",
            "server.pem",
        ]);
        Self {
            cert: dir.join("server.pem"),
            key: dir.join("server.key"),
            ca: dir.join("ca.pem"),
        }
    }
}

impl RedisServerBuilder {
    /// Requires `password` for the default user (`requirepass`).
    pub fn requirepass(mut self, password: &str) -> Self {
        self.password = Some(password.to_owned());
        self
    }

    /// Adds an ACL user with full access.
    pub fn acl_user(mut self, user: &str, password: &str) -> Self {
        self.acl_users.push((user.to_owned(), password.to_owned()));
        self
    }

    /// Turns the default user off, so only ACL users can log in.
    pub fn default_user_off(mut self) -> Self {
        self.default_user_off = true;
        self
    }

    /// Turns on the append-only file with the given `appendfsync` policy
    /// (`always`, `everysec` or `no`). The file survives [`RedisServer::restart`].
    pub fn appendonly(mut self, fsync: &'static str) -> Self {
        self.appendonly = Some(fsync);
        self
    }

    /// Serves TLS only (`tls-port`, no plain port), with these certificates; clients
    /// need no certificate of their own.
    pub fn tls(mut self, files: TlsFiles) -> Self {
        self.tls = Some(files);
        self
    }

    /// A Redis Cluster node (`cluster-enabled`): its port is at most 55535, so its
    /// bus port (+10000) is valid and free too. [`RedisCluster`] joins such nodes.
    pub fn cluster_node(mut self) -> Self {
        self.cluster_node = true;
        self
    }

    /// A sentinel (`redis-server --sentinel`) monitoring the primary named
    /// `master` on `primary_port`, with `quorum`. [`SentinelSet`] starts these.
    pub fn sentinel(mut self, master: &str, primary_port: u16, quorum: u32) -> Self {
        self.sentinel = Some((master.to_owned(), primary_port, quorum));
        self
    }

    /// Adds a raw configuration directive.
    pub fn config(mut self, name: &str, value: &str) -> Self {
        self.extra.push((name.to_owned(), value.to_owned()));
        self
    }

    /// Starts the server and waits until it accepts connections.
    ///
    /// # Panics
    /// When `redis-server` is missing or does not come up.
    #[must_use]
    pub fn start(self) -> RedisServer {
        let dir = tempfile::Builder::new()
            .prefix("larder-redis-")
            .tempdir()
            .unwrap_or_else(|e| panic!("cannot create a temp dir for redis-server: {e}"));
        let pick = if self.cluster_node {
            free_cluster_port
        } else {
            free_port
        };
        let mut server = RedisServer {
            port: pick(),
            dir,
            child: None,
            options: self,
            frozen: false,
        };
        let mut last_log = String::new();
        for _ in 0..10 {
            match server.spawn() {
                Ok(()) => return server,
                Err(log) => {
                    // Another process took the port between probe and bind: try another.
                    last_log = log;
                    server.port = pick();
                }
            }
        }
        panic!("redis-server did not start after 10 attempts; last log:\n{last_log}");
    }
}

/// A running `redis-server`, killed on drop.
#[derive(Debug)]
pub struct RedisServer {
    port: u16,
    dir: tempfile::TempDir,
    child: Option<Child>,
    options: RedisServerBuilder,
    frozen: bool,
}

impl RedisServer {
    /// Starts a server with default options (no password, no persistence).
    ///
    /// # Panics
    /// When `redis-server` is missing or does not come up.
    #[must_use]
    pub fn start() -> Self {
        Self::builder().start()
    }

    /// Options for a server.
    pub fn builder() -> RedisServerBuilder {
        RedisServerBuilder::default()
    }

    /// The port the server listens on (stable across restarts).
    #[must_use]
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The server's address.
    #[must_use]
    pub fn addr(&self) -> SocketAddr {
        SocketAddr::from((Ipv4Addr::LOCALHOST, self.port))
    }

    /// `redis://127.0.0.1:<port>/0` (`rediss://localhost:<port>/0` for a TLS
    /// server), with no credentials.
    #[must_use]
    pub fn url(&self) -> String {
        if self.options.tls.is_some() {
            format!("rediss://localhost:{}/0", self.port)
        } else {
            format!("redis://127.0.0.1:{}/0", self.port)
        }
    }

    /// A URL with credentials: `redis://user:password@127.0.0.1:<port>/0` (`user` may
    /// be empty for `requirepass`). The password is percent-encoded.
    #[must_use]
    pub fn url_with_auth(&self, user: &str, password: &str) -> String {
        let mut enc = String::new();
        for b in password.bytes() {
            if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
                enc.push(char::from(b));
            } else {
                let _ = write!(enc, "%{b:02X}");
            }
        }
        format!("redis://{user}:{enc}@127.0.0.1:{}/0", self.port)
    }

    /// The server's process id, while it runs.
    #[must_use]
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// The server's working directory (its append-only file lives here).
    #[must_use]
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// Whether the process is frozen ([`freeze`](Self::freeze)).
    #[must_use]
    pub fn is_frozen(&self) -> bool {
        self.frozen
    }

    /// Whether the process is running (possibly frozen).
    #[must_use]
    pub fn is_running(&self) -> bool {
        self.child.is_some()
    }

    /// The server's log so far (what it wrote before its log file opened included).
    #[must_use]
    pub fn log(&self) -> String {
        let early = std::fs::read_to_string(self.dir.path().join("stderr.log")).unwrap_or_default();
        let log = std::fs::read_to_string(self.log_path()).unwrap_or_default();
        early + &log
    }

    /// Stops the server with SIGTERM (clean shutdown, writes the AOF) and waits.
    pub fn stop(&mut self) {
        self.signal_and_reap(Signal::SIGTERM);
    }

    /// Kills the server with SIGKILL (a crash) and waits.
    pub fn kill(&mut self) {
        self.signal_and_reap(Signal::SIGKILL);
    }

    /// Starts the server again on the same port and directory, after a stop or kill.
    ///
    /// # Panics
    /// When it does not come up (for example the port was taken meanwhile).
    pub fn restart(&mut self) {
        if self.child.is_some() {
            self.stop();
        }
        let deadline = Instant::now() + START_TIMEOUT;
        loop {
            match self.spawn() {
                Ok(()) => return,
                Err(log) if Instant::now() < deadline => {
                    // The old socket may linger briefly; try again.
                    let _ = log;
                    std::thread::sleep(Duration::from_millis(50));
                }
                Err(log) => panic!("redis-server did not restart on port {}:\n{log}", self.port),
            }
        }
    }

    /// Freezes the server with SIGSTOP: it keeps its sockets but answers nothing.
    ///
    /// # Panics
    /// When the server is not running.
    pub fn freeze(&mut self) {
        let pid = self.pid_or_panic();
        kill(pid, Signal::SIGSTOP).unwrap_or_else(|e| panic!("SIGSTOP failed: {e}"));
        self.frozen = true;
    }

    /// Thaws a frozen server with SIGCONT.
    ///
    /// # Panics
    /// When the server is not running.
    pub fn thaw(&mut self) {
        let pid = self.pid_or_panic();
        kill(pid, Signal::SIGCONT).unwrap_or_else(|e| panic!("SIGCONT failed: {e}"));
        self.frozen = false;
    }

    /// Sends one command over a fresh connection and returns the raw RESP reply
    /// (for checks that must not depend on the client under test).
    ///
    /// # Panics
    /// When the server does not answer within five seconds.
    #[must_use]
    pub fn command(&self, args: &[&str]) -> String {
        let mut stream = TcpStream::connect(self.addr())
            .unwrap_or_else(|e| panic!("cannot connect to redis on {}: {e}", self.port));
        let _ = stream.set_read_timeout(Some(Duration::from_secs(5)));
        let mut req = format!("*{}\r\n", args.len());
        for a in args {
            let _ = write!(req, "${}\r\n{a}\r\n", a.len());
        }
        stream
            .write_all(req.as_bytes())
            .unwrap_or_else(|e| panic!("cannot write to redis: {e}"));
        read_reply(&mut stream)
    }

    /// How many times each command has been called since the server started, from
    /// `INFO commandstats` (`"get" -> 12`). Commands a Lua script runs count too.
    ///
    /// # Panics
    /// As [`command`](Self::command).
    #[must_use]
    pub fn command_calls(&self) -> std::collections::BTreeMap<String, u64> {
        self.command(&["INFO", "commandstats"])
            .lines()
            .filter_map(|l| {
                let (name, rest) = l.strip_prefix("cmdstat_")?.split_once(':')?;
                let calls = rest
                    .strip_prefix("calls=")?
                    .split(',')
                    .next()?
                    .parse()
                    .ok()?;
                Some((name.to_owned(), calls))
            })
            .collect()
    }

    fn pid_or_panic(&self) -> Pid {
        let pid = self
            .pid()
            .unwrap_or_else(|| panic!("redis-server is not running"));
        Pid::from_raw(i32::try_from(pid).unwrap_or_else(|_| panic!("pid {pid} out of range")))
    }

    fn log_path(&self) -> PathBuf {
        self.dir.path().join("redis.log")
    }

    fn write_config(&self) -> PathBuf {
        let dir = self.dir.path();
        let o = &self.options;
        if let Some((master, primary, quorum)) = &o.sentinel {
            // A sentinel rewrites its own file: written once, kept across restarts.
            let path = dir.join("sentinel.conf");
            if !path.exists() {
                let conf = format!(
                    "port {port}\nbind 127.0.0.1\ndir {dir}\nlogfile {log}\ndaemonize no\n\
                     sentinel monitor {master} 127.0.0.1 {primary} {quorum}\n\
                     sentinel down-after-milliseconds {master} 1000\n\
                     sentinel failover-timeout {master} 5000\n\
                     sentinel parallel-syncs {master} 1\n",
                    port = self.port,
                    dir = dir.display(),
                    log = self.log_path().display(),
                );
                std::fs::write(&path, conf)
                    .unwrap_or_else(|e| panic!("cannot write sentinel.conf: {e}"));
            }
            return path;
        }
        let mut conf = format!(
            "port {port}\nbind 127.0.0.1\ndir {dir}\nlogfile {log}\ndaemonize no\n\
             save \"\"\nprotected-mode yes\nloglevel notice\n",
            port = self.port,
            dir = dir.display(),
            log = self.log_path().display(),
        );
        if let Some(tls) = &o.tls {
            let _ = write!(
                conf,
                "port 0\ntls-port {}\ntls-cert-file {}\ntls-key-file {}\ntls-ca-cert-file {}\ntls-auth-clients no\n",
                self.port,
                tls.cert.display(),
                tls.key.display(),
                tls.ca.display()
            );
        }
        match o.appendonly {
            Some(fsync) => {
                let _ = write!(conf, "appendonly yes\nappendfsync {fsync}\n");
            }
            None => conf.push_str("appendonly no\n"),
        }
        if let Some(pw) = &o.password {
            let _ = writeln!(conf, "requirepass {}", quote(pw));
        }
        for (user, pw) in &o.acl_users {
            let _ = writeln!(
                conf,
                "user {user} on {} ~* &* +@all",
                quote(&format!(">{pw}"))
            );
        }
        if o.default_user_off {
            conf.push_str("user default off\n");
        }
        if o.cluster_node {
            conf.push_str(
                "cluster-enabled yes\ncluster-config-file nodes.conf\ncluster-node-timeout 2000\n",
            );
        }
        for (k, v) in &o.extra {
            let _ = writeln!(conf, "{k} {v}");
        }
        let path = dir.join("redis.conf");
        std::fs::write(&path, conf).unwrap_or_else(|e| panic!("cannot write redis.conf: {e}"));
        path
    }

    /// Starts the process; on failure returns its log.
    fn spawn(&mut self) -> Result<(), String> {
        let conf = self.write_config();
        let bin = std::env::var("REDIS_SERVER_BIN").unwrap_or_else(|_| "redis-server".into());
        let early = std::fs::File::create(self.dir.path().join("stderr.log"))
            .unwrap_or_else(|e| panic!("cannot create stderr.log: {e}"));
        let early_too = early
            .try_clone()
            .unwrap_or_else(|e| panic!("cannot clone stderr.log: {e}"));
        let mut command = Command::new(&bin);
        command.arg(&conf);
        if self.options.sentinel.is_some() {
            command.arg("--sentinel");
        }
        let child = command
            .stdin(Stdio::null())
            .stdout(early)
            .stderr(early_too)
            .spawn()
            .unwrap_or_else(|e| {
                panic!(
                    "cannot run `{bin}` ({e}). Install Redis (`apt-get install redis-server`) \
                     or set REDIS_SERVER_BIN; .ci/run installs it on a fresh machine"
                )
            });
        self.child = Some(child);
        self.frozen = false;
        let deadline = Instant::now() + START_TIMEOUT;
        loop {
            if let Some(child) = self.child.as_mut() {
                if let Ok(Some(status)) = child.try_wait() {
                    self.child = None;
                    return Err(format!("exited with {status}\n{}", self.log()));
                }
            }
            let ready = if self.options.tls.is_some() {
                // No plain-text PING on a TLS port: wait for the log line instead.
                self.log().contains("Ready to accept connections")
                    && TcpStream::connect_timeout(&self.addr(), Duration::from_millis(200)).is_ok()
            } else {
                ping(self.addr())
            };
            if ready {
                return Ok(());
            }
            if Instant::now() > deadline {
                let log = self.log();
                self.kill();
                return Err(format!("not answering after {START_TIMEOUT:?}\n{log}"));
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    fn signal_and_reap(&mut self, signal: Signal) {
        let Some(mut child) = self.child.take() else {
            return;
        };
        if let Ok(pid) = i32::try_from(child.id()) {
            let pid = Pid::from_raw(pid);
            if self.frozen {
                let _ = kill(pid, Signal::SIGCONT);
                self.frozen = false;
            }
            let _ = kill(pid, signal);
        }
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            match child.try_wait() {
                Ok(Some(_)) | Err(_) => break,
                Ok(None) if Instant::now() > deadline => {
                    let _ = child.kill();
                    let _ = child.wait();
                    break;
                }
                Ok(None) => std::thread::sleep(Duration::from_millis(5)),
            }
        }
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!(
                "---- redis-server log (port {}) ----\n{}---- end of redis-server log ----",
                self.port,
                self.log()
            );
        }
        self.signal_and_reap(Signal::SIGKILL);
    }
}

/// Quotes a redis.conf argument.
fn quote(arg: &str) -> String {
    let mut out = String::with_capacity(arg.len() + 2);
    out.push('"');
    for c in arg.chars() {
        if c == '"' || c == '\\' {
            out.push('\\');
        }
        out.push(c);
    }
    out.push('"');
    out
}

/// Sends SIGTERM to process `pid` (what `docker stop` sends), for tests of how a
/// program stops.
///
/// # Panics
/// When the signal cannot be sent (no such process).
pub fn terminate(pid: u32) {
    let pid =
        Pid::from_raw(i32::try_from(pid).unwrap_or_else(|_| panic!("pid {pid} out of range")));
    kill(pid, Signal::SIGTERM).unwrap_or_else(|e| panic!("SIGTERM to {pid} failed: {e}"));
}

/// A port that was free a moment ago on 127.0.0.1.
#[must_use]
pub fn free_port() -> u16 {
    let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
        .unwrap_or_else(|e| panic!("cannot bind a loopback port: {e}"));
    listener
        .local_addr()
        .unwrap_or_else(|e| panic!("cannot read the bound address: {e}"))
        .port()
}

/// A free loopback port whose cluster bus port (+10000) is free too, at most 55535.
#[must_use]
pub fn free_cluster_port() -> u16 {
    for _ in 0..1000 {
        let port = free_port();
        // Ephemeral ports are mostly above 32768: fold them into 20000..=45535.
        let port = 20_000 + port % 25_536;
        let bus = port + 10_000;
        let free = |p: u16| TcpListener::bind((Ipv4Addr::LOCALHOST, p)).is_ok();
        if free(port) && free(bus) {
            return port;
        }
    }
    panic!("no free port pair for a cluster node after 1000 tries");
}

/// True when something on `addr` answers `PING` like Redis (`+PONG`, or `-NOAUTH`
/// from a password-protected server).
fn ping(addr: SocketAddr) -> bool {
    let Ok(mut stream) = TcpStream::connect_timeout(&addr, Duration::from_millis(200)) else {
        return false;
    };
    let _ = stream.set_read_timeout(Some(Duration::from_millis(500)));
    if stream.write_all(b"PING\r\n").is_err() {
        return false;
    }
    let mut buf = [0u8; 64];
    match stream.read(&mut buf) {
        Ok(n) if n > 0 => {
            let reply = &buf[..n];
            reply.starts_with(b"+PONG")
                || reply.starts_with(b"-NOAUTH")
                || reply.starts_with(b"-AUTH")
        }
        _ => false,
    }
}

/// Reads one RESP reply as text (good enough for test assertions).
fn read_reply(stream: &mut TcpStream) -> String {
    let mut out = Vec::new();
    let mut buf = [0u8; 4096];
    // Read until the reply looks complete: a line for simple replies, or the
    // announced length for bulk strings. Arrays are read until the stream pauses.
    loop {
        match stream.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => {
                out.extend_from_slice(&buf[..n]);
                if reply_complete(&out) {
                    break;
                }
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn reply_complete(buf: &[u8]) -> bool {
    resp_len(buf).is_some()
}

/// The length of the first complete RESP value in `buf`, if it is complete.
fn resp_len(buf: &[u8]) -> Option<usize> {
    let line_end = buf.windows(2).position(|w| w == b"\r\n")?;
    let header = std::str::from_utf8(buf.get(1..line_end)?).ok()?;
    let after = line_end + 2;
    match buf.first()? {
        b'$' | b'=' | b'!' => {
            let len: i64 = header.parse().ok()?;
            if len < 0 {
                return Some(after);
            }
            let end = after + usize::try_from(len).ok()? + 2;
            (buf.len() >= end).then_some(end)
        }
        b'*' | b'~' | b'>' | b'%' => {
            let n: i64 = header.parse().ok()?;
            let items = if buf[0] == b'%' { n * 2 } else { n };
            let mut pos = after;
            for _ in 0..items.max(0) {
                pos += resp_len(buf.get(pos..)?)?;
            }
            Some(pos)
        }
        _ => Some(after),
    }
}

/// The Python virtual environment with Celery 5 (`celery` and `redis` from the
/// Python package index) that the workspace's `scripts/celery-env` makes, once,
/// under `target/`: the Celery interop tests run real Python clients and workers
/// from it (`bin/python`, `bin/celery`).
///
/// # Panics
/// When the script fails (no Python, no network to the package index).
#[must_use]
pub fn celery_venv() -> &'static Path {
    static VENV: std::sync::OnceLock<PathBuf> = std::sync::OnceLock::new();
    VENV.get_or_init(|| {
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../scripts/celery-env");
        let out = Command::new(script)
            .stderr(Stdio::inherit())
            .output()
            .unwrap_or_else(|e| panic!("scripts/celery-env did not run: {e}"));
        assert!(out.status.success(), "scripts/celery-env failed");
        PathBuf::from(String::from_utf8_lossy(&out.stdout).trim())
    })
}

/// Polls `check` up to `tries` times, `every` apart, until it returns true; returns
/// whether it did. For conditions that become true by themselves (a breaker closing
/// after Redis restarts, a subscription coming back).
pub async fn eventually<F, Fut>(tries: u32, every: Duration, mut check: F) -> bool
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    for _ in 0..tries {
        if check().await {
            return true;
        }
        tokio::time::sleep(every).await;
    }
    false
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn starts_stops_restarts_on_the_same_port() {
        let mut server = RedisServer::start();
        let port = server.port();
        assert_eq!(server.command(&["SET", "k", "v"]), "+OK\r\n");
        assert_eq!(server.command(&["GET", "k"]), "$1\r\nv\r\n");
        server.stop();
        assert!(TcpStream::connect(server.addr()).is_err());
        server.restart();
        assert_eq!(server.port(), port);
        // No persistence by default: the key is gone.
        assert_eq!(server.command(&["GET", "k"]), "$-1\r\n");
    }

    #[test]
    fn appendonly_survives_a_restart() {
        let mut server = RedisServer::builder().appendonly("always").start();
        assert_eq!(server.command(&["SET", "k", "v"]), "+OK\r\n");
        server.kill();
        server.restart();
        assert_eq!(server.command(&["GET", "k"]), "$1\r\nv\r\n");
    }

    #[test]
    fn freeze_stops_answers_and_thaw_resumes() {
        let mut server = RedisServer::start();
        server.freeze();
        assert!(!ping(server.addr()));
        server.thaw();
        assert!(ping(server.addr()));
    }

    #[test]
    fn reads_nested_replies_without_waiting() {
        assert_eq!(resp_len(b"*2\r\n$3\r\nabc\r\n:2\r\n"), Some(17));
        assert_eq!(resp_len(b"*2\r\n$3\r\nabc\r\n"), None);
        assert_eq!(resp_len(b"$-1\r\n"), Some(5));
        assert_eq!(resp_len(b"*2\r\n*1\r\n:1\r\n$0\r\n\r\n"), Some(18));
        let server = RedisServer::start();
        let reply = server.command(&["PUBSUB", "NUMSUB", "x"]);
        assert_eq!(reply, "*2\r\n$1\r\nx\r\n:0\r\n");
    }

    #[test]
    fn requirepass_and_acl_users() {
        let server = RedisServer::builder()
            .requirepass("pw")
            .acl_user("app", "apppw")
            .start();
        assert!(server.command(&["GET", "k"]).starts_with("-NOAUTH"));
        assert!(server.url_with_auth("app", "a b@").contains("a%20b%40@"));
    }
}
