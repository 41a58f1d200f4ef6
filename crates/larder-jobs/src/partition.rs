//! A queue's partitions: independent copies of the queue's keys, each in one
//! hash-tag slot, so that on a Redis Cluster a queue spreads over several primaries.

use larder_core::keyspace::{cluster_slot, Component, Scope};
use larder_core::{Handle, Module};

/// The partitions a queue has on a cluster unless configured
/// ([`JobsConfig::partitions`](crate::JobsConfig::partitions)): the fewest primaries a
/// Redis Cluster has, so a freshly made cluster holds one partition per primary.
pub(crate) const CLUSTER_DEFAULT: u16 = 3;

/// The most partitions a queue may have: an idle worker visits each one per wake-up.
pub(crate) const MAX: u16 = 64;

/// Slots in a Redis Cluster.
const SLOTS: u32 = 16_384;

/// The jobs component's global module `name`.
fn module_scope(handle: &Handle, name: &str) -> Scope {
    let module = Module::new(name).unwrap_or_else(|_| unreachable!("valid module name"));
    handle
        .keyspace()
        .component(Component::Jobs)
        .global_scope(&module)
}

/// The scope of the queue-wide keys outside any partition (the scheduler's lease),
/// and of the only partition of an unpartitioned queue: the module `jobs`
/// (`{prefix}:jobs:global:{jobs}:`).
pub(crate) fn scope(handle: &Handle) -> Scope {
    module_scope(handle, "jobs")
}

/// The scopes of a queue split over `n` partitions (`n` is at least 1).
///
/// One partition is the [`scope`] itself. With more, partition `p`'s hash tag is
/// `jobs.{p}.{k}` for the first `k` whose slot lies in the `p`-th of `n` equal
/// ranges of the 16,384 slots. `redis-cli --cluster create` (and a rebalance) gives
/// each primary one contiguous range of the same size, so on a cluster of `n`
/// primaries the partitions land on `n` different primaries, and on a cluster of
/// `m` primaries they spread as evenly as `n` ranges over `m` can. Every process
/// computes the same tags from the same `n`.
pub(crate) fn scopes(handle: &Handle, n: u16) -> Vec<Scope> {
    if n <= 1 {
        return vec![scope(handle)];
    }
    let n = u32::from(n);
    (0..n)
        .map(|p| {
            let range = p * SLOTS / n..(p + 1) * SLOTS / n;
            (0u32..)
                .map(|k| format!("jobs.{p}.{k}"))
                .find(|tag| range.contains(&u32::from(cluster_slot(tag.as_bytes()))))
                .map(|tag| module_scope(handle, &tag))
                .unwrap_or_else(|| unreachable!("CRC16 reaches every range"))
        })
        .collect()
}

/// The partition (of `n`) that holds job `id`: the id's CRC16 (Redis's own slot
/// function) modulo `n`, so a status query, a revocation or a wait finds the job
/// from its id alone, and an id enqueued twice meets itself.
pub(crate) fn of(id: &str, n: usize) -> usize {
    if n <= 1 {
        0
    } else {
        usize::from(cluster_slot(id.as_bytes())) % n
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)] // test code: a failed unwrap is a failed test

    use super::*;

    /// The keyspace is the same with or without Redis.
    fn handle() -> Handle {
        Handle::in_process()
    }

    #[test]
    fn one_partition_is_the_queue_scope_as_before() {
        let scopes = scopes(&handle(), 1);
        assert_eq!(scopes.len(), 1);
        assert_eq!(scopes[0].base(), "larder:jobs:global:{jobs}:");
        assert_eq!(of("anything", 1), 0);
    }

    #[test]
    fn partitions_take_one_range_of_slots_each() {
        for n in [2u16, 3, 4, 6, 16] {
            let scopes = scopes(&handle(), n);
            assert_eq!(scopes.len(), usize::from(n));
            for (p, s) in scopes.iter().enumerate() {
                let slot = u32::from(cluster_slot(s.base().as_bytes()));
                let p = u32::try_from(p).unwrap();
                let n = u32::from(n);
                assert!(
                    (p * SLOTS / n..(p + 1) * SLOTS / n).contains(&slot),
                    "{n} partitions: {} has slot {slot}",
                    s.base()
                );
            }
        }
    }

    #[test]
    fn ids_spread_over_partitions_and_stay_put() {
        let mut counts = [0usize; 3];
        for i in 0..3000 {
            let id = format!("job-{i}");
            let p = of(&id, 3);
            assert_eq!(p, of(&id, 3));
            counts[p] += 1;
        }
        assert!(counts.iter().all(|&c| c > 800), "{counts:?}");
    }
}
