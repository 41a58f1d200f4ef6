//! Tenant isolation by construction: no key built for tenant A matches any pattern
//! built for tenant B, whatever the ids, modules, keys and globs.

#![allow(clippy::unwrap_used)] // test code: a failed unwrap is a failed test

use larder_core::keyspace::{glob_matches, Component};
use larder_core::{Keyspace, Module, Tenant};
use larder_testing::RedisServer;
use proptest::prelude::*;

/// Arbitrary strings, hostile ones included; only those the keyspace accepts survive.
fn segment() -> impl Strategy<Value = String> {
    prop_oneof![
        "[a-z0-9]{1,6}",
        "[a-z0-9]{1,3}[-_.][a-z0-9]{1,3}",
        any::<String>().prop_map(|s| s.chars().take(12).collect()),
        "[a-z0-9:*?{}\\[\\]\\\\ ]{1,8}",
    ]
}

fn tenant() -> impl Strategy<Value = Tenant> {
    segment().prop_filter_map("valid tenant", |s| Tenant::new(s).ok())
}

fn module() -> impl Strategy<Value = Module> {
    segment().prop_filter_map("valid module", |s| Module::new(s).ok())
}

fn key_part() -> impl Strategy<Value = String> {
    prop_oneof![
        "[a-z0-9:*?{}\\[\\]\\\\^ -]{1,20}",
        any::<String>().prop_map(|s| s.chars().filter(|c| !c.is_control()).take(20).collect()),
    ]
    .prop_filter("non-empty", |s| !s.is_empty())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2000))]

    #[test]
    fn no_key_of_tenant_a_matches_a_pattern_of_tenant_b(
        a in tenant(), b in tenant(),
        ma in module(), mb in module(),
        key in key_part(), glob in key_part(),
        tag in any::<bool>(),
    ) {
        prop_assume!(a != b);
        let ks = Keyspace::new("app").unwrap().with_hash_tag(tag);
        let key_a = ks.scope(&a, &ma).key(&key).unwrap();
        let scope_b = ks.scope(&b, &mb);
        let patterns = [
            ks.tenant_pattern(&b),
            scope_b.pattern_all(),
            scope_b.pattern(&glob).unwrap(),
        ];
        for p in &patterns {
            prop_assert!(!glob_matches(p.as_bytes(), key_a.as_bytes()), "{p} matched {key_a}");
        }
        // And a's own patterns do match its key, so the check above is not vacuous.
        prop_assert!(glob_matches(ks.tenant_pattern(&a).as_bytes(), key_a.as_bytes()));
        prop_assert!(glob_matches(ks.scope(&a, &ma).pattern_all().as_bytes(), key_a.as_bytes()));
    }

    /// No key any component builds (in a tenant's scope or a global one) matches a
    /// pattern another component builds, whatever the glob an admin sends: a
    /// cache sweep can never reach sessions, jobs or rate-limit state.
    #[test]
    fn no_key_of_one_component_matches_a_pattern_of_another(
        a in prop::sample::select(Component::ALL.to_vec()),
        b in prop::sample::select(Component::ALL.to_vec()),
        ta in tenant(), tb in tenant(),
        ma in module(), mb in module(),
        key in key_part(), glob in key_part(),
        global in any::<bool>(),
        tag in any::<bool>(),
    ) {
        prop_assume!(a != b);
        let app = Keyspace::new("app").unwrap().with_hash_tag(tag);
        let (ks_a, ks_b) = (app.component(a), app.component(b));
        let key_a = if global {
            ks_a.global_scope(&ma).key(&key).unwrap()
        } else {
            ks_a.scope(&ta, &ma).key(&key).unwrap()
        };
        let scope_b = ks_b.scope(&tb, &mb);
        let patterns = [
            ks_b.root_pattern(),
            ks_b.root_glob(&glob).unwrap(),
            ks_b.tenant_pattern(&tb),
            ks_b.tenant_glob(&tb, &glob).unwrap(),
            scope_b.pattern(&glob).unwrap(),
            ks_b.global_scope(&mb).pattern(&glob).unwrap(),
        ];
        for p in &patterns {
            prop_assert!(!glob_matches(p.as_bytes(), key_a.as_bytes()), "{p} matched {key_a}");
        }
        prop_assert!(glob_matches(ks_a.root_pattern().as_bytes(), key_a.as_bytes()));
    }

    #[test]
    fn segments_with_forbidden_characters_are_rejected(
        before in "[a-z]{0,4}",
        bad in prop::sample::select(vec![':', '*', '?', '[', ']', '{', '}', '\\', ' ', '\t', '\n', '\u{0}', '\u{85}', '\u{3000}']),
        after in "[a-z]{0,4}",
    ) {
        let s = format!("{before}{bad}{after}");
        prop_assert!(Tenant::new(&s).is_err());
        prop_assert!(Module::new(&s).is_err());
    }
}

/// The glob port agrees with the real server's SCAN MATCH on keys and patterns of
/// several tenants, hostile-looking key parts included.
#[test]
fn glob_port_agrees_with_redis_scan() {
    let server = RedisServer::start();
    let ks = Keyspace::new("app").unwrap();
    let tenants = ["1", "10", "acme", "acme-eu"];
    let keys = ["a", "GET:/x?b=1", "*", "[x]", "\\*", "a:b:c", "{1}"];
    let mut all = Vec::new();
    for t in tenants {
        for k in keys {
            let key = ks
                .scope(&Tenant::new(t).unwrap(), &Module::new("m").unwrap())
                .key(k)
                .unwrap();
            assert_eq!(server.command(&["SET", &key, "1"]), "+OK\r\n");
            all.push(key);
        }
    }
    let mut patterns = Vec::new();
    for t in tenants {
        let tenant = Tenant::new(t).unwrap();
        let scope = ks.scope(&tenant, &Module::new("m").unwrap());
        patterns.push(ks.tenant_pattern(&tenant));
        patterns.push(scope.pattern_all());
        for g in ["a*", "*x*", "\\**", "[G]ET*", "?", "[^a]*"] {
            patterns.push(scope.pattern(g).unwrap());
        }
    }
    for p in &patterns {
        let reply = server.command(&["SCAN", "0", "MATCH", p, "COUNT", "1000"]);
        let mut from_redis: Vec<&str> = all
            .iter()
            .map(String::as_str)
            .filter(|k| reply.contains(&format!("\r\n{k}\r\n")))
            .collect();
        let mut ours: Vec<&str> = all
            .iter()
            .map(String::as_str)
            .filter(|k| glob_matches(p.as_bytes(), k.as_bytes()))
            .collect();
        from_redis.sort_unstable();
        ours.sort_unstable();
        assert_eq!(ours, from_redis, "pattern {p}");
    }
}
