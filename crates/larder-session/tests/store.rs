//! The framework-free store on a real redis-server, and in process.

#![allow(clippy::unwrap_used)] // test code: a failed unwrap is a failed test

mod common;

use std::time::Duration;

use common::{config, handle, sessions, sessions_on};
use larder_core::Tenant;
use larder_session::{
    Degraded, Identity, RequestContext, SessionConfig, SessionError, SessionRef, Sessions, Written,
};
use larder_testing::{on_every_topology, Redis, RedisServer};

/// A hash field's value (the reply's text without its `$len` line).
fn field(redis: &Redis, key: &str, field: &str) -> String {
    let reply = redis.command_on_key(key, &["HGET", key, field]);
    match reply.split_once("\r\n") {
        Some((len, value)) if len.starts_with('$') => value.trim_end_matches("\r\n").to_owned(),
        _ => panic!("HGET {key} {field}: {reply:?}"),
    }
}

on_every_topology!(
    async fn rolling_expiry_writes_at_most_once_per_touch_interval(redis: &Redis) {
        let lazy = sessions_on(redis, config().touch_interval(Duration::from_secs(3600)));
        assert_eq!(
            lazy.create("s1", b"{}", None).await.unwrap(),
            Written::Stored
        );
        let key = lazy.record_key("s1");
        let touched = field(redis, &key, "h");
        let (hset, pexpire) = (redis.calls("hset"), redis.calls("pexpire"));
        tokio::time::sleep(Duration::from_millis(20)).await;
        for _ in 0..10 {
            assert!(lazy.load("s1").await.unwrap().is_some());
        }
        assert_eq!(
            field(redis, &key, "h"),
            touched,
            "no touch inside the interval"
        );
        assert_eq!(redis.calls("hset"), hset);
        assert_eq!(redis.calls("pexpire"), pexpire);

        // The same record read by a store whose interval has passed: one touch per load.
        let eager = sessions_on(redis, config().touch_interval(Duration::ZERO));
        let loaded = eager.load("s1").await.unwrap().unwrap();
        assert_ne!(field(redis, &key, "h"), touched, "touched");
        assert_eq!(redis.calls("hset"), hset + 1);
        assert_eq!(redis.calls("pexpire"), pexpire + 1);
        assert!(loaded.touched_ms >= loaded.created_ms);
        assert!(loaded.expires_ms > loaded.touched_ms);
    }
);

on_every_topology!(
    async fn idle_and_absolute_timeouts_both_end_a_session(redis: &Redis) {
        // Idle: unused for longer than the idle timeout.
        let idle = sessions_on(redis, config().idle_timeout(Duration::from_millis(300)));
        idle.create("idle", b"{}", None).await.unwrap();
        tokio::time::sleep(Duration::from_millis(450)).await;
        assert!(idle.load("idle").await.unwrap().is_none());

        // Absolute: used all the time (touched on every load), still ends.
        let abs = sessions_on(
            redis,
            config()
                .idle_timeout(Duration::from_secs(60))
                .absolute_timeout(Duration::from_millis(700))
                .touch_interval(Duration::ZERO),
        );
        abs.create("busy", b"{}", None).await.unwrap();
        let mut alive_until = 0;
        for i in 0..8 {
            tokio::time::sleep(Duration::from_millis(150)).await;
            if abs.load("busy").await.unwrap().is_some() {
                alive_until = i;
            }
        }
        assert!(alive_until >= 2, "alive while in use: {alive_until}");
        assert!(
            abs.load("busy").await.unwrap().is_none(),
            "ended at the absolute timeout"
        );
        assert_eq!(
            abs.update("busy", b"{}", None).await.unwrap(),
            Written::Gone,
            "an update does not bring it back"
        );
        assert!(common::keys(redis, "*busy*").is_empty());
    }
);

