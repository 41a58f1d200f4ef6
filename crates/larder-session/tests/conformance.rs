//! The conformance suite: every case runs against both adapters — Axum with
//! tower-sessions and Actix-web with actix-session — on a real redis-server, a
//! real Redis Cluster and a real Sentinel set.

#![allow(clippy::unwrap_used)] // test code: a failed unwrap is a failed test

mod common;

use std::time::Duration;

use common::actix_app::{self, ActixApp};
use common::axum_app::{self, AxumApp};
use common::*;
use larder_session::Degraded;
use larder_testing::{Redis, TopologyKind};

/// Runs one case against both adapters, on each topology (a fresh Redis each).
macro_rules! conformance {
    ($name:ident, $config:expr, |$app:ident, $redis:ident, $sessions:ident| $case:expr) => {
        mod $name {
            use super::*;

            #[allow(unused_mut, unused_variables)]
            async fn axum(mut $redis: Redis) {
                let $sessions = sessions_on(&$redis, $config);
                let app = AxumApp(axum_app::router($sessions.clone()));
                let $app = &app;
                $case.await;
            }

            #[allow(unused_mut, unused_variables)]
            async fn actix(mut $redis: Redis) {
                let $sessions = sessions_on(&$redis, $config);
                let app = ActixApp(actix_app::service($sessions.clone()).await);
                let $app = &app;
                $case.await;
            }

            #[actix_web::test]
            async fn axum_single() {
                axum(Redis::start(TopologyKind::Single)).await;
            }

            #[actix_web::test]
            async fn axum_cluster() {
                axum(Redis::start(TopologyKind::Cluster)).await;
            }

            #[actix_web::test]
            async fn axum_sentinel() {
                axum(Redis::start(TopologyKind::Sentinel)).await;
            }

            #[actix_web::test]
            async fn actix_single() {
                actix(Redis::start(TopologyKind::Single)).await;
            }

            #[actix_web::test]
            async fn actix_cluster() {
                actix(Redis::start(TopologyKind::Cluster)).await;
            }

            #[actix_web::test]
            async fn actix_sentinel() {
                actix(Redis::start(TopologyKind::Sentinel)).await;
            }
        }
    };
}

conformance!(
    login_then_logout_rejects_the_old_cookie,
    config(),
    |app, redis, s| { login_me_logout(app, &redis) }
);
conformance!(
    revoke_all_from_another_session_and_list,
    config(),
    |app, redis, s| { revoke_all_from_another_session(app) }
);
conformance!(
    logout_racing_a_slow_save_does_not_resurrect,
    config(),
    |app, redis, s| { no_resurrection(app, &s, &redis) }
);
conformance!(
    rotation_keeps_the_old_id_readable_for_the_grace_window,
    config(),
    |app, redis, s| { rotation_grace(app) }
);
conformance!(
    tampered_unknown_malformed_or_corrupt_get_a_fresh_session,
    config(),
    |app, redis, s| { bad_cookies_get_a_fresh_session(app, &s, &redis) }
);
conformance!(
    expired_cookie_gets_a_fresh_session,
    config().idle_timeout(Duration::from_millis(500)),
    |app, redis, s| expired_cookie_gets_a_fresh_session(app)
);
conformance!(
    over_the_size_cap_is_a_clear_error_and_stores_nothing,
    config(),
    |app, redis, s| { size_cap(app, &redis) }
);
conformance!(
    sessions_live_in_the_tenants_keyspace,
    config(),
    |app, redis, s| { tenant_isolation(app, &redis) }
);
conformance!(
    a_request_that_never_touches_the_session_costs_no_command,
    config(),
    |app, redis, s| { untouched_session_costs_no_round_trip(app, &redis) }
);
conformance!(
    fail_closed_answers_503_within_the_deadline,
    fail_closed_config(),
    |app, redis, s| { fail_closed(app, &mut redis) }
);
conformance!(
    in_memory_policy_keeps_working_without_redis,
    config().degraded(Degraded::InMemory),
    |app, redis, s| in_memory_fallback(app, &mut redis)
);
conformance!(
    the_sessions_tenant_becomes_the_tenant_header,
    config(),
    |app, redis, s| { session_tenant_header(app) }
);
