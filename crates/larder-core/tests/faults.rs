//! Fault tests against real Redis processes that are really stopped, restarted,
//! frozen with SIGSTOP and thawed: every data node of one node, a cluster or a
//! Sentinel set, from one body each.
//!
//! Wall time is never asserted: the deadline is proven by the error being the
//! guard's own `Timeout`, and "no network I/O" by the guard's attempt counter.

#![allow(clippy::unwrap_used)] // test code: a failed unwrap is a failed test

mod common;

use std::time::Duration;

use common::{eventually, handle_on, LogCapture};
use larder_core::{BreakerState, Error, Handle, UnavailableReason};
use larder_testing::on_every_topology;

async fn get(handle: &Handle) -> Result<Option<String>, Error> {
    handle.query("get", redis::cmd("GET").arg("k")).await
}

/// Sends calls until the breaker opens; returns how many it took.
async fn trip(handle: &Handle) -> usize {
    for i in 1..=20 {
        let err = get(handle).await.expect_err("redis is down");
        assert!(err.is_backend_fault(), "{err:?}");
        if handle.guard().state() == BreakerState::Open {
            return i;
        }
    }
    panic!(
        "breaker did not open after 20 failures: {:?}",
        handle.guard().stats()
    );
}

on_every_topology!(
    async fn stopped_redis_opens_the_breaker_and_calls_skip_the_network(server: &mut Redis) {
        let handle = handle_on(server);
        let _: () = handle
            .query("set", redis::cmd("SET").arg("k").arg("v"))
            .await
            .unwrap();

        server.stop();
        let calls = trip(&handle).await;
        assert_eq!(calls, 3, "opens at the configured threshold");

        let attempted = handle.guard().stats().attempted;
        for _ in 0..100 {
            let err = get(&handle).await.unwrap_err();
            assert!(matches!(
                err,
                Error::Unavailable {
                    reason: UnavailableReason::BreakerOpen
                }
            ));
        }
        let stats = handle.guard().stats();
        assert_eq!(stats.attempted, attempted, "no call reached the network");
        assert_eq!(stats.rejected, 100);
    }
);

on_every_topology!(
    async fn restarted_redis_is_picked_up_by_the_same_handle(server: &mut Redis) {
        let handle = handle_on(server);
        let _: () = handle
            .query("set", redis::cmd("SET").arg("k").arg("v"))
            .await
            .unwrap();

        server.stop();
        trip(&handle).await;
        server.restart();

        let value = eventually(Duration::from_secs(10), || async {
            get(&handle).await.ok()
        })
        .await
        .expect("the same handle recovers once redis is back");
        assert_eq!(value, None, "fresh server, no persistence");
        assert_eq!(handle.guard().state(), BreakerState::Closed);
        assert_eq!(handle.guard().stats().opened, 1);
        let _: () = handle
            .query("set", redis::cmd("SET").arg("k").arg("w"))
            .await
            .unwrap();
        assert_eq!(get(&handle).await.unwrap().as_deref(), Some("w"));
    }
);

on_every_topology!(
    async fn frozen_redis_never_holds_a_call_past_its_deadline(server: &mut Redis) {
        let handle = handle_on(server);
        let _: () = handle
            .query("set", redis::cmd("SET").arg("k").arg("v"))
            .await
            .unwrap();

        server.freeze();
        let deadline = handle.guard().deadline();
        for _ in 0..3 {
            match get(&handle).await {
                Err(Error::Timeout {
                    op: "get",
                    deadline: d,
                }) => assert_eq!(d, deadline),
                other => panic!("expected the guard's timeout, got {other:?}"),
            }
        }
        assert_eq!(handle.guard().state(), BreakerState::Open);
        assert_eq!(handle.guard().stats().timed_out, 3);
        // Concurrent callers while open: all refused without waiting on the socket.
        let results = futures_join_all((0..50).map(|_| get(&handle))).await;
        assert!(results
            .iter()
            .all(|r| matches!(r, Err(Error::Unavailable { .. }))));

        server.thaw();
        let value = eventually(Duration::from_secs(10), || async {
            get(&handle).await.ok()
        })
        .await
        .expect("recovers after thaw");
        assert_eq!(value.as_deref(), Some("v"));
    }
);

on_every_topology!(
    async fn a_handle_built_while_redis_is_down_connects_when_it_comes_up(server: &mut Redis) {
        server.stop();
        let handle = handle_on(server);
        assert!(get(&handle).await.is_err());
        server.restart();
        let value = eventually(Duration::from_secs(10), || async {
            get(&handle).await.ok()
        })
        .await;
        assert_eq!(value, Some(None));
    }
);

on_every_topology!(
    async fn breaker_changes_are_logged_once_each(server: &mut Redis) {
        let logs = LogCapture::default();
        let _g = logs.install();
        let handle = handle_on(server);
        let _: Option<String> = get(&handle).await.unwrap();
        server.stop();
        trip(&handle).await;
        for _ in 0..50 {
            let _ = get(&handle).await;
        }
        server.restart();
        eventually(Duration::from_secs(10), || async {
            get(&handle).await.ok()
        })
        .await
        .expect("recovers");
        for _ in 0..50 {
            let _ = get(&handle).await;
        }
        let text = logs.text();
        let warns = text
            .lines()
            .filter(|l| l.contains("WARN") && l.contains("circuit breaker open"))
            .count();
        let infos = text
            .lines()
            .filter(|l| l.contains("INFO") && l.contains("redis recovered"))
            .count();
        assert_eq!((warns, infos), (1, 1), "{text}");
    }
);

async fn futures_join_all<F: std::future::Future>(futs: impl Iterator<Item = F>) -> Vec<F::Output> {
    let handles: Vec<_> = futs.collect();
    let mut out = Vec::with_capacity(handles.len());
    for f in handles {
        out.push(f.await);
    }
    out
}