on_every_topology!(
    async fn the_user_index_lists_live_sessions_and_forgets_ended_ones(redis: &Redis) {
        let s = sessions_on(redis, config().idle_timeout(Duration::from_millis(400)));
        let alice = Identity::new("alice@example.com")
            .with_user_agent("firefox")
            .with_ip("192.0.2.1");
        s.create("a1", b"{}", Some(&alice)).await.unwrap();
        s.create("a2", b"{}", Some(&alice)).await.unwrap();
        s.create("m1", b"{}", Some(&Identity::new("mallory")))
            .await
            .unwrap();
        let list = s.list(None, "alice@example.com").await.unwrap();
        assert_eq!(list.len(), 2);
        assert!(list
            .iter()
            .all(|i| i.user_agent.as_deref() == Some("firefox")
                && i.ip.as_deref() == Some("192.0.2.1")
                && i.created_ms > 0
                && i.last_seen_ms >= i.created_ms));
        let ids: Vec<_> = list.iter().map(|i| i.id.clone()).collect();
        assert!(ids.contains(&SessionRef::of_id("a1")) && ids.contains(&SessionRef::of_id("a2")));

        // Revoking someone else's session through one's own user is refused.
        assert!(!s
            .revoke(None, "mallory", &SessionRef::of_id("a1"))
            .await
            .unwrap());
        assert!(s.load("a1").await.unwrap().is_some());
        assert!(s
            .revoke(None, "alice@example.com", &SessionRef::of_id("a1"))
            .await
            .unwrap());
        assert!(s.load("a1").await.unwrap().is_none());

        // Expired sessions leave the listing, and the listing drops their entries.
        tokio::time::sleep(Duration::from_millis(600)).await;
        assert!(s.list(None, "alice@example.com").await.unwrap().is_empty());
        let index: Vec<String> = common::keys(redis, "*:u:*");
        let alice_index = SessionRef::of_id("alice@example.com");
        // The listed user's index was emptied (and so removed); every other index key
        // expires by itself.
        assert!(
            !index.iter().any(|k| k.ends_with(alice_index.as_str())),
            "{index:?}"
        );
        assert_eq!(
            index.len(),
            1,
            "mallory's index remains until it expires: {index:?}"
        );
        for k in &index {
            let ttl: i64 = redis
                .command_on_key(k, &["PTTL", k])
                .trim()
                .trim_start_matches(':')
                .parse()
                .unwrap();
            assert!(ttl > 0, "the index key expires: {k} {ttl}");
        }
        // The index key names the user by hash only.
        assert!(index.iter().all(|k| !k.contains("alice")), "{index:?}");
    }
);

on_every_topology!(
    async fn tenants_have_separate_keyspaces_and_hostile_users_are_just_strings(redis: &Redis) {
        let s = sessions_on(redis, config());
        let t1 = Tenant::new("1").unwrap();
        let t2 = Tenant::new("2").unwrap();
        let hostile = "*:{evil}\r\nDEL *";
        RequestContext::scope(RequestContext::new(Some(t1.clone())), async {
            s.create("x", b"{}", Some(&Identity::new(hostile)))
                .await
                .unwrap();
            assert!(s.load("x").await.unwrap().is_some());
        })
        .await;
        RequestContext::scope(RequestContext::new(Some(t2.clone())), async {
            assert!(
                s.load("x").await.unwrap().is_none(),
                "tenant 2 sees nothing"
            );
            assert_eq!(
                s.update("x", b"{\"stolen\":1}", None).await.unwrap(),
                Written::Gone
            );
        })
        .await;
        assert!(
            s.load("x").await.unwrap().is_none(),
            "nor does the namespace"
        );
        assert_eq!(s.list(Some(&t1), hostile).await.unwrap().len(), 1);
        assert!(s.list(Some(&t2), hostile).await.unwrap().is_empty());
        assert_eq!(s.revoke_all(Some(&t2), hostile, None).await.unwrap(), 0);
        assert_eq!(s.revoke_all(Some(&t1), hostile, None).await.unwrap(), 1);
        // Tenant 1's keys, and the registry of tenants with sessions (for the
        // dashboard's counts), which holds tenant ids only.
        let all = common::keys(redis, "*");
        assert!(
            all.iter()
                .all(|k| k.starts_with("larder:session:tenant:{1}:session:")
                    || k == "larder:session:global:{session}:tenants"),
            "{all:?}"
        );
    }
);

on_every_topology!(
    async fn over_the_cap_nothing_is_stored_and_the_error_says_why(redis: &Redis) {
        let s = sessions_on(redis, config().max_bytes(64));
        let err = s.create("big", &[b'x'; 65], None).await.unwrap_err();
        assert!(matches!(err, SessionError::TooLarge { size: 65, cap: 64 }));
        assert!(
            err.to_string().contains("exceeds the cap of 64 bytes"),
            "{err}"
        );
        assert!(common::keys(redis, "*").is_empty());
        s.create("ok", &[b'x'; 64], None).await.unwrap();
        let err = s.update("ok", &[b'y'; 100], None).await.unwrap_err();
        assert!(matches!(err, SessionError::TooLarge { .. }));
        assert_eq!(s.load("ok").await.unwrap().unwrap().data, vec![b'x'; 64]);
    }
);

