//! [`SharedHour`] on every topology: each instance counts in process, and the
//! counts of all of them add up in Redis, once each.

#![allow(clippy::unwrap_used)]

use std::sync::Arc;
use std::time::Duration;

use larder_core::last_hour::{Fields, MinuteCounts, SharedHour, OTHERS};
use larder_core::time::now_ms;
use larder_core::{Config, ConfigBuilder, Handle};
use larder_testing::{on_every_topology, Redis};

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
struct Hits {
    hits: u64,
    misses: u64,
}

impl Fields for Hits {
    const NAMES: &'static [&'static str] = &["hits", "misses"];

    fn value(&self, i: usize) -> u64 {
        [self.hits, self.misses].get(i).copied().unwrap_or(0)
    }

    fn add_value(&mut self, i: usize, n: u64) {
        match i {
            0 => self.hits += n,
            1 => self.misses += n,
            _ => {}
        }
    }
}

/// An instance: its own handle on the topology, counting in hashes under `BASE`.
fn instance(redis: &Redis) -> SharedHour<Hits> {
    let config = ConfigBuilder::from_config(Config::from_vars(redis.vars()).unwrap())
        .key_prefix("t")
        .op_timeout(Duration::from_millis(500))
        .build()
        .unwrap();
    SharedHour::new(&Handle::new(config).unwrap(), BASE.to_owned(), 10)
}

const BASE: &str = "t:test:global:{hour}:hits:";

/// `name`'s counts over every minute of `report`.
fn summed(report: &[MinuteCounts<Hits>], name: &str) -> Hits {
    let mut sum = Hits::default();
    for minute in report {
        if let Some(c) = minute.counts.get(name) {
            sum.hits += c.hits;
            sum.misses += c.misses;
        }
    }
    sum
}

on_every_topology!(
    async fn every_instances_counts_add_up_once(redis: &Redis) {
        let (a, b) = (instance(redis), instance(redis));
        let now = now_ms();
        let acme: Arc<str> = Arc::from("acme");
        a.count(&acme, now, |c| c.hits += 2);
        b.count(&acme, now, |c| c.misses += 1);
        // Before a flush, each instance sees its own counts.
        let seen = |hits, misses| Hits { hits, misses };
        assert_eq!(summed(&a.report(now).await.unwrap(), "acme"), seen(2, 0));
        assert_eq!(summed(&b.report(now).await.unwrap(), "acme"), seen(0, 1));
        // After a's flush, b sees both; a counts its own once, not twice.
        a.flush().await.unwrap();
        assert_eq!(summed(&a.report(now).await.unwrap(), "acme"), seen(2, 0));
        assert_eq!(summed(&b.report(now).await.unwrap(), "acme"), seen(2, 1));
        b.flush().await.unwrap();
        a.flush().await.unwrap(); // nothing new: adds nothing
        for instance in [&a, &b] {
            let report = instance.report(now).await.unwrap();
            assert_eq!(summed(&report, "acme"), seen(2, 1), "{report:?}");
        }
        // The minute's hash outlives the hour a little, no more.
        let key = format!("{BASE}{}", now / 60_000);
        let ttl: u64 = redis
            .command_on_key(&key, &["PTTL", &key])
            .trim()
            .trim_start_matches(':')
            .parse()
            .unwrap();
        assert!((60 * 60_000..=65 * 60_000).contains(&ttl), "{ttl}");

        // A field that is not one of ours, or not a number, is passed over.
        for (field, value) in [("zeta\thits", "many"), ("stray", "5"), ("acme\tbogus", "3")] {
            let reply = redis.command_on_key(&key, &["HSET", &key, field, value]);
            assert!(!reply.starts_with('-'), "{reply}");
        }
        let report = a.report(now).await.unwrap();
        assert_eq!(summed(&report, "acme"), seen(2, 1));
        let names: Vec<&String> = report.iter().flat_map(|m| m.counts.keys()).collect();
        assert_eq!(names, ["acme"], "{report:?}");
    }
);

on_every_topology!(
    async fn a_minute_holds_a_bounded_number_of_names(redis: &Redis) {
        // Each instance keeps at most 10 names a minute; 16 names across two
        // instances are read back as 10: the 9 counted most, and the rest together.
        let (a, b) = (instance(redis), instance(redis));
        let now = now_ms();
        for (instance, names) in [(&a, 0..8), (&b, 8..16)] {
            for i in names {
                let name: Arc<str> = Arc::from(format!("tenant-{i:02}"));
                instance.count(&name, now, |c| c.hits += 1 + i);
            }
            instance.flush().await.unwrap();
        }
        let report = a.report(now).await.unwrap();
        let counts = &report.iter().find(|m| m.counts.len() > 1).unwrap().counts;
        assert_eq!(counts.len(), 10, "{counts:?}");
        assert!(counts.contains_key(OTHERS) && counts.contains_key("tenant-15"));
        assert!(!counts.contains_key("tenant-00"), "{counts:?}");
        let total: u64 = counts.values().map(|c| c.hits).sum();
        assert_eq!(total, (1..=16).sum::<u64>(), "nothing is lost in the bound");
    }
);

#[tokio::test]
async fn in_process_it_is_this_instances_hour() {
    let hour: SharedHour<Hits> = SharedHour::new(&Handle::in_process(), BASE.to_owned(), 10);
    let now = now_ms();
    hour.count(&Arc::from("acme"), now, |c| c.hits += 1);
    hour.flush().await.unwrap();
    let report = hour.report(now).await.unwrap();
    assert_eq!(summed(&report, "acme"), Hits { hits: 1, misses: 0 });
}
