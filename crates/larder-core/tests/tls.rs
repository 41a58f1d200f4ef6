//! `rediss://` against a real TLS-only redis-server with a throw-away CA.

#![allow(clippy::unwrap_used)] // test code: a failed unwrap is a failed test

use std::time::Duration;

use larder_core::{Config, Handle};
use larder_testing::{RedisServer, TlsFiles};

#[tokio::test]
async fn rediss_urls_connect_over_tls_and_verify_the_server() {
    let certs = tempfile::tempdir().unwrap();
    let files = TlsFiles::generate(certs.path());
    let server = RedisServer::builder()
        .tls(files.clone())
        .requirepass("tls-secret")
        .start();
    // rustls-native-certs reads the trust store from SSL_CERT_FILE. This test is the
    // only one in its binary, so setting the variable races with nothing.
    std::env::set_var("SSL_CERT_FILE", &files.ca);

    let url = format!("rediss://:tls-secret@localhost:{}/0", server.port());
    // Generous deadlines: the first call includes the TLS handshake, which an
    // unoptimised test build of the crypto code makes slow on a busy CI machine.
    // This test is about TLS working, not about latency.
    let handle = Handle::new(
        Config::builder()
            .redis_url(&url)
            .op_timeout(Duration::from_secs(10))
            .connect_timeout(Duration::from_secs(10))
            .build()
            .unwrap(),
    )
    .unwrap();
    assert!(handle.redis_url().unwrap().is_tls());
    let _: () = handle
        .query("set", redis::cmd("SET").arg("k").arg("over tls"))
        .await
        .unwrap();
    let v: String = handle
        .query("get", redis::cmd("GET").arg("k"))
        .await
        .unwrap();
    assert_eq!(v, "over tls");
    assert!(!format!("{handle:?}").contains("tls-secret"));

    // A plain-text client is refused by the TLS-only port: the handshake matters.
    let plain = Handle::new(
        Config::builder()
            .redis_url(&format!(
                "redis://:tls-secret@127.0.0.1:{}/0",
                server.port()
            ))
            .op_timeout(Duration::from_millis(300))
            .build()
            .unwrap(),
    )
    .unwrap();
    assert!(plain
        .query::<String>("get", redis::cmd("GET").arg("k"))
        .await
        .is_err());
}