#[tokio::test]
async fn fail_closed_is_a_typed_error_within_the_deadline_and_hides_the_password() {
    let mut redis = RedisServer::builder().requirepass("s3cr3t-pw").start();
    let url = redis.url_with_auth("default", "s3cr3t-pw");
    let s = sessions(Some(&url), config());
    s.create("a", b"{}", None).await.unwrap();
    redis.freeze();
    let err = tokio::time::timeout(Duration::from_secs(10), s.load("a"))
        .await
        .expect("bounded by the deadline")
        .unwrap_err();
    assert!(matches!(err, SessionError::Unavailable(_)), "{err}");
    assert!(!format!("{err} {err:?}").contains("s3cr3t-pw"), "{err:?}");
    redis.thaw();

    // In-memory policy on the same outage: served in process.
    let mem = sessions(Some(&url), config().degraded(Degraded::InMemory));
    redis.stop();
    assert_eq!(mem.create("b", b"{}", None).await.unwrap(), Written::Stored);
    assert!(mem.load("b").await.unwrap().is_some());
}

#[tokio::test]
async fn in_process_mode_has_the_same_semantics() {
    let s = Sessions::new(
        handle(None),
        SessionConfig::builder()
            .rotation_grace(Duration::from_millis(200))
            .build()
            .unwrap(),
    );
    let who = Identity::new("alice");
    assert_eq!(
        s.create("a", b"1", Some(&who)).await.unwrap(),
        Written::Stored
    );
    assert_eq!(s.create("a", b"2", None).await.unwrap(), Written::Collision);
    assert_eq!(s.load("a").await.unwrap().unwrap().data, b"1");
    // Rotation inside a request context: the old id is read-only for the grace window.
    RequestContext::scope(RequestContext::new(None), async {
        assert!(larder_session::mark_rotation());
        s.delete("a").await.unwrap();
    })
    .await;
    let old = s.load("a").await.unwrap().unwrap();
    assert!(old.read_only);
    assert_eq!(s.update("a", b"3", None).await.unwrap(), Written::Gone);
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(s.load("a").await.unwrap().is_none());
    // No resurrection after a delete.
    s.create("b", b"1", Some(&who)).await.unwrap();
    s.delete("b").await.unwrap();
    assert_eq!(
        s.update("b", b"2", Some(&who)).await.unwrap(),
        Written::Gone
    );
    assert!(s.load("b").await.unwrap().is_none());
    // The index.
    s.create("c", b"1", Some(&who)).await.unwrap();
    s.create("d", b"1", Some(&who)).await.unwrap();
    assert_eq!(s.list(None, "alice").await.unwrap().len(), 2);
    let keep = SessionRef::of_id("d");
    assert_eq!(s.revoke_all(None, "alice", Some(&keep)).await.unwrap(), 1);
    assert!(s.load("c").await.unwrap().is_none());
    assert!(s.load("d").await.unwrap().is_some());
}

on_every_topology!(
    async fn a_record_with_corrupt_times_is_no_session_and_is_not_written_over(redis: &Redis) {
        let s = sessions_on(redis, config());
        s.create("t1", b"{}", None).await.unwrap();
        let key = s.record_key("t1");
        let good = field(redis, &key, "h");
        assert_eq!(
            good.split(' ').count(),
            4,
            "created touched absolute rotated: {good}"
        );
        for corrupt in [
            "",
            "garbage",
            "1 2 3",
            "1 2 3 4",
            "1 2 3 0 5",
            "-1 2 3 0",
            "1 2 x 0",
        ] {
            assert_eq!(
                redis.command_on_key(&key, &["HSET", &key, "h", corrupt]),
                ":0\r\n"
            );
            assert!(s.load("t1").await.unwrap().is_none(), "{corrupt:?}");
            assert_eq!(
                s.update("t1", b"{\"x\":1}", None).await.unwrap(),
                Written::Gone,
                "{corrupt:?}: an update needs a valid record"
            );
            assert_eq!(field(redis, &key, "d"), "{}", "{corrupt:?}: data kept");
        }
        // Restored, the record is a session again (the corruption was the only fault).
        assert_eq!(
            redis.command_on_key(&key, &["HSET", &key, "h", &good]),
            ":0\r\n"
        );
        assert!(s.load("t1").await.unwrap().is_some());
    }
);

