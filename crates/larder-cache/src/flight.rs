//! In-process single flight: concurrent misses for one key make one origin call.
//!
//! Written by hand (about 60 lines on `tokio::sync::broadcast`) rather than taken from
//! a crate: the maintained single-flight crates either need `E: Clone` for every
//! origin error or leave a key wedged when the leader's future is cancelled. Here a
//! cancelled or failed leader releases the key, and its followers retry.

use std::collections::hash_map::Entry;
use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use tokio::sync::broadcast;

/// Shared map of flights in progress. Cheap to clone.
///
/// A flight's channel is created by its first follower: most flights have none, and
/// a lone leader then costs a map entry only.
#[derive(Debug)]
pub(crate) struct Flights<V: Clone> {
    map: Arc<Mutex<FlightMap<V>>>,
}

/// Keys are shared with their leader: one allocation per flight. Hashed with
/// foldhash, randomly seeded ("Hashing the cache's maps" in BENCHMARKS.md).
type FlightMap<V> = HashMap<Arc<str>, Option<broadcast::Sender<V>>, foldhash::fast::RandomState>;

impl<V: Clone> Clone for Flights<V> {
    fn clone(&self) -> Self {
        Self {
            map: Arc::clone(&self.map),
        }
    }
}

impl<V: Clone> Default for Flights<V> {
    fn default() -> Self {
        Self {
            map: Arc::default(),
        }
    }
}

/// What a caller should do for a key.
pub(crate) enum Role<V: Clone> {
    /// Call the origin, then [`Leader::complete`].
    Leader(Leader<V>),
    /// Wait for the leader's value; `Err` means the leader gave up.
    Follower(broadcast::Receiver<V>),
}

impl<V: Clone> Flights<V> {
    /// Joins the flight for `key`, leading it if there is none.
    pub(crate) fn join(&self, key: &str) -> Role<V> {
        // One look-up (hashing a long key is most of the cost) for either role.
        let key: Arc<str> = Arc::from(key);
        match self.lock().entry(Arc::clone(&key)) {
            Entry::Occupied(mut slot) => {
                let tx = slot
                    .get_mut()
                    .get_or_insert_with(|| broadcast::channel(1).0);
                return Role::Follower(tx.subscribe());
            }
            Entry::Vacant(slot) => {
                slot.insert(None);
            }
        }
        Role::Leader(Leader {
            key,
            flights: self.clone(),
            ended: false,
        })
    }

    /// Whether a flight for `key` is in progress.
    #[cfg(test)]
    pub(crate) fn in_flight(&self, key: &str) -> bool {
        self.lock().contains_key(key)
    }

    fn lock(&self) -> MutexGuard<'_, FlightMap<V>> {
        self.map.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Ends the flight for `key`, returning its channel if a follower made one.
    fn remove(&self, key: &str) -> Option<broadcast::Sender<V>> {
        self.lock().remove(key).flatten()
    }
}

/// The caller that runs the origin for a key. Dropping it without completing
/// releases the key; followers see the channel close and retry.
pub(crate) struct Leader<V: Clone> {
    key: Arc<str>,
    flights: Flights<V>,
    ended: bool,
}

impl<V: Clone> Leader<V> {
    /// Hands `value` to every follower and releases the key.
    pub(crate) fn complete(mut self, value: V) {
        self.ended = true;
        if let Some(tx) = self.flights.remove(&self.key) {
            // No receivers is fine: every follower gave up.
            let _ = tx.send(value);
        }
    }
}

impl<V: Clone> Leader<V> {
    /// Ends the flight without a value if nobody waits on it (checked under the map's
    /// lock, so no follower can join in between). Gives the leader back otherwise.
    // Used by the HTTP flow, which only the framework features compile.
    #[cfg_attr(not(any(feature = "tower", feature = "actix")), allow(dead_code))]
    pub(crate) fn release_if_alone(mut self) -> Result<(), Self> {
        let mut map = self.flights.lock();
        // Removed first (one look-up) and put back in the rare case someone waits.
        match map.remove(&self.key) {
            Some(Some(tx)) if tx.receiver_count() > 0 => {
                map.insert(Arc::clone(&self.key), Some(tx));
                drop(map);
                Err(self)
            }
            _ => {
                drop(map);
                self.ended = true;
                Ok(())
            }
        }
    }
}

impl<V: Clone> Drop for Leader<V> {
    fn drop(&mut self) {
        if !self.ended {
            // Dropping the channel (if a follower made one) tells the followers to
            // retry.
            drop(self.flights.remove(&self.key));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn followers_get_the_leaders_value() {
        let flights = Flights::<u32>::default();
        let Role::Leader(leader) = flights.join("k") else {
            panic!("first is leader")
        };
        let Role::Follower(mut rx) = flights.join("k") else {
            panic!("second follows")
        };
        assert!(flights.in_flight("k"));
        leader.complete(7);
        assert_eq!(rx.recv().await.unwrap(), 7);
        assert!(!flights.in_flight("k"));
        assert!(matches!(flights.join("k"), Role::Leader(_)));
    }

    #[tokio::test]
    async fn a_lone_leader_can_end_the_flight_without_a_value() {
        let flights = Flights::<u32>::default();
        let Role::Leader(leader) = flights.join("k") else {
            panic!()
        };
        assert!(leader.release_if_alone().is_ok());
        assert!(!flights.in_flight("k"));
        let Role::Leader(leader) = flights.join("k") else {
            panic!()
        };
        let Role::Follower(mut rx) = flights.join("k") else {
            panic!()
        };
        let leader = leader.release_if_alone().expect_err("a follower waits");
        leader.complete(3);
        assert_eq!(rx.recv().await.unwrap(), 3);
    }

    #[test]
    fn a_follower_that_gave_up_does_not_hold_the_leader() {
        let flights = Flights::<u32>::default();
        let Role::Leader(leader) = flights.join("k") else {
            panic!()
        };
        let Role::Follower(rx) = flights.join("k") else {
            panic!()
        };
        drop(rx);
        assert!(leader.release_if_alone().is_ok(), "nobody waits any more");
        assert!(!flights.in_flight("k"));
    }

    #[tokio::test]
    async fn a_dropped_leader_releases_its_followers() {
        let flights = Flights::<u32>::default();
        let Role::Leader(leader) = flights.join("k") else {
            panic!()
        };
        let Role::Follower(mut rx) = flights.join("k") else {
            panic!()
        };
        drop(leader);
        assert!(rx.recv().await.is_err());
        assert!(!flights.in_flight("k"));
    }
}