/// A user holds at most `max_per_user` sessions: a login past it ends the oldest,
/// so the user's index, and a revoke-all over it, stay bounded. Other users'
/// sessions are untouched. Same rule on Redis and in process.
async fn sessions_per_user_are_capped(s: Sessions) {
    let alice = Identity::new("alice");
    let bob = Identity::new("bob");
    s.create("bob-1", b"{}", Some(&bob)).await.unwrap();
    for n in 0..5 {
        let id = format!("alice-{n}");
        assert_eq!(
            s.create(&id, b"{}", Some(&alice)).await.unwrap(),
            Written::Stored
        );
        // Sessions are ordered by their deadline, to the millisecond.
        tokio::time::sleep(Duration::from_millis(3)).await;
    }
    assert_eq!(s.list(None, "alice").await.unwrap().len(), 3);
    for gone in ["alice-0", "alice-1"] {
        assert!(s.load(gone).await.unwrap().is_none(), "{gone}");
    }
    for kept in ["alice-2", "alice-3", "alice-4", "bob-1"] {
        assert!(s.load(kept).await.unwrap().is_some(), "{kept}");
    }
    assert_eq!(s.revoke_all(None, "alice", None).await.unwrap(), 3);
}

on_every_topology!(
    async fn sessions_per_user_are_capped_on_redis(redis: &Redis) {
        sessions_per_user_are_capped(sessions_on(redis, config().max_per_user(3))).await;
    }
);

#[tokio::test]
async fn sessions_per_user_are_capped_in_process() {
    sessions_per_user_are_capped(sessions(None, config().max_per_user(3))).await;
}

/// Live sessions are counted per tenant: a login adds one, a logout, a rotation or
/// a revoke takes it away, and the most recent tenants are listed, each with its
/// own count. Same answers on Redis and in process.
async fn active_sessions_are_counted_per_tenant(s: Sessions) {
    let (t1, t2) = (Tenant::new("t1").unwrap(), Tenant::new("t2").unwrap());
    let alice = Identity::new("alice");
    RequestContext::scope(RequestContext::new(Some(t1.clone())), async {
        for id in ["a-1", "a-2", "a-3"] {
            s.create(id, b"{}", Some(&alice)).await.unwrap();
        }
        s.delete("a-3").await.unwrap();
    })
    .await;
    // Later than t1's, so listed first.
    tokio::time::sleep(Duration::from_millis(5)).await;
    RequestContext::scope(RequestContext::new(Some(t2.clone())), async {
        s.create("b-1", b"{}", None).await.unwrap();
    })
    .await;
    s.create("anon", b"{}", None).await.unwrap();
    assert_eq!(s.active(Some(&t1)).await.unwrap(), 2);
    assert_eq!(s.active(Some(&t2)).await.unwrap(), 1);
    assert_eq!(s.active(None).await.unwrap(), 1);
    let listed = s.active_by_tenant(10).await.unwrap();
    let pairs: Vec<(Option<&str>, u64)> = listed
        .iter()
        .map(|a| (a.tenant.as_deref(), a.active))
        .collect();
    assert_eq!(pairs, [(None, 1), (Some("t2"), 1), (Some("t1"), 2)]);
    assert_eq!(s.active_by_tenant(1).await.unwrap().len(), 2);
    assert_eq!(s.active_by_tenant(0).await.unwrap().len(), 1);
    // A revoke and a rotation end sessions for the count at once.
    assert_eq!(s.revoke_all(Some(&t1), "alice", None).await.unwrap(), 2);
    assert_eq!(s.active(Some(&t1)).await.unwrap(), 0);
    RequestContext::scope(RequestContext::new(Some(t2.clone())), async {
        assert!(larder_session::mark_rotation());
        s.delete("b-1").await.unwrap();
        // Still readable for the grace window, but no longer a live session.
        assert!(s.load("b-1").await.unwrap().unwrap().read_only);
    })
    .await;
    assert_eq!(s.active(Some(&t2)).await.unwrap(), 0);
    assert_eq!(s.active(None).await.unwrap(), 1);
}

on_every_topology!(
    async fn active_sessions_are_counted_per_tenant_on_redis(redis: &Redis) {
        active_sessions_are_counted_per_tenant(sessions_on(redis, config())).await;
    }
);

#[tokio::test]
async fn active_sessions_are_counted_per_tenant_in_process() {
    active_sessions_are_counted_per_tenant(sessions(None, config())).await;
}
